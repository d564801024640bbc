"""Run the notebooks in notebooks/ against a lake, headless, and keep their figures.

    arus notebooks                                   # run each against [paths] lake
    arus notebooks --lake /tmp/lake --images docs/img  # and save each one's README figure

The notebooks are stored as plain jupytext scripts (percent format), so they have no outputs in
git; `make notebook` opens them in Jupyter as notebooks. The test suite runs them with this module.
They live in notebooks/ of the project folder ($ARUS_HOME, else the current directory); each runs
in its own folder, with ARUS_HOME set so that its config's relative paths mean the same.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from arus.config import job_parser, load_config_or_say, project_root

FIGURE_TAG = "readme-figure"


def notebook_paths(folder: Path | None = None) -> list[Path]:
    """The notebooks in `folder` (default: notebooks/ of the project folder)."""
    folder = folder or project_root() / "notebooks"
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def execute(path: Path, lake: Path, timeout_s: int = 180) -> nbformat.NotebookNode:
    """Run a notebook script top to bottom in a fresh kernel with ARUS_LAKE_DIR=lake.

    Raises nbclient's CellExecutionError, naming the cell, when any cell fails.
    """
    notebook = jupytext.read(path)
    client = NotebookClient(
        notebook,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    env = {
        **os.environ,
        "ARUS_HOME": str(project_root()),
        "ARUS_LAKE_DIR": str(lake),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    client.execute(env=env)
    return notebook


def images(notebook: nbformat.NotebookNode, tag: str | None = None) -> list[bytes]:
    """The PNG figures the notebook's cells displayed (only tagged cells' when `tag` is given)."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or (tag and tag not in cell.metadata.get("tags", [])):
            continue
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                found.append(base64.b64decode(png))
    return found


def text_output(notebook: nbformat.NotebookNode) -> str:
    """Everything the cells printed, in order."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "text/plain" in output.get("data", {}):
                parts.append(output["data"]["text/plain"])
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(
        "arus notebooks", __doc__, "arus notebooks", "arus notebooks --lake /tmp/lake --images docs/img"
    )
    parser.add_argument("--lake", help="the lake to read (default: [paths] lake, or ARUS_LAKE_DIR)")
    parser.add_argument("--images", help="save each notebook's tagged figure here as <notebook>.png")
    parser.add_argument("--executed", help="also save the executed notebooks (.ipynb, with outputs) here")
    args = parser.parse_args(argv)
    config = load_config_or_say("notebooks", args.config)
    if config is None:
        return 2
    lake = Path(args.lake) if args.lake else config.resolve(config.paths.lake)
    paths = notebook_paths()
    if not paths:
        print(
            f"notebooks: none in {project_root() / 'notebooks'}: run in the project folder or set ARUS_HOME",
            file=sys.stderr,
        )
        return 2
    for path in paths:
        notebook = execute(path, lake)
        figures = images(notebook)
        print(f"{path.name}: ran, {len(figures)} figures")
        if args.images:
            tagged = images(notebook, FIGURE_TAG)
            if tagged:
                out = Path(args.images) / f"{path.stem}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tagged[0])
                print(f"  saved {out} ({len(tagged[0]) / 1024:.0f} KB)")
        if args.executed:
            out = Path(args.executed) / f"{path.stem}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
