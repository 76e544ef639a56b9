"""The notification hub: who to wake when a namespace moves. Pure: no asyncio, no clock, no I/O.

Theory of operation
-------------------
Every committed change produces one event, `(namespace, journal position)`; positions of one
namespace only grow. The hub keeps, for the namespaces it cares about, the newest position it has
heard of and the namespace's owner (`NsInfo`), and two kinds of watcher, each keyed by an opaque
hashable the caller chooses (a connection, a waiter):

- a **waiter** (a long-poll) waits ONCE for its namespace to move past the position it has seen,
  or for its deadline (`wait`, then `publish` or `expire` hands it back, and it is gone);
- a **subscriber** (a push stream, a leaf's link to its root) stays: each `publish` past what it
  has seen hands it back with the new position, and its seen position moves up.

`publish(ns, position)` returns the `Wake`s: what the caller must answer or send. A position that
does not move a namespace forward wakes nobody (duplicates and reordering are harmless: a later
reconnect may replay positions). An unknown position is `UNKNOWN` (-1): a waiter registered on
it waits for the first `publish`/`learn`, which is how a caller resolves it (ask upstream, then
`learn` the answer).

Namespaces nobody watches stay known in a bounded LRU (`max_cached_namespaces`) so that the next
long-poll on them needs no upstream read; when one falls out it is reported by `take_evicted`
(a leaf then unsubscribes from its root). Watchers are bounded (`max_watchers`): past the bound
`wait`/`subscribe` raise `HubFull` and the caller sheds the load (`backoff`).

Deadlines are in the caller's clock (seconds, floats), bucketed into slots of `slot_s`;
`expire(now)` returns every waiter whose slot has passed, so the cost is per expired waiter, not
per tick. A waiter may expire up to `slot_s` late (the API allows jitter).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import NamedTuple

UNKNOWN = -1  # the position of a namespace the hub has not heard of
GONE = -2  # a namespace that does not exist (deleted, or never created)


SHARED = "shared:"  # an owner that starts so lists a shared folder's members


def may_watch(owner: str | None, account: str) -> bool:
    """Whether `account` may watch a namespace whose info names `owner`: the owner's account
    id, or, for a shared folder, "shared:" and its members' ids, separated by spaces (an
    account id holds no space)."""
    if owner is None:
        return False
    if owner.startswith(SHARED):
        return account in owner.split(" ")[1:]
    return owner == account


class HubFull(Exception):
    """Past `max_watchers`: shed the load (answer `backoff`)."""


class Wake(NamedTuple):
    key: Hashable
    ns: int
    position: int
    subscriber: bool  # True: a subscriber (still registered); False: a waiter (now removed)


class NsInfo:
    """What the hub knows of one namespace. `owner` None: not looked up yet."""

    __slots__ = ("position", "owner", "waiters", "subscribers")

    def __init__(self, position: int = UNKNOWN, owner: str | None = None) -> None:
        self.position = position
        self.owner = owner
        self.waiters: dict[Hashable, int] | None = None  # key -> seen position
        self.subscribers: dict[Hashable, int] | None = None

    @property
    def watched(self) -> bool:
        return bool(self.waiters) or bool(self.subscribers)


class Hub:
    def __init__(
        self,
        max_watchers: int = 1_000_000,
        max_cached_namespaces: int = 100_000,
        slot_s: float = 0.1,
    ) -> None:
        assert max_watchers > 0 and max_cached_namespaces >= 0 and slot_s > 0
        self.max_watchers = max_watchers
        self.max_cached_namespaces = max_cached_namespaces
        self.slot_s = slot_s
        self._ns: dict[int, NsInfo] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # known, unwatched namespaces
        self._slots: dict[int, dict[Hashable, int]] = {}  # slot -> {waiter key: ns}
        self._waiting: dict[Hashable, tuple[int, int]] = {}  # waiter key -> (ns, slot)
        self._subs = 0
        self._evicted: list[int] = []
        self._first_slot = math.inf  # no slot below this one is non-empty

    # -- knowledge -----------------------------------------------------------------------------
    def info(self, ns: int) -> NsInfo | None:
        return self._ns.get(ns)

    def position(self, ns: int) -> int:
        i = self._ns.get(ns)
        return UNKNOWN if i is None else i.position

    def namespaces(self) -> list[int]:
        """Every namespace the hub knows of or watches."""
        return list(self._ns)

    def watched(self) -> dict[int, int]:
        """{ns: position} of every namespace with a waiter or a subscriber."""
        return {ns: i.position for ns, i in self._ns.items() if i.watched}

    @property
    def watchers(self) -> int:
        return len(self._waiting) + self._subs

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def learn(self, ns: int, position: int, owner: str | None = None) -> list[Wake]:
        """What upstream says of `ns`: its position (GONE if it does not exist) and owner."""
        i = self._touch(ns)
        if ns not in self._ns:
            return []
        if owner is not None:
            i.owner = owner
        if position == GONE:
            i.position = GONE
            i.owner = None
            return self._wake_all(ns, i, GONE)
        return self.publish(ns, position)

    def publish(self, ns: int, position: int) -> list[Wake]:
        """`ns` reached `position`: the waiters and subscribers that had seen less."""
        i = self._touch(ns)
        if ns not in self._ns:  # a cache of size 0 keeps nothing unwatched
            return []
        if position <= i.position:
            return []
        i.position = position
        out: list[Wake] = []
        if i.waiters:
            stay: dict[Hashable, int] = {}
            for key, seen in i.waiters.items():
                if seen < position:
                    out.append(Wake(key, ns, position, False))
                    self._unslot(key)
                else:
                    stay[key] = seen
            i.waiters = stay or None
        if i.subscribers:
            subs = i.subscribers
            for key, seen in subs.items():
                if seen < position:
                    out.append(Wake(key, ns, position, True))
                    subs[key] = position
        if out and not i.watched:
            self._cache(ns)
        return out

    def forget(self) -> list[int]:
        """Upstream lost continuity (a resync): every position becomes UNKNOWN again; watchers
        stay and wait for fresh positions. Returns the watched namespaces (to look up again)."""
        for ns in list(self._lru):
            self._drop(ns)
        self._lru.clear()
        for i in self._ns.values():
            i.position = UNKNOWN
        return list(self._ns)

    def take_evicted(self) -> list[int]:
        """Namespaces dropped from the cache since the last call (no longer known)."""
        out, self._evicted = self._evicted, []
        return out

    # -- waiters (long-polls) ------------------------------------------------------------------
    def wait(self, ns: int, key: Hashable, seen: int, deadline: float) -> int | None:
        """Register waiter `key` on `ns`, having seen `seen`, until `deadline`.

        Returns the known position if it is already past `seen` (answer at once: nothing was
        registered); None if registered. Raises `HubFull` past `max_watchers`, `ValueError` if
        `key` is already waiting."""
        i = self._ns.get(ns)
        if i is not None and i.position > seen:
            self._touch(ns)
            return i.position
        if key in self._waiting:
            raise ValueError("already waiting")
        if self.watchers >= self.max_watchers:
            raise HubFull()
        i = self._pin(ns)
        if i.waiters is None:
            i.waiters = {}
        i.waiters[key] = seen
        slot = math.ceil(deadline / self.slot_s)
        self._slots.setdefault(slot, {})[key] = ns
        self._waiting[key] = (ns, slot)
        if slot < self._first_slot:
            self._first_slot = slot
        return None

    def cancel(self, key: Hashable) -> bool:
        """Forget waiter `key` (its client went away). False if it was not waiting."""
        where = self._unslot(key)
        if where is None:
            return False
        ns = where
        i = self._ns[ns]
        assert i.waiters is not None
        del i.waiters[key]
        if not i.waiters:
            i.waiters = None
            if not i.watched:
                self._cache(ns)
        return True

    def cancel_all(self) -> list[Hashable]:
        """Remove every waiter (shutting down); returns them."""
        keys = list(self._waiting)
        for key in keys:
            self.cancel(key)
        return keys

    def expire(self, now: float) -> list[Hashable]:
        """Waiters whose deadline has passed (removed)."""
        last = math.floor(now / self.slot_s)  # slots that ended by `now`: never early
        if self._first_slot > last:
            return []
        out: list[Hashable] = []
        for slot in sorted(s for s in self._slots if s <= last):
            for key, ns in self._slots.pop(slot).items():
                del self._waiting[key]
                i = self._ns[ns]
                assert i.waiters is not None
                del i.waiters[key]
                if not i.waiters:
                    i.waiters = None
                    if not i.watched:
                        self._cache(ns)
                out.append(key)
        self._first_slot = min(self._slots, default=math.inf)
        return out

    def is_waiting(self, key: Hashable) -> bool:
        return key in self._waiting

    # -- subscribers (push streams, leaves) ----------------------------------------------------
    def subscribe(self, ns: int, key: Hashable, seen: int) -> int:
        """Subscribe `key` to `ns` from position `seen`. Returns the known position (the caller
        sends it if it is past `seen`). Subscribing again only moves `seen` up."""
        i = self._ns.get(ns)
        old = None if i is None or i.subscribers is None else i.subscribers.get(key)
        if old is None:
            if self.watchers >= self.max_watchers:
                raise HubFull()
            self._subs += 1
        i = self._pin(ns)
        if i.subscribers is None:
            i.subscribers = {}
        i.subscribers[key] = max(seen, i.position, old if old is not None else seen)
        return i.position

    def unsubscribe(self, ns: int, key: Hashable) -> None:
        i = self._ns.get(ns)
        if i is None or not i.subscribers or key not in i.subscribers:
            return
        del i.subscribers[key]
        self._subs -= 1
        if not i.subscribers:
            i.subscribers = None
            if not i.watched:
                self._cache(ns)

    def unsubscribe_all(self, key: Hashable, namespaces: Iterable[int]) -> None:
        for ns in namespaces:
            self.unsubscribe(ns, key)

    # -- internals -----------------------------------------------------------------------------
    def _touch(self, ns: int) -> NsInfo:
        """`ns`'s record, made (and cached as unwatched) if new; refreshed in the LRU."""
        i = self._ns.get(ns)
        if i is None:
            i = self._ns[ns] = NsInfo()
            self._cache(ns)
        elif ns in self._lru:
            self._lru.move_to_end(ns)
        return i

    def _pin(self, ns: int) -> NsInfo:
        """`ns`'s record, out of the LRU: it is (about to be) watched."""
        i = self._ns.get(ns)
        if i is None:
            i = self._ns[ns] = NsInfo()
        self._lru.pop(ns, None)
        return i

    def _cache(self, ns: int) -> None:
        """`ns` is known but unwatched: keep it in the LRU, evicting the oldest past the bound."""
        self._lru[ns] = None
        self._lru.move_to_end(ns)
        while len(self._lru) > self.max_cached_namespaces:
            old, _ = self._lru.popitem(last=False)
            self._drop(old)

    def _drop(self, ns: int) -> None:
        i = self._ns.pop(ns, None)
        if i is not None:
            assert not i.watched
            self._evicted.append(ns)

    def _unslot(self, key: Hashable) -> int | None:
        where = self._waiting.pop(key, None)
        if where is None:
            return None
        ns, slot = where
        bucket = self._slots[slot]
        del bucket[key]
        if not bucket:
            del self._slots[slot]
        return ns

    def _wake_all(self, ns: int, i: NsInfo, position: int) -> list[Wake]:
        out: list[Wake] = []
        for key in list(i.waiters or ()):
            self._unslot(key)
            out.append(Wake(key, ns, position, False))
        i.waiters = None
        for key in i.subscribers or ():
            out.append(Wake(key, ns, position, True))
        if not i.watched:
            self._cache(ns)
        return out
