"""The access log's time stamp (formatted once a second) is the one strftime would give."""

from __future__ import annotations

import datetime
import random

from raftbox.api.accesslog import _stamp


def test_stamp_matches_strftime():
    rng = random.Random(16)
    times = [0.0, 1.9994, 59.0, 1765000000.123] + [rng.uniform(0, 2e9) for _ in range(20_000)]
    times += [1765000000 + i / 997 for i in range(3000)]  # many requests within each second
    for t in times:
        d = datetime.datetime.fromtimestamp(t, datetime.UTC)
        want = d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
        assert _stamp(t) == want, t
