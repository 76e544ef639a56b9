"""The official Python SDK, 12.2.4 (this venv) and 11.36.2 (a second venv), on every route it
exposes that raftbox serves, against raftbox posing as *.dropboxapi.com (`tests/eco/host.py`).

Each SDK runs `clients/py_sdk_routes.py`, which reports one line per check, judged by
`routes.judge` (`routes.SERVED` must pass; `routes.PENDING` are other branches' routes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .host import PY_SDK_OLD_VERSION, DropboxHost, py_sdk_python
from .routes import judge

SCRIPT = Path(__file__).with_name("clients") / "py_sdk_routes.py"


def run_checks(dbhost: DropboxHost, python: str) -> list[dict]:
    token, spare = dbhost.account(), dbhost.account()
    r = dbhost.run([python, str(SCRIPT), token, spare, dbhost.ca], timeout_s=600, check=True)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return [x for x in lines if "check" in x]


def test_python_sdk_12(dbhost: DropboxHost) -> None:
    judge(run_checks(dbhost, sys.executable))


def test_python_sdk_11(dbhost: DropboxHost) -> None:
    try:
        python = py_sdk_python(PY_SDK_OLD_VERSION)
    except RuntimeError as e:  # no registry here
        pytest.fail(f"cannot install dropbox=={PY_SDK_OLD_VERSION}: {e}")
    judge(run_checks(dbhost, python))
