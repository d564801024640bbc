"""Delta maintenance and time travel on real Delta tables, and maintenance while a stream writes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import aggregate, history, maintain, reconcile
from batch_support import create_topic, delta, events, land_bronze, send_events
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from arus.config import Config
from arus.io import lake
from arus.io.delta import AUTO_COMPACTION, file_counts, table_properties
from arus.runtime.queries import start_aggregate_query

pytestmark = pytest.mark.integration

SCHEMA = "device_id STRING, at TIMESTAMP, value DOUBLE"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rows(first: int, n: int) -> list[tuple[str, datetime, float]]:
    return [(f"dev-{i % 3}", T0 + timedelta(seconds=i), i / 4) for i in range(first, first + n)]


def small_files(spark: SparkSession, path: Path, parts: int) -> DataFrame:
    """A table written by `parts` small appends: one data file each."""
    for part in range(parts):
        spark.createDataFrame(rows(part * 5, 5), SCHEMA).coalesce(1).write.format("delta").mode(
            "append"
        ).save(str(path))
    table = delta(spark, path)
    return spark.createDataFrame(table.collect(), table.schema)  # a copy that outlives VACUUM


def test_maintenance_lowers_the_file_count_and_keeps_the_data(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "readings"
    before = small_files(spark, path, parts=6)
    counts = file_counts(spark, str(path))
    assert (counts.active, counts.on_disk) == (6, 6)

    assert maintain.main([str(path), "--retain-hours", "0", "--unsafe-retention"]) == 0

    after = file_counts(spark, str(path))
    assert (after.active, after.on_disk) == (1, 1)
    assert_df_equality(delta(spark, path), before, ignore_row_order=True)
    assert AUTO_COMPACTION.items() <= table_properties(spark, str(path)).items()
    out = capsys.readouterr().out
    assert "files in version    6 -> 1" in out and "on disk    6 -> 1" in out
    operations = [r["operation"] for r in DeltaTable.forPath(spark, str(path)).history().collect()]
    assert operations[:4] == ["VACUUM END", "VACUUM START", "OPTIMIZE", "SET TBLPROPERTIES"]

    with pytest.raises(SystemExit):  # a short retention is refused unless asked for explicitly
        maintain.parse_args([str(path), "--retain-hours", "1"])


def test_history_and_reads_as_of_a_version_and_a_time(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "readings"
    spark.createDataFrame(rows(0, 3), SCHEMA).write.format("delta").save(str(path))
    spark.createDataFrame(rows(3, 2), SCHEMA).write.format("delta").mode("append").save(str(path))
    DeltaTable.forPath(spark, str(path)).delete("value = 0.0")

    log = lake.history(path)
    assert list(log["version"]) == [2, 1, 0]
    assert list(log["operation"]) == ["DELETE", "WRITE", "WRITE"]
    expected = pd.DataFrame(rows(0, 3), columns=["device_id", "at", "value"])
    version0 = lake.read_table(path, version=0)
    assert version0 is not None
    pd.testing.assert_frame_equal(
        version0.sort_values("value").reset_index(drop=True), expected, check_dtype=False
    )
    # Between the commits of versions 1 and 2: time travel goes by when each commit was written.
    stamps = log.set_index("version")["timestamp"]
    when = (stamps[1] + (stamps[2] - stamps[1]) / 2).to_pydatetime()
    as_of = lake.read_table(path, as_of=when)
    assert as_of is not None and sorted(as_of["value"]) == [r[2] for r in rows(0, 5)]

    assert history.main([str(path), "--version", "0"]) == 0
    assert "as of version 0: 3 rows" in capsys.readouterr().out
    assert history.main([str(path), "--timestamp", when.isoformat()]) == 0
    assert "5 rows" in capsys.readouterr().out.split("as of")[1]


def test_maintenance_while_the_stream_writes_breaks_neither(
    spark: SparkSession, config: Config, kafka: str, tmp_path: Path
) -> None:
    topic = create_topic(config, "maint", partitions=2)
    every = events(devices=3, start=T0, count=16, interval_s=15.0, seed=3)
    gold = str(tmp_path / "gold")
    args = aggregate.parse_args(
        [
            "--input-topic", topic,
            "--output-topic", create_topic(config, "maint-out", partitions=1),
            "--deadletter-topic", create_topic(config, "maint-dead", partitions=1),
            "--table", gold,
            "--deadletter-table", str(tmp_path / "deadletter"),
            "--checkpoint", str(tmp_path / "checkpoint"),
            "--trigger", "1 second",
        ]
    )  # fmt: skip
    queries = [start_aggregate_query(spark, config.kafka, aggregate.settings_from(args, config))]
    outcomes: list[int] = []
    try:
        send_events(config, topic, every[: len(every) // 2])
        while not lake.is_table(gold) or DeltaTable.forPath(spark, gold).history(1).count() == 0:
            time.sleep(0.5)
        # The second half arrives while maintenance compacts the table the stream merges into.
        sender = threading.Thread(target=send_events, args=(config, topic, every[len(every) // 2 :]))
        sender.start()
        for _ in range(2):
            outcomes.append(maintain.main([gold, "--no-vacuum"]))
        sender.join()
        for query in queries:
            query.processAllAvailable()
    finally:
        for query in queries:
            query.stop()
    assert all(q.exception() is None for q in queries)
    assert outcomes == [0, 0]

    bronze = tmp_path / "bronze"
    land_bronze(spark, config, topic, bronze)
    checkpoint = str(tmp_path / "checkpoint" / "aggregates")
    args = ["--bronze-table", str(bronze), "--gold-table", gold, "--checkpoint", checkpoint]
    assert reconcile.main([*args, "--late-table", str(tmp_path / "no-late-table")]) == 0
