"""The pure fan-out hub: each test is one sentence of its contract (hub.py's docstring)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.notify.hub import GONE, UNKNOWN, Hub, HubFull, Wake


def keys(wakes: list[Wake]) -> set:
    return {w.key for w in wakes}


def test_a_waiter_behind_the_known_position_is_answered_at_once_and_not_registered():
    h = Hub()
    h.publish(1, 5)
    assert h.wait(1, "a", seen=4, deadline=10) == 5
    assert h.waiting == 0


def test_publish_wakes_only_waiters_that_had_seen_less_and_removes_them():
    h = Hub()
    h.publish(1, 5)
    assert h.wait(1, "a", 5, 10) is None
    assert h.wait(1, "b", 5, 10) is None
    assert h.wait(2, "c", 0, 10) is None
    wakes = h.publish(1, 6)
    assert keys(wakes) == {"a", "b"} and all(not w.subscriber for w in wakes)
    assert all(w.position == 6 for w in wakes)
    assert h.waiting == 1 and h.is_waiting("c")
    assert h.publish(1, 7) == []


def test_a_position_that_does_not_move_forward_wakes_nobody():
    h = Hub()
    h.publish(1, 5)
    h.wait(1, "a", 5, 10)
    assert h.publish(1, 5) == []
    assert h.publish(1, 3) == []
    assert h.position(1) == 5 and h.is_waiting("a")


def test_a_waiter_on_an_unknown_namespace_waits_for_the_first_position():
    h = Hub()
    assert h.position(9) == UNKNOWN
    assert h.wait(9, "a", 3, 10) is None
    assert h.learn(9, 3, owner="dbid:x") == []  # not past what it has seen
    assert h.info(9).owner == "dbid:x"
    assert keys(h.learn(9, 4)) == {"a"}


def test_expire_returns_waiters_whose_deadline_passed_and_only_those():
    h = Hub(slot_s=0.1)
    h.wait(1, "early", 0, deadline=1.0)
    h.wait(1, "late", 0, deadline=2.0)
    assert h.expire(0.5) == []
    assert h.expire(1.05) == ["early"]
    assert h.expire(1.5) == []
    assert h.expire(2.1) == ["late"]
    assert h.waiting == 0 and h.publish(1, 1) == []


def test_cancel_forgets_a_waiter():
    h = Hub()
    h.wait(1, "a", 0, 10)
    assert h.cancel("a") and not h.cancel("a")
    assert h.publish(1, 1) == [] and h.expire(100) == []


def test_subscribers_stay_and_their_seen_position_moves_up():
    h = Hub()
    assert h.subscribe(1, "s", seen=2) == UNKNOWN
    assert h.publish(1, 2) == []
    assert h.publish(1, 3) == [Wake("s", 1, 3, True)]
    assert h.publish(1, 3) == []
    assert h.publish(1, 4) == [Wake("s", 1, 4, True)]
    h.unsubscribe(1, "s")
    assert h.publish(1, 5) == [] and h.watchers == 0


def test_subscribing_returns_the_known_position_so_the_caller_can_send_it():
    h = Hub()
    h.publish(1, 7)
    assert h.subscribe(1, "s", seen=3) == 7  # the caller sends 7 now
    assert h.publish(1, 7) == []  # and it counts as seen


def test_watchers_are_bounded():
    h = Hub(max_watchers=2)
    h.wait(1, "a", 0, 10)
    h.subscribe(2, "s", 0)
    with pytest.raises(HubFull):
        h.wait(3, "b", 0, 10)
    with pytest.raises(HubFull):
        h.subscribe(3, "t", 0)
    h.subscribe(2, "s", 1)  # an existing subscription is not a new watcher
    h.cancel("a")
    h.wait(3, "b", 0, 10)


def test_unwatched_namespaces_are_cached_with_a_bound_and_evictions_are_reported():
    h = Hub(max_cached_namespaces=2)
    h.wait(100, "a", 0, 10)  # watched: never evicted
    for ns in (1, 2, 3):
        h.publish(ns, 1)
    assert h.take_evicted() == [1]
    assert set(h.namespaces()) == {100, 2, 3}
    assert h.take_evicted() == []
    h.cancel("a")  # 100 becomes unwatched: cached as the newest
    assert h.take_evicted() == [2]
    assert h.position(100) == UNKNOWN and set(h.namespaces()) == {3, 100}


def test_gone_wakes_every_waiter_and_tells_every_subscriber():
    h = Hub()
    h.wait(1, "a", 0, 10)
    h.subscribe(1, "s", 0)
    wakes = h.learn(1, GONE)
    assert {(w.key, w.position, w.subscriber) for w in wakes} == {
        ("a", GONE, False),
        ("s", GONE, True),
    }
    assert h.waiting == 0


def test_forget_makes_positions_unknown_but_keeps_watchers():
    h = Hub()
    h.publish(1, 5)
    h.publish(2, 5)  # unwatched: dropped
    h.wait(1, "a", 5, 10)
    assert h.forget() == [1]
    assert h.position(1) == UNKNOWN and h.is_waiting("a")
    assert keys(h.learn(1, 6)) == {"a"}


# -- against a naive model -------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("wait"),
            st.integers(0, 3),
            st.integers(0, 5),
            st.integers(0, 8),
            st.integers(1, 20),
        ),  # fmt: skip
        st.tuples(st.just("publish"), st.integers(0, 3), st.integers(0, 10)),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
        st.tuples(st.just("expire"), st.integers(0, 25)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_hub_answers_like_a_naive_model(script):
    """Every waiter is answered exactly once (now, by a publish past its position, or at its
    deadline) unless cancelled; nobody is woken by a position it has seen."""
    h = Hub(slot_s=1.0, max_cached_namespaces=1000)
    pos: dict[int, int] = {}
    waiting: dict[int, tuple[int, int, int]] = {}  # key -> (ns, seen, deadline)
    clock = 0
    for op in script:
        if op[0] == "wait":
            _, ns, key, seen, dt = op
            if key in waiting:
                continue
            r = h.wait(ns, key, seen, clock + dt)
            if pos.get(ns, UNKNOWN) > seen:
                assert r == pos[ns]
            else:
                assert r is None
                waiting[key] = (ns, seen, clock + dt)
        elif op[0] == "publish":
            _, ns, p = op
            got = h.publish(ns, p)
            old = pos.get(ns, UNKNOWN)
            want = set()
            if p > old:
                pos[ns] = p
                want = {k for k, (n, seen, _) in waiting.items() if n == ns and seen < p}
            assert keys(got) == want
            for k in want:
                del waiting[k]
        elif op[0] == "cancel":
            _, key = op
            assert h.cancel(key) == (key in waiting)
            waiting.pop(key, None)
        else:
            clock = max(clock, op[1])
            got = set(h.expire(clock))
            want = {k for k, (_, _, dl) in waiting.items() if dl <= clock}
            assert got == want
            for k in want:
                del waiting[k]
        assert h.waiting == len(waiting)
