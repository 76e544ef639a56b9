"""The API's rate limiters (`raftbox.api.limits`) on a fake clock: refill, waits, and memory
bounded by evicting the least recently used key (never every client's bucket at once)."""

import pytest

from raftbox.api.limits import FailedAuthLimiter, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_waits_for_the_refill():
    clock = FakeClock()
    tb = TokenBucket(rate_per_s=2.0, burst=3, clock=clock)
    assert [tb.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert tb.take("a") == 0.5  # one request back after 1 / 2 s
    assert tb.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert tb.take("a") == 0.0
    assert tb.take("a") == 0.5
    clock.now += 60  # refills up to the burst, not beyond
    assert [tb.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_token_bucket_forgets_the_least_recently_used_key_not_every_key():
    clock = FakeClock()
    tb = TokenBucket(rate_per_s=1.0, burst=1, max_keys=3, clock=clock)
    assert tb.take("old") == 0.0
    assert tb.take("b") == 0.0
    assert tb.take("hot") == 0.0
    assert tb.take("hot") == 1.0  # limited, and just used
    for i in range(10):  # a flood of new keys
        tb.take(f"new-{i}")
        assert tb.take("hot") > 0  # still limited: its bucket is never dropped while in use
        assert len(tb.buckets) <= 3
    assert "old" not in tb.buckets and "b" not in tb.buckets
    assert tb.take("old") == 0.0  # forgotten: a fresh bucket


def test_failed_auth_limiter_refills_and_forgets_the_oldest_failure():
    clock = FakeClock()
    lim = FailedAuthLimiter(per_s=0.5, burst=2, max_addrs=2, clock=clock)
    assert lim.retry_after_s("a") == 0
    lim.failed("a")
    assert lim.retry_after_s("a") == 0  # one failure left
    lim.failed("a")
    assert lim.retry_after_s("a") == 2.0  # one failure back after 1 / 0.5 s
    clock.now += 1.0
    assert lim.retry_after_s("a") == 1.0
    clock.now += 1.0
    assert lim.retry_after_s("a") == 0
    lim.failed("a")  # "a" failed most recently
    lim.failed("b")
    lim.failed("c")  # over max_addrs: "a" failed longest ago, so it goes
    assert len(lim._buckets) == 2 and "a" not in lim._buckets
    assert lim.retry_after_s("a") == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenBucket(0, 1),
        lambda: TokenBucket(1, 0),
        lambda: TokenBucket(1, 1, max_keys=0),
        lambda: FailedAuthLimiter(per_s=0),
        lambda: FailedAuthLimiter(burst=0),
        lambda: FailedAuthLimiter(max_addrs=0),
    ],
)
def test_limiters_refuse_bounds_that_cannot_work(make):
    with pytest.raises(ValueError):
        make()
