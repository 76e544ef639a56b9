"""`raftbox sync DIR`, `raftbox sync --watch DIR` and `raftbox status DIR`.

- `sync DIR`: passes both ways until the folder and the account agree, then one summary line
  (and `--stats-json FILE`: the summary as JSON, for scripts and benchmarks). Exit status 0 when
  everything is in sync, 1 on errors or when the server could not be reached, 2 when the
  max-delete check refused the pass (the message says how many deletions and how to proceed).
- `sync --watch DIR`: the same, then keeps syncing on filesystem events and the server's push
  stream, one summary line per round that did something; Ctrl-C (SIGINT) or SIGTERM stops it
  (a file being installed is either in place or not: temp file and rename). A server that
  cannot be reached at start is retried with back-off (up to a minute); one that goes away
  later is retried every few seconds (said once), so edits made meanwhile go up soon after it
  is back.
- `status DIR`: what a pass would do now (counts and the first paths), without doing it; if a
  sync is running on the folder, says so and shows its last round instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

from raftbox.backoff import Backoff

from .config import ConfigError, load
from .display import PlainProgress, make_progress, summary_line
from .engine import Options, Summary, SyncEngine, SyncError
from .index import STATE_DIR
from .remote import RemoteError, ServerUnavailable
from .watch import watch

COMMANDS = ("sync", "status")


def add_parsers(sub: Any, common: Any) -> None:
    p = common(sub, "sync", "sync a folder with the account, both ways")
    p.add_argument("dir", help="the local folder (created if missing)")
    p.add_argument("--watch", action="store_true", help="keep syncing as things change")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    p.add_argument("--stats-json", help="write the summary as JSON to this file")
    p.add_argument("--max-delete", type=float, default=50.0, metavar="PCT",
                   help="refuse a pass deleting more than PCT%% of the synced entries "
                   "(default 50)")  # fmt: skip
    p.add_argument("--max-delete-min", type=int, default=10, metavar="N",
                   help="... unless it deletes at most N entries (default 10)")  # fmt: skip
    p.add_argument("--device-name", help="names conflicted copies (default: the host name)")
    p.add_argument("--retry-s", type=float, default=60.0, metavar="S",
                   help="keep retrying an unreachable or overloaded server this long before "
                   "giving up (default 60; 0: give up at once; --watch always retries)")  # fmt: skip
    p = common(sub, "status", "show what a sync of a folder would do now")
    p.add_argument("dir")


def _options(args: argparse.Namespace) -> Options:
    opt = Options()
    if getattr(args, "max_delete", None) is not None:
        if not 0 <= args.max_delete <= 100:
            raise SyncError("--max-delete is a percentage, 0 to 100")
        opt.max_delete_share = args.max_delete / 100
        opt.max_delete_floor = args.max_delete_min
    if getattr(args, "device_name", None):
        opt.host = args.device_name
    retry_s = getattr(args, "retry_s", None)
    if retry_s is not None and not getattr(args, "watch", False):  # --watch retries on its own
        if not 0 <= retry_s <= 86_400:
            raise SyncError("--retry-s is 0 to 86400 seconds")
        opt.unavailable_retry_s = retry_s
    return opt


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        if args.command == "sync":
            os.makedirs(args.dir, exist_ok=True)
            return asyncio.run(_sync(args, cfg))
        return asyncio.run(_status(args, cfg))
    except (ConfigError, SyncError, RemoteError, ServerUnavailable) as e:
        print(f"raftbox: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"raftbox: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _exit_status(s: Summary) -> int:
    if s.refused:
        return 2
    return 0 if s.ok else 1


def _write_stats(path: str | None, s: Summary) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(s.as_json(), f, indent=2)
            f.write("\n")


async def _sync(args: argparse.Namespace, cfg: Any) -> int:
    progress = make_progress(args.quiet)
    try:
        if not args.watch:
            async with SyncEngine(args.dir, cfg, _options(args), progress) as eng:
                s = await eng.sync()
            _write_stats(args.stats_json, s)
            _close(progress)
            print(summary_line(args.dir, s), file=sys.stderr if args.quiet else sys.stdout)
            return _exit_status(s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        first = True
        was_unavailable = False

        def on_round(s: Summary) -> None:
            nonlocal first, was_unavailable
            _write_stats(args.stats_json, s)
            # During an outage the rounds retry every few seconds: say so once, not each time.
            again = was_unavailable and s.unavailable is not None and not s.did_something
            was_unavailable = s.unavailable is not None
            if (first or s.did_something or not s.ok) and not again:
                progress.message(f"{time.strftime('%H:%M:%S')} {summary_line(args.dir, s)[9:]}")
            if first:
                progress.message(f"watching {args.dir} for changes (Ctrl-C to stop)")
            first = False

        retry = Backoff(random.Random(), 1.0, 60.0)
        while not stop.is_set():
            try:
                async with SyncEngine(args.dir, cfg, _options(args), progress) as eng:
                    await watch(eng, on_round, stop=stop)
                return 0
            except SyncError as e:
                if not str(e).startswith("cannot reach the server"):
                    raise
                delay_s = retry.next_delay_s()
                progress.message(f"raftbox: {e}; trying again in {delay_s:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay_s)  # retry back-off, or stop
        return 0
    finally:
        _close(progress)


def _close(progress: Any) -> None:
    with contextlib.suppress(Exception):
        progress.close()


async def _status(args: argparse.Namespace, cfg: Any) -> int:
    root = os.path.abspath(args.dir)
    if not os.path.isdir(os.path.join(root, STATE_DIR)):
        print(f"{root}: not synced yet (run `raftbox sync {args.dir}`)")
        return 0
    try:
        eng = SyncEngine(root, cfg, _options(args), PlainProgress(quiet=True))
        await eng.__aenter__()
    except SyncError as e:
        if "another raftbox sync is running" not in str(e):
            raise
        print(f"{root}: a raftbox sync is running on this folder (pid {_pid(root)})")
        _print_last(root)
        return 0
    try:
        p, scan = await eng.plan_pass()
    finally:
        await eng.__aexit__()
    print(f"{root}: {cfg.server}")
    _print_last(root)
    for rel, why in scan.skipped[:20]:
        print(f"  not synced: {rel} ({why})")
    if p.refused:
        print(f"  a sync now would be refused: {p.refused}")
    ops = p.ops or p.withheld
    if not ops:
        print("  in sync: nothing to do")
        return 0
    counts = Counter(op.kind.value for op in ops)
    print(
        "  pending: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
    )
    for op in ops[:20]:
        path = getattr(op, "path", None) or f"{op.src} -> {op.dst}"  # type: ignore[union-attr]
        print(f"    {op.kind.value:<14} {path}")
    if len(ops) > 20:
        print(f"    ... and {len(ops) - 20} more")
    return 0


def _pid(root: str) -> str:
    try:
        with open(os.path.join(root, STATE_DIR, "lock")) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _print_last(root: str) -> None:
    import sqlite3

    with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
        db = sqlite3.connect(f"file:{os.path.join(root, STATE_DIR, 'index.db')}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT v FROM state WHERE k = 'last_sync'").fetchone()
        finally:
            db.close()
        if row:
            last = json.loads(row[0])
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
            state = "in sync" if last.get("ok") else "incomplete"
            n = last.get("passes", 0)
            print(f"  last sync: {when} ({state}; {n} pass{'' if n == 1 else 'es'})")
