"""The web interface (issue 14): sign-in and sessions (`auth`), passwords (`passwords`), the
pages and their static files (`pages`, `static/`)."""
