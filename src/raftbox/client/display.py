"""What `raftbox sync` shows: progress bars on a terminal, plain lines elsewhere, one summary.

`make_progress(quiet)` returns an `executor.Progress`: with `rich` bars (scan, upload, download:
files done of total, bytes, rate, time left) when stderr is a terminal, else one that only prints
messages (conflicts, twin renames, errors) as plain lines — nothing animated in logs or pipes.
`summary_line(path, summary)` is the one line printed at the end of a sync.
"""

from __future__ import annotations

import sys
from typing import Any

from .engine import Summary
from .executor import Progress


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class PlainProgress(Progress):
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


class RichProgress(Progress):
    """Bars on stderr; `close()` when done (the bars go, the messages stay)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<9}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.files: dict[str, list[int]] = {}
        self.bars.start()

    def start(self, what: str, files: int, nbytes: int) -> None:
        if what != "scan" and not files:
            return
        self.files[what] = [0, files]
        label = self._files(what)
        if what in self.tasks:
            self.bars.reset(self.tasks[what], total=nbytes or None, files=label)
        else:
            self.tasks[what] = self.bars.add_task(what, total=nbytes or None, files=label)

    def advance(self, what: str, files: int, nbytes: int) -> None:
        if what not in self.tasks:
            return
        self.files[what][0] += files
        if what == "scan":  # no total known: files seen, and bytes read (the spinner turns)
            self.bars.update(self.tasks[what], advance=nbytes, files=f"{self.files[what][0]} files")
            return
        self.bars.update(self.tasks[what], advance=nbytes, files=self._files(what))

    def _files(self, what: str) -> str:
        done, total = self.files.get(what, [0, 0])
        return f"{done}/{total} files" if total else ""

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.bars.stop()


def make_progress(quiet: bool) -> Progress:
    if not quiet and sys.stderr.isatty():
        return RichProgress()
    return PlainProgress(quiet)


def summary_line(path: str, s: Summary) -> str:
    c = s.counters
    parts = []
    if c.uploaded_files:
        parts.append(f"uploaded {c.uploaded_files} files ({human(c.uploaded_bytes)})")
    if c.downloaded_files:
        reused = f", {human(c.reused_bytes)} from local blocks" if c.reused_bytes else ""
        parts.append(f"downloaded {c.downloaded_files} files ({human(c.downloaded_bytes)}{reused})")
    if c.deleted_local:
        parts.append(f"deleted {c.deleted_local} here")
    if c.deleted_remote:
        parts.append(f"deleted {c.deleted_remote} on the server")
    if c.moved:
        parts.append(f"moved {c.moved}")
    if c.folders:
        parts.append(f"created {c.folders} folders")
    if c.conflicts:
        parts.append(f"{c.conflicts} conflicted copies")
    what = ", ".join(parts) if parts else "already in sync"
    head = "synced" if s.ok else "sync incomplete"
    tail = f"; sent {human(s.bytes_sent)}, received {human(s.bytes_received)} in {s.seconds:.1f} s"
    why = ""
    if s.refused:
        why = f" — {s.refused}"
    elif s.unavailable:
        why = f" — server unavailable ({s.unavailable}); run again later"
    elif c.errors:
        why = f" — {len(c.errors)} errors (first: {c.errors[0]})"
    elif s.pending:
        why = f" — {s.pending} operations left after {s.passes} passes; run again"
    return f"raftbox: {head} {path}: {what}{tail}{why}"
