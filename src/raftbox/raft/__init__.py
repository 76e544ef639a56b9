"""raftbox.raft: the Raft consensus core (pure) and its runtime."""
