"""The `raftbox` command line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys


def _addr(s: str) -> tuple[str, int]:
    from raftbox.raft.kvcli import parse_addr

    return parse_addr(s)


def _peers(s: str) -> dict[int, tuple[str, int]]:
    from raftbox.raft.kvcli import parse_peers

    return parse_peers(s)


def _longpoll_test_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--longpoll-min-timeout-s",
        type=float,
        default=30.0,
        help="TESTS ONLY: accept long-poll timeouts down to this (the API minimum is 30)",
    )
    p.add_argument(
        "--longpoll-wait-cap-s",
        type=float,
        default=None,
        help="TESTS ONLY: end every long-poll wait after this many seconds (the SDK cannot "
        "ask for less than 30)",
    )


def _oauth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--oauth-access-ttl-s",
        type=float,
        default=4 * 3600.0,
        help="lifetime of an OAuth2 app's access token (default 4 hours, as Dropbox)",
    )


def _block_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunking",
        choices=("cdc", "fixed"),
        default="cdc",
        help="the cluster's chunking: content-defined (FastCDC, ~1 MiB blocks, 256 KiB..4 MiB; "
        "the default) or fixed 4 MiB. Blocks made under one setting stay valid under the other "
        "(a block is its bytes and its id); only dedup across the change suffers.",
    )
    p.add_argument(
        "--blocks", default="", help="block store URL: file://DIR (default DATA/blocks), "
        "s3://BUCKET[/PREFIX]?endpoint=URL&region=NAME&addressing=path (credentials from the "
        "AWS environment/profile, never the URL)",
    )  # fmt: skip
    p.add_argument(
        "--compress-level", type=int, default=3, help="zstd level per block, 1..22; 0 disables"
    )
    p.add_argument(
        "--cache",
        default="lru://",
        help="cache of immutable block facts: lru://[?entries=N] (in-process, the default) or "
        "memcached://HOST:PORT (shared by a fleet); none disables it",
    )


def _gc_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gc-interval-s", type=float, default=3600.0, help="the meta leader's GC runs (0: never)"
    )
    p.add_argument(
        "--gc-grace-s",
        type=float,
        default=6 * 3600.0,
        help="delete a block only after it was unreferenced this long (> the cache TTL)",
    )
    p.add_argument(
        "--gc-upload-keep-s",
        type=float,
        default=7 * 24 * 3600.0,
        help="keep uploaded, uncommitted blocks this long (blocks/put; sessions live 7 days)",
    )
    p.add_argument("--cache-present-ttl-s", type=int, default=3600, help=argparse.SUPPRESS)


def _quota_flags(p: argparse.ArgumentParser) -> None:
    from raftbox.meta.quota import parse_quota

    def size(s: str) -> int | None:
        try:
            return parse_quota(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    p.add_argument(
        "--default-quota",
        type=size,
        default=None,
        help="quota of the accounts this process creates: SIZE (500M, 10G, 2TB) or none "
        "(the default; `raftbox user quota` changes one account's)",
    )


def _access_log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--access-log",
        choices=("plain", "json", "off"),
        default="plain",
        help="one line per request (time, route, status, bytes, ms, account id; never a token)",
    )
    p.add_argument("--access-log-file", help="append the access log here (default: stderr)")
    p.add_argument("--metrics-listen", type=_addr, help="also serve /metrics here, plain HTTP, "
                   "no authentication (default: off; the public port's /metrics needs the admin token)")  # fmt: skip


def _link_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(  # shared links (raftbox.api.links)
        "--public-url",
        help="https://HOST[:PORT] that shared link URLs start with (default: the Host the "
        "request that made the link came in on; set it behind a proxy that rewrites Host)",
    )


def _server_flags(p: argparse.ArgumentParser) -> None:
    """How an admin command finds a running server (as `raftbox user add`)."""
    p.add_argument("--data", help="a local data dir (uses the admin token found there)")
    p.add_argument("--server", help="URL of a running server")
    p.add_argument("--admin-token", default=os.environ.get("RAFTBOX_ADMIN_TOKEN"))
    p.add_argument("--ca", help="CA file to trust for --server")


def _http_limit_flags(p: argparse.ArgumentParser) -> None:
    """The public port's limits (raftbox.httpserve.HttpLimits); defaults suit a public host."""
    from raftbox.httpserve import HttpLimits

    d = HttpLimits()
    g = p.add_argument_group("limits of the public port")
    for name, kind, what in (
        ("header_timeout_s", float, "a request head must be complete this long after it began"),
        ("body_idle_timeout_s", float, "close an upload that sends no byte for this long"),
        ("keepalive_timeout_s", float, "close a connection idle this long between requests"),
        ("tls_handshake_timeout_s", float, "drop a TLS handshake not done by then"),
        ("send_stall_timeout_s", float, "close a client that takes no byte of an answer"),
        ("request_line_max_bytes", int, "longest request line (longer: 400)"),
        ("header_field_max_bytes", int, "longest header, Dropbox-API-Arg included (longer: 400)"),
        ("header_total_max_bytes", int, "largest request head (larger: 400)"),
        ("header_count_max", int, "most headers in a request (more: 400)"),
    ):
        flag = "--" + name.replace("_", "-")
        g.add_argument(flag, type=kind, default=getattr(d, name), help=f"{what} (%(default)s)")
    g.add_argument(
        "--connections-per-address-max",
        type=int,
        default=None,
        help=f"open connections per client address (IPv6: per /64); 0: no cap, for a process "
        f"behind a proxy or balancer, whose address every client shares (default "
        f"{d.connections_per_address_max}, or 0 with --plain-http)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections per process (default 1,000,000 notify-only, else 100,000)",
    )


