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
