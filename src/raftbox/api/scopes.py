"""OAuth2 scopes, as Dropbox names them, and the scope every user route requires.

An OAuth2 app's access token carries the scopes its user granted (`raftbox.meta.oauth`); an
account token (`raftbox user add`, `raftbox login`) or a browser session carries none and has
full access. `ApiServer.dispatch` (`raftbox.api.http`), the one place that authenticates, asks
`required_scope(route)` and answers a token without it 401 with Dropbox's `AuthError`
`missing_scope` body (`{"error": {".tag": "missing_scope", "required_scope": S}}`).

`ROUTE_SCOPES` is the table: every route registered with auth "user" must have an entry —
`ApiServer.add_route` refuses one that has not (`UnmappedRoute`), so a new route cannot be
forgotten and open to every app. The scope of each Dropbox route is the one Dropbox's HTTP
documentation gives it ("Required Scope"); raftbox's own routes take the scope of the Dropbox
route doing the same work. Routes that need no scope (`auth/token/revoke`: any token may revoke
itself; `check/app`) map to None. Admin routes are never reachable with an app's token (their
credential is the admin token), so they need no entry.

Scopes imply nothing: `files.content.write` does not grant `files.content.read` or
`files.metadata.read` (Dropbox's console ticks dependencies for the developer, but a token holds
exactly the scopes listed in its grant, and the routes check exactly one each). An app asks for
a subset of the scopes it was registered with (`raftbox app add --scope`); with none it gets
them all.
"""

from __future__ import annotations

SCOPES: dict[str, str] = {  # scope -> what the consent page says it allows
    "account_info.read": "See your account's name, email and space used",
    "account_info.write": "Change your account's profile",
    "files.metadata.read": "See the names, sizes and dates of your files and folders",
    "files.metadata.write": "Change the names and properties of your files and folders",
    "files.content.read": "Read the content of your files",
    "files.content.write": "Add, change, move and delete your files and folders",
    "files.permanent_delete": "Permanently delete your files and folders",
    "sharing.read": "See your shared folders and links",
    "sharing.write": "Share your files and folders, and change their sharing",
}

_META_R, _META_W = "files.metadata.read", "files.metadata.write"
_CONTENT_R, _CONTENT_W = "files.content.read", "files.content.write"
_SHARE_R, _SHARE_W = "sharing.read", "sharing.write"
_ACCOUNT_R = "account_info.read"

