"""The gold MERGE reads only the files a batch can touch, and still upserts exactly (issue 12).

A gold table written as one file per day; a batch of the last day's windows (one update, one new
window) is merged the way the aggregate job merges it, with the other days' files moved away: the
merge succeeds only if Delta skips them by their statistics (a file it opens must be there). They
are put back, and the whole table is compared with a dict upsert of the same rows.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.io.sinks import StateWarmer, create_with_rows, merge_into_delta
from arus.runtime.writers import first_window

GOLD = T.StructType(
    [
        T.StructField("device_id", T.StringType()),
        T.StructField("window_start", T.TimestampType()),
        T.StructField("count", T.LongType()),
    ]
)
DAYS = 4
START = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = ["device_id", "window_start"]


def test_merge_skips_files_before_the_batch_and_upserts_exactly(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "gold")
    rows = [
        (d, START + timedelta(days=n, minutes=m), 1)
        for n in range(DAYS)
        for d in ("a", "b")
        for m in range(3)
    ]
    table = {(d, w): c for d, w, c in rows}
    # One file per day, as a stream's batches write them.
    spark.createDataFrame(rows, GOLD).repartitionByRange(DAYS, "window_start").write.format("delta").save(
        path
    )
    last = START + timedelta(days=DAYS - 1)
    earlier = {
        Path(urlparse(r["file"]).path)
        for r in spark.read.format("delta")
        .load(path)
        .where(F.col("window_start") < last)
        .select(F.input_file_name().alias("file"))
        .collect()
    }
    assert len(earlier) == DAYS - 1
    aside = tmp_path / "aside"
    aside.mkdir()
    for file in earlier:
        shutil.move(file, aside / file.name)

    batch_rows = [("a", last + timedelta(minutes=2), 7), ("c", last + timedelta(minutes=5), 1)]
    batch = spark.createDataFrame(batch_rows, GOLD).persist()
    try:
        since = first_window(batch)
        assert since == ("window_start", last + timedelta(minutes=2))
        merge_into_delta(batch, path, KEYS, "test-gold", 0, since=since)
    finally:
        batch.unpersist()
    for file in earlier:
        shutil.move(aside / file.name, file)

    table |= {(d, w): c for d, w, c in batch_rows}
    metrics = DeltaTable.forPath(spark, path).history(1).collect()[0]["operationMetrics"]
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"]) == ("1", "1")
    assert_table(spark, path, [(d, w, c) for (d, w), c in table.items()])


def test_the_first_upsert_creates_the_table_and_a_replay_of_it_is_skipped(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "gold")
    first = [("a", START, 2), ("b", START, 1)]
    # No MERGE ran, so none reports what it inserted.
    assert merge_into_delta(spark.createDataFrame(first, GOLD), path, KEYS, "test-gold", 0) is None
    history = DeltaTable.forPath(spark, path).history().collect()
    # One version: the rows written as the table's creation, no MERGE.
    assert [(h["version"], h["operation"]) for h in history] == [(0, "WRITE")]

    # Batch 0 replayed (as after a crash between the write and the checkpoint's commit) with other
    # figures: skipped by its transaction id, as a replayed MERGE is.
    replay = spark.createDataFrame([("a", START, 99)], GOLD)
    assert merge_into_delta(replay, path, KEYS, "test-gold", 0) is None
    assert DeltaTable.forPath(spark, path).history().count() == 1

    rows = spark.createDataFrame([("a", START, 5), ("c", START, 1)], GOLD)
    assert merge_into_delta(rows, path, KEYS, "test-gold", 1) == 1  # c; a updated
    assert_table(spark, path, [("a", START, 5), ("b", START, 1), ("c", START, 1)])


def test_an_insert_only_merge_reports_the_rows_it_inserted_and_a_replay_none(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "alerts")
    spark.createDataFrame([("a", START, 1)], GOLD).write.format("delta").save(path)
    rows = spark.createDataFrame([("a", START, 7), ("b", START, 2), ("c", START, 3)], GOLD)
    assert merge_into_delta(rows, path, KEYS, "test-alerts", 0, update=False) == 2
    assert merge_into_delta(rows, path, KEYS, "test-alerts", 0, update=False) is None
    assert merge_into_delta(rows, path, KEYS, "test-alerts", 1, update=False) == 0
    assert_table(spark, path, [("a", START, 1), ("b", START, 2), ("c", START, 3)])


def test_creating_a_table_another_writer_created_first_leaves_it_to_the_merge(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "gold")
    theirs = spark.createDataFrame([("a", START, 1)], GOLD)
    theirs.write.format("delta").save(path)
    assert not create_with_rows(spark.createDataFrame([("a", START, 7)], GOLD), path, "test-gold", 0)
    assert_df_equality(spark.read.format("delta").load(path), theirs, ignore_nullable=True)


def assert_table(spark: SparkSession, path: str, rows: list[tuple[str, datetime, int]]) -> None:
    expected = spark.createDataFrame(rows, GOLD)
    actual = spark.read.format("delta").load(path)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def merge_jobs(spark: SparkSession, path: str, rows: list[tuple[str, datetime, int]], batch_id: int) -> int:
    """The Spark jobs one MERGE of `rows` into `path` runs."""
    sc = spark.sparkContext
    group = f"merge-{batch_id}"
    sc.setJobGroup(group, group)
    try:
        merge_into_delta(spark.createDataFrame(rows, GOLD), path, KEYS, "t", batch_id)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    return len(sc.statusTracker().getJobIdsForGroup(group))


def test_a_warmed_table_state_takes_its_rebuild_out_of_the_next_merge(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "gold")
    batches = [[(d, START + timedelta(minutes=n), n) for d in ("a", "b")] for n in range(4)]
    create_with_rows(spark.createDataFrame(batches[0], GOLD), path, "t", 0)
    merge_jobs(spark, path, batches[1], 1)
    # Each MERGE commits a version whose state the next one rebuilds, unless it was built ahead.
    cold = merge_jobs(spark, path, batches[2], 2)
    warmer = StateWarmer(path)
    warmer.warm(spark)
    warmer.wait()
    warm = merge_jobs(spark, path, batches[3], 3)
    assert warm < cold
    expected = spark.createDataFrame([row for batch in batches for row in batch], GOLD)
    assert_df_equality(
        spark.read.format("delta").load(path), expected, ignore_row_order=True, ignore_nullable=True
    )
