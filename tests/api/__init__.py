"""The Dropbox API v2 subset, driven by the official SDK against real raftbox processes."""
