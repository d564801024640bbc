"""Reconciliation on a streaming run with late data: every difference explained, and only those.

The main job runs twice on one checkpoint. The second run gets events far behind the watermark the
first run left (dropped by the stream, counted by a batch recompute), a few on time, and then
records arrive that the stream has not read yet. A Python oracle says which (device, window) each
of those touches; reconciliation must explain exactly those and nothing else, and must fail when
the stream's table is tampered with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arus.jobs import reconcile
from batch_support import StreamRun, create_topic, events, land_bronze, send_events, stream_run
from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from arus.config import Config

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Window = tuple[str, datetime]


@dataclass(frozen=True)
class LateRun:
    run: StreamRun
    bronze: Path
    late: set[Window]  # windows that late events touch
    unread: set[Window]  # windows of records sent after the stream's last run


def event_time(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["event_time"]).replace("Z", "+00:00"))


def windows(batch: list[dict[str, object]]) -> set[Window]:
    return {(str(e["device_id"]), event_time(e).replace(second=0, microsecond=0)) for e in batch}


@pytest.fixture(scope="module")
def late_run(
    spark: SparkSession, config: Config, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LateRun]:
    root = tmp_path_factory.mktemp("late")
    topic = create_topic(config, "late", partitions=2)
    every = events(devices=3, start=START, count=27, interval_s=20.0, seed=5)  # 12:00:00 .. 12:08:40
    first = [e for e in every if START + timedelta(minutes=2) <= event_time(e) < START + timedelta(minutes=7)]
    send_events(config, topic, first)
    stream_run(config, topic, root)
    # The first run ends with watermark = latest event time (12:06:40) - 2 minutes = 12:04:40.
    watermark = START + timedelta(minutes=4, seconds=40)
    behind = [e for e in every if event_time(e) < START + timedelta(minutes=2)]
    behind += [e for e in first if event_time(e) == START + timedelta(minutes=4, seconds=20)]  # resent copies
    on_time = [
        e for e in every if START + timedelta(minutes=7) <= event_time(e) < START + timedelta(minutes=8)
    ]
    send_events(config, topic, behind + on_time)
    run = stream_run(config, topic, root)
    unread = [e for e in every if event_time(e) >= START + timedelta(minutes=8)]
    send_events(config, topic, unread)
    bronze = root / "bronze"
    land_bronze(spark, config, topic, bronze)
    late_windows = windows([e for e in behind if event_time(e) <= watermark and e not in first])
    yield LateRun(run, bronze, late_windows, windows(unread))


def run_reconcile(run: LateRun, gold: Path, tmp_path: Path) -> tuple[int, dict[str, object]]:
    out = tmp_path / "report.json"
    args = [
        "--bronze-table",
        str(run.bronze),
        "--gold-table",
        str(gold),
        "--checkpoint",
        str(run.run.checkpoint),
    ]
    code = reconcile.main([*args, "--json", str(out)])
    return code, json.loads(out.read_text())


def diff_windows(report: dict[str, object], explained_by: str) -> set[Window]:
    differences = report["differences"]
    assert isinstance(differences, list)
    return {
        (d["device_id"], datetime.fromisoformat(d["window_start"]))
        for d in differences
        if d["explained_by"] == explained_by
    }


def test_reconciliation_explains_every_difference_by_late_or_unread_data(
    late_run: LateRun, tmp_path: Path
) -> None:
    code, report = run_reconcile(late_run, late_run.run.gold, tmp_path)
    assert code == 0
    assert diff_windows(report, "late") == late_run.late
    assert diff_windows(report, "unread") == late_run.unread
    assert diff_windows(report, "") == set()
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert counts["missing"] == len(late_run.late) + len(late_run.unread)  # those windows exist in batch only
    assert counts["late_events"] == 3 * 6 + 3  # minutes 0 and 1, and the three resent copies
    assert counts["unread_events"] == 3 * 3  # minute 8


def test_reconciliation_fails_on_a_difference_that_late_data_does_not_explain(
    spark: SparkSession, late_run: LateRun, tmp_path: Path
) -> None:
    tampered = tmp_path / "gold"
    spark.read.format("delta").load(str(late_run.run.gold)).write.format("delta").save(str(tampered))
    window = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    DeltaTable.forPath(spark, str(tampered)).update(
        f"device_id = 'dev-01' AND window_start = '{window:%Y-%m-%d %H:%M:%S}'", {"count": "count + 1"}
    )

    code, report = run_reconcile(late_run, tampered, tmp_path)
    assert code == 1
    unexplained = [d for d in report["differences"] if not d["explained_by"]]  # type: ignore[union-attr]
    assert [(d["device_id"], d["window_start"], d["kind"], d["columns"]) for d in unexplained] == [
        ("dev-01", "2026-03-01T12:05:00Z", "mismatch", ["count"])
    ]
    assert diff_windows(report, "late") == late_run.late


def test_the_late_events_table_alone_explains_the_late_windows(late_run: LateRun, tmp_path: Path) -> None:
    """The streaming job's own late-events table, with no checkpoint: late explained, unread not."""
    late_table = late_run.run.checkpoint.parent.parent / "lake" / "late"
    assert (late_table / "_delta_log").is_dir(), f"no late-events table at {late_table}"
    out = tmp_path / "report.json"
    args = ["--bronze-table", str(late_run.bronze), "--gold-table", str(late_run.run.gold)]
    args += ["--checkpoint", str(tmp_path / "none"), "--late-table", str(late_table), "--json", str(out)]
    assert reconcile.main(args) == 1
    report = json.loads(out.read_text())
    assert diff_windows(report, "late") == late_run.late
    assert diff_windows(report, "") == late_run.unread
