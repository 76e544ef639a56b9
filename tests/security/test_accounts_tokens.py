"""Accounts and tokens an operator can manage (issue 11): `raftbox user list|disable|enable|
remove` and `raftbox token revoke` against a real `raftbox up`, and Dropbox's `auth/token/revoke`
through the official SDK on a 3-member cluster, where a revoked token, or a disabled or removed
account's, is refused by every member as soon as the call that took it away returned."""

from __future__ import annotations

import json
import subprocess

import dropbox
import pytest
from dropbox.exceptions import ApiError, AuthError

from api.procs import RAFTBOX, ApiCluster, UpServer, create_account_http, quiet_port
from api.sdk import connect


def cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAFTBOX, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def ok(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 0, f"raftbox {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def refused(dbx: dropbox.Dropbox, tag: str = "invalid_access_token") -> None:
    with pytest.raises(AuthError) as e:
        dbx.users_get_current_account()
    assert (
        e.value.error.is_user_suspended()
        if tag == "user_suspended"
        else (e.value.error.is_invalid_access_token())
    ), e.value.error


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    srv = UpServer(tmp_path_factory.mktemp("accounts-up"), quiet_port())
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def accounts(up: UpServer) -> dict[str, dict]:
    out = ok("user", "list", "--json", "--data", str(up.data))
    return {a["email"]: a for a in json.loads(out)}


def add_user(up: UpServer, email: str) -> tuple[str, str]:
    lines = ok("user", "add", email, "--data", str(up.data)).strip().splitlines()
    return lines[0].split()[1], lines[-1]


def test_user_list_disable_enable_remove_through_the_cli(up):
    data = str(up.data)
    account_id, token = add_user(up, "carol@example.test")
    dbx = connect(up.hostport, token, up.ca)
    dbx.files_upload(b"kept while disabled", "/notes.txt")
    listed = accounts(up)["carol@example.test"]
    assert listed == {"email": "carol@example.test", "account_id": account_id,
                      "display_name": "", "disabled": False, "tokens": 1}  # fmt: skip
    plain = ok("user", "list", "--data", data)
    assert "carol@example.test" in plain and account_id in plain and "active" in plain

    assert account_id in ok("user", "disable", "carol@example.test", "--data", data)
    refused(dbx, "user_suspended")
    assert accounts(up)["carol@example.test"]["disabled"] is True
    assert "disabled" in ok("user", "list", "--data", data)

    ok("user", "enable", "carol@example.test", "--data", data)
    _, body = dbx.files_download("/notes.txt")  # the data was kept
    assert body.content == b"kept while disabled"

    ok("user", "remove", "carol@example.test", "--data", data)
    refused(dbx)
    assert "carol@example.test" not in accounts(up)
    r = cli("user", "remove", "carol@example.test", "--data", data)
    assert r.returncode != 0 and "account_not_found" in r.stderr
    r = cli("user", "disable", "nobody@example.test", "--data", data)
    assert r.returncode != 0 and "account_not_found" in r.stderr

    # The email can be used again: a new account, empty, with a token that works; the old
    # token still does not.
    new_id, new_token = add_user(up, "carol@example.test")
    assert new_id != account_id
    again = connect(up.hostport, new_token, up.ca)
    assert again.users_get_current_account().account_id == new_id
    assert again.files_list_folder("").entries == []
    with pytest.raises(ApiError):
        again.files_download("/notes.txt")
    refused(dbx)


def test_token_revoke_through_the_cli(up, tmp_path):
    data = str(up.data)
    # --token: revoked at once.
    _, t1 = add_user(up, "dave@example.test")
    ok("token", "revoke", "--token", t1, "--data", data)
    refused(connect(up.hostport, t1, up.ca))
    r = cli("token", "revoke", "--token", t1, "--data", data)
    assert r.returncode != 0 and "invalid_access_token" in r.stderr

    # No --token: the token `raftbox login` saved.
    _, t2 = add_user(up, "erin@example.test")
    conf = str(tmp_path / "conf")
    ok("login", f"https://{up.hostport}", "--token", t2, "--ca", up.ca, "--config", conf)
    ok("token", "revoke", "--config", conf)
    refused(connect(up.hostport, t2, up.ca))

    # --email E --all (admin): every token of the account.
    _, t3 = add_user(up, "frank@example.test")
    assert accounts(up)["frank@example.test"]["tokens"] == 1
    out = ok("token", "revoke", "--email", "frank@example.test", "--all", "--data", data)
    assert "revoked 1" in out
    refused(connect(up.hostport, t3, up.ca))
    assert accounts(up)["frank@example.test"]["tokens"] == 0
    assert cli("token", "revoke", "--email", "frank@example.test", "--data", data).returncode == 2


def test_sdk_revoke_disable_and_remove_are_refused_by_every_member_at_once(tmp_path):
    c = ApiCluster(tmp_path, n=3)
    try:
        c.start()
        hps = [m.hostport for m in c.members.values()]
        admin = ["--admin-token", c.admin_token, "--ca", c.ca]

        def everywhere(token: str) -> list[dropbox.Dropbox]:
            return [connect(hp, token, c.ca) for hp in hps]

        # auth/token/revoke through member 2; then members 1, 2 and 3 refuse the token.
        _, token = create_account_http(hps[0], c.ca, c.admin_token, "gina@example.test")
        dbxs = everywhere(token)
        for d in dbxs:
            d.users_get_current_account()
        dbxs[1].auth_token_revoke()
        for d in dbxs:
            refused(d)

        # Disabled through member 3: every member answers user_suspended; enabled: all work.
        _, token = create_account_http(hps[0], c.ca, c.admin_token, "hal@example.test")
        dbxs = everywhere(token)
        for d in dbxs:
            d.users_get_current_account()
        server = ["--server", f"https://{hps[2]}", *admin]
        ok("user", "disable", "hal@example.test", *server)
        for d in dbxs:
            refused(d, "user_suspended")
        ok("user", "enable", "hal@example.test", *server)
        for d in dbxs:
            d.users_get_current_account()

        # Removed through member 1: every member refuses the token.
        ok("user", "remove", "hal@example.test", "--server", f"https://{hps[0]}", *admin)
        for d in dbxs:
            refused(d)
    except BaseException:
        print(c.tails())
        raise
    finally:
        c.stop()
