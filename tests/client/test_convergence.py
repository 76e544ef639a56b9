"""Convergence: two or three sync clients of one account, random user edits, crashes, a leader kill.

The claim (issue 7): whatever the interleaving of creates, edits, deletes, renames and moves (of
files and folders), mkdirs, case-only renames and concurrent edits of one file on two clients,
with clients crashing mid-pass and restarting — and, on a 3-member cluster, the leader killed -9
mid-run — once every client has synced until a pass finds nothing to do:

1. every folder is byte-identical to the others (names, bytes, symlink targets, executable bits),
   and the server holds the same names;
2. every edit ever made that no user replaced or deleted is present, in place or as a
   `(conflicted copy from ...)` file (each write has unique content, so presence is checked by
   content);
3. nothing deleted comes back: content a user deleted or overwrote is gone — unless, when the
   last user did so, another client had concurrently (before the two had exchanged it through
   the server) moved it elsewhere, moved a folder holding it, or changed its executable bit:
   such a change wins over a delete, as an edit does. Also kept on purpose: one of two names a
   user gave one key (`(case conflict)`);
4. no file under its real name is ever partial, and no temporary file is left behind: after every
   pass and at every crash point each file holds content some write made, whole.

"Concurrently" is judged from whole passes: client D's change at step t was seen by client C at
step s if D finished a pass after t and C finished one after that, before s.

How: the clients are in-process `SyncEngine`s, each on its own folder with its own device name,
driven by one `random.Random(seed)`. A crash is `synctest.crash_points`: the n-th server call,
index record or rename of the pass raises (before or after it happens); the engine is then
closed and opened again, as a restarted process would be. Crash points are counted, not timed,
so a seed replays the same run. Real kill -9 of `raftbox sync` is in test_sync_crash.py.

The hazards the random runs found are also scripted, one short test each, at the end.

Replay a failure with the seed it prints, e.g.
`SYNC_SEED=123 SYNC_STEPS=60 .venv/bin/python -m pytest tests/client/test_convergence.py -k up-3`;
add `SYNC_TRACE=s123#7` to log where that write (the tag at the head of every content) is on each
client after every step (`s123#`: every write), `SYNC_VERBOSE=1` to print the steps of passing
runs too. `make sync-soak` runs many more seeds and steps (SYNC_SEEDS, SYNC_STEPS).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raftbox.client.config import Config
from raftbox.client.engine import Options, Summary, SyncEngine
from raftbox.client.trees import path_key
from raftbox.testing.procs import free_port

from .synctest import (
    ApiCluster,
    Contents,
    Crash,
    Entry,
    TrackingExecutor,
    UpServer,
    content_of,
    crash_points,
    create_account_http,
    describe,
    diff,
    on_server_call,
    snapshot,
    temp_files,
)
from .synctest import config as make_config

STEPS = int(os.environ.get("SYNC_STEPS", "60"))
TRACE = os.environ.get("SYNC_TRACE", "").encode()  # e.g. "s38#7": where that write is, each step
_ONE_SEED = os.environ.get("SYNC_SEED")
_N_SEEDS = int(os.environ.get("SYNC_SEEDS", "0"))


def _seeds(default: list[int]) -> list[int]:
    if _ONE_SEED is not None:
        return [int(_ONE_SEED)]
    if _N_SEEDS:
        return list(range(1, _N_SEEDS + 1))
    return default


# The short default suite: (server, clients) → seeds. The soak runs SYNC_SEEDS seeds of each.
VARIANTS = {
    ("up", 2): _seeds([1, 2, 3, 4, 5]),
    ("up", 3): _seeds([6, 7, 8, 9, 10]),
    ("cluster", 3): _seeds([11, 12]),
}
CASES = [
    pytest.param(srv, n, seed, id=f"{srv}-{n}-seed{seed}")
    for (srv, n), seeds in VARIANTS.items()
    for seed in seeds
]

FILE_NAMES = ("a.txt", "A.txt", "b.md", "notes", "data.tar.gz", ".rc", "Café.txt",
              unicodedata.normalize("NFD", "Café.txt"), "x.bin")  # fmt: skip
DIR_NAMES = ("docs", "Docs", "src", "photos", "d")
LINK_NAMES = ("link", "Link.lnk")
TWIN_TAG = re.compile(r"\((case|Unicode normalization) conflict( [0-9]+)?\)")
QUIESCE_ROUNDS = 8
UNAVAILABLE_DEADLINE_S = 60.0


# -- servers (one per module, started only if a test needs it) ---------------------------------


@pytest.fixture(scope="module")
def up_server(tmp_path_factory: pytest.TempPathFactory):
    srv = UpServer(tmp_path_factory.mktemp("conv-up"), free_port())
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory):
    c = ApiCluster(tmp_path_factory.mktemp("conv-cluster"), n=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


class Backend:
    """Where the clients' account lives; a hook per step (the cluster kills its leader)."""

    def config_for(self, i: int) -> Config:
        raise NotImplementedError

    async def at_step(self, w: World, step: int) -> None:
        return None

    def close(self) -> None:
        return None

    def logs(self) -> str:
        return ""


