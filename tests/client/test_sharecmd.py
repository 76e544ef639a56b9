"""`raftbox share` and `raftbox shares` against a real `raftbox up` (the `server` fixture):
share by email, see and accept the invitation, list members, leave."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from raftbox.admincli import user_add
from raftbox.cli import main
from raftbox.client.config import Config, save


def _account(server: dict, tmp_path: Path, name: str) -> tuple[str, Path]:
    """(email, config dir) of a fresh account, logged in."""
    email = f"{name}-{os.getpid()}-{tmp_path.name}@example.test"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert user_add(email, server["data"], None, None, None) == 0
    token = out.getvalue().strip().splitlines()[-1]
    cfg = tmp_path / name
    save(Config(server=server["url"], token=token, ca=server["ca"]), str(cfg))
    return email, cfg


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    def run(cfg: Path, *argv: str) -> tuple[int, str, str]:
        status = main([argv[0], "--config", str(cfg), *argv[1:]])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_share_accept_members_leave(server, tmp_path: Path, run) -> None:
    _, alice = _account(server, tmp_path, "alice")
    bob_email, bob = _account(server, tmp_path, "bob")
    carol_email, carol = _account(server, tmp_path, "carol")
    src = tmp_path / "a.txt"
    src.write_text("hello")
    assert run(alice, "put", str(src), "/Project/a.txt")[0] == 0
    status, out, err = run(alice, "share", "/Project", "--with", bob_email)
    assert status == 0, err
    assert out.startswith("/Project shared (id ") and "as editor" in out
    sfid = out.split("(id ", 1)[1].split(")", 1)[0]
    status, out, _ = run(alice, "share", "Project", "--with", carol_email, "--viewer")
    assert status == 0 and "already shared" in out and "as viewer" in out
    status, out, _ = run(bob, "shares")
    assert status == 0 and f"raftbox shares --accept {sfid}" in out and "not mounted" in out
    status, out, _ = run(bob, "shares", "--accept", sfid)
    assert status == 0 and out.strip() == "mounted Project at /Project"
    status, out, _ = run(bob, "ls", "/Project")
    assert out.split() == ["a.txt"]
    status, out, _ = run(bob, "shares")
    assert f"{sfid}  editor   /Project" in out
    status, out, _ = run(alice, "shares", "--members", sfid)
    lines = out.splitlines()
    assert lines[0].startswith("owner") and f"editor   {bob_email}" in lines
    assert f"viewer   {carol_email} (invited)" in lines or any(carol_email in ln for ln in lines)
    status, out, _ = run(bob, "shares", "--leave", sfid, "--keep-copy")
    assert status == 0 and "kept a copy" in out
    assert run(bob, "ls", "/Project")[1].split() == ["a.txt"]  # its own copy now
    status, _, err = run(carol, "shares", "--leave", "999999")
    assert status == 1 and err.startswith("raftbox: sharing/relinquish_folder_membership: ")
