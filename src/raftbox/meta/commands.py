"""The metadata state machine's vocabulary: write commands, results, errors. Pure.

A write is a `MetaCommand` (a tagged union of frozen msgspec Structs), msgpack-encoded into the
`payload` of a `raft.sessions.Command`. `MetaStore.apply` answers with a result value, never an
exception:

| command         | result                                            |
| --------------- | ------------------------------------------------- |
| InitCluster     | bool (True if it took effect: the first one only) |
| CreateAccount   | AccountInfo                                       |
| AddToken        | None                                              |
| RevokeToken     | bool (True if the token existed)                  |
| RevokeTokens    | Count (the tokens of the account revoked)         |
| SetDisabled     | AccountInfo (as it is now)                        |
| RemoveAccount   | AccountInfo (as it was)                           |
| SetQuota        | SpaceUsage (as it is now; `raftbox.meta.quota`)   |
| SetStoreMarker  | bool (True if it took effect: the first one only) |
| CommitFile      | FileMeta                                          |
| CommitBatch     | list[FileMeta | MetaError], in order              |
| CreateFolder    | FolderMeta                                        |
| Delete          | FileMeta | FolderMeta (as before the deletion)    |
| Move, Copy      | FileMeta | FolderMeta (at the destination)        |
| Restore         | FileMeta (a new rev)                              |
| SessionStart    | None                                              |
| SessionAppend   | None                                              |
| SessionFinish   | FileMeta                                          |
| FinishBatch     | list[FileMeta | MetaError], in order              |
| WriteBatch      | list[Meta | MetaError], in order (`raftbox.meta.jobs`) |
| RunJob          | its inner command's result, kept under the job id (`raftbox.meta.jobs`) |
| RecordUpload    | None                                              |
| GcCondemn       | GcResult (the ids condemned, adopted)             |
| GcRelease       | GcResult (the new GC generation)                  |
| ShareFolder …   | ShareResult (`raftbox.meta.sharing`)              |
| CreateLink      | LinkInfo (or error shared_link_already_exists)    |
| ModifyLink      | LinkInfo (as it is now)                           |
| RevokeLink      | LinkInfo (as it was)                              |
| OAuthAppAdd, OAuthAppRemove, OAuthCodeIssue, OAuthCodeRedeem, OAuthRefresh: see `oauthcmds` |
| SetAuth, StartWebSession, EndWebSession: see `webcmds` (web sign-in)                |

and any of them may answer `MetaError` instead: `tags` is the Dropbox error path, outer tag first
(`["path", "conflict", "file"]` → `error_summary` "path/conflict/file/"), `extra` holds the fields
of a struct member (`{"correct_offset": 3}`). Tags that are not Dropbox's, for the API layer to
map: `need_blocks` (`extra["missing"]`: block ids this namespace has not uploaded — the Dropship
guard), `invalid_command` (a malformed command: a bug in the caller, `extra["reason"]`),
`gc_retry` (`extra["ids"]`: blocks being or just garbage-collected — store them again and
retry; `raftbox.gc`), `gc_busy` (another GC run holds the lease),
`internal_error`, `not_initialized` (no InitCluster yet), `email_taken`, `token_exists`,
`account_not_found` (no account has this email or id), `session_exists`, `client_session_expired` (the Raft client session of the
request was forgotten: it may or may not have been applied).

File attributes: a revision is a regular file, possibly executable, or a symbolic link
(`CommitFile.symlink_target`). A symlink's content — blocks, size, content_hash — is the UTF-8
bytes of its target (at most `MAX_SYMLINK_TARGET_BYTES`, non-empty, no NUL), so a download
gives the target text; a symlink is never executable. Every command that makes a revision out
of another (copy, move, restore) keeps both attributes. The Dropbox routes cannot state either:
they commit with `keep_executable=True` (a new revision of an executable file stays executable,
so an edit made with an SDK does not drop the bit) and never make a symlink.

Results cross the `propose` RPC as msgpack, so a follower sees plain dicts and lists: call
`decode_result(obj)` to get the typed value back (it is a no-op on typed values). Result Structs
are tagged by `kind` with Dropbox's own `.tag` names (`file`, `folder`, `deleted`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from .oauthcmds import (  # OAuth2 apps (issue 15)
    OAuthApp,
    OAuthAppAdd,
    OAuthAppRemove,
    OAuthCodeIssue,
    OAuthCodeRedeem,
    OAuthOutcome,
    OAuthRefresh,
)
from .webcmds import EndWebSession, SetAuth, StartWebSession  # web sign-in (issue 14)

BLOCK_WINDOW_BYTES = 4 * 1024 * 1024  # Dropbox's content_hash window, and the concurrent unit
MAX_SYMLINK_TARGET_BYTES = 4096  # PATH_MAX on Linux
MAX_FILE_BYTES = 2**41 - 2**22  # Dropbox's upload session limit
SESSION_TTL_MS = 7 * 24 * 3600 * 1000


class BlockRef(msgspec.Struct, frozen=True, array_like=True):
    """One block of a file: lowercase hex SHA-256 of its raw bytes, and its size."""

    id: str
    size: int


# -- what a symlink's content must be (pure checks, shared by the API and the FSM) ------------


def dropbox_content_hash(data: bytes) -> str:
    """Dropbox's content_hash of `data` (SHA-256 of the SHA-256 of each 4 MiB window)."""
    digests = b"".join(
        hashlib.sha256(data[i : i + BLOCK_WINDOW_BYTES]).digest()
        for i in range(0, len(data), BLOCK_WINDOW_BYTES)
    )
    return hashlib.sha256(digests).hexdigest()


