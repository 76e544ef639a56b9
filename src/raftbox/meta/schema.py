"""The metadata store's tables, how an older store is brought up to them, and the kv table.

Holds the DDL (`SCHEMA`), the migration of a store made by an older version (`migrate`), the
kinds of an `entries` row and the two `kv` accessors. Pure of I/O but the SQLite connection it
is given; everything else in `raftbox.meta` reads and writes these tables.

Tables (all keyed by namespace where relevant; `key` = `paths.Path.key`):

- kv(k, v): "applied", "secret", "sessions" (the client table's clock), "schema",
  "store_marker" (the id of the block store's marker block: `SetStoreMarker`), and the GC's
  "gc_gen", "gc_floor", "gc_lease".
- accounts(account_id, email_key, email, display_name, home_ns, created_ms, disabled);
  tokens(token_hash, account_id) — hashes only; namespaces(ns, owner, journal_end, last_index).
  `RemoveAccount` deletes the account, its tokens and its namespace with every row of it
  (entries, revisions, journal, ns_blocks, upload sessions): a namespace id is never reused
  (it is the raft index of its CreateAccount), so nothing can refer to it again by mistake.
- entries(ns, key, parent_key, name, display, kind, id, rev, deleted_ms): the current state of
  every path: kind 1 file (rev = current revision), 2 folder, 3 deleted (keeps the last id/rev
  and the deletion time). Live entries always have live folders as ancestors, and a descendant's
  `display` always starts with its parent's `display` (moves rewrite the subtree).
- revisions(ns, rev, id, key, display, size, content_hash, client_modified, server_modified,
  stamp_ms, blocks, symlink, executable): every file version with its blocklist (msgpack list
  of BlockRef) and attributes (`symlink`: the target of a symlink, else NULL; `executable`
  0/1; see `commands.CommitFile`). A file keeps its newest `revisions_keep` versions and every
  version younger than `revisions_keep_ms`. Copy, move and restore copy the attributes along
  with the blocks.
- journal(ns, pos, key, parent_key, display, idx, kind): every change to a namespace, numbered
  1, 2, … per namespace; a cursor is a position in it.
- ns_blocks(ns, block_id, size, last_ms, last_idx): blocks a namespace has uploaded or
  references — its right to reference them (the Dropship guard) — with the stamp and raft index
  of the last command that uploaded or referenced them (garbage collection reads both).
- gc_condemned(block_id, run_id), gc_deleted(block_id, gen, ms), kv "gc_gen", "gc_floor",
  "gc_lease": the garbage collector's replicated half (`raftbox.meta.gcstate`).
- ns_usage(ns, used_bytes), account_quota(account_id, quota_bytes): the bytes of each
  namespace's current files, kept by the `usage_*` triggers on `entries` (and made and dropped
  with the namespace), and each account's quota (`raftbox.meta.quota` says what they mean).
- upload_sessions, upload_pieces: replicated upload sessions, so any blockserver continues one
  (`raftbox.meta.sessions`).
- jobs(job_id, ns, kind, idx, done_ms, result): async jobs' results (msgpack), kept for
  `.../check` on any member (`raftbox.meta.jobs`: bounded in count per namespace and in age).
- client_sessions, client_results: `raft.sessions.SessionTable`, persisted incrementally.
- shares(ns, name, owner, created_ms), share_members(ns, account_id, access, invited_ms),
  share_invites(ns, email_key, email, access, invited_ms), mounts(account_id, ns, key,
  display), share_jobs(job_id, account_id, created_ms, ns, error): shared folders
  (`raftbox.meta.sharing`). New tables only: a store made before them gets them empty.
- shared_links(token_hash, nonce, owner, ns, target_id, password_hash, expires_ms, allow_download,
  created_ms, revoked_ms): shared links, token hashes only (`raftbox.meta.links`).
- oauth_apps, oauth_codes, oauth_grants, oauth_tokens, oauth_consents: OAuth2 apps and what
  they were granted (`raftbox.meta.oauth`); new tables, so an older store just gains them empty.
- account_auth, web_sessions: passwords (argon2 hashes), administrators, browser sessions
  (`raftbox.meta.webstate`); new tables, so an older store just gains them empty.

Schema changes: a store made by an older version is brought up to date when opened or restored
from a snapshot (`migrate`: columns added with the value every old row means — `ns_blocks`
times 0, `revisions.symlink` NULL and `executable` 0, `accounts.disabled` 0; `ns_usage` computed
from the current files), the same on every
replica, so a migrated replica and a fresh one hold the same rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

FILE, FOLDER, DELETED = 1, 2, 3  # entries.kind
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
  account_id TEXT PRIMARY KEY, email_key TEXT NOT NULL UNIQUE, email TEXT NOT NULL,
  display_name TEXT NOT NULL, home_ns INTEGER NOT NULL, created_ms INTEGER NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
  token_hash BLOB PRIMARY KEY, account_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_account ON tokens (account_id);
CREATE TABLE IF NOT EXISTS namespaces (
  ns INTEGER PRIMARY KEY, owner TEXT NOT NULL,
  journal_end INTEGER NOT NULL DEFAULT 0, last_index INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS namespaces_changed ON namespaces (last_index);
CREATE TABLE IF NOT EXISTS entries (
  ns INTEGER NOT NULL, key TEXT NOT NULL, parent_key TEXT NOT NULL, name TEXT NOT NULL,
  display TEXT NOT NULL, kind INTEGER NOT NULL, id TEXT, rev TEXT, deleted_ms INTEGER,
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_parent ON entries (ns, parent_key, key);
CREATE INDEX IF NOT EXISTS entries_id ON entries (ns, id);
CREATE TABLE IF NOT EXISTS revisions (
  ns INTEGER NOT NULL, rev TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
  display TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT NOT NULL,
  client_modified TEXT NOT NULL, server_modified TEXT NOT NULL, stamp_ms INTEGER NOT NULL,
  blocks BLOB NOT NULL, symlink TEXT, executable INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (ns, rev)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revisions_id ON revisions (ns, id, rev);
CREATE INDEX IF NOT EXISTS revisions_key ON revisions (ns, key, rev);
CREATE TABLE IF NOT EXISTS journal (
  ns INTEGER NOT NULL, pos INTEGER NOT NULL, key TEXT NOT NULL, parent_key TEXT NOT NULL,
  display TEXT NOT NULL, idx INTEGER NOT NULL, kind INTEGER NOT NULL,
  PRIMARY KEY (ns, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ns_blocks (
  ns INTEGER NOT NULL, block_id TEXT NOT NULL, size INTEGER NOT NULL,
  last_ms INTEGER NOT NULL DEFAULT 0, last_idx INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (ns, block_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_condemned (
  block_id TEXT PRIMARY KEY, run_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gc_condemned_run ON gc_condemned (run_id, block_id);
CREATE TABLE IF NOT EXISTS gc_deleted (
  block_id TEXT PRIMARY KEY, gen INTEGER NOT NULL, ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gc_deleted_ms ON gc_deleted (ms, block_id);
CREATE TABLE IF NOT EXISTS upload_sessions (
  session_id TEXT PRIMARY KEY, ns INTEGER NOT NULL, concurrent INTEGER NOT NULL,
  started_ms INTEGER NOT NULL, closed INTEGER NOT NULL, length INTEGER NOT NULL, total INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS upload_sessions_started ON upload_sessions (started_ms, session_id);
CREATE TABLE IF NOT EXISTS upload_pieces (
  session_id TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
  blocks BLOB NOT NULL, digests BLOB NOT NULL,
  PRIMARY KEY (session_id, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ns_usage (
  ns INTEGER PRIMARY KEY, used_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS account_quota (
  account_id TEXT PRIMARY KEY, quota_bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS namespaces_owner ON namespaces (owner, ns);
CREATE TRIGGER IF NOT EXISTS usage_ns_add AFTER INSERT ON namespaces BEGIN
  INSERT OR IGNORE INTO ns_usage (ns, used_bytes) VALUES (NEW.ns, 0);
END;
CREATE TRIGGER IF NOT EXISTS usage_ns_drop AFTER DELETE ON namespaces BEGIN
  DELETE FROM ns_usage WHERE ns = OLD.ns;
END;
CREATE TRIGGER IF NOT EXISTS usage_quota_drop AFTER DELETE ON accounts BEGIN
  DELETE FROM account_quota WHERE account_id = OLD.account_id;
END;
CREATE TRIGGER IF NOT EXISTS usage_entry_replaced BEFORE INSERT ON entries
WHEN EXISTS (SELECT 1 FROM entries WHERE ns = NEW.ns AND key = NEW.key AND kind = 1) BEGIN
  UPDATE ns_usage SET used_bytes = used_bytes - COALESCE((
    SELECT r.size FROM entries e JOIN revisions r ON r.ns = e.ns AND r.rev = e.rev
    WHERE e.ns = NEW.ns AND e.key = NEW.key AND e.kind = 1), 0) WHERE ns = NEW.ns;
END;
CREATE TRIGGER IF NOT EXISTS usage_entry_insert AFTER INSERT ON entries WHEN NEW.kind = 1 BEGIN
  UPDATE ns_usage SET used_bytes = used_bytes + COALESCE((
    SELECT size FROM revisions WHERE ns = NEW.ns AND rev = NEW.rev), 0) WHERE ns = NEW.ns;
END;
CREATE TRIGGER IF NOT EXISTS usage_entry_update AFTER UPDATE OF kind, rev, ns ON entries
WHEN OLD.kind = 1 OR NEW.kind = 1 BEGIN
  UPDATE ns_usage SET used_bytes = used_bytes - COALESCE((
    SELECT size FROM revisions WHERE ns = OLD.ns AND rev = OLD.rev), 0)
  WHERE ns = OLD.ns AND OLD.kind = 1;
  UPDATE ns_usage SET used_bytes = used_bytes + COALESCE((
    SELECT size FROM revisions WHERE ns = NEW.ns AND rev = NEW.rev), 0)
  WHERE ns = NEW.ns AND NEW.kind = 1;
END;
CREATE TRIGGER IF NOT EXISTS usage_entry_delete AFTER DELETE ON entries WHEN OLD.kind = 1 BEGIN
  UPDATE ns_usage SET used_bytes = used_bytes - COALESCE((
    SELECT size FROM revisions WHERE ns = OLD.ns AND rev = OLD.rev), 0) WHERE ns = OLD.ns;
END;
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY, ns INTEGER NOT NULL, kind TEXT NOT NULL, idx INTEGER NOT NULL,
  done_ms INTEGER NOT NULL, result BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_ns ON jobs (ns, idx);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs (done_ms, job_id);
CREATE TABLE IF NOT EXISTS client_sessions (
  client_id INTEGER PRIMARY KEY, last_ms INTEGER NOT NULL, floor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_results (
  client_id INTEGER NOT NULL, seq INTEGER NOT NULL, result BLOB NOT NULL,
  PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shares (
  ns INTEGER PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS share_members (
  ns INTEGER NOT NULL, account_id TEXT NOT NULL, access TEXT NOT NULL, invited_ms INTEGER NOT NULL,
  PRIMARY KEY (ns, account_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS share_members_account ON share_members (account_id, ns);
CREATE TABLE IF NOT EXISTS share_invites (
  ns INTEGER NOT NULL, email_key TEXT NOT NULL, email TEXT NOT NULL, access TEXT NOT NULL,
  invited_ms INTEGER NOT NULL, PRIMARY KEY (ns, email_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS share_invites_email ON share_invites (email_key, ns);
CREATE TABLE IF NOT EXISTS mounts (
  account_id TEXT NOT NULL, ns INTEGER NOT NULL, key TEXT NOT NULL, display TEXT NOT NULL,
  PRIMARY KEY (account_id, ns)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS mounts_key ON mounts (account_id, key);
CREATE TABLE IF NOT EXISTS share_jobs (
  job_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, created_ms INTEGER NOT NULL,
  ns INTEGER NOT NULL, error TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS share_jobs_created ON share_jobs (created_ms, job_id);
CREATE TABLE IF NOT EXISTS shared_links (
  token_hash BLOB PRIMARY KEY, nonce BLOB NOT NULL, owner TEXT NOT NULL, ns INTEGER NOT NULL,
  target_id TEXT NOT NULL, password_hash TEXT, expires_ms INTEGER,
  allow_download INTEGER NOT NULL DEFAULT 1, created_ms INTEGER NOT NULL, revoked_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shared_links_owner ON shared_links (owner, token_hash);
CREATE INDEX IF NOT EXISTS shared_links_target ON shared_links (ns, target_id);
CREATE TABLE IF NOT EXISTS oauth_apps (
  app_key TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash BLOB NOT NULL,
  redirect_uris TEXT NOT NULL, scopes TEXT NOT NULL, created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS oauth_codes (
  code_hash BLOB PRIMARY KEY, app_key TEXT NOT NULL, account_id TEXT NOT NULL,
  redirect_uri TEXT, challenge TEXT, challenge_method TEXT, scopes TEXT NOT NULL,
  offline INTEGER NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
  grant_id INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oauth_codes_expiry ON oauth_codes (expires_ms);
CREATE INDEX IF NOT EXISTS oauth_codes_account ON oauth_codes (account_id, created_ms);
CREATE TABLE IF NOT EXISTS oauth_grants (
  grant_id INTEGER PRIMARY KEY, app_key TEXT NOT NULL, account_id TEXT NOT NULL,
  scopes TEXT NOT NULL, refresh_hash BLOB UNIQUE, public INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS oauth_grants_account ON oauth_grants (account_id, app_key, grant_id);
CREATE INDEX IF NOT EXISTS oauth_grants_app ON oauth_grants (app_key);
CREATE TABLE IF NOT EXISTS oauth_tokens (
  token_hash BLOB PRIMARY KEY, grant_id INTEGER NOT NULL, scopes TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oauth_tokens_grant ON oauth_tokens (grant_id, expires_ms);
CREATE INDEX IF NOT EXISTS oauth_tokens_expiry ON oauth_tokens (expires_ms);
CREATE TABLE IF NOT EXISTS oauth_consents (
  account_id TEXT NOT NULL, app_key TEXT NOT NULL, scopes TEXT NOT NULL,
  PRIMARY KEY (account_id, app_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_auth (
  account_id TEXT PRIMARY KEY, password_hash TEXT NOT NULL, admin INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS web_sessions (
  session_hash BLOB PRIMARY KEY, account_id TEXT NOT NULL, created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_sessions_account ON web_sessions (account_id, created_ms);
CREATE INDEX IF NOT EXISTS web_sessions_expiry ON web_sessions (expires_ms);
"""


