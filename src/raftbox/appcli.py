"""`raftbox app add|list|remove`: the operator's OAuth2 apps (issue 15; `raftbox.api.oauth`).

Thin clients of the admin routes `raftbox/admin/add_app`, `list_apps`, `remove_app` of a
running server, found like `raftbox user add` finds it (`--data DIR`, or `--server URL
--admin-token T [--ca F]`; `raftbox.admincli.admin_call`). Exit status: 0 done, 1 the server
refused or could not be reached (the reason on stderr), 2 bad usage.

`raftbox app add NAME --redirect-uri URI [--redirect-uri URI ...] [--scope S ...]` prints the
app key and, once, its secret (the server keeps only its hash): the last two lines are
`app_key KEY` and `app_secret SECRET`, for scripts. No `--redirect-uri`: the app can only use
the no-redirect flow (the user copies the code). No `--scope`: every scope raftbox knows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from raftbox import admincli


def add_parser(sub: Any, server_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    ap = sub.add_parser("app", help="manage OAuth2 apps (third-party clients)")
    asub = ap.add_subparsers(dest="app_command", required=True)
    add = asub.add_parser("add", help="register an app; prints its app key and secret")
    add.add_argument("name", help="the name users see on the consent page")
    add.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        help="a redirect URI the app may use (exact match; repeat for several)",
    )
    add.add_argument(
        "--scope",
        action="append",
        default=[],
        help="a scope the app may ask for (repeat; default: all, e.g. files.content.read)",
    )
    lst = asub.add_parser("list", help="list the apps (key, name, redirect URIs, scopes)")
    lst.add_argument("--json", action="store_true", help="as a JSON list")
    rm = asub.add_parser("remove", help="remove an app and revoke every token it holds")
    rm.add_argument("app_key")
    for p in (add, lst, rm):
        server_flags(p)  # --data, or --server/--admin-token/--ca


def _call(route: str, body: Any, args: Any) -> dict | int:
    return admincli.admin_call(
        route, body, args.data, args.server, args.admin_token, args.ca, admincli.TIMEOUT_S
    )


def run(args: Any) -> int:
    if args.app_command == "add":
        body = {"name": args.name, "redirect_uris": args.redirect_uri, "scopes": args.scope}
        out = _call("raftbox/admin/add_app", body, args)
        if isinstance(out, int):
            return out
        print(f"app {out['name']!r}: redirect URIs {out['redirect_uris'] or '(none)'}")
        print(f"scopes: {' '.join(out['scopes'])}")
        print("the secret is shown only now; keep it safe")
        print(f"app_key {out['app_key']}")
        print(f"app_secret {out['app_secret']}")
        return 0
    if args.app_command == "list":
        out = _call("raftbox/admin/list_apps", None, args)
        if isinstance(out, int):
            return out
        if args.json:
            print(json.dumps(out["apps"], indent=2))
            return 0
        rows = [("APP KEY", "NAME", "GRANTS", "REDIRECT URIS", "SCOPES")]
        for a in out["apps"]:
            rows.append(
                (a["app_key"], a["name"], str(a["grants"]), " ".join(a["redirect_uris"]) or "-",
                 " ".join(a["scopes"]))
            )  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
        return 0
    out = _call("raftbox/admin/remove_app", {"app_key": args.app_key}, args)
    if isinstance(out, int):
        return out
    print(f"app {out['app_key']} ({out['name']}) removed; its tokens no longer work")
    return 0