def symlink_target_problem(target: str) -> str | None:
    """Why `target` cannot be a symlink's target (empty, NUL, too long, not UTF-8), or None."""
    try:
        raw = target.encode()
    except UnicodeEncodeError:
        return "the symlink target is not valid UTF-8"
    if not raw:
        return "the symlink target is empty"
    if b"\0" in raw:
        return "the symlink target contains NUL"
    if len(raw) > MAX_SYMLINK_TARGET_BYTES:
        return f"the symlink target is over {MAX_SYMLINK_TARGET_BYTES} bytes"
    return None


def symlink_blocks_problem(target: str, blocks: list[BlockRef], size: int) -> str | None:
    """Why `blocks` (of `size` bytes) are not exactly the UTF-8 bytes of `target`, or None:
    the bytes are known, so every block id is checked against its slice of them."""
    raw = target.encode()
    if size != len(raw):
        return f"a symlink's size is its target's length in UTF-8 bytes ({len(raw)})"
    at = 0
    for b in blocks:
        if hashlib.sha256(raw[at : at + b.size]).hexdigest() != b.id:
            return "a symlink's blocks are not the bytes of its target"
        at += b.size
    if at != len(raw):
        return "a symlink's blocks are not the bytes of its target"
    return None


# -- commands ----------------------------------------------------------------------------------


class _Cmd(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=False):
    pass


class InitCluster(_Cmd, tag="init"):
    """The cluster secret (cursor HMAC, id derivation). The first one wins; later are ignored."""

    secret: bytes


class CreateAccount(_Cmd, tag="account"):
    email: str
    display_name: str
    token_hash: bytes = b""  # b"": no token yet
    quota_bytes: int | None = None  # the account's quota (`raftbox.meta.quota`); None: none


class AddToken(_Cmd, tag="token_add"):
    account_id: str
    token_hash: bytes


class RevokeToken(_Cmd, tag="token_revoke"):
    token_hash: bytes


class RevokeTokens(_Cmd, tag="token_revoke_all"):
    """Revoke every token of the account with this email (case-insensitive)."""

    email: str


class SetDisabled(_Cmd, tag="account_disable"):
    """Disable (or enable again) the account with this email. A disabled account keeps its
    tokens and its data; its tokens are refused (`user_suspended`) until it is enabled."""

    email: str
    disabled: bool


class RemoveAccount(_Cmd, tag="account_remove"):
    """Remove the account with this email: the account, its tokens, its namespace and every
    file, revision, upload session and block right of that namespace (so its blocks become
    garbage for GC unless another namespace holds them). The email can be used again; a new
    account with it has a new id and an empty namespace."""

    email: str


class SetQuota(_Cmd, tag="quota"):
    """Set the quota of the account with this email, in bytes (None: no quota). Writes past
    it are refused with `insufficient_space`; what is stored already stays (`quota`)."""

    email: str
    quota_bytes: int | None


class SetStoreMarker(_Cmd, tag="store_marker"):
    """The id of the marker block the first leader wrote into the cluster's block store; every
    member and blockserver must find it in its own store at start (`raftbox.server`). The first
    one wins; later ones are ignored."""

    block_id: str


WriteModeName = Literal["add", "overwrite", "update"]