class UpBackend(Backend):
    def __init__(self, srv: UpServer, email: str) -> None:
        self.srv = srv
        _, self.token = create_account_http(srv.hostport, srv.ca, srv.admin_token, email)

    def config_for(self, i: int) -> Config:
        return make_config(f"https://{self.srv.hostport}", self.token, self.srv.ca)

    def logs(self) -> str:
        return f"--- {self.srv.proc.log_path} ---\n{self.srv.proc.tail(30)}"


class ClusterBackend(Backend):
    """Client i talks to member (i % 3) + 1. At a third of the run the leader is killed -9 in
    the middle of a pass of a client that talks to another member (at its n-th server call),
    and the clients that talked to the leader crash and restart on a live member; at two
    thirds it is started again (it rejoins and catches up while the run goes on)."""

    def __init__(self, c: ApiCluster, email: str, steps: int) -> None:
        self.c = c
        self.kill_at, self.restart_at = max(1, steps // 3), max(2, 2 * steps // 3)
        self.killed: int | None = None
        self.kills = 0
        m = next(iter(c.members.values()))
        _, self.token = create_account_http(m.hostport, c.ca, c.admin_token, email)
        self.member_of: dict[int, int] = {}

    def _cfg(self, member: int) -> Config:
        return make_config(f"https://{self.c.members[member].hostport}", self.token, self.c.ca)

    def config_for(self, i: int) -> Config:
        self.member_of[i] = i % len(self.c.members) + 1
        return self._cfg(self.member_of[i])

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
            self.killed = leader
            self.kills += 1
            when = f"at {by.name}'s server call {at}" if hook.fired else "after the pass"
            w.note(f"[cluster] killed the leader, member {leader}, with SIGKILL {when}")
            live = [i for i in self.c.members if i != leader]
            for i, cl in enumerate(w.clients):
                if self.member_of[i] == leader:
                    self.member_of[i] = live[i % len(live)]
                    await w.restart(cl, self._cfg(self.member_of[i]))
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


# -- the world: clients, what was written, what users replaced or moved ------------------------


@dataclass
class Client:
    name: str  # its device name (names its conflicted copies)
    root: Path
    cfg: Config
    engine: SyncEngine | None = None

    async def open(self) -> None:
        opts = Options(host=self.name, max_delete_share=1.0, max_delete_floor=10**9)
        self.engine = SyncEngine(self.root, self.cfg, opts)
        await self.engine.__aenter__()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.__aexit__()
            self.engine = None


def _key(rel: str) -> str:
    return path_key("/" + rel)


@dataclass
class World:
    seed: int
    clients: list[Client]
    backend: Backend
    pool: TrackingExecutor
    rng: random.Random = field(init=False)
    contents: Contents = field(init=False)
    log: list[str] = field(default_factory=list)
    written: dict[bytes, str] = field(default_factory=dict)  # content → which write made it
    # content → (who, key, step) of each user edit or delete of it / move of it / chmod of it
    superseded: dict[bytes, list[tuple[str, str, int, str]]] = field(default_factory=dict)
    moved: dict[bytes, list[tuple[str, str, int]]] = field(default_factory=dict)
    moves: list[tuple[str, str, str, int]] = field(default_factory=list)  # who, src/dst key, step
    chmodded: dict[bytes, list[tuple[str, str, int]]] = field(default_factory=dict)
    dropped_copy: set[bytes] = field(default_factory=set)  # a user dropped one of its copies
    ok_syncs: dict[str, list[int]] = field(default_factory=dict)  # who → steps of whole syncs
    t: int = 0  # the current step
    crashes: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.contents = Contents(f"s{self.seed}", self.rng)

    def note(self, line: str) -> None:
        self.log.append(line)

    # -- reading a client's disk ---------------------------------------------------------------

    def entries(self, c: Client) -> list[tuple[str, str]]:
        """(rel, kind) of every entry, kind "dir" | "file" | "link", in path order."""
        out = []
        for dirpath, dirs, files in os.walk(c.root):
            rel_dir = os.path.relpath(dirpath, c.root)
            rel_dir = "" if rel_dir == "." else rel_dir
            if not rel_dir and ".raftbox" in dirs:
                dirs.remove(".raftbox")
            dirs.sort()
            for d in list(dirs):
                rel = f"{rel_dir}/{d}" if rel_dir else d
                if os.path.islink(c.root / rel):  # os.walk lists a link to a folder as a dir
                    dirs.remove(d)
                    out.append((rel, "link"))
                else:
                    out.append((rel, "dir"))
            for f in sorted(files):
                rel = f"{rel_dir}/{f}" if rel_dir else f
                out.append((rel, "link" if os.path.islink(c.root / rel) else "file"))
        return sorted(out)

    def pick(self, c: Client, *kinds: str) -> str | None:
        cands = [rel for rel, k in self.entries(c) if k in kinds]
        return self.rng.choice(cands) if cands else None

    def folder(self, c: Client) -> str:
        """A random folder of `c` ("" is the root), the root more often."""
        dirs = [rel for rel, k in self.entries(c) if k == "dir"]
        return "" if not dirs or self.rng.random() < 0.35 else self.rng.choice(dirs)

    def subtree_contents(self, c: Client, rel: str) -> list[tuple[str, bytes]]:
        """(rel, content) of every file and link at or below `rel` on `c`."""
        p = c.root / rel
        if os.path.islink(p) or p.is_file():
            found = [(rel, snapshot_entry(p))]
        else:
            found = [(f"{rel}/{sub}", e) for sub, e in snapshot(p).items()]
        return [(r, ck) for r, e in found if (ck := content_of(e)) is not None]

    def supersede(self, c: Client, rel: str, how: str) -> None:
        """A user of `c` is about to overwrite or delete `rel`: what it holds is superseded,
        unless `c` keeps another copy elsewhere (the client may have duplicated it: a move
        that met a concurrent change is uploaded as a new file)."""
        gone = self.subtree_contents(c, rel)
        paths = {sub for sub, _ck in gone}
        elsewhere = {
            ck for r, e in snapshot(c.root).items() if r not in paths and (ck := content_of(e))
        }
        for sub, ck in gone:
            if ck not in elsewhere:
                self.superseded.setdefault(ck, []).append((c.name, _key(sub), self.t, how))
            else:  # one of two copies: if users drop each on another client, it may go
                self.dropped_copy.add(ck)

    # -- user actions --------------------------------------------------------------------------

    def _write(self, c: Client, rel: str, data: bytes, how: str) -> None:
        p = c.root / rel
        if how == "replace":  # like an editor: write aside, rename over (a new inode)
            mode = os.lstat(p).st_mode & 0o777 if p.exists() else 0o644
            tmp = p.with_name(p.name + ".~write")
            tmp.write_bytes(data)
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        elif how == "append":
            with open(p, "ab") as f:
                f.write(data)
        else:
            with open(p, "wb") as f:
                f.write(data)
        final = p.read_bytes()
        self.written[b"F" + final] = f"{c.name} {how} {rel}"

    def create(self, c: Client) -> str:
        rel = _join(self.folder(c), self.rng.choice(FILE_NAMES))
        if os.path.lexists(c.root / rel):
            return self.edit(c, rel)
        self._write(c, rel, self.contents.data(big=self.rng.random() < 0.04), "write")
        if self.rng.random() < 0.2:
            os.chmod(c.root / rel, 0o755)
        return f"{c.name}: create {rel}"

    def symlink(self, c: Client) -> str:
        rel = _join(self.folder(c), self.rng.choice(LINK_NAMES))
        if os.path.lexists(c.root / rel):
            return f"{c.name}: symlink {rel} (taken, nothing)"
        target = self.contents.target()
        os.symlink(target, c.root / rel)
        self.written[b"L" + os.fsencode(target)] = f"{c.name} symlink {rel}"
        return f"{c.name}: symlink {rel} -> {target}"

    def edit(self, c: Client, rel: str | None = None) -> str:
        rel = rel or self.pick(c, "file")
        if rel is None or not (c.root / rel).is_file() or os.path.islink(c.root / rel):
            return f"{c.name}: edit (no file, nothing)"
        self.supersede(c, rel, "edit")
        how = self.rng.choice(("write", "replace", "append"))
        self._write(c, rel, self.contents.data(big=self.rng.random() < 0.03), how)
        return f"{c.name}: edit ({how}) {rel}"

    def delete(self, c: Client) -> str:
        rel = self.pick(c, "file", "dir", "link")
        if rel is None:
            return f"{c.name}: delete (nothing there)"
        self.supersede(c, rel, "delete")
        p = c.root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        return f"{c.name}: delete {rel}"

    def move(self, c: Client) -> str:
        src = self.pick(c, "file", "dir", "link")
        if src is None:
            return f"{c.name}: move (nothing there)"
        parent = self.folder(c)
        if parent == src or parent.startswith(src + "/"):
            parent = ""
        names = DIR_NAMES if (c.root / src).is_dir() else FILE_NAMES
        name = src.rsplit("/", 1)[-1] if self.rng.random() < 0.4 else self.rng.choice(names)
        dst = _join(parent, name)
        if dst == src or os.path.lexists(c.root / dst):
            return f"{c.name}: move {src} -> {dst} (taken, nothing)"
        self._moved(c, src, dst)
        os.rename(c.root / src, c.root / dst)
        return f"{c.name}: move {src} -> {dst}"

    def case_rename(self, c: Client) -> str:
        src = self.pick(c, "file", "dir", "link")
        if src is None:
            return f"{c.name}: case rename (nothing there)"
        head, _, name = src.rpartition("/")
        new = name.swapcase() if self.rng.random() < 0.5 else name.capitalize()
        if new == name:
            new = name.upper() if name.upper() != name else name.lower()
        dst = _join(head, new)
        if dst == src or os.path.lexists(c.root / dst):
            return f"{c.name}: case rename {src} -> {dst} (taken, nothing)"
        self._moved(c, src, dst)
        os.rename(c.root / src, c.root / dst)
        return f"{c.name}: case rename {src} -> {dst}"

    def _moved(self, c: Client, src: str, dst: str) -> None:
        self.moves.append((c.name, _key(src), _key(dst), self.t))
        for sub, ck in self.subtree_contents(c, src):
            self.moved.setdefault(ck, []).append((c.name, _key(dst + sub[len(src) :]), self.t))

    def mkdir(self, c: Client) -> str:
        rel = _join(self.folder(c), self.rng.choice(DIR_NAMES))
        if os.path.lexists(c.root / rel):
            return f"{c.name}: mkdir {rel} (taken, nothing)"
        os.mkdir(c.root / rel)
        return f"{c.name}: mkdir {rel}"

    def chmod(self, c: Client) -> str:
        rel = self.pick(c, "file")
        if rel is None:
            return f"{c.name}: chmod (no file)"
        p = c.root / rel
        mode = os.lstat(p).st_mode & 0o777
        self.chmodded.setdefault(b"F" + p.read_bytes(), []).append((c.name, _key(rel), self.t))
        os.chmod(p, mode & ~0o111 if mode & 0o100 else mode | 0o111)
        return f"{c.name}: chmod {'-x' if mode & 0o100 else '+x'} {rel}"

    def concurrent_edit(self) -> str:
        a, b = self.rng.sample(self.clients, 2)
        common = sorted(
            {rel for rel, k in self.entries(a) if k == "file"}
            & {rel for rel, k in self.entries(b) if k == "file"}
        )
        if not common:
            return f"{a.name}+{b.name}: concurrent edit (no common file)"
        rel = self.rng.choice(common)
        return f"concurrent: {self.edit(a, rel)} / {self.edit(b, rel)}"

    # -- syncing -------------------------------------------------------------------------------

    async def sync(self, c: Client) -> Summary:
        assert c.engine is not None
        s = await c.engine.sync()
        k = s.counters
        self.note(
            f"    {c.name} synced: {s.passes} passes, up {k.uploaded_files} down "
            f"{k.downloaded_files} del {k.deleted_local}/{k.deleted_remote} moved {k.moved} "
            f"dirs {k.folders} conflicts {k.conflicts} skipped {k.skipped}"
            + (f" errors {k.errors}" if k.errors else "")
            + (f" UNAVAILABLE {s.unavailable}" if s.unavailable else "")
            + (f" REFUSED {s.refused}" if s.refused else "")
            + (f" pending {s.pending}" if s.pending else "")
        )
        assert s.refused is None, f"{c.name}: refused: {s.refused}"
        if s.ok:  # whole: what this client changed is on the server, what it lacked it has
            self.ok_syncs.setdefault(c.name, []).append(self.t)
        self.check_whole(c, "after a pass")
        return s

    async def crash(self, c: Client) -> str:
        assert c.engine is not None
        at, after = 1 + int(self.rng.expovariate(1 / 8)), self.rng.random() < 0.5
        with crash_points(at, after) as cp:
            try:
                await c.engine.sync()
            except Crash:
                pass
            finally:
                self.pool.drain()  # the crashed pass's worker threads end before the restart
        await c.close()
        what = cp.fired or f"no crash: the sync ended within {cp.calls} calls"
        self.crashes += cp.fired is not None
        self.check_whole(c, f"at a crash point ({what})")
        await c.open()
        return f"{c.name}: crash+restart, {what}"

    async def restart(self, c: Client, cfg: Config) -> None:
        await c.close()
        c.cfg = cfg
        await c.open()

    def check_whole(self, c: Client, when: str) -> None:
        """Every file and link of `c` holds content some write made, whole (never a partial
        download under a real name, never a stray temporary file)."""
        for rel, e in snapshot(c.root).items():
            ck = content_of(e)
            if ck is not None and ck not in self.written:
                raise AssertionError(
                    f"{c.name} {when}: {rel} holds content no write made "
                    f"(partial or temporary): {e[1][:40]!r}"
                )

    async def quiesce(self) -> list[dict[str, Entry]]:
        """Sync every client, round-robin, until a whole round does nothing."""
        for rnd in range(QUIESCE_ROUNDS):
            busy = []
            for c in self.clients:
                s = await self.sync_available(c)
                if not _did_nothing(s):
                    busy.append(c.name)
            if not busy:  # a round did nothing visible: does any plan still hold an op?
                for c in self.clients:
                    assert c.engine is not None
                    p, _ = await c.engine.plan_pass()
                    if not p.is_empty:
                        busy.append(f"{c.name} (plan: {[op.kind.value for op in p.ops]})")
            self.note(f"  quiesce round {rnd}: busy {busy}")
            if not busy:
                return [snapshot(c.root) for c in self.clients]
        raise AssertionError(f"no quiescence after {QUIESCE_ROUNDS} rounds (a livelock)")

    async def sync_available(self, c: Client) -> Summary:
        """A sync that reached the server (a cluster electing a leader answers 503 a while)."""
        deadline = time.monotonic() + UNAVAILABLE_DEADLINE_S
        while True:
            s = await self.sync(c)
            if s.unavailable is None:
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"{c.name}: server unavailable for {UNAVAILABLE_DEADLINE_S}s")
            await asyncio.sleep(0.1)  # poll interval of a wait for a condition

    # -- the run ---------------------------------------------------------------------------

    async def step(self, i: int) -> None:
        rng = self.rng
        c = rng.choice(self.clients)
        actions: list[tuple[int, Callable[[], Awaitable[str] | str]]] = [
            (10, lambda: self.create(c)),
            (10, lambda: self.edit(c)),
            (6, lambda: self.delete(c)),
            (6, lambda: self.move(c)),
            (4, lambda: self.case_rename(c)),
            (5, lambda: self.mkdir(c)),
            (2, lambda: self.symlink(c)),
            (3, lambda: self.chmod(c)),
            (6, self.concurrent_edit),
            (30, lambda: self._sync_step(c)),
            (8, lambda: self.crash(c)),
        ]
        (act,) = rng.choices([a for _, a in actions], [w for w, _ in actions])
        out = act()
        if asyncio.iscoroutine(out):
            out = await out
        self.note(f"{i:3d} {out}")
        if TRACE:
            self.trace()

    def trace(self) -> None:
        """Where the write SYNC_TRACE names is on each client ("s38#": every write, tagged)."""
        for c in self.clients:
            at = []
            for rel, e in snapshot(c.root).items():
                tag = e[1].split(b"\n", 1)[0] if e[0] == "file" else b""
                if tag == TRACE or (TRACE.endswith(b"#") and tag.startswith(TRACE)):
                    at.append(f"{rel} ({tag.decode()}{', +x' if e[2] else ''})")
            self.note(f"      trace {TRACE.decode()} on {c.name}: {at}")

    def seen(self, d: str, t: int, c: str, ts: int) -> bool:
        """Had client `c` at step `ts` seen what client `d` did at step `t`? (d finished a sync
        after it, and c finished one after that, before `ts`.)"""
        if d == c:
            return t <= ts
        return any(
            t < t1 < t2 < ts for t1 in self.ok_syncs.get(d, []) for t2 in self.ok_syncs.get(c, [])
        )

    def kept_on_purpose(self, ck: bytes) -> bool:
        """May content that a user replaced or deleted survive? Only if, when the last user
        did so, another client had (unseen by that user) moved it elsewhere or changed its
        executable bit — a change, which wins over a delete as an edit does."""
        c, key, ts, _how = max(self.superseded[ck], key=lambda r: r[2])

        def unseen(d: str, t: int) -> bool:
            return d != c and not self.seen(d, t, c, ts)

        return (
            any(unseen(d, t) and k != key for d, k, t in self.moved.get(ck, []))
            # a folder moved on the server takes along what its mover had not seen yet
            or any(
                unseen(d, t) and src != dst and (key == src or key.startswith(src + "/"))
                for d, src, dst, t in self.moves
            )
            or any(unseen(d, t) for d, _k, t in self.chmodded.get(ck, []))
        )

    async def _sync_step(self, c: Client) -> str:
        await self.sync(c)
        return f"{c.name}: sync"

    async def run(self, steps: int) -> None:
        for c in self.clients:
            await c.open()
        try:
            first = self.clients[0]
            for _ in range(3):  # something shared to start from
                self.note(f"  0 {self.create(first)}")
            self.note(f"  0 {self.mkdir(first)}")
            for c in self.clients:
                await self.sync_available(c)
            for i in range(1, steps + 1):
                await self.backend.at_step(self, i)
                self.t = i
                await self.step(i)
            self.backend.close()
            snaps = await self.quiesce()
            self.check_converged(snaps)
        finally:
            for c in self.clients:
                await c.close()

    def check_converged(self, snaps: list[dict[str, Entry]]) -> None:
        first, final = self.clients[0], snaps[0]
        for c, snap in zip(self.clients[1:], snaps[1:], strict=True):
            assert snap == final, (
                f"{c.name} differs from {first.name}:\n{diff(final, snap)}\n"
                f"{first.name}:\n{describe(final)}"
            )
        for c in self.clients:
            assert not temp_files(c.root), f"{c.name}: left in .raftbox/tmp: {temp_files(c.root)}"
            self.check_whole(c, "at the end")
        have = {content_of(e): (rel, e) for rel, e in final.items() if content_of(e) is not None}
        lost = [
            f"{w} ({_tag(ck)})"
            for ck, w in self.written.items()
            if ck not in self.superseded and ck not in self.dropped_copy and ck not in have
        ]
        assert not lost, "edits lost (not in place, not a conflicted copy):\n  " + "\n  ".join(lost)
        back = []
        for ck, by in self.superseded.items():
            if ck not in have:
                continue
            rel, _e = have[ck]
            if TWIN_TAG.search(rel):
                continue  # one of two names a user gave one key: kept, never merged
            if not self.kept_on_purpose(ck):
                back.append(f"{rel} ({_tag(ck)}, by {self.written[ck]}; replaced by {by})")
        assert not back, "deleted or replaced content came back:\n  " + "\n  ".join(back)


