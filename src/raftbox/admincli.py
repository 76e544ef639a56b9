"""The admin commands of the command line: thin HTTP clients of a running server's admin routes
(`raftbox.api.accounts`, `raftbox/admin/gc`).

`raftbox user add|passwd|list|disable|enable|remove|quota`, `raftbox admin gc` and
`raftbox token revoke --email E --all` POST an admin route of a running server, found by
`--data DIR` (a local server's data directory: its `url`, `admin.token` and `ca.pem`) or by
`--server URL --admin-token T [--ca F]`. Each prints what happened and returns the process's exit status:
0 done, 1 the server refused or could not be reached (the reason on stderr), 2 bad usage.

`raftbox token revoke` revokes one token through Dropbox's own `auth/token/revoke`, which needs
no admin token: the token given by `--token` (on the server of `--server`/`--data`, else of the
client's configuration), or, with no `--token`, the one `raftbox login` saved. With
`--email E --all` it revokes every token of that account instead (admin).

Web passwords (issue 14): `user add EMAIL --password-stdin [--admin]` and `user passwd EMAIL
--password-stdin` read the password from stdin's first line, check its length here, and send it
over TLS to `raftbox/admin/set_password`, where the member hashes it (argon2) before proposing.

The HTTP client is `requests` (the one the project's other blocking callers use); a request's
body is always JSON, `null` when the route takes no argument.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import requests

TIMEOUT_S = 60.0
GC_TIMEOUT_S = 3600.0  # a run lists the whole store


def admin_call(
    route: str,
    body: Any,
    data: str | None,
    server: str | None,
    admin_token: str | None,
    ca: str | None,
    timeout_s: float,
) -> dict | int:
    """POST an admin route of a running server (found from a local data dir, or by URL with an
    admin token); the decoded answer, or an exit status after printing the error."""
    if data:
        url = url_from_data(data)
        if not admin_token:
            with open(os.path.join(data, "admin.token")) as f:
                admin_token = f.read().strip()
        ca = ca or _own_ca(data)
    else:
        url = server
    if not url or not admin_token:
        print("error: give --data DIR, or --server URL and --admin-token", file=sys.stderr)
        return 2
    r = _post(url, route, admin_token, body, ca, timeout_s)
    if isinstance(r, int):
        return r
    if r.status_code >= 400:
        print(f"error: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    return r.json()


def _post(
    url: str, route: str, token: str, body: Any, ca: str | None, timeout_s: float
) -> requests.Response | int:
    """POST `body` as JSON to `url`/2/`route` with a bearer token; 1 (printed) if unreachable."""
    try:
        return requests.post(
            url.rstrip("/") + "/2/" + route,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            verify=ca or True,
            timeout=timeout_s,
        )
    except requests.RequestException as e:
        print(f"error: cannot reach {url}: {e}", file=sys.stderr)
        return 1


def _own_ca(data: str) -> str | None:
    """The CA a local server made in its data directory; None if it has none (it serves a
    certificate given with --tls-cert: trusted through the system's CAs)."""
    path = os.path.join(data, "ca.pem")
    return path if os.path.exists(path) else None


def url_from_data(data: str) -> str:
    """The URL a running server recorded in its data directory."""
    path = os.path.join(data, "url")
    if not os.path.exists(path):
        raise SystemExit(f"error: no running server recorded in {data} (is `raftbox up` running?)")
    with open(path) as f:
        return f.read().strip()


def _admin(route: str, body: Any, args: Any) -> dict | int:
    return admin_call(route, body, args.data, args.server, args.admin_token, args.ca, TIMEOUT_S)


def user_add(email: str, data: str | None, server: str | None, admin_token: str | None,
             ca: str | None, display_name: str = "") -> int:  # fmt: skip
    """Create an account on a running server; print its token on the last line."""
    body = {"email": email, "display_name": display_name}
    out = admin_call("raftbox/admin/create_account", body, data, server, admin_token, ca, 30)
    if isinstance(out, int):
        return out
    print(f"account {out['account_id']} ({out['email']})")
    print(out["token"])
    return 0


def admin_gc(data: str | None, server: str | None, admin_token: str | None, ca: str | None) -> int:
    """Run garbage collection now on a running meta member; print its report (JSON)."""
    out = admin_call("raftbox/admin/gc", None, data, server, admin_token, ca, GC_TIMEOUT_S)
    if isinstance(out, int):
        return out
    print(json.dumps(out, indent=2))
    return 1 if out.get("busy") else 0


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


def user_quota(args: Any) -> int:
    """quota EMAIL SIZE|none: set (or clear) an account's quota; print its usage."""
    from raftbox.meta.quota import parse_quota

    try:
        q = parse_quota(args.size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = _admin("raftbox/admin/set_quota", {"email": args.email, "quota_bytes": q}, args)
    if isinstance(out, int):
        return out
    shown = "none" if out["quota_bytes"] is None else f"{out['quota_bytes']} bytes"
    print(f"account {out['account_id']} ({out['email']}): quota {shown}, {out['used']} bytes used")
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
        url = url_from_data(args.data)
        ca = ca or _own_ca(args.data)
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
    r = _post(url, "auth/token/revoke", token, None, ca, TIMEOUT_S)
    if isinstance(r, int):
        return r
    if r.status_code == 401:
        print(f"error: the token is not valid (already revoked?): {r.text}", file=sys.stderr)
        return 1
    if r.status_code >= 400:
        print(f"error: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    print("token revoked" + (" (log in again with a new token: `raftbox login`)" if saved else ""))
    return 0


def read_password_stdin() -> str | None:
    """The password given on stdin: its first line without the line end (None if empty)."""
    line = sys.stdin.readline().rstrip("\r\n")
    return line or None


def user_password(args: Any) -> int:
    """`user add EMAIL --password-stdin [--admin]` and `user passwd EMAIL --password-stdin`:
    the server hashes the password (argon2) and stores only the hash."""
    if not args.password_stdin:
        print("error: give the password on stdin with --password-stdin", file=sys.stderr)
        return 2
    password = read_password_stdin()
    if password is None:
        print("error: no password on stdin", file=sys.stderr)
        return 2
    from raftbox.web.passwords import password_problem

    why = password_problem(password)
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"email": args.email, "password": password}
    if args.user_command == "add":
        if args.admin:
            body["admin"] = True
        rc = user_add(args.email, args.data, args.server, args.admin_token, args.ca, args.name)
        if rc:
            return rc
    out = _admin("raftbox/admin/set_password", body, args)
    if isinstance(out, int):
        return out
    if args.user_command == "passwd":
        print(f"password of {out['email']} changed (its browser sessions ended)")
    elif out.get("admin"):
        print(f"{out['email']} is an administrator", file=sys.stderr)
    return 0
