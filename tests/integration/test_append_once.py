"""A micro-batch appended to Delta lands once, however often it is replayed (arus.io.sinks).

The appends carry (app id, batch id) in their commits' userMetadata and the check reads the log
(arus.io.marks), so these run real Delta writes: replays skipped past another writer's commits and
a log checkpoint, and tables whose batches were written with Delta's own transaction ids.
"""

from __future__ import annotations

from pathlib import Path

from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from arus.io.marks import last_batch
from arus.io.sinks import append_to_delta

ROWS = T.StructType([T.StructField("app", T.StringType()), T.StructField("n", T.LongType())])


def frame(spark: SparkSession, app: str, *ns: int) -> DataFrame:
    return spark.createDataFrame([(app, n) for n in ns], ROWS)


def test_a_replayed_batch_is_skipped_past_other_writers_and_a_checkpoint(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "bronze")
    append_to_delta(frame(spark, "a", 1, 2), path, "app-a", 0)
    # Another query writes the same table 11 times: the log checkpoints at version 10.
    for batch in range(11):
        append_to_delta(frame(spark, "b", 100 + batch), path, "app-b", batch)
    assert (tmp_path / "bronze" / "_delta_log" / f"{10:020d}.checkpoint.parquet").exists()

    versions = DeltaTable.forPath(spark, path).history().count()
    append_to_delta(frame(spark, "a", 99), path, "app-a", 0)  # batch 0 replayed, other rows
    append_to_delta(frame(spark, "b", 99), path, "app-b", 7)  # an older batch of the other query
    assert DeltaTable.forPath(spark, path).history().count() == versions

    append_to_delta(frame(spark, "a", 3), path, "app-a", 1)
    expected = [("a", 1), ("a", 2), ("a", 3), *(("b", 100 + b) for b in range(11))]
    assert_df_equality(
        spark.read.format("delta").load(path),
        spark.createDataFrame(expected, ROWS),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert (last_batch(path, "app-a"), last_batch(path, "app-b"), last_batch(path, "app-c")) == (1, 10, -1)


def test_batches_written_under_deltas_own_transaction_ids_are_skipped_too(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = str(tmp_path / "silver")
    # As arus wrote its appends before the marks: Delta's (txnAppId, txnVersion).
    for batch in range(3):
        (
            frame(spark, "a", batch)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", "app-a")
            .option("txnVersion", str(batch))
            .save(path)
        )
    append_to_delta(frame(spark, "a", 99), path, "app-a", 2)
    append_to_delta(frame(spark, "a", 3), path, "app-a", 3)
    assert_df_equality(
        spark.read.format("delta").load(path),
        frame(spark, "a", 0, 1, 2, 3),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_no_table_holds_no_batch(tmp_path: Path) -> None:
    assert last_batch(tmp_path / "missing", "app-a") == -1
