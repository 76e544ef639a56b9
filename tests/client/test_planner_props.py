"""Property tests: the planner, driven against a naive in-memory model of both sides.

Each example starts from random content on both sides, syncs it, then for a few rounds makes
random edits on each side without syncing (so they are concurrent), syncs until a plan comes back
empty, and checks what DESIGN.md §8 promises:

- convergence: local, server and synced trees are identical (names, kinds, content, x-bit);
- no lost edit: every content made this round and still present on either side when the edits
  stopped is present at the end (in place, moved, or as a conflicted copy);
- nothing deleted comes back: an entry deleted on one side and untouched on the other is gone;
- plans are deterministic (checked inside `Executor.plan`), and the strict executor asserts every
  precondition the planner promises (parents exist, names are free, files are as expected).
"""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raftbox.client import Kind, Node, OpKind, Tree, plan, settled
from raftbox.client.trees import path_key

from .edits import Editor, edits_st
from .sim import (
    HOST,
    TODAY,
    Executor,
    LocalDisk,
    Server,
    view_local,
    view_remote,
    view_synced,
)

# RAFTBOX_PROP_EXAMPLES=5000 for a long hunt; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("RAFTBOX_PROP_EXAMPLES", "250"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)


def _world(racy: bool = False):
    clock = itertools.count(1)
    disk, server = LocalDisk(clock), Server(clock)
    ex = Executor(disk, server, racy=racy)
    return ex, Editor(disk, server, itertools.count(1))


def _untouched(view: dict, start: dict, key: str) -> bool:
    """`view` holds `key` exactly as at the start, and nothing new or changed below it."""
    if view.get(key) != start[key]:
        return False
    below = [k for k in view if k.startswith(key + "/")]
    return all(view[k] == start.get(k) for k in below)


def _check_round(ex: Executor, start: dict, end_local: dict, end_remote: dict, made: set[str]):
    final_l, final_r = view_local(ex.disk), view_remote(ex.server)
    assert final_l == final_r, "local and server differ after quiescence"
    assert view_synced(ex.synced) == final_r, "synced tree differs from the sides"
    live = made & (_contents(end_local) | _contents(end_remote))
    lost = live - _contents(final_r)
    assert not lost, f"edits lost: {sorted(lost)}"
    for key in start:
        for gone, kept in ((end_local, end_remote), (end_remote, end_local)):
            if key not in gone and _untouched(kept, start, key):
                assert key not in final_r, f"{key} was deleted on one side and came back"


@SETTINGS
@given(initial=edits_st, rounds=st.lists(edits_st, min_size=1, max_size=2))
def test_random_concurrent_edits_converge_without_losing_or_resurrecting(initial, rounds):
    ex, ed = _world()
    for e in initial:
        ed.apply(e)
    ex.sync()
    for edits in rounds:
        start = view_remote(ex.server)
        assert start == view_local(ex.disk)
        ed.created.clear()
        for e in edits:
            ed.apply(e)
        end_local, end_remote = view_local_lenient(ex.disk), view_remote(ex.server)
        ex.sync()
        _check_round(ex, start, end_local, end_remote, set(ed.created))


def view_local_lenient(disk: LocalDisk) -> dict:
    """Like `view_local`, but twins (allowed before a sync) are kept: a key held by two local
    names maps to every name's tuple (so it never looks untouched), under the key."""
    groups: dict = {}
    for p, x in sorted(disk.e.items()):
        v = (p.rsplit("/", 1)[1], x.kind, x.content, x.executable and x.kind is Kind.FILE)
        groups.setdefault(path_key(p), []).append(v)
    return {
        k: vs[0] if len(vs) == 1 else ("twins", None, tuple(vs), None) for k, vs in groups.items()
    }


def _contents(view: dict) -> set[str]:
    out: set[str] = set()
    for v in view.values():
        if v[0] == "twins":
            out.update(t[2] for t in v[2] if t[2] is not None)
        elif v[2] is not None:
            out.add(v[2])
    return out


