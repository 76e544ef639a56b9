"""Attack 1 of issue 11: account takeover through the Raft peer port, and `raftbox up`'s port.

The attack: connect to a member's peer port, send a `Hello` and an RPC `propose` carrying
`AddToken(victim, sha256(a token of its choosing))`; on the old code the answer was `ok` and
that token then listed the victim's files. Here it is tried against a real `raftbox serve` member
started with a bundle from `raftbox cluster init`, in plain TCP, in TLS without a certificate,
with a certificate of another CA, and with a valid certificate of member 2 claiming to be
member 3. Each attempt must get nothing back (no `ok`, not even the listener's Hello), and the
victim's files must stay out of the attacker's reach. The certificates of members 2 and 3 come
from `raftbox cluster add-member`: valid cluster certificates whose holders are not running.

A positive control shows the attack client speaks the protocol: with member 2's certificate
and `Hello(2)` the listener answers with its Hello (it is a member's right to talk).

`raftbox up` must listen on exactly one TCP port (its public address; no peer port), also when
its data directory holds the `peer.port` file older versions wrote. And a 3-member cluster made
with the `raftbox cluster init` command elects a leader and serves the official SDK.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from api.procs import ApiCluster, UpServer, create_account_http
from raftbox import cluster
from raftbox.meta import commands as C
from raftbox.raft.sessions import Command
from raftbox.raft.transport import Hello, RpcRequest, RpcResponse
from raftbox.testing.procs import HOST, free_port, quiet_port, wait_for
from raftbox.tls import issue_member, make_ca, members_named

from .members import RAFTBOX, Member

_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(Hello | RpcResponse)


def _frame(env) -> bytes:
    body = _ENC.encode(env)
    return len(body).to_bytes(4, "big") + body


@dataclass(frozen=True)
class Victim:
    account_id: str  # the victim's, who has /secret.txt
    attacker_token: str  # the attacker's own account's token


@pytest.fixture(scope="module")
def victim(member) -> Victim:
    victim_id, victim_token = create_account_http(
        member.hostport, member.ca, member.admin_token, "victim@example.test"
    )
    r = member.post("files/upload", victim_token, {"path": "/secret.txt"}, b"the victim's")
    assert r.status_code == 200, r.text
    _, attacker_token = create_account_http(
        member.hostport, member.ca, member.admin_token, "attacker@example.test"
    )
    return Victim(victim_id, attacker_token)


async def _attempt(addr, ctx: ssl.SSLContext | None, claim: int, cluster_id: str, rpc) -> list:
    """Connect, send Hello(claim) and, if given, the RPC; every frame that comes back until the
    listener closes (or 10 s pass) — an error ending the connection is no frame."""
    got: list = []
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(*addr, ssl=ctx)
            try:
                writer.write(_frame(Hello(claim, cluster_id)))
                if rpc is not None:
                    writer.write(_frame(rpc))
                await writer.drain()
                while True:
                    n = int.from_bytes(await reader.readexactly(4), "big")
                    env = _DEC.decode(await reader.readexactly(n))
                    got.append(env)
                    if type(env) is RpcResponse or rpc is None:
                        return got
            finally:
                writer.close()
    except (OSError, EOFError, TimeoutError):
        pass  # refused: the handshake failed, or the listener closed the connection
    return got


def _add_token_rpc(victim: Victim) -> tuple[RpcRequest, str]:
    """The attack: `propose AddToken(victim, sha256(chosen))` for a token the attacker chose
    (one nobody holds yet: on the old code the answer was `ok` and `chosen` opened the victim's
    files). Returns the RPC and the chosen token."""
    chosen = "rbx_" + secrets.token_urlsafe(32)
    cmd = C.AddToken(victim.account_id, hashlib.sha256(chosen.encode()).digest())
    command = Command(
        client_id=secrets.randbits(62) | 1, seq=1, ack_below=0, stamp_ms=0, payload=_ENC.encode(cmd)
    )
    return RpcRequest(1, "propose", _ENC.encode(command)), chosen


def _client_ctx(ca: str | None, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca is None:
        ctx.verify_mode = ssl.CERT_NONE  # an attacker need not trust the listener
    else:
        ctx.load_verify_locations(ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def _assert_victim_safe(member: Member, victim: Victim, chosen: str) -> None:
    """The chosen token opens nothing; the attacker's own token still sees only its account."""
    for route, arg in (("users/get_current_account", None), ("files/list_folder", {"path": ""})):
        r = member.post(route, chosen, arg)
        assert r.status_code == 401, (route, r.status_code, r.text)
    got = member.post("files/download", chosen, {"path": "/secret.txt"}, b"")
    assert got.status_code == 401, got.text
    me = member.post("users/get_current_account", victim.attacker_token, None)
    assert me.status_code == 200 and me.json()["account_id"] != victim.account_id, me.text
    listed = member.post("files/list_folder", victim.attacker_token, {"path": ""})
    assert listed.status_code == 200 and listed.json()["entries"] == [], listed.text


