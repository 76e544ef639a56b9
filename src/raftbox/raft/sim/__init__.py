"""Deterministic simulation of a raftbox Raft cluster (the TigerBeetle/FoundationDB way).

One seed is one run: a single `random.Random(seed)` draws a cluster of `RawNode`s, its
configuration and fault rates, then every decision of a scheduler that plays the application's
part for every member under crashes, torn writes and a hostile network, checking the Raft
paper's safety properties after every step and liveness at the end. A run is a pure function of
(seed, steps, variant), so any failure replays from the command its report prints.

Where things are (read `invariants.py` first):

| file            | what it holds                                                               |
| --------------- | --------------------------------------------------------------------------- |
| invariants.py   | the claims checked, each with its paper reference; `Invariant`, `SimFailure` |
| faults.py       | the disk that loses unsynced writes, the network that loses/delays/cuts     |
| variants.py     | deliberately broken cores, each caught within so many seeds (tests/sim/)    |
| cluster.py      | `Sim`: the members and the seeded scheduler (the step table), liveness      |
| params.py       | what a seed draws before its run                                            |
| statemachine.py | the simulated application: a hash chain over the applied entries            |
| trace.py        | events and reports for people, the replay command                           |
| cli.py          | `python -m raftbox.raft.sim --seeds N -j 2` (`make sim`)                    |
"""

from .cli import main, run_seed, run_seeds
from .cluster import Member, Result, Sim
from .faults import Disk, Network
from .invariants import Checker, Invariant, SimFailure
from .params import DEFAULT_STEPS, Params, draw_params
from .statemachine import StateMachine
from .trace import replay_command
from .variants import VARIANTS, Variant

__all__ = [
    "DEFAULT_STEPS",
    "VARIANTS",
    "Checker",
    "Disk",
    "Invariant",
    "Member",
    "Network",
    "Params",
    "Result",
    "Sim",
    "SimFailure",
    "StateMachine",
    "Variant",
    "draw_params",
    "main",
    "replay_command",
    "run_seed",
    "run_seeds",
]
