"""How a run is told to a person: one line per event, short forms of entries and hard states,
and the command that replays a seed.

An event is `(step, kind, args)`; the cluster keeps the last few for a failure report and, with
`-vv`, echoes every one as it happens. Nothing here decides anything.
"""

from __future__ import annotations

from ..harness import describe
from ..messages import Entry, EntryType, HardState
from .params import DEFAULT_STEPS


def entry_str(e: Entry) -> str:
    kind = "conf" if e.type == EntryType.CONF_CHANGE else "data"
    return f"entry {e.index} (term {e.term}, {kind} {e.data[:24]!r})"


def hs_str(hs: HardState) -> str:
    return f"t{hs.term}/v{hs.vote}/c{hs.commit}"


def format_event(ev: tuple) -> str:
    step, kind, args = ev
    if kind in ("deliver", "lose", "cut"):
        return f"{step:6d} {kind} {describe(args[0])}"
    if kind == "ready":
        mid, rd = args
        parts = []
        if rd.soft_state is not None:
            parts.append(f"soft={rd.soft_state.role.name}/lead{rd.soft_state.leader}")
        if rd.hard_state is not None:
            parts.append("hs=" + hs_str(rd.hard_state))
        if rd.snapshot is not None:
            parts.append(f"snap=i{rd.snapshot.meta.index}/t{rd.snapshot.meta.term}")
        if rd.entries:
            parts.append("ents=" + ",".join(f"t{e.term}/{e.index}" for e in rd.entries))
        if rd.committed_entries:
            ce = rd.committed_entries
            parts.append(f"apply={ce[0].index}..{ce[-1].index}")
        if rd.messages:
            parts.append(f"msgs={len(rd.messages)}")
        if rd.read_states:
            parts.append(f"reads={len(rd.read_states)}")
        if rd.must_sync:
            parts.append("sync")
        return f"{step:6d} ready {mid}: " + " ".join(parts)
    return f"{step:6d} {kind} " + " ".join(
        a.decode() if isinstance(a, bytes) else str(a) for a in args
    )


def replay_command(seed: int, steps: int, variant: str) -> str:
    """The command line that replays one seed exactly."""
    cmd = f"python -m raftbox.raft.sim --seeds 1 --seed {seed}"
    if steps != DEFAULT_STEPS:
        cmd += f" --steps {steps}"
    if variant != "correct":
        cmd += f" --variant {variant}"
    return cmd
