"""`raftbox raft-kv ...`: run a raft-kv member, or talk to a running cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .kv import KVServer, KVStateMachine
from .kvclient import KVClient, KVError
from .node import NodeConfig, RaftNode


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
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--data", required=True, help="data directory")
    s.add_argument("--listen", type=parse_addr, required=True, help="client HOST:PORT")
    s.add_argument("--peer-listen", type=parse_addr, required=True, help="peer HOST:PORT")
    s.add_argument(
        "--peers",
        type=parse_peers,
        required=True,
        help="advertised peer addresses: 1=HOST:PORT,2=HOST:PORT,...",
    )
    s.add_argument("--join", action="store_true", help="join an existing cluster (as a learner)")
    s.add_argument("--tick-ms", type=int, default=50)
    s.add_argument("--election-ticks", type=int, default=10)
    s.add_argument("--snapshot-entries", type=int, default=20_000)

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
    cfg = NodeConfig(
        node_id=args.id,
        data_dir=args.data,
        peer_listen=args.peer_listen,
        peers=args.peers,
        join=args.join,
        tick_s=args.tick_ms / 1000,
        election_ticks=args.election_ticks,
        snapshot_entries=args.snapshot_entries,
    )

    async def main() -> None:
        sm = KVStateMachine()
        stop = asyncio.Event()
        failed: list[BaseException] = []
        node = RaftNode(cfg, sm, on_fatal=lambda e: (failed.append(e), stop.set()))
        await node.start()
        server = KVServer(node, sm, args.listen)
        addr = await server.start()
        print(f"raft-kv member {args.id} serving clients on {addr[0]}:{addr[1]}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
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
