"""The replicated half of account management (issue 11): disable/enable, remove, revoke all —
pure state machine claims, each against a `MetaStore` driven as a Raft node would."""

from __future__ import annotations

import sqlite3

from meta.helpers import Driver, block, content_dump
from raftbox.meta import commands as C
from raftbox.meta.fsm import MetaStore

DAY_MS = 24 * 3600 * 1000


def test_disable_keeps_tokens_and_data_and_enable_undoes_it():
    d = Driver()
    ns = d.setup()
    d.put(ns, "/a.txt", b"a")
    before = content_dump(d.store)
    acct = d.apply(C.SetDisabled("A@EXAMPLE.COM", True))  # emails match case-insensitively
    assert isinstance(acct, C.AccountInfo) and acct.disabled and acct.home_ns == ns
    assert d.store.auth_token(b"tok-a").disabled is True
    assert d.store.resolve(ns, "/a.txt").name == "a.txt"
    after = d.apply(C.SetDisabled("a@example.com", False))
    assert after.disabled is False and d.store.auth_token(b"tok-a").disabled is False
    assert content_dump(d.store) == before
    missing = d.apply(C.SetDisabled("nobody@example.com", True))
    assert isinstance(missing, C.MetaError) and missing.tags == ["account_not_found"]


def test_revoke_all_takes_every_token_of_one_account_only():
    d = Driver()
    ns = d.setup()
    other = d.apply(C.CreateAccount("b@example.com", "B", b"tok-b"))
    acct = d.store.get_account(d.store.auth_token(b"tok-a").account_id)
    assert d.apply(C.AddToken(acct.account_id, b"tok-a2")) is None
    assert d.apply(C.RevokeTokens("a@example.com")) == C.Count(2)
    assert d.store.auth_token(b"tok-a") is None and d.store.auth_token(b"tok-a2") is None
    assert d.store.auth_token(b"tok-b").account_id == other.account_id
    assert d.store.get_account(acct.account_id).home_ns == ns  # the account stays
    assert [n for _, n in d.store.list_accounts()] == [0, 1]


def test_remove_deletes_every_row_of_the_namespace_and_frees_its_blocks_and_email():
    d = Driver()
    ns = d.setup()
    keep = d.apply(C.CreateAccount("b@example.com", "B", b"tok-b")).home_ns
    d.put(ns, "/dir/only-a.txt", b"only a")
    d.put(ns, "/shared.txt", b"shared")
    d.put(keep, "/shared.txt", b"shared")
    assert d.apply(C.SessionStart("s1", ns, blocks=[block(b"s")], length=1)) is None
    removed = d.apply(C.RemoveAccount("a@example.com"))
    assert isinstance(removed, C.AccountInfo) and removed.home_ns == ns
    dump = d.store.dump()
    for table in ("entries", "revisions", "journal", "ns_blocks", "upload_sessions"):
        assert not [r for r in dump[table] if r[0] == ns], table
    assert not dump["upload_pieces"]
    assert d.store.namespace_info(ns) is None and d.store.auth_token(b"tok-a") is None
    # Its blocks are garbage once nothing else holds them (no upload grace for the test).
    _, live = d.store.gc_mark(now_ms=d.now_ms + 30 * DAY_MS, upload_keep_ms=0)
    assert block(b"only a").id not in live and block(b"s").id not in live
    assert block(b"shared").id in live
    # A write to the old namespace changes nothing; the email is free again, with a new id.
    assert d.put(ns, "/late.txt", b"late").tags == ["invalid_command"]
    again = d.apply(C.CreateAccount("a@example.com", "A again", b"tok-a3"))
    assert again.account_id != removed.account_id and again.home_ns != ns
    assert d.store.list_folder(again.home_ns, "", False, False, 100).entries == []
    assert d.apply(C.RemoveAccount("nobody@example.com")).tags == ["account_not_found"]


def test_a_store_made_before_disabled_existed_is_migrated(tmp_path):
    path = str(tmp_path / "meta.db")
    d = Driver(MetaStore(path))
    d.setup()
    d.store.close()
    db = sqlite3.connect(path)  # as an older version left it: no `disabled` column
    db.executescript(
        "CREATE TABLE old AS SELECT account_id, email_key, email, display_name, home_ns, "
        "created_ms FROM accounts; DROP TABLE accounts; ALTER TABLE old RENAME TO accounts;"
    )
    db.close()
    store = MetaStore(path)
    try:
        assert store.auth_token(b"tok-a").disabled is False
        d2 = Driver(store, client_id=8)
        assert d2.apply(C.SetDisabled("a@example.com", True)).disabled is True
    finally:
        store.close()
