"""The official Python SDK, 12.2.4 (this venv) and 11.36.2 (a second venv), on every route it
exposes that raftbox serves, against raftbox posing as *.dropboxapi.com (`tests/eco/host.py`).

Each SDK runs `clients/py_sdk_routes.py`, which reports one line per check. The checks whose
routes are all in `SERVED` must pass; the others (routes other branches add: `PENDING`) are
reported in the test's output and must at least fail the way an SDK can read (no
JSONDecodeError). When a branch that serves a pending route is merged, move its routes from
`PENDING` to `SERVED`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .host import PY_SDK_OLD_VERSION, DropboxHost, py_sdk_python

SCRIPT = Path(__file__).with_name("clients") / "py_sdk_routes.py"

SERVED = {
    "users/get_current_account", "check/user", "auth/token/revoke",
    "files/get_metadata", "files/list_folder", "files/list_folder/continue",
    "files/list_folder/get_latest_cursor", "files/list_folder/longpoll",
    "files/create_folder_v2", "files/create_folder", "files/copy_v2", "files/copy",
    "files/move_v2", "files/move", "files/delete_v2", "files/delete",
    "files/list_revisions", "files/restore", "files/upload", "files/download",
    "files/upload_session/start", "files/upload_session/append_v2",
    "files/upload_session/finish", "files/upload_session/finish_batch_v2",
    "unknown route",
}  # fmt: skip

# route -> the branch that adds it
PENDING = {
    "users/get_space_usage": "eco-routes",
    "files/search_v2": "eco-routes",
    "files/search/continue_v2": "eco-routes",
    "files/get_temporary_link": "eco-routes",
    "files/upload_session/finish_batch": "eco-batch",
    "files/upload_session/finish_batch/check": "eco-batch",
    "files/copy_batch_v2": "eco-batch",
    "files/copy_batch/check_v2": "eco-batch",
    "files/move_batch_v2": "eco-batch",
    "files/move_batch/check_v2": "eco-batch",
    "files/delete_batch": "eco-batch",
    "files/delete_batch/check": "eco-batch",
    "files/create_folder_batch": "eco-batch",
    "files/create_folder_batch/check": "eco-batch",
    "files/get_thumbnail_v2": "eco-batch",
    "files/get_thumbnail_batch": "eco-batch",
}


def run_checks(dbhost: DropboxHost, python: str) -> list[dict]:
    token, spare = dbhost.account(), dbhost.account()
    r = dbhost.run([python, str(SCRIPT), token, spare, dbhost.ca], timeout_s=600, check=True)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return [x for x in lines if "check" in x]


def judge(results: list[dict]) -> None:
    failed, pending = [], []
    for x in results:
        unknown = set(x["routes"]) - SERVED - set(PENDING)
        assert not unknown, f"{x['check']}: routes in neither SERVED nor PENDING: {unknown}"
        if set(x["routes"]) <= SERVED:
            if not x["ok"]:
                failed.append(f"{x['check']}: {x['error']}\n{x.get('trace', '')}")
        else:
            branch = sorted({PENDING[r] for r in x["routes"] if r in PENDING})
            pending.append(f"{x['check']} ({'/'.join(branch)}): "
                           f"{'ok' if x['ok'] else x['error']}")  # fmt: skip
            assert "JSONDecodeError" not in (x["error"] or ""), x
    print("pending routes (other branches):\n  " + "\n  ".join(pending))
    assert not failed, "\n".join(failed)
    assert {x["check"] for x in results} >= {"current_account", "revoke", "unknown_route"}


def test_python_sdk_12(dbhost: DropboxHost) -> None:
    judge(run_checks(dbhost, sys.executable))


def test_python_sdk_11(dbhost: DropboxHost) -> None:
    try:
        python = py_sdk_python(PY_SDK_OLD_VERSION)
    except RuntimeError as e:  # no registry here
        pytest.skip(f"cannot install dropbox=={PY_SDK_OLD_VERSION}: {e}")
    judge(run_checks(dbhost, python))
