"""Search by name (`raftbox.meta.search`) and temporary link tokens (`raftbox.meta.templinks`) on a
MetaStore: what matches, the bound on one call's work, and when a link stops giving its file."""

import base64

import msgspec
import pytest

from raftbox.meta import search
from raftbox.meta import templinks as links
from raftbox.meta.commands import (
    Copy,
    CreateFolder,
    Delete,
    FileMeta,
    MetaError,
    Move,
    Restore,
    SetDisabled,
)
from raftbox.meta.search import SearchState, query_words

from .helpers import SECRET, Driver, SqliteWork, block


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def st(query: str, **kw) -> SearchState:
    kw.setdefault("prefix_key", "")
    kw.setdefault("deleted", False)
    kw.setdefault("max_results", 100)
    return SearchState(query_words(query), **kw)


def found(d: Driver, ns: int, s: SearchState) -> list[str]:
    out: list[str] = []
    while True:
        page = d.store.search(ns, s)
        out += [m.path_display for m in page.matches]
        if page.after_key is None:
            return out
        s = msgspec.structs.replace(s, after_key=page.after_key)


# -- search ------------------------------------------------------------------------------------


def test_every_word_must_occur_in_the_name_case_and_form_insensitively(d, ns):
    for p in ("/Été/Rapport Final.PDF", "/été/rapport-brouillon.txt", "/x/final.txt", "/rapports"):
        d.put(ns, p, p.encode())
    assert found(d, ns, st("RAPPORT")) == [
        "/rapports",
        "/Été/Rapport Final.PDF",
        "/Été/rapport-brouillon.txt",
    ]
    assert found(d, ns, st("final rapport")) == ["/Été/Rapport Final.PDF"]
    # NFD query, NFC name: the same word
    assert found(d, ns, st("e\u0301te\u0301")) == ["/Été"]
    assert found(d, ns, st("final", prefix_key="/x")) == ["/x/final.txt"]


def test_filters_extensions_categories_and_deleted(d, ns):
    for p in ("/a/pic.JPG", "/a/doc.pdf", "/a/song.mp3", "/a/notes", "/a/data.bin"):
        d.put(ns, p, p.encode())
    d.apply(CreateFolder(ns, "/a/pictures"))
    assert found(d, ns, st("", extensions=["jpg", "mp3"])) == ["/a/pic.JPG", "/a/song.mp3"]
    assert found(d, ns, st("", categories=["folder"])) == ["/a", "/a/pictures"]
    assert found(d, ns, st("", prefix_key="/a", categories=["image", "pdf"])) == [
        "/a/doc.pdf",
        "/a/pic.JPG",
    ]
    assert found(d, ns, st("", categories=["others"])) == ["/a/data.bin", "/a/notes"]
    d.apply(Delete(ns, "/a/song.mp3"))
    assert found(d, ns, st("song")) == []
    page = d.store.search(ns, st("song", deleted=True))
    assert [type(m).__name__ for m in page.matches] == ["DeletedMeta"]


def test_one_call_does_bounded_work_and_resumes_with_its_cursor(d, ns):
    for i in range(60):
        d.put(ns, f"/f/{i:03d}", b"%d" % i)
    s = st("9")
    page = search.search_page(d.store.db, ns, s, scan_max_rows=10)
    # stopped after 10 entries ("/f", "/f/000" … "/f/008") with no match yet: more to come
    assert page.matches == [] and page.after_key == "/f/008"
    # the work of a call does not grow with the namespace
    work = []
    for n in (60, 600):
        for i in range(60 if n == 600 else 0, n):
            d.put(ns, f"/f/{i:03d}", b"%d" % i)
        with SqliteWork(d.store) as w:
            search.search_page(d.store.db, ns, s, scan_max_rows=20)
        work.append(w.units)
    assert work[1] <= work[0] * 1.2
    got = []
    while True:
        page = search.search_page(d.store.db, ns, s, scan_max_rows=25)
        got += [m.path_display for m in page.matches]
        if page.after_key is None:
            break
        s = msgspec.structs.replace(s, after_key=page.after_key)
    assert got == [f"/f/{i:03d}" for i in range(600) if "9" in f"{i:03d}"]


def test_max_results_ends_a_page(d, ns):
    for i in range(5):
        d.put(ns, f"/m{i}", b"x")
    page = d.store.search(ns, st("m", max_results=2))
    assert [m.path_display for m in page.matches] == ["/m0", "/m1"]
    assert page.after_key == "/m1"
    last = d.store.search(ns, st("m", max_results=3, after_key="/m1"))
    assert [m.path_display for m in last.matches] == ["/m2", "/m3", "/m4"]
    assert last.after_key is None


