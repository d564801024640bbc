"""The README's commands must exist, so the docs cannot rot."""

from __future__ import annotations

import re

from arus.config import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
MAKEFILE = (REPO_ROOT / "Makefile").read_text()


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", MAKEFILE, flags=re.M))


def test_every_make_target_the_readme_names_exists() -> None:
    named = set(re.findall(r"make ([a-z][\w-]*)", README))
    named |= {
        t for cell in re.findall(r"\| `make ([^|]+)` \|", README) for t in re.findall(r"[a-z][\w-]*", cell)
    }
    named.discard("make")
    assert named, "the README names no make target"
    assert named <= make_targets(), f"README names missing targets: {sorted(named - make_targets())}"


def test_the_two_commands_come_first_and_ci_runs_the_test_command() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)


def test_every_make_target_documents_itself() -> None:
    for line in MAKEFILE.splitlines():
        match = re.match(r"^([a-z][\w-]*):(?!=)", line)
        if match and not line.startswith("$("):
            assert "## " in line, f"target {match.group(1)} has no ## description for `make help`"


DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
# A path the docs name (arus/core/stages.py, jobs/aggregate.py, conf/arus.toml ...) or a module
# they run or import (python -m arus.ops.broker, arus.core.rules.aware_time).
PATH = re.compile(
    r"(?<![\w./-])((?:arus|jobs|producers|bench|tests|notebooks|conf|scripts)/[\w/.-]*\.(?:py|toml))"
)
MODULE = re.compile(r"(?<![\w./-])((?:arus|jobs|producers|bench)(?:\.[a-z_][\w]*)+)")


def test_every_path_the_docs_name_exists() -> None:
    missing = {
        f"{doc.name}: {path}"
        for doc in DOCS
        for path in PATH.findall(doc.read_text())
        if not (REPO_ROOT / path).exists()
    }
    assert not missing, f"the docs name files that do not exist: {sorted(missing)}"


def _resolves(dotted: str) -> bool:
    """A module, or a name in one: arus.core.rules or arus.core.rules.aware_time."""
    import importlib

    parts = dotted.rstrip(".").split(".")
    if parts[0] in ("jobs", "producers", "bench"):
        parts = ["arus", *parts]  # installed inside the package
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_module_the_docs_name_exists() -> None:
    missing = {
        f"{doc.name}: {name}"
        for doc in DOCS
        for name in MODULE.findall(doc.read_text())
        if not name.endswith((".py", ".toml", ".md")) and not _resolves(name)
    }
    assert not missing, f"the docs name modules that do not exist: {sorted(missing)}"


def _arus_commands(text: str) -> set[str]:
    """`arus x` in inline code, and lines of code blocks that start with `arus x`."""
    blocks = text.split("```")[1::2]
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    found = [line.split()[1:3] for line in lines if line.startswith("arus ")]
    found += [m.split() for m in re.findall(r"`arus ([a-z][\w-]*(?: [a-z][\w-]*)?)", text)]
    return {" ".join(words) for words in found if words}


def test_every_arus_command_the_docs_show_exists() -> None:
    from arus.cli import COMMANDS

    unknown = {
        f"{doc.name}: arus {shown}"
        for doc in DOCS
        for shown in _arus_commands(doc.read_text())
        if shown not in COMMANDS and shown.split()[0] not in COMMANDS and not shown.startswith("-")
    }
    assert not unknown, f"the docs show arus commands that do not exist: {sorted(unknown)}"
