"""Random user edits on either side of a sync, as hypothesis strategies.

An edit is `(side, verb, i, j, n)`: the integers pick targets modulo what exists when the edit is
applied, so every generated sequence is valid and shrinks well. Names come from a small pool
with case and NFC/NFD variants, so collisions, twins and case-only renames are frequent.
"""

from __future__ import annotations

import itertools
import unicodedata

from hypothesis import strategies as st

from raftbox.client import Kind
from raftbox.client.trees import path_key

from .sim import LEnt, LocalDisk, REnt, Server

NAMES = ("a", "A", "b.txt", "B.TXT", "Café", unicodedata.normalize("NFD", "Café"), "d.md", ".rc")
VERBS = ("create", "mkdir", "symlink", "edit", "chmod", "delete", "move", "case", "both_edit")
SIDES = ("local", "remote")

edit_st = st.tuples(
    st.sampled_from(SIDES),
    st.sampled_from(VERBS),
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(0, len(NAMES) - 1),
)
edits_st = st.lists(edit_st, max_size=14)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def _case_flip(name: str) -> str:
    flipped = name.swapcase()
    if flipped != name:
        return flipped
    nfd = unicodedata.normalize("NFD", name)
    return nfd if nfd != name else unicodedata.normalize("NFC", name)


class Editor:
    """Applies edits as a user (locally) or another client (on the server) would."""

    def __init__(self, disk: LocalDisk, server: Server, tokens: itertools.count):
        self.disk, self.server, self.tokens = disk, server, tokens
        self.created: set[str] = set()  # every content token made by an edit

    def token(self, prefix: str) -> str:
        t = f"{prefix}{next(self.tokens)}"
        self.created.add(t)
        return t

    def apply(self, edit: tuple) -> None:
        side, verb, i, j, n = edit
        if verb == "both_edit":
            self._both_edit(i)
        elif side == "local":
            getattr(self, f"_l_{verb}")(i, j, n)
        else:
            getattr(self, f"_r_{verb}")(i, j, n)

    # -- local (a case-sensitive disk) -----------------------------------------------------

    def _l_pick(self, i: int, kinds=None) -> str | None:
        ps = sorted(p for p, x in self.disk.e.items() if kinds is None or x.kind in kinds)
        return ps[i % len(ps)] if ps else None

    def _l_dir(self, j: int) -> str:
        ds = ["", *sorted(p for p, x in self.disk.e.items() if x.kind is Kind.FOLDER)]
        return ds[j % len(ds)]

    def _l_new(self, i: int, n: int, kind: Kind) -> None:
        path = f"{self._l_dir(i)}/{NAMES[n]}"
        if path in self.disk.e:
            return
        if kind is Kind.FOLDER:
            self.disk.mkdir(path)
        else:
            self.disk.write(path, kind, self.token("s" if kind is Kind.SYMLINK else "t"))

    def _l_create(self, i, j, n):
        self._l_new(i, n, Kind.FILE)

    def _l_mkdir(self, i, j, n):
        self._l_new(i, n, Kind.FOLDER)

    def _l_symlink(self, i, j, n):
        self._l_new(i, n, Kind.SYMLINK)

    def _l_edit(self, i, j, n):
        p = self._l_pick(i, (Kind.FILE,))
        if p is not None:
            self.disk.edit(p, self.token("t"), in_place=j % 2 == 0)

    def _l_chmod(self, i, j, n):
        p = self._l_pick(i, (Kind.FILE,))
        if p is not None:
            self.disk.e[p].executable = not self.disk.e[p].executable

    def _l_delete(self, i, j, n):
        p = self._l_pick(i)
        if p is not None:
            self.disk.delete(p)

    def _l_move(self, i, j, n):
        p = self._l_pick(i)
        if p is None:
            return
        dst = f"{self._l_dir(j)}/{NAMES[n]}"
        if dst in self.disk.e or dst == p or dst.startswith(p + "/"):
            return
        self.disk.rename(p, dst)

    def _l_case(self, i, j, n):
        p = self._l_pick(i)
        if p is None:
            return
        dst = f"{_parent(p)}/{_case_flip(p.rsplit('/', 1)[1])}"
        if dst not in self.disk.e:
            self.disk.rename(p, dst)

    # -- remote (another client; case-insensitive) -----------------------------------------

    def _r_pick(self, i: int, kinds=None) -> str | None:
        ks = sorted(k for k, x in self.server.e.items() if kinds is None or x.kind in kinds)
        return ks[i % len(ks)] if ks else None

    def _r_dir(self, j: int) -> str:
        ds = ["", *sorted(k for k, x in self.server.e.items() if x.kind is Kind.FOLDER)]
        return ds[j % len(ds)]

    def _r_new(self, i: int, n: int, kind: Kind) -> None:
        pk = self._r_dir(i)
        path = f"{self.server.e[pk].path if pk else ''}/{NAMES[n]}"
        if kind is Kind.FOLDER:
            self.server.mkdir(path)
        else:
            tok = self.token("s" if kind is Kind.SYMLINK else "t")
            if self.server.upload(path, kind, tok, False, None) is None:
                self.created.discard(tok)

    def _r_create(self, i, j, n):
        self._r_new(i, n, Kind.FILE)

    def _r_mkdir(self, i, j, n):
        self._r_new(i, n, Kind.FOLDER)

    def _r_symlink(self, i, j, n):
        self._r_new(i, n, Kind.SYMLINK)

    def _r_edit(self, i, j, n):
        k = self._r_pick(i, (Kind.FILE,))
        if k is not None:
            x = self.server.e[k]
            self.server.upload(x.path, Kind.FILE, self.token("t"), x.executable, x.rev)

    def _r_chmod(self, i, j, n):
        k = self._r_pick(i, (Kind.FILE,))
        if k is not None:
            x = self.server.e[k]
            self.server.upload(x.path, Kind.FILE, x.content, not x.executable, x.rev)

    def _r_delete(self, i, j, n):
        k = self._r_pick(i)
        if k is not None:
            self.server.delete(self.server.e[k].path, None, recursive=True)

    def _r_move(self, i, j, n):
        k = self._r_pick(i)
        if k is None:
            return
        pk = self._r_dir(j)
        self.server.move(
            self.server.e[k].path, f"{self.server.e[pk].path if pk else ''}/{NAMES[n]}"
        )

    def _r_case(self, i, j, n):
        k = self._r_pick(i)
        if k is not None:
            x = self.server.e[k]
            self.server.move(x.path, f"{_parent(x.path)}/{_case_flip(x.path.rsplit('/', 1)[1])}")

    # -- both ------------------------------------------------------------------------------

    def _both_edit(self, i: int) -> None:
        """The same file edited on both sides before either syncs."""
        local = {path_key(p): p for p, x in self.disk.e.items() if x.kind is Kind.FILE}
        both = sorted(k for k, x in self.server.e.items() if x.kind is Kind.FILE and k in local)
        if not both:
            return
        k = both[i % len(both)]
        self.disk.edit(local[k], self.token("t"), in_place=True)
        x: REnt = self.server.e[k]
        self.server.upload(x.path, Kind.FILE, self.token("t"), x.executable, x.rev)


__all__ = ["NAMES", "Editor", "LEnt", "edits_st"]
