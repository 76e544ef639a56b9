"""Convergence of a shared folder: two or three accounts, one sync client each (issue 13).

The claim: the accounts' sync clients edit one shared folder, `Project` (the owner shared it,
the others are editors or a viewer and mounted it), and their own spaces beside it, at random —
creates, edits, deletes, renames and moves (within the shared folder and across its mount
point, into and out of the account's own space), mkdirs, case-only renames, concurrent edits of
one file by two accounts — with clients crashing mid-pass and restarting (`synctest.crash_points`,
as in test_convergence.py), and, in the `unshare` variants, the owner removing a member or
unsharing the folder mid-run (without leaving a copy). Once every client has synced until a
pass finds nothing to do:

1. every current member's copy of the shared folder is byte-identical to the owner's, and each
   client's folder equals its account's tree on the server (mounts included);
2. no edit is lost: every write that no user replaced or deleted is somewhere (in place, as a
   conflicted copy, or — a removed member's unsynced work — kept in that member's own space);
3. nothing deleted comes back (as test_convergence.py judges it; what a removed member deleted
   or replaced in the shared folder and never sent before the removal may stay there);
4. nothing of a viewer's is uploaded: content a viewer wrote in the shared folder is in no
   other account's folder and not in the shared folder; it is the viewer's, as a conflicted
   copy in its own space;
5. no file is ever partial, no temporary file left behind.

A viewer does everything the others do, in the shared folder too: the server refuses each
write there, and the client must restore the shared version and keep the viewer's work as its
own. The mount point itself is never moved or deleted by the random users.

Replay a failure with the seed it prints, as in test_convergence.py (SYNC_SEED, SYNC_STEPS,
SYNC_TRACE, SYNC_VERBOSE); `make sync-soak` runs SYNC_SEEDS seeds of each variant.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import requests

from raftbox.client.config import Config

from .synctest import (
    ApiCluster,
    TrackingExecutor,
    UpServer,
    content_of,
    create_account_http,
    describe,
    diff,
    on_server_call,
    snapshot,
    temp_files,
)
from .synctest import config as make_config
from .test_convergence import (
    TWIN_TAG,
    Backend,
    Client,
    World,
    _key,
    _seeds,
    _server_keys,
    _server_listing,
    _tag,
    _with_open,
    api_cluster,  # noqa: F401 (the module's 3-member cluster)
    up_server,  # noqa: F401 (the module's `raftbox up`)
)

STEPS = int(os.environ.get("SYNC_STEPS", "40"))
SHARE = "Project"

# (server, roles of the accounts, what happens mid-run) → seeds. The soak runs SYNC_SEEDS each.
# "unshare": the owner unshares or removes a member; "kill": the cluster's leader is killed -9
# in the middle of a client's pass, as in test_convergence.py's cluster runs.
VARIANTS = {
    ("up", ("owner", "editor"), ""): _seeds([1, 2, 3]),
    ("up", ("owner", "editor", "viewer"), ""): _seeds([4, 5, 6]),
    ("up", ("owner", "editor", "viewer"), "unshare"): _seeds([7, 8]),
    ("cluster", ("owner", "editor", "viewer"), "kill"): _seeds([9]),
}
CASES = [
    pytest.param(srv, roles, event, seed,
                 id=f"{srv}-{'_'.join(roles)}{'-' + event if event else ''}-seed{seed}")
    for (srv, roles, event), seeds in VARIANTS.items()
    for seed in seeds
]  # fmt: skip


def _rpc(cfg: Config, route: str, arg: dict) -> dict:
    r = requests.post(f"{cfg.server}/2/{route}", json=arg, verify=cfg.ca, timeout=30,
                      headers={"Authorization": f"Bearer {cfg.token}"})  # fmt: skip
    assert r.status_code == 200, (route, r.status_code, r.text)
    return r.json()


def _inside(rel: str) -> bool:
    return rel.startswith(SHARE + "/")


class Accounts(Backend):
    """One account per role on one `raftbox up`; client i is account i's."""

    def __init__(self, srv: UpServer, roles: tuple[str, ...], tag: str) -> None:
        self.srv, self.roles = srv, roles
        self.emails = [f"{role}-{tag}@test" for role in roles]
        self.tokens = [
            create_account_http(srv.hostport, srv.ca, srv.admin_token, e)[1] for e in self.emails
        ]

    def config_for(self, i: int) -> Config:
        return make_config(f"https://{self.srv.hostport}", self.tokens[i], self.srv.ca)

    def logs(self) -> str:
        return f"--- {self.srv.proc.log_path} ---\n{self.srv.proc.tail(30)}"


