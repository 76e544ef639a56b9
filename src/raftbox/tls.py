"""TLS: a local certificate authority for the public address, and member certificates for the
peer port.

Public address. On first start `ensure_local_ca(DIR, hosts)` creates `DIR/ca.pem` + `DIR/ca.key` (EC P-256, ten
years) and a server certificate `DIR/server.pem` + `DIR/server.key` for `hosts` (one year),
signed by that CA; later starts reuse them, issuing a new server certificate only when the
hosts change or it nears expiry. Clients trust `DIR/ca.pem` (the SDK's `ca_certs=`). A real
deployment passes its own `--tls-cert/--tls-key` instead.

Peer port (mutual TLS). A cluster has one CA (`raftbox cluster init`, see `raftbox.cluster`).
Each member holds a certificate signed by it that names the member, as a SAN URI:

    urn:raftbox:<cluster id>:member:<member id>       e.g. urn:raftbox:c0ffee12:member:2

and nothing else identifies a member: host names are not checked (members are known by id and
their advertised addresses may be proxies). `PeerTLS` holds the two contexts of one member — a
listener that requires a client certificate of the cluster CA, a dialer that requires the
listener's — and `member_of(ssl_object)`, the id a verified peer certificate names for this
cluster (None if it names none, or more than one). The transport compares it with the id a
peer claims in its `Hello` (inbound) and with the id it meant to dial (outbound). Both ends
require TLS 1.3. The public server certificate a cluster member gets is for server auth only and
names no member, so it cannot pass for a member on the peer port.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftbox import atomic


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: str, data: bytes) -> None:
    """Write a secret atomically (`raftbox.atomic.replace`), mode 0600."""
    atomic.replace(path, data, 0o600)


def write_public(path: str, data: bytes) -> None:
    """Write atomically (`raftbox.atomic.replace`), mode 0644."""
    atomic.replace(path, data, 0o644)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(
    common_name: str, valid_days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    hosts: tuple[str, ...],
    valid_days: int,
    *,
    uris: tuple[str, ...] = (),
    client_auth: bool = True,
) -> tuple[bytes, bytes]:
    """A certificate for `hosts` (DNS names or IPs) and `uris`: (cert PEM, key PEM). Good for
    server auth, and for client auth unless `client_auth` is False."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    sans.extend(x509.UniformResourceIdentifier(u) for u in uris)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def ensure_local_ca(directory: str, hosts: tuple[str, ...]) -> tuple[str, str, str]:
    """Make (once) a CA and a server certificate in `directory`: (ca.pem, server.pem, server.key)."""
    os.makedirs(directory, exist_ok=True)
    ca_pem, ca_keyf = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    srv_pem, srv_key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    if not (os.path.exists(ca_pem) and os.path.exists(ca_keyf)):
        cert, key = make_ca("raftbox local CA", valid_days=3650)
        write_private(ca_keyf, key_pem(key))
        write_public(ca_pem, cert.public_bytes(serialization.Encoding.PEM))
        for stale in (srv_pem, srv_key):
            if os.path.exists(stale):
                os.unlink(stale)
    with open(ca_pem, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_keyf, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    if not _server_cert_ok(srv_pem, hosts):
        cert_pem, srv_key_pem = issue(ca_cert, ca_key, "raftbox", hosts, valid_days=365)  # type: ignore[arg-type]
        write_private(srv_key, srv_key_pem)
        write_public(srv_pem, cert_pem)
    return ca_pem, srv_pem, srv_key


def _server_cert_ok(path: str, hosts: tuple[str, ...]) -> bool:
    if not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    if cert.not_valid_after_utc - _now() < datetime.timedelta(days=30):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )
    return set(hosts) <= have


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


# --- the peer port: member certificates and mutual TLS -------------------------------------------

_CLUSTER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_cluster_id(cluster_id: str) -> str:
    """`cluster_id` if it is 1..63 of [a-z0-9-] (not starting with '-'); else ValueError."""
    if not _CLUSTER_ID.fullmatch(cluster_id):
        raise ValueError(f"cluster id {cluster_id!r}: use 1..63 of a-z, 0-9 and '-'")
    return cluster_id


def member_uri(cluster_id: str, member_id: int) -> str:
    """The SAN URI that names member `member_id` of cluster `cluster_id`."""
    if member_id <= 0:
        raise ValueError(f"member id {member_id}: must be > 0")
    return f"urn:raftbox:{check_cluster_id(cluster_id)}:member:{member_id}"


def issue_member(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cluster_id: str,
    member_id: int,
    valid_days: int,
) -> tuple[bytes, bytes]:
    """Member `member_id`'s peer certificate (server and client auth, no host names)."""
    return issue(
        ca_cert,
        ca_key,
        f"raftbox member {member_id} of {cluster_id}",
        (),
        valid_days,
        uris=(member_uri(cluster_id, member_id),),
    )


def members_named(peercert: dict | None, cluster_id: str) -> set[int]:
    """The member ids of `cluster_id` a certificate names (`SSLObject.getpeercert()` form)."""
    prefix = f"urn:raftbox:{cluster_id}:member:"
    ids: set[int] = set()
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "URI" and value.startswith(prefix):
            rest = value[len(prefix) :]
            if rest.isascii() and rest.isdigit() and not rest.startswith("0"):
                ids.add(int(rest))
    return ids


@dataclass(frozen=True)
class PeerTLS:
    """One member's mutual TLS on the peer port (see the module docstring)."""

    cluster_id: str
    server: ssl.SSLContext  # the listener: a client certificate of the cluster CA is required
    client: ssl.SSLContext  # the dialer: the listener's certificate must be of the cluster CA

    def member_of(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int | None:
        """The one member id of this cluster the verified peer certificate names, else None."""
        if ssl_object is None:
            return None
        ids = members_named(ssl_object.getpeercert(), self.cluster_id)
        return next(iter(ids)) if len(ids) == 1 else None


def peer_tls(cluster_id: str, ca_file: str, cert_file: str, key_file: str) -> PeerTLS:
    """The contexts of a member presenting `cert_file`, trusting only the cluster CA `ca_file`."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # members are identified by id (member_of), not host name
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
    return PeerTLS(check_cluster_id(cluster_id), server, client)