class CommitFile(_Cmd, tag="commit"):
    """Write a file (DROPBOX_API.md §5 write modes). `path` is "/…" or "id:…".

    `uploaded=True`: the blockserver received and verified these bytes from this namespace, so
    the namespace now references them. `uploaded=False`: every block must already be referenced
    by this namespace (knowing a hash is not enough), else `need_blocks`.

    `gc_gen` (on every command that carries uploaded blocks: this, the session commands and
    `RecordUpload`): the GC generation the blockserver had read before it stored the blocks.
    A block condemned now, or deleted by a GC generation after `gc_gen`, fails the command with
    `gc_retry` — the blockserver may have found it present just before it was deleted
    (`raftbox.gc`). None: no check (callers that stored nothing).

    Attributes (trailing fields, so entries encoded before they existed still decode):
    `symlink_target` makes the revision a symlink to that target, and then the blocks must be
    exactly the target's UTF-8 bytes (checked: every block id against its slice of them, the
    size, the content_hash). `executable`: the owner-execute bit, never set on a symlink.
    `keep_executable` (the Dropbox routes, which cannot say): when the commit writes a new
    revision of an existing file (same id: overwrite, update), the revision is executable if
    the current one is. A commit whose content and attributes equal the current revision's
    changes nothing.

    `readable_ns` (shared folders): other namespaces the committing account can read; with
    `uploaded=False` a block any of them references counts as this namespace's (a member may
    reference the blocks of a shared folder it reads, and its own in a shared folder). The
    API fills it with the caller's namespaces only (`raftbox.api.spaces`).
    """

    ns: int
    path: str
    blocks: list[BlockRef]
    size: int
    content_hash: str
    mode: WriteModeName = "add"
    update_rev: str | None = None
    autorename: bool = False
    strict_conflict: bool = False
    client_modified: str | None = None
    uploaded: bool = False
    gc_gen: int | None = None
    symlink_target: str | None = None
    executable: bool = False
    keep_executable: bool = False
    readable_ns: list[int] = []


class CommitBatch(_Cmd, tag="commit_batch"):
    """Many commits in one raft entry; each entry succeeds or fails on its own."""

    entries: list[CommitFile]


class CreateFolder(_Cmd, tag="mkdir"):
    ns: int
    path: str
    autorename: bool = False


class Delete(_Cmd, tag="delete"):
    ns: int
    path: str
    parent_rev: str | None = None


class Move(_Cmd, tag="move"):
    ns: int
    from_path: str
    to_path: str
    autorename: bool = False


class Copy(_Cmd, tag="copy"):
    ns: int
    from_path: str
    to_path: str
    autorename: bool = False


class Restore(_Cmd, tag="restore"):
    ns: int
    path: str
    rev: str


class SessionStart(_Cmd, tag="us_start"):
    """Open an upload session; may carry the first piece (sequential only) and close it."""

    session_id: str
    ns: int
    concurrent: bool = False
    blocks: list[BlockRef] = []
    length: int = 0
    close: bool = False
    window_digests: list[bytes] | None = None
    gc_gen: int | None = None


class SessionAppend(_Cmd, tag="us_append"):
    """One piece: `length` bytes at `offset`, stored as `blocks`.

    `window_digests`: the raw SHA-256 of each 4 MiB window of this piece, counted from the
    piece's offset (the last one may be short), if the blockserver computed them; None if not.
    """

    session_id: str
    ns: int
    offset: int
    blocks: list[BlockRef]
    length: int
    close: bool = False
    window_digests: list[bytes] | None = None
    gc_gen: int | None = None


class SessionFinish(_Cmd, tag="us_finish"):
    """Commit the session's pieces (plus an optional final piece) as one file.

    `commit` gives the destination and write mode, and the whole file's `size` and
    `content_hash`; its `blocks` and `uploaded` are ignored (the blocklist is the session's
    pieces in offset order, uploaded by this namespace). The session is consumed on success.
    """

    session_id: str
    ns: int
    offset: int
    commit: CommitFile
    blocks: list[BlockRef] = []
    length: int = 0
    window_digests: list[bytes] | None = None
    gc_gen: int | None = None


class FinishBatch(_Cmd, tag="us_finish_batch"):
    """`upload_session/finish_batch_v2`: many finishes in one raft entry."""

    entries: list[SessionFinish]


class WriteBatch(_Cmd, tag="write_batch"):
    """Many folder creations, deletions, moves or copies in one raft entry, each succeeding or
    failing on its own (the batch routes: `raftbox.meta.jobs`). `CopyAcross` and `MoveAcross`
    entries relocate between namespaces (a batch entry inside a mounted shared folder)."""

    entries: list[CreateFolder | Delete | Move | Copy | CopyAcross | MoveAcross]


