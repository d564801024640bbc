"""The alerts query's writer on static micro-batches: what it remembers of the fleet between them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from support import topic_records

from arus.config import Config
from arus.core.transforms import to_kafka_records
from arus.runtime.progress import Tally
from arus.runtime.writers import Writer, write_alerts

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
READINGS = "event_id string, device_id string, value double, event_time timestamp"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# Silver holds d3 only and does not grow (the clean stage behind or stopped); then d1 and d2 report,
# then d2 alone 10 minutes later.
FIRST_BATCHES = [[("a", "d1", 20.0, at(0)), ("b", "d2", 21.0, at(0))], [("c", "d2", 21.5, at(10))]]


def silent_fleet_writer(
    spark: SparkSession,
    config: Config,
    topic: str,
    tmp_path: Path,
    tally: Tally | None = None,
    silver_rows: list[tuple[str, str, float, datetime]] | None = None,
) -> tuple[Writer, str]:
    """An alerts writer (query id q-test, 5 silent minutes) over silver holding `silver_rows` (by
    default d3's one reading at 11:40), and its table's path. Called again with the same `tmp_path`:
    the query restarted on its checkpoint, silver rewritten."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir(exist_ok=True)
    (checkpoint / "metadata").write_text(json.dumps({"id": "q-test"}))
    silver, table = str(tmp_path / "silver"), str(tmp_path / "alerts")
    rows = silver_rows or [("s1", "d3", 20.0, at(-20))]
    spark.createDataFrame(rows, READINGS).write.format("delta").mode("overwrite").save(silver)
    rules = replace(config.alerts, topic=topic, silent_minutes=5.0)
    write = write_alerts(config.kafka, rules, table, silver, "event_id", "event_time", str(checkpoint), tally)
    return write, table


def test_silence_is_judged_on_every_device_the_query_has_read_not_only_the_batch(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """d3 is silent from the first batch, and d1, read in batch 0 only, is silent in batch 1 when
    d2 reports 10 minutes later. Nothing else can alert: one or two readings per device, values
    inside every bound."""
    write, table = silent_fleet_writer(spark, config, new_topic("alerts"), tmp_path)
    for batch_id, rows in enumerate(FIRST_BATCHES):
        write(spark.createDataFrame(rows, READINGS), batch_id)

    stored = spark.read.format("delta").load(table).select("alert_id", "detected_in").collect()
    assert sorted((r.alert_id, r.detected_in) for r in stored) == [
        ("silent|d1|2026-03-01T12:00:00.000Z", "q-test/1"),
        ("silent|d3|2026-03-01T11:40:00.000Z", "q-test/0"),
    ]


def test_the_topic_gets_each_alert_once_as_the_table_stores_it_however_the_batch_inserted_it(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """As above, batch 0 finds d3 silent and inserts all it found; batch 1 finds d3 again and d1,
    and inserts d1 only; batch 2 finds both again and inserts none. The topic must hold what the
    table holds, each alert once, whichever way each batch published."""
    topic, tally = new_topic("alerts"), Tally()
    write, table = silent_fleet_writer(spark, config, topic, tmp_path, tally)
    for batch_id, rows in enumerate([*FIRST_BATCHES, [("d", "d2", 21.0, at(11))]]):
        write(spark.createDataFrame(rows, READINGS), batch_id)

    assert [tally.batch("alerts", b).get("alerts") for b in range(3)] == [1, 1, 0]
    stored = to_kafka_records(spark.read.format("delta").load(table).drop("detected_in"), F.col("alert_id"))
    published = [(r.key.decode(), r.value.decode()) for r in topic_records(config, topic)]
    assert sorted(published) == sorted((r.key, r.value) for r in stored.collect())
    assert len(published) == 2


def test_a_batch_that_finds_nothing_commits_nothing_unless_it_may_be_a_replay(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """d1 reports in batches 0 and 1: nothing to find. Batch 0, the query's first, still runs its
    MERGE (it creates the table); batch 1 commits nothing. In batch 2, d2 reports 7 minutes after d1:
    d1 is silent. The query then restarts and replays batch 2 over silver that now holds a later
    reading of d1, so the replay finds nothing, yet it must publish the alert its first attempt
    stored (here it counts it; the topic's marks keep the record single)."""
    topic, tally = new_topic("alerts"), Tally()
    d1_before = [("s1", "d1", 20.0, at(-1))]
    write, table = silent_fleet_writer(spark, config, topic, tmp_path, tally, silver_rows=d1_before)
    batches = [[("a", "d1", 20.0, at(0))], [("b", "d1", 20.5, at(1))], [("c", "d2", 21.0, at(8))]]
    for batch_id, rows in enumerate(batches):
        write(spark.createDataFrame(rows, READINGS), batch_id)

    assert [tally.batch("alerts", b).get("alerts") for b in range(3)] == [0, 0, 1]
    history = DeltaTable.forPath(spark, table).history().select("version", "operation").collect()
    assert sorted((h.version, h.operation) for h in history) == [(0, "WRITE"), (1, "MERGE")]

    replayed = Tally()
    d1_later = [*d1_before, ("s2", "d1", 20.7, at(7.5))]
    restarted, _ = silent_fleet_writer(spark, config, topic, tmp_path, replayed, silver_rows=d1_later)
    restarted(spark.createDataFrame(batches[2], READINGS), 2)

    assert replayed.batch("alerts", 2).get("alerts") == 1
    assert len(DeltaTable.forPath(spark, table).history().collect()) == 2
    published = [r.key.decode() for r in topic_records(config, topic)]
    assert published == ["silent|d1|2026-03-01T12:01:00.000Z"]
