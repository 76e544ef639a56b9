"""Bearer tokens and the caches that keep looking them up cheap.

- `new_token()` makes a token: "rbx_" and 256 random bits, URL-safe; `token_hash(token)` is
  its SHA-256, the only form of it the cluster stores or replicates.
- `TokenCache`: token hash → account, for `ttl_s` (a blockserver's positive cache: a revoked
  token stops working within that time); bounded, cleared when full.
- `NegativeTokenCache`: hashes a linearizable read found unknown, for `ttl_s` (bounded, oldest
  forgotten first), so a repeated bad token costs no ReadIndex round.
- `SharedRounds`: lookups arriving together share ReadIndex rounds — at most one in flight and
  one queued, however many requests wait.

How `MetaService.auth` uses them, and why the answers are never older than the request, is in
`raftbox.meta.service` ("Authentication, and what a bad token may cost").
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    # A fixed prefix: recognisable in logs and config files, and a token never starts with
    # "-" (which a command line would take for an option: `--token -abc…`).
    return "rbx_" + secrets.token_urlsafe(32)


class TokenCache:
    """Bearer token hash → account, remembered for `ttl_s` so a revoked token stops working
    within that time on every process; bounded to `max_entries` (cleared when full)."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}

    def get(self, h: bytes) -> Any | None:
        hit = self._entries.get(h)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def put(self, h: bytes, acct: Any) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[h] = (time.monotonic(), acct)


class NegativeTokenCache:
    """Token hashes a linearizable read found unknown, remembered for `ttl_s`; bounded to
    `max_entries` (the oldest forgotten first). See `raftbox.meta.service` for why an entry
    needs no explicit invalidation."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, float] = {}  # insertion order = age

    def __contains__(self, h: bytes) -> bool:
        at = self._entries.get(h)
        if at is None:
            return False
        if time.monotonic() - at < self.ttl_s:
            return True
        del self._entries[h]
        return False

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, h: bytes) -> None:
        self._entries.pop(h, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[h] = time.monotonic()

    def discard(self, h: bytes) -> None:
        self._entries.pop(h, None)


class SharedRounds:
    """`wait()` returns once a run of `fn` that started after the call has finished (or
    raises what that run raised). Callers that arrive while a run is in flight share the next
    one, which the first of them runs: at most one run in flight, however many callers."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._fn = fn
        self._started = 0  # runs started
        self._running = False
        self._last: tuple[int, BaseException | None] = (0, None)  # the last run that ended
        self._ended = asyncio.Event()
        self.runs = 0

    async def wait(self) -> None:
        need = self._started + 1  # the run in flight, if any, started before us
        while True:
            gen, exc = self._last
            if gen >= need:
                if exc is not None:
                    raise exc
                return
            if self._running:
                await self._ended.wait()
                continue
            await self._run()

    async def _run(self) -> None:
        self._running = True
        self._started += 1
        gen = self._started
        exc: BaseException | None = None
        ended = True
        try:
            self.runs += 1
            await self._fn()
        except Exception as e:  # shared with every caller waiting for this run
            exc = e
        except BaseException:  # this caller was cancelled: the run did not end, another runs
            ended = False
            raise
        finally:
            self._running = False
            if ended:
                self._last = (gen, exc)
            self._ended.set()
            self._ended = asyncio.Event()
