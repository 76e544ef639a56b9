"""What this client can hold locally, and the entries of a server's tree it cannot. Pure.

The server is not trusted to send only what this machine can represent: an older server, another
implementation, or values valid on the server but not here (a 255-byte name on a file system
that allows 143, a path that fits the server's 4096 bytes but not below this sync root) must
never stop a sync. Contract:

- **Entries held** (`held_entries`, `LocalLimits`): an entry whose name is too long for the local
  file system (`os.pathconf(root, "PC_NAME_MAX")` bytes), whose path below the root is too long
  (`PC_PATH_MAX`, counting the root and the terminating NUL), or which lies deeper than
  `DEPTH_MAX` folders is *held*: the planner hides its key and subtree on all three sides (the
  `hold` of `planner.plan`), so it is not downloaded, never deleted on either side, and blocks
  nothing else. The engine reports it once per run beside the local entries that cannot be
  synced. Names the server's own rules refuse (NUL and other control characters, "/", lone
  surrogates, bytes that are not UTF-8, over 255 bytes) and metadata this client cannot read
  (sizes that are not a count of bytes, ids and revs that are not strings) are held by
  `remote._ops` the same way, with a reason. Folders nested deeper than `DEPTH_MAX` are held at
  the folder at that depth, on both sides (the scanner holds the same folder), so that the two
  sides agree on what is held.
- **Dates are clamped, not held** (`clamp_mtime_ns`): a far-future or far-past `client_modified`
  with ordinary content is downloaded, with its mtime clamped to the nearest value this client
  can hold. Holding it would keep a perfectly good file away from the user because of a
  timestamp, which carries no content (the planner never compares mtimes of the two sides); a
  clamped mtime loses only a date no local file system could show anyway. The range is that of a
  signed 64-bit count of nanoseconds, whole seconds (1677-09-21 to 2262-04-11): what SQLite's
  INTEGER, `os.stat_result.st_mtime_ns` of an ordinary file and `os.utime(ns=)` all take; the
  kernel clamps further to what the file system holds (ext4: 1901 to 2446). The index clamps
  every mtime it stores to the same range (a local file may carry a date past 2262 too).
- **Dates sent** (`clamp_sent_s`) stay within the range the server accepts for
  `client_modified` (`raftbox.meta.values`: 1970-01-01T00:00:00Z .. 2199-12-31T23:59:59Z), so an
  odd local mtime can never make an upload refused pass after pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from raftbox.meta.values import CLIENT_MODIFIED_MAX_S

from .trees import Node

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_NS = 1_000_000_000
MTIME_MAX_NS = INT64_MAX // _NS * _NS  # 2262-04-11T23:47:16Z
MTIME_MIN_NS = -(INT64_MAX // _NS * _NS)  # 1677-09-21T00:12:44Z
SENT_MIN_S = 0  # 1970-01-01T00:00:00Z
SENT_MAX_S = CLIENT_MODIFIED_MAX_S  # 2199-12-31T23:59:59Z
DEPTH_MAX = 256  # folders below the root; the scanner's recursion stays far from Python's limit


def clamp_mtime_ns(ns: int) -> int:
    """`ns` clamped to what this client holds as an mtime (see the module doc)."""
    return MTIME_MIN_NS if ns < MTIME_MIN_NS else MTIME_MAX_NS if ns > MTIME_MAX_NS else ns


def clamp_sent_s(s: int) -> int:
    """A time in seconds clamped to what this client sends as `client_modified`."""
    return SENT_MIN_S if s < SENT_MIN_S else SENT_MAX_S if s > SENT_MAX_S else s


def clamp_int64(v: int) -> int:
    """`v` clamped to SQLite's INTEGER range."""
    return INT64_MIN if v < INT64_MIN else INT64_MAX if v > INT64_MAX else v


@dataclass(frozen=True, slots=True)
class LocalLimits:
    """The local file system's limits for one sync root (`localfs.local_limits` reads them).

    `path_max_bytes` counts the whole absolute path with its terminating NUL, as `PC_PATH_MAX`
    does; `root_bytes` is the length of the root's absolute path."""

    name_max_bytes: int = 255
    path_max_bytes: int = 4096
    root_bytes: int = 0
    depth_max: int = DEPTH_MAX

    def problem(self, path: str) -> str | None:
        """Why the display path `path` ("/a/b", valid on the server) cannot be held below the
        root, or None. Checks its length and depth, and each name's length."""
        n = len(path.encode("utf-8", "surrogatepass"))
        if self.root_bytes + n + 1 > self.path_max_bytes:
            return f"path too long for this file system ({self.path_max_bytes} bytes at most)"
        if n > self.name_max_bytes:  # only then can one name be too long
            for name in path.split("/")[1:]:
                if len(name.encode("utf-8", "surrogatepass")) > self.name_max_bytes:
                    return (
                        f"name too long for this file system ({self.name_max_bytes} bytes at most)"
                    )
        return None


def too_deep(path: str, depth_max: int = DEPTH_MAX) -> str | None:
    """The folder at depth `depth_max` above `path` if `path` lies deeper than that, else None."""
    if path.count("/") <= depth_max:
        return None
    return "/".join(path.split("/")[: depth_max + 1])


def deep_reason(depth_max: int = DEPTH_MAX) -> str:
    return f"holds folders nested deeper than {depth_max} levels"


def held_entries(nodes: Iterable[Node], limits: LocalLimits) -> list[tuple[str, str]]:
    """(display path, reason) of every entry of a server tree this client cannot hold locally,
    outermost only (what is below a held entry is held with it), in path order."""
    found: dict[str, tuple[str, str]] = {}  # key -> (display path, reason)
    # Cheap first: a code point is at most 4 bytes of UTF-8 and a component at least 2 chars
    # ("/x"); the tree holds every ancestor, so each node's own name is the only new one.
    path_chars = (limits.path_max_bytes - limits.root_bytes - 1) // 4
    name_chars = limits.name_max_bytes // 4
    depth_chars = 2 * limits.depth_max
    for n in nodes:
        p = n.path
        if (
            len(p) <= path_chars
            and len(p) <= depth_chars
            and len(p) - p.rfind("/") - 1 <= name_chars
        ):
            continue
        deep = too_deep(n.path, limits.depth_max)
        if deep is not None:
            key = "/".join(n.key.split("/")[: limits.depth_max + 1])
            found.setdefault(key, (deep, deep_reason(limits.depth_max)))
            continue
        why = limits.problem(n.path)
        if why is not None:
            found[n.key] = (n.path, why)
    kept: set[str] = set()
    for key in sorted(found, key=lambda k: k.count("/")):  # parents first
        parts = key.split("/")
        if not any("/".join(parts[:i]) in kept for i in range(2, len(parts))):
            kept.add(key)
    return sorted(found[k] for k in kept)
