"""A small synchronous client for the Dropbox API v2 routes the command line needs.

One `requests.Session` per `Api`, TLS verified against the configured CA (or the system's), no
proxy/CA settings taken from the environment when a CA is configured. Every route raises
`ApiError` with the server's `error_summary` (e.g. `path/not_found/..`) on an API error and
`ApiError` with a one-line reason on a transport failure, so callers print one line.

Files up to `SESSION_THRESHOLD` go up in one `files/upload`; bigger ones through an upload
session (start, append_v2, finish) in `CHUNK_BYTES` pieces, so memory stays bounded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .config import Config

if TYPE_CHECKING:
    import requests

MiB = 1024 * 1024
SESSION_THRESHOLD = 8 * MiB
CHUNK_BYTES = 8 * MiB


class ApiError(Exception):
    """A failed call: `summary` is the server's error_summary (or a transport reason)."""

    def __init__(self, route: str, summary: str, status: int | None = None) -> None:
        super().__init__(f"{route}: {summary}")
        self.route = route
        self.summary = summary
        self.status = status

    def is_tag(self, prefix: str) -> bool:
        """Does the error_summary start with `prefix` (e.g. "path/not_found")?"""
        return self.summary.startswith(prefix)


def _arg(obj: dict[str, Any]) -> str:
    # HTTP headers are ASCII: json.dumps escapes everything else as \uXXXX (what Dropbox wants).
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


class Api:
    def __init__(self, cfg: Config, timeout_s: float = 120.0) -> None:
        self.base = cfg.server.rstrip("/")
        self.timeout_s = timeout_s
        import requests  # here, not at the top: `raftbox sync` never builds an Api (start-up)

        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {cfg.token}"
        if cfg.ca:
            self.s.verify = cfg.ca
            self.s.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`

    def close(self) -> None:
        self.s.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def _post(self, route: str, **kw: Any) -> requests.Response:
        import requests

        try:
            r = self.s.post(f"{self.base}/2/{route}", timeout=self.timeout_s, **kw)
        except requests.exceptions.SSLError as e:
            raise ApiError(route, f"TLS error (wrong --ca?): {e}") from None
        except requests.RequestException as e:
            raise ApiError(route, f"cannot reach {self.base}: {type(e).__name__}") from None
        if r.status_code == 200:
            return r
        summary = f"HTTP {r.status_code}"
        try:
            body = r.json()
            summary = body.get("error_summary") or summary
        except ValueError:
            if r.text.strip():
                summary = f"{summary}: {r.text.strip().splitlines()[0][:200]}"
        if r.status_code == 401:
            summary = f"unauthorized ({summary}): check the token (raftbox login)"
        raise ApiError(route, summary, r.status_code)

    def rpc(self, route: str, arg: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self._post(route, json=arg if arg is not None else None)
        return r.json() if r.content else {}

    def upload_call(self, route: str, arg: dict[str, Any], data: bytes | BinaryIO) -> dict:
        headers = {"Dropbox-API-Arg": _arg(arg), "Content-Type": "application/octet-stream"}
        return self._post(route, headers=headers, data=data).json()

    # -- routes ----------------------------------------------------------------------------

    def get_metadata(self, path: str) -> dict[str, Any]:
        return self.rpc("files/get_metadata", {"path": path})

    def list_folder(self, path: str, recursive: bool = False) -> Iterator[dict[str, Any]]:
        """Every entry, following `has_more` with list_folder/continue."""
        res = self.rpc("files/list_folder", {"path": path, "recursive": recursive})
        yield from res["entries"]
        while res.get("has_more"):
            res = self.rpc("files/list_folder/continue", {"cursor": res["cursor"]})
            yield from res["entries"]

    def delete(self, path: str) -> dict[str, Any]:
        return self.rpc("files/delete_v2", {"path": path})["metadata"]

    def move(self, src: str, dst: str) -> dict[str, Any]:
        return self.rpc("files/move_v2", {"from_path": src, "to_path": dst})["metadata"]

    def list_revisions(self, path: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.rpc("files/list_revisions", {"path": path, "limit": limit})["entries"]

    def restore(self, path: str, rev: str) -> dict[str, Any]:
        return self.rpc("files/restore", {"path": path, "rev": rev})

    def upload(self, local: str | os.PathLike[str], remote: str, *, overwrite: bool = True) -> dict:
        """Upload a local file to `remote` (mode overwrite, or add with autorename off)."""
        st = os.stat(local)
        mode: Any = "overwrite" if overwrite else "add"
        commit = {
            "path": remote,
            "mode": mode,
            "autorename": False,
            "mute": False,
            "client_modified": _ts(st.st_mtime),
        }
        with open(local, "rb") as f:
            if st.st_size <= SESSION_THRESHOLD:
                return self.upload_call("files/upload", commit, f.read())
            first = f.read(CHUNK_BYTES)
            sid = self.upload_call("files/upload_session/start", {"close": False}, first)[
                "session_id"
            ]
            offset = len(first)
            while piece := f.read(CHUNK_BYTES):
                cursor = {"session_id": sid, "offset": offset}
                self.upload_call("files/upload_session/append_v2", {"cursor": cursor}, piece)
                offset += len(piece)
            cursor = {"session_id": sid, "offset": offset}
            return self.upload_call(
                "files/upload_session/finish", {"cursor": cursor, "commit": commit}, b""
            )

    def download(self, remote: str, out: BinaryIO, chunk_bytes: int = 1 * MiB) -> dict:
        """Stream `remote`'s content into `out`; returns its metadata."""
        headers = {"Dropbox-API-Arg": _arg({"path": remote})}
        r = self._post("files/download", headers=headers, stream=True)
        import requests

        try:
            meta = json.loads(r.headers["Dropbox-API-Result"])
            for piece in r.iter_content(chunk_bytes):
                out.write(piece)
        except requests.RequestException as e:
            raise ApiError("files/download", f"transfer failed: {type(e).__name__}") from None
        finally:
            r.close()
        return meta


def _ts(t: float) -> str:
    import time

    from raftbox.meta.values import clamp_mtime_s

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clamp_mtime_s(t)))
