"""The peer transport: each test is one claim of raftbox.raft.transport's contract."""

from __future__ import annotations

import asyncio
import logging
import struct

import msgspec
import pytest

from raftbox.raft.messages import Entry, Message, MessageType
from raftbox.raft.transport import (
    Hello,
    PeerState,
    PeerTransport,
    PeerUnreachable,
    RaftBatch,
    RemoteRpcError,
    RpcResponse,
    RpcTimeout,
    TransportClosed,
    UnknownPeer,
    _write,
)
from raftbox.testing import FaultProxy, ThrowawayCA, wait_until
from raftbox.testing.aio import async_test, event_loop_kind  # noqa: F401

LOCAL = ("127.0.0.1", 0)
FAST = dict(backoff_min_s=0.01, backoff_max_s=0.05, connect_timeout_s=1.0, close_timeout_s=0.5)


class Node:
    """A transport and a record of what it was told."""

    def __init__(self, node_id: int, peers=None, listen=LOCAL, **kw):
        self.got: list[Message] = []
        self.batches = 0
        self.unreachable: list[int] = []
        self.t = PeerTransport(
            node_id,
            listen,
            peers or {},
            on_messages=self._on_messages,
            on_unreachable=self.unreachable.append,
            **{**FAST, **kw},
        )

    def _on_messages(self, msgs):
        self.batches += 1
        self.got.extend(msgs)

    def from_(self, frm: int) -> list[int]:
        return [m.index for m in self.got if m.frm == frm]

    @property
    def addr(self):
        return self.t.listen_addr


def app(frm: int, to: int, index: int, data: bytes = b"") -> Message:
    entries = (Entry(term=1, index=index, data=data),) if data else ()
    return Message(MessageType.APP, to=to, frm=frm, term=1, index=index, entries=entries)


async def started(*nodes: Node) -> None:
    for n in nodes:
        await n.t.start()


async def closed(*nodes: Node) -> None:
    for n in nodes:
        await n.t.close()


async def pair(**kw) -> tuple[Node, Node]:
    """Node 1 and node 2, started, each with the other as peer."""
    a, b = Node(1, **kw), Node(2, **kw)
    await started(a, b)
    a.t.set_peer(2, b.addr)
    b.t.set_peer(1, a.addr)
    return a, b


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


HELLO = frame(msgspec.msgpack.encode(Hello(node_id=99)))
HELLO_FROM_2 = frame(msgspec.msgpack.encode(Hello(node_id=2)))


# --- messages -----------------------------------------------------------------------------------


@async_test
async def test_listen_port_zero_binds_a_real_port():
    n = Node(1)
    await n.t.start()
    try:
        host, port = n.addr
        assert host == "127.0.0.1" and port > 0
    finally:
        await n.t.close()


@async_test
async def test_two_nodes_exchange_batches_both_ways():
    a, b = await pair()
    try:
        for i in range(1, 501):
            assert a.t.send(app(1, 2, i))
            assert b.t.send(app(2, 1, i, data=b"x" * 10))
        await wait_until(lambda: len(b.got) == 500 and len(a.got) == 500)
        assert b.from_(1) == list(range(1, 501))
        assert a.got[0].entries[0].data == b"x" * 10
        stats = a.t.stats().peers[2]
        assert stats.sent_msgs == 500 and stats.sent_frames < 10  # many messages per frame
        assert b.batches < 10
    finally:
        await closed(a, b)


@async_test
async def test_order_per_peer_is_kept_among_three_nodes():
    nodes = [Node(i) for i in (1, 2, 3)]
    await started(*nodes)
    try:
        for n in nodes:
            for m in nodes:
                if m is not n:
                    n.t.set_peer(m.t.node_id, m.addr)
        for i in range(1, 3001):
            for n in nodes:
                for m in nodes:
                    if m is not n:
                        assert n.t.send(app(n.t.node_id, m.t.node_id, i))
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the writers run, as a Raft node's loop would
        await wait_until(lambda: all(len(n.got) == 6000 for n in nodes))
        for n in nodes:
            for m in nodes:
                if m is not n:
                    assert n.from_(m.t.node_id) == list(range(1, 3001))
    finally:
        await closed(*nodes)


