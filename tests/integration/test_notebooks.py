"""Every notebook runs top to bottom, headless, against a lake this test run produced itself.

The lake comes from the real multi-topic pipeline (jobs/pipeline.py, stage by stage, the clean
stage in small micro-batches so that events sent last, an hour behind, are late): bronze, silver,
gold, dead letters, late events and alerts. The notebooks must also cope with a lake that has only
some tables: they say which are missing and skip those plots.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arus.jobs import pipeline
from batch_support import BAD_RECORDS, KINDS, SITES, encode, events, send

from arus.config import Config, TopicConfig
from arus.io import lake
from arus.ops.notebooks import FIGURE_TAG, execute, images, notebook_paths, text_output
from arus.ops.topics import ensure_topics

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIGURES = {"01_overview": 1, "02_iot": 2, "03_data_quality": 2}
TOPICS = ("raw", "devices", "clean", "deadletter", "late", "aggregates", "alerts")


@pytest.fixture(scope="module")
def notebook_lake(config: Config, kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    suffix = root.name + datetime.now(UTC).strftime("%H%M%S%f")
    topics = {name: f"test.nb.{name}.{suffix}" for name in TOPICS}
    policy = {"devices": "compact"}
    ensure_topics(
        config, topics=tuple(TopicConfig(t, 1, -1, policy.get(n, "delete")) for n, t in topics.items())
    )

    every = events(devices=6, start=START, count=40, interval_s=30.0, seed=7)  # 20 minutes
    for e in every[6:]:
        if e["device_id"] == "dev-00" and e["seq"] in (20, 21):
            e["value"] = 95.0  # a humidity sensor over its bound: alerts
    kinds = sorted(KINDS)
    devices = [
        (f"dev-{d:02d}", json.dumps({"device_id": f"dev-{d:02d}", "kind": kinds[d % 3], "site": SITES[d % 2],
                                      "unit": KINDS[kinds[d % 3]][0], "low": 0.0, "high": 1000.0}).encode())
        for d in range(6)
    ]  # fmt: skip
    send(config, topics["devices"], devices)
    bad = [(None, value) for value in BAD_RECORDS] + [("dev-00", b""), ("dev-01", b'{"event_id":"x"}')]
    # The first readings go last: by then the watermark is far past them.
    send(config, topics["raw"], [(str(e["device_id"]), encode(e)) for e in every[6:]] + bad)
    send(config, topics["raw"], [(str(e["device_id"]), encode(e)) for e in every[:6]])

    common = ["--available-now", "--lake", str(root / "lake"), "--checkpoint", str(root / "checkpoints")]
    common += [arg for name, topic in topics.items() for arg in (f"--{name}-topic", topic)]
    assert pipeline.main(["--stages", "bronze", *common]) == 0
    assert pipeline.main(["--stages", "clean", "--max-offsets-per-trigger", "60", *common]) == 0
    assert pipeline.main(["--stages", "aggregate,alerts", *common]) == 0
    return root / "lake"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_and_draws_its_figures(path: Path, notebook_lake: Path, config: Config) -> None:
    names = [config.batch.bronze_table, config.batch.silver_table, config.aggregate.table]
    names += [config.stream.deadletter_table, config.stream.late_table, config.batch.alerts_table]
    assert all(lake.is_table(notebook_lake / name) for name in names)

    notebook = execute(path, notebook_lake)  # raises, naming the cell, if any cell fails

    assert len(images(notebook)) == FIGURES[path.stem]
    assert len(images(notebook, FIGURE_TAG)) == 1
    assert "not found" not in text_output(notebook)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_says_which_tables_are_missing(
    path: Path, notebook_lake: Path, config: Config, tmp_path: Path
) -> None:
    """A lake with the gold table only: the notebook still runs, names what is missing, plots the rest."""
    shutil.copytree(notebook_lake / config.aggregate.table, tmp_path / config.aggregate.table)

    notebook = execute(path, tmp_path)

    printed = text_output(notebook)
    missing = {
        "01_overview": [
            f"not found: {config.batch.silver_table} (silver",
            f"not found: {config.batch.alerts_table} (alerts)",
        ],
        "02_iot": [
            f"not found: readings (silver) table {config.batch.silver_table!r}",
            "not found: alerts table",
        ],
        "03_data_quality": ["not found: dead letters table", "not found: late events table"],
    }[path.stem]
    for message in missing:
        assert message in printed
    drawn = {"01_overview": 1, "02_iot": 1, "03_data_quality": 0}  # the commit timeline; the heatmap
    assert len(images(notebook)) == drawn[path.stem]
