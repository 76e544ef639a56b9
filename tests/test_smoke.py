def test_placeholder_import():
    import raftbox.raft.messages  # noqa: F401