ROUTE_SCOPES: dict[str, str | None] = {
    # users, auth, check
    "users/get_current_account": _ACCOUNT_R,
    "users/get_space_usage": _ACCOUNT_R,
    "users/get_account": "sharing.read",
    "users/get_account_batch": "sharing.read",
    "auth/token/revoke": None,
    "check/user": _ACCOUNT_R,
    "check/app": None,
    # files: metadata reads
    "files/get_metadata": _META_R,
    "files/list_folder": _META_R,
    "files/list_folder/continue": _META_R,
    "files/list_folder/get_latest_cursor": _META_R,
    "files/list_folder/longpoll": _META_R,
    "files/list_revisions": _META_R,
    "files/search_v2": _META_R,
    "files/search/continue_v2": _META_R,
    "files/search": _META_R,
    # files: content reads
    "files/download": _CONTENT_R,
    "files/download_zip": _CONTENT_R,
    "files/get_temporary_link": _CONTENT_R,
    "files/get_thumbnail": _CONTENT_R,
    "files/get_thumbnail_v2": _CONTENT_R,
    "files/get_thumbnail_batch": _CONTENT_R,
    "files/get_preview": _CONTENT_R,
    # files: content writes (Dropbox puts create, move, copy, delete and restore here)
    "files/upload": _CONTENT_W,
    "files/upload_session/start": _CONTENT_W,
    "files/upload_session/start_batch": _CONTENT_W,
    "files/upload_session/append": _CONTENT_W,
    "files/upload_session/append_v2": _CONTENT_W,
    "files/upload_session/finish": _CONTENT_W,
    "files/upload_session/finish_batch": _CONTENT_W,
    "files/upload_session/finish_batch_v2": _CONTENT_W,
    "files/upload_session/finish_batch/check": _CONTENT_W,
    "files/create_folder": _CONTENT_W,
    "files/create_folder_v2": _CONTENT_W,
    "files/create_folder_batch": _CONTENT_W,
    "files/create_folder_batch/check": _CONTENT_W,
    "files/delete": _CONTENT_W,
    "files/delete_v2": _CONTENT_W,
    "files/delete_batch": _CONTENT_W,
    "files/delete_batch/check": _CONTENT_W,
    "files/move": _CONTENT_W,
    "files/move_v2": _CONTENT_W,
    "files/move_batch_v2": _CONTENT_W,
    "files/move_batch/check_v2": _CONTENT_W,
    "files/copy": _CONTENT_W,
    "files/copy_v2": _CONTENT_W,
    "files/copy_batch_v2": _CONTENT_W,
    "files/copy_batch/check_v2": _CONTENT_W,
    "files/restore": _CONTENT_W,
    "files/permanently_delete": "files.permanent_delete",
    # sharing (Dropbox's own split: reading sharing state vs changing it)
    "sharing/get_folder_metadata": _SHARE_R,
    "sharing/list_folders": _SHARE_R,
    "sharing/list_folders/continue": _SHARE_R,
    "sharing/list_mountable_folders": _SHARE_R,
    "sharing/list_mountable_folders/continue": _SHARE_R,
    "sharing/list_folder_members": _SHARE_R,
    "sharing/list_folder_members/continue": _SHARE_R,
    "sharing/list_shared_links": _SHARE_R,
    "sharing/get_shared_link_metadata": _SHARE_R,
    "sharing/get_shared_link_file": _SHARE_R,
    "sharing/check_job_status": _SHARE_W,
    "sharing/check_share_job_status": _SHARE_W,
    "sharing/check_remove_member_job_status": _SHARE_W,
    "sharing/share_folder": _SHARE_W,
    "sharing/unshare_folder": _SHARE_W,
    "sharing/add_folder_member": _SHARE_W,
    "sharing/remove_folder_member": _SHARE_W,
    "sharing/update_folder_member": _SHARE_W,
    "sharing/update_folder_policy": _SHARE_W,
    "sharing/mount_folder": _SHARE_W,
    "sharing/unmount_folder": _SHARE_W,
    "sharing/relinquish_folder_membership": _SHARE_W,
    "sharing/transfer_folder": _SHARE_W,
    "sharing/create_shared_link_with_settings": _SHARE_W,
    "sharing/modify_shared_link_settings": _SHARE_W,
    "sharing/revoke_shared_link": _SHARE_W,
    # raftbox's native block protocol (`raftbox.api.native`): the sync client's upload and
    # download path, scoped like the Dropbox routes doing the same work
    "raftbox/blocks/config": _META_R,
    "raftbox/blocks/has": _CONTENT_W,
    "raftbox/blocks/put": _CONTENT_W,
    "raftbox/blocks/signatures": _CONTENT_R,  # derived from the content of readable blocks
    "raftbox/blocks/put_delta": _CONTENT_W,
    "raftbox/blocks/get": _CONTENT_R,
    "raftbox/blocks/list": _CONTENT_R,
    "raftbox/commit_batch": _CONTENT_W,
}

UNMAPPED = "(no scope is mapped to this route)"


class UnmappedRoute(ValueError):
    """A user route was registered with no entry in `ROUTE_SCOPES` (a programming error)."""


def check_registered(route: str, auth: str) -> None:
    """Refuse to register a user route that has no scope entry (module docstring)."""
    if auth == "user" and route not in ROUTE_SCOPES:
        raise UnmappedRoute(
            f"route {route!r} has no entry in raftbox.api.scopes.ROUTE_SCOPES: add the scope "
            "Dropbox requires for it (None if it needs none)"
        )


def missing_scope(route: str, granted: list[str] | None) -> str | None:
    """The scope `route` requires that `granted` lacks, or None if the call may go on.
    `granted` None: full access (an account token or a browser session)."""
    if granted is None:
        return None
    if route not in ROUTE_SCOPES:  # never registered (check_registered): fail closed
        return UNMAPPED
    need = ROUTE_SCOPES[route]
    if need is None or need in granted:
        return None
    return need
