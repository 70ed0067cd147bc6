"""Dependencies run one way: engine -> converters -> pipeline -> commands (README, "Layout").

Parses every import (module level and inside functions) of matnet/, converters/ and
reference/ with ``ast``; importing ``a.b.c`` also counts as importing the packages
``a.b`` (their ``__init__`` runs; a module's own packages are running already), except
the ``matnet`` face, which imports nothing
eagerly (PEP 562).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("matnet", "converters", "reference")
# lowest layer first; a module belongs to the longest prefix listed, else to 'pipeline'
LAYERS = {"engine": ("matnet.layout", "matnet.layers", "matnet.simplenn", "matnet.nettools", "matnet.images",
                     "matnet.option", "matnet.device"),
          "converters": ("converters",),
          "pipeline": ("matnet", "reference"),
          "commands": ("matnet.commands", "matnet.cli", "matnet.__main__")}
RANK = {name: i for i, name in enumerate(LAYERS)}


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def imports(mods) -> dict[str, set[str]]:
    """module -> the project modules it imports (explicitly or through parent packages)."""
    graph = {}
    for name, (f, is_pkg) in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module
                for a in node.names:
                    targets.add(f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg)
        deps = set()
        for t in targets:
            parts = t.split(".")
            if parts[0] not in PACKAGES:
                continue
            deps.add(t)
            deps.update(".".join(parts[:i]) for i in range(2 if parts[0] == "matnet" else 1, len(parts)))
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}  # already running
        graph[name] = {d for d in deps if d in mods and d != name and d not in own}
    return graph


def layer_of(module: str) -> str:
    best = max(((p, layer) for layer, ps in LAYERS.items() for p in ps
                if module == p or module.startswith(p + ".")), key=lambda x: len(x[0]))
    return best[1]


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


GRAPH = imports(modules())


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_depend_downwards_only():
    up = [f"{m} ({layer_of(m)}) imports {d} ({layer_of(d)})" for m, ds in GRAPH.items() for d in ds
          if d != "matnet" and RANK[layer_of(d)] > RANK[layer_of(m)]]
    assert not up, "\n".join(up)


def test_only_commands_use_the_package_face():
    users = sorted(m for m, ds in GRAPH.items() if "matnet" in ds and layer_of(m) != "commands")
    assert not users, f"import the module holding the name, not the matnet face: {users}"
    assert not any(d.startswith("matnet.") for m, ds in GRAPH.items() if m.startswith("converters")
                   for d in ds if layer_of(d) != "engine")


def test_the_checks_see_cycles_and_upward_imports():
    """The graph builder on a known cycle and the face rule on a known offender."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "matnet.simplenn" in GRAPH["converters.network"] and "matnet.layers" in GRAPH["converters.network"]
    assert "matnet.get_clusters" in GRAPH["matnet.add_layers"]  # add_layers -> get_clusters, not back
    assert layer_of("matnet.layers.vlad") == "engine" and layer_of("matnet.commands.demo") == "commands"
    assert layer_of("matnet.train.train_weakly") == "pipeline" and layer_of("converters.native") == "converters"


def test_search_is_below_the_matlab_functions():
    """matnet.search (exact, streamed, approximate, memory sizing) serves recall_at_n
    (testFromFn, testCore, rawNnSearch), never the other way."""
    search = [m for m in GRAPH if m == "matnet.search" or m.startswith("matnet.search.")]
    assert {"matnet.search.exact", "matnet.search.streamed", "matnet.search.approximate",
            "matnet.search.memory"} <= set(search)
    assert "matnet.search" in GRAPH["matnet.recall_at_n"]
    up = [(m, d) for m in search for d in GRAPH[m] if d.startswith("matnet.") and not d.startswith("matnet.search")]
    assert not up, up


@pytest.mark.parametrize("first", ["converters", "matnet.cli"])
def test_any_module_imports_first(first):
    """No import order hits a partially initialised module (fresh interpreter per entry point)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", f"import {first}, matnet; matnet.load_net; matnet.trainWeakly"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