def _tag(ck: bytes) -> str:
    """The write's tag ("s38#7") at the head of a content: what SYNC_TRACE takes."""
    return ck[1:].split(b"\n", 1)[0].decode(errors="replace")


def _did_nothing(s: Summary) -> bool:
    k = s.counters
    return s.ok and not (
        k.uploaded_files or k.downloaded_files or k.deleted_local or k.deleted_remote
        or k.moved or k.folders or k.conflicts or k.skipped or k.messages or k.errors
    )  # fmt: skip


def snapshot_entry(p: Path) -> Entry:
    if os.path.islink(p):
        return ("link", os.readlink(p))
    return ("file", p.read_bytes(), bool(os.lstat(p).st_mode & 0o100))


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _server_keys(snap: dict[str, Entry]) -> set[str]:
    return {_key(rel) for rel in snap}


async def _server_listing(c: Client) -> set[str]:
    assert c.engine is not None and c.engine.remote is not None
    r = c.engine.remote
    res = await r.api("files/list_folder", {"path": "", "recursive": True, "limit": 2000})
    keys = set()
    while True:
        keys |= {path_key(m["path_display"]) for m in res["entries"] if m[".tag"] != "deleted"}
        if not res.get("has_more"):
            return keys
        res = await r.api("files/list_folder/continue", {"cursor": res["cursor"]})


