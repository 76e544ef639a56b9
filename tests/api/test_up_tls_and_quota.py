"""`raftbox up --tls-cert/--tls-key` serves the operator's certificate (for a real host name) and
makes no CA of its own; `--default-quota` gives the accounts it creates their quota; bad TLS
flags are refused before anything starts."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography import x509

from raftbox import tls

from . import procs


def _certs(base: Path) -> tuple[str, str, str]:
    """A CA of the test, and a certificate it issued for files.example.test and 127.0.0.1."""
    ca_cert, ca_key = tls.make_ca("test public CA", 2)
    cert, key = tls.issue(ca_cert, ca_key, "files.example.test",
                          ("files.example.test", "127.0.0.1"), 2, client_auth=False)  # fmt: skip
    from cryptography.hazmat.primitives import serialization

    paths = (base / "ca.pem", base / "server.pem", base / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert)
    paths[2].write_bytes(key)
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


def _served_cert(hostport: str, ca: str) -> x509.Certificate:
    host, port = hostport.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="files.example.test") as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def test_up_serves_the_given_certificate_and_the_default_quota(tmp_path: Path) -> None:
    ca, cert, key = _certs(tmp_path)
    data = tmp_path / "data"
    hostport = f"{procs.HOST}:{procs.quiet_port()}"
    p = procs.Proc(
        "raftbox up --tls-cert",
        [procs.RAFTBOX, "up", "--data", str(data), "--listen", hostport, "--tls-cert", cert,
         "--tls-key", key, "--default-quota", "1M"],
        tmp_path / "up.log",
    )  # fmt: skip
    p.start()
    try:
        p.wait_output("Stop with Ctrl-C", 60)
        served = _served_cert(hostport, ca)  # verified against the test's CA, by host name
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "files.example.test" in sans.get_values_for_type(x509.DNSName)
        assert served.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
        assert not (data / "ca.pem").exists()  # no CA of its own was made
        assert "none of ours" in p.output()
        token = (data / "token").read_text().strip()
        r = requests.post(
            f"https://{hostport}/2/users/get_space_usage",
            headers={"Authorization": f"Bearer {token}"},
            verify=ca,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"used": 0, "allocation": {".tag": "individual", "allocated": 2**20}}
        q = subprocess.run(
            [procs.RAFTBOX, "user", "quota", "you@localhost", "none", "--data", str(data),
             "--ca", ca],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert q.returncode == 0, q.stderr
        assert "quota none" in q.stdout
    finally:
        p.stop()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--tls-cert", "CERT"], "go together"),
        (["--tls-key", "KEY"], "go together"),
        (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "KEY"], "no such file"),
        (["--default-quota", "ten gigs"], "a size like"),
    ],
)
def test_up_refuses_bad_tls_and_quota_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    _, cert, key = _certs(tmp_path)
    flags = [cert if f == "CERT" else key if f == "KEY" else f for f in flags]
    r = subprocess.run(
        [procs.RAFTBOX, "up", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:1", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was made
