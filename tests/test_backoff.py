"""`raftbox.backoff.Backoff`: the delays its docstring promises, checked on a seeded rng."""

from __future__ import annotations

import random

import pytest

from raftbox.backoff import Backoff


def test_delays_grow_exponentially_within_their_jitter_band_and_stop_at_the_cap():
    b = Backoff(random.Random(1), min_s=0.1, max_s=1.0)
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for cap in caps:
        d = b.next_delay_s()
        assert cap / 2 <= d <= cap
    assert b.failures == len(caps)


def test_reset_starts_again_from_the_minimum():
    b = Backoff(random.Random(2), min_s=0.05, max_s=2.0)
    for _ in range(10):
        b.next_delay_s()
    b.reset()
    assert b.failures == 0
    assert b.next_delay_s() <= 0.05


def test_the_same_seed_gives_the_same_delays_and_jitter_spreads_them():
    a, b = Backoff(random.Random(7), 0.1, 5.0), Backoff(random.Random(7), 0.1, 5.0)
    assert [a.next_delay_s() for _ in range(8)] == [b.next_delay_s() for _ in range(8)]
    spread = {Backoff(random.Random(s), 1.0, 1.0).next_delay_s() for s in range(20)}
    assert len(spread) == 20 and all(0.5 <= d <= 1.0 for d in spread)


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_nonsense_bounds_are_refused(args):
    with pytest.raises(ValueError):
        Backoff(random.Random(), *args)
