"""Carrying out a `planner.Plan`: the disk and server side of one sync pass (see `core`)."""

from .core import (
    GROUP_BYTES,
    GROUP_FILES,
    SMALL_BYTES,
    STREAM_BYTES,
    TMP_DIR,
    TRANSFERS_IN_FLIGHT,
    Counters,
    Executor,
    Outcome,
    Progress,
    clean_tmp,
)

__all__ = [
    "GROUP_BYTES",
    "GROUP_FILES",
    "SMALL_BYTES",
    "STREAM_BYTES",
    "TMP_DIR",
    "TRANSFERS_IN_FLIGHT",
    "Counters",
    "Executor",
    "Outcome",
    "Progress",
    "clean_tmp",
]