@async_test
async def test_a_message_larger_than_a_frame_is_dropped_and_a_large_batch_is_split():
    a, b = await pair(max_frame_bytes=64 * 1024)
    try:
        assert a.t.send(app(1, 2, 1, data=b"x" * 100_000))  # queued, dropped by the writer
        for i in range(2, 12):
            a.t.send(app(1, 2, i, data=b"y" * 20_000))  # 200 KB in all: needs several frames
        await wait_until(lambda: len(b.got) == 10)
        assert b.from_(1) == list(range(2, 12))
        stats = a.t.stats().peers[2]
        assert stats.dropped_msgs == 1 and stats.sent_frames >= 4
    finally:
        await closed(a, b)


@async_test
async def test_reconnects_after_the_peer_restarts_on_the_same_port():
    a, b = await pair()
    try:
        a.t.send(app(1, 2, 1))
        await wait_until(lambda: b.from_(1) == [1])
        port = b.addr[1]
        await b.t.close()
        await wait_until(lambda: 2 in a.unreachable, what="drop reported")

        b2 = Node(2, listen=("127.0.0.1", port))
        await b2.t.start()
        try:
            await wait_until(lambda: b2.got, each=lambda: a.t.send(app(1, 2, 2)))
            assert a.t.stats().peers[2].connects == 2
        finally:
            await b2.t.close()
    finally:
        await closed(a, b)


@async_test
async def test_send_to_a_dead_peer_does_not_block_and_reports_unreachable():
    dead = Node(2)
    await dead.t.start()
    dead_addr = dead.addr
    await dead.t.close()  # nobody listens there now

    a = Node(1, peers={2: dead_addr})
    await a.t.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(1000):
            a.t.send(app(1, 2, i))
        assert loop.time() - t0 < 0.5
        await wait_until(lambda: a.unreachable == [2] or len(a.unreachable) > 1)
        stats = a.t.stats().peers[2]
        assert stats.dial_failures >= 1 and stats.dropped_msgs >= 1000 - stats.queued_msgs
        assert stats.state in (PeerState.BACKOFF, PeerState.IDLE, PeerState.CONNECTING)
    finally:
        await a.t.close()


@async_test
async def test_a_full_send_queue_drops_and_counts():
    a, b = await pair(send_queue_max_msgs=100)
    try:
        results = [a.t.send(app(1, 2, i)) for i in range(250)]  # no await: the writer can't run
        assert results.count(True) == 100 and results.count(False) == 150
        assert a.t.stats().peers[2].dropped_msgs == 150
        await wait_until(lambda: len(b.got) == 100)
        assert b.from_(1) == list(range(100))
    finally:
        await closed(a, b)


@async_test
async def test_send_to_an_unknown_or_removed_peer_is_dropped():
    a, b = await pair()
    try:
        assert not a.t.send(app(1, 3, 1))
        a.t.remove_peer(2)
        assert not a.t.send(app(1, 2, 1))
        assert a.t.stats().dropped_unknown_msgs == 2
    finally:
        await closed(a, b)


@async_test
async def test_a_write_to_a_connection_that_is_gone_is_a_connection_error():
    # asyncio ignores such a write, uvloop raises RuntimeError: the writer must see neither.
    server = await asyncio.start_server(lambda r, w: w.close(), *LOCAL)
    try:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.transport.abort()
        with pytest.raises(ConnectionResetError):
            _write(writer, b"frame")
    finally:
        server.close()
        await server.wait_closed()


# --- hostile input ------------------------------------------------------------------------------

BAD_INPUT = {
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # reads as a ~1.2 GB length prefix
    "oversized length, no body": struct.pack(">I", 64 * 1024 + 1),
    "huge length, no body": b"\xff\xff\xff\xff",
    "undecodable msgpack": HELLO + frame(b"\xc1\xc1\xc1"),
    "msgpack of the wrong shape": HELLO + frame(msgspec.msgpack.encode({"a": 1})),
    "array length beyond the frame": HELLO + frame(b"\x92\x02\xdd\xff\xff\xff\xff"),
    "empty frame": HELLO + frame(b""),
    "batch before hello": frame(msgspec.msgpack.encode(RaftBatch([app(9, 2, 1)]))),
    "response from the dialer": HELLO + frame(msgspec.msgpack.encode(RpcResponse(1, True))),
    "truncated frame then EOF": HELLO + struct.pack(">I", 100) + b"x" * 10,
}


