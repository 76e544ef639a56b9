"""`raftbox share` and `raftbox shares`: shared folders from the command line.

- `share PATH --with EMAIL [--with EMAIL ...] [--viewer]`: share the folder PATH (made a shared
  folder first if it is not one yet; created if missing) with these people, as editors, or as
  viewers with `--viewer`. An email with no account yet is an invitation that the account made
  with it later finds in `raftbox shares`.
- `shares`: the shared folders the account has mounted (id, access, path, owner) and the
  invitations it has not accepted yet.
- `shares --accept ID`: mount an invitation (it appears as `/<name>` in the account's tree);
  `shares --leave ID [--keep-copy]`: leave a shared folder (with a copy of its files);
  `shares --unshare ID [--keep-copy]`: the owner stops sharing (members keep a copy if asked);
  `shares --members ID`: who is in it.

Each prints one line per result; errors are one line on stderr and exit status 1, as for the
file commands (`client.commands`). They use the same login (`raftbox login`).
"""

from __future__ import annotations

import argparse
from typing import Any

from .api import Api, ApiError

COMMANDS = ("share", "shares")


def add_parsers(sub: Any, common: Any) -> None:
    p = common(sub, "share", "share a folder with other accounts (by email)")
    p.add_argument("path", help="a folder of yours (/Project)")
    p.add_argument(
        "--with", dest="emails", action="append", required=True, metavar="EMAIL",
        help="who to share it with (repeat for several)",
    )  # fmt: skip
    p.add_argument("--viewer", action="store_true", help="read-only (default: editor)")
    p = common(sub, "shares", "list shared folders and invitations; accept, leave, unshare")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--accept", metavar="ID", help="mount an invitation")
    g.add_argument("--leave", metavar="ID", help="leave a shared folder")
    g.add_argument("--unshare", metavar="ID", help="stop sharing a folder you own")
    g.add_argument("--members", metavar="ID", help="list a shared folder's members")
    p.add_argument("--keep-copy", action="store_true", help="with --leave/--unshare")


def _shared_id(api: Api, path: str) -> tuple[str, bool]:
    """(shared folder id of `path`, whether this call shared it)."""
    try:
        r = api.rpc("sharing/share_folder", {"path": path})
        return r["shared_folder_id"], True
    except ApiError as e:  # already shared: its metadata says which
        if not e.is_tag("bad_path/already_shared"):
            raise
    meta = api.get_metadata(path)
    return meta["shared_folder_id"], False


def share(api: Api, args: argparse.Namespace) -> int:
    path = args.path if args.path.startswith("/") else "/" + args.path
    path = path.rstrip("/")
    sfid, new = _shared_id(api, path)
    access = "viewer" if args.viewer else "editor"
    members = [
        {"member": {".tag": "email", "email": e}, "access_level": access} for e in args.emails
    ]
    api.rpc("sharing/add_folder_member", {"shared_folder_id": sfid, "members": members})
    how = "shared" if new else "already shared;"
    print(f"{path} {how} (id {sfid}): {', '.join(args.emails)} as {access}")
    return 0


def _line(f: dict[str, Any]) -> str:
    where = f.get("path_display") or f"({f['name']}, not mounted)"
    owner = ", ".join(f.get("owner_display_names") or [])
    return f"{f['shared_folder_id']:>10}  {f['access_type']['.tag']:<7}  {where}  owner: {owner}"


def _all(api: Api, route: str) -> list[dict[str, Any]]:
    r = api.rpc(route, {})
    out = list(r["entries"])
    while r.get("cursor"):
        r = api.rpc(route + "/continue", {"cursor": r["cursor"]})
        out += r["entries"]
    return out


def shares(api: Api, args: argparse.Namespace) -> int:
    if args.accept:
        f = api.rpc("sharing/mount_folder", {"shared_folder_id": args.accept})
        print(f"mounted {f['name']} at {f.get('path_display', '?')}")
        return 0
    if args.leave:
        arg = {"shared_folder_id": args.leave, "leave_a_copy": args.keep_copy}
        api.rpc("sharing/relinquish_folder_membership", arg)
        print(f"left {args.leave}" + (" (kept a copy)" if args.keep_copy else ""))
        return 0
    if args.unshare:
        arg = {"shared_folder_id": args.unshare, "leave_a_copy": args.keep_copy}
        api.rpc("sharing/unshare_folder", arg)
        print(f"unshared {args.unshare}")
        return 0
    if args.members:
        r = api.rpc("sharing/list_folder_members", {"shared_folder_id": args.members})
        for u in r["users"]:
            print(f"{u['access_type']['.tag']:<7}  {u['user']['email']}")
        for i in r["invitees"]:
            print(f"{i['access_type']['.tag']:<7}  {i['invitee'].get('email', '?')} (invited)")
        return 0
    mounted = _all(api, "sharing/list_folders")
    invited = _all(api, "sharing/list_mountable_folders")
    for f in mounted:
        print(_line(f))
    for f in invited:
        print(_line(f) + "  — accept: raftbox shares --accept " + f["shared_folder_id"])
    if not mounted and not invited:
        print("no shared folders")
    return 0


HANDLERS = {"share": share, "shares": shares}