@SETTINGS
@given(initial=edits_st, edits=edits_st, racing=edits_st, cut=st.integers(0, 40))
def test_edits_racing_the_executor_lose_nothing(initial, edits, racing, cut):
    """Edits land between planning and executing: the executor's re-checks keep them."""
    ex, ed = _world(racy=True)
    for e in initial:
        ed.apply(e)
    ex.sync()
    ed.created.clear()
    for e in edits:
        ed.apply(e)
    p = ex.plan()
    pending = list(racing)
    for i, op in enumerate(p.ops):
        if i == cut:
            while pending:
                ed.apply(pending.pop(0))
        if not ex.run_op(op) and op.kind not in (OpKind.UPLOAD, OpKind.DOWNLOAD):
            break  # the contract: a structural op that did not go as planned ends the pass
    for e in pending:
        ed.apply(e)
    end_local, end_remote = view_local_lenient(ex.disk), view_remote(ex.server)
    # What must survive: contents made here, present on a side, and not yet agreed on (an
    # agreed version may be replaced by a later edit on either side).
    agreed_on = {n.content_hash or n.link_target for n in ex.synced.values()}
    live = ed.created & (_contents(end_local) | _contents(end_remote)) - agreed_on
    ex.sync()
    final = view_remote(ex.server)
    assert view_local(ex.disk) == final
    assert view_synced(ex.synced) == final
    assert not live - _contents(final), "an edit made during execution was lost"


@SETTINGS
@given(initial=edits_st, edits=edits_st, share=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]))
def test_max_delete_never_lets_a_pass_delete_more_than_the_share(initial, edits, share):
    ex, ed = _world()
    for e in initial:
        ed.apply(e)
    ex.sync()
    for e in edits:
        ed.apply(e)
    local, remote, synced = ex.trees()
    p = plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=share)
    full = plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=1.0)
    deletes = sum(op.kind in (OpKind.DELETE_LOCAL, OpKind.DELETE_REMOTE) for op in full.ops)
    assert p.deletes == deletes and p.entries == len(synced)
    if deletes > share * len(synced):
        assert p.refused is not None and not p.ops and p.withheld == full.ops
        assert f"{deletes} of {len(synced)}" in p.refused
    else:
        assert p.refused is None and p.ops == full.ops


@settings(max_examples=100, deadline=None)
@given(edits=edits_st)
def test_a_synced_state_plans_nothing(edits):
    ex, ed = _world()
    for e in edits:
        ed.apply(e)
    ex.sync()
    local, remote, synced = ex.trees()
    assert plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=0.0).is_empty


@settings(max_examples=100, deadline=None)
@given(initial=edits_st, edits=edits_st)
def test_settled_trees_plan_nothing_and_a_converged_sync_is_settled(initial, edits):
    """`settled` lets the engine skip planning: it must say True only where the plan is empty
    (also checked inside every `Executor.plan` of these tests), and say True once a sync has
    converged, or the no-op pass would never take the shortcut."""
    ex, ed = _world()
    for e in initial:
        ed.apply(e)
    ex.sync()
    assert settled(*ex.trees())
    for e in edits:
        ed.apply(e)
    local, remote, synced = ex.trees()
    p = plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=1.0)
    assert not settled(local, remote, synced) or p.is_empty
    ex.sync()
    assert settled(*ex.trees())


def _reference_decision(ls: str, rs: str, same: bool) -> str:
    """The textbook three-way merge for one file, written as plainly as possible."""
    if ls == rs == "absent":
        return "forget"
    if ls in ("same",) and rs in ("same",):
        return "record"
    if ls in ("new", "changed") and rs in ("new", "changed"):
        return "record" if same else "conflict"
    if ls in ("new", "changed"):
        return "upload"
    if rs in ("new", "changed"):
        return "download"
    if ls == "absent" and rs == "same":
        return "delete_remote"
    if rs == "absent" and ls == "same":
        return "delete_local"
    raise AssertionError((ls, rs))


_STATES = st.sampled_from(["absent", "same", "changed"])


