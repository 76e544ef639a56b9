"""`raftbox user list|disable|enable|remove` and `raftbox token revoke`: thin clients of the
admin routes (`raftbox.api.accounts`) of a running server, found as `raftbox user add` finds it
(`--data DIR` of a local server, or `--server URL --admin-token T [--ca F]`).

`raftbox token revoke` revokes one token through Dropbox's own `auth/token/revoke`, which needs
no admin token: the token given by `--token` (on the server of `--server`/`--data`, else of the
client's configuration), or, with no `--token`, the one `raftbox login` saved. With
`--email E --all` it revokes every token of that account instead (admin).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from raftbox.server import _admin_call, _url_from_data

TIMEOUT_S = 60.0


def _admin(route: str, body: Any, args: Any) -> dict | int:
    return _admin_call(route, body, args.data, args.server, args.admin_token, args.ca, TIMEOUT_S)


def user_list(args: Any) -> int:
    out = _admin("raftbox/admin/list_accounts", None, args)
    if isinstance(out, int):
        return out
    accounts = out["accounts"]
    if args.json:
        print(json.dumps(accounts, indent=2))
        return 0
    rows = [("EMAIL", "ACCOUNT ID", "NAME", "STATE", "TOKENS")]
    for a in accounts:
        state = "disabled" if a["disabled"] else "active"
        rows.append((a["email"], a["account_id"], a["display_name"], state, str(a["tokens"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return 0


def user_change(args: Any) -> int:
    """disable / enable / remove EMAIL."""
    route = {
        "disable": "raftbox/admin/disable_account",
        "enable": "raftbox/admin/enable_account",
        "remove": "raftbox/admin/remove_account",
    }[args.user_command]
    out = _admin(route, {"email": args.email}, args)
    if isinstance(out, int):
        return out
    done = {"disable": "disabled", "enable": "enabled", "remove": "removed (with its files)"}
    print(f"account {out['account_id']} ({out['email']}) {done[args.user_command]}")
    return 0


def token_revoke(args: Any) -> int:
    if args.all or args.email:
        if not (args.all and args.email):
            print("error: revoke every token of an account with --email E --all", file=sys.stderr)
            return 2
        if args.token:
            print("error: give --token, or --email E --all, not both", file=sys.stderr)
            return 2
        out = _admin("raftbox/admin/revoke_tokens", {"email": args.email}, args)
        if isinstance(out, int):
            return out
        print(f"revoked {out['revoked']} token(s) of {args.email}")
        return 0
    return _revoke_one(args)


def _revoke_one(args: Any) -> int:
    token, url, ca = args.token, args.server, args.ca
    saved = not token
    if args.data:
        url = _url_from_data(args.data)
        ca = ca or os.path.join(args.data, "ca.pem")
    if not token or not url:
        from raftbox.client.config import ConfigError, load

        try:
            cfg = load(args.config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        token = token or cfg.token
        url = url or cfg.server
        ca = ca or cfg.ca
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    req = urllib.request.Request(
        url.rstrip("/") + "/2/auth/token/revoke",
        data=b"null",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=TIMEOUT_S) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        if e.code == 401:
            print(f"error: the token is not valid (already revoked?): {body}", file=sys.stderr)
        else:
            print(f"error: {e.code} {body}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot reach {url}: {e}", file=sys.stderr)
        return 1
    print("token revoked" + (" (log in again with a new token: `raftbox login`)" if saved else ""))
    return 0
