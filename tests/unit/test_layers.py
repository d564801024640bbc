"""The layers in arus/__init__.py hold: a module imports only its own layer and the ones it may.

docs/architecture.md draws the layers; this test is what keeps the drawing true.
"""

from __future__ import annotations

import ast
from pathlib import Path

from arus.config import REPO_ROOT

BASE = {"arus.config", "arus.grammar", "arus.signals"}
# What each layer may import, besides itself and the base.
MAY_IMPORT: dict[str, set[str]] = {
    "arus.core": set(),
    "arus.io": {"arus.core"},
    "arus.pyengine": {"arus.core", "arus.io"},
    "arus.runtime": {"arus.core", "arus.io"},
    "arus.sources": {"arus.core", "arus.io"},
    "arus.batch": {"arus.core", "arus.io", "arus.runtime"},
    "arus.ops": {"arus.core", "arus.io"},
}
ENTRY_POINTS = {"jobs": "arus.jobs", "producers": "arus.producers", "bench": "arus.bench"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ENTRY_POINTS:
        return ENTRY_POINTS[parts[0]]
    return ".".join(parts[:2]) if parts[0] == "arus" else ""


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for layer, allowed in MAY_IMPORT.items():
        folder = REPO_ROOT / layer.replace(".", "/")
        for path in sorted(folder.glob("*.py")):
            for name in imported(path):
                target = layer_of(name)
                if target and target not in {layer, *allowed, *BASE}:
                    wrong.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not wrong, "layer order broken:\n" + "\n".join(wrong)


def test_base_modules_import_no_layer() -> None:
    for module in BASE:
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        above = {name for name in imported(path) if layer_of(name) and layer_of(name) not in BASE}
        assert not above, f"{module} imports {above}"


def test_no_entry_point_imports_another() -> None:
    wrong = []
    for folder in ("jobs", "producers"):
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            for name in imported(path):
                if layer_of(name) in ENTRY_POINTS.values():
                    wrong.append(f"{folder}/{path.name} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_core_rules_import_no_spark() -> None:
    names = imported(REPO_ROOT / "arus" / "core" / "rules.py")
    assert not {name for name in names if name.split(".")[0] in ("pyspark", "delta")}
