"""A throwaway certificate authority for tests: make a CA, issue certificates, build contexts.

Keys are EC P-256 (fast to generate), certificates are short-lived, and nothing touches the disk
except for the moment `ssl` needs a file to load a key from (it has no in-memory API for that).
Not for production: the CA key lives in memory, unprotected.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from raftbox.tls import issue, make_ca

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class IssuedCert:
    """A certificate (PEM) and its private key (PEM, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        with open(cert_path, "wb") as f:
            f.write(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem)


class ThrowawayCA:
    """A self-signed CA that issues certificates good for both server and client auth
    (the certificates are made by `raftbox.tls`, as the product's own local CA makes them)."""

    def __init__(self, common_name: str = "raftbox throwaway CA", valid_days: int = 2) -> None:
        self.cert, self._key = make_ca(common_name, valid_days)
        self._valid_days = valid_days
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> IssuedCert:
        """A certificate for `common_name`, valid for `hosts` (DNS names or IP addresses)."""
        cert_pem, key_pem = issue(self.cert, self._key, common_name, hosts, self._valid_days)
        return IssuedCert(cert_pem, key_pem)

    def server_context(
        self, cert: IssuedCert, *, require_client_cert: bool = True
    ) -> ssl.SSLContext:
        """A server context presenting `cert`; by default clients must present one of ours (mTLS)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(ctx, cert)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self.cert_pem.decode())
        return ctx

    def client_context(self, cert: IssuedCert | None = None) -> ssl.SSLContext:
        """A client context that trusts only this CA and presents `cert` if given."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=self.cert_pem.decode())
        if cert is not None:
            _load_chain(ctx, cert)
        return ctx


def _load_chain(ctx: ssl.SSLContext, cert: IssuedCert) -> None:
    with tempfile.TemporaryDirectory(prefix="raftbox-tls-") as d:
        cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        cert.write(cert_path, key_path)
        ctx.load_cert_chain(cert_path, key_path)
