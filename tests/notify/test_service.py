"""`NotifyService` with a scripted upstream: the long-poll rules of DROPBOX_API.md §4-§6 and the
service's bounds, without sockets. Time is moved by calling `tick(now)` — nothing sleeps."""

from __future__ import annotations

import asyncio

import pytest

from raftbox.notify.hub import GONE
from raftbox.notify.service import FALSE, RESET, TRUE, NotifyConfig, NotifyService

from .helpers import ALICE, BOB, SECRET, Answers, FakeUpstream, run, sign

BACKOFF = (200, b'{"changes": false, "backoff": 60}')


async def started(up: FakeUpstream, **cfg) -> NotifyService:
    svc = NotifyService(up, NotifyConfig(**cfg))
    await svc.start()
    await asyncio.sleep(0)  # let the upstream deliver its secret
    return svc


def test_cursors_that_are_forged_foreign_or_for_a_missing_namespace_all_get_the_same_reset():
    async def body():
        up = FakeUpstream()
        svc = await started(up)
        try:
            svc.on_info([(7, ALICE, 3), (8, None, GONE)])
            good = sign(ALICE, 7, 3)
            cases = {
                "garbage": "not-a-cursor",
                "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
                "other cluster": sign(ALICE, 7, 3, secret=b"x" * 32),
                "another account's namespace": sign(BOB, 7, 3),
                "deleted namespace": sign(ALICE, 8, 3),
            }
            answers = {}
            for name, cursor in cases.items():
                a = Answers()
                svc.longpoll(cursor, 30, a)
                answers[name] = a.one
            assert set(answers.values()) == {RESET}, answers
            assert svc.hub.waiting == 0
        finally:
            await svc.stop()

    run(body)


def test_an_unknown_namespace_is_looked_up_once_and_a_missing_one_answers_reset():
    async def body():
        up = FakeUpstream()
        svc = await started(up)
        try:
            a, b = Answers(), Answers()
            svc.longpoll(sign(ALICE, 9, 0), 30, a)
            svc.longpoll(sign(ALICE, 9, 0), 30, b)
            assert a.one is None and b.one is None
            assert up.requests == [{9: -1}]  # one lookup for both
            svc.on_info([(9, None, GONE)])
            assert a.one == RESET and b.one == RESET
        finally:
            await svc.stop()

    run(body)


def test_changes_true_at_once_when_the_namespace_is_past_the_cursor_or_the_listing_is_unfinished():
    async def body():
        svc = await started(FakeUpstream())
        try:
            svc.on_info([(7, ALICE, 5)])
            behind, listing = Answers(), Answers()
            svc.longpoll(sign(ALICE, 7, 4), 30, behind)
            svc.longpoll(sign(ALICE, 7, 5, resume="/some/key"), 30, listing)
            assert behind.one == TRUE and listing.one == TRUE
        finally:
            await svc.stop()

    run(body)


def test_a_waiting_longpoll_wakes_on_the_first_change_past_its_cursor():
    async def body():
        svc = await started(FakeUpstream())
        try:
            svc.on_info([(7, ALICE, 5), (8, BOB, 1)])
            a = Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            assert a.one is None and svc.hub.waiting == 1
            svc.on_events([(8, 2), (7, 5)])  # another namespace; a position already seen
            assert a.one is None
            svc.on_events([(7, 6)])
            assert a.one == TRUE and svc.hub.waiting == 0
        finally:
            await svc.stop()

    run(body)


def test_changes_false_at_the_timeout_with_a_little_jitter_and_not_before():
    async def body():
        svc = await started(FakeUpstream(), jitter_fraction=0.1)
        try:
            svc.on_info([(7, ALICE, 5)])
            loop = asyncio.get_running_loop()
            a = Answers()
            t0 = loop.time()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.tick(t0 + 29.9)
            assert a.one is None
            svc.tick(t0 + 30 * 1.1 + 0.2)  # timeout + 10 % jitter + one tick
            assert a.one == FALSE
        finally:
            await svc.stop()

    run(body)


def test_the_test_only_wait_cap_ends_a_wait_early():
    async def body():
        svc = await started(FakeUpstream(), longpoll_wait_cap_s=1.0, jitter_fraction=0.0)
        try:
            svc.on_info([(7, ALICE, 5)])
            a = Answers()
            t0 = asyncio.get_running_loop().time()
            svc.longpoll(sign(ALICE, 7, 5), 480, a)
            svc.tick(t0 + 1.2)
            assert a.one == FALSE
        finally:
            await svc.stop()

    run(body)


