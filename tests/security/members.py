"""A single `raftbox serve` member started with a bundle from `raftbox cluster init`, for the
security tests (see `Member`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import requests

from api.procs import Proc
from raftbox import cluster
from raftbox.testing.procs import HOST, free_port

RAFTBOX = shutil.which("raftbox", path=os.path.dirname(sys.executable)) or "raftbox"


class Member:
    """One `raftbox serve --cluster DIR/member-1` (a single-member group: it serves alone),
    plus bundles for members 2 and 3 that are never started (their certificates are valid)."""

    def __init__(self, base: Path) -> None:
        self.peer = (HOST, free_port())
        self.hostport = f"{HOST}:{free_port()}"
        out = base / "bundles"
        [b1] = cluster.init(str(out), {1: self.peer})
        self.b2 = cluster.add_member(str(out), 2, (HOST, free_port()))
        self.b3 = cluster.add_member(str(out), 3, (HOST, free_port()))
        self.bundle = cluster.load_bundle(b1)
        self.ca = self.bundle.ca_file
        self.admin_token = self.bundle.admin_token
        self.proc = Proc(
            "member 1",
            [
                RAFTBOX,
                "serve",
                "--cluster",
                b1,
                "--data",
                str(base / "m1"),
                "--listen",
                self.hostport,
                "--tick-ms",
                "20",
            ],  # fmt: skip
            base / "m1.log",
        )

    def post(self, route: str, token: str, arg: dict | None, data: bytes | None = None):
        """An RPC route (`data` None: `arg` is the JSON body) or a content route."""
        headers = {"Authorization": f"Bearer {token}"}
        if data is None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(arg).encode()
        else:
            headers["Dropbox-API-Arg"] = json.dumps(arg)
            if data:
                headers["Content-Type"] = "application/octet-stream"
        with requests.Session() as s:
            s.trust_env = False
            return s.post(
                f"https://{self.hostport}/2/{route}",
                headers=headers,
                data=data,
                verify=self.ca,
                timeout=30,
            )
