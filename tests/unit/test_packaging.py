"""`pip install .` must bring every package arus imports: a module imported by the package whose
distribution pyproject does not declare works in the checkout's venv and fails everywhere else."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from arus.cli import EXTRAS
from arus.config import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_module_the_package_imports_is_a_declared_dependency() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    distributions = packages_distributions()
    missing = set()
    for folder in ("arus", "jobs", "producers"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    roots = [node.module.split(".")[0]]
                else:
                    continue
                for root in roots:
                    if root in sys.stdlib_module_names or root in ("arus", "jobs", "producers"):
                        continue
                    names = {_name(d) for d in distributions.get(root, [root])}
                    allowed = declared | (optional if root in EXTRAS or root == "confluent_kafka" else set())
                    if not names & allowed:
                        missing.add(f"{path.relative_to(REPO_ROOT)}: {root} ({', '.join(sorted(names))})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(sorted(missing))
