"""What the client holds back from the server's tree (`limits`), and dates it clamps."""

from __future__ import annotations

from raftbox.client.limits import (
    DEPTH_MAX,
    MTIME_MAX_NS,
    MTIME_MIN_NS,
    LocalLimits,
    clamp_mtime_ns,
    held_entries,
)
from raftbox.client.remote import format_ts, parse_ts_ns
from raftbox.client.trees import Kind, Node


def test_dates_are_clamped_both_ways() -> None:
    assert parse_ts_ns("9999-12-31T23:59:59Z") == MTIME_MAX_NS
    assert parse_ts_ns("2263-01-01T00:00:00Z") == MTIME_MAX_NS
    assert parse_ts_ns("0001-01-01T00:00:00Z") == MTIME_MIN_NS
    assert parse_ts_ns("2024-05-01T12:00:00Z") == 1714564800 * 10**9
    assert parse_ts_ns(20240501) is None and parse_ts_ns("soon") is None
    assert clamp_mtime_ns(MTIME_MAX_NS + 1) == MTIME_MAX_NS
    # What goes up stays within what every server accepts.
    assert format_ts(MTIME_MAX_NS) == "2199-12-31T23:59:59Z"
    assert format_ts(MTIME_MIN_NS) == "1970-01-01T00:00:00Z"
    assert format_ts(1714564800 * 10**9) == "2024-05-01T12:00:00Z"


def test_names_paths_and_depths_this_file_system_cannot_hold() -> None:
    lim = LocalLimits(name_max_bytes=143, path_max_bytes=4096, root_bytes=100)
    assert lim.problem("/ok/" + "n" * 143) is None
    assert "name too long" in (lim.problem("/ok/" + "é" * 72) or "")  # 144 bytes
    assert lim.problem("/" + "/".join(["d" * 100] * 39)) is None  # 3939 + 100 + 1 bytes
    assert "path too long" in (lim.problem("/" + "/".join(["d" * 100] * 40)) or "")


def test_held_entries_are_the_outermost_ones() -> None:
    lim = LocalLimits(name_max_bytes=10, path_max_bytes=4096, root_bytes=10)
    deep = ["/z"]
    for _ in range(DEPTH_MAX + 3):
        deep.append(deep[-1] + "/d")
    nodes = [
        Node("/fine", Kind.FOLDER),
        Node("/fine/x", Kind.FILE, content_hash="h"),
        Node("/LongFolderName", Kind.FOLDER),
        Node("/LongFolderName/also-too-long", Kind.FILE, content_hash="h"),
        Node("/LongFolderName/y", Kind.FILE, content_hash="h"),
        *(Node(p, Kind.FOLDER) for p in deep),
    ]
    got = held_entries(nodes, lim)
    assert [p for p, _ in got] == ["/LongFolderName", deep[DEPTH_MAX - 1]]
    assert "name too long" in got[0][1] and "deeper than" in got[1][1]