def test_plain_tcp_hello_and_propose_get_nothing(member, victim):
    rpc, chosen = _add_token_rpc(victim)
    got = asyncio.run(_attempt(member.peer, None, 2, member.bundle.cluster_id, rpc))
    assert got == []
    _assert_victim_safe(member, victim, chosen)


def test_tls_without_a_client_certificate_gets_nothing(member, victim):
    rpc, chosen = _add_token_rpc(victim)
    got = asyncio.run(
        _attempt(member.peer, _client_ctx(None, None), 2, member.bundle.cluster_id, rpc)
    )
    assert got == []
    _assert_victim_safe(member, victim, chosen)


def test_a_certificate_of_another_ca_gets_nothing(member, victim, tmp_path):
    # A certificate that names member 2 of this very cluster, signed by a stranger's CA.
    stranger_cert, stranger_key = make_ca("stranger CA", 2)
    cert_pem, key_pem = issue_member(
        stranger_cert, stranger_key, member.bundle.cluster_id, 2, valid_days=2
    )
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ctx = _client_ctx(None, (str(tmp_path / "c.pem"), str(tmp_path / "k.pem")))
    rpc, chosen = _add_token_rpc(victim)
    got = asyncio.run(_attempt(member.peer, ctx, 2, member.bundle.cluster_id, rpc))
    assert got == []
    _assert_victim_safe(member, victim, chosen)


def test_the_public_server_certificate_is_no_member_certificate(member, victim):
    """Every member's public certificate is signed by the cluster CA (clients trust one ca.pem),
    but it is for server auth only and names no member: it opens no peer connection."""
    b = member.bundle
    ctx = _client_ctx(member.ca, (b.server_cert, b.server_key))
    for claim in (1, 2):
        rpc, chosen = _add_token_rpc(victim)
        got = asyncio.run(_attempt(member.peer, ctx, claim, b.cluster_id, rpc))
        assert got == []
        _assert_victim_safe(member, victim, chosen)


def test_a_member_certificate_claiming_another_member_is_refused_and_logged_once(member, victim):
    b2 = Path(member.b2)
    ctx = _client_ctx(member.ca, (str(b2 / "peer.pem"), str(b2 / "peer.key")))
    cid = member.bundle.cluster_id

    # Control: member 2's certificate with Hello(2) is answered with the listener's Hello.
    got = asyncio.run(_attempt(member.peer, ctx, 2, cid, None))
    assert [type(e) for e in got] == [Hello] and got[0].node_id == 1

    rpc, chosen = _add_token_rpc(victim)
    got = asyncio.run(_attempt(member.peer, ctx, 3, cid, rpc))
    assert got == []
    _assert_victim_safe(member, victim, chosen)
    needle = "Hello claims node 3, its certificate names member 2"
    wait_for(lambda: needle in member.proc.output(), 10, "the refusal is logged")
    lines = [ln for ln in member.proc.output().splitlines() if needle in ln]
    assert len(lines) == 1 and " WARNING " in lines[0], lines


