"""Watching: passes run whenever the folder or the account changes, until stopped.

Contract
--------
`watch(eng, on_round, stop=...)` syncs `eng`'s folder at once, then whenever it changes
(filesystem events through `watchfiles`, debounced) or the server says the account moved (the
push stream; long-poll is not needed), plus a periodic pass, until `stop` is set; it calls
`on_round` with each round's `Summary`. When the OS runs out of watches it falls back to
periodic scans with one message. After an outage (a pass that found the server unreachable, or
a push stream that connects again) it runs a full pass within seconds, so offline edits go up
as soon as the server is back. Its tasks live in one TaskGroup and every retry waits a
`raftbox.backoff.Backoff` delay (see `watch`). What one pass does is `engine`'s concern.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from raftbox.backoff import Backoff

from .engine import Summary, SyncEngine
from .index import STATE_DIR


async def watch(
    eng: SyncEngine,
    on_round: Callable[[Summary], None],
    *,
    debounce_s: float = 0.3,
    periodic_s: float = 600.0,
    fallback_scan_s: float = 30.0,
    unreachable_retry_max_s: float = 5.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Sync now, then whenever something changes, until `stop` is set (or forever).

    Four tasks, owned by one TaskGroup (nothing outlives `watch`, nothing dies unseen):

    - `rounds` runs the passes: at once, on `wake`, and every `periodic_s`. A pass that
      finds the server unreachable is retried after about 1 s, doubling up to
      `unreachable_retry_max_s`, so edits made during an outage go up within seconds of the
      server's return even if nothing else wakes it. A pass that fails (a full disk, a
      server error, a bug) is reported and retried after about `fallback_scan_s`, doubling
      up to 16 times that (at most 600 s).
    - `local_events` wakes it on filesystem events (debounced); when the OS runs out of
      watches it hands over to periodic scans every `fallback_scan_s` and ends.
    - `remote_events` wakes it when the push stream says the account moved; a lost stream
      is reconnected with back-off (about 1 s doubling to 60 s), and the first message of a
      new connection after a loss wakes it too: a full pass at once after the server's
      return.
    - `stopped` ends the group when `stop` is set (a pass in flight is cancelled: every
      step of a pass is resumable).

    Any other failure of a task ends the group, and `watch` raises it. Every retry waits
    a `raftbox.backoff.Backoff` delay (jittered by `eng.rng`), reset by a success.
    """
    stream_retry = Backoff(eng.rng, 1.0, 60.0)
    failed_retry = Backoff(eng.rng, min(fallback_scan_s, 600.0), min(fallback_scan_s * 16, 600.0))
    unreachable_retry = Backoff(eng.rng, min(1.0, unreachable_retry_max_s), unreachable_retry_max_s)
    wake = asyncio.Event()
    have_cursor = asyncio.Event()
    stop = stop or asyncio.Event()
    fallback = {"every": periodic_s}

    async def local_events() -> None:
        import watchfiles

        def keep(_change: Any, path: str) -> bool:
            rel = os.path.relpath(path, eng.root)
            return rel != STATE_DIR and not rel.startswith(STATE_DIR + os.sep)

        try:
            async for _changes in watchfiles.awatch(
                eng.root,
                watch_filter=keep,
                debounce=int(debounce_s * 1000),
                step=50,
                stop_event=stop,
                recursive=True,
                ignore_permission_denied=True,
            ):
                wake.set()
        except (OSError, RuntimeError) as e:
            fallback["every"] = fallback_scan_s
            eng.progress.message(
                f"cannot watch {eng.root} for changes ({e}); raise the OS limit "
                f"(fs.inotify.max_user_watches); scanning every {fallback_scan_s:g} s instead"
            )
            wake.set()  # re-arm the wait with the shorter period

    async def remote_events() -> None:
        assert eng.remote is not None
        lost = False
        await have_cursor.wait()  # the first pass sets it
        while True:
            cursor = eng.cursor
            assert cursor is not None
            try:
                async for msg in eng.remote.stream(cursor):
                    stream_retry.reset()
                    if lost:  # connected again: what changed meanwhile, both ways
                        lost = False
                        wake.set()
                    op = msg.get("op")
                    if op in ("ev", "reset", "resync"):
                        wake.set()
                    if op == "backoff":
                        await asyncio.sleep(_bounded_s(msg.get("backoff"), 5.0, 60.0))
            except Exception as e:  # noqa: BLE001 - any failure: reconnect with back-off
                eng.progress.message(f"push stream lost ({type(e).__name__}); reconnecting")
            lost = True
            wake.set()  # changes may have been missed while disconnected
            await stream_retry.sleep()

    async def rounds() -> None:
        while True:
            wake.clear()
            try:
                s = await eng.sync()
                on_round(s)
                failed_retry.reset()
            except Exception as e:  # noqa: BLE001 - a watcher must outlive any one pass
                # (a full disk, a server error, a bug: say so, wait, try again)
                wait_s = failed_retry.next_delay_s()
                eng.progress.message(
                    f"pass failed: {type(e).__name__}: {e}; trying again in {wait_s:.1f} s"
                )
                await asyncio.sleep(wait_s)  # retry back-off
                continue
            if eng.cursor is not None:
                have_cursor.set()
            if s.unavailable is not None:  # try again soon: the server may be back any time
                wait_s = unreachable_retry.next_delay_s()
            else:
                unreachable_retry.reset()
                wait_s = fallback["every"]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await wake.wait()
            await asyncio.sleep(debounce_s)  # let a burst of events settle into one pass

    async def stopped() -> None:
        await stop.wait()
        raise _Stopped

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rounds(), name="sync rounds")
            tg.create_task(local_events(), name="filesystem events")
            tg.create_task(remote_events(), name="push stream")
            tg.create_task(stopped(), name="stop")
    except* _Stopped:
        pass


class _Stopped(Exception):
    """`watch`'s stop event was set: ends its task group."""


def _bounded_s(v: object, default: float, most: float) -> float:
    """A delay a server asked for, as seconds within [0, most] (`default` if it is not one)."""
    try:
        s = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return s if 0.0 <= s <= most else most
