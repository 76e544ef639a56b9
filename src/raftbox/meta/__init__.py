"""raftbox.meta: the metadata service — a deterministic state machine on SQLite, replicated by Raft.

Layers (DESIGN.md §5):

- `paths.py` (pure): parse, validate and normalize Dropbox paths. `key` = NFC then casefold,
  used for matching; `display` keeps the case it was created with; `path_lower` = display.lower().
- `commands.py` (pure): the typed write commands (msgspec tagged union) and result/error types.
- `fsm.py`: `MetaStore`, the state machine. `apply(index, Command)` runs one command in one SQLite
  transaction that also records the applied index; queries read the local replica. The concerns
  it dispatches to: `schema.py` (tables, migrations), `rows.py` (row types, lookups),
  `context.py` (`ApplyContext`: the per-entry index, stamp and positions; the savepoint),
  `writes.py` (commit, folders, delete, move/copy, restore), `sessions.py` (upload sessions),
  `accounts.py` (accounts, tokens), `gcstate.py` (block rights, GC state), `queries.py`
  (listings, cursors, revisions), `snapshot.py` (snapshot images).
- `service.py`: the meta role — turns API calls into proposals (writes, through the Raft node)
  and linearizable reads (ReadIndex, then a query), and signs cursors.

Determinism: `apply` never reads a clock or a random source. Time is `Command.stamp_ms`, stamped
by the leader when it proposed; ids and revs derive from the raft index and the position of the
item within the entry (rev = f"{index:012x}{pos:04x}"), ids are an HMAC of the same with the
cluster secret so they are opaque and stable.
"""
