"""Import layering (ARCHITECTURE.md): stages import only `pipeline`; `pipeline` imports no
stage and never torch. An AST walk over every module, so lazy imports inside functions count."""

from __future__ import annotations

import ast
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
    bad = [f"{f.relative_to(REPO)} imports {root}"
           for f in files for root in sorted(imported_roots(f) & FORBIDDEN[package])]  # fmt: skip
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_checker_detects_violation(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from recognition.models import x\n    import torch.nn\n")
    assert {"recognition", "torch"} <= imported_roots(mod)
