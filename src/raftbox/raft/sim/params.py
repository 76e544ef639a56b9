"""What one seed draws before its run: the cluster, its configuration, the fault rates, and the
scheduler's weights.

`draw_params` is the first use of the seed's `random.Random`, so every later decision of the run
depends on it; changing the order or the choices here changes every seed's run (and its
fingerprint). A broken variant's `bias` then edits the drawn values (see `variants.py`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_STEPS = 5000  # fault-phase steps per seed


@dataclass
class Params:
    """Everything a seed draws before the run: the cluster, its configuration, the fault rates."""

    n_voters: int
    election_ticks: int
    heartbeat_ticks: int
    pre_vote: bool
    check_quorum: bool
    max_inflight_msgs: int
    max_size_per_msg_bytes: int
    max_committed_size_per_ready_bytes: int | None
    snapshot_chunk_bytes: int
    durable_sm: bool
    loss: float  # per message
    dup: float  # per message
    delay_p: float  # probability a message is delayed
    max_delay_steps: int
    window: int  # delivery picks among the oldest `window` deliverable messages
    leader_async_write: float  # probability a leader's Ready is split (send now, write later)
    write_delay_steps: int  # a leader's write in flight takes up to this many steps
    crash_in_ready: float  # probability a crash strikes while a Ready is being handled
    crash_on_commit: float  # probability a leader crashes right after its commit index moves
    skew: float  # probability a member misses a tick
    w_tick: float
    w_deliver: float
    w_ready: float
    w_propose: float
    w_read: float
    w_compact: float
    w_conf: float
    w_transfer: float
    w_crash: float
    w_restart: float
    w_net: float

    def describe(self) -> str:
        """One line for a failure report."""
        return (
            f"voters={self.n_voters} election={self.election_ticks} "
            f"heartbeat={self.heartbeat_ticks} pre_vote={self.pre_vote} "
            f"check_quorum={self.check_quorum} inflight={self.max_inflight_msgs} "
            f"durable_sm={self.durable_sm} loss={self.loss} dup={self.dup} delay={self.delay_p}/"
            f"{self.max_delay_steps} window={self.window} leader_async={self.leader_async_write}/"
            f"{self.write_delay_steps} "
            f"crash_in_ready={self.crash_in_ready} crash_on_commit={self.crash_on_commit}"
        )


def draw_params(rng: random.Random) -> Params:
    def jitter(w: float) -> float:
        return w * rng.choice((0.0, 0.5, 1.0, 1.0, 2.0))

    return Params(
        n_voters=rng.randint(3, 7),
        election_ticks=rng.randint(8, 20),
        heartbeat_ticks=rng.randint(1, 3),
        pre_vote=rng.random() < 0.75,
        check_quorum=rng.random() < 0.75,
        max_inflight_msgs=rng.choice((1, 2, 4, 16, 256)),
        max_size_per_msg_bytes=rng.choice((1, 64, 256, 1 << 20)),
        max_committed_size_per_ready_bytes=rng.choice((None, 40, 256, 8 << 20)),
        snapshot_chunk_bytes=rng.choice((8, 24, 128, 1 << 20)),
        durable_sm=rng.random() < 0.5,
        loss=rng.choice((0.0, 0.01, 0.05, 0.15)),
        dup=rng.choice((0.0, 0.01, 0.05)),
        delay_p=rng.choice((0.0, 0.05, 0.2)),
        max_delay_steps=rng.choice((5, 20, 100)),
        window=rng.choice((1, 2, 4, 1000)),
        leader_async_write=rng.choice((0.0, 0.3, 0.8)),
        write_delay_steps=rng.choice((0, 5, 20)),
        crash_in_ready=rng.choice((0.0, 0.002, 0.01)),
        crash_on_commit=rng.choice((0.0, 0.0, 0.01)),
        skew=rng.choice((0.0, 0.1, 0.3)),
        w_tick=rng.choice((2.0, 3.0, 5.0, 8.0)),
        w_deliver=55.0,
        w_ready=rng.choice((10.0, 20.0, 30.0)),
        w_propose=4.0 * rng.choice((0.5, 1.0, 2.0)),
        w_read=jitter(1.5),
        w_compact=jitter(0.4),
        w_conf=jitter(0.4),
        w_transfer=jitter(0.15),
        w_crash=jitter(0.15),
        w_restart=1.0,
        w_net=jitter(0.4),
    )
