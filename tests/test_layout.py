"""The code's shape: no import loops between the project's modules (type-only and
function-local imports count too), and a UI worker loads none of the engine's runtime.

The import graph is read from the source (every `import` and `from ... import` in a module,
wherever it stands), so a loop hidden behind a function-local import is found as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT

PACKAGES = ("engine", "server", "ui", "launch", "bench", "eval_data", "perf")


def project_modules() -> dict[str, ast.Module]:
    """Every module of the project, by dotted name, parsed."""
    found = {name: ast.parse((ROOT / f"{name}.py").read_text()) for name in ("app", "protocol")}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = ast.parse(path.read_text())
    return found


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules `name` imports (the deepest known module each import names)."""
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets.add(node.module)
            targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    found = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            found.add(target)  # a package's own __init__ above the module is not a loop
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop found by a depth-first walk (each reported once, from its start)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_loop_finder_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_no_module_imports_one_that_imports_it_back():
    modules = project_modules()
    known = set(modules)
    graph = {name: imported(name, tree, known) for name, tree in modules.items()}
    assert "engine.runtime.engine" in graph["engine.runtime.service"]  # the graph is real
    assert cycles(graph) == []


HEAVY = ("vllm", "torch", "transformers", "engine.runtime", "engine.models.sources", "server")


def test_a_ui_worker_loads_none_of_the_engine_runtime():
    """What `python -m ui` imports (the tabs, the backend client) leaves vLLM, torch, the
    engine's runtime, the model downloader and the HTTP server's code unloaded; it takes only
    light value modules of the engine package (types, Qwen3's prompt rules, settings)."""
    code = (
        "import sys, ui.benchmark, ui.chat, ui.backend, ui.status, ui.operator; "
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