def test_the_dialer_refuses_a_listener_that_is_not_the_member_it_dialed(tmp_path):
    """Member 3 dials "member 2" at member 1's address: member 1's certificate names member 1,
    so member 3 sends nothing and the call fails."""
    from raftbox.raft.transport import PeerTransport, PeerUnreachable

    made = cluster.init(str(tmp_path / "b"), {i: (HOST, free_port()) for i in (1, 2, 3)})
    tls = {i: cluster.load_bundle(p).peer_tls() for i, p in zip((1, 2, 3), made, strict=True)}

    async def main() -> None:
        heard: list = []
        t1 = PeerTransport(1, (HOST, 0), on_messages=heard.extend, tls=tls[1])
        await t1.start()
        t3 = PeerTransport(3, None, {2: t1.listen_addr}, on_messages=heard.extend, tls=tls[3])
        await t3.start()
        try:
            with pytest.raises(PeerUnreachable, match="names member 1, not node 2"):
                await t3.call(2, "propose", b"", timeout_s=10)
            assert t1.stats().inbound_rejected == 0  # nothing reached member 1's Hello check
        finally:
            await t3.close()
            await t1.close()

    asyncio.run(main())


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes matched in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_raftbox_up_listens_on_its_public_port_only(tmp_path):
    port = quiet_port()
    up = UpServer(tmp_path, port)
    up.data.mkdir(parents=True)
    (up.data / "peer.port").write_text(str(free_port()))  # what older versions left behind
    up.start()
    try:
        assert _listening_tcp_ports(up.proc.pid) == {port}
        assert not (up.data / "peer.port").exists()
    finally:
        up.stop()


