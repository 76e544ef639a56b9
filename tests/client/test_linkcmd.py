"""`raftbox link / links / unlink` against a real `raftbox up` (the module's `server`), run
in-process through `raftbox.cli.main`, and the URL fetched as a stranger."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
import requests

from raftbox.cli import main
from raftbox.client.linkcmd import expires_at


@pytest.fixture
def cli(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = tmp_path / "cfg"

    def run(*argv: str) -> tuple[int, str, str]:
        status = main([argv[0], "--config", str(cfg), *argv[1:]])
        out, err = capsys.readouterr()
        return status, out, err

    status, _, err = run("login", server["url"], "--token", server["token"], "--ca", server["ca"])
    assert status == 0, err
    return run


def fetch(server, url: str, **params) -> requests.Response:
    with requests.Session() as s:
        s.verify = server["ca"]
        s.trust_env = False
        return s.get(url, params=params, timeout=30)


def test_expires_durations_and_dates() -> None:
    now = dt.datetime(2027, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert expires_at("90s", now) == "2027-01-01T12:01:30Z"
    assert expires_at("7d", now) == "2027-01-08T12:00:00Z"
    assert expires_at("2w", now) == "2027-01-15T12:00:00Z"
    assert expires_at("2027-02-01", now) == "2027-02-01T00:00:00Z"
    assert expires_at("2027-02-01T10:00:00Z", now) == "2027-02-01T10:00:00Z"
    for bad in ("yesterday", "2026-12-31", "0s", "-5m", "5y"):
        with pytest.raises(ValueError):
            expires_at(bad, now)


def test_link_links_unlink(cli, server, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "shared.txt"
    src.write_bytes(b"for everyone\n")
    assert cli("put", str(src), "/cli-links/shared.txt")[0] == 0
    status, out, err = cli("link", "/cli-links/shared.txt")
    assert status == 0, err
    url = out.split()[0]
    assert url.startswith(server["url"] + "/s/")
    assert fetch(server, url, dl="1").content == b"for everyone\n"
    # again: the same link, not a second one
    status, out, _ = cli("link", "/cli-links/shared.txt", "--expires", "7d")
    assert status == 0 and out.split()[0] == url and "expires" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2 pw\n"))
    status, out, err = cli("link", "/cli-links/shared.txt", "--password", "--no-expiry")
    assert status == 0, err
    assert "password" in out and "expires" not in out
    assert 'type="password"' in fetch(server, url, dl="1").text
    status, out, _ = cli("links")
    assert status == 0 and url in out and "/cli-links/shared.txt" in out and "password" in out
    status, out, _ = cli("unlink", url)
    assert status == 0
    assert fetch(server, url, dl="1").status_code == 404
    assert url not in cli("links")[1]
    status, _, err = cli("unlink", url)
    assert status == 1 and "shared_link_not_found" in err and err.count("\n") == 1
    status, _, err = cli("link", "/cli-links/nothing.txt")
    assert status == 1 and "path/not_found" in err
    status, _, err = cli("link", "/cli-links/shared.txt", "--expires", "soon")
    assert status == 1 and "--expires" in err
