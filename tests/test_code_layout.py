"""The code base stays one a newcomer can move in (docs/layout.md): every module of
matnet/, converters/, reference/ under 500 lines, no function over 60 lines but
trainWeakly's epoch and batch steps (the story of trainWeakly.m's loops, kept whole)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE, MAX_FUNCTION = 500, 60
LONG_ALLOWED = {"matnet/train/train_weakly.py:_train_epoch", "matnet/train/batch.py:train_batch"}


def sources():
    return [f for pkg in ("matnet", "converters", "reference") for f in sorted((ROOT / pkg).rglob("*.py"))]


def test_modules_under_500_lines():
    long = {str(f.relative_to(ROOT)): n for f in sources() if (n := len(f.read_text().splitlines())) >= MAX_MODULE}
    assert not long, long


def test_functions_under_60_lines():
    long = {}
    for f in sources():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                key = f"{f.relative_to(ROOT)}:{node.name}"
                if n > MAX_FUNCTION and key not in LONG_ALLOWED:
                    long[f"{key} (line {node.lineno})"] = n
    assert not long, long


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers/ (or conftest.py fixtures); a test module
    imports no other test module, and helpers import none either."""
    tests = {f.stem for f in (ROOT / "tests").glob("test_*.py")} | {"conftest"}
    found = []
    for f in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{f.relative_to(ROOT)}:{node.lineno}: {m}" for m in mods if m.split(".")[0] in tests]
    assert not found, found