@pytest.mark.parametrize(("server", "n", "seed"), CASES)
def test_clients_converge(server: str, n: int, seed: int, request: pytest.FixtureRequest,
                          tmp_path: Path) -> None:  # fmt: skip
    """After random edits, crashes and syncs, every folder converges (see the module doc)."""
    email = f"conv-{server}-{n}-{seed}-{os.getpid()}-{time.monotonic_ns()}@test"
    if server == "up":
        backend: Backend = UpBackend(request.getfixturevalue("up_server"), email)
    else:
        backend = ClusterBackend(request.getfixturevalue("api_cluster"), email, STEPS)
    pool = TrackingExecutor()
    clients = []
    for i in range(n):
        root = tmp_path / f"c{i}"
        root.mkdir()
        clients.append(Client(f"dev{i}", root, backend.config_for(i)))
    w = World(seed, clients, backend, pool)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(pool)
        await w.run(STEPS)
        if isinstance(backend, ClusterBackend):
            assert backend.kills == 1, "the leader was not killed"
        server_keys = await _with_open(clients[0], _server_listing)
        assert server_keys == _server_keys(snapshot(clients[0].root)), "server differs"

    t0 = time.monotonic()
    try:
        asyncio.run(main())
    except BaseException as e:
        replay = (
            f"seed {seed} failed ({server}, {n} clients, {STEPS} steps). Replay: SYNC_SEED={seed} "
            f"SYNC_STEPS={STEPS} .venv/bin/python -m pytest tests/client/test_convergence.py "
            f"-k '{server}-{n}-'"
        )
        print(replay)
        print("steps:\n" + "\n".join(w.log if TRACE else w.log[-150:]))
        print(backend.logs())
        e.add_note(replay)
        raise
    finally:
        backend.close()
        pool.shutdown(wait=True)
    print(f"seed {seed}: {STEPS} steps, {w.crashes} crashes, {time.monotonic() - t0:.1f}s")
    if os.environ.get("SYNC_VERBOSE"):
        print("\n".join(w.log))


