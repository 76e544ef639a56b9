"""Which routes the real-client checks expect raftbox to serve, and the judge of a run.

`SERVED` must pass in every client. `PENDING` are routes other branches add (route -> branch):
their checks run and are reported; while a route is pending its check must fail the way an SDK
can read (no JSONDecodeError), and once it passes the run fails with "move it to SERVED" — so
merging the branch that serves it means moving its routes here, from `PENDING` to `SERVED`
(one place for the Python SDKs, the JS SDK and `rclone about`).
"""

from __future__ import annotations

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
    "files/upload_session/finish_batch", "files/upload_session/finish_batch/check",
    "files/copy_batch_v2", "files/copy_batch/check_v2", "files/move_batch_v2",
    "files/move_batch/check_v2", "files/delete_batch", "files/delete_batch/check",
    "files/create_folder_batch", "files/create_folder_batch/check",
    "files/get_thumbnail_v2", "files/get_thumbnail_batch",
    "users/get_space_usage", "files/search_v2", "files/search/continue_v2",
    "files/get_temporary_link",
}  # fmt: skip

# route -> the branch that adds it
PENDING: dict[str, str] = {}


def is_pending(route: str) -> bool:
    return route in PENDING and route not in SERVED


def judge(results: list[dict]) -> None:
    """Fail on a served route's failed check, or a pending route's check that passes."""
    failed, pending = [], []
    for x in results:
        unknown = set(x["routes"]) - SERVED - set(PENDING)
        assert not unknown, f"{x['check']}: routes in neither SERVED nor PENDING: {unknown}"
        if set(x["routes"]) <= SERVED:
            if not x["ok"]:
                failed.append(f"{x['check']}: {x['error']}\n{x.get('trace', '')}")
            continue
        mine = sorted(r for r in x["routes"] if is_pending(r))
        branch = "/".join(sorted({PENDING[r] for r in mine}))
        if x["ok"]:
            failed.append(f"{x['check']}: {mine} are served now ({branch} merged?): "
                          "move them from PENDING to SERVED in tests/eco/routes.py")  # fmt: skip
        else:
            pending.append(f"{x['check']} ({branch}): {x['error']}")
            assert "JSONDecodeError" not in (x["error"] or ""), x
    print("pending routes (other branches):\n  " + "\n  ".join(pending))
    assert not failed, "\n".join(failed)
    assert {x["check"] for x in results} >= {"current_account", "revoke", "unknown_route"}
