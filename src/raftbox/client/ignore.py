"""What the sync client leaves alone: `.raftboxignore` (gitignore syntax) plus defaults. Pure.

Rules are gitignore's, as implemented by `pathspec` ("gitwildmatch"), matched against the display
path relative to the sync root (`"/a/b.txt"` is matched as `a/b.txt`, a folder as `a/`). The
default patterns (`DEFAULT_PATTERNS`) come first, so a `.raftboxignore` line such as `!*.tmp`
re-includes what a default left out. As in git, nothing below an ignored folder can be
re-included: `is_ignored` checks every ancestor first.

Matching is case-sensitive, like git. The planner asks about the display path of every side and
ignores a key if any side's name matches, so `x.TMP` on one side and `x.tmp` on the other can
never make a download overwrite an ignored local file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pathspec

# Temporary, lock and editor files, and the client's own state folder.
DEFAULT_PATTERNS: tuple[str, ...] = (
    ".raftbox/",  # the client's index and temporary downloads
    "*.swp",  # vim
    "*.swo",
    "*.swx",
    "*~",  # emacs, gedit, many others: backup copies
    ".#*",  # emacs lock links
    "\\#*#",  # emacs auto-save (a leading # must be escaped in gitignore syntax)
    "~$*",  # Microsoft Office owner files
    ".~lock.*#",  # LibreOffice locks
    "*.tmp",
    ".DS_Store",  # macOS Finder
    "._*",  # macOS resource forks on foreign filesystems
    "Thumbs.db",  # Windows Explorer
    "desktop.ini",
)

IGNORE_FILE = ".raftboxignore"


class IgnoreRules:
    """A compiled set of gitignore-style patterns. Immutable after construction."""

    __slots__ = ("patterns", "_spec", "_any")

    def __init__(self, patterns: Iterable[str] = (), *, defaults: bool = True):
        """`patterns` are lines of a `.raftboxignore` (comments and blank lines allowed)."""
        lines = [*(DEFAULT_PATTERNS if defaults else ()), *patterns]
        self.patterns: tuple[str, ...] = tuple(lines)
        self._spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
        # Most paths match no pattern at all: one combined regex answers that in one step,
        # and only a path that matches something goes through pathspec's ordered evaluation.
        # (Group names are made anonymous so that the patterns can be joined.)
        live = [p for p in self._spec.patterns if p.include is not None]
        self._any: re.Pattern[str] | None = None  # None: no pattern at all
        if live:
            try:
                joined = "|".join(f"(?:{p.regex.pattern})" for p in live)  # type: ignore[attr-defined]
                self._any = re.compile(re.sub(r"\(\?P<\w+>", "(?:", joined))
            except (AttributeError, re.error):  # not plain regex patterns: always ask pathspec
                self._any = re.compile("")

    @classmethod
    def from_text(cls, text: str, *, defaults: bool = True) -> IgnoreRules:
        """Rules from the contents of a `.raftboxignore` file."""
        return cls(text.splitlines(), defaults=defaults)

    def matches(self, path: str, *, is_folder: bool) -> bool:
        """Do the rules ignore this entry itself (display path `"/a/b"`), ancestors aside?"""
        rel = path.lstrip("/") + ("/" if is_folder else "")
        if self._any is None or self._any.match(rel) is None:
            return False
        return self._spec.match_file(rel)

    def is_ignored(self, path: str, *, is_folder: bool) -> bool:
        """Is the entry at display path `path` (`"/a/b"`) ignored, itself or by an ancestor?"""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            if self.matches("/".join(parts[:i]), is_folder=True):
                return True
        return self.matches(path, is_folder=is_folder)

    def __repr__(self) -> str:
        return f"IgnoreRules({len(self.patterns)} patterns)"