async def _with_open(c: Client, fn: Callable[[Client], Awaitable[set[str]]]) -> set[str]:
    await c.open()
    try:
        return await fn(c)
    finally:
        await c.close()


# -- the hazards the random runs found, each as one scripted run -------------------------------


def _clients(srv: UpServer, tmp_path: Path, n: int) -> list[Client]:
    email = f"hazard-{os.getpid()}-{time.monotonic_ns()}@test"
    backend = UpBackend(srv, email)
    out = []
    for i in range(n):
        root = tmp_path / f"c{i}"
        root.mkdir()
        out.append(Client(f"dev{i}", root, backend.config_for(i)))
    return out


def _run(clients: list[Client], script: Callable[[TrackingExecutor], Awaitable[None]]) -> None:
    """Open the clients, run `script(pool)` in a fresh event loop, close them."""
    pool = TrackingExecutor()

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(pool)
        for c in clients:
            await c.open()
        try:
            await script(pool)
        finally:
            for c in clients:
                await c.close()

    try:
        asyncio.run(main())
    finally:
        pool.shutdown(wait=True)


async def _sync(c: Client) -> Summary:
    assert c.engine is not None
    s = await c.engine.sync()
    assert s.ok, s.as_json()
    return s


async def _crash_sync(
    c: Client, pool_drain: Callable[[], None], only: str, after: bool = True
) -> str:
    """One pass of `c` that crashes right after (or before) its first `only` boundary; then a
    restart."""
    assert c.engine is not None
    with crash_points(1, after, (only,)) as cp:
        try:
            await c.engine.sync()
        except Crash:
            pass
        finally:
            pool_drain()
    await c.close()
    await c.open()
    assert cp.fired is not None, f"the pass never reached {only}"
    return cp.fired


