"""raftbox: a self-hosted Dropbox with Raft-replicated metadata and content-addressed blocks."""

__version__ = "0.1.0"
