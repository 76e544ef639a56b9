"""The sync client (DESIGN.md §8): three trees, a pure planner, ignore rules.

The scanner (disk), the server API and the executor drive `plan`; see `planner` for the theory
of operation and what the executor must do for each operation.

Where each concern lives:
- `trees`, `planner`, `limits`, `ignore`: pure (the three trees, the plan, what this side can
  hold, ignore rules);
- `scanner` (the local tree, incremental), `remote` (the server, its tree from cursor deltas),
  `index` (SQLite: the synced tree, the scan cache, write-ahead rows), `localfs` (disk
  primitives: no-replace renames, re-checks);
- `executor/` (carrying a plan out: `core` runs it, `structural`, `uploads`, `downloads`),
  `reconcile` (what a killed pass left in flight);
- `engine` (one folder: its lock, binding, passes and the pass loop), `watch` (passes whenever
  something changes; its tasks and retries);
- `synccmd`, `display` (`raftbox sync` and `status`, progress), `commands`, `api`, `config`
  (the file commands, login).
"""

from .ignore import DEFAULT_PATTERNS, IGNORE_FILE, IgnoreRules
from .planner import (
    ConflictCopy,
    DeleteLocal,
    DeleteRemote,
    Download,
    MkdirLocal,
    MkdirRemote,
    MoveLocal,
    MoveRemote,
    Op,
    OpKind,
    Plan,
    RenameTwin,
    UpdateSynced,
    Upload,
    conflicted_copy_name,
    plan,
    settled,
    twin_name,
)
from .trees import Kind, Node, Tree, agreed, path_key, same_content

__all__ = [
    "DEFAULT_PATTERNS",
    "IGNORE_FILE",
    "ConflictCopy",
    "DeleteLocal",
    "DeleteRemote",
    "Download",
    "IgnoreRules",
    "Kind",
    "MkdirLocal",
    "MkdirRemote",
    "MoveLocal",
    "MoveRemote",
    "Node",
    "Op",
    "OpKind",
    "Plan",
    "RenameTwin",
    "Tree",
    "UpdateSynced",
    "Upload",
    "agreed",
    "conflicted_copy_name",
    "path_key",
    "plan",
    "settled",
    "same_content",
    "twin_name",
]