def test_folder_moved_while_another_client_recreates_it(up_server, tmp_path: Path) -> None:
    """Seed 23 (up, 3 clients, 60 steps) in short. dev0 renames folder A to B; dev1, which has
    a new file in A (and a new local folder B), re-creates A on the server. dev2 sees both in
    one listing. Every folder must then be the same, and A/f.txt (moved to B/f.txt) must not
    come back at the old place."""
    a, b, c = _clients(up_server, tmp_path, 3)

    async def script(_pool: TrackingExecutor) -> None:
        (a.root / "A").mkdir()
        (a.root / "A" / "f.txt").write_bytes(b"f\n")
        for x in (a, b, c):
            await _sync(x)
        (b.root / "B").mkdir()
        (b.root / "A" / "new.txt").write_bytes(b"new on dev1\n")
        os.rename(a.root / "A", a.root / "B")
        for _ in range(2):
            for x in (a, b, c):
                await _sync(x)

    _run([a, b, c], script)
    snaps = [snapshot(x.root) for x in (a, b, c)]
    assert "B/f.txt" in snaps[1] and "A/f.txt" not in snaps[1], describe(snaps[1])
    for x, snap in zip((a, c), (snaps[0], snaps[2]), strict=True):
        assert snap == snaps[1], f"{x.name} differs from dev1:\n{diff(snaps[1], snap)}"