class RunJob(_Cmd, tag="job"):
    """Run the command `payload` (an encoded `MetaCommand`, normally a batch) and keep its
    result under `job_id` for namespace `ns`, in the same raft entry (`raftbox.meta.jobs`).
    `refused`: for a batch whose caller already failed some entries (a malformed path), one
    slot per entry of the whole batch — that entry's error, or None for the next entry of
    `payload`'s batch; the kept result has the errors in their slots."""

    job_id: str
    ns: int
    kind: str
    payload: bytes
    refused: list[Any] = []  # MetaError | None each (a MetaError decodes as a dict)
    # One per entry of the whole batch (as `refused`), or none: the path of the mount point a
    # successful entry's result is shown under in the caller's tree ("": as it is).
    shown: list[str] = []


class RecordUpload(_Cmd, tag="blocks_put"):
    """Namespace `ns` sent these blocks to a blockserver, which verified and stored them
    (native `blocks/put`): `ns` may now reference them in a commit, and their upload time is
    recorded so that garbage collection keeps them while that commit may still come."""

    ns: int
    blocks: list[BlockRef]
    gc_gen: int | None = None


class GcCondemn(_Cmd, tag="gc_condemn"):
    """A GC run (`raftbox.gc`) condemns blocks it found unreferenced in a metadata
    snapshot taken at raft index `mark_index`. Takes (or renews) the cluster's GC lease for
    `lease_ms`; a block touched (uploaded or committed) after `mark_index` is not condemned.
    A condemned block loses every namespace's right to reference it, and any command that
    would record it as uploaded fails with `gc_retry` until it is released."""

    run_id: str
    mark_index: int
    ids: list[str]
    lease_ms: int


class GcRelease(_Cmd, tag="gc_release"):
    """The run deleted these condemned blocks from the store: release them (the GC
    generation moves on). `done`: the run ends and gives up the lease."""

    run_id: str
    ids: list[str]
    done: bool = False


# -- shared folders (`raftbox.meta.sharing`: what each does, and why) --------------------------

AccessName = Literal["owner", "editor", "viewer"]


class ShareMember(msgspec.Struct, frozen=True, array_like=True):
    """Who to add to a shared folder: an account id ("dbid:…") or an email (""), and how."""

    account_id: str
    email: str
    access: AccessName = "viewer"


class ShareFolder(_Cmd, tag="share"):
    """Make the folder at `path` (in the account's home namespace; created if missing) a
    shared folder: a namespace of its own, mounted where the folder was. `job_id`: keep the
    outcome under this id (`force_async`)."""

    account_id: str
    path: str
    job_id: str = ""


class AddMembers(_Cmd, tag="share_add"):
    actor: str
    ns: int
    members: list[ShareMember]


class SetMemberAccess(_Cmd, tag="share_access"):
    actor: str
    ns: int
    member: ShareMember


class RemoveMember(_Cmd, tag="share_remove"):
    actor: str
    ns: int
    member: ShareMember
    leave_a_copy: bool = False
    job_id: str = ""


class MountFolder(_Cmd, tag="share_mount"):
    account_id: str
    ns: int


class UnmountFolder(_Cmd, tag="share_unmount"):
    account_id: str
    ns: int


class Relinquish(_Cmd, tag="share_leave"):
    account_id: str
    ns: int
    leave_a_copy: bool = False
    job_id: str = ""


class Unshare(_Cmd, tag="share_unshare"):
    actor: str
    ns: int
    leave_a_copy: bool = False
    job_id: str = ""


class CopyAcross(_Cmd, tag="copy_across"):
    """Copy the item at `from_path` of `from_ns` to `to_path` of `to_ns` (new ids): the first
    half of a move between namespaces (the API deletes the source next). Writes `to_ns` only."""

    from_ns: int
    from_path: str
    to_ns: int
    to_path: str
    autorename: bool = False


class MoveAcross(_Cmd, tag="move_across"):
    """A `WriteBatch` entry only: `CopyAcross`, then the deletion of the source in `from_ns`,
    both or neither (one savepoint). The batch routes' move between namespaces."""

    from_ns: int
    from_path: str
    to_ns: int
    to_path: str
    autorename: bool = False


