"""`raftbox raft-kv ...`: run a raft-kv member, or talk to a running cluster."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys

from .kv import KVServer, KVStateMachine
from .kvclient import KVClient, KVError
from .node import NodeConfig, PeerPortRefused, RaftNode


def parse_addr(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)


def parse_peers(s: str) -> dict[int, tuple[str, int]]:
    peers = {}
    for part in filter(None, s.split(",")):
        nid, sep, addr = part.partition("=")
        if not sep or not nid.isdigit():
            raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT, got {part!r}")
        peers[int(nid)] = parse_addr(addr)
    return peers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("raft-kv", help="the replicated key-value store that exercises Raft")
    kv = p.add_subparsers(dest="kv_command", required=True)

    s = kv.add_parser("serve", help="run one member")
    s.add_argument(
        "--cluster",
        help="a member bundle DIR/member-N from `raftbox cluster init`: the id, the peers and "
        "mutual TLS on the peer port",
    )
    s.add_argument("--id", type=int, help="member id (default: the bundle's)")
    s.add_argument("--data", required=True, help="data directory")
    s.add_argument("--listen", type=parse_addr, required=True, help="client HOST:PORT")
    s.add_argument(
        "--peer-listen", type=parse_addr, help="peer HOST:PORT (default: the bundle's address)"
    )
    s.add_argument(
        "--peers",
        type=parse_peers,
        help="advertised peer addresses: 1=HOST:PORT,2=HOST:PORT,... (with --cluster: "
        "overrides the bundle's address of the members named)",
    )
    s.add_argument(
        "--insecure-plaintext-peers",
        action="store_true",
        help="BENCHMARKS ONLY: a plain-TCP peer port that trusts anyone who connects, "
        "instead of --cluster; refused unless every peer address is a loopback address",
    )
    s.add_argument("--join", action="store_true", help="join an existing cluster (as a learner)")
    s.add_argument("--tick-ms", type=int, default=50)
    s.add_argument("--election-ticks", type=int, default=10)
    s.add_argument("--snapshot-entries", type=int, default=20_000)
    s.add_argument("--metrics-listen", type=parse_addr, help="serve Prometheus /metrics here "
                   "(plain HTTP, no authentication; default: off)")  # fmt: skip

    for name, hlp in (
        ("put", "put KEY VALUE"),
        ("get", "get KEY"),
        ("del", "delete KEY"),
        ("cas", "compare-and-set KEY EXPECTED VALUE"),
        ("status", "member status"),
        ("member", "member add|remove|transfer|learner ID [HOST:PORT]"),
    ):
        c = kv.add_parser(name, help=hlp)
        c.add_argument("--endpoints", required=True, help="client HOST:PORT,HOST:PORT,...")
        c.add_argument("--timeout", type=float, default=10.0)
        c.add_argument("args", nargs="*")
        if name == "get":
            c.add_argument(
                "--stale", action="store_true", help="serve from any member, maybe stale"
            )


def run(args: argparse.Namespace) -> int:
    if args.kv_command == "serve":
        return _serve(args)
    return asyncio.run(_client(args))


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    peer_tls = None
    if args.cluster:
        from ..cluster import BundleError, load_bundle

        try:
            bundle = load_bundle(args.cluster)
        except BundleError as e:
            raise SystemExit(f"error: --cluster: {e}") from None
        if args.id not in (None, bundle.member_id):
            raise SystemExit(f"error: --id {args.id}: the bundle is member {bundle.member_id}")
        args.id = bundle.member_id
        args.peers = {**bundle.members, **(args.peers or {})}
        args.peer_listen = args.peer_listen or bundle.members[bundle.member_id]
        peer_tls = bundle.peer_tls()
    elif not args.insecure_plaintext_peers:
        raise SystemExit(
            "error: a raft-kv member needs mutual TLS on its peer port: make bundles with "
            "`raftbox cluster init --members 1=HOST:PORT,... --out DIR` and pass "
            "--cluster DIR/member-N"
        )
    if args.id is None or args.peer_listen is None or not args.peers:
        raise SystemExit("error: give --cluster, or --id, --peer-listen and --peers")
    cfg = NodeConfig(
        node_id=args.id,
        data_dir=args.data,
        peer_listen=args.peer_listen,
        peers=args.peers,
        peer_tls=peer_tls,
        insecure_plaintext_peers=args.insecure_plaintext_peers and peer_tls is None,
        join=args.join,
        tick_s=args.tick_ms / 1000,
        election_ticks=args.election_ticks,
        snapshot_entries=args.snapshot_entries,
    )

    async def main() -> None:
        sm = KVStateMachine()
        stop = asyncio.Event()
        failed: list[BaseException] = []
        try:
            node = RaftNode(cfg, sm, on_fatal=lambda e: (failed.append(e), stop.set()))
        except PeerPortRefused as e:
            raise SystemExit(f"error: {e}") from None
        await node.start()
        metrics = None
        if args.metrics_listen is not None:
            from prometheus_client import CollectorRegistry

            from .metrics import MetricsListener

            registry = CollectorRegistry()
            node.attach_metrics(registry)
            metrics = MetricsListener(registry, args.metrics_listen)
            print(f"raft-kv member {args.id} metrics at {await metrics.start()}", flush=True)
        server = KVServer(node, sm, args.listen)
        addr = await server.start()
        # What start-up allocated (modules, the recovered log and state) lives as long as the
        # process: out of the cycle collector's sight, a full collection walks only what came
        # after (those walks were 100-250 ms pauses of every request under load, measured).
        gc.freeze()
        print(f"raft-kv member {args.id} serving clients on {addr[0]}:{addr[1]}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if metrics is not None:
            await metrics.stop()
        await server.close()
        await node.stop()
        if failed:
            raise SystemExit(70)  # the node broke: say so with the exit status

    _run_loop(main())
    return 0


def _run_loop(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


async def _client(args: argparse.Namespace) -> int:
    endpoints = [parse_addr(e) for e in args.endpoints.split(",") if e]
    a = args.args
    async with KVClient(endpoints, timeout_s=args.timeout) as c:
        try:
            cmd = args.kv_command
            if cmd == "put":
                out = await c.put(a[0].encode(), a[1].encode())
            elif cmd == "get":
                v = await c.get(a[0].encode(), stale=args.stale)
                out = None if v is None else v.decode(errors="replace")
            elif cmd == "del":
                out = await c.delete(a[0].encode())
            elif cmd == "cas":
                exp = None if a[1] == "-" else a[1].encode()
                ok, cur = await c.cas(a[0].encode(), exp, a[2].encode())
                out = {"ok": ok, "value": None if cur is None else cur.decode(errors="replace")}
            elif cmd == "status":
                out = await c.status()
            else:
                out = await c.member(a[0], int(a[1]), a[2] if len(a) > 2 else "")
        except (KVError, IndexError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(json.dumps(out))
    return 0
