"""TLS for the public address: a local certificate authority that `raftbox up` makes itself.

On first start `ensure_local_ca(DIR, hosts)` creates `DIR/ca.pem` + `DIR/ca.key` (EC P-256, ten
years) and a server certificate `DIR/server.pem` + `DIR/server.key` for `hosts` (one year),
signed by that CA; later starts reuse them, issuing a new server certificate only when the
hosts change or it nears expiry. Clients trust `DIR/ca.pem` (the SDK's `ca_certs=`). A real
deployment passes its own `--tls-cert/--tls-key` instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_public(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
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
) -> tuple[bytes, bytes]:
    """A server+client certificate for `hosts` (DNS names or IPs): (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
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
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_local_ca(directory: str, hosts: tuple[str, ...]) -> tuple[str, str, str]:
    """Make (once) a CA and a server certificate in `directory`: (ca.pem, server.pem, server.key)."""
    os.makedirs(directory, exist_ok=True)
    ca_pem, ca_keyf = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    srv_pem, srv_key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    if not (os.path.exists(ca_pem) and os.path.exists(ca_keyf)):
        cert, key = make_ca("raftbox local CA", valid_days=3650)
        _write_private(ca_keyf, _key_pem(key))
        _write_public(ca_pem, cert.public_bytes(serialization.Encoding.PEM))
        for stale in (srv_pem, srv_key):
            if os.path.exists(stale):
                os.unlink(stale)
    with open(ca_pem, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_keyf, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    if not _server_cert_ok(srv_pem, hosts):
        cert_pem, key_pem = issue(ca_cert, ca_key, "raftbox", hosts, valid_days=365)  # type: ignore[arg-type]
        _write_private(srv_key, key_pem)
        _write_public(srv_pem, cert_pem)
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
