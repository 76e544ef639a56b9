"""End-to-end tests: real raft-kv member processes on 127.0.0.1 (see `cluster.py`)."""
