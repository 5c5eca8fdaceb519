"""Import layering (docs/architecture.md §2): stages import only `pipeline`; `pipeline` imports no
stage and never torch. An AST walk over every module, so lazy imports inside functions count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "pipeline": {"torch", "torchvision", "recognition", "pose_extraction"},
    "pose_extraction": {"recognition"},
    "recognition": {"pose_extraction"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = [
        f"{f.relative_to(REPO)} imports {root}"
        for f in files
        for root in sorted(imported_roots(f) & FORBIDDEN[package])
    ]
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_checker_detects_violation(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from recognition.models import x\n    import torch.nn\n")
    assert {"recognition", "torch"} <= imported_roots(mod)


PACKAGES = ("pipeline", "pose_extraction", "recognition")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (lazy imports inside functions included)."""
    files = {module_name(f): f for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` of a name inside a module: that module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_cycle_checker_detects_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


DOC_REF = re.compile(r"(?<![\w/.-])((?:\.\./|\./)?(?:[\w-]+/)*[\w-]+\.md)\b")
TEXT_FILES = ("*.py", "*.yaml", "*.yml", "*.md", "*.sh", "*.toml", "Makefile")


def doc_references() -> list[tuple[str, int, str]]:
    """(file, line, reference) of every `*.md` file named in the repository's own text files."""
    out = []
    for pattern in TEXT_FILES:
        for f in sorted(REPO.glob(f"**/{pattern}")):
            rel = f.relative_to(REPO)
            if rel.parts[0].startswith(".") or rel.parts[0] in ("artifacts",):
                continue
            for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                out += [(str(rel), n, m.group(1)) for m in DOC_REF.finditer(line)]
    return out


def test_doc_references_name_files_in_the_repository():
    missing = []
    for rel, n, ref in doc_references():
        here = (REPO / rel).parent
        if not ((REPO / ref).is_file() or (here / ref).is_file() or (REPO / "docs" / ref).is_file()):
            missing.append(f"{rel}:{n}: {ref}")
    assert not missing, "references to documents that are not in the repository:\n" + "\n".join(missing)


def test_doc_reference_checker_sees_a_reference(tmp_path):
    md = ".md"  # spelled apart, so that this file names no document itself
    text = f"see NOTES{md} §3 and docs/method{md}, ../shared/PLAN{md}"
    assert DOC_REF.findall(text) == [f"NOTES{md}", f"docs/method{md}", f"../shared/PLAN{md}"]
