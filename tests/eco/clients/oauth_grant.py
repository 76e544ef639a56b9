"""A third-party app signs a user in through raftbox's OAuth2, as against Dropbox: run inside
the harness's namespace (www.dropbox.com and api.dropboxapi.com are raftbox).

    python oauth_grant.py APP_KEY APP_SECRET ACCOUNT_TOKEN

The app is the SDK's own `DropboxOAuth2FlowNoRedirect` (offline access: a refresh token); the
user's browser opens the authorize URL it built, signed in with the account's token (bearer,
which the consent page accepts for scripts), allows, and reads the code off the page. Prints
the SDK's `OAuth2FlowNoRedirectResult` as JSON: access_token, refresh_token, expires_at.
"""

from __future__ import annotations

import html
import json
import re
import sys

import requests
from dropbox.oauth import DropboxOAuth2FlowNoRedirect


def main() -> int:
    app_key, app_secret, account_token = sys.argv[1:4]
    flow = DropboxOAuth2FlowNoRedirect(
        app_key, consumer_secret=app_secret, token_access_type="offline", use_pkce=False
    )
    url = flow.start()
    with requests.Session() as browser:
        browser.headers["Authorization"] = f"Bearer {account_token}"
        page = browser.get(url, timeout=30)
        page.raise_for_status()
        fields = {
            html.unescape(k): html.unescape(v)
            for k, v in re.findall(
                r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page.text
            )
        }
        fields["decision"] = "allow"
        action = url.split("?", 1)[0]
        done = browser.post(action, data=fields, timeout=30, allow_redirects=False)
        done.raise_for_status()
        m = re.search(r'<code id="code">([^<]+)</code>', done.text)
        assert m, done.text[:2000]
    res = flow.finish(html.unescape(m.group(1)))
    print(json.dumps({"access_token": res.access_token, "refresh_token": res.refresh_token,
                      "expires_at": str(res.expires_at)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
