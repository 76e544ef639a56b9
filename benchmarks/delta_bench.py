"""Edit benchmark: the bytes a 100-byte insertion into a synced big file costs the sync client,
against `rsync --no-whole-file` doing the same edit in the same run.

    .venv/bin/python -m benchmarks.delta_bench [--size-mib 64] [--insert-bytes 100]
                                               [--json bench-out/delta.json]

Everything runs on this machine, on 127.0.0.1, in one run (needs `apt-get install -y rsync`):

- `raftbox up` (single node, TLS, CDC chunking) as a process, and two sync clients of one
  account run in this process (`SyncEngine`, the code behind `raftbox sync`): client A syncs a
  folder holding one `--size-mib` file of random bytes; `--insert-bytes` random bytes are
  inserted in its middle; A syncs again. Bytes are the client's own counts of request and
  response bodies for that whole second pass (listing, blocks/has, blocks/list of the previous
  revision, signatures, deltas, commit): `Summary.bytes_sent` / `bytes_received`. Client B then
  syncs and the benchmark checks it holds exactly A's bytes (the server rebuilt them right).
- the same edit through `rsync -a --no-whole-file --stats` between two local directories
  (rsync's "Total bytes sent" and "Total bytes received"), as `benchmarks.blocks_bench` does.
- for reference, what the same pass sends with block deltas switched off (whole CDC blocks):
  the same edit at another offset of the same file, `Remote.deltas = False`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
from pathlib import Path

from .blocks_bench import Up, rsync_edit

MiB = 1024 * 1024


def insert(path: Path, at: int, data: bytes) -> None:
    body = path.read_bytes()
    path.write_bytes(body[:at] + data + body[at:])


async def sync(root: Path, cfg, deltas: bool = True):
    from raftbox.client.engine import Options, SyncEngine

    async with SyncEngine(root, cfg, Options()) as e:
        e.remote.deltas = deltas
        s = await e.sync()
        if not s.ok:
            raise RuntimeError(f"sync of {root} failed: {s}")
        return s, e.remote.delta_blocks, e.remote.delta_saved_bytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--insert-bytes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--tmp", help="work directory (default: a temporary one on /tmp)")
    args = ap.parse_args()
    from raftbox.client.config import Config

    tmp = Path(tempfile.mkdtemp(prefix="raftbox-delta-bench-", dir=args.tmp))
    r = random.Random(args.seed)
    size = args.size_mib * MiB
    up = Up(tmp)
    try:
        cfg = Config(server=f"https://{up.hostport}", token=up.account("delta@example.test"),
                     ca=up.ca)  # fmt: skip
        a, b = tmp / "A", tmp / "B"
        a.mkdir()
        b.mkdir()
        big = a / "big.bin"
        big.write_bytes(r.randbytes(size))
        orig = tmp / "orig.bin"
        shutil.copyfile(big, orig)
        print(f"{args.size_mib} MiB file, first sync ...", flush=True)
        asyncio.run(sync(a, cfg))
        insert(big, size // 2, r.randbytes(args.insert_bytes))
        s, n_delta, saved = asyncio.run(sync(a, cfg))
        asyncio.run(sync(b, cfg))
        same = (b / "big.bin").read_bytes() == big.read_bytes()
        if not same:
            raise RuntimeError("B does not hold A's bytes")
        rs = rsync_edit(orig, big, tmp)
        # reference: the same kind of edit with deltas off (whole blocks)
        insert(big, size // 4, r.randbytes(args.insert_bytes))
        off, _, _ = asyncio.run(sync(a, cfg, deltas=False))
    finally:
        up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    fig = {
        "file_mib": args.size_mib,
        "insert_bytes": args.insert_bytes,
        "raftbox": {
            "sent": s.bytes_sent,
            "received": s.bytes_received,
            "delta_blocks": n_delta,
            "delta_saved_bytes": saved,
        },  # fmt: skip
        "raftbox_no_delta": {"sent": off.bytes_sent, "received": off.bytes_received},
        "rsync": rs,
    }
    print(f"edit: {args.insert_bytes} bytes inserted in the middle of a {args.size_mib} MiB file")
    print(f"  raftbox sync (block deltas):   {s.bytes_sent:>10,} bytes sent, "
          f"{s.bytes_received:,} received ({n_delta} blocks as deltas)")  # fmt: skip
    print(f"  raftbox sync (whole blocks):   {off.bytes_sent:>10,} bytes sent, "
          f"{off.bytes_received:,} received")  # fmt: skip
    print(f"  rsync -a --no-whole-file:      {rs['sent']:>10,} bytes sent, "
          f"{rs['received']:,} received")  # fmt: skip
    print(f"  ratio raftbox/rsync (sent): {s.bytes_sent / rs['sent']:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0 if s.bytes_sent <= rs["sent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