def _http_limits(args: argparse.Namespace):
    from raftbox.httpserve import HttpLimits

    skip = ("connections_max", "connections_per_address_max")
    kw = {n: getattr(args, n) for n in HttpLimits.__dataclass_fields__ if n not in skip}
    if args.connections_per_address_max is not None:
        kw["connections_per_address_max"] = args.connections_per_address_max
    elif getattr(args, "plain_http", False):  # only ever behind a balancer: one address for all
        kw["connections_per_address_max"] = 0
    return HttpLimits(**kw)


def _validate(parser: argparse.ArgumentParser, cfg) -> None:
    """A configuration that cannot work is a usage error (`ServeConfig.validate`)."""
    from raftbox.server import ConfigError

    try:
        cfg.validate()
    except ConfigError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    from raftbox.client import commands as client_commands

    if args_in and args_in[0] in client_commands.COMMANDS:
        # A client command (`raftbox sync`, `ls`, ...) parses its own flags only: building the
        # server's parsers imports the server, aiohttp's web parts and the Raft tools (start-up).
        parser = argparse.ArgumentParser(prog="raftbox", description="a self-hosted Dropbox")
        client_commands.add_parsers(parser.add_subparsers(dest="command", required=True))
        return client_commands.run(parser.parse_args(args_in))
    parser = argparse.ArgumentParser(prog="raftbox", description="a self-hosted Dropbox")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")

    up = sub.add_parser("up", help="start everything in one process (the embedded default)")
    up.add_argument(
        "--data", default="raftbox-data", help="data directory (default ./raftbox-data)"
    )
    up.add_argument("--listen", type=_addr, default=("127.0.0.1", 8443), help="public HOST:PORT")
    _longpoll_test_flags(up)
    _block_flags(up)
    _gc_flags(up)
    _access_log_flags(up)
    _quota_flags(up)
    up.add_argument("--tls-cert", help="the public certificate (PEM; default: a CA made in DATA)")
    up.add_argument("--tls-key", help="its private key (PEM)")
    _http_limit_flags(up)
    _link_flags(up)
    _oauth_flags(up)

    sv = sub.add_parser("serve", help="run one member of a raftbox cluster")
    sv.add_argument(
        "--cluster",
        help="a member bundle DIR/member-N from `raftbox cluster init`: sets the node id, the "
        "peers, mutual TLS on the peer port, the admin token and the public certificate",
    )
    sv.add_argument("--node-id", type=int, help="Raft member id (meta role)")
    sv.add_argument("--data", required=True)
    sv.add_argument("--listen", type=_addr, required=True, help="public HTTPS HOST:PORT")
    sv.add_argument("--peer-listen", type=_addr, help="Raft/RPC HOST:PORT (meta role)")
    sv.add_argument(
        "--peers", type=_peers, help="1=HOST:PORT,2=... advertised (meta role; with --cluster: "
        "overrides the bundle's address of the members named)",
    )  # fmt: skip
    sv.add_argument("--roles", default="meta,block,notify", help="comma list of meta,block,notify")
    sv.add_argument(
        "--meta", default="", help="block or notify root without meta: URL[,URL] of members"
    )
    sv.add_argument("--notify-root", default="", help="notify leaf: URL[,URL] of notify roots")
    sv.add_argument("--ca", help="CA file to trust when calling --meta / --notify-root URLs")
    sv.add_argument(
        "--plain-http",
        action="store_true",
        help="block- or notify-only: serve plain HTTP (only behind a TLS-terminating balancer)",
    )
    _longpoll_test_flags(sv)
    _block_flags(sv)
    _gc_flags(sv)
    _access_log_flags(sv)
    _quota_flags(sv)
    _http_limit_flags(sv)
    _link_flags(sv)
    _oauth_flags(sv)
    sv.add_argument("--tls-cert")
    sv.add_argument("--tls-key")
    sv.add_argument("--admin-token", help="default: $RAFTBOX_ADMIN_TOKEN, else DATA/admin.token")
    sv.add_argument("--tick-ms", type=int, default=50)
    sv.add_argument("--election-ticks", type=int, default=10)
    sv.add_argument("--join", action="store_true", help="join an existing cluster")
    sv.add_argument(  # raftbox.workers
        "--workers", type=int, default=1, help="blockserver or notify leaf: N processes on one "
        "port (SO_REUSEPORT) under a supervisor that restarts a worker that dies (default 1)",
    )  # fmt: skip
    sv.add_argument("--worker", help=argparse.SUPPRESS)  # I/N, given by the supervisor

    ad = sub.add_parser("admin", help="cluster administration")
    asub = ad.add_subparsers(dest="admin_command", required=True)
    gc = asub.add_parser("gc", help="collect garbage blocks now (on the member asked)")
    gc.add_argument("--data", help="the data dir of a running `raftbox up` / member")
    gc.add_argument("--server", help="URL of a running meta member")
    gc.add_argument("--admin-token", default=os.environ.get("RAFTBOX_ADMIN_TOKEN"))
    gc.add_argument("--ca", help="CA file to trust for --server")

    us = sub.add_parser("user", help="manage accounts")
    usub = us.add_subparsers(dest="user_command", required=True)
    ua = usub.add_parser("add", help="create an account; prints its token on the last line")
    ua.add_argument("email")
    ua.add_argument("--name", default="", help="display name")
    ua.add_argument("--data", help="a local data dir (uses the admin token found there)")
    ua.add_argument("--server", help="URL of a running server")
    ua.add_argument("--admin-token", default=os.environ.get("RAFTBOX_ADMIN_TOKEN"))
    ua.add_argument("--ca", help="CA file to trust for --server")
    ua.add_argument("--password-stdin", action="store_true", help="web password: stdin's line")
    ua.add_argument("--admin", action="store_true", help="an administrator (web cluster view)")
    upw = usub.add_parser("passwd", help="set an account's web password (read from stdin)")
    upw.add_argument("email")
    upw.add_argument("--password-stdin", action="store_true", help="required: stdin's line")
    _server_flags(upw)
    ul = usub.add_parser("list", help="list the accounts (email, id, name, state, tokens)")
    ul.add_argument("--json", action="store_true", help="as a JSON list")
    _server_flags(ul)
    for name, what in (
        ("disable", "disable an account: its tokens are refused, its files kept"),
        ("enable", "enable a disabled account again"),
        ("remove", "remove an account, its tokens and its files (the email can be reused)"),
    ):
        uc = usub.add_parser(name, help=what)
        uc.add_argument("email")
        _server_flags(uc)

    uq = usub.add_parser("quota", help="set an account's quota: SIZE (500M, 10G, 2TB) or none")
    uq.add_argument("email")
    uq.add_argument("size")
    _server_flags(uq)

    tk = sub.add_parser("token", help="manage access tokens")
    tsub = tk.add_subparsers(dest="token_command", required=True)
    tr = tsub.add_parser(
        "revoke",
        help="revoke a token: --token T, else the one `raftbox login` saved; "
        "or every token of an account with --email E --all (admin)",
    )
    tr.add_argument("--token", help="the token to revoke")
    tr.add_argument("--email", help="with --all: the account whose tokens to revoke")
    tr.add_argument("--all", action="store_true", help="every token of --email's account")
    tr.add_argument("--config", help="the client's config directory (see `raftbox login`)")
    _server_flags(tr)

    from raftbox import appcli

    appcli.add_parser(sub, _server_flags)  # raftbox app add|list|remove (issue 15)

    cl = sub.add_parser("cluster", help="make the CA and member bundles of a cluster")
    csub = cl.add_subparsers(dest="cluster_command", required=True)
    ci = csub.add_parser("init", help="a cluster CA and one bundle per member in --out")
    ci.add_argument("--members", required=True, help="1=HOST:PORT,2=HOST:PORT,... peer addresses")
    ci.add_argument("--out", required=True, help="a new directory (DIR/ca, DIR/member-N)")
    ci.add_argument("--hosts", default="", help="public names for the server certificates: "
                    "NAME (every member) or ID=NAME, comma separated")  # fmt: skip
    ci.add_argument("--cluster-id", help="default: random")
    cadd = csub.add_parser("add-member", help="a bundle for a new member (start it with --join)")
    cadd.add_argument("--out", required=True, help="the directory `cluster init` made")
    cadd.add_argument("--member", required=True, help="ID=HOST:PORT of the new member")
    cadd.add_argument("--hosts", default="", help="as for init")

    from raftbox.raft import kvcli

    kvcli.add_parser(sub)
    from raftbox.ops import demo

    demo.add_parser(sub)
    from raftbox.client import commands as client_commands

    client_commands.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    if args.command == "raft-kv":
        return kvcli.run(args)
    if args.command == "demo":
        return demo.run(args)
    if args.command == "cluster":
        return _cluster(args)
    if args.command == "version":
        from raftbox import __version__

        print(__version__)
        return 0
    if args.command in ("up", "serve"):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        from raftbox import server

        # The settings `up` and `serve` share: long-poll (tests only), blocks, GC, access log,
        # HTTP limits.
        settings = dict(
            longpoll_min_timeout_s=args.longpoll_min_timeout_s,
            longpoll_wait_cap_s=args.longpoll_wait_cap_s,
            chunking=args.chunking,
            blocks=args.blocks,
            compress_level=args.compress_level,
            cache=args.cache,
            cache_present_ttl_s=args.cache_present_ttl_s,
            gc_interval_s=args.gc_interval_s,
            gc_grace_s=args.gc_grace_s,
            gc_upload_keep_s=args.gc_upload_keep_s,
            access_log=args.access_log,
            access_log_file=args.access_log_file,
            max_connections=args.max_connections,
            default_quota_bytes=args.default_quota,
            public_url=args.public_url,
            metrics_listen=args.metrics_listen,
            oauth_access_ttl_s=args.oauth_access_ttl_s,
        )
        if args.public_url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", args.public_url):
            parser.error(f"--public-url: {args.public_url!r} is not an http(s):// URL")
        try:
            settings["http"] = _http_limits(args)
        except ValueError as e:
            parser.error(str(e))
        if args.command == "up":
            cfg = server.up_config(
                args.data, args.listen, tls_cert=args.tls_cert, tls_key=args.tls_key, **settings
            )
            _validate(parser, cfg)
            server.run(server.up(cfg))
            return 0
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        peer_tls = None
        if args.cluster:
            from raftbox.cluster import BundleError, load_bundle

            try:
                bundle = load_bundle(args.cluster)
            except BundleError as e:
                parser.error(f"--cluster: {e}")
            if args.node_id not in (None, bundle.member_id):
                parser.error(f"--node-id {args.node_id}: the bundle is member {bundle.member_id}")
            args.node_id = bundle.member_id
            args.peers = {**bundle.members, **(args.peers or {})}
            args.peer_listen = args.peer_listen or bundle.members[bundle.member_id]
            args.admin_token = args.admin_token or bundle.admin_token
            if not (args.tls_cert or args.tls_key):
                args.tls_cert, args.tls_key = bundle.server_cert, bundle.server_key
            args.ca = args.ca or bundle.ca_file
            peer_tls = bundle.peer_tls()
        if "meta" in roles and args.node_id is not None and not args.peers:
            # a group of one (it opens no peer port)
            args.peers = {args.node_id: args.peer_listen or ("127.0.0.1", 0)}
        cfg = server.ServeConfig(
            node_id=args.node_id or 0,
            data=args.data,
            listen=args.listen,
            peer_listen=args.peer_listen or ("127.0.0.1", 0),
            peers=args.peers or {},
            peer_tls=peer_tls,
            roles=roles,
            meta_urls=tuple(u for u in args.meta.split(",") if u),
            notify_roots=tuple(u for u in args.notify_root.split(",") if u),
            ca=args.ca,
            plain_http=args.plain_http,
            **settings,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            admin_token=args.admin_token,
            tick_ms=args.tick_ms,
            election_ticks=args.election_ticks,
            join=args.join,
            workers=args.workers,
        )
        if args.worker:
            from raftbox.workers import parse_worker

            try:
                cfg.worker = parse_worker(args.worker)
            except ValueError as e:
                parser.error(str(e))
        _validate(parser, cfg)
        if cfg.workers > 1:
            from raftbox import workers

            argv_ = list(sys.argv[1:] if argv is None else argv)
            return workers.main(cfg, argv_, server.prepare_shared)
        server.run(server.serve(cfg))
        return 0
    if args.command == "app":
        from raftbox import appcli

        return appcli.run(args)
    if args.command in ("admin", "token", "user"):
        from raftbox import admincli

        if args.command == "admin":
            return admincli.admin_gc(args.data, args.server, args.admin_token, args.ca)
        if args.command == "token":
            return admincli.token_revoke(args)
        if args.user_command == "list":
            return admincli.user_list(args)
        if args.user_command == "quota":
            return admincli.user_quota(args)
        if args.user_command == "passwd" or getattr(args, "password_stdin", False):
            return admincli.user_password(args)  # web passwords (issue 14)
        if args.user_command != "add":
            return admincli.user_change(args)
        return admincli.user_add(
            args.email, args.data, args.server, args.admin_token, args.ca, args.name
        )
    return 2


def _cluster(args: argparse.Namespace) -> int:
    from raftbox import cluster

    try:
        if args.cluster_command == "init":
            members = cluster.parse_members(args.members)
            made = cluster.init(args.out, members, args.hosts, args.cluster_id)
            print(f"cluster CA in {os.path.join(args.out, 'ca')} (keep ca.key offline)")
            for path in made:
                print(f"member bundle {path}")
            print("start each member with: raftbox serve --cluster DIR/member-N --data ... "
                  "--listen HOST:PORT")  # fmt: skip
        else:
            (nid, addr), *more = cluster.parse_members(args.member).items()
            if more:
                raise ValueError("--member: one ID=HOST:PORT")
            path = cluster.add_member(args.out, nid, addr, args.hosts)
            print(f"member bundle {path} (start it with: raftbox serve --cluster {path} --join)")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
