"""Dropbox paths: parse, validate, normalize. Pure.

A path is given by a client as `"/a/b.txt"` (`""` is the root where a route allows it). Three
strings come out of it:

- `display`: exactly as given; what `path_display` shows (the case it was created with).
- `key`: every component NFC-normalized, then `str.casefold()`ed, then NFC again (case folding
  can decompose a character; the last NFC makes the key canonical). All lookups and uniqueness
  go through the key, so `/Café` (NFC), `/Cafe\\u0301` (NFD) and `/CAFÉ` are the same entry.
- `lower`: `display.lower()`, what `path_lower` shows (DROPBOX_API.md §5: Unicode `str.lower()`).

Keys start with "/" (the root's key is ""), so the subtree of key `k` is exactly the keys in the
open range `(k + "/", k + "0")` — "0" is the character after "/" — which is how the state machine
range-scans a folder.

Rejected with `MalformedPath`: no leading slash, a trailing slash, empty components, "." and
"..", control characters (U+0000–U+001F, U+007F), lone surrogates (not encodable as UTF-8),
a component over `NAME_MAX_BYTES` or a path over `PATH_MAX_BYTES` UTF-8 bytes, and "/" itself
(real Dropbox rejects it). A path written anew is also at most `PATH_MAX_DEPTH` components deep
(`depth_problem`; reads are not bounded, so an older, deeper entry stays reachable). The
ranges, and why: `raftbox.meta.values`.

Other path forms (`parse_ref`): `"id:<opaque>"`, `"rev:<hex ≥ 9>"` and `"ns:<digits>[/…]"`.

What a client sends is first put in that form by `as_dropbox_parses`: Dropbox drops empty
components inside a path, so `"//dir"` (what rclone sends for every folder of a root remote:
`"/" + "/" + dir`) and `"/a//b"` name `/dir` and `/a/b`. The API layer applies it to every path
argument (`raftbox.api.args`) before `parse_ref`; the state machine only ever sees the result,
so `parse_path` itself stays strict. What Dropbox still refuses is still refused: no leading
slash, a trailing slash (`"/a/"`, `"/a//"`), a path of slashes only (`"/"`, `"//"`: the root is
`""`), "." and "..", and everything listed above.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
PATH_MAX_DEPTH = 256  # components; a bound for recursive tools (the bytes bound allows 2048)

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_REV = re.compile(r"[0-9a-f]{9,}")
_NS = re.compile(r"ns:([0-9]{1,18})(/.*)?", re.DOTALL)


class MalformedPath(ValueError):
    """The client sent a path Dropbox would reject (`malformed_path`)."""


def component_key(name: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


@dataclass(frozen=True, slots=True)
class Path:
    """A validated path. Build it with `parse_path`; `Path("")` is the root."""

    display: str
    key: str

    @property
    def lower(self) -> str:
        return self.display.lower()

    @property
    def is_root(self) -> bool:
        return self.display == ""

    @property
    def name(self) -> str:
        return self.display.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Path:
        """The parent folder (the root's parent is the root)."""
        if not self.display:
            return self
        return Path(self.display.rsplit("/", 1)[0], self.key.rsplit("/", 1)[0])

    @property
    def components(self) -> list[str]:
        return self.display.split("/")[1:] if self.display else []

    def ancestors(self) -> list[Path]:
        """Every proper ancestor except the root, outermost first."""
        out: list[Path] = []
        d, k = self.display, self.key
        while True:
            d, k = d.rsplit("/", 1)[0], k.rsplit("/", 1)[0]
            if not d:
                break
            out.append(Path(d, k))
        out.reverse()
        return out

    def child(self, name: str) -> Path:
        """`name` must be a valid component (see `validate_name`)."""
        return Path(f"{self.display}/{name}", f"{self.key}/{component_key(name)}")

    def contains(self, other: Path) -> bool:
        """True if `other` is this path or below it (case-insensitively)."""
        return is_in_subtree(other.key, self.key)


def is_in_subtree(key: str, prefix_key: str) -> bool:
    """`key` equals `prefix_key` or lies below it."""
    return key == prefix_key or key.startswith(prefix_key + "/")


def subtree_range(prefix_key: str) -> tuple[str, str]:
    """The open key range holding everything strictly below `prefix_key`."""
    return prefix_key + "/", prefix_key + "0"


def validate_name(name: str) -> None:
    """Raise `MalformedPath` unless `name` is a valid single path component."""
    if name == "":
        raise MalformedPath("empty path component")
    if name in (".", ".."):
        raise MalformedPath(f"path component {name!r} not allowed")
    if "/" in name:
        raise MalformedPath("a name cannot contain '/'")
    if _CONTROL.search(name):
        raise MalformedPath("control character in path")
    try:
        n = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedPath("path is not valid Unicode (lone surrogate)") from None
    if n > NAME_MAX_BYTES:
        raise MalformedPath(f"path component longer than {NAME_MAX_BYTES} bytes")


def parse_path(s: str, *, allow_root: bool = False) -> Path:
    """Parse `"/a/b"` (and `""` if `allow_root`) into a `Path`, or raise `MalformedPath`."""
    if not isinstance(s, str):
        raise MalformedPath("path must be a string")
    if s == "":
        if allow_root:
            return Path("", "")
        raise MalformedPath("the root is not allowed here")
    if s == "/":
        raise MalformedPath("'/' is not a valid path; the root is \"\"")
    if not s.startswith("/"):
        raise MalformedPath("path must start with '/'")
    if s.endswith("/"):
        raise MalformedPath("path must not end with '/'")
    if _CONTROL.search(s):
        raise MalformedPath("control character in path")
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedPath("path is not valid Unicode (lone surrogate)") from None
    if n > PATH_MAX_BYTES:
        raise MalformedPath(f"path longer than {PATH_MAX_BYTES} bytes")
    keys = []
    for name in s[1:].split("/"):
        validate_name(name)
        keys.append(component_key(name))
    return Path(s, "/" + "/".join(keys))


_SLASHES = re.compile("/{2,}")


def as_dropbox_parses(s: str) -> str:
    """`s` with every run of slashes after its first character cut to one (see the module
    docstring), for a plain path (`"//a"` → `"/a"`) and an `ns:` one (`"ns:5//a"` →
    `"ns:5/a"`); `id:` and `rev:` forms, non-strings and what collapses to a form Dropbox
    refuses (`"//"` → `"/"`, `"/a//"` → `"/a/"`) are returned for `parse_ref` to judge."""
    if not isinstance(s, str) or "//" not in s:
        return s
    if s.startswith("/"):
        return _SLASHES.sub("/", s)
    m = _NS.fullmatch(s)
    if m is not None and m.group(2):
        return f"ns:{m.group(1)}" + _SLASHES.sub("/", m.group(2))
    return s


def depth_problem(path: Path) -> str | None:
    """Why a path cannot be written anew (too deep), or None."""
    if len(path.components) > PATH_MAX_DEPTH:
        return f"path deeper than {PATH_MAX_DEPTH} components"
    return None


def make_key(s: str) -> str:
    """The key of a path string (validating it); `""` for the root."""
    return parse_path(s, allow_root=True).key


# -- other path forms --------------------------------------------------------------------------

RefKind = Literal["path", "id", "rev"]


@dataclass(frozen=True, slots=True)
class Ref:
    """What a path-or-id-or-rev argument names.

    kind "path": `path` is set (and `ns` if the client wrote `ns:<n>/…`, else None);
    kind "id": `value` is the whole "id:…" string; kind "rev": `value` is the bare rev.
    """

    kind: RefKind
    path: Path | None = None
    value: str = ""
    ns: int | None = None


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_id(s: str) -> bool:
    return isinstance(s, str) and s.startswith("id:")


def is_rev(s: str) -> bool:
    return isinstance(s, str) and s.startswith("rev:")


def is_ns(s: str) -> bool:
    return isinstance(s, str) and s.startswith("ns:")


def valid_rev(rev: str) -> bool:
    return isinstance(rev, str) and _REV.fullmatch(rev) is not None


def parse_ref(
    s: str, *, allow_root: bool = False, allow_id: bool = True, allow_rev: bool = False
) -> Ref:
    """Classify and validate a path argument; raise `MalformedPath` for anything invalid or a
    form the route does not accept. `ns:<n>` alone is that namespace's root (if `allow_root`)."""
    if not isinstance(s, str):
        raise MalformedPath("path must be a string")
    if s.startswith("id:"):
        if not allow_id:
            raise MalformedPath("an id is not allowed here")
        v = s[3:]
        if not v or "/" in v or _CONTROL.search(v) or len(v) > NAME_MAX_BYTES or not _utf8(v):
            raise MalformedPath("malformed id")
        return Ref("id", value=s)
    if s.startswith("rev:"):
        if not allow_rev:
            raise MalformedPath("a rev is not allowed here")
        if not valid_rev(s[4:]):
            raise MalformedPath("malformed rev")
        return Ref("rev", value=s[4:])
    if s.startswith("ns:"):
        m = _NS.fullmatch(s)
        if m is None:
            raise MalformedPath("malformed ns: path")
        return Ref("path", path=parse_path(m.group(2) or "", allow_root=allow_root), ns=int(m[1]))
    return Ref("path", path=parse_path(s, allow_root=allow_root))


# -- autorename --------------------------------------------------------------------------------


def split_ext(name: str) -> tuple[str, str]:
    """`"a.tar.gz"` → `("a.tar", ".gz")`; a leading dot is not an extension (`".bashrc"`)."""
    i = name.rfind(".")
    if i <= 0:
        return name, ""
    return name[:i], name[i:]


def renamed(name: str, suffix: str, *, is_folder: bool) -> str:
    """`renamed("doc.txt", "(1)")` → `"doc (1).txt"`; folders keep dots in the stem."""
    stem, ext = (name, "") if is_folder else split_ext(name)
    return f"{stem} {suffix}{ext}"
