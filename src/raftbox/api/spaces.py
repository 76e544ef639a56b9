"""An account's tree as the routes see it: its home namespace with shared folders mounted in it.

What: `Member` is the authenticated account plus its mounts (`raftbox.meta.sharing.Mount`),
read once per request (`with_mounts`, one query). `target(who, path, prefix, write)` turns a
route's path argument into a `Target`: the namespace it lives in, the path inside that
namespace, and the mount it crossed (None: the home namespace). Every route that takes a path
goes through it, so path resolution crosses mount points the same way everywhere:

- `/a/b` under a mount point `/Project` → the shared namespace, `/a/b` relative to its root;
  the mount point itself is the shared namespace's root for listing and writing inside it,
  and the home namespace's folder entry for `get_metadata` (`Target.at_mount_point`);
- `ns:<n>/…` → namespace n if it is the caller's home or a shared folder it has mounted; any
  other n answers `not_found`, exactly as a namespace that does not exist;
- `id:…` and `rev:…` → the namespace among the caller's readable ones (home first, then each
  mount) that holds it (`locate`, one query); none: `not_found`, as for an unknown id.

Results go back through `Target.show` (paths rebased into the caller's tree) and
`Target.json` (Dropbox JSON with `sharing_info`: FileSharingInfo / FolderSharingInfo with
`read_only` and `parent_shared_folder_id` inside a shared folder; a mount point carries
`shared_folder_id`). A viewer's write (`write=True`) answers `no_write_permission` under the
route's error prefix, before anything is read or written.

Why here and not in the state machine: mounts are per account while commands are per
namespace (every write stays inside one namespace); the API knows the account.

Known limits: the access check is made on the state read for the request (linearizable), and
the write proposed after it, so a write racing the removal of its author from the folder may
still land (the command carries no account for the state machine to check again). Moving a
folder that holds a mount point (other than the mount point itself) is refused
(`cant_move_shared_folder`); deleting one unmounts what it holds first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from raftbox.meta import commands as C
from raftbox.meta import paths as P
from raftbox.meta.sharing import Mount, inner, mount_of, mounts_below

from . import wire
from .errors import ApiError


@dataclass(frozen=True)
class Member:
    """The authenticated account (`C.AccountInfo` fields) and its mounts, by key."""

    acct: Any
    mounts: list[Mount] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:  # account_id, email, namespace_id, …
        return getattr(self.acct, name)

    def mount_at(self, key: str) -> Mount | None:
        for m in self.mounts:
            if m.key == key:
                return m
        return None

    def mount_of_ns(self, ns: int) -> Mount | None:
        for m in self.mounts:
            if m.ns == ns:
                return m
        return None

    def readable(self) -> list[int]:
        return [self.acct.namespace_id] + [m.ns for m in self.mounts]


async def with_mounts(mc: Any, acct: Any) -> Member:
    if isinstance(acct, Member):
        return acct
    rows = await mc.query("mounts", acct.account_id)
    return Member(acct, [Mount(*r) for r in rows])


@dataclass(frozen=True)
class Target:
    ns: int
    path: str  # inside `ns`: "" (root), "/…", "id:…", "rev:…"
    mount: Mount | None = None
    at_mount_point: bool = False

    @property
    def read_only(self) -> bool:
        return self.mount is not None and self.mount.access == "viewer"

    def show(self, m: Any) -> Any:
        """A result of the namespace's queries with its paths in the account's tree."""
        if self.mount is None or m is None or isinstance(m, C.MetaError):
            return m
        return rebase(m, self.mount)

    def json(self, who: Member, m: Any, tagged: bool) -> dict:
        return meta_json(who, self.show(m), tagged, self.mount)


def rebase(m: Any, mount: Mount) -> Any:
    if not hasattr(m, "path_display"):
        return m
    display = mount.display + m.path_display
    return msgspec.structs.replace(m, path_display=display, path_lower=display.lower())


def meta_json(who: Member, m: Any, tagged: bool, mount: Mount | None) -> dict:
    """Dropbox JSON of `m` (already in the account's tree) with its sharing_info."""
    d = wire.metadata_json(m, tagged)
    kind = m.kind
    if kind == "deleted":
        return d
    if mount is not None:
        info: dict = {"read_only": mount.access == "viewer"}
        info["parent_shared_folder_id"] = str(mount.ns)
        if kind == "folder":
            info.update(traverse_only=False, no_access=False)
        d["parent_shared_folder_id"] = str(mount.ns)
        d["sharing_info"] = info
        return d
    if kind == "folder":
        at = who.mount_at(P.make_key(m.path_display)) if m.path_display else None
        if at is not None:
            d["shared_folder_id"] = str(at.ns)
            d["sharing_info"] = {
                "read_only": at.access == "viewer",
                "shared_folder_id": str(at.ns),
                "traverse_only": False,
                "no_access": False,
            }
    return d


def target(
    who: Member, path: str, prefix: list[str], write: bool = False, deny: list[str] | None = None
) -> Target:
    """Where `path` lives for `who` (see the module docstring); `id:`/`rev:` are left to
    `locate`. Raises `ApiError(prefix + [malformed_path | not_found])`, or
    `ApiError((deny or prefix) + ["no_write_permission"])` for a viewer's write."""
    try:
        ref = P.parse_ref(path, allow_root=True, allow_rev=True)
        why = P.depth_problem(ref.path) if write and ref.path is not None else None
    except P.MalformedPath as e:
        why = str(e)
    if why is not None:
        raise ApiError(prefix + ["malformed_path"])
    home = who.namespace_id
    if ref.kind != "path":
        return Target(home, path)  # `locate` finds its namespace
    assert ref.path is not None
    if ref.ns is not None and ref.ns != home:
        m = who.mount_of_ns(ref.ns)
        if m is None:
            raise ApiError(prefix + ["not_found"])
        t = Target(m.ns, ref.path.display, m)
    else:
        m = mount_of(who.mounts, ref.path.key)
        if m is None:
            t = Target(home, ref.path.display)
        else:
            t = Target(m.ns, inner(m, ref.path).display, m, m.key == ref.path.key)
    # The mount point itself is a folder of the home namespace (moving or deleting it moves
    # or unmounts the mount): a viewer may do that; everything under it is read-only.
    if write and t.read_only and not t.at_mount_point:
        raise ApiError((deny or prefix) + ["no_write_permission"])
    return t


async def locate(
    mc: Any,
    who: Member,
    t: Target,
    prefix: list[str],
    write: bool = False,
    deny: list[str] | None = None,
) -> Target:
    """`t` with an `id:`/`rev:` path placed in the readable namespace that holds it."""
    if not (t.path.startswith("id:") or t.path.startswith("rev:")):
        return t
    ns = await mc.query("locate", who.readable(), t.path)
    if ns is None:
        raise ApiError(prefix + ["not_found"])
    m = who.mount_of_ns(ns) if ns != who.namespace_id else None
    out = Target(ns, t.path, m)
    if write and out.read_only:
        raise ApiError((deny or prefix) + ["no_write_permission"])
    return out


async def resolve(
    mc: Any,
    who: Member,
    path: str,
    prefix: list[str],
    write: bool = False,
    deny: list[str] | None = None,
) -> Target:
    return await locate(mc, who, target(who, path, prefix, write, deny), prefix, write, deny)


async def resolve_write(
    mc: Any,
    who: Member,
    path: str,
    prefix: list[str],
    write: bool = True,
    deny: list[str] | None = None,
) -> Target:
    """`resolve`, then an `id:` turned into the item's path inside its namespace (what the
    write commands take, and what the mount point checks need)."""
    t = await resolve(mc, who, path, prefix, write, deny)
    if t.path.startswith("id:"):
        m = await mc.query("resolve", t.ns, t.path)
        if isinstance(m, C.MetaError):
            raise ApiError(prefix + ["not_found"])
        if t.mount is None:  # the home namespace: the item may be a mount point
            return target(who, m.path_display, prefix, write, deny)
        return Target(t.ns, m.path_display, t.mount)
    return t


def mounts_under(who: Member, t: Target) -> list[Mount]:
    """The mount points at or below a home-namespace path (none inside a shared folder)."""
    if t.mount is not None or t.path.startswith(("id:", "rev:")):
        return []
    key = P.make_key(t.path)
    at = who.mount_at(key)
    return ([at] if at is not None else []) + mounts_below(who.mounts, key)


# -- cursors that cover mounted shared folders -------------------------------------------------
#
# A recursive cursor on a folder of the home namespace carries, besides the home namespace's
# state, one `[ns, mount key, position]` per shared folder mounted below that folder: its
# signed form is `[account, home ns, CursorState, [[ns, key, pos], ...]]` (a 3-element cursor,
# as made before shared folders, covers no mount yet). `continue` sends the home namespace's
# changes first, then each mount's journal after its position, rebased under the mount point.
# A mount that appears (mounted, or moved: its key changed) starts at position 0, so its whole
# content arrives, under its path; one that disappears is dropped from the cursor (the home
# journal already reports its mount point deleted, and the folder with it). So the cursor stays
# valid across mount and unmount, and `has_more` holds while any mount has more to send.

MountPos = list  # [ns, key, position]


def covered(who: Member, ns: int, state: Any) -> list[Mount]:
    """The mounts a cursor on `ns` with `state` covers: below its folder, if recursive in
    the home namespace; none otherwise."""
    if ns != who.namespace_id or not state.recursive:
        return []
    return mounts_below(who.mounts, state.path_key)


def mounts_page(
    store: Any, who: Member, ns: int, state: Any, positions: list[MountPos], limit: int
) -> tuple[list[tuple[Mount, Any]], list[MountPos], bool]:
    """(entries with their mount, the new positions, has_more) of the mounts a cursor covers,
    read from `store` (one consistent read: call it inside `MetaService.read`)."""
    old = {int(p[0]): (str(p[1]), int(p[2])) for p in positions if len(p) == 3}
    out: list[tuple[Mount, Any]] = []
    new: list[MountPos] = []
    more = False
    for m in covered(who, ns, state):
        key, pos = old.get(m.ns, (m.key, 0))
        if key != m.key:
            pos = 0  # moved: everything again, under its new path
        budget = limit - len(out)
        if budget <= 0:
            new.append([m.ns, m.key, pos])
            more = more or store.journal_position(m.ns) > pos
            continue
        st = C.CursorState("", True, state.include_deleted, pos, None)
        page = store.list_folder_continue(m.ns, st, budget)
        if isinstance(page, C.MetaError):  # gone since (unshared): nothing more to send
            continue
        out.extend((m, e) for e in page.entries)
        new.append([m.ns, m.key, page.cursor_state.position])
        more = more or page.has_more
    return out, new, more


def latest_positions(store: Any, who: Member, ns: int, state: Any) -> list[MountPos]:
    return [[m.ns, m.key, store.journal_position(m.ns)] for m in covered(who, ns, state)]


def start_positions(store: Any, who: Member, ns: int, state: Any) -> tuple[list[MountPos], bool]:
    """The positions of a new listing (every mount from 0) and whether any has content."""
    ms = covered(who, ns, state)
    return [[m.ns, m.key, 0] for m in ms], any(store.journal_position(m.ns) for m in ms)