@pytest.mark.parametrize("bad", BAD_INPUT.values(), ids=BAD_INPUT.keys())
@async_test
async def test_bad_inbound_bytes_close_only_that_connection(bad, caplog):
    caplog.set_level(logging.WARNING, logger="raftbox.raft.transport")
    a, b = await pair(max_frame_bytes=64 * 1024)
    try:
        a.t.send(app(1, 2, 1))
        await wait_until(lambda: b.from_(1) == [1])

        reader, writer = await asyncio.open_connection(*b.addr)
        writer.write(bad)
        writer.write_eof()
        answer = await reader.read()  # returns at EOF: the transport closed this connection
        assert answer in (b"", HELLO_FROM_2)
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: b.t.stats().inbound_rejected == 1)
        assert any("closing inbound connection" in r.message for r in caplog.records)

        a.t.send(app(1, 2, 2))  # the existing connection is unaffected
        await wait_until(lambda: b.from_(1) == [1, 2])
        assert a.t.stats().peers[2].connects == 1
        c = Node(3, peers={2: b.addr})  # and new ones are served
        await c.t.start()
        try:
            c.t.send(app(3, 2, 7))
            await wait_until(lambda: b.from_(3) == [7])
        finally:
            await c.t.close()
    finally:
        await closed(a, b)


@async_test
async def test_a_peer_that_stops_in_the_middle_of_a_frame_is_dropped():
    b = Node(2, frame_body_timeout_s=0.1)
    await b.t.start()
    try:
        reader, writer = await asyncio.open_connection(*b.addr)
        writer.write(HELLO + struct.pack(">I", 100) + b"x" * 10)  # and then nothing, no EOF
        answer = await reader.read()  # returns at EOF: the transport gave up on the frame
        assert answer in (b"", HELLO_FROM_2)
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: b.t.stats().inbound_rejected == 1)
    finally:
        await b.t.close()


@async_test
async def test_a_dialer_that_never_says_hello_is_dropped():
    b = Node(2, hello_timeout_s=0.1)
    await b.t.start()
    try:
        reader, writer = await asyncio.open_connection(*b.addr)
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        assert b.t.stats().inbound_rejected == 1
    finally:
        await b.t.close()


@async_test
async def test_a_peer_of_another_cluster_is_refused():
    a = Node(1, cluster_id="red")
    b = Node(2, cluster_id="blue")
    await started(a, b)
    try:
        a.t.set_peer(2, b.addr)
        a.t.send(app(1, 2, 1))
        await wait_until(lambda: 2 in a.unreachable)
        assert b.got == [] and b.t.stats().inbound_rejected >= 1
    finally:
        await closed(a, b)


@async_test
async def test_the_wrong_node_at_an_advertised_address_is_detected():
    a, b = await pair()
    try:
        a.t.set_peer(3, b.addr)  # node 2 listens there, not node 3
        a.t.send(app(1, 3, 1))
        await wait_until(lambda: 3 in a.unreachable)
        assert a.t.stats().peers[3].connects >= 1
    finally:
        await closed(a, b)


# --- rpc ----------------------------------------------------------------------------------------


async def handler(method: str, payload: bytes) -> bytes:
    if method == "echo":
        return payload[::-1]
    if method == "fail":
        raise KeyError("no such thing")
    if method == "hang":
        await asyncio.Event().wait()
    raise LookupError(method)


@async_test
async def test_rpc_round_trip_both_ways_and_concurrently():
    a, b = await pair(rpc_handler=handler)
    try:
        assert await a.t.call(2, "echo", b"abc", timeout_s=2) == b"cba"
        assert await b.t.call(1, "echo", b"xyz", timeout_s=2) == b"zyx"
        answers = await asyncio.gather(
            *(a.t.call(2, "echo", str(i).encode(), timeout_s=2) for i in range(100, 200))
        )
        assert answers == [str(i).encode()[::-1] for i in range(100, 200)]
    finally:
        await closed(a, b)


@async_test
async def test_rpc_timeout_raises_rpc_timeout_and_the_connection_lives_on():
    a, b = await pair(rpc_handler=handler)
    try:
        with pytest.raises(RpcTimeout):
            await a.t.call(2, "hang", b"", timeout_s=0.1)
        assert await a.t.call(2, "echo", b"ok", timeout_s=2) == b"ko"
        assert a.t.stats().peers[2].connects == 1 and a.t.stats().peers[2].pending_calls == 0
    finally:
        await closed(a, b)


@async_test
async def test_rpc_remote_exception_raises_remote_rpc_error():
    a, b = await pair(rpc_handler=handler)
    try:
        with pytest.raises(RemoteRpcError) as e:
            await a.t.call(2, "fail", b"", timeout_s=2)
        assert e.value.error_type == "KeyError" and e.value.method == "fail"
        assert "no such thing" in e.value.error
    finally:
        await closed(a, b)


