"""The package's import graph: no cycle, even through imports inside functions, and the
offline benchmark is a plug-in that only the experiments on it and the CLI import.

The graph is read from the source (every `import` and `from ... import` statement, at any
depth), so an import that only runs inside a function counts as much as one at the top.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Who may import the offline benchmark (besides its own modules).
OFFLINE_USERS = {"robustft.cli", "robustft.demo", "robustft.compare"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "robustft").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "kernels").glob("*.py")):  # shipped as robustft.kernels
        out["robustft.kernels" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}. `from .x import y` counts as an import of
    `.x.y` when that is a module, else of `.x`."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    deps.add(target if target in mods else base)
            elif isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "robustft.finetune" in graph["robustft.evaluate"]  # imported inside `perplexity`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_only_the_experiments_on_it_and_the_cli_import_the_offline_benchmark():
    graph = import_graph()
    users = {m for m, deps in graph.items() if not m.startswith("robustft.offline")
             and any(d == "robustft.offline" or d.startswith("robustft.offline.") for d in deps)}
    assert users <= OFFLINE_USERS, sorted(users - OFFLINE_USERS)
    assert "robustft.model" not in users  # the toy registers itself: `robustft.models` entry point


def test_the_toy_is_found_through_its_entry_point():
    from robustft.model import registered_loader
    from robustft.offline.toy_model import load_lm

    assert registered_loader("toy") is load_lm
    assert registered_loader("no-such-model") is None
