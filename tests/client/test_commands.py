"""The file commands (`raftbox login/ls/put/get/rm/mv/revs/restore`) against a real `raftbox up`.

One `raftbox up` process for the module (the `server` fixture of conftest.py). Commands run
in-process through `raftbox.cli.main` with `--config` pointing at a per-test directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raftbox.cli import main
from raftbox.client.config import load

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))


@pytest.fixture
def cli(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Log in (config in a per-test dir); returns run(*argv) -> (status, stdout, stderr)."""
    cfg = tmp_path / "cfg"

    def run(*argv: str) -> tuple[int, str, str]:
        status = main([argv[0], "--config", str(cfg), *argv[1:]])
        out, err = capsys.readouterr()
        return status, out, err

    status, out, err = run("login", server["url"], "--token", server["token"], "--ca", server["ca"])
    assert status == 0, err
    return run


def test_login_stores_config_0600(server, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c"
    assert main(["login", server["url"], "--token", server["token"], "--ca", server["ca"],
                 "--config", str(cfg)]) == 0  # fmt: skip
    st = os.stat(cfg / "config.json")
    assert stat.S_IMODE(st.st_mode) == 0o600
    c = load(cfg)
    assert (c.server, c.token, c.ca) == (server["url"], server["token"], server["ca"])


def test_login_env_and_xdg(server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RAFTBOX_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["login", server["url"], "--token", server["token"], "--ca", server["ca"]]) == 0
    assert (tmp_path / "xdg" / "raftbox" / "config.json").exists()
    monkeypatch.setenv("RAFTBOX_CONFIG_DIR", str(tmp_path / "env"))
    assert main(["login", server["url"], "--token", server["token"], "--ca", server["ca"]]) == 0
    assert load().server == server["url"]


def test_login_bad_token_fails_one_line(server, tmp_path: Path, capsys) -> None:
    status = main(["login", server["url"], "--token", "nope", "--ca", server["ca"],
                   "--config", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and err.startswith("raftbox: ")
    assert not (tmp_path / "c" / "config.json").exists()


def test_not_logged_in(tmp_path: Path, capsys) -> None:
    assert main(["ls", "--config", str(tmp_path / "none")]) == 1
    assert "not logged in" in capsys.readouterr().err


def test_put_ls_get_roundtrip(cli, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello raftbox\n")
    os.utime(src, (1_600_000_000, 1_600_000_000))
    status, out, err = cli("put", str(src), "/t1/hello.txt")
    assert status == 0, err
    status, out, _ = cli("ls", "/t1")
    assert out.splitlines() == ["hello.txt"]
    status, out, _ = cli("ls", "/t1", "-l")
    assert "14" in out and "/t1/hello.txt" in out
    dst = tmp_path / "back.txt"
    status, out, err = cli("get", "/t1/hello.txt", str(dst))
    assert status == 0, err
    assert dst.read_bytes() == b"hello raftbox\n"
    assert dst.stat().st_mtime == 1_600_000_000  # client_modified round-trips
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # into a folder: keeps the name
    (tmp_path / "d").mkdir()
    assert cli("get", "/t1/hello.txt", str(tmp_path / "d"))[0] == 0
    assert (tmp_path / "d" / "hello.txt").read_bytes() == b"hello raftbox\n"


def test_put_into_folder_and_recursive_ls(cli, tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(os.urandom(1000))
    assert cli("put", str(f), "/t2/sub/")[0] == 0
    assert cli("put", str(f), "/t2/sub")[0] == 0  # an existing folder: keeps the name too
    status, out, _ = cli("ls", "/t2", "-R")
    assert out.splitlines() == ["sub/", "sub/a.bin"]
    status, out, _ = cli("ls")
    assert "t2/" in out.splitlines()


def test_big_file_goes_through_a_session(cli, tmp_path: Path, monkeypatch) -> None:
    from raftbox.client import api

    monkeypatch.setattr(api, "SESSION_THRESHOLD", 64 * 1024)
    monkeypatch.setattr(api, "CHUNK_BYTES", 100 * 1024)
    routes: list[str] = []
    real = api.Api.upload_call

    def spy(self, route, arg, data):
        routes.append(route)
        return real(self, route, arg, data)

    monkeypatch.setattr(api.Api, "upload_call", spy)
    data = os.urandom(350 * 1024)
    (tmp_path / "big").write_bytes(data)
    status, _, err = cli("put", str(tmp_path / "big"), "/t3/big")
    assert status == 0, err
    assert cli("get", "/t3/big", str(tmp_path / "big2"))[0] == 0
    assert (tmp_path / "big2").read_bytes() == data
    assert routes == ["files/upload_session/start"] + ["files/upload_session/append_v2"] * 3 + [
        "files/upload_session/finish"
    ]


def test_mv_rm_and_errors(cli, tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    assert cli("put", str(tmp_path / "x"), "/t4/x")[0] == 0
    status, out, err = cli("mv", "/t4/x", "/t4/y")
    assert status == 0, err
    assert cli("ls", "/t4")[1].splitlines() == ["y"]
    status, _, err = cli("get", "/t4/x", str(tmp_path / "nope"))
    assert status == 1 and "not_found" in err and err.count("\n") == 1
    assert not (tmp_path / "nope").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert cli("rm", "/t4/y")[0] == 0
    assert cli("ls", "/t4")[1] == ""
    status, _, err = cli("rm", "/t4/y")
    assert status == 1 and "not_found" in err
    status, _, err = cli("ls", "/nowhere")
    assert status == 1 and "not_found" in err


def test_revs_and_restore(cli, tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_bytes(b"one")
    assert cli("put", str(f), "/t5/r.txt")[0] == 0
    f.write_bytes(b"two!")
    assert cli("put", str(f), "/t5/r.txt")[0] == 0
    status, out, err = cli("revs", "/t5/r.txt")
    assert status == 0, err
    revs = [line.split()[0] for line in out.splitlines()]
    assert len(revs) == 2
    old = min(revs)
    status, out, err = cli("restore", "/t5/r.txt", old)
    assert status == 0, err
    assert cli("get", "/t5/r.txt", str(tmp_path / "r2"))[0] == 0
    assert (tmp_path / "r2").read_bytes() == b"one"


def test_non_ascii_names(cli, tmp_path: Path) -> None:
    f = tmp_path / "café ☃.txt"
    f.write_bytes("ünïcode".encode())
    status, _, err = cli("put", str(f), "/t6/Résumé ☃.txt")
    assert status == 0, err
    assert cli("ls", "/t6")[1].splitlines() == ["Résumé ☃.txt"]
    assert cli("get", "/t6/résumé ☃.txt", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out").read_bytes() == "ünïcode".encode()


def test_exit_status_through_the_entry_point(server, tmp_path: Path) -> None:
    cfg = str(tmp_path / "cfg")
    login = [RAFTBOX, "login", server["url"], "--token", server["token"], "--ca", server["ca"]]
    assert subprocess.run([*login, "--config", cfg], capture_output=True).returncode == 0
    r = subprocess.run([RAFTBOX, "rm", "/no/such", "--config", cfg], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [r.stderr.strip()] and "not_found" in r.stderr
