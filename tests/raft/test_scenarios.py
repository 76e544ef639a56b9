"""Replays every scenario in `scenarios/*.txt` and compares it with its expected transcript.

Set RAFTBOX_REWRITE=1 to rewrite the files with the actual output, then review the diff: each
transcript is a claim about Raft's behaviour, not a snapshot to accept blindly.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from scenario import rewrite_requested, run_file

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


def test_there_are_scenarios():
    assert len(SCENARIOS) >= 8


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path: Path):
    expected, actual = run_file(path)
    if rewrite_requested():
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (expected)",
                tofile=f"{path.name} (actual)",
            )
        )
        pytest.fail(f"scenario {path.name} diverged (RAFTBOX_REWRITE=1 rewrites it):\n{diff}")
