"""Carrying out a `planner.Plan`: the disk and server side of one sync pass.

Theory of operation
-------------------
The planner is pure and decides; this package touches the disk and the server, and records in
the index (the synced tree) what both sides now agree on. It follows the contract each operation
type states in `planner` (what to re-check first, what to record on success), with these rules:

1. **Structural operations run first, one at a time, in plan order** (renames, moves, mkdirs,
   deletes, synced-tree updates). If one is skipped — its re-check failed, or the server or
   the disk refused — every later operation on the same subtree or on one of its ancestors is
   skipped too (they may depend on it: a child's upload on its folder's mkdir, a folder's
   delete on its children's); the rest goes on, so one stuck path never holds up the others.
   `Outcome.stopped` says why the first was skipped. Nothing needs undoing: the next pass
   re-plans from fresh trees.
2. **Transfers run next, concurrently** (`TRANSFERS_IN_FLIGHT` groups at once). Small files
   (`SMALL_BYTES`) travel in groups of up to `GROUP_FILES` / `GROUP_BYTES`: one `blocks/has`,
   one `blocks/put` of the missing blocks, one `commit_batch` (one Raft entry) per group; for
   downloads one batched `blocks/list` and one `blocks/get` of the blocks not found locally.
   Big files stream in `STREAM_BYTES` pieces so memory stays bounded. A failed transfer affects
   no other.
3. **Never lose data.** A local file is re-checked (`localfs.unchanged`: stat, re-hash when in
   doubt) just before it is deleted or replaced. A download is written to a temporary file in
   `DIR/.raftbox/tmp/`, fsynced, given its mtime and mode, and renamed into place only then (so
   no half-written file ever sits under its real name); if the file there changed since the
   scan, it is first renamed aside as a conflicted copy (uploaded by the next pass). A changed
   file planned for deletion is kept where it is (the next pass uploads it: an edit wins over a
   delete). An upload is read (cut and hashed) from disk at upload time, and skipped if it
   changed while being read. A server conflict (`update(parent_rev)` or `add` refused) renames
   the local file aside as a conflicted copy; the next pass uploads the copy and downloads the
   server's version. Identical content is never a conflict (the server answers success).
4. **Downloads reuse local blocks.** Every block of a file to download that some local file
   holds (the scan's blocklists) is read from disk and verified by its hash instead of fetched;
   a big file's blocks that the version it replaces holds are copied from it in the kernel
   (`copy_file_range`), unread, while its stat proves it is the one the scan read (`downloads`).
5. **Resumable after a kill at any point.** Each step's record is one SQLite transaction made
   after the step succeeded; killed in between, the next pass finds both sides already agreeing
   (same content) and records it, or finds the step undone and does it again. Temporary files of
   a killed pass are deleted at the start of the next.

Local paths are the planner's display paths below the sync root; before writing into a folder
the executor checks that no component of it is a symlink (`localfs.safe_dir`), so a folder
swapped for a link after the scan cannot make it write outside the root.

Where each part lives
---------------------
- `core`: `Executor.run`, the order above (rules 1 and 2) and what is skipped when; `Outcome`.
- `structural`: the structural operations of rule 1 (renames, moves, folders, deletes).
- `uploads`: rule 3's upload side: read at upload time, send missing blocks, commit.
- `downloads`: rules 3 and 4's download side: reuse or fetch blocks, temp file, install, record;
  `clean_tmp` (rule 5's temp files).
- `base`: the state the parts share, the bounds, and the checks and conflicted-copy handling
  they all use; `Counters`, `Progress`.
"""

from .base import (
    GROUP_BYTES,
    GROUP_FILES,
    SMALL_BYTES,
    STREAM_BYTES,
    TMP_DIR,
    TRANSFERS_IN_FLIGHT,
    Counters,
    Progress,
)
from .core import Executor, Outcome
from .downloads import clean_tmp

__all__ = [
    "GROUP_BYTES",
    "GROUP_FILES",
    "SMALL_BYTES",
    "STREAM_BYTES",
    "TMP_DIR",
    "TRANSFERS_IN_FLIGHT",
    "Counters",
    "Executor",
    "Outcome",
    "Progress",
    "clean_tmp",
]
