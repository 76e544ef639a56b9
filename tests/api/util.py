"""Small helpers shared by the API tests: whole-tree snapshots and "nothing changed" checks."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import dropbox
from dropbox import files

MiB = 1024 * 1024
BLOCK = 4 * MiB


def data(n: int, seed: int = 0) -> bytes:
    """`n` bytes that differ from block to block (so no two 4 MiB blocks deduplicate)."""
    if n <= 1 << 16:
        return os.urandom(n)
    out = bytearray()
    chunk = os.urandom(1 << 16)
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, i)).digest() + chunk
        i += 1
    return bytes(out[:n])


def list_all(dbx: dropbox.Dropbox, path: str = "", **kw: Any) -> list[files.Metadata]:
    """Every entry of a listing, following `continue` until has_more is false."""
    r = dbx.files_list_folder(path, **kw)
    out = list(r.entries)
    while r.has_more:
        r = dbx.files_list_folder_continue(r.cursor)
        out.extend(r.entries)
    return out


def describe(m: files.Metadata) -> tuple:
    if isinstance(m, files.FileMetadata):
        return ("file", m.path_display, m.id, m.rev, m.size, m.content_hash)
    if isinstance(m, files.FolderMetadata):
        return ("folder", m.path_display, m.id)
    return ("deleted", m.path_display)


@dataclass
class Snapshot:
    tree: dict[str, tuple]
    cursor: str


def snapshot(dbx: dropbox.Dropbox) -> Snapshot:
    """The whole account (recursive, with deletions) and a cursor at its current end."""
    tree = {m.path_lower: describe(m) for m in list_all(dbx, "", recursive=True)}
    cursor = dbx.files_list_folder_get_latest_cursor("", recursive=True, include_deleted=True)
    return Snapshot(tree, cursor.cursor)


def assert_unchanged(dbx: dropbox.Dropbox, before: Snapshot) -> None:
    """Nothing was written: the tree is the same and the journal has no new change."""
    after = {m.path_lower: describe(m) for m in list_all(dbx, "", recursive=True)}
    assert after == before.tree
    r = dbx.files_list_folder_continue(before.cursor)
    assert r.entries == [] and not r.has_more, f"unexpected changes: {r.entries}"
