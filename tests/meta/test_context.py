"""ApplyContext (raftbox.meta.context): one entry's index, stamp, positions and known namespaces,
and the savepoint around a command; and the apply path's modules stay free of I/O."""

import ast
import dataclasses
import pathlib
import sqlite3

import pytest

from raftbox.meta import context, schema
from raftbox.meta.commands import MetaError
from raftbox.meta.context import ApplyContext, TooMany, atomic, check_ns
from raftbox.meta.rows import Fail

from .helpers import SECRET, T0_MS


def _ctx(db: sqlite3.Connection, index: int = 0x1234, secret: bytes = SECRET) -> ApplyContext:
    return ApplyContext(db, index, T0_MS, secret, 100, 1000, 1000)


@pytest.fixture
def db():
    db = sqlite3.connect(":memory:", isolation_level=None)
    schema.create(db)
    yield db
    db.close()


def test_the_context_is_frozen(db):
    ctx = _ctx(db)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.index = 7  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.now_ms = 7  # type: ignore[misc]


def test_positions_revs_and_ids_derive_from_the_entry_alone(db, monkeypatch):
    a, b = _ctx(db), _ctx(db)
    assert [a.next_pos() for _ in range(3)] == [0, 1, 2]
    assert a.rev(2) == "0000000012340002"
    assert a.new_id(2) == b.new_id(2)  # the same entry on another replica: the same id
    assert a.new_id(2) != a.new_id(3)
    assert a.new_id(2) != _ctx(db, index=0x1235).new_id(2)
    assert a.new_id(2) != _ctx(db, secret=b"another secret, 16+ bytes").new_id(2)
    assert a.now == "2023-11-14T22:13:20Z"
    monkeypatch.setattr(context, "MAX_POS", 3)
    assert b.next_pos() == 0
    b.next_pos(), b.next_pos(), b.next_pos()
    with pytest.raises(TooMany):
        b.next_pos()


def test_known_namespaces_last_one_entry(db):
    db.execute("INSERT INTO namespaces (ns, owner) VALUES (5, 'dbid:x')")
    ctx = _ctx(db)
    check_ns(ctx, 5)
    assert ctx.known_ns == {5}
    with pytest.raises(Fail) as e:
        check_ns(ctx, 6)
    assert e.value.error == MetaError(["invalid_command"], {"reason": "unknown namespace 6"})
    assert _ctx(db).known_ns == set()


def test_atomic_rolls_a_failed_command_back_and_keeps_a_good_one(db):
    ctx = _ctx(db)

    def write_then(fail: BaseException | None):
        def fn():
            db.execute("INSERT INTO kv (k, v) VALUES (?, 1)", (f"k{ctx.next_pos()}",))
            if fail is not None:
                raise fail
            return "ok"

        return fn

    db.execute("BEGIN")
    assert atomic(ctx, write_then(Fail("path", "conflict"))) == MetaError(["path", "conflict"])
    assert atomic(ctx, write_then(TooMany()), too_many="too_many_files") == MetaError(
        ["too_many_files"]
    )
    assert atomic(ctx, write_then(AttributeError("bug"))) == MetaError(
        ["internal_error"], {"reason": "AttributeError"}
    )
    assert atomic(ctx, write_then(None)) == "ok"
    db.execute("COMMIT")
    assert db.execute("SELECT k FROM kv").fetchall() == [("k3",)]


# The apply path: no file, clock, randomness, network or event loop (snapshot images are the
# `snapshot` module's; the service's).
_APPLY_PATH = [
    "schema",
    "rows",
    "context",
    "writes",
    "sessions",
    "accounts",
    "gcstate",
    "queries",
    "clients",
    "fsm",
]
_IMPURE = {"os", "tempfile", "time", "random", "secrets", "asyncio", "socket", "shutil"}


@pytest.mark.parametrize("name", _APPLY_PATH)
def test_the_apply_path_imports_no_io(name):
    path = pathlib.Path(context.__file__).with_name(f"{name}.py")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & _IMPURE, f"{name}.py imports {sorted(imported & _IMPURE)}"