@settings(max_examples=200, deadline=None)
@given(
    in_synced=st.booleans(),
    ls=_STATES,
    rs=_STATES,
    lc=st.sampled_from(["x", "y"]),
    rc=st.sampled_from(["x", "y"]),
)
def test_single_file_matches_the_reference_merge(in_synced, ls, rs, lc, rc):
    """One file, every combination of local/remote state against synced, vs the reference."""
    base = Node("/f", Kind.FILE, content_hash="base")
    synced = Tree({base.key: base}) if in_synced else Tree()

    def side(state: str, content: str, rev: str) -> Tree:
        if state == "absent":
            return Tree()
        h = "base" if state == "same" and in_synced else content
        n = Node("/f", base.kind, content_hash=h, rev=rev)
        return Tree({n.key: n})

    local, remote = side(ls, lc, None), side(rs, rc, "r1")
    lsn = "absent" if ls == "absent" else ("same" if in_synced and ls == "same" else "changed")
    rsn = "absent" if rs == "absent" else ("same" if in_synced and rs == "same" else "changed")
    if not in_synced:
        lsn = "absent" if ls == "absent" else "new"
        rsn = "absent" if rs == "absent" else "new"
        if lsn == rsn == "absent":
            return
    lh = local["/f"].content_hash if local else None
    rh = remote["/f"].content_hash if remote else None
    want = _reference_decision(lsn, rsn, lh == rh)
    p = plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=1.0)
    kinds = [op.kind for op in p.ops]
    got = {
        (): "record",
        (OpKind.UPDATE_SYNCED,): "forget" if want == "forget" else "record",
        (OpKind.UPLOAD,): "upload",
        (OpKind.DOWNLOAD,): "download",
        (OpKind.DELETE_LOCAL,): "delete_local",
        (OpKind.DELETE_REMOTE,): "delete_remote",
        (OpKind.CONFLICT_COPY, OpKind.UPLOAD, OpKind.DOWNLOAD): "conflict",
        (OpKind.CONFLICT_COPY, OpKind.DOWNLOAD, OpKind.UPLOAD): "conflict",
    }[tuple(kinds)]
    assert got == want, (p.ops, lsn, rsn)


def _op_paths(op) -> list[str]:
    return [getattr(op, a) for a in ("path", "src", "dst", "new_path") if hasattr(op, a)]


@settings(max_examples=int(os.environ.get("RAFTBOX_PROP_EXAMPLES", "100")), deadline=None)
@given(initial=edits_st, edits=edits_st, pick=st.integers(0, 10**6))
# Folder /Café renamed locally to /a while /a/a is held: the server's /Café/a, moved with its
# folder, must not then read as deleted locally (it was: DeleteRemote('/a/a')).
@example(
    initial=[("local", "mkdir", 0, 0, 4)] + [("local", "create", 1, 0, 0)] * 4,
    edits=[("local", "create", 0, 0, 2), ("local", "create", 1, 0, 0), ("local", "move", 0, 0, 0)],
    pick=128,
)
def test_a_held_entry_is_never_touched_on_any_side(initial, edits, pick):
    """What the engine holds (an entry the server sent that cannot be represented here, or a
    local one it could not read) is hidden on all three sides: no operation of the plan names
    it or anything below it, and none deletes a folder above it, whatever the two sides did,
    moves of its folders included (issue 11)."""
    ex, ed = _world()
    for e in initial:
        ed.apply(e)
    ex.sync()
    for e in edits:
        ed.apply(e)
    local, remote, synced = ex.trees()
    paths = sorted({n.path for t in (local, remote, synced) for n in t.values()})
    if not paths:
        return
    held = paths[pick % len(paths)]
    key = path_key(held)
    p = plan(local, remote, synced, host=HOST, today=TODAY, max_delete_share=1.0, hold=[held])
    for op in p.ops:
        for path in _op_paths(op):
            k = path_key(path)
            assert k != key and not k.startswith(key + "/"), (held, op)
            if _deletes_a_folder(op):
                assert not key.startswith(k + "/"), (held, op)  # the folder holds it
    # Run it (strictly: every precondition must hold): what the held key had on either side is
    # still on that side, in place or moved with its folder.
    before = [_held_contents(v, key) for v in (view_local_lenient(ex.disk), view_remote(ex.server))]
    ex.run(p)
    after = [_contents(v) for v in (view_local_lenient(ex.disk), view_remote(ex.server))]
    assert before[0] <= after[0] and before[1] <= after[1], (held, p.ops)


def _deletes_a_folder(op) -> bool:
    if op.kind is OpKind.DELETE_REMOTE:
        return op.rev is None
    return op.kind is OpKind.DELETE_LOCAL and op.expect.is_folder


def _held_contents(view: dict, key: str) -> set[str]:
    return _contents({k: v for k, v in view.items() if k == key or k.startswith(key + "/")})
