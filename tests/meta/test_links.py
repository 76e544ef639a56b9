"""Shared links in the state machine (`raftbox.meta.links`): one live link per owner and
target, following moves by id, revocation and expiry, owner-only changes, hashes only."""

import msgspec

from raftbox.meta import links as L
from raftbox.meta.commands import (
    CreateAccount,
    CreateLink,
    Delete,
    LinkInfo,
    MetaError,
    ModifyLink,
    Move,
    RemoveAccount,
    RevokeLink,
    decode_result,
)

from .helpers import Driver

KEY = b"k" * 32


def new(d: Driver, ns: int, owner: str, target_id: str, n: int = 1, **kw) -> tuple[str, object]:
    nonce = bytes([n]) * L.NONCE_BYTES
    token = L.link_token(KEY, nonce)
    r = d.apply(CreateLink(L.link_token_hash(token), nonce, owner, ns, target_id, **kw))
    return token, r


def setup():
    d = Driver()
    ns = d.setup()
    owner = d.store.list_accounts()[0][0].account_id
    f = d.put(ns, "/Docs/report.txt", b"hello")
    return d, ns, owner, f


def test_create_stores_the_hash_never_the_token_and_follows_a_move():
    d, ns, owner, f = setup()
    token, link = new(d, ns, owner, f.id)
    assert isinstance(link, LinkInfo) and link.owner == owner and link.target_id == f.id
    assert len(token) >= 22  # ≥ 128 bits, URL-safe
    assert L.token_well_formed(token)
    dump = repr(d.store.dump())
    assert token not in dump and token.encode().hex() not in dump
    d.apply(Move(ns, "/Docs/report.txt", "/Archive/old.txt"))
    live = L.live_link(d.store.db, L.link_token_hash(token), d.now_ms)
    assert live is not None and live.token_hash == link.token_hash
    # a result crosses msgpack to a follower and comes back typed
    assert decode_result(msgspec.msgpack.decode(msgspec.msgpack.encode(link))) == link


def test_one_live_link_per_owner_and_target():
    d, ns, owner, f = setup()
    _, first = new(d, ns, owner, f.id, 1)
    _, again = new(d, ns, owner, f.id, 2)
    assert isinstance(again, MetaError) and again.tags == ["shared_link_already_exists"]
    assert again.extra["token_hash"] == first.token_hash
    other = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b"))
    _, theirs = new(d, other.home_ns, other.account_id, f.id, 3)
    assert isinstance(theirs, MetaError) and theirs.tags == ["path", "not_found"]


def test_revoke_is_owner_only_and_final():
    d, ns, owner, f = setup()
    token, link = new(d, ns, owner, f.id)
    other = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b"))
    assert d.apply(RevokeLink(link.token_hash, other.account_id)).tags == [
        "shared_link_access_denied"
    ]
    assert d.apply(ModifyLink(link.token_hash, other.account_id, allow_download=False)).tags == [
        "shared_link_access_denied"
    ]
    assert isinstance(d.apply(RevokeLink(link.token_hash, owner)), LinkInfo)
    assert L.live_link(d.store.db, link.token_hash, d.now_ms) is None
    assert d.apply(RevokeLink(link.token_hash, owner)).tags == ["shared_link_not_found"]
    # after a revoke a new link may be made, with another token
    token2, link2 = new(d, ns, owner, f.id, 2)
    assert isinstance(link2, LinkInfo) and token2 != token


def test_expiry_deleted_target_and_removed_owner_end_a_link():
    d, ns, owner, f = setup()
    end = d.now_ms + 60_000
    _, link = new(d, ns, owner, f.id, expires_ms=end)
    assert L.live_link(d.store.db, link.token_hash, end - 1) is not None
    assert L.live_link(d.store.db, link.token_hash, end) is None
    d.advance(120_000)
    assert d.apply(RevokeLink(link.token_hash, owner)).tags == ["shared_link_not_found"]
    _, past = new(d, ns, owner, f.id, 2, expires_ms=d.now_ms - 1)
    assert past.tags == ["settings_error", "invalid_settings"]
    _, l3 = new(d, ns, owner, f.id, 3)
    d.apply(Delete(ns, "/Docs/report.txt"))
    assert L.live_link(d.store.db, l3.token_hash, d.now_ms) is None
    g = d.put(ns, "/g.txt", b"g")
    _, l4 = new(d, ns, owner, g.id, 4)
    d.apply(RemoveAccount("a@example.com"))
    assert L.get_link(d.store.db, l4.token_hash) is None


