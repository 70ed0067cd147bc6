"""Dependencies run one way: engine -> converters -> pipeline -> commands (README, "Layout").

Parses every import (module level and inside functions) of matnet/, converters/ and
reference/ with ``ast``; importing ``a.b.c`` also counts as importing the packages
``a.b`` (their ``__init__`` runs; a module's own packages are running already), except
the ``matnet`` face, which imports nothing
eagerly (PEP 562; its ``if TYPE_CHECKING:`` imports are for editors and never run).
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
        tree = ast.parse(f.read_text(), str(f))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}  # never run
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
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


def private_imports(mods) -> list[str]:
    """``from x import _name`` and ``module._name`` (``module`` an imported project module)
    in matnet/, converters/, reference/: a private name used outside its module."""
    found = []
    for name, (f, is_pkg) in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(a.asname or a.name.split(".")[0] for a in node.names
                               if a.name.split(".")[0] in PACKAGES)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                if base.split(".")[0] not in PACKAGES:
                    continue
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{name}:{node.lineno}: from {base} import {a.name}")
                    elif f"{base}.{a.name}" in mods:
                        modules.add(a.asname or a.name)
        found += [f"{name}:{node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__")]
    return found


def test_no_private_name_used_across_modules():
    """A helper another module needs is public in the module that owns it (the benchmarks
    and hubconf.py, which import the project, included)."""
    scripts = {f"benchmarks.{f.stem}": (f, False) for f in (ROOT / "benchmarks").glob("*.py")}
    scripts["hubconf"] = (ROOT / "hubconf.py", False)
    found = private_imports({**modules(), **scripts})
    assert not found, "\n".join(found)


def test_the_private_check_sees_offenders(tmp_path):
    pkg = tmp_path / "matnet"
    pkg.mkdir()
    (pkg / "a.py").write_text("def _h():\n    pass\n")
    (pkg / "b.py").write_text("from .a import _h\nfrom . import a\na._h()\n")
    found = private_imports({"matnet.a": (pkg / "a.py", False), "matnet.b": (pkg / "b.py", False)})
    assert found == ["matnet.b:1: from matnet.a import _h", "matnet.b:3: a._h"]


def test_the_face_lists_every_name_for_tools():
    """matnet.__all__ resolves name by name, and the face's ``if TYPE_CHECKING:`` block
    imports exactly those names from the modules __getattr__ loads them from."""
    import matnet
    assert sorted(matnet.__all__) == sorted(matnet._EXPORTS)
    for name in matnet.__all__:
        assert getattr(matnet, name) is getattr(__import__(matnet._EXPORTS[name], fromlist=[name]), name), name
    tree = ast.parse((ROOT / "matnet" / "__init__.py").read_text())
    listed = {a.name: node.module for block in tree.body if isinstance(block, ast.If)
              and getattr(block.test, "id", "") == "TYPE_CHECKING" for node in block.body
              if isinstance(node, ast.ImportFrom) and node.level == 0 for a in node.names}
    assert listed == matnet._EXPORTS
