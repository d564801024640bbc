"""Every notebook runs top to bottom, headless, against a lake this test run produced itself.

The lake comes from the real pipeline pieces: the main streaming job run twice on one checkpoint
(the second run gets events behind the watermark, so there are late events as well as dead
letters), bronze landed from the topic's Kafka rows, and silver from a backfill. Tables nobody has
written (alerts, until its job lands) must be reported as missing, not crash a notebook.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from batch_support import (
    BAD_RECORDS,
    create_topic,
    encode,
    environment,
    events,
    land_bronze,
    send,
    stream_run,
)
from pyspark.sql import SparkSession

from arus import lake
from arus.config import Config
from arus.notebooks import FIGURE_TAG, execute, images, notebook_paths, text_output
from jobs import backfill

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIGURES = {"01_overview": 1, "02_iot": 2, "03_data_quality": 2}  # with a late-events table present


@pytest.fixture(scope="module")
def notebook_lake(
    spark: SparkSession, config: Config, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    lake_dir = root / "lake"
    topic = create_topic(config, "nb", partitions=2)
    every = events(devices=6, start=START, count=40, interval_s=30.0, seed=7)  # 20 minutes
    cut = START + timedelta(minutes=12)
    early = [e for e in every if _time(e) < cut]
    late = [e for e in every if _time(e) >= cut]
    bad = [(None, value) for value in BAD_RECORDS] + [("dev-00", b""), ("dev-01", b'{"event_id":"x"}')]
    send(config, topic, [(str(e["device_id"]), encode(e)) for e in early[6:]] + bad)
    tables = {"gold": lake_dir / config.aggregate.table, "dead": lake_dir / config.aggregate.deadletter_table}
    stream_run(config, topic, root, gold=tables["gold"], dead=tables["dead"])
    send(config, topic, [(str(e["device_id"]), encode(e)) for e in early[:6] + late] + bad[:2])
    stream_run(config, topic, root, gold=tables["gold"], dead=tables["dead"])
    land_bronze(spark, config, topic, lake_dir / config.batch.bronze_table)
    with environment(ARUS_LAKE_DIR=str(lake_dir)):
        assert backfill.main([]) == 0  # silver, and gold again, from bronze: the configured names
    return lake_dir


def _time(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["event_time"]).replace("Z", "+00:00"))


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_and_draws_its_figures(path: Path, notebook_lake: Path, config: Config) -> None:
    notebook = execute(path, notebook_lake)  # raises, naming the cell, if any cell fails

    printed = text_output(notebook)
    has_late = lake.is_table(notebook_lake / config.batch.late_table)
    assert not lake.is_table(notebook_lake / config.batch.alerts_table)  # nothing here writes alerts
    expected = FIGURES[path.stem] - (1 if path.stem == "03_data_quality" and not has_late else 0)
    assert len(images(notebook)) == expected
    assert len(images(notebook, FIGURE_TAG)) == 1
    missing = {
        "01_overview": [f"not found: {config.batch.alerts_table} (alerts)"],
        "02_iot": [f"not found: alerts table {config.batch.alerts_table!r}"],
        "03_data_quality": [] if has_late else [f"not found: late events table {config.batch.late_table!r}"],
    }
    for message in missing[path.stem]:
        assert message in printed
