"""`PeerTransport.retire_peer`: forget a removed member without breaking a call in flight to it."""

from __future__ import annotations

import asyncio

import pytest

from raftbox.raft.messages import Message, MessageType
from raftbox.raft.transport import PeerTransport, UnknownPeer
from raftbox.testing import wait_until
from raftbox.testing.aio import async_test, event_loop_kind  # noqa: F401

LOCAL = ("127.0.0.1", 0)
FAST = dict(backoff_min_s=0.01, backoff_max_s=0.02, connect_timeout_s=1.0, close_timeout_s=0.5)


class CountingListener:
    """A fake member: accepts connections, counts them, and hangs up at once (so a transport
    with something to send to it dials again and again)."""

    def __init__(self) -> None:
        self.accepts = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._accept, *LOCAL)
        return self.server.sockets[0].getsockname()[:2]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        writer.transport.abort()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def heartbeat(frm: int, to: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=1)


@async_test
async def test_a_retired_peer_keeps_its_call_in_flight_then_is_forgotten():
    release = asyncio.Event()

    async def slow_handler(method: str, payload: bytes) -> bytes:
        await release.wait()
        return b"answer:" + payload

    a = PeerTransport(1, LOCAL, on_messages=lambda m: None, **FAST)
    b = PeerTransport(2, LOCAL, on_messages=lambda m: None, rpc_handler=slow_handler, **FAST)
    await a.start()
    await b.start()
    try:
        a.set_peer(2, b.listen_addr)
        call = asyncio.create_task(a.call(2, "conf", b"remove 2", timeout_s=5))
        await wait_until(lambda: a.stats().peers[2].pending_calls == 1, what="call in flight")
        a.retire_peer(2)
        assert a.has_peer(2) and a.stats().peers[2].retiring
        # Nothing new goes to it...
        assert a.send(heartbeat(1, 2)) is False
        with pytest.raises(UnknownPeer):
            await a.call(2, "other", b"", timeout_s=1)
        # ...but the call already in flight gets its answer on the same connection.
        release.set()
        assert await call == b"answer:remove 2"
        assert not a.has_peer(2)
        assert 2 not in a.stats().peers
    finally:
        await a.close()
        await b.close()


@async_test
async def test_a_retired_peer_without_calls_is_never_dialed_again():
    fake2, fake3 = CountingListener(), CountingListener()
    a = PeerTransport(
        1,
        LOCAL,
        {2: await fake2.start(), 3: await fake3.start()},
        on_messages=lambda m: None,
        **FAST,
    )
    await a.start()
    try:
        a.send(heartbeat(1, 2))
        await wait_until(lambda: fake2.accepts >= 1, what="the first dial of peer 2")
        a.retire_peer(2)
        assert not a.has_peer(2)
        before2, before3 = fake2.accepts, fake3.accepts
        dropped = a.stats().dropped_unknown_msgs

        def send_both() -> None:
            a.send(heartbeat(1, 2))
            a.send(heartbeat(1, 3))

        # Peer 3 shows that the transport dials whom it has something for: peer 2 is not one.
        await wait_until(
            lambda: fake3.accepts >= before3 + 3, each=send_both, poll_s=0.01, what="peer 3 dials"
        )
        assert fake2.accepts == before2
        assert a.stats().dropped_unknown_msgs > dropped
    finally:
        await a.close()
        await fake2.close()
        await fake3.close()


@async_test
async def test_set_peer_takes_back_a_retiring_peer():
    release = asyncio.Event()

    async def slow_handler(method: str, payload: bytes) -> bytes:
        await release.wait()
        return b"ok"

    a = PeerTransport(1, LOCAL, on_messages=lambda m: None, **FAST)
    b = PeerTransport(2, LOCAL, on_messages=lambda m: None, rpc_handler=slow_handler, **FAST)
    await a.start()
    await b.start()
    try:
        a.set_peer(2, b.listen_addr)
        call = asyncio.create_task(a.call(2, "m", b"", timeout_s=5))
        await wait_until(lambda: a.stats().peers[2].pending_calls == 1, what="call in flight")
        a.retire_peer(2)
        a.set_peer(2, b.listen_addr)  # added back (a member re-added before it was forgotten)
        release.set()
        assert await call == b"ok"
        assert a.has_peer(2) and not a.stats().peers[2].retiring
        assert await a.call(2, "m", b"", timeout_s=5) == b"ok"
    finally:
        await a.close()
        await b.close()
