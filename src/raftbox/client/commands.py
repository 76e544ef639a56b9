"""The file commands (`raftbox login/ls/put/get/rm/mv/revs/restore`), in the spirit of dbxcli.

`add_parsers(sub)` registers them on the main parser; `run(args)` executes one and returns the
exit status: 0 on success, 1 with one line on stderr (`raftbox: <route>: <error_summary>`) on
any error. Remote paths are Dropbox paths (`/a/b.txt`; `""` or `/` is the root).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any

from . import linkcmd, synccmd
from .api import Api, ApiError
from .config import Config, ConfigError, load, save

COMMANDS = ("login", "ls", "put", "get", "rm", "mv", "revs", "restore", *synccmd.COMMANDS)
COMMANDS += linkcmd.COMMANDS


def add_parsers(sub: Any) -> None:
    """Register the file commands on `sub` (an argparse subparsers object)."""

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return _command(sub, name, help)

    p = cmd("login", "store a server URL and token for the file commands")
    p.add_argument("url", help="https://HOST:PORT")
    p.add_argument("--token", required=True, help="the account's bearer token")
    p.add_argument("--ca", help="a CA file to trust (e.g. DATA/ca.pem of `raftbox up`)")
    p = cmd("ls", "list a remote folder")
    p.add_argument("path", nargs="?", default="")
    p.add_argument("-R", "--recursive", action="store_true")
    p.add_argument("-l", "--long", action="store_true", help="size, modified time, rev")
    p = cmd("put", "upload a local file")
    p.add_argument("local")
    p.add_argument("remote", help="a remote path; ending in / (or a folder): keep the name")
    p = cmd("get", "download a remote file")
    p.add_argument("remote")
    p.add_argument("local", help="a local path; a local folder: keep the name")
    p = cmd("rm", "delete a remote file or folder")
    p.add_argument("path")
    p = cmd("mv", "move or rename a remote file or folder")
    p.add_argument("src")
    p.add_argument("dst")
    p = cmd("revs", "list a remote file's revisions")
    p.add_argument("path")
    p = cmd("restore", "restore a remote file to a revision")
    p.add_argument("path")
    p.add_argument("rev")
    synccmd.add_parsers(sub, _command)
    linkcmd.add_parsers(sub, _command)


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.add_argument("--config", help="config directory (default: $RAFTBOX_CONFIG_DIR, "
                   "else $XDG_CONFIG_HOME/raftbox, else ~/.config/raftbox)")  # fmt: skip
    return p


def _remote(path: str) -> str:
    """A user-typed remote path as the API wants it ("" for the root)."""
    if path in ("", "/"):
        return ""
    if path.startswith(("id:", "rev:", "ns:")):
        return path
    return "/" + path.strip("/") if not path.startswith("/") else path.rstrip("/") or ""


def _fail(msg: str) -> int:
    print(f"raftbox: {msg}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    if args.command in synccmd.COMMANDS:
        return synccmd.run(args)
    try:
        if args.command == "login":
            return _login(args)
        cfg = load(args.config)
        with Api(cfg) as api:
            if args.command in linkcmd.COMMANDS:
                return linkcmd.run(args, api)
            return _COMMANDS[args.command](api, args)
    except (ApiError, ConfigError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))


def _login(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if not url.startswith("https://"):
        return _fail(f"login: {url!r} is not an https:// URL")
    ca = os.path.abspath(args.ca) if args.ca else None
    if ca and not os.path.isfile(ca):
        return _fail(f"login: no CA file at {ca}")
    cfg = Config(server=url, token=args.token, ca=ca)
    with Api(cfg) as api:
        acct = api.rpc("users/get_current_account")
    path = save(cfg, args.config)
    print(f"logged in to {url} as {acct.get('email', '?')} (config: {path})")
    return 0


def _line(e: dict[str, Any], long: bool, root: str) -> str:
    shown = e.get("path_display") or e.get("name", "")
    if root and not long and shown.lower().startswith(root.lower() + "/"):
        shown = shown[len(root) + 1 :]
    elif not long:
        shown = shown.lstrip("/")
    tag = e.get(".tag")
    if tag == "folder":
        shown += "/"
    if not long:
        return shown
    if tag == "file":
        return (
            f"{e.get('size', 0):>12}  {e.get('server_modified', '')}  {e.get('rev', '')}  {shown}"
        )
    return f"{'-':>12}  {'':20}  {'':16}  {shown}"


def _ls(api: Api, args: argparse.Namespace) -> int:
    path = _remote(args.path)
    if path:
        meta = api.get_metadata(path)
        if meta.get(".tag") == "file":
            print(_line(meta, args.long, ""))
            return 0
        root = meta.get("path_display", path)
    else:
        root = ""
    entries = sorted(api.list_folder(path, args.recursive), key=lambda e: e["path_lower"])
    for e in entries:
        if e.get(".tag") == "deleted" or (root and e["path_lower"] == root.lower()):
            continue  # a recursive listing includes the folder itself
        print(_line(e, args.long, root))
    return 0


def _put(api: Api, args: argparse.Namespace) -> int:
    local = args.local
    if not os.path.isfile(local):
        return _fail(f"put: {local}: not a regular file")
    remote = _remote(args.remote)
    name = os.path.basename(local)
    if args.remote.endswith("/") or not remote:
        remote = f"{remote}/{name}"
    else:
        with contextlib.suppress(ApiError):
            if api.get_metadata(remote).get(".tag") == "folder":
                remote = f"{remote}/{name}"
    meta = api.upload(local, remote)
    print(f"{meta['path_display']}  {meta['size']} bytes  rev {meta['rev']}")
    return 0


def _get(api: Api, args: argparse.Namespace) -> int:
    remote = _remote(args.remote)
    local = args.local
    if os.path.isdir(local):
        local = os.path.join(local, remote.rsplit("/", 1)[-1])
    directory = os.path.dirname(os.path.abspath(local))
    tmp = os.path.join(directory, f".{os.path.basename(local)}.raftbox-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            meta = api.download(remote, f)
            f.flush()
            os.fsync(f.fileno())
        mtime = _parse_ts(meta.get("client_modified"))
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, local)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    print(f"{local}  {meta.get('size', 0)} bytes  rev {meta.get('rev', '')}")
    return 0


def _parse_ts(s: str | None) -> float | None:
    if not s:
        return None
    import calendar

    try:
        return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _rm(api: Api, args: argparse.Namespace) -> int:
    path = _remote(args.path)
    if not path:
        return _fail("rm: refusing to delete the root")
    meta = api.delete(path)
    print(f"deleted {meta.get('path_display', path)}")
    return 0


def _mv(api: Api, args: argparse.Namespace) -> int:
    src, dst = _remote(args.src), _remote(args.dst)
    if args.dst.endswith("/") or not dst:
        dst = f"{dst}/{src.rsplit('/', 1)[-1]}"
    meta = api.move(src, dst)
    print(f"{src} -> {meta.get('path_display', dst)}")
    return 0


def _revs(api: Api, args: argparse.Namespace) -> int:
    for e in api.list_revisions(_remote(args.path)):
        print(f"{e['rev']}  {e.get('server_modified', '')}  {e.get('size', 0):>12}")
    return 0


def _restore(api: Api, args: argparse.Namespace) -> int:
    meta = api.restore(_remote(args.path), args.rev)
    print(f"restored {meta.get('path_display', args.path)} to rev {args.rev} "
          f"(new rev {meta.get('rev', '')})")  # fmt: skip
    return 0


_COMMANDS = {
    "ls": _ls,
    "put": _put,
    "get": _get,
    "rm": _rm,
    "mv": _mv,
    "revs": _revs,
    "restore": _restore,
}
