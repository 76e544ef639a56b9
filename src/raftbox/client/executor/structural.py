"""Structural operations: renames, moves, folders, deletes and synced-tree updates.

Contract
--------
`Structural._structural(op)` carries out one structural operation of a plan (rule 1 of the
package docstring: `core` runs them one at a time, in plan order) and returns None on success,
else one line saying why it was skipped (its re-check failed, or the server or the disk refused);
`core` then skips what depends on it. On success the index records what both sides now agree
on, in one transaction. A local entry is re-checked (`localfs.unchanged`) just before it is
deleted; a changed one is kept (an edit wins over a delete). A move of a synced entry is
written ahead (`_move_ahead`) so that a kill between the move and its record is settled by the
next start (`reconcile`). A folder deleted here is deleted on the server only if
nothing the client syncs is left in it there; a folder the server deleted is kept here if it
holds entries the client never syncs (ignored ones, or not regular files). A folder the server
refuses to create as read-only (a viewer's, in a shared folder) is moved with its contents to a
conflicted copy at the top of the sync folder, the account's own space; a delete or move it
refuses as read-only is undone (the entry is forgotten in the synced tree, so the next pass
downloads the shared version again; one message each). `OSError`s that
are not expected re-checks leave to `core`, which counts them as a skipped operation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import replace
from typing import Any

from raftbox.meta.paths import MalformedPath

from .. import localfs
from ..planner import (
    ConflictCopy,
    DeleteLocal,
    DeleteRemote,
    MkdirLocal,
    MkdirRemote,
    MoveLocal,
    MoveRemote,
    Op,
    RenameTwin,
    UpdateSynced,
)
from ..remote import RemoteError, remote_node
from ..trees import Kind, agreed, path_key
from .base import PassBase


class Structural(PassBase):
    """Rule 1's operations, one at a time (see the module docstring)."""

    async def _structural(self, op: Op) -> str | None:
        """Carry out one structural op; None on success, else why it was skipped."""
        if isinstance(op, RenameTwin | ConflictCopy | MoveLocal):
            src, dst = (op.path, op.new_path) if isinstance(op, ConflictCopy) else (op.src, op.dst)
            for p in (src, dst):
                if not self._safe_parent(p):
                    return f"{p}: its folder is gone or is not a folder (or became a link)"
            ahead = isinstance(op, MoveLocal) and self._move_ahead("move_local", src, dst)
            try:
                localfs.rename_noreplace(self.abs(src), self.abs(dst))
            except (FileNotFoundError, FileExistsError) as e:
                if ahead:
                    self.index.pending_drop([path_key(src)])
                if isinstance(e, FileNotFoundError):
                    return f"{src}: gone since the scan"
                return f"{dst}: taken since the scan"
            if isinstance(op, RenameTwin):
                self.progress.message(op.message)
                self.c.messages.append(op.message)
            elif isinstance(op, ConflictCopy):
                self._conflict_noted(src, dst)
            else:
                self._moved(src, dst, ahead)
            return None
        if isinstance(op, MkdirLocal):
            p = self.abs(op.path)
            if not localfs.safe_dir(self.root, op.path.rsplit("/", 1)[0]):
                return f"{op.path}: its folder is gone or is not a folder"
            with contextlib.suppress(FileExistsError):
                os.mkdir(p)
            st = localfs.lstat_or_none(p)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return f"{op.path}: not a folder on disk"
            self.index.apply(put=[agreed(localfs.local_node(op.path, st), op.node)])
            self.c.folders += 1
            return None
        if isinstance(op, MkdirRemote):
            try:
                meta = self._premade.pop(id(op), None)  # sent ahead in a batch (`mkdir_ahead`)
                if isinstance(meta, RemoteError):
                    raise meta
                if meta is None:
                    meta = (await self.remote.api("files/create_folder_v2", {"path": op.path}))[
                        "metadata"
                    ]
                meta[".tag"] = "folder"
            except RemoteError as e:
                if "no_write_permission" in e.summary.split("/"):
                    return self._read_only_folder_aside(op.path, e.summary)
                if not e.is_tag("path/conflict/folder"):
                    return f"create folder {op.path}: {e.summary}"
                meta = await self.remote.api("files/get_metadata", {"path": op.path})
            rem = remote_node(meta)
            if rem is None or not rem.is_folder:
                return f"{op.path}: not a folder on the server"
            self.index.apply(put=[agreed(op.node, rem)])
            self.c.folders += 1
            return None
        if isinstance(op, MoveRemote):
            ahead = self._move_ahead("move_remote", op.src, op.dst)
            try:
                await self.remote.api("files/move_v2", {"from_path": op.src, "to_path": op.dst})
            except RemoteError as e:
                if ahead:
                    self.index.pending_drop([path_key(op.src)])
                if "no_write_permission" in e.summary.split("/"):
                    return self._read_only_restore(op.src, "move", e.summary)
                return f"move {op.src} -> {op.dst}: {e.summary}"
            self._moved(op.src, op.dst, ahead)
            self._moved_remote.append((op.src, op.dst))
            return None
        if isinstance(op, DeleteLocal):
            return self._delete_local(op)
        if isinstance(op, DeleteRemote):
            return await self._delete_remote(op)
        if isinstance(op, UpdateSynced):
            key = path_key(op.path)
            if op.node is None:
                self.index.apply(delete=[key])
            else:
                self.index.apply(put=[op.node], delete=[] if op.node.is_folder else [key])
            return None
        raise AssertionError(f"not a structural op: {op!r}")

    async def mkdir_ahead(self, ops: list[MkdirRemote]) -> None:
        """Send the creations of `ops` (a run of consecutive `MkdirRemote`s, parents before
        children) in one `files/create_folder_batch` (one raft entry; entries run in order)
        and keep each answer for `_structural`, which then handles it as the answer of its own
        `create_folder_v2`: 1,000 new folders cost one request, not 1,000. Anything unexpected
        (the route refused, an answer of the wrong shape) keeps nothing: each op then makes its
        own request, as before."""
        if len(ops) < 2:
            return
        try:
            res = await self.remote.api(
                "files/create_folder_batch", {"paths": [op.path for op in ops]}
            )
        except RemoteError:
            return
        entries = res.get("entries") if res.get(".tag") == "complete" else None
        if not isinstance(entries, list) or len(entries) != len(ops):
            return
        for op, e in zip(ops, entries, strict=True):
            tag = e.get(".tag") if isinstance(e, dict) else None
            if tag == "success" and isinstance(e.get("metadata"), dict):
                self._premade[id(op)] = e["metadata"]
            elif tag == "failure":
                why = _error_summary(e.get("failure"))
                self._premade[id(op)] = RemoteError("files/create_folder_batch", 409, why, e)

    def _read_only_folder_aside(self, rel: str, why: str) -> str:
        """A new local folder the server refused as read-only (a viewer's folder in a shared
        folder, or one it kept because it wrote into it after the server lost it): move it,
        with what it holds, to a conflicted-copy name at the top of the sync folder (the
        account's own space, which the next pass uploads), as `Uploads._read_only_aside`
        does for a file; say so once. The ops below it are skipped this pass (the answer)."""
        name = rel.rsplit("/", 1)[-1]
        new = localfs.free_conflict_name(
            self.root, "/" + name, host=self.host, today=self.today, is_folder=True
        )
        try:
            localfs.rename_noreplace(self.abs(rel), self.abs(new))
        except (FileNotFoundError, FileExistsError):
            return f"create folder {rel}: {why}"
        msg = (
            f"read-only: {rel!r} is in a folder shared with you as a viewer; your folder is "
            f"kept as {new!r}"
        )
        self.c.conflicts += 1
        self.c.messages.append(msg)
        self.progress.message(msg)
        return f"create folder {rel}: {why} (moved to {new})"

    def _read_only_restore(self, rel: str, what: str, why: str) -> str:
        """A delete or move of `rel` the server refused as read-only (a viewer's, in a shared
        folder): forget `rel` and what is below it in the synced tree, so that the next pass
        downloads the shared version again. What the user moved stays where it was put, as a
        new entry there (uploaded in the account's own space; in the shared folder, moved
        aside as the viewer's conflicted copy). One message; the ops below it are skipped
        this pass (the answer)."""
        self.index.apply(delete=[path_key(rel)])
        msg = (
            f"read-only: {rel!r} is in a folder shared with you as a viewer; your {what} is "
            f"not sent and the shared version is restored"
        )
        self.c.messages.append(msg)
        self.progress.message(msg)
        return f"{what} {rel}: {why} (restored from the server next)"

    def _move_ahead(self, op: str, src: str, dst: str) -> bool:
        """Write-ahead for a move of a synced entry: if the process dies after the move and
        before `_moved` records it, the next start finds the row and checks which happened
        (`reconcile`), so the entry is not taken for one deleted at `src` and new at
        `dst`. False if `src` is not in the synced tree (nothing to record then)."""
        node = self.index.synced_node(path_key(src))
        if node is None:
            return False
        self.index.pending_put(op, [(dst, replace(node, path=src))])  # (same key)
        return True

    def _moved(self, src: str, dst: str, ahead: bool) -> None:
        with self.index.batch():
            self.index.move(path_key(src), dst)
            if ahead:
                self.index.pending_drop([path_key(src)])
        self.c.moved += 1

    def _delete_local(self, op: DeleteLocal) -> str | None:
        p = self.abs(op.path)
        key = path_key(op.path)
        if not self._safe_parent(op.path):
            return f"{op.path}: its folder is gone or is not a folder (or became a link)"
        st = localfs.lstat_or_none(p)
        if st is None:
            self.index.apply(delete=[key])  # already gone: both sides agree
            return None
        if not localfs.unchanged(p, op.expect, self.chunking):
            return f"{op.path}: changed since the scan, kept (the next pass uploads it)"
        try:
            if op.expect.is_folder:
                self._rmdir(op.path)
            else:
                os.unlink(p)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if any(self._would_sync(op.path, n) for n in os.listdir(p)):
                return f"{op.path}: the folder is not empty any more, kept"
            # Only entries that are never synced (ignored, or not files) keep it: they are the
            # user's, so the folder stays (and is created again on the server, empty).
            msg = (
                f"{op.path} was deleted on the server but holds files here that are not "
                f"synced (ignored, or not regular files): kept"
            )
            self.c.messages.append(msg)
            self.progress.message(msg)
        self.index.apply(delete=[key])
        self.c.deleted_local += 1
        return None

    def _would_sync(self, folder: str, name: str) -> bool:
        """Would the scanner sync the entry `name` of local folder `folder` (not ignored, a
        file, folder or symlink, a name the server accepts)?"""
        rel = f"{folder}/{name}"
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            return False
        st = localfs.lstat_or_none(self.abs(rel))
        if st is None or localfs.kind_of(st) is None:
            return False
        try:
            path_key(rel)
        except MalformedPath:
            return False
        return not self.rules.is_ignored(rel, is_folder=localfs.kind_of(st) is Kind.FOLDER)

    def _rmdir(self, rel: str) -> None:
        """Remove an empty folder; OS clutter (`.DS_Store`, `Thumbs.db`, ...) does not count."""
        p = self.abs(rel)
        try:
            os.rmdir(p)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        for name in os.listdir(p):
            if name in _CLUTTER or name.startswith("._"):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(os.path.join(p, name))
        os.rmdir(p)

    async def _delete_remote(self, op: DeleteRemote) -> str | None:
        key = path_key(op.path)
        arg: dict[str, Any] = {"path": op.path}
        if op.rev is not None:
            arg["parent_rev"] = op.rev
        else:  # a folder: only if nothing is left in it on the server
            try:
                res = await self.remote.api("files/list_folder", {"path": op.path, "limit": 100})
            except RemoteError as e:
                if e.is_tag("path/not_found"):
                    self.index.apply(delete=[key])
                    return None
                return f"delete {op.path}: {e.summary}"
            # Entries this client ignores (synced before a rule was added) do not keep the
            # folder: the user deleted it here, and the server keeps their revisions.
            if res.get("has_more") or any(
                not self.rules.is_ignored(e["path_display"], is_folder=e.get(".tag") == "folder")
                for e in res["entries"]
            ):
                return f"delete {op.path}: the server folder has new entries, kept"
        try:
            await self.remote.api("files/delete_v2", arg)
        except RemoteError as e:
            if e.is_tag("path_lookup/not_found") or e.is_tag("path/not_found"):
                self.index.apply(delete=[key])
                return None
            if "no_write_permission" in e.summary.split("/"):
                return self._read_only_restore(op.path, "delete", e.summary)
            return f"delete {op.path}: {e.summary}"
        self.index.apply(delete=[key])
        self.c.deleted_remote += 1
        return None


_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _error_summary(err: object) -> str:
    """A Dropbox error union as its `error_summary` (`path/conflict/folder/..`)."""
    tags: list[str] = []
    while isinstance(err, dict) and isinstance(err.get(".tag"), str) and len(tags) < 8:
        tag = err[".tag"]
        tags.append(tag)
        err = err.get(tag)
    return "/".join(tags) + "/.." if tags else "unknown error"