def test_modify_changes_only_what_it_names():
    d, ns, owner, f = setup()
    _, link = new(d, ns, owner, f.id, expires_ms=d.now_ms + 10**9)
    r = d.apply(ModifyLink(link.token_hash, owner, password_hash="$argon2id$x"))
    assert r.password_hash == "$argon2id$x" and r.expires_ms == link.expires_ms
    r = d.apply(ModifyLink(link.token_hash, owner, remove_expiration=True))
    assert r.expires_ms is None and r.password_hash == "$argon2id$x"
    r = d.apply(ModifyLink(link.token_hash, owner, password_hash="", allow_download=False))
    assert r.password_hash is None and r.allow_download is False
    bad = d.apply(ModifyLink(link.token_hash, owner, password_hash="plain"))
    assert bad.tags == ["invalid_command"]
    assert L.get_link(d.store.db, link.token_hash) == r


def test_malformed_tokens():
    assert not L.token_well_formed("")
    assert not L.token_well_formed("a" * (L.TOKEN_MAX_CHARS + 1))
    assert not L.token_well_formed("abc/def")
    assert not L.token_well_formed("é" * 10)
    assert L.token_well_formed(L.link_token(KEY, b"\0" * 16))


def test_owner_listing_pages_and_skips_dead_links():
    d, ns, owner, _ = setup()
    made = []
    for i in range(7):
        f = d.put(ns, f"/many/{i}.txt", b"%d" % i)
        made.append(new(d, ns, owner, f.id, i + 1)[1])
    d.apply(RevokeLink(made[3].token_hash, owner))
    seen, after = [], b""
    while True:
        page, after = L.links_of(d.store.db, owner, d.now_ms, after, limit=2)
        assert len(page) <= 2
        seen += page
        if after is None:
            break
    want = sorted((x for i, x in enumerate(made) if i != 3), key=lambda x: x.token_hash)
    assert [x.token_hash for x in seen] == [x.token_hash for x in want]
    assert L.links_of(d.store.db, "dbid:nobody", d.now_ms) == ([], None)


def test_a_link_to_a_shared_folders_top():
    """`ROOT_TARGET` names a shared folder's namespace, never a home namespace's root; the
    owner's link to a folder follows it when it is shared and back when it is unshared; a
    member's dies with the namespace."""
    from raftbox.meta.commands import AddMembers, MountFolder, ShareFolder, ShareMember, Unshare

    d, ns, owner, f = setup()
    _, home_root = new(d, ns, owner, L.ROOT_TARGET, 9)
    assert isinstance(home_root, MetaError) and home_root.tags == ["path", "not_found"]
    folder = d.store.get_metadata(ns, "/Docs")
    _, before = new(d, ns, owner, folder.id, 1)
    share = d.apply(ShareFolder(owner, "/Docs")).ns
    live = L.live_link(d.store.db, before.token_hash, d.now_ms)
    assert (live.ns, live.target_id) == (share, L.ROOT_TARGET)
    top = L.target_meta(d.store.db, live)
    assert (top.name, top.path_lower, top.id) == ("Docs", "", folder.id)
    bob = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b"))
    d.apply(AddMembers(owner, share, [ShareMember(bob.account_id, "")]))
    d.apply(MountFolder(bob.account_id, share))
    _, bobs = new(d, share, bob.account_id, L.ROOT_TARGET, 2)
    assert isinstance(bobs, LinkInfo)
    d.apply(Unshare(owner, share, leave_a_copy=True))
    assert L.live_link(d.store.db, bobs.token_hash, d.now_ms) is None
    back = L.live_link(d.store.db, before.token_hash, d.now_ms)
    assert (back.ns, back.target_id) == (ns, folder.id)
    assert d.store.list_folder(ns, back.target_id, False, False, 10).entries  # the content


def test_a_link_stored_to_a_mount_point_reads_as_the_shares_top():
    """A link stored (by an older version) to the folder entry its owner's mount point now is
    means the share's top, not that entry (which holds nothing)."""
    from raftbox.meta.commands import ShareFolder

    d, ns, owner, f = setup()
    folder = d.store.get_metadata(ns, "/Docs")
    _, link = new(d, ns, owner, folder.id)
    share = d.apply(ShareFolder(owner, "/Docs")).ns
    d.store.db.execute(  # as an older version left it
        "UPDATE shared_links SET ns = ?, target_id = ? WHERE token_hash = ?",
        (ns, folder.id, link.token_hash),
    )
    live = L.live_link(d.store.db, link.token_hash, d.now_ms)
    assert (live.ns, live.target_id) == (share, L.ROOT_TARGET)
    listed, _ = L.links_of(d.store.db, owner, d.now_ms)
    assert [(x.ns, x.target_id) for x in listed] == [(share, L.ROOT_TARGET)]
