"""Cluster bundles: what each member of a raftbox cluster needs, made by one command.

`raftbox cluster init --members 1=h1:7001,2=h2:7001,3=h3:7001 --out DIR [--hosts NAMES]` makes:

    DIR/ca/ca.pem, ca.key          the cluster CA (ten years); the key is needed only to add
                                   members (`raftbox cluster add-member`): keep it offline
    DIR/ca/cluster.json            cluster id, members and host names (to add members later)
    DIR/ca/admin.token             the cluster's admin token
    DIR/member-N/ca.pem            the cluster CA: peers and clients trust this one file
    DIR/member-N/member.json       {"cluster_id", "member_id", "members": {"1": "h1:7001", ...}}
    DIR/member-N/peer.pem, .key    member N's peer certificate (SAN URI
                                   urn:raftbox:<cluster>:member:N, server+client auth; ten years)
    DIR/member-N/server.pem, .key  the public HTTPS certificate for member N's host names
                                   (its peer host, localhost, 127.0.0.1 and --hosts; two years)
    DIR/member-N/admin.token       the cluster's admin token

Secrets (keys, tokens) are written 0600, every file atomically (a temporary file, fsync,
rename), and each member directory is made complete under a temporary name, then renamed: a
bundle either exists whole or not at all. `init` refuses an `--out` that already has a CA.

`--hosts` adds public host names to the server certificates: `NAME` for every member (e.g. the
load balancer's name), `N=NAME` for member N only.

`raftbox serve --cluster DIR/member-N` (and `raftbox raft-kv serve --cluster ...`) loads a bundle
with `load_bundle`: node id, peer addresses, peer TLS, admin token, public certificate.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from raftbox import atomic, tls

Address = tuple[str, int]

CA_DAYS = 3650
PEER_CERT_DAYS = 3650
SERVER_CERT_DAYS = 730


class BundleError(ValueError):
    """A bundle is missing, incomplete or inconsistent; the message says what to fix."""


@dataclass(frozen=True)
class Bundle:
    """One member's bundle (`DIR/member-N`), loaded."""

    path: str
    cluster_id: str
    member_id: int
    members: dict[int, Address]  # advertised peer addresses, this member's included
    admin_token: str

    @property
    def ca_file(self) -> str:
        return os.path.join(self.path, "ca.pem")

    @property
    def server_cert(self) -> str:
        return os.path.join(self.path, "server.pem")

    @property
    def server_key(self) -> str:
        return os.path.join(self.path, "server.key")

    def peer_tls(self) -> tls.PeerTLS:
        return tls.peer_tls(
            self.cluster_id,
            self.ca_file,
            os.path.join(self.path, "peer.pem"),
            os.path.join(self.path, "peer.key"),
        )


def parse_members(spec: str) -> dict[int, Address]:
    """`1=h1:7001,2=h2:7001` -> {1: ("h1", 7001), ...}; ValueError says what is wrong."""
    members: dict[int, Address] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        nid, sep, addr = part.partition("=")
        host, sep2, port = addr.rpartition(":")
        if not (sep and sep2 and nid.isdigit() and int(nid) > 0 and host and port.isdigit()):
            raise ValueError(f"expected ID=HOST:PORT with ID > 0, got {part!r}")
        if int(nid) in members:
            raise ValueError(f"member {nid} given twice")
        members[int(nid)] = (host.strip("[]"), int(port))
    if not members:
        raise ValueError("no members given")
    return members