def create(db: sqlite3.Connection) -> None:
    """Create the missing tables of `db` and bring the existing ones up to this schema."""
    db.executescript(SCHEMA)
    migrate(db)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a store made by an older version up to this schema (same on every replica)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(ns_blocks)")}
    if "last_idx" not in cols:
        db.execute("ALTER TABLE ns_blocks ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE ns_blocks ADD COLUMN last_idx INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX IF NOT EXISTS ns_blocks_block ON ns_blocks (block_id, ns)")
    cols = {r[1] for r in db.execute("PRAGMA table_info(revisions)")}
    if "symlink" not in cols:
        db.execute("ALTER TABLE revisions ADD COLUMN symlink TEXT")
    if "executable" not in cols:
        db.execute("ALTER TABLE revisions ADD COLUMN executable INTEGER NOT NULL DEFAULT 0")
    cols = {r[1] for r in db.execute("PRAGMA table_info(accounts)")}
    if "disabled" not in cols:
        db.execute("ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")
    # space usage (`raftbox.meta.quota`): a store made before it gets its counters, once
    db.execute(
        "INSERT INTO ns_usage (ns, used_bytes) SELECT n.ns, COALESCE(("
        "SELECT SUM(r.size) FROM entries e JOIN revisions r ON r.ns = e.ns AND r.rev = e.rev "
        "WHERE e.ns = n.ns AND e.kind = 1), 0) FROM namespaces n "
        "WHERE n.ns NOT IN (SELECT ns FROM ns_usage)"
    )


def get_kv(db: sqlite3.Connection, k: str, default: Any = None) -> Any:
    row = db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
    return default if row is None else row[0]


def set_kv(db: sqlite3.Connection, k: str, v: Any) -> None:
    db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, v))