def test_kill_between_a_download_and_its_record_then_the_user_deletes_it(
    up_server, tmp_path: Path
) -> None:
    """Seed 57 (up, 3 clients, 60 steps) in short. dev1's pass installs f.txt and is killed
    before it records it; the user deletes f.txt; the next pass must propagate the delete,
    not download f.txt again (a deleted file must not come back)."""
    a, b = _clients(up_server, tmp_path, 2)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "f.txt").write_bytes(b"made on dev0\n")
        await _sync(a)
        fired = await _crash_sync(b, pool.drain, "rename")
        assert (b.root / "f.txt").read_bytes() == b"made on dev0\n", fired
        (b.root / "f.txt").unlink()
        for x in (b, a, b):
            await _sync(x)

    _run([a, b], script)
    for x in (a, b):
        assert "f.txt" not in snapshot(x.root), f"{x.name}: the deleted f.txt came back"


def test_kill_between_a_commit_and_its_record_then_another_client_edits(
    up_server, tmp_path: Path
) -> None:
    """Seed 90 (up, 3 clients, 60 steps) in short. dev0 uploads v2 of f.txt and is killed
    after the server committed it, before it recorded that; dev1 then edits v2 into v3. The
    restarted dev0 holds v2, which the server already had: v3 must simply replace it — no
    conflicted copy (identical content, then a plain remote edit)."""
    a, b = _clients(up_server, tmp_path, 2)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "f.txt").write_bytes(b"v1\n")
        await _sync(a)
        await _sync(b)
        (a.root / "f.txt").write_bytes(b"v2, longer\n")
        await _crash_sync(a, pool.drain, "Remote.native(commit_batch)")
        await _sync(b)
        assert (b.root / "f.txt").read_bytes() == b"v2, longer\n"
        (b.root / "f.txt").write_bytes(b"v3, longer still\n")
        for x in (b, a, b):
            await _sync(x)

    _run([a, b], script)
    for x in (a, b):
        snap = snapshot(x.root)
        assert snap == {"f.txt": ("file", b"v3, longer still\n", False)}, (
            f"{x.name}:\n{describe(snap)}"
        )


def test_folder_renamed_and_a_file_in_it_edited_before_the_next_pass(
    up_server, tmp_path: Path
) -> None:
    """Seed 38 (up, 2 clients, 80 steps) led here; one client is enough. Rename folder D to E,
    edit E/x.txt, sync: E/x.txt must be the edit — not a conflicted copy of it, with E/x.txt
    deleted. (The pass moves D to E on the server, which gives the moved file a new rev, then
    uploads the edit with update(the rev from before the move): refused as a conflict.)"""
    (a,) = _clients(up_server, tmp_path, 1)

    async def script(_pool: TrackingExecutor) -> None:
        (a.root / "D").mkdir()
        (a.root / "D" / "x.txt").write_bytes(b"x1\n")
        await _sync(a)
        os.rename(a.root / "D", a.root / "E")
        (a.root / "E" / "x.txt").write_bytes(b"x2, edited after the rename\n")
        s = await _sync(a)
        assert not s.counters.conflicts, s.counters.messages

    _run([a], script)
    snap = snapshot(a.root)
    assert snap == {"E": ("dir",), "E/x.txt": ("file", b"x2, edited after the rename\n", False)}, (
        describe(snap)
    )


def test_case_only_rename_and_an_edit_before_the_next_pass(up_server, tmp_path: Path) -> None:
    """The same with a case-only rename: f.txt → F.txt and an edit (or a chmod) must end as
    F.txt with the edit, not as `F (conflicted copy ...).txt` alone."""
    (a,) = _clients(up_server, tmp_path, 1)

    async def script(_pool: TrackingExecutor) -> None:
        (a.root / "f.txt").write_bytes(b"v1\n")
        (a.root / "g.sh").write_bytes(b"echo g\n")
        await _sync(a)
        os.rename(a.root / "f.txt", a.root / "F.txt")
        (a.root / "F.txt").write_bytes(b"v2, edited after the rename\n")
        os.rename(a.root / "g.sh", a.root / "G.sh")
        os.chmod(a.root / "G.sh", 0o755)
        s = await _sync(a)
        assert not s.counters.conflicts, s.counters.messages

    _run([a], script)
    snap = snapshot(a.root)
    assert snap == {
        "F.txt": ("file", b"v2, edited after the rename\n", False),
        "G.sh": ("file", b"echo g\n", True),
    }, describe(snap)


