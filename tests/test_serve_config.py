"""`ServeConfig.validate`: every rule about which roles need which settings, in one place, and the
CLI printing its message as a usage error before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftbox import cli
from raftbox.server import ConfigError, ServeConfig, Server, up_config

PEER = ("127.0.0.1", 0)


def member(tmp_path: Path, **kw) -> ServeConfig:
    base = dict(node_id=1, data=str(tmp_path), listen=PEER, peer_listen=PEER, peers={1: PEER})
    return ServeConfig(**{**base, **kw})


def without_meta(tmp_path: Path, roles: tuple[str, ...], **kw) -> ServeConfig:
    base = dict(node_id=0, data=str(tmp_path), listen=PEER, peer_listen=PEER, peers={},
                roles=roles, admin_token="rbxadmin_x")  # fmt: skip
    return ServeConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAFTBOX_ADMIN_TOKEN", raising=False)


def test_the_usual_configurations_are_valid(tmp_path: Path) -> None:
    member(tmp_path).validate()
    up_config(str(tmp_path), PEER).validate()
    without_meta(tmp_path, ("block",), meta_urls=("https://m1",), plain_http=True).validate()
    without_meta(tmp_path, ("notify",), meta_urls=("https://m1",)).validate()
    without_meta(tmp_path, ("notify",), notify_roots=("https://r1",)).validate()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: member(t, roles=("meta", "web")), "unknown role(s) web"),
        (lambda t: member(t, compress_level=23), "--compress-level"),
        (lambda t: member(t, gc_grace_s=60, cache_present_ttl_s=60), "--gc-grace-s"),
        (lambda t: member(t, node_id=0), "the meta role needs --node-id"),
        (lambda t: member(t, peers={1: PEER, 2: PEER}), "mutual TLS on its peer port"),
        (lambda t: member(t, join=True), "mutual TLS on its peer port"),
        (lambda t: member(t, plain_http=True), "--plain-http is for block- or notify-only"),
        (
            lambda t: without_meta(t, ("block", "notify"), meta_urls=("https://m",)),
            "the block role or the notify role",
        ),  # fmt: skip
        (lambda t: without_meta(t, ("block",)), "a blockserver) needs --meta"),
        (lambda t: without_meta(t, ("notify",)), "--meta (a root) or --notify-root (a leaf)"),
        (
            lambda t: without_meta(
                t, ("notify",), meta_urls=("https://m",), notify_roots=("https://r",)
            ),
            "--notify-root (a leaf)",
        ),  # fmt: skip
        (
            lambda t: without_meta(t, ("block",), meta_urls=("https://m",), admin_token=None),
            "needs the cluster's --admin-token",
        ),  # fmt: skip
    ],
)
def test_a_configuration_that_cannot_work_is_one_config_error(tmp_path: Path, make, message):
    cfg = make(tmp_path / "data")
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert message in str(e.value)
    with pytest.raises(ConfigError):
        Server(cfg)  # the process refuses it too, before touching anything
    assert not (tmp_path / "data").exists()


def test_the_admin_token_may_come_from_the_environment_or_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = without_meta(tmp_path, ("block",), meta_urls=("https://m",), admin_token=None)
    monkeypatch.setenv("RAFTBOX_ADMIN_TOKEN", "rbxadmin_env")
    cfg.validate()
    monkeypatch.delenv("RAFTBOX_ADMIN_TOKEN")
    (tmp_path / "admin.token").write_text("rbxadmin_file\n")
    cfg.validate()


def test_the_cli_prints_the_message_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--roles", "block", "--data", str(tmp_path / "d"), "--listen",
            "127.0.0.1:1", "--admin-token", "rbxadmin_x"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "a block-only process (a blockserver) needs --meta" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