@async_test
async def test_rpc_to_unknown_dead_or_vanishing_peers_raises_typed_errors():
    a, b = await pair(rpc_handler=handler)
    try:
        with pytest.raises(UnknownPeer):
            await a.t.call(7, "echo", b"", timeout_s=1)

        hung = asyncio.ensure_future(a.t.call(2, "hang", b"", timeout_s=5))
        await wait_until(lambda: a.t.stats().peers[2].state is PeerState.CONNECTED)
        await b.t.close()  # the connection drops under a pending call
        with pytest.raises(PeerUnreachable):
            await hung
        with pytest.raises(PeerUnreachable):  # dead now: fails fast, not at the timeout
            async with asyncio.timeout(2):
                while True:
                    await a.t.call(2, "echo", b"", timeout_s=5)
    finally:
        await closed(a, b)
    with pytest.raises(TransportClosed):
        await a.t.call(2, "echo", b"", timeout_s=1)


@async_test
async def test_close_fails_pending_calls():
    a, b = await pair(rpc_handler=handler)
    try:
        hung = asyncio.ensure_future(a.t.call(2, "hang", b"", timeout_s=5))
        await wait_until(lambda: a.t.stats().peers[2].connects == 1)
        await a.t.close()
        with pytest.raises(TransportClosed):
            await hung
    finally:
        await closed(a, b)


# --- tls, proxies, membership -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return ThrowawayCA()


@async_test
async def test_mutual_tls_round_trip(ca):
    def tls(name):
        cert = ca.issue(name)
        return dict(ssl_server=ca.server_context(cert), ssl_client=ca.client_context(cert))

    a = Node(1, rpc_handler=handler, **tls("node1"))
    b = Node(2, rpc_handler=handler, **tls("node2"))
    await started(a, b)
    try:
        a.t.set_peer(2, b.addr)
        b.t.set_peer(1, a.addr)
        for i in range(100):
            a.t.send(app(1, 2, i))
        await wait_until(lambda: len(b.got) == 100)
        assert b.from_(1) == list(range(100))
        assert await b.t.call(1, "echo", b"tls", timeout_s=2) == b"slt"
    finally:
        await closed(a, b)


@async_test
async def test_tls_refuses_a_client_of_another_ca(ca):
    stranger = ThrowawayCA("stranger")
    cert = stranger.issue("intruder")
    b = Node(2, ssl_server=ca.server_context(ca.issue("node2")))
    await b.t.start()
    a = Node(1, peers={2: b.addr}, ssl_client=stranger.client_context(cert))
    await a.t.start()
    try:
        a.t.send(app(1, 2, 1))
        await wait_until(lambda: 2 in a.unreachable)
        assert b.got == []
    finally:
        await closed(a, b)


@async_test
async def test_advertised_address_through_a_partitioned_then_healed_proxy():
    b = Node(2)
    await b.t.start()
    proxy = FaultProxy(LOCAL, b.addr)
    await proxy.start()
    a = Node(1, peers={2: proxy.address})  # advertised address: the proxy, not b
    await a.t.start()
    try:
        await wait_until(lambda: b.got, each=lambda: a.t.send(app(1, 2, 1)))
        proxy.partition()
        await wait_until(lambda: 2 in a.unreachable)
        n = len(b.got)
        for i in range(10):
            a.t.send(app(1, 2, 100 + i))
        failures = len(a.unreachable)
        await wait_until(lambda: len(a.unreachable) > failures, each=lambda: a.t.send(app(1, 2, 0)))
        assert len(b.got) == n  # refused: reset right after accept
        proxy.heal()
        await wait_until(lambda: 999 in b.from_(1), each=lambda: a.t.send(app(1, 2, 999)))
    finally:
        await a.t.close()
        await proxy.close()
        await b.t.close()


@async_test
async def test_set_peer_redials_at_the_new_address_and_remove_peer_fails_calls():
    a, b = await pair(rpc_handler=handler)
    c = Node(3, rpc_handler=handler)
    await c.t.start()
    try:
        a.t.set_peer(3, b.addr)  # wrong: node 2 is there
        hung = asyncio.ensure_future(a.t.call(2, "hang", b"", timeout_s=5))
        a.t.set_peer(3, c.addr)
        await wait_until(lambda: c.got, each=lambda: a.t.send(app(1, 3, 5)))
        a.t.remove_peer(2)
        with pytest.raises(PeerUnreachable):
            await hung
        with pytest.raises(UnknownPeer):
            await a.t.call(2, "echo", b"", timeout_s=1)
    finally:
        await closed(a, b, c)
