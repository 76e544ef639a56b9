"""Sign-in attempts are rate-limited per account and per client address (issue 14).

Its own `raftbox up` (the limits are per process, and this test spends this address's budget):
ten failures for one email lock that email (even the right password gets 429 with Retry-After)
while another account still signs in from the same address; twenty failures from one address
lock the address, whatever the email. A refused attempt sets no cookie.
"""

from __future__ import annotations

import pytest

from raftbox.web.auth import WebAuth

from .webup import WebUp


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = WebUp(tmp_path_factory.mktemp("webrate"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _login(up: WebUp, email: str, password: str):
    return up.http().post(
        up.url + "/web/login", json={"email": email, "password": password}, timeout=30
    )


def test_sign_in_rate_limits(up):
    defaults = WebAuth(None)
    per_account = defaults.account_failures.burst
    per_addr = defaults.addr_failures.burst
    assert per_account < per_addr
    up.add_user("victim@example.test", "victim-password-1")
    for _ in range(per_account):
        assert _login(up, "victim@example.test", "guess-guess").status_code == 401
    r = _login(up, "victim@example.test", "victim-password-1")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "Set-Cookie" not in r.headers
    r = _login(up, "VICTIM@example.test", "victim-password-1")  # emails match casefolded
    assert r.status_code == 429
    # the address still has budget: another account signs in
    assert _login(up, "you@localhost", up.password).status_code == 200
    # spend the rest of the address's budget on emails that do not exist (it refills slowly
    # meanwhile, one failure per 1/login_fail_per_s: a slow machine may need a few more)
    statuses = []
    for i in range(per_addr):
        statuses.append(_login(up, f"nobody{i}@example.test", "guess-guess").status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
    assert len(statuses) > per_addr - per_account
    r = _login(up, "you@localhost", up.password)
    assert r.status_code == 429 and "Set-Cookie" not in r.headers
    # bearer-token API calls are not sign-ins: they keep working
    assert up.dbx().users_get_current_account().email == "you@localhost"
