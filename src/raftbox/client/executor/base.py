"""What the parts of one pass share: its state, its bounds, and the checks they all make.

Contract
--------
`PassBase` holds one pass's state (the sync root, the index, the server, the scan's
blocklists, the counters and the progress sink) and what every part needs: `abs` (a display
path below the root as an absolute path), `_safe_parent` (no symlink on the way to a path's
folder: checked before any write into it) and the conflicted-copy handling (`_conflict_aside`
renames a local file aside and reports it; `_conflict_noted` reports one made otherwise). It
does nothing by itself: `core.Executor` is the parts (`structural`, `uploads`, `downloads`)
built on it. `Counters` sums what passes did; `Progress` is where the parts report as they go.

The bounds (`SMALL_BYTES`, `GROUP_FILES`, `GROUP_BYTES`, `STREAM_BYTES`, `TRANSFERS_IN_FLIGHT`)
live here, once, because more than one part obeys them (see the package docstring).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raftbox.blocks.chunker import CDC, Chunking

from .. import localfs
from ..ignore import IgnoreRules
from ..index import Index
from ..remote import Remote
from ..trees import Tree

MiB = 1024 * 1024
SMALL_BYTES = 4 * MiB
GROUP_FILES = 1000
GROUP_BYTES = 32 * MiB
STREAM_BYTES = 16 * MiB
TRANSFERS_IN_FLIGHT = 4
TMP_DIR = "tmp"


@dataclass
class Counters:
    """What passes did (summed over a `sync` run)."""

    uploaded_files: int = 0
    uploaded_bytes: int = 0
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    reused_bytes: int = 0  # of downloads, taken from local files instead of the network
    deleted_local: int = 0
    deleted_remote: int = 0
    moved: int = 0
    folders: int = 0
    conflicts: int = 0
    skipped: int = 0  # operations whose re-check failed: the next pass takes them up
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, other: Counters) -> None:
        for k, v in vars(other).items():
            if isinstance(v, list):
                getattr(self, k).extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)


class Progress:
    """What the executor reports as it goes (the command line shows it as progress bars)."""

    def start(self, what: str, files: int, nbytes: int) -> None: ...
    def advance(self, what: str, files: int, nbytes: int) -> None: ...
    def message(self, text: str) -> None: ...


class PassBase:
    """The state the parts of one pass share, and the checks and conflict handling they all
    use. `Executor` is built from the parts (`structural`, `uploads`, `downloads`) on it."""

    def __init__(
        self,
        root: str,
        index: Index,
        remote: Remote,
        *,
        host: str,
        today: str,
        chunking: Chunking = CDC,
        blocklists: dict[str, tuple[tuple[str, int], ...]] | None = None,
        progress: Progress | None = None,
        counters: Counters | None = None,
        scan_started_ns: int | None = None,
        rules: IgnoreRules | None = None,
        remote_before: Tree | None = None,
        refresh: Callable[[], Awaitable[Tree]] | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.scan_started_ns = scan_started_ns  # when the scan behind `blocklists` began
        self.rules = rules if rules is not None else IgnoreRules()
        self.remote_before = remote_before if remote_before is not None else Tree()  # planned
        self.refresh = refresh  # the server's tree now (after this pass's own moves)
        # (src, dst) of this pass's server moves: `structural` adds, `core` re-bases uploads
        self._moved_remote: list[tuple[str, str]] = []
        self.index = index
        self.remote = remote
        self.host, self.today = host, today
        self.chunking = chunking
        self.blocklists = blocklists or {}
        self.progress = progress or Progress()
        self.c = counters if counters is not None else Counters()
        self.tmp = os.path.join(self.root, ".raftbox", TMP_DIR)
        # `downloads`: where local files hold each block (built on first use), and the folders
        # renamed into (fsynced once per group)
        self._local_blocks: dict[str, tuple[str, int, int]] | None = None
        self._dirty_dirs: set[str] = set()
        # `structural`: the server's answers to folder creations sent ahead in one batch, by
        # `id(op)` (folder metadata, or the entry's `RemoteError`)
        self._premade: dict[int, Any] = {}

    def abs(self, rel: str) -> str:
        return self.root + rel

    def _safe_parent(self, rel: str) -> bool:
        """Is every folder above `rel` a real folder below the root (no symlink on the way,
        which a folder swapped for a link after the scan would be)?"""
        return localfs.safe_dir(self.root, rel.rsplit("/", 1)[0])

    def _conflict_noted(self, path: str, copy: str) -> None:
        msg = f"conflict: {path!r} changed on both sides; this side's version is kept as {copy!r}"
        self.c.conflicts += 1
        self.c.messages.append(msg)
        self.progress.message(msg)

    def _conflict_aside(self, rel: str, is_folder: bool = False) -> str | None:
        """Rename local `rel` to a free conflicted-copy name; the new name (None if gone)."""
        new = localfs.free_conflict_name(
            self.root, rel, host=self.host, today=self.today, is_folder=is_folder
        )
        try:
            localfs.rename_noreplace(self.abs(rel), self.abs(new))
        except FileNotFoundError:
            return None
        self._conflict_noted(rel, new)
        return new
