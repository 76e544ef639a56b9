"""The npm `dropbox` SDK (10.x, installed from the npm registry into build/eco) on node, on
every route it exposes that raftbox serves, against raftbox as *.dropboxapi.com
(`tests/eco/host.py`): session uploads and `finish_batch` included. Judged like the Python SDKs
(`routes.judge`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .host import JS_SDK_VERSION, DropboxHost, js_sdk_dir
from .routes import judge

SCRIPT = Path(__file__).with_name("clients") / "js_sdk_routes.js"


def test_js_sdk(dbhost: DropboxHost) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not installed: run make debs (make test does)")
    try:
        sdk = js_sdk_dir(JS_SDK_VERSION)
    except RuntimeError as e:  # no registry here
        pytest.fail(f"cannot install the npm dropbox@{JS_SDK_VERSION}: {e}")
    token, spare = dbhost.account(), dbhost.account()
    r = dbhost.run(["node", str(SCRIPT), str(sdk), token, spare], timeout_s=600, check=True)
    results = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    judge([x for x in results if "check" in x])
