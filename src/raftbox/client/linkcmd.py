"""The shared link commands: `raftbox link PATH [--expires D] [--password] [--no-download]`,
`raftbox links`, `raftbox unlink URL` (with the credentials `raftbox login` saved).

`link` makes sure PATH has a shared link with the settings given and prints its URL (one line):
a new link, or the existing one (a path has at most one link per owner, `raftbox.meta.links`),
changed to the settings asked for when some were given. `--expires` takes a duration (`90s`,
`30m`, `12h`, `7d`, `2w`) or a UTC date (`2027-01-31`, `2027-01-31T12:00:00Z`); `--password`
reads the password from stdin when it is not a terminal (its first line), else prompts twice.
`--public` makes a password link public again; `--no-expiry` removes an expiry.

`links` prints one line per live link: URL, path, then `password`, `expires <date>`,
`no-download` as they apply. `unlink URL` revokes the link: from then on the URL gives 404 on
every member. Errors are one line on stderr and exit status 1, as for the file commands.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import re
import sys
from typing import Any

from .api import Api, ApiError

COMMANDS = ("link", "links", "unlink")
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TS = "%Y-%m-%dT%H:%M:%SZ"


def add_parsers(sub: Any, command: Any) -> None:
    p = command(sub, "link", "share a file or folder by a link (prints its URL)")
    p.add_argument("path", help="a remote path")
    p.add_argument("--expires", help="a duration (90s, 30m, 12h, 7d, 2w) or a UTC date")
    p.add_argument("--no-expiry", action="store_true", help="remove the link's expiry")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", action="store_true", help="ask for a password (stdin/prompt)")
    g.add_argument("--public", action="store_true", help="no password")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--no-download", action="store_true", help="show the page, refuse downloads")
    d.add_argument("--download", action="store_true", help="allow downloads again")
    command(sub, "links", "list your shared links")
    p = command(sub, "unlink", "revoke a shared link")
    p.add_argument("url")


def expires_at(text: str, now: dt.datetime) -> str:
    """The `expires` timestamp of a duration or date (ValueError if it is neither)."""
    m = _DURATION.fullmatch(text.strip())
    if m:
        when = now + dt.timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
    else:
        for fmt in (TS, "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
            try:
                when = dt.datetime.strptime(text.strip(), fmt).replace(tzinfo=dt.UTC)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"--expires: {text!r} is neither a duration (7d) nor a date")
    if when <= now:
        raise ValueError(f"--expires: {when.strftime(TS)} is in the past")
    return when.strftime(TS)


def _read_password() -> str:
    if not sys.stdin.isatty():
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("link password: ")
        if getpass.getpass("again: ") != pw:
            raise ValueError("the passwords differ")
    if not pw:
        raise ValueError("empty password")
    return pw


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if args.expires:
        s["expires"] = expires_at(args.expires, dt.datetime.now(dt.UTC))
    if args.password:
        s["requested_visibility"] = "password"
        s["link_password"] = _read_password()
    elif args.public:
        s["requested_visibility"] = "public"
    if args.no_download:
        s["allow_download"] = False
    elif args.download:
        s["allow_download"] = True
    return s


def _remote(path: str) -> str:
    if path.startswith(("id:", "ns:")):
        return path
    return "/" + path.strip("/")


def _describe(link: dict[str, Any]) -> str:
    parts = [link.get("url", ""), link.get("path_lower", link.get("name", ""))]
    perms = link.get("link_permissions", {})
    if perms.get("require_password"):
        parts.append("password")
    if link.get("expires"):
        parts.append(f"expires {link['expires']}")
    if perms.get("allow_download") is False:
        parts.append("no-download")
    return "  ".join(parts)


def run(args: argparse.Namespace, api: Api) -> int:
    if args.command == "links":
        return _links(api)
    if args.command == "unlink":
        api.rpc("sharing/revoke_shared_link", {"url": args.url})
        print(f"revoked {args.url}")
        return 0
    return _link(api, args)


def _link(api: Api, args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ValueError as e:
        print(f"raftbox: link: {e}", file=sys.stderr)
        return 1
    path = _remote(args.path)
    arg: dict[str, Any] = {"path": path}
    if settings:
        arg["settings"] = settings
    try:
        link = api.rpc("sharing/create_shared_link_with_settings", arg)
    except ApiError as e:
        if not e.is_tag("shared_link_already_exists"):
            raise
        found = api.rpc("sharing/list_shared_links", {"path": path, "direct_only": True})
        if not found.get("links"):
            raise
        link = found["links"][0]
        if settings or args.no_expiry:
            link = api.rpc(
                "sharing/modify_shared_link_settings",
                {"url": link["url"], "settings": settings, "remove_expiration": args.no_expiry},
            )
    else:
        if args.no_expiry and link.get("expires"):
            link = api.rpc(
                "sharing/modify_shared_link_settings",
                {"url": link["url"], "settings": {}, "remove_expiration": True},
            )
    print(_describe(link))
    return 0


def _links(api: Api) -> int:
    page = api.rpc("sharing/list_shared_links", {})
    while True:
        for link in page.get("links", []):
            print(_describe(link))
        if not page.get("has_more"):
            return 0
        page = api.rpc("sharing/list_shared_links", {"cursor": page["cursor"]})