def test_kill_before_a_commit_then_another_client_commits_first(up_server, tmp_path: Path) -> None:
    """Seed 88 (up, 2 clients, 120 steps) in short. dev0's pass is killed just before it
    commits its edit v2a of f.txt; dev1 then commits its own edit v2b. The restarted dev0 must
    keep v2a (as a conflicted copy: both changed f.txt) — it was never on the server, so no
    revision of f.txt holds it and nothing may record it as synced."""
    a, b = _clients(up_server, tmp_path, 2)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "f.txt").write_bytes(b"v1\n")
        await _sync(a)
        await _sync(b)
        (a.root / "f.txt").write_bytes(b"v2a, made on dev0\n")
        await _crash_sync(a, pool.drain, "Remote.native(commit_batch)", after=False)
        (b.root / "f.txt").write_bytes(b"v2b, made on dev1, committed first\n")
        await _sync(b)
        for x in (a, b, a):
            await _sync(x)

    _run([a, b], script)
    snaps = [snapshot(x.root) for x in (a, b)]
    assert snaps[0] == snaps[1], diff(snaps[0], snaps[1])
    contents = sorted(e[1] for e in snaps[0].values())
    assert contents == [b"v2a, made on dev0\n", b"v2b, made on dev1, committed first\n"], (
        f"dev0's edit v2a was lost:\n{describe(snaps[0])}"
    )


def test_kill_after_a_commit_then_the_user_edits_again(up_server, tmp_path: Path) -> None:
    """Seed 113 (up, 2 clients, 120 steps) in short. dev0's pass commits v2 of f.txt and is
    killed before it records it; the user then edits f.txt into v3. The next pass must upload
    v3 over v2 (its own commit): no conflicted copy, and v2 must not come back."""
    (a,) = _clients(up_server, tmp_path, 1)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "f.txt").write_bytes(b"v1\n")
        await _sync(a)
        (a.root / "f.txt").write_bytes(b"v2, committed by the killed pass\n")
        await _crash_sync(a, pool.drain, "Remote.native(commit_batch)")
        (a.root / "f.txt").write_bytes(b"v3, written after the kill\n")
        s = await _sync(a)
        assert not s.counters.conflicts, s.counters.messages

    _run([a], script)
    snap = snapshot(a.root)
    assert snap == {"f.txt": ("file", b"v3, written after the kill\n", False)}, describe(snap)


def test_kill_while_a_case_twin_is_renamed_aside_loses_nothing(up_server, tmp_path: Path) -> None:
    """Seed 43 (up, 2 clients, 150 steps) in short. Synced folder d/ (holding D/x.md and y.md)
    is renamed D/ and a new, empty d/ is made: two names, one key. The pass renames the full
    one aside to `D (case conflict)`. (It used to delete d/'s children on the server, to upload
    them again under the new name; killed after the first delete, the next pass deleted the
    file the server lost from the folder renamed aside.) Now the renamed twin is sent as
    moves; killed after the first one, the next pass must still keep every file."""
    (a,) = _clients(up_server, tmp_path, 1)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "d" / "D").mkdir(parents=True)
        (a.root / "d" / "D" / "x.md").write_bytes(b"x, the file the server deletes first\n")
        (a.root / "d" / "y.md").write_bytes(b"y\n")
        await _sync(a)
        os.rename(a.root / "d", a.root / "D")
        (a.root / "d").mkdir()
        await _crash_sync(a, pool.drain, "Remote.api(files/move_v2)")
        for _ in range(2):
            await _sync(a)

    _run([a], script)
    snap = snapshot(a.root)
    kept = sorted(e[1] for e in snap.values() if e[0] == "file")
    assert kept == [b"x, the file the server deletes first\n", b"y\n"], describe(snap)


def test_kill_between_a_local_move_and_its_record_then_the_user_deletes_it(
    up_server, tmp_path: Path
) -> None:
    """Seed 148 (up, 3 clients, 150 steps) in short. dev0 renames folder A to B. dev1's pass
    renames its A to B too and is killed before it records that; the user deletes B. The next
    pass must propagate the delete: B must not be downloaded again."""
    a, b = _clients(up_server, tmp_path, 2)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "A").mkdir()
        (a.root / "A" / "f.txt").write_bytes(b"f\n")
        await _sync(a)
        await _sync(b)
        os.rename(a.root / "A", a.root / "B")
        await _sync(a)
        fired = await _crash_sync(b, pool.drain, "rename")
        assert (b.root / "B" / "f.txt").exists(), fired
        shutil.rmtree(b.root / "B")
        for x in (b, a, b):
            await _sync(x)

    _run([a, b], script)
    for x in (a, b):
        snap = snapshot(x.root)
        assert snap == {}, f"{x.name}: the deleted folder came back:\n{describe(snap)}"


def test_kill_between_a_server_move_and_its_record(up_server, tmp_path: Path) -> None:
    """Seed 146 (up, 3 clients, 150 steps) in short. Rename folder A to B and edit B/f.txt; the
    pass moves A to B on the server and is killed before it records the move. The next pass
    must finish the job — upload the edit — not make a conflicted copy of the edit and put
    the old version back under B/f.txt."""
    (a,) = _clients(up_server, tmp_path, 1)

    async def script(pool: TrackingExecutor) -> None:
        (a.root / "A").mkdir()
        (a.root / "A" / "f.txt").write_bytes(b"v1\n")
        await _sync(a)
        os.rename(a.root / "A", a.root / "B")
        (a.root / "B" / "f.txt").write_bytes(b"v2, edited after the rename\n")
        await _crash_sync(a, pool.drain, "Remote.api(files/move_v2)")
        for _ in range(2):
            await _sync(a)

    _run([a], script)
    snap = snapshot(a.root)
    assert snap == {"B": ("dir",), "B/f.txt": ("file", b"v2, edited after the rename\n", False)}, (
        describe(snap)
    )
