"""Ignore rules: gitignore syntax (pathspec) plus defaults for temporary and editor files."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.client import IgnoreRules


@pytest.mark.parametrize(
    "path, is_folder",
    [
        ("/.raftbox", True),
        ("/.raftbox/index.sqlite", False),
        ("/notes.txt.swp", False),
        ("/a/.notes.txt.swp", False),
        ("/draft~", False),
        ("/.#draft", False),
        ("/#draft#", False),
        ("/~$report.docx", False),
        ("/.~lock.sheet.ods#", False),
        ("/x/download.tmp", False),
        ("/.DS_Store", False),
        ("/pics/Thumbs.db", False),
    ],
)
def test_temporary_and_editor_files_are_ignored_by_default(path, is_folder):
    assert IgnoreRules().is_ignored(path, is_folder=is_folder)


@pytest.mark.parametrize("path", ["/notes.txt", "/a/b/c.md", "/.raftboxignore", "/~file", "/#x"])
def test_ordinary_files_are_not_ignored(path):
    assert not IgnoreRules().is_ignored(path, is_folder=False)


def test_raftboxignore_uses_gitignore_syntax():
    rules = IgnoreRules.from_text("# build output\nbuild/\n/top.log\n*.o\n!keep.o\n")
    assert rules.is_ignored("/build", is_folder=True)
    assert rules.is_ignored("/src/build/x.c", is_folder=False)
    assert not rules.is_ignored("/build", is_folder=False)  # "build/" matches folders only
    assert rules.is_ignored("/top.log", is_folder=False)
    assert not rules.is_ignored("/sub/top.log", is_folder=False)  # anchored
    assert rules.is_ignored("/a.o", is_folder=False) and not rules.is_ignored(
        "/keep.o", is_folder=False
    )


def test_user_rules_can_re_include_a_default_but_nothing_below_an_ignored_folder():
    assert not IgnoreRules(["!*.tmp"]).is_ignored("/x.tmp", is_folder=False)
    rules = IgnoreRules(["out/", "!out/keep"])
    assert rules.is_ignored("/out/keep", is_folder=False)  # as in git


def test_defaults_can_be_turned_off():
    assert not IgnoreRules(defaults=False).is_ignored("/a.tmp", is_folder=False)


_NAMES = [
    "a",
    "b.tmp",
    "#x#",
    ".#y",
    "z~",
    "build",
    ".raftbox",
    "keep.o",
    "c.o",
    "~$w",
    "Thumbs.db",
]


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4), is_folder=st.booleans())
def test_the_fast_path_agrees_with_pathspec(parts, is_folder):
    rules = IgnoreRules(["build/", "*.o", "!keep.o", "/a/b.tmp"])
    path = "/" + "/".join(parts)
    rel = path[1:] + ("/" if is_folder else "")
    assert rules.matches(path, is_folder=is_folder) == rules._spec.match_file(rel)