def _parse_hosts(spec: str) -> tuple[tuple[str, ...], dict[int, tuple[str, ...]]]:
    common: list[str] = []
    per: dict[int, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        nid, sep, name = part.partition("=")
        if sep:
            if not nid.isdigit() or not name:
                raise ValueError(f"expected NAME or ID=NAME in --hosts, got {part!r}")
            per.setdefault(int(nid), []).append(name)
        else:
            common.append(part)
    return tuple(common), {k: tuple(v) for k, v in per.items()}


def _fmt(addr: Address) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"


def init(
    out: str, members: dict[int, Address], hosts: str = "", cluster_id: str | None = None
) -> list[str]:
    """Make the CA and one bundle per member in `out` (see the module docstring); the bundle
    directories made. BundleError if `out` already holds a cluster CA."""
    common, per = _parse_hosts(hosts)
    if unknown := set(per) - set(members):
        raise BundleError(f"--hosts names member(s) {sorted(unknown)} not in --members")
    cluster_id = tls.check_cluster_id(cluster_id or secrets.token_hex(6))
    ca_dir = os.path.join(out, "ca")
    if os.path.exists(os.path.join(ca_dir, "ca.key")):
        raise BundleError(f"{ca_dir} already holds a cluster CA: choose another --out")
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    ca_cert, ca_key = tls.make_ca(f"raftbox cluster {cluster_id} CA", valid_days=CA_DAYS)
    admin_token = "rbxadmin_" + secrets.token_urlsafe(32)  # never starts with "-"
    tls.write_private(os.path.join(ca_dir, "ca.key"), tls.key_pem(ca_key))
    tls.write_public(
        os.path.join(ca_dir, "ca.pem"), ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    tls.write_private(os.path.join(ca_dir, "admin.token"), (admin_token + "\n").encode())
    _write_cluster_json(ca_dir, cluster_id, members, common, per)
    return [
        _write_member(out, ca_cert, ca_key, cluster_id, nid, members, admin_token, common, per)
        for nid in sorted(members)
    ]


def add_member(out: str, member_id: int, addr: Address, hosts: str = "") -> str:
    """A bundle for a new member (to start with `--join`), from the CA in `out/ca`; the member
    list it carries is the cluster's plus the new member. Returns the bundle directory."""
    ca_dir = os.path.join(out, "ca")
    try:
        info = json.loads(Path(ca_dir, "cluster.json").read_text())
        ca_cert = x509.load_pem_x509_certificate(Path(ca_dir, "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key(
            Path(ca_dir, "ca.key").read_bytes(), password=None
        )
        admin_token = Path(ca_dir, "admin.token").read_text().strip()
    except (OSError, ValueError) as e:
        raise BundleError(f"{ca_dir}: not a cluster CA made by `raftbox cluster init`: {e}") from e
    members = {int(k): _addr(v) for k, v in info["members"].items()}
    if member_id in members:
        raise BundleError(f"member {member_id} already exists in {out}")
    members[member_id] = addr
    common, per = _parse_hosts(hosts)
    common = tuple(dict.fromkeys((*info.get("hosts", ()), *common)))
    path = _write_member(
        out, ca_cert, ca_key, info["cluster_id"], member_id, members, admin_token, common, per
    )
    _write_cluster_json(ca_dir, info["cluster_id"], members, common, {})
    return path


def _addr(s: str) -> Address:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def _write_cluster_json(ca_dir, cluster_id, members, common, per) -> None:
    info = {
        "cluster_id": cluster_id,
        "members": {str(k): _fmt(v) for k, v in sorted(members.items())},
        "hosts": list(common),
    }
    tls.write_public(os.path.join(ca_dir, "cluster.json"), json.dumps(info, indent=2).encode())


def _write_member(out, ca_cert, ca_key, cluster_id, nid, members, admin_token, common, per) -> str:
    final = os.path.join(out, f"member-{nid}")
    if os.path.exists(final):
        raise BundleError(f"{final} already exists")
    tmp = os.path.join(out, f".member-{nid}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    peer_pem, peer_key = tls.issue_member(ca_cert, ca_key, cluster_id, nid, PEER_CERT_DAYS)
    names = (members[nid][0], "localhost", "127.0.0.1", *common, *per.get(nid, ()))
    srv_pem, srv_key = tls.issue(
        ca_cert,
        ca_key,
        "raftbox",
        tuple(dict.fromkeys(names)),
        SERVER_CERT_DAYS,
        client_auth=False,
    )
    info = {
        "cluster_id": cluster_id,
        "member_id": nid,
        "members": {str(k): _fmt(v) for k, v in sorted(members.items())},
    }
    tls.write_public(os.path.join(tmp, "ca.pem"), ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.write_public(os.path.join(tmp, "member.json"), json.dumps(info, indent=2).encode())
    tls.write_public(os.path.join(tmp, "peer.pem"), peer_pem)
    tls.write_private(os.path.join(tmp, "peer.key"), peer_key)
    tls.write_public(os.path.join(tmp, "server.pem"), srv_pem)
    tls.write_private(os.path.join(tmp, "server.key"), srv_key)
    tls.write_private(os.path.join(tmp, "admin.token"), (admin_token + "\n").encode())
    os.rename(tmp, final)  # a directory: `raftbox.atomic` writes files
    atomic.fsync_dir(out)
    return final


def load_bundle(path: str) -> Bundle:
    """Load `DIR/member-N`; BundleError naming the missing or bad part."""
    path = os.path.abspath(path)
    need = ("ca.pem", "member.json", "peer.pem", "peer.key", "server.pem", "server.key")
    if missing := [f for f in (*need, "admin.token") if not os.path.exists(os.path.join(path, f))]:
        raise BundleError(
            f"{path} is not a member bundle (missing {', '.join(missing)}); make one with "
            "`raftbox cluster init --members ... --out DIR` and pass DIR/member-N"
        )
    try:
        info = json.loads(Path(path, "member.json").read_text())
        bundle = Bundle(
            path=path,
            cluster_id=tls.check_cluster_id(info["cluster_id"]),
            member_id=int(info["member_id"]),
            members={int(k): _addr(v) for k, v in info["members"].items()},
            admin_token=Path(path, "admin.token").read_text().strip(),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path}/member.json is damaged: {e!r}") from e
    if bundle.member_id not in bundle.members:
        raise BundleError(f"{path}: member {bundle.member_id} is not in its own member list")
    return bundle