def test_load_is_shed_with_backoff_past_the_watcher_bound_and_without_upstream():
    async def body():
        svc = await started(FakeUpstream(), max_watchers=1, lookup_timeout_s=5.0)
        try:
            svc.on_info([(7, ALICE, 5)])
            a, b = Answers(), Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.longpoll(sign(ALICE, 7, 5), 30, b)
            assert a.one is None and b.one == BACKOFF
            # upstream never answers a lookup: backoff after lookup_timeout_s
            c = Answers()
            t0 = asyncio.get_running_loop().time()
            svc.longpoll(sign(ALICE, 99, 0), 30, c)
            svc.tick(t0 + 4)
            assert c.one is None
            svc.tick(t0 + 5.5)
            assert c.one == BACKOFF
        finally:
            await svc.stop()
        # without the secret: see test_without_a_secret_a_longpoll_is_shed_after_lookup_timeout_s...

    run(body)


def test_a_client_that_goes_away_frees_its_slot():
    async def body():
        svc = await started(FakeUpstream())
        try:
            svc.on_info([(7, ALICE, 5)])
            a, parked = Answers(), Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.longpoll(sign(ALICE, 8, 0), 30, parked)  # waiting for its lookup
            svc.cancel(a)
            svc.cancel(parked)
            assert svc.hub.waiting == 0 and svc.status()["parked"] == 0
            svc.on_events([(7, 6)])
            svc.on_info([(8, ALICE, 1)])
            assert a.one is None and parked.one is None
        finally:
            await svc.stop()

    run(body)


def test_a_leaf_subscribes_what_it_watches_resubscribes_after_a_reconnect_and_ignores_the_rest():
    async def body():
        up = FakeUpstream(follows_all=False)
        svc = await started(up, max_cached_namespaces=1)
        try:
            a = Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            assert up.requests[-1] == {7: -1}
            svc.on_info([(7, ALICE, 5)])
            assert a.one is None
            svc.on_events([(12, 3)])  # not subscribed: ignored
            assert svc.hub.info(12) is None
            svc.on_disconnected()
            svc.on_connected()  # the same root or another: subscribe again, from what we know
            assert up.requests[-1] == {7: 5}
            svc.on_info([(7, ALICE, 6)])  # the new root knows a newer position
            assert a.one == TRUE
            # 7 is unwatched now; two more namespaces push it out of a cache of one
            for ns in (20, 21):
                b = Answers()
                svc.longpoll(sign(ALICE, ns, 1), 30, b)
                svc.on_info([(ns, ALICE, 1)])
                svc.cancel(b)
            assert 7 in up.released
        finally:
            await svc.stop()

    run(body)


def test_stop_answers_every_waiting_longpoll():
    async def body():
        svc = await started(FakeUpstream())
        svc.on_info([(7, ALICE, 5)])
        a, parked = Answers(), Answers()
        svc.longpoll(sign(ALICE, 7, 5), 30, a)
        svc.longpoll(sign(ALICE, 8, 5), 30, parked)
        await svc.stop()
        assert a.one == FALSE and parked.one == BACKOFF

    run(body)


