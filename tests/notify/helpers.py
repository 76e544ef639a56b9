"""Shared pieces of the notify tests: signed cursors, a scripted upstream, a recording waiter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from raftbox.meta.commands import CursorState
from raftbox.meta.service import MetaService
from raftbox.testing import run  # noqa: F401 - re-exported for the tests

SECRET = b"s" * 32
ALICE, BOB = "dbid:" + "a" * 35, "dbid:" + "b" * 35


def sign(account: str, ns: int, position: int, resume: str | None = None,
         secret: bytes = SECRET) -> str:  # fmt: skip
    """A cursor as the meta role signs it (its own code, with `secret`)."""
    signer: Any = SimpleNamespace(store=SimpleNamespace(secret=lambda: secret))
    return MetaService.sign_cursor(
        signer, [account, ns, CursorState("", False, False, position, resume)]
    )


class FakeUpstream:
    """An upstream the test drives by hand: it records what the service asks for."""

    def __init__(self, follows_all: bool = True, secret: bytes | None = SECRET) -> None:
        self.follows_all = follows_all
        self.secret = secret
        self.requests: list[dict[int, int]] = []
        self.released: list[int] = []
        self.connected_url = "fake"

    async def run(self, sink: Any) -> None:
        if self.secret is not None:
            sink.on_secret(self.secret)
            sink.on_connected()
        await asyncio.Event().wait()

    def request(self, ns_seen: dict[int, int]) -> None:
        self.requests.append(dict(ns_seen))

    def release(self, namespaces: list[int]) -> None:
        self.released.extend(namespaces)

    def asked(self) -> set[int]:
        return {ns for r in self.requests for ns in r}


class Answers:
    """A waiter that records its answer."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    def finish(self, status: int, body: bytes) -> None:
        self.got.append((status, body))

    @property
    def one(self) -> tuple[int, bytes] | None:
        assert len(self.got) <= 1, self.got
        return self.got[0] if self.got else None
