"""Settling what a killed pass left in flight: the index's write-ahead `pending` rows.

Contract
--------
The executor writes a `pending` row before each step whose effect and record cannot be one
transaction (a move, the rename of a finished download, an upload's commit) and drops it with
the record. `reconcile(root, index, remote, remote_tree)`, run at the start of every pass
before the scan (and before the temporary files are deleted: it looks at them), decides for
each row left behind whether its step happened, records in the index what both sides then agree
on, and drops every row, in one transaction. It changes nothing on disk or on the server; a row
whose step did not happen is simply forgotten (the next plan does the step again, or sees a
change to propagate). Why each case is decided the way it is: see `reconcile`.
"""

from __future__ import annotations

import os

from raftbox.meta.paths import MalformedPath

from .executor import TMP_DIR
from .index import STATE_DIR, Index
from .remote import Remote, RemoteError, remote_node
from .trees import Node, Tree, agreed, path_key, same_content


async def reconcile(root: str, index: Index, remote: Remote, remote_tree: Tree) -> None:
    """Settle the transfers a killed process left in flight (`index.pending`).

    A move whose source is gone here (a local move), or whose destination on the server
    holds the moved entry's id (a server move), was made: the synced subtree moves too.
    A download whose temp file is gone was renamed into place: record it as synced (what
    is at the path now, or its absence, is then judged against that, like any change).

    An upload whose content is the server's file there now got there: that is recorded
    as synced. An upload in update(parent_rev) mode (the row keeps `parent_rev` in its
    `rev`) whose content is in a revision of the path newer than `parent_rev` got there —
    ours, or an identical one from elsewhere, either way the same bytes — so that revision is
    recorded as synced. Older revisions never count: a file reverted to an old version's
    content must not be taken for one the server already has. An upload in add mode has no
    such bound and, unless the server's file there now has its content, is forgotten (after a
    kill at exactly that moment the next pass may make a needless conflicted copy: a
    duplicate, never a loss)."""
    pending = index.pending_all()
    if not pending:
        return
    tmp = os.path.join(root, STATE_DIR, TMP_DIR)
    puts: list[Node] = []
    moves: list[tuple[str, str]] = []
    for op, name, node in pending:
        if op in ("move_local", "move_remote") and name is not None:
            if op == "move_local":
                done = not os.path.lexists(root + node.path)
            else:
                there = remote_tree.get(path_key(name))
                done = there is not None and there.remote_id == node.remote_id
            if done:
                moves.append((node.key, name))
            continue
        if op == "download":
            if name is None or not os.path.lexists(os.path.join(tmp, name)):
                puts.append(node)
            continue
        now = remote_tree.get(node.key)
        if now is not None and now.rev is not None and same_content(now, node):
            # The server has these bytes there now (from this commit or an identical
            # one): that is what both sides last agreed on, whatever the file is now.
            if node.rev is None or _rev_after(now.rev, node.rev):
                puts.append(agreed(node, now))
            continue
        if node.rev is None:
            continue  # add mode, and not there: it did not happen
        try:
            revs = (await remote.api(
                "files/list_revisions", {"path": node.path, "limit": 100}))["entries"]  # fmt: skip
        except RemoteError:
            continue
        for m in revs:
            try:
                rem = remote_node({**m, ".tag": "file"})
            except (MalformedPath, KeyError, TypeError, ValueError):
                continue  # a revision this client cannot read: not the one it sent
            if (
                rem is not None
                and rem.rev is not None
                and _rev_after(rem.rev, node.rev)
                and rem.kind is node.kind
                and same_content(rem, node)
            ):
                puts.append(agreed(node, rem))
                break
    with index.batch():
        for src_key, dst in moves:
            index.move(src_key, dst)
        index.apply(put=puts, delete=[n.key for n in puts if not n.is_folder])
        index.pending_drop(n.key for _, _, n in pending)


def _rev_after(a: str, b: str) -> bool:
    """Is rev `a` newer than rev `b`? (Revs are hexadecimal and grow with the Raft log.)"""
    try:
        return int(a, 16) > int(b, 16)
    except ValueError:
        return False
