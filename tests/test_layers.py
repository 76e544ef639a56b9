"""The package's layers, checked: who may import whom (docs/architecture.md), and no import cycle.

Every `import raftbox...` / `from raftbox... import` in `src/raftbox`, at module level or inside a
function (a lazy import still ties the two modules together), is an edge. A layer may import only
the layers listed for it in `ALLOWED`; the module graph has no cycle (a package's `__init__`
re-exporting its own modules is not a cycle of the code, so package -> own submodule edges are
left out). Imports under `if TYPE_CHECKING:` are annotations only and are not edges."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# layer -> the layers it may import (itself always). The top-level modules (server, cli, ...)
# assemble processes and may import anything; `testing` is tooling for tests.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "raft": {"base"},
    "blocks": {"base"},
    "meta": {"base", "raft"},
    "notify": {"base", "meta", "raft"},
    "api": {"base", "meta", "blocks", "raft", "notify"},
    "client": {"base", "blocks", "meta", "notify"},
}
# Top-level modules every layer may use: helpers that know nothing of files, namespaces or Raft.
BASE = {"backoff", "tls", "atomic", "httpserve", "cluster"}


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted((SRC / "raftbox").rglob("*.py")):
        mod = _module(path)
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        out = edges.setdefault(mod, set())
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                out.update(n for n in names if _is_module(n)) or None
                if target.startswith("raftbox"):
                    out.add(target)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("raftbox"))
    return edges


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _is_module(name: str) -> bool:
    p = SRC / Path(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "top"
    if len(parts) == 2 and not (SRC / "raftbox" / parts[1]).is_dir():
        return "base" if parts[1] in BASE else "top"
    return parts[1]


def test_each_layer_imports_only_the_layers_below_it() -> None:
    bad = []
    for mod, targets in _edges().items():
        layer = _layer(mod)
        if layer not in ALLOWED:
            continue
        for t in targets:
            if t == "raftbox":  # the package itself (its version): no layer
                continue
            tl = _layer(t)
            if tl != layer and tl not in ALLOWED[layer]:
                bad.append(f"{mod} -> {t}")
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(
        sorted(bad)
    )


def test_no_import_cycle() -> None:
    edges = _edges()
    graph = {
        m: {t for t in ts if t in edges and not m.startswith(t + ".") and t != m}
        for m, ts in edges.items()
    }
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        cycles.append(sorted(comp))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_api_route_modules_do_not_import_the_server() -> None:
    """Route modules give `routes()` tables that `ApiServer.add_routes` registers; none imports
    `api.http` (that was the http <-> native cycle)."""
    edges = _edges()
    bad = [
        m for m, ts in edges.items() if m.startswith("raftbox.api.") and "raftbox.api.http" in ts
    ]
    assert not bad, f"import raftbox.api.http: {bad}"
