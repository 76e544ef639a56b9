"""Search by name (`files/search_v2` and `files/search/continue_v2`): a bounded scan of one
namespace's entries in key order, resumed by a cursor. A read; pure but the connection.

What matches: the query is cut into words at white space; each word and each name are
normalized like path keys (NFC, then case-folded, `paths.component_key`), and an entry matches
when EVERY word occurs somewhere in its name (the last path component; not the folders above it,
not the file's content — raftbox does not index content, so `filename_only` changes nothing).
"report 2024" finds "Annual Report 2024.pdf" and "2024-report.txt"; "repo" finds both too
(Dropbox also matches word prefixes). Filters, all optional, all ANDed:

- `prefix_key`: only entries strictly below this folder (`options.path`; "" is the root);
- `deleted`: deleted entries instead of live ones (`options.file_status`);
- `extensions`: files whose extension (after the last dot, case-folded) is one of these;
- `categories`: Dropbox's `FileCategory` names — "folder" for folders, "image", "document",
  "pdf", "spreadsheet", "presentation", "audio", "video", "paper" by extension (`CATEGORIES`),
  "others" for files in none of those.

Order and bounds: matches come in key order (a folder before what it holds), not by relevance.
One call visits at most `SCAN_MAX_ROWS` entries and returns at most `max_results` matches; when
it stops before the end of the range it says so (`after_key`: the last key it visited) and the
next call resumes after that key — so a page may hold fewer than `max_results` matches (even
none) while more follow, as Dropbox allows (`has_more` with a cursor). The work per call is
bounded whatever the namespace holds; a query over a huge tree costs the client more calls, not
the server a long one.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

import msgspec

from . import paths
from .commands import Meta
from .rows import M_COLS, M_FROM, meta_row
from .schema import DELETED, FILE, FOLDER

SCAN_MAX_ROWS = 10_000
QUERY_MAX_WORDS = 50

CATEGORIES: dict[str, frozenset[str]] = {
    "image": frozenset(
        "jpg jpeg png gif bmp webp heic heif tif tiff svg ico raw cr2 nef arw dng psd".split()
    ),
    "document": frozenset("doc docx odt rtf txt md rst tex pages epub wpd".split()),
    "pdf": frozenset(["pdf"]),
    "spreadsheet": frozenset("xls xlsx xlsm ods csv tsv numbers".split()),
    "presentation": frozenset("ppt pptx pps ppsx odp key".split()),
    "audio": frozenset("mp3 wav flac aac ogg oga m4a wma aiff opus".split()),
    "video": frozenset("mp4 mov avi mkv webm wmv flv m4v mpg mpeg 3gp ogv".split()),
    "paper": frozenset(["paper"]),
}
FILE_CATEGORIES = frozenset([*CATEGORIES, "folder", "others"])


class SearchState(msgspec.Struct, frozen=True, array_like=True):
    """A search and how far it got (what its cursor carries, signed by the service)."""

    words: list[str]  # normalized query words
    prefix_key: str
    deleted: bool
    max_results: int
    extensions: list[str] | None = None
    categories: list[str] | None = None
    after_key: str | None = None  # resume after this key


class SearchPage(NamedTuple):
    matches: list[Meta]
    after_key: str | None  # None: the search is complete


def query_words(query: str) -> list[str]:
    """The normalized words of a query (at most `QUERY_MAX_WORDS`)."""
    return [paths.component_key(w) for w in query.split()][:QUERY_MAX_WORDS]


def extension(name_key: str) -> str:
    stem, dot, ext = name_key.rpartition(".")
    return ext if dot and stem else ""


def _category_ok(kind: int, ext: str, cats: list[str]) -> bool:
    if kind == FOLDER:
        return "folder" in cats
    known = [c for c, exts in CATEGORIES.items() if ext in exts]
    return any(c in cats for c in known) or (not known and "others" in cats)


def matches(st: SearchState, name_key: str, kind: int) -> bool:
    """Does an entry with this (normalized) name and kind match the search (module docstring)?"""
    if not all(w in name_key for w in st.words):
        return False
    ext = extension(name_key) if kind != FOLDER else ""
    if st.extensions is not None and (kind == FOLDER or ext not in st.extensions):
        return False
    return st.categories is None or _category_ok(kind, ext, st.categories)


def search_page(
    db: sqlite3.Connection, ns: int, st: SearchState, scan_max_rows: int = SCAN_MAX_ROWS
) -> SearchPage:
    """One page of the search `st` in namespace `ns` (module docstring)."""
    lo, hi = paths.subtree_range(st.prefix_key)
    start, op = (lo, ">=") if st.after_key is None else (st.after_key, ">")
    kinds = (DELETED,) if st.deleted else (FILE, FOLDER)
    cur = db.execute(
        f"SELECT {M_COLS} FROM {M_FROM} WHERE e.ns = ? AND e.key {op} ? AND e.key < ? "
        "ORDER BY e.key LIMIT ?",
        (ns, start, hi, scan_max_rows + 1),
    )
    found: list[Meta] = []
    last = None
    for n, row in enumerate(cur):
        if n == scan_max_rows or len(found) == st.max_results:
            return SearchPage(found, last)  # a row follows: more to visit
        key, kind = row[0], row[3]
        last = key
        if kind in kinds and matches(st, key.rsplit("/", 1)[-1], kind):
            found.append(meta_row(row))
    return SearchPage(found, None)
