"""Passwords, administrators and browser sessions in the state machine (`raftbox.meta.webstate`):
applied from the log like every command, so every replica agrees; expiry is the entry's stamp."""

from __future__ import annotations

import hashlib

from raftbox.meta import webstate
from raftbox.meta.commands import (
    AccountInfo,
    CreateAccount,
    InitCluster,
    MetaError,
    RemoveAccount,
)
from raftbox.meta.webcmds import EndWebSession, SetAuth, StartWebSession

from .helpers import SECRET, Driver


def _h(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


def _driver() -> tuple[Driver, AccountInfo]:
    d = Driver()
    d.apply(InitCluster(SECRET))
    acct = d.apply(CreateAccount("A@example.test", "A"))
    assert isinstance(acct, AccountInfo)
    return d, acct


def test_set_auth_and_read_back():
    d, acct = _driver()
    db = d.store.db
    assert webstate.auth_of_email(db, "a@example.test") == (acct, "", False)
    assert isinstance(d.apply(SetAuth("a@EXAMPLE.test", "$argon2id$x", True)), AccountInfo)
    assert webstate.auth_of_email(db, "A@example.test") == (acct, "$argon2id$x", True)
    d.apply(SetAuth("a@example.test", admin=False))  # the password is kept
    assert webstate.auth_of_email(db, "a@example.test") == (acct, "$argon2id$x", False)
    r = d.apply(SetAuth("nobody@example.test", "$argon2id$y"))
    assert isinstance(r, MetaError) and r.tags == ["account_not_found"]
    r = d.apply(SetAuth("a@example.test", "x" * 10_000))
    assert isinstance(r, MetaError) and r.tags == ["invalid_command"]


def test_session_expiry_is_the_entry_stamp_plus_ttl():
    d, acct = _driver()
    db = d.store.db
    assert d.apply(StartWebSession(_h("s1"), acct.account_id, 60_000)) is None
    started = d.now_ms
    assert webstate.session(db, _h("s1"), started + 59_999) == (acct, False)
    assert webstate.session(db, _h("s1"), started + 60_000) is None
    assert webstate.session(db, _h("other"), started) is None
    # the next session start forgets the expired ones
    d.apply(StartWebSession(_h("s2"), acct.account_id, 60_000), advance_ms=120_000)
    assert not webstate.has_session(db, _h("s1")) and webstate.has_session(db, _h("s2"))


def test_end_session_and_new_password_end_sessions():
    d, acct = _driver()
    db = d.store.db
    for s in ("s1", "s2", "s3"):
        d.apply(StartWebSession(_h(s), acct.account_id, 3_600_000))
    assert d.apply(EndWebSession(_h("s1"))) is True
    assert d.apply(EndWebSession(_h("s1"))) is False
    d.apply(SetAuth("a@example.test", admin=True))  # not a new password: sessions stay
    assert webstate.has_session(db, _h("s2"))
    d.apply(SetAuth("a@example.test", "$argon2id$new"))
    assert not webstate.has_session(db, _h("s2")) and not webstate.has_session(db, _h("s3"))


def test_bad_session_commands_change_nothing():
    d, acct = _driver()
    for cmd in (
        StartWebSession(b"short", acct.account_id, 1000),
        StartWebSession(_h("s"), acct.account_id, 0),
        StartWebSession(_h("s"), acct.account_id, webstate.SESSION_TTL_MS_MAX + 1),
        StartWebSession(_h("s"), "dbid:nope", 1000),
    ):
        assert isinstance(d.apply(cmd), MetaError)
    assert d.store.db.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0


def test_sessions_per_account_are_bounded():
    d, acct = _driver()
    n = webstate.SESSIONS_PER_ACCOUNT_MAX
    for i in range(n + 5):
        d.apply(StartWebSession(_h(f"s{i}"), acct.account_id, 3_600_000))
    db = d.store.db
    assert db.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == n
    assert not webstate.has_session(db, _h("s0")) and webstate.has_session(db, _h(f"s{n + 4}"))


def test_remove_account_forgets_password_and_sessions():
    d, acct = _driver()
    d.apply(SetAuth("a@example.test", "$argon2id$x", True))
    d.apply(StartWebSession(_h("s"), acct.account_id, 3_600_000))
    d.apply(RemoveAccount("a@example.test"))
    db = d.store.db
    assert db.execute("SELECT COUNT(*) FROM account_auth").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0
