"""The api package imports in one direction (issue 12): no module imports one that imports it
back, and the route modules do not import `http` (the `ApiServer`); `server.py` registers their
route tables."""

import ast
import pathlib

import raftbox.api

API = pathlib.Path(next(iter(raftbox.api.__path__)))


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for f in API.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    deps.update([node.module] if node.module else [a.name for a in node.names])
                elif (node.module or "").startswith("raftbox.api."):
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps.update(
                    a.name.split(".")[2] for a in node.names if a.name.startswith("raftbox.api.")
                )
        graph[f.stem] = deps - {f.stem}
    return graph


def test_no_import_cycle_in_the_api_package():
    graph = _imports()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        assert m not in path, f"import cycle: {' -> '.join([*path, m])}"
        if m in done:
            return
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_route_modules_do_not_import_the_server():
    graph = _imports()
    for m in ("args", "content", "native", "accounts", "errors", "limits", "wire"):
        assert "http" not in graph[m], m