class MoveMount(_Cmd, tag="share_move_mount"):
    """Move `account_id`'s mount point of shared folder `ns` to `to_path` of its home."""

    account_id: str
    ns: int
    to_path: str
    autorename: bool = False


class CreateLink(_Cmd, tag="link_create"):
    """A shared link to the file or folder `target_id` of namespace `ns`, owned by `owner`
    (`raftbox.meta.links`). Only the token's SHA-256, the nonce it derives from (with a key
    no store holds) and the password's argon2 hash travel."""

    token_hash: bytes
    nonce: bytes
    owner: str
    ns: int
    target_id: str
    password_hash: str | None = None  # None: public
    expires_ms: int | None = None  # None: never
    allow_download: bool = True


class ModifyLink(_Cmd, tag="link_modify"):
    """Change a link's settings; a field left None is kept (`remove_expiration`: no expiry;
    `password_hash` "" makes it public again)."""

    token_hash: bytes
    owner: str
    password_hash: str | None = None
    expires_ms: int | None = None
    remove_expiration: bool = False
    allow_download: bool | None = None


class RevokeLink(_Cmd, tag="link_revoke"):
    """Revoke a link: from the moment this returns no member serves it."""

    token_hash: bytes
    owner: str


MetaCommand = (
    InitCluster
    | CreateAccount
    | AddToken
    | RevokeToken
    | RevokeTokens
    | SetDisabled
    | RemoveAccount
    | SetQuota
    | SetStoreMarker
    | CommitFile
    | CommitBatch
    | CreateFolder
    | Delete
    | Move
    | Copy
    | Restore
    | SessionStart
    | SessionAppend
    | SessionFinish
    | FinishBatch
    | WriteBatch
    | RunJob
    | RecordUpload
    | GcCondemn
    | GcRelease
    | ShareFolder
    | AddMembers
    | SetMemberAccess
    | RemoveMember
    | MountFolder
    | UnmountFolder
    | Relinquish
    | Unshare
    | CopyAcross
    | MoveMount
    | CreateLink
    | ModifyLink
    | RevokeLink
    | OAuthAppAdd
    | OAuthAppRemove
    | OAuthCodeIssue
    | OAuthCodeRedeem
    | OAuthRefresh
    | SetAuth
    | StartWebSession
    | EndWebSession
)

_encoder = msgspec.msgpack.Encoder()
_cmd_decoder = msgspec.msgpack.Decoder(MetaCommand)


def encode_command(cmd: MetaCommand) -> bytes:
    """The `payload` of a `raft.sessions.Command`."""
    return _encoder.encode(cmd)


def decode_command(payload: bytes) -> MetaCommand:
    return _cmd_decoder.decode(payload)


# -- results -----------------------------------------------------------------------------------


class _Res(msgspec.Struct, frozen=True, tag_field="kind"):
    @property
    def kind(self) -> str:
        """The tag: "file", "folder", "deleted", "error" or "account"."""
        return self.__struct_config__.tag


class FileMeta(_Res, tag="file"):
    id: str
    name: str
    path_lower: str
    path_display: str
    rev: str
    size: int
    client_modified: str
    server_modified: str
    content_hash: str
    is_deleted: bool = False  # set on a revision whose file has no live entry any more
    symlink_target: str | None = None  # a symlink: its content is these UTF-8 bytes
    executable: bool = False


class FolderMeta(_Res, tag="folder"):
    id: str
    name: str
    path_lower: str
    path_display: str


class DeletedMeta(_Res, tag="deleted"):
    name: str
    path_lower: str
    path_display: str


Meta = FileMeta | FolderMeta | DeletedMeta


class MetaError(_Res, tag="error"):
    """A failed command or query: `tags` is the Dropbox error path, outer tag first."""

    tags: list[str]
    extra: dict[str, Any] = {}

    @property
    def summary(self) -> str:
        """`error_summary` without the trailing dots: "path/conflict/file/"."""
        return "/".join(self.tags) + "/"


class AccountInfo(_Res, tag="account"):
    account_id: str
    email: str
    display_name: str
    home_ns: int
    created: str = ""  # "%Y-%m-%dT%H:%M:%SZ"
    disabled: bool = False  # its tokens are refused (`user_suspended`); its data is kept
    # Set when authenticated by an OAuth2 app's access token (`raftbox.meta.oauth`): the scopes
    # granted (None: an account token, full access) and the expiry (0: never).
    scopes: list[str] | None = None
    expires_ms: int = 0

    @property
    def namespace_id(self) -> int:
        """The home (= root) namespace: what every route of this account works in."""
        return self.home_ns