# -- temporary links -----------------------------------------------------------------------------


def link_to(d: Driver, ns: int, path: str, ttl_ms: int = links.LINK_TTL_MS) -> str:
    m = d.store.get_metadata(ns, path)
    return links.make_token(SECRET, ns, m.id, m.rev, d.now_ms + ttl_ms)


def test_a_link_gives_its_file_until_it_expires(d, ns):
    d.put(ns, "/a.txt", b"hello")
    token = link_to(d, ns, "/a.txt")
    meta, blocks = d.store.temporary_link(token, d.now_ms)
    assert meta.path_display == "/a.txt" and blocks == [block(b"hello")]
    end = d.now_ms + links.LINK_TTL_MS
    assert isinstance(d.store.temporary_link(token, end - 1), tuple)
    assert d.store.temporary_link(token, end) == MetaError(["expired"])


def test_a_link_follows_renames_but_not_edits(d, ns):
    d.put(ns, "/a.txt", b"v1")
    token = link_to(d, ns, "/a.txt")
    d.apply(Move(ns, "/a.txt", "/b/renamed.txt"))
    meta, _ = d.store.temporary_link(token, d.now_ms)
    assert meta.path_display == "/b/renamed.txt"
    first = d.store.get_metadata(ns, "/b/renamed.txt")
    d.put(ns, "/b/renamed.txt", b"v2", mode="overwrite")
    assert d.store.temporary_link(token, d.now_ms) == MetaError(["not_found"])
    d.apply(Restore(ns, "/b/renamed.txt", first.rev))  # the same content again: served
    assert isinstance(d.store.temporary_link(token, d.now_ms), tuple)
    d.apply(Delete(ns, "/b/renamed.txt"))
    assert d.store.temporary_link(token, d.now_ms) == MetaError(["not_found"])


def test_a_copy_or_a_new_file_at_the_path_is_another_file(d, ns):
    d.put(ns, "/a.txt", b"same")
    token = link_to(d, ns, "/a.txt")
    d.apply(Copy(ns, "/a.txt", "/copy.txt"))
    d.apply(Delete(ns, "/a.txt"))
    d.put(ns, "/a.txt", b"same")  # same content, same path, a new file (new id)
    assert d.store.temporary_link(token, d.now_ms) == MetaError(["not_found"])


def test_a_disabled_account_serves_no_links(d, ns):
    d.put(ns, "/a.txt", b"x")
    token = link_to(d, ns, "/a.txt")
    d.apply(SetDisabled("a@example.com", True))
    assert d.store.temporary_link(token, d.now_ms) == MetaError(["not_found"])
    d.apply(SetDisabled("a@example.com", False))
    assert isinstance(d.store.temporary_link(token, d.now_ms), tuple)


def test_forged_tampered_and_foreign_tokens_give_nothing(d, ns):
    d.put(ns, "/a.txt", b"x")
    m = d.store.get_metadata(ns, "/a.txt")
    assert isinstance(m, FileMeta)
    good = link_to(d, ns, "/a.txt")
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-1] ^= 1  # the expiry, changed: the signature no longer matches
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    other_secret = links.make_token(b"another cluster secret!!", ns, m.id, m.rev, 2**62)
    cursor = d.store.list_folder(ns, "").cursor_state  # a signed value of another kind
    from raftbox.meta.cursors import sign_cursor

    for token in (tampered, other_secret, sign_cursor(SECRET, cursor), "", "!!", "A" * 10_000):
        assert d.store.temporary_link(token, d.now_ms) == MetaError(["invalid_token"]), token[:40]


def test_a_link_to_a_revision_gives_that_revision(d, ns):
    first = d.put(ns, "/a.txt", b"v1")
    d.put(ns, "/a.txt", b"v2", mode="overwrite")
    token = links.make_token(SECRET, ns, first.id, first.rev, d.now_ms + 60_000, pinned=True)
    meta, blocks = d.store.temporary_link(token, d.now_ms)
    assert (meta.rev, blocks) == (first.rev, [block(b"v1")])
    d.apply(Delete(ns, "/a.txt"))  # the revision is kept: still served
    assert isinstance(d.store.temporary_link(token, d.now_ms), tuple)
    wrong = links.make_token(SECRET, ns, "id:other", first.rev, d.now_ms + 60_000, pinned=True)
    assert d.store.temporary_link(wrong, d.now_ms) == MetaError(["not_found"])