def test_serve_refuses_a_peer_port_without_a_bundle(tmp_path):
    p1, p2 = free_port(), free_port()
    out = subprocess.run(
        [
            RAFTBOX,
            "serve",
            "--node-id",
            "1",
            "--data",
            str(tmp_path / "d"),
            "--listen",
            f"{HOST}:{free_port()}",
            "--peer-listen",
            f"{HOST}:{p1}",
            "--peers",
            f"1={HOST}:{p1},2={HOST}:{p2}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "raftbox cluster init" in out.stderr
    assert not (tmp_path / "d").exists()


def test_raft_kv_plaintext_is_refused_off_loopback(tmp_path):
    out = subprocess.run(
        [RAFTBOX, "raft-kv", "serve", "--insecure-plaintext-peers", "--id", "1",
         "--data", str(tmp_path / "d"), "--listen", f"{HOST}:{free_port()}",
         "--peer-listen", "10.255.0.1:7001", "--peers", "1=10.255.0.1:7001,2=10.255.0.2:7001"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "non-loopback" in out.stderr
    out = subprocess.run(
        [RAFTBOX, "raft-kv", "serve", "--id", "1", "--data", str(tmp_path / "d"),
         "--listen", f"{HOST}:{free_port()}", "--peer-listen", f"{HOST}:7001",
         "--peers", f"1={HOST}:7001,2={HOST}:7002"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "raftbox cluster init" in out.stderr


def test_a_cluster_made_by_cluster_init_elects_a_leader_and_serves_the_sdk(tmp_path):
    """The README's way: `raftbox cluster init`, then `raftbox serve --cluster` per member."""
    import dropbox

    c = ApiCluster(tmp_path, n=3)  # bundles from cluster.init; here remade by the command
    shutil.rmtree(tmp_path / "bundles")
    members = ",".join(f"{i}={HOST}:{m.peer_port}" for i, m in c.members.items())
    out = subprocess.run(
        [RAFTBOX, "cluster", "init", "--members", members, "--out", str(tmp_path / "bundles")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = tmp_path / "bundles" / "member-1" / "peer.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "bundles" / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    c.admin_token = (tmp_path / "bundles" / "member-1" / "admin.token").read_text().strip()
    c.ca = str(tmp_path / "bundles" / "member-1" / "ca.pem")
    c.start()
    try:
        leader = c.leader()
        assert leader in c.members
        _, token = create_account_http(c.members[2].hostport, c.ca, c.admin_token, "u@x.test")
        s = dropbox.create_session(ca_certs=c.ca)
        s.trust_env = False
        dbx = dropbox.Dropbox(token, session=s, max_retries_on_error=8)
        hp = c.members[2].hostport
        dbx._host_map = {"api": hp, "content": hp, "notify": hp}
        dbx.files_upload(b"hello cluster", "/a.txt")
        hp = c.members[3].hostport
        dbx._host_map = {"api": hp, "content": hp, "notify": hp}
        _, resp = dbx.files_download("/a.txt")
        assert resp.content == b"hello cluster"
    finally:
        c.stop()


def test_bundles_and_member_names(tmp_path):
    made = cluster.init(str(tmp_path / "b"), {1: (HOST, 7001)}, cluster_id="alpha")
    b = cluster.load_bundle(made[0])
    assert b.cluster_id == "alpha" and b.members == {1: (HOST, 7001)}
    for secret in ("peer.key", "server.key", "admin.token"):
        assert (Path(made[0]) / secret).stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / "b").glob("*.tmp")) and not list(Path(made[0]).glob("*.tmp"))
    san = {"subjectAltName": (("URI", "urn:raftbox:alpha:member:7"), ("DNS", "x"))}
    assert members_named(san, "alpha") == {7}
    assert members_named(san, "beta") == set()
    leading_zero = {"subjectAltName": (("URI", "urn:raftbox:alpha:member:07"),)}
    assert members_named(leading_zero, "alpha") == set()
    assert members_named(None, "alpha") == set()
    with pytest.raises(cluster.BundleError, match="already holds a cluster CA"):
        cluster.init(str(tmp_path / "b"), {1: (HOST, 7001)})
    with pytest.raises(cluster.BundleError, match="not a member bundle"):
        cluster.load_bundle(str(tmp_path / "b" / "ca"))
    out = subprocess.run(
        [RAFTBOX, "cluster", "add-member", "--out", str(tmp_path / "b"), "--member", "2=h2:7002"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    b2 = cluster.load_bundle(str(tmp_path / "b" / "member-2"))
    assert (b2.cluster_id, b2.member_id, b2.admin_token) == ("alpha", 2, b.admin_token)
    assert b2.members == {1: (HOST, 7001), 2: ("h2", 7002)}
    out = subprocess.run(
        [RAFTBOX, "cluster", "add-member", "--out", str(tmp_path / "b"), "--member", "2=h2:7002"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "already exists" in out.stderr


class _NullSM:
    def __init__(self) -> None:
        self.applied = 0

    def applied_index(self) -> int:
        return self.applied

    def apply(self, index: int, command) -> None:
        self.applied = index

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def test_a_node_config_with_peers_and_no_tls_is_refused_and_a_lone_node_listens_nowhere(
    tmp_path,
):
    """The `Server`/`NodeConfig` path, in process: no peer TLS, no peer port."""
    from raftbox.raft.node import NodeConfig, NodeError, PeerPortRefused, RaftNode
    from raftbox.raft.transport import TransportClosed

    a, b = (HOST, free_port()), (HOST, free_port())
    with pytest.raises(PeerPortRefused, match="raftbox cluster init"):
        RaftNode(NodeConfig(1, str(tmp_path / "two"), a, {1: a, 2: b}), _NullSM())
    with pytest.raises(PeerPortRefused, match="raftbox cluster init"):
        RaftNode(NodeConfig(1, str(tmp_path / "join"), a, {1: a}, join=True), _NullSM())

    async def lone() -> None:
        node = RaftNode(NodeConfig(1, str(tmp_path / "one"), a, {1: a}, tick_s=0.01), _NullSM())
        await node.start()
        try:
            assert not node.has_peer_port
            with pytest.raises(TransportClosed, match="not listening"):
                node.transport.listen_addr  # noqa: B018
            assert not _port_open_at(a)
            with pytest.raises(NodeError, match="no peer port"):
                await node.add_member(2, b, timeout_s=1)
        finally:
            await node.stop()

    asyncio.run(lone())


def _port_open_at(addr) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(addr) == 0
