"""Helpers for the sync client's convergence and crash tests: servers, folders on disk, crashes.

- `UpServer`, `ApiCluster`, `create_account_http` are the API suite's real processes
  (`tests/api/procs.py`), reused: each test makes its own account, so tests share no files.
- `snapshot(root)` reads a sync folder the way a user sees it (names, bytes, symlink targets,
  the owner executable bit; `.raftbox/` left out), for byte-for-byte comparisons.
- `crash_points(rng)` makes the in-process engine "crash" at a deterministic boundary of a pass:
  the n-th server call, index record or rename into place raises `Crash` (a `BaseException`, so
  no `except Exception` in the client swallows it), before or after the call happens. A crash
  after a server call is the interesting case: the server did it, the client never learnt.
- `on_server_call(n, action)` runs `action` (say, kill the cluster's leader) just before the
  n-th server call of a pass, which then goes ahead.
- `TrackingExecutor`: the event loop's default executor, which can wait for the worker threads
  a crashed pass left running (`asyncio.to_thread` work cannot be cancelled), so that the next
  "process" never races the previous one — as after a real kill, where nothing survives.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from api.procs import ApiCluster, UpServer, create_account_http  # noqa: F401 (re-exported)
from raftbox.client import localfs
from raftbox.client.config import Config
from raftbox.client.index import STATE_DIR, Index
from raftbox.client.remote import Remote

TMP_DIR = os.path.join(STATE_DIR, "tmp")

# -- folders as the user sees them -------------------------------------------------------------

Entry = tuple  # ("dir",) | ("file", data: bytes, executable: bool) | ("link", target: str)


def snapshot(root: str | os.PathLike[str]) -> dict[str, Entry]:
    """Every entry below `root` except `.raftbox/`: relative path ("a/b.txt") → entry."""
    out: dict[str, Entry] = {}

    def visit(abs_dir: str, rel_dir: str) -> None:
        with os.scandir(abs_dir) as it:
            names = sorted(de.name for de in it)
        for name in names:
            if not rel_dir and name == STATE_DIR:
                continue
            p = os.path.join(abs_dir, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
                visit(p, rel)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), bool(st.st_mode & stat.S_IXUSR))
            else:
                out[rel] = ("other",)

    visit(os.fspath(root), "")
    return out


def content_of(e: Entry) -> bytes | None:
    """What identifies an entry's content: a file's bytes, "L" + a link's target, None for a
    folder (the tests write every file and link target once, so content names a write)."""
    if e[0] == "file":
        return b"F" + e[1]
    if e[0] == "link":
        return b"L" + os.fsencode(e[1])
    return None


def describe(snap: dict[str, Entry]) -> str:
    """A short listing of a snapshot, for failure messages."""
    lines = []
    for rel, e in sorted(snap.items()):
        if e[0] == "file":
            x = " +x" if e[2] else ""
            lines.append(f"  {rel}  [{len(e[1])} B{x}] {e[1][:24]!r}")
        elif e[0] == "link":
            lines.append(f"  {rel} -> {e[1]}")
        else:
            lines.append(f"  {rel}/")
    return "\n".join(lines) or "  (empty)"


def diff(a: dict[str, Entry], b: dict[str, Entry]) -> str:
    """How two snapshots differ (paths only in one, and paths whose entries differ)."""
    out = []
    for rel in sorted(a.keys() | b.keys()):
        ea, eb = a.get(rel), b.get(rel)
        if ea != eb:
            out.append(f"  {rel}: {_short(ea)} != {_short(eb)}")
    return "\n".join(out)


def _short(e: Entry | None) -> str:
    if e is None:
        return "absent"
    if e[0] == "file":
        return f"file[{len(e[1])} B{' +x' if e[2] else ''} {e[1][:16]!r}]"
    return repr(e)


def temp_files(root: str | os.PathLike[str]) -> list[str]:
    """What is left in `DIR/.raftbox/tmp/` (a finished pass leaves nothing)."""
    d = os.path.join(os.fspath(root), TMP_DIR)
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return []


def config(server: str, token: str, ca: str) -> Config:
    return Config(server=server, token=token, ca=ca)


# -- crashing an in-process pass ---------------------------------------------------------------


class Crash(BaseException):
    """The simulated kill of a sync process (see the module doc)."""


@dataclass
class CrashPoints:
    """Counts boundary calls (those whose label starts with one of `only`, if given); the
    `at`-th one raises `Crash` (`after`: once it has happened). Once crashed, every boundary
    raises: nothing of the "dead" pass reaches the server, the index or the disk any more."""

    at: int
    after: bool
    only: tuple[str, ...] = ()
    calls: int = 0
    fired: str | None = None  # which boundary crashed, for the log
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self, what: str) -> bool:
        with self._lock:
            if self.fired is not None:
                raise Crash(f"already crashed at {self.fired}")  # a thread left over
            if self.only and not what.startswith(self.only):
                return False
            self.calls += 1
            if self.calls == self.at:
                self.fired = f"{'after' if self.after else 'before'} {what} (call {self.at})"
                return True
            return False


def _wrap_async(cp: CrashPoints, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapped(self: Any, *a: Any, **kw: Any) -> Any:
        label = name
        if name == "Remote.api" and a:
            label = f"{name}({a[0]})"
        elif name == "Remote.native" and a:
            label = f"{name}({getattr(a[0], '__name__', a[0])})"
        hit = cp.tick(label)
        if hit and not cp.after:
            raise Crash(cp.fired)
        out = await fn(self, *a, **kw)
        if hit:
            raise Crash(cp.fired)
        return out

    return wrapped


def _wrap_sync(cp: CrashPoints, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*a: Any, **kw: Any) -> Any:
        hit = cp.tick(name)
        if hit and not cp.after:
            raise Crash(cp.fired)
        out = fn(*a, **kw)
        if hit:
            raise Crash(cp.fired)
        return out

    return wrapped


def _wrap_agen(cp: CrashPoints, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(self: Any, *a: Any, **kw: Any) -> Any:
        if cp.tick(name):  # a stream: "after" means after the first block came
            return _crash_in(fn(self, *a, **kw), cp)
        return fn(self, *a, **kw)

    return wrapped


async def _crash_in(agen: Any, cp: CrashPoints) -> Any:
    if not cp.after:
        raise Crash(cp.fired)
    async for item in agen:
        yield item
        raise Crash(cp.fired)


@contextlib.contextmanager
def crash_points(at: int, after: bool, only: tuple[str, ...] = ()) -> Iterator[CrashPoints]:
    """While inside, the `at`-th boundary call of the sync client raises `Crash` (see the
    module doc). Boundaries: every server call (`Remote.api(ROUTE)`, `Remote.native(NAME)`,
    `Remote.get`), every index record (`Index.apply`, `move`, `apply_remote`, `set_state`,
    `cache_put_many`) and every rename the client makes on disk (`rename`); `only` limits the
    count to labels starting with one of its strings."""
    cp = CrashPoints(at, after, only)
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attr: str, new: Any) -> None:
        saved.append((owner, attr, vars(owner).get(attr, _MISSING)))
        setattr(owner, attr, new)

    for attr in ("api", "native"):
        patch(Remote, attr, _wrap_async(cp, f"Remote.{attr}", getattr(Remote, attr)))
    patch(Remote, "get", _wrap_agen(cp, "Remote.get", Remote.get))
    for attr in ("apply", "move", "apply_remote", "set_state", "cache_put_many"):
        patch(Index, attr, _wrap_sync(cp, f"Index.{attr}", getattr(Index, attr)))
    patch(localfs, "rename_noreplace", _wrap_sync(cp, "rename", localfs.rename_noreplace))
    try:
        yield cp
    finally:
        for owner, attr, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


_MISSING = object()


@dataclass
class CallHook:
    fired: bool = False


@contextlib.contextmanager
def on_server_call(at: int, action: Callable[[], None]) -> Iterator[CallHook]:
    """While inside, `action()` runs just before the sync client's `at`-th server call
    (`Remote.api` or `Remote.native`), which then goes ahead (e.g. to a server just killed)."""
    hook, n = CallHook(), [0]
    saved = {attr: vars(Remote)[attr] for attr in ("api", "native")}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(self: Any, *a: Any, **kw: Any) -> Any:
            n[0] += 1
            if n[0] == at:
                hook.fired = True
                action()
            return await fn(self, *a, **kw)

        return wrapped

    for attr, fn in saved.items():
        setattr(Remote, attr, wrap(fn))
    try:
        yield hook
    finally:
        for attr, fn in saved.items():
            setattr(Remote, attr, fn)


class TrackingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that knows its unfinished work (`drain` waits for it)."""

    def __init__(self, max_workers: int = 8) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="synctest")
        self._pending: set[concurrent.futures.Future] = set()
        self._plock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        f = super().submit(fn, *args, **kwargs)
        with self._plock:
            self._pending.add(f)
        f.add_done_callback(self._done)
        return f

    def _done(self, f: concurrent.futures.Future) -> None:
        with self._plock:
            self._pending.discard(f)

    def drain(self, timeout_s: float = 60.0) -> None:
        with self._plock:
            todo = list(self._pending)
        _, not_done = concurrent.futures.wait(todo, timeout=timeout_s)
        assert not not_done, f"{len(not_done)} worker threads still busy after {timeout_s}s"


# -- unique contents ---------------------------------------------------------------------------


class Contents:
    """Makes file contents and link targets that are each written once (`tag` + a counter +
    random bytes), so a content found on disk names the write that made it."""

    def __init__(self, tag: str, rng: random.Random) -> None:
        self.tag, self.rng, self.n = tag, rng, 0

    def data(self, big: bool = False) -> bytes:
        self.n += 1
        head = f"{self.tag}#{self.n}\n".encode()
        if big:  # several CDC blocks (min 256 KiB, avg 1 MiB)
            return head + self.rng.randbytes(self.rng.randrange(600_000, 2_500_000))
        return head + self.rng.randbytes(self.rng.randrange(0, 3000))

    def target(self) -> str:
        self.n += 1
        return f"../target-{self.tag}-{self.n}"