def test_a_slow_stream_reader_gets_the_newest_position_per_namespace_not_a_backlog():
    from raftbox.notify.stream import StreamPeer

    async def body():
        peer = StreamPeer(ws=None, cluster=False, max_ns=10)  # type: ignore[arg-type]
        for pos in range(1, 10_001):
            peer.push(7, pos)
            peer.push(8, pos // 2)
        assert peer.events == {7: 10_000, 8: 5_000}
        peer.push(7, 3)  # an old position changes nothing
        assert peer.events[7] == 10_000

    run(body)


# -- a process that serves before its upstream said hello (a leaf or root just started) ---------


def test_a_longpoll_that_arrives_before_the_secret_waits_for_it_and_gets_a_change_made_meanwhile():
    """The interleaving of the leaf-restart e2e test: a notify process serves (its `url` is
    written) before its link's `hello` brings the cluster secret. A long-poll on a cursor taken
    before a change it missed must not be shed with `backoff` (the client would wait 60 s for a
    change already committed): it waits for the secret, then for its namespace's info."""

    async def body():
        up = FakeUpstream(follows_all=False, secret=None)  # a leaf; the root not answered yet
        svc = await started(up)
        try:
            a = Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            assert a.one is None and svc.status()["parked"] == 1
            svc.on_secret(SECRET)  # the root's hello
            svc.on_connected()
            assert up.requests[-1] == {7: -1}  # asked once connected
            svc.on_info([(7, ALICE, 6)])  # the change made while this process was down
            assert a.one == TRUE
            assert svc.status()["parked"] == 0
        finally:
            await svc.stop()

    run(body)


def test_before_the_secret_the_root_may_answer_the_old_position_and_push_the_change_later():
    async def body():
        up = FakeUpstream(follows_all=False, secret=None)
        svc = await started(up)
        try:
            a = Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.on_secret(SECRET)
            svc.on_connected()
            svc.on_info([(7, ALICE, 5)])  # the root has not heard of the change yet
            assert a.one is None and svc.hub.waiting == 1
            svc.on_events([(7, 6)])  # it has now: pushed down the subscription
            assert a.one == TRUE
        finally:
            await svc.stop()

    run(body)


def test_without_a_secret_a_longpoll_is_shed_after_lookup_timeout_s_and_a_leaver_frees_its_place():
    async def body():
        svc = await started(FakeUpstream(secret=None), lookup_timeout_s=5.0, max_parked=2)
        try:
            a, gone, c, over = Answers(), Answers(), Answers(), Answers()
            t0 = asyncio.get_running_loop().time()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.longpoll(sign(ALICE, 7, 5), 30, gone)
            svc.longpoll(sign(ALICE, 7, 5), 30, over)  # past max_parked: shed at once
            assert over.one == BACKOFF
            svc.cancel(gone)  # its client left
            svc.longpoll(sign(ALICE, 7, 5), 30, c)
            svc.tick(t0 + 4)
            assert a.one is None and c.one is None
            svc.tick(t0 + 5.5)
            assert a.one == BACKOFF and c.one == BACKOFF and gone.one is None
            assert svc.status()["parked"] == 0
            d = Answers()
            svc.longpoll(sign(ALICE, 7, 5), 30, d)
        finally:
            await svc.stop()
        assert d.one == BACKOFF  # stop answers the ones still waiting for the secret

    run(body)


def test_a_longpoll_that_waited_for_the_secret_keeps_its_own_deadline():
    async def body():
        svc = await started(FakeUpstream(secret=None), jitter_fraction=0.0)
        try:
            loop = asyncio.get_running_loop()
            a = Answers()
            t0 = loop.time()
            svc.longpoll(sign(ALICE, 7, 5), 30, a)
            svc.on_secret(SECRET)
            svc.on_connected()
            svc.on_info([(7, ALICE, 5)])
            svc.tick(t0 + 29.8)
            assert a.one is None
            svc.tick(t0 + 30.2)  # counted from its arrival, not from the secret's
            assert a.one == FALSE
        finally:
            await svc.stop()

    run(body)


@pytest.mark.parametrize("root_knows", ["owner and old position", "old position only"])
@pytest.mark.parametrize("order", ["event then info", "info then event"])
def test_a_leaf_that_subscribes_before_its_root_heard_of_a_change_gets_it_pushed(root_knows, order):
    """The root's side of a leaf's restart: the leaf subscribes (seen: UNKNOWN) while the root
    still holds the position from before a committed change; the meta's event and the answer
    to the root's own lookup then come in either order. Whatever the order, the leaf gets the
    new position (an `ev`, or an `info` that carries it): no wake is lost."""
    from raftbox.notify.stream import StreamPeer

    async def body():
        up = FakeUpstream()  # a root: follows the meta's whole feed
        svc = await started(up)
        try:
            if root_knows == "owner and old position":
                svc.on_info([(7, ALICE, 5)])
            else:
                svc.on_events([(7, 5)])  # heard from the feed only: the owner is not known
            leaf = StreamPeer(ws=None, cluster=True, max_ns=10)  # type: ignore[arg-type]
            svc.streams._sub(leaf, [(7, -1)])
            steps = [lambda: svc.on_events([(7, 6)])]
            if 7 in up.asked():  # the root looks the owner up in the meta
                pos = 6 if order == "info then event" else 5  # a lookup answered before the event
                steps.insert(0 if pos == 6 else 1, lambda: svc.on_info([(7, ALICE, pos)]))
            for step in steps:
                step()
            newest = max(leaf.events.get(7, -1), leaf.infos.get(7, (None, -1))[1])
            assert newest == 6, (leaf.events, leaf.infos)
            assert svc.hub.info(7).subscribers == {leaf: 6}
        finally:
            await svc.stop()

    run(body)
