"""House rules a reader relies on, checked on the source: no module of the package (edgediff/, export/) over 400
lines, no import cycle between its modules, counting the imports inside functions too (a cycle hidden in a
function-level import is still two modules that cannot be read, or changed, one without the other), and what git
holds (source, tests, docs, results, the shipped bundles) under 20 MB together."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgediff": ROOT / "edgediff", "edgediff_export": ROOT / "export"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((name, *parts))] = path
    return out


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every package module `path` imports, at any depth of the file (a `from a import b` of a submodule counts b)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and
                   getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported when the program runs
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != module}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the list of modules around it, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (each over {MAX_LINES} lines): {long}"


def test_no_import_cycle_between_modules():
    mods = _modules()
    # a package's __init__ re-exporting its submodules is how packages work, not a cycle between two modules
    graph = {m: {n for n in _imports(p, m, set(mods)) if not m.startswith(n + ".")} for m, p in mods.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


GIT_LIMIT_BYTES = 20_000_000


def test_what_git_holds_stays_under_20_mb():
    """Every tracked file's size, summed: the shipped bundles are most of it (emoji-32 11.9 MB, emoji-128 ~4 MB)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())
    assert total <= GIT_LIMIT_BYTES, f"git holds {total / 1e6:.1f} MB; the limit is {GIT_LIMIT_BYTES / 1e6:.0f} MB"
