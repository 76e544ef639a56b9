"""`raftbox.workers`' pure parts: when a worker is restarted and when the supervisor gives up,
each worker's connection cap, and which roles may have workers (`ServeConfig.validate`)."""

from __future__ import annotations

import pytest

from raftbox.server import ConfigError, ServeConfig
from raftbox.workers import (
    FD_RESERVE,
    GiveUp,
    Policy,
    Restart,
    connection_cap,
    on_exit,
    parse_worker,
)

P = Policy(start_failures_max=3, healthy_after_s=30.0)


def test_a_worker_that_served_is_restarted_and_its_start_failures_forgotten():
    assert on_exit(P, True, 5.0, -9, 2) == (Restart(reset_backoff=False), 0)
    assert on_exit(P, True, 31.0, 1, 2) == (Restart(reset_backoff=True), 0)


def test_consecutive_start_failures_end_in_giving_up_with_a_non_zero_status():
    d, n = on_exit(P, False, 0.0, 1, 0)
    assert d == Restart(reset_backoff=False) and n == 1
    d, n = on_exit(P, False, 0.0, 1, n)
    assert isinstance(d, Restart) and n == 2
    d, n = on_exit(P, False, 0.0, 1, n)
    assert isinstance(d, GiveUp) and d.exit_status == 1 and n == 3


@pytest.mark.parametrize("status", [78, 2])
def test_a_configuration_refused_by_a_worker_gives_up_at_once_with_its_status(status):
    d, _ = on_exit(P, False, 0.0, status, 0)
    assert isinstance(d, GiveUp) and d.exit_status == status


def test_the_connection_cap_stays_below_the_open_file_limit():
    assert connection_cap(1_000_000, 20_000) == 20_000 - FD_RESERVE
    assert connection_cap(100_000, 20_000) == 20_000 - FD_RESERVE
    assert connection_cap(5_000, 20_000) == 5_000
    assert connection_cap(100_000, 10) == 1


def test_a_worker_cap_comes_from_the_limit_and_an_explicit_cap_is_kept():
    cfg = _cfg(roles=("block",), meta_urls=("https://m",), worker=(1, 2))
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert cfg.http_limits().connections_max == connection_cap(100_000, soft)
    cfg.max_connections = 7
    assert cfg.http_limits().connections_max == 7


def test_parse_worker():
    assert parse_worker("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x", "1/2/3", ""):
        with pytest.raises(ValueError):
            parse_worker(bad)


def _cfg(**kw) -> ServeConfig:
    return ServeConfig(
        node_id=0, data="/nonexistent", listen=("127.0.0.1", 0), peer_listen=("127.0.0.1", 0),
        peers={}, admin_token="rbxadmin_x", **kw,
    )  # fmt: skip


def test_workers_are_for_a_blockserver_or_a_notify_leaf_only():
    _cfg(roles=("block",), meta_urls=("https://m",), workers=4).validate()
    _cfg(roles=("notify",), notify_roots=("https://r",), workers=2).validate()
    for kw in (
        dict(roles=("notify",), meta_urls=("https://m",), workers=2),  # a root
        dict(roles=("block",), meta_urls=("https://m",), workers=0),
    ):
        with pytest.raises(ConfigError, match="--workers"):
            _cfg(**kw).validate()
    member = ServeConfig(node_id=1, data="/nonexistent", listen=("127.0.0.1", 0),
                         peer_listen=("127.0.0.1", 0), peers={}, workers=2)  # fmt: skip
    with pytest.raises(ConfigError, match="--workers"):
        member.validate()