class ClusterAccounts(Backend):
    """One account per role on the 3-member cluster; client i talks to member (i % 3) + 1.
    At a third of the run the leader is killed -9 at the n-th server call of a pass of a
    client that talks to another member; the clients of the dead member restart on a live
    one. At two thirds it is started again (test_convergence.py's ClusterBackend, per account)."""

    def __init__(self, c: ApiCluster, roles: tuple[str, ...], tag: str, steps: int) -> None:
        self.c = c
        self.kill_at, self.restart_at = max(1, steps // 3), max(2, 2 * steps // 3)
        self.killed: int | None = None
        self.kills = 0
        m = next(iter(c.members.values()))
        self.emails = [f"{role}-{tag}@test" for role in roles]
        self.tokens = [create_account_http(m.hostport, c.ca, c.admin_token, e)[1]
                       for e in self.emails]  # fmt: skip
        self.member_of: dict[int, int] = {}

    def _cfg(self, i: int) -> Config:
        host = self.c.members[self.member_of[i]].hostport
        return make_config(f"https://{host}", self.tokens[i], self.c.ca)

    def config_for(self, i: int) -> Config:
        self.member_of[i] = i % len(self.c.members) + 1
        return self._cfg(i)

    async def at_step(self, w: World, step: int) -> None:
        if step == self.kill_at:
            leader = self.c.leader()
            by = w.rng.choice([c for i, c in enumerate(w.clients) if self.member_of[i] != leader])
            w.note(f"{step:3d} {w.create(by)} (for the pass the leader dies in)")
            at = w.rng.randint(1, 8)
            with on_server_call(at, lambda: self.c.kill9(leader)) as hook:
                await w.sync(by)
            if not hook.fired:
                self.c.kill9(leader)
            self.killed, self.kills = leader, self.kills + 1
            w.note(f"[cluster] killed the leader, member {leader}, with SIGKILL")
            live = [i for i in self.c.members if i != leader]
            for i, cl in enumerate(w.clients):
                if self.member_of[i] == leader:
                    self.member_of[i] = live[i % len(live)]
                    await w.restart(cl, self._cfg(i))
                    w.note(f"[cluster] {cl.name} now talks to member {self.member_of[i]}")
        elif step == self.restart_at and self.killed is not None:
            self.c.restart(self.killed)
            w.note(f"[cluster] restarted member {self.killed}")
            self.killed = None

    def close(self) -> None:
        if self.killed is not None:
            self.c.restart(self.killed)
            self.killed = None

    def logs(self) -> str:
        return self.c.tails(20)


class SharedWorld(World):
    """test_convergence's world, its users working mostly in the shared folder."""

    roles: dict[str, str]  # client name → "owner" | "editor" | "viewer" | "removed"
    event: str
    sfid: str
    viewer_writes: set[bytes]
    first_roles: dict[str, str]
    removed_at: dict[str, int]  # client name → the step it left the share
    forgiven: set[bytes]  # replaced by a removed member's unsynced change: may come back

    def setup(self, roles: tuple[str, ...], event: str) -> None:
        self.roles = {c.name: r for c, r in zip(self.clients, roles, strict=True)}
        self.event = event
        self.viewer_writes = set()
        self.first_roles = dict(self.roles)
        self.forgiven = set()
        self.removed_at = {}

    def viewer(self, c: Client) -> bool:
        return self.roles[c.name] == "viewer"

    # -- where users act: mostly inside the shared folder, never on its mount point ------------

    def entries(self, c: Client) -> list[tuple[str, str]]:
        return [(rel, k) for rel, k in super().entries(c) if rel != SHARE]

    def folder(self, c: Client) -> str:
        dirs = [rel for rel, k in self.entries(c) if k == "dir"]
        inside = [d for d in dirs if _inside(d)]
        own = [d for d in dirs if not _inside(d)]
        r = self.rng.random()
        if not (c.root / SHARE).is_dir() or r < 0.1:
            return ""
        if r < 0.2 and own:
            return self.rng.choice(own)
        return self.rng.choice(inside) if inside and r < 0.6 else SHARE

    def pick(self, c: Client, *kinds: str) -> str | None:
        cands = [rel for rel, k in self.entries(c) if k in kinds]
        inside = [rel for rel in cands if _inside(rel)]
        if inside and self.rng.random() < 0.85:
            return self.rng.choice(inside)
        return self.rng.choice(cands) if cands else None

    # -- a viewer's writes in the shared folder are its own; it changes nothing there ----------

    def supersede(self, c: Client, rel: str, how: str) -> None:
        if not (self.viewer(c) and _inside(rel)):
            return super().supersede(c, rel, how)
        # The shared version stays (the viewer's edit becomes its conflicted copy); only the
        # viewer's own earlier writes there are replaced.
        before = {ck: len(rows) for ck, rows in self.superseded.items()}
        dropped = set(self.dropped_copy)
        super().supersede(c, rel, how)
        for ck in list(self.superseded):
            if ck not in self.viewer_writes and len(self.superseded[ck]) != before.get(ck, 0):
                del self.superseded[ck][before.get(ck, 0) :]
                if not self.superseded[ck]:
                    del self.superseded[ck]
        self.dropped_copy -= {
            ck for ck in self.dropped_copy - dropped if ck not in self.viewer_writes
        }

    def _write(self, c: Client, rel: str, data: bytes, how: str) -> None:
        super()._write(c, rel, data, how)
        if self.viewer(c) and _inside(rel):
            self.viewer_writes.add(b"F" + (c.root / rel).read_bytes())

    def symlink(self, c: Client) -> str:
        out = super().symlink(c)
        if self.viewer(c) and " -> " in out:
            rel, target = out.split(": symlink ", 1)[1].split(" -> ", 1)
            if _inside(rel):
                self.viewer_writes.add(b"L" + os.fsencode(target))
        return out

    def _moved(self, c: Client, src: str, dst: str) -> None:
        super()._moved(c, src, dst)
        if self.viewer(c) and _inside(dst) and not _inside(src):
            # what a viewer wrote and moves into the shared folder is its own, as what it writes
            # there (a copy of shared content it moves there is not: that is there anyway)
            self.viewer_writes.update(
                ck
                for _rel, ck in self.subtree_contents(c, src)
                if self.written.get(ck, "").startswith(c.name + " ")
            )

    async def sync(self, c: Client):
        s = await super().sync(c)
        for line in s.counters.errors[:5]:
            self.note(f"      {c.name} error: {line}")
        if s.pending and c.engine is not None:  # what it could not do: the ops it still plans
            p, _ = await c.engine.plan_pass()
            self.note(f"      {c.name} still plans: {[repr(op)[:160] for op in p.ops][:5]}")
        return s

    # -- sharing, and what the owner does mid-run ---------------------------------------------

    async def share(self, backend: Accounts | ClusterAccounts) -> None:
        owner = self.clients[0]
        sf = await asyncio.to_thread(_rpc, owner.cfg, "sharing/share_folder", {"path": "/" + SHARE})
        self.sfid = sf["shared_folder_id"]
        for c, email in zip(self.clients[1:], backend.emails[1:], strict=True):
            member = {"member": {".tag": "email", "email": email},
                      "access_level": self.roles[c.name]}  # fmt: skip
            arg = {"shared_folder_id": self.sfid, "members": [member]}
            await asyncio.to_thread(_rpc, owner.cfg, "sharing/add_folder_member", arg)
            arg = {"shared_folder_id": self.sfid}
            await asyncio.to_thread(_rpc, c.cfg, "sharing/mount_folder", arg)
        self.note(f"  0 shared /{SHARE} with {[self.roles[c.name] for c in self.clients[1:]]}")

    async def unshare(self, backend: Accounts | ClusterAccounts) -> None:
        owner = self.clients[0]
        members = [c for c in self.clients[1:] if self.roles[c.name] != "removed"]
        if self.rng.random() < 0.5:
            arg = {"shared_folder_id": self.sfid, "leave_a_copy": False}
            await asyncio.to_thread(_rpc, owner.cfg, "sharing/unshare_folder", arg)
            gone = members
            self.note(f"{self.t:3d} owner unshares /{SHARE}")
        else:
            c = self.rng.choice(members)
            i = self.clients.index(c)
            arg = {"shared_folder_id": self.sfid, "leave_a_copy": False,
                   "member": {".tag": "email", "email": backend.emails[i]}}  # fmt: skip
            await asyncio.to_thread(_rpc, owner.cfg, "sharing/remove_folder_member", arg)
            gone = [c]
            self.note(f"{self.t:3d} owner removes {c.name} ({self.roles[c.name]})")
        for c in gone:
            self.forget_unsynced(c)
            self.roles[c.name] = "removed"
            self.removed_at[c.name] = self.t

    def forget_unsynced(self, c: Client) -> None:
        """`c` leaves the share: its deletes and overwrites in the shared folder that no whole
        pass sent never reached the others — what they replaced may stay there."""
        syncs = self.ok_syncs.get(c.name, [])
        for ck, rows in self.superseded.items():
            if any(
                who == c.name and key.startswith(_key(SHARE) + "/")
                and not any(t < s <= self.t for s in syncs)
                for who, key, t, _how in rows
            ):  # fmt: skip
                self.forgiven.add(ck)

    async def run_shared(self, steps: int, backend: Accounts | ClusterAccounts) -> None:
        for c in self.clients:
            await c.open()
        try:
            owner = self.clients[0]
            (owner.root / SHARE).mkdir()
            for _ in range(3):  # something shared to start from
                self.note(f"  0 {self.create(owner)}")
            self.note(f"  0 {self.mkdir(owner)}")
            await self.sync_available(owner)
            await self.share(backend)
            for c in self.clients:
                await self.sync_available(c)
            unshare_at = max(2, steps // 2) if self.event == "unshare" else None
            for i in range(1, steps + 1):
                await backend.at_step(self, i)
                self.t = i
                if i == unshare_at:
                    await self.unshare(backend)
                await self.step(i)
            backend.close()
            snaps = await self.quiesce()
            self.check_shared(snaps)
        finally:
            for c in self.clients:
                await c.close()

    def check_shared(self, snaps: list[dict]) -> None:
        def shared(snap: dict) -> dict:
            return {k: v for k, v in snap.items() if k == SHARE or _inside(k)}

        by_name = dict(zip((c.name for c in self.clients), snaps, strict=True))
        owner = self.clients[0]
        mine = shared(by_name[owner.name])
        assert SHARE in mine, f"the owner lost /{SHARE}:\n{describe(by_name[owner.name])}"
        for c in self.clients[1:]:
            if self.roles[c.name] == "removed":
                continue
            theirs = shared(by_name[c.name])
            assert theirs == mine, (
                f"{c.name} ({self.roles[c.name]})'s /{SHARE} differs from the owner's:\n"
                f"{diff(mine, theirs)}\nowner's:\n{describe(mine)}"
            )
        for c in self.clients:
            assert not temp_files(c.root), f"{c.name}: left in .raftbox/tmp: {temp_files(c.root)}"
            self.check_whole(c, "at the end")
        have: dict[bytes, tuple[str, str]] = {}
        for c, snap in zip(self.clients, snaps, strict=True):
            for rel, e in snap.items():
                if (ck := content_of(e)) is not None:
                    have.setdefault(ck, (c.name, rel))
        lost = [
            f"{w} ({_tag(ck)})"
            for ck, w in self.written.items()
            if ck not in self.superseded and ck not in self.dropped_copy and ck not in have
        ]
        assert not lost, "edits lost (not in place, not a conflicted copy):\n  " + "\n  ".join(lost)
        where: dict[bytes, list[tuple[str, str]]] = {}
        for c, snap in zip(self.clients, snaps, strict=True):
            for rel, e in snap.items():
                if (ck := content_of(e)) is not None:
                    where.setdefault(ck, []).append((c.name, rel))

        def reaches(who: str, ts: int, at: tuple[str, str]) -> bool:
            """Could `who`'s change at step `ts` reach place `at`: its own folder, or the
            shared folder of an account that is still a member while `who` was one then?"""
            name, rel = at
            if name == who:
                return True
            shared = rel == SHARE or _inside(rel)
            return (
                shared and self.roles[name] != "removed" and self.removed_at.get(who, ts + 1) > ts
            )

        back = []
        for ck, by in self.superseded.items():
            if ck not in have or ck in self.forgiven:
                continue
            who, _key_, ts, _how = max(by, key=lambda r: r[2])
            places = [at for at in where[ck] if reaches(who, ts, at)]
            if not places or all(TWIN_TAG.search(rel) for _n, rel in places):
                continue  # another account's own copy (moved out of the share), or a twin
            if not self.kept_on_purpose(ck):
                back.append(f"{places[0]} ({_tag(ck)}, by {self.written[ck]}; replaced by {by})")
        assert not back, "deleted or replaced content came back:\n  " + "\n  ".join(back)
        viewers = {name for name, r in self.first_roles.items() if r == "viewer"}
        leaked = []
        for c, snap in zip(self.clients, snaps, strict=True):
            for rel, e in snap.items():
                ck = content_of(e)
                in_share = rel == SHARE or _inside(rel)
                if ck in self.viewer_writes and (
                    c.name not in viewers or (in_share and self.roles[c.name] != "removed")
                ):  # (a removed viewer's unsynced write stays in its now unshared folder)
                    leaked.append(f"{c.name}: {rel} ({_tag(ck)}, by {self.written[ck]})")
        assert not leaked, "a viewer's write was uploaded:\n  " + "\n  ".join(leaked)


@pytest.mark.parametrize(("srv", "roles", "event", "seed"), CASES)
def test_members_converge_on_a_shared_folder(
    srv: str,
    roles: tuple[str, ...],
    event: str,
    seed: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """After random edits by every member, crashes and syncs, every member's copy of the shared
    folder converges (see the module doc)."""
    tag = f"{seed}-{os.getpid()}-{time.monotonic_ns()}"
    if srv == "up":
        backend: Accounts | ClusterAccounts = Accounts(
            request.getfixturevalue("up_server"), roles, tag
        )
    else:
        backend = ClusterAccounts(request.getfixturevalue("api_cluster"), roles, tag, STEPS)
    pool = TrackingExecutor()
    clients = []
    for i in range(len(roles)):
        root = tmp_path / f"c{i}"
        root.mkdir()
        clients.append(Client(f"dev{i}", root, backend.config_for(i)))
    w = SharedWorld(seed, clients, backend, pool)
    w.setup(roles, event)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(pool)
        await w.run_shared(STEPS, backend)
        if isinstance(backend, ClusterAccounts):
            assert backend.kills == 1, "the leader was not killed"
        for c in clients:  # each folder is its account's tree on the server, mounts included
            server_keys = await _with_open(c, _server_listing)
            assert server_keys == _server_keys(snapshot(c.root)), f"{c.name}: server differs"

    t0 = time.monotonic()
    try:
        asyncio.run(main())
    except BaseException as e:
        replay = (
            f"seed {seed} failed ({srv}, {'+'.join(roles)} {event}, {STEPS} steps). Replay: "
            f"SYNC_SEED={seed} SYNC_STEPS={STEPS} .venv/bin/python -m pytest "
            f"tests/client/test_convergence_shared.py -k '{srv}-{'_'.join(roles)}{'-' + event if event else '-seed'}'"
        )
        print(replay)
        print("steps:\n" + "\n".join(w.log[-150:]))
        print(backend.logs())
        e.add_note(replay)
        raise
    finally:
        backend.close()
        pool.shutdown(wait=True)
    print(f"seed {seed}: {STEPS} steps, {w.crashes} crashes, {time.monotonic() - t0:.1f}s")
    if os.environ.get("SYNC_VERBOSE"):
        print("\n".join(w.log))


# -- the hazards the random runs found, each as one scripted run -------------------------------


def _members(srv: UpServer, tmp_path: Path, roles: tuple[str, ...]) -> tuple[SharedWorld, Accounts]:
    """A world of one client per role, `/Project` (holding `d/`) shared and mounted by all."""
    backend = Accounts(srv, roles, f"hazard-{os.getpid()}-{time.monotonic_ns()}")
    clients = []
    for i in range(len(roles)):
        root = tmp_path / f"c{i}"
        root.mkdir()
        clients.append(Client(f"dev{i}", root, backend.config_for(i)))
    w = SharedWorld(0, clients, backend, TrackingExecutor())
    w.setup(roles, "")
    return w, backend


async def _pass(c: Client):
    assert c.engine is not None
    return await c.engine.sync()


def _run_members(w: SharedWorld, backend: Accounts, script) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(w.pool)
        for c in w.clients:
            await c.open()
        try:
            (w.clients[0].root / SHARE / "d").mkdir(parents=True)
            await _pass(w.clients[0])
            await w.share(backend)
            for c in w.clients:
                await _pass(c)
            await script()
        finally:
            for c in w.clients:
                await c.close()

    try:
        asyncio.run(main())
    finally:
        w.pool.shutdown(wait=True)


@pytest.mark.parametrize("new", ["e", "D", "../../own", ""])
def test_a_viewers_new_file_in_a_folder_the_owner_renamed(
    new: str,
    up_server: UpServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Seed 4 (owner+editor+viewer, 40 steps) in short. The owner renames Project/d to
    Project/e (or, case only, to Project/D), moves it out of the share into its own space, or
    deletes it; the viewer, before it hears of it, writes a new file in d. When the server
    has no d any more, the viewer's pass cannot create it again (read-only): the file must
    end as the viewer's own (a conflicted copy outside the share) and the shared folder as
    the owner's — not a pass that retries the folder forever."""
    w, backend = _members(up_server, tmp_path, ("owner", "viewer"))
    owner, viewer = w.clients

    async def script() -> None:
        if new:
            os.rename(owner.root / SHARE / "d", owner.root / SHARE / new)
        else:
            (owner.root / SHARE / "d").rmdir()
        await _pass(owner)
        (viewer.root / SHARE / "d" / "mine.txt").write_bytes(b"the viewer's\n")
        s = await _pass(viewer)
        assert s.ok, (s.counters.errors, s.counters.messages, s.pending)
        for c in (viewer, owner, viewer):
            s = await _pass(c)
            assert s.ok, (c.name, s.counters.errors, s.counters.messages, s.pending)

    _run_members(w, backend, script)
    o, v = snapshot(owner.root), snapshot(viewer.root)
    o = {k: e for k, e in o.items() if k == SHARE or _inside(k)}
    assert set(o) == ({SHARE, f"{SHARE}/{new}"} if new and "/" not in new else {SHARE}), o
    assert {k: e for k, e in v.items() if k == SHARE or _inside(k)} == o, diff(o, v)
    mine = [k for k, e in v.items() if e[0] == "file" and e[1] == b"the viewer's\n"]
    assert len(mine) == 1 and not _inside(mine[0]), describe(v)


@pytest.mark.parametrize("what", ["delete", "move out", "rename", "mkdir", "chmod"])
def test_a_viewers_other_changes_in_the_shared_folder(
    what: str,
    up_server: UpServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A viewer deletes, moves out of the share, renames, chmods a file of the shared folder,
    or makes a folder in it. The server refuses each (read-only); the pass must not retry
    it forever: the shared folder is restored as the server has it, and what the viewer
    made (the moved or renamed file, the new folder, the changed file) is its own — at its
    new place in its own space, or as a conflicted copy at its top level."""
    w, backend = _members(up_server, tmp_path, ("owner", "viewer"))
    owner, viewer = w.clients

    async def script() -> None:
        (owner.root / SHARE / "f.txt").write_bytes(b"shared\n")
        for c in (owner, viewer):
            assert (await _pass(c)).ok
        p = viewer.root / SHARE / "f.txt"
        if what == "delete":
            p.unlink()
        elif what == "move out":
            p.rename(viewer.root / "f.txt")
        elif what == "rename":
            p.rename(viewer.root / SHARE / "g.txt")
        elif what == "mkdir":
            (viewer.root / SHARE / "new").mkdir()
        else:
            os.chmod(p, 0o755)
        for c in (viewer, owner, viewer):
            s = await _pass(c)
            assert s.ok, (c.name, s.counters.errors, s.counters.messages, s.pending)

    _run_members(w, backend, script)
    o, v = snapshot(owner.root), snapshot(viewer.root)
    assert o == {SHARE: ("dir",), f"{SHARE}/d": ("dir",),
                 f"{SHARE}/f.txt": ("file", b"shared\n", False)}, describe(o)  # fmt: skip
    assert {k: e for k, e in v.items() if k == SHARE or _inside(k)} == o, diff(o, v)
    own = {k: e for k, e in v.items() if not (k == SHARE or _inside(k))}
    if what == "delete":
        assert own == {}, describe(v)
    elif what == "move out":
        assert own == {"f.txt": ("file", b"shared\n", False)}, describe(v)
    elif what == "mkdir":
        assert [k.startswith("new (conflicted copy") and e == ("dir",) for k, e in own.items()] == [
            True
        ], describe(v)
    else:
        assert len(own) == 1, describe(v)
        ((name, e),) = own.items()
        assert "conflicted copy" in name and e == ("file", b"shared\n", what == "chmod"), describe(
            v
        )


def test_unshare_right_after_the_owners_deletes(
    up_server: UpServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Seed 5 (up, owner+editor+viewer unshare, 60 steps) in short. The owner deletes two
    folders of the shared folder (its pass ends there: its cursor has not been sent the
    deletes yet) and unshares it. Its folder stays (a copy, same ids) and the mount leaves
    its cursor: the next pass must not make the deleted folders again (the server must say
    they are gone: the copy names only what is live)."""
    w, backend = _members(up_server, tmp_path, ("owner", "editor"))
    owner, ed = w.clients

    async def script() -> None:
        (owner.root / SHARE / "f.txt").write_bytes(b"f\n")
        (owner.root / SHARE / "src").mkdir()
        for c in (owner, ed):
            assert (await _pass(c)).ok
        (owner.root / SHARE / "src").rmdir()
        (owner.root / SHARE / "d").rmdir()
        assert (await _pass(owner)).ok
        arg = {"shared_folder_id": w.sfid, "leave_a_copy": False}
        await asyncio.to_thread(_rpc, owner.cfg, "sharing/unshare_folder", arg)
        for c in (ed, owner, ed):
            s = await _pass(c)
            assert s.ok, (c.name, s.counters.errors, s.counters.messages, s.pending)
        assert await _server_listing(owner) == {_key(SHARE), _key(f"{SHARE}/f.txt")}

    _run_members(w, backend, script)
    o = snapshot(owner.root)
    assert o == {SHARE: ("dir",), f"{SHARE}/f.txt": ("file", b"f\n", False)}, describe(o)
    assert snapshot(ed.root) == {}, describe(snapshot(ed.root))
