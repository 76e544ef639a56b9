import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftbox.meta import paths
from raftbox.meta.paths import MalformedPath, Path, parse_path, parse_ref


def test_parse_keeps_display_and_derives_key_lower_name_parent():
    p = parse_path("/Docs/Report FINAL.txt")
    assert p.display == "/Docs/Report FINAL.txt"
    assert p.key == "/docs/report final.txt"
    assert p.lower == "/docs/report final.txt"
    assert p.name == "Report FINAL.txt"
    assert p.parent == Path("/Docs", "/docs")
    assert p.parent.parent == Path("", "")
    assert p.components == ["Docs", "Report FINAL.txt"]
    assert [a.display for a in parse_path("/a/B/c").ancestors()] == ["/a", "/a/B"]


def test_root_only_where_allowed():
    assert parse_path("", allow_root=True) == Path("", "")
    assert parse_path("", allow_root=True).is_root
    with pytest.raises(MalformedPath):
        parse_path("")


@pytest.mark.parametrize(
    "bad",
    [
        "/",  # real Dropbox rejects "/"
        "a",
        "a/b",
        "/a/",
        "/a/b/",
        "//a",
        "/a//b",
        "/.",
        "/..",
        "/a/./b",
        "/a/../b",
        "/a/..",
        "/a\x00b",
        "/a\x1f",
        "/a\nb",
        "/a\x7f",
        "/" + "x" * 256,
        "/" + "é" * 128,  # 256 UTF-8 bytes
        "/" + "/".join(["x" * 200] * 21),  # over 4096 bytes
        "/a\ud800",  # lone surrogate: not encodable
    ],
)
def test_malformed(bad):
    with pytest.raises(MalformedPath):
        parse_path(bad)


def test_limits_are_inclusive():
    parse_path("/" + "x" * 255)
    parse_path("/" + "é" * 127)  # 254 bytes
    p = "/" + "/".join(["x" * 203] * 20)
    assert len(p.encode()) == 4080
    parse_path(p)


def test_non_string_is_malformed():
    with pytest.raises(MalformedPath):
        parse_path(None)  # type: ignore[arg-type]


def test_nfc_nfd_and_case_fold_to_the_same_key():
    nfc = "/Caf\u00e9"
    nfd = "/Cafe\u0301"
    assert nfc != nfd
    assert parse_path(nfc).key == parse_path(nfd).key == parse_path("/CAFÉ").key
    assert parse_path(nfd).display == nfd  # display kept as given
    assert parse_path("/Straße").key == parse_path("/STRASSE").key  # full case folding
    assert parse_path("/Straße").lower == "/straße"  # path_lower is str.lower()


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8))
def test_key_is_canonical(name):
    try:
        p = parse_path("/" + name)
    except MalformedPath:
        return
    assert p.key == unicodedata.normalize("NFC", p.key)
    assert parse_path(p.key).key == p.key  # the key of a key is itself
    assert parse_path(p.display.upper()).key == parse_path(p.display.upper().lower()).key


@given(st.lists(st.sampled_from(["a", "A", "b", "a b", "a0", "a.", "ä"]), min_size=1, max_size=4))
def test_subtree_range_holds_exactly_the_descendants(parts):
    outer = parse_path("/a")
    p = parse_path("/" + "/".join(parts))
    lo, hi = paths.subtree_range(outer.key)
    below = lo < p.key < hi
    assert below == (p.key.startswith(outer.key + "/"))
    assert outer.contains(p) == (below or p.key == outer.key)


def test_child_and_contains():
    p = parse_path("/A")
    c = p.child("B.txt")
    assert c == parse_path("/A/B.txt")
    assert p.contains(c) and p.contains(p) and not c.contains(p)
    assert not parse_path("/a").contains(parse_path("/ab"))


def test_refs():
    assert parse_ref("id:abc") == paths.Ref("id", value="id:abc")
    assert parse_ref("rev:0123456789a", allow_rev=True) == paths.Ref("rev", value="0123456789a")
    r = parse_ref("ns:12/a/B")
    assert r.kind == "path" and r.ns == 12 and r.path.display == "/a/B"
    assert parse_ref("ns:12", allow_root=True).path.is_root
    assert parse_ref("/x").ns is None
    for bad, kw in [
        ("rev:0123456789a", {}),  # rev not allowed by default
        ("rev:01234567", {"allow_rev": True}),  # 8 chars
        ("rev:ABCDEF1234", {"allow_rev": True}),  # uppercase
        ("id:", {}),
        ("id:a/b", {}),
        ("id:x", {"allow_id": False}),
        ("ns:x/a", {}),
        ("ns:12", {}),  # root not allowed
        ("ns:12/", {}),
        ("", {}),
    ]:
        with pytest.raises(MalformedPath):
            parse_ref(bad, **kw)
    assert paths.is_id("id:x") and paths.is_rev("rev:x") and paths.is_ns("ns:1")
    assert not paths.is_id("/id:x")


def test_autorename_names():
    assert paths.split_ext("doc.txt") == ("doc", ".txt")
    assert paths.split_ext("a.tar.gz") == ("a.tar", ".gz")
    assert paths.split_ext(".bashrc") == (".bashrc", "")
    assert paths.split_ext("noext") == ("noext", "")
    assert paths.renamed("doc.txt", "(1)", is_folder=False) == "doc (1).txt"
    assert paths.renamed("my.folder", "(2)", is_folder=True) == "my.folder (2)"
    assert (
        paths.renamed("doc.txt", "(conflicted copy)", is_folder=False)
        == "doc (conflicted copy).txt"
    )


# -- what a client may send: empty components dropped as Dropbox drops them --------------------

# (sent, what it names): rclone sends "/" + "/" + dir for every folder of a root remote.
DROPBOX_ACCEPTS = [
    ("//dir", "/dir"),
    ("//dir/sub/f.txt", "/dir/sub/f.txt"),
    ("/a//b", "/a/b"),
    ("///a///b", "/a/b"),
    ("ns:7//a", "ns:7/a"),
    ("ns:7/a//b", "ns:7/a/b"),
    ("/a", "/a"),  # unchanged
    ("", ""),
    ("id:abc", "id:abc"),
    ("rev:0123456789a", "rev:0123456789a"),
]

# Still refused after the collapse: the same rules as `parse_path`.
DROPBOX_REFUSES = ["/", "//", "///", "/a/", "/a//", "//a/", "a//b", "//.", "//a/..", "ns:7//"]


@pytest.mark.parametrize("sent,named", DROPBOX_ACCEPTS)
def test_empty_components_are_dropped(sent, named):
    assert paths.as_dropbox_parses(sent) == named
    ref = parse_ref(paths.as_dropbox_parses(sent), allow_root=True, allow_rev=True)
    if ref.path is not None:
        assert ref.path.display == named.removeprefix("ns:7")


@pytest.mark.parametrize("sent", DROPBOX_REFUSES)
def test_what_dropbox_refuses_is_still_refused(sent):
    with pytest.raises(MalformedPath):
        parse_ref(paths.as_dropbox_parses(sent), allow_root=True)


def test_collapse_keeps_the_state_machine_strict():
    """The state machine's parser is not lenient: only the API layer collapses."""
    for sent in ("//dir", "/a//b", "ns:7//a"):
        with pytest.raises(MalformedPath):
            parse_ref(sent)