class SpaceUsage(_Res, tag="space_usage"):
    """An account's usage (bytes of its current files) and quota (None: none); `quota`."""

    account_id: str
    email: str
    used: int
    quota: int | None = None


class GcResult(_Res, tag="gc"):
    """GcCondemn: `condemned` (newly condemned by this command) and `adopted` (condemned
    earlier, by this run before an interruption or by a run whose lease expired: now this run's
    to delete too). GcRelease: `gen`, the GC generation."""

    condemned: list[str] = []
    adopted: list[str] = []
    gen: int = 0


class Count(_Res, tag="count"):
    """How many items a command affected (`RevokeTokens`: the tokens revoked)."""

    n: int = 0


class ShareResult(_Res, tag="share"):
    """A sharing command's outcome: the shared folder (`ns`) and, for `AddMembers`, each
    member's error tag ("" = added) in the order given."""

    ns: int = 0
    failed: list[str] = []


class LinkInfo(_Res, tag="link"):
    """A shared link as stored (`raftbox.meta.links`): never the token, only its hash."""

    token_hash: bytes
    nonce: bytes
    owner: str
    ns: int
    target_id: str
    password_hash: str | None
    expires_ms: int | None
    allow_download: bool
    created_ms: int
    revoked_ms: int | None = None


Result = (
    FileMeta
    | FolderMeta
    | DeletedMeta
    | MetaError
    | AccountInfo
    | GcResult
    | Count
    | ShareResult
    | SpaceUsage
    | LinkInfo
    | OAuthApp
    | OAuthOutcome
    | list[FileMeta | FolderMeta | DeletedMeta | MetaError]
    | bool
    | None
)


def decode_result(obj: Any) -> Result:
    """Typed result from either a typed value (leader) or its msgpack-decoded form (follower)."""
    return msgspec.convert(obj, Result)


def typed_result(r: Any) -> Any:
    """A command's result as it came out of msgpack (a follower's answer crossed the propose
    RPC), typed again: a result, or a list of them for a batch; what is no result stays as it
    is (True, None, a count)."""
    if isinstance(r, list):
        return [typed_result(x) for x in r]
    if isinstance(r, dict):
        try:
            return decode_result(r)
        except msgspec.ValidationError:
            return r
    return r


def is_error(x: Any) -> bool:
    return isinstance(x, MetaError)


# -- query results -----------------------------------------------------------------------------


class CursorState(msgspec.Struct, frozen=True, array_like=True):
    """What a list_folder cursor carries (msgpack: a 5-element array; the service signs it).

    `resume` None: journal phase, "the changes after journal position `position`". `resume` a
    key: listing phase, "the first listing, started at `position`, has sent every entry up to
    key `resume`"."""

    path_key: str
    recursive: bool
    include_deleted: bool
    position: int
    resume: str | None = None


# -- upload session state (a query result) -----------------------------------------------------


class SessionPiece(msgspec.Struct, frozen=True, array_like=True):
    offset: int
    length: int
    blocks: list[BlockRef]
    window_digests: list[bytes] | None = None


class SessionState(msgspec.Struct, frozen=True):
    """What the blockserver needs to finish a session: the pieces in offset order."""

    session_id: str
    ns: int
    concurrent: bool
    started_ms: int
    expires_ms: int
    closed: bool
    length: int  # bytes received so far (the sum of the pieces)
    total: int | None  # the file size once known (closed), else None
    pieces: list[SessionPiece]

    @property
    def blocks(self) -> list[BlockRef]:
        """The blocklist so far: every piece's blocks, in offset order."""
        return [b for p in self.pieces for b in p.blocks]

    def contiguous(self) -> bool:
        """The pieces cover [0, length) with no gap."""
        at = 0
        for p in self.pieces:
            if p.offset != at:
                return False
            at += p.length
        return True

    def window_digests(self) -> list[bytes] | None:
        """The 4 MiB window digests of the whole data so far, or None if they do not cover it
        (a piece without digests, or a piece that ends off a window boundary and is not last).
        `content_hash = sha256(b"".join(digests))` when the data so far is the whole file."""
        if not self.contiguous():
            return None
        out: list[bytes] = []
        for i, p in enumerate(self.pieces):
            if p.window_digests is None:
                return None
            last = i == len(self.pieces) - 1
            if not last and p.length % BLOCK_WINDOW_BYTES:
                return None
            out.extend(p.window_digests)
        return out
