"""Readers and writers: the only place jobs touch Kafka and Delta.

Writers take a static DataFrame, so the same function serves a batch job and, through
`foreachBatch`, a streaming query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession

from arus.config import KafkaConfig
from arus.core.clean import parse_device_dimension
from arus.core.transforms import schema_from_ddl
from arus.io.delta import CONFLICTS, retry_on_conflict
from arus.io.lake import is_table
from arus.io.marks import last_batch, mark

# Delta's idempotent DML: a MERGE under an (app id, version) it has committed before is skipped.
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


def read_kafka_stream(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
    fail_on_data_loss: bool = True,
) -> DataFrame:
    """A streaming read of `topic`.  # key, value, topic, partition, offset, timestamp, timestampType"""
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_read_options())
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def read_kafka_batch(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: str = "earliest",
    ending_offsets: str = "latest",
) -> DataFrame:
    """A bounded read of `topic` (offsets as Spark's JSON, or earliest/latest)."""
    return (
        spark.read.format("kafka")
        .options(**kafka.spark_read_options())
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("endingOffsets", ending_offsets)
        .load()
    )


def read_devices(
    spark: SparkSession, kafka: KafkaConfig, table: str, topic: str, ddl: str, key: str
) -> DataFrame:
    """The device dimension, one row per device `key`: the Delta `table` if given, else the compacted
    `topic` parsed with the schema `ddl`. The pipeline's clean stage and backfill both read it here.

    Static, so a stream-static join reads it afresh for every micro-batch.
    """
    if table:
        return spark.read.format("delta").load(table)
    return parse_device_dimension(read_kafka_batch(spark, kafka, topic), schema_from_ddl(ddl), key)


def write_kafka(df: DataFrame, kafka: KafkaConfig, topic: str) -> None:
    """Write rows that have `key` and `value` columns to `topic` (at-least-once)."""
    df.write.format("kafka").options(**kafka.spark_options()).option("topic", topic).save()


def merge_into_delta(
    df: DataFrame,
    path: str,
    keys: Sequence[str],
    app_id: str | None = None,
    batch_id: int | None = None,
    update: bool = True,
    since: tuple[str, datetime] | None = None,
) -> int | None:
    """Upsert rows into the Delta table at `path` by `keys`, creating the table on first use; with
    `update` False, only insert the rows whose keys it does not hold yet and never change a row.
    Returns how many rows the MERGE inserted, or None when it did not run one: the table already
    held (app_id, batch_id), or the rows became the table's first version.

    Re-running the same rows changes nothing, which is what makes a replayed micro-batch safe.
    Given `app_id` and `batch_id`, a replayed batch is not even committed again: Delta records the
    merge as (txnAppId, txnVersion) and skips one it has already seen.

    Given `since` (a timestamp key and its least value in `df`, timezone-aware), the target side is
    bounded to rows at or after it: a literal bound lets Delta skip every file whose statistics end
    before it, so the merge reads the files the batch can touch, not the whole table. It matches the
    same rows, since every source row's key is at or after the bound.

    With no table at `path` yet, the rows are written as its first version instead: an upsert into
    nothing inserts every row, and a MERGE's first run in a process costs seconds more than a
    write (the cold start of a catch-up, or of a job on a new lake, pays it once).

    Delta copies a source that is not a Delta scan (spark.databricks.delta.merge.materializeSource
    = auto) even when it is persisted: with "none" Delta 4 refuses a cached source
    (DELTA_MERGE_SOURCE_CACHED_DURING_EXECUTION), and an uncached foreachBatch frame would run
    its stateful query twice. The copy is of the aggregates only, so it stays.
    """
    spark = df.sparkSession
    if not is_table(path) and create_with_rows(df, path, app_id, batch_id):
        return None
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if since is not None:
        column, least = since
        condition += f" AND t.`{column}` >= TIMESTAMP '{least.isoformat()}'"

    def merge() -> int | None:
        builder = DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), condition)
        if update:
            builder = builder.whenMatchedUpdateAll()
        # One row of counts from a MERGE that ran; none when Delta skipped a seen (app id, version).
        counts = builder.whenNotMatchedInsertAll().execute().collect()
        return int(counts[0]["num_inserted_rows"]) if counts else None

    settings = {} if app_id is None or batch_id is None else {TXN_APP_ID: app_id, TXN_VERSION: str(batch_id)}
    # A concurrent commit (maintenance compacting the table, a backfill) can win the race; the
    # merge is idempotent, so it is simply tried again on the new version.
    with session_settings(spark, settings):
        return retry_on_conflict(merge)


class StateWarmer:
    """Builds the newest state of the Delta table at `path` in the background, between two MERGEs.

    A MERGE needs the table's state rebuilt after every commit: its files, and their count and size
    for the MERGE's metrics, which open-source Delta aggregates over the whole state although the
    version's checksum holds both. Built right after a commit, the state is ready when the next
    batch merges (Delta keeps the snapshot while no one else commits): a live job builds it between
    triggers, a catch-up beside its next batch's first steps. At most one build runs at a time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._build: threading.Thread | None = None

    def warm(self, spark: SparkSession) -> None:
        if self._build is not None and self._build.is_alive():
            return
        self._build = threading.Thread(target=self._run, args=(spark,), name="arus-warm", daemon=True)
        self._build.start()

    def wait(self) -> None:
        """Until the build under way (if any) has ended."""
        if self._build is not None:
            self._build.join()

    def _run(self, spark: SparkSession) -> None:
        try:
            DeltaTable.forPath(spark, self.path).detail().collect()
        except Exception as error:
            # A build that fails (the session stopping under it) costs only its time: the next
            # MERGE rebuilds the state itself.
            logging.getLogger(__name__).debug("state of %s not built ahead: %s", self.path, error)


def create_with_rows(df: DataFrame, path: str, app_id: str | None, batch_id: int | None) -> bool:
    """Create the Delta table at `path` holding `df`'s rows, under (app_id, batch_id) when given so
    a replayed batch skips it as it skips the MERGE; False when another writer created it first."""
    try:
        delta_writer(df, "errorifexists", app_id, batch_id).save(path)
    except (AnalysisException, *CONFLICTS):
        if is_table(path):
            return False
        raise
    return True


def ensure_table(df: DataFrame, path: str) -> None:
    """Create an empty Delta table with `df`'s schema at `path` unless there is one."""
    if not is_table(path):
        df.limit(0).write.format("delta").mode("ignore").save(path)


@contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Spark settings for the duration of one write, each put back as it was."""
    before: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def append_to_delta(df: DataFrame, path: str, app_id: str, batch_id: int) -> None:
    """Append a micro-batch once: a batch the table holds already (a replay) is skipped.

    The commit carries (app_id, batch_id) as its userMetadata, and the check reads the log's newest
    commits (arus.io.marks): Delta's own txnAppId would rebuild the table's state for every append.
    """
    if last_batch(path, app_id) >= batch_id:
        return
    df.write.format("delta").mode("append").option("userMetadata", mark(app_id, batch_id)).save(path)


def delta_writer(df: DataFrame, mode: str, app_id: str | None, batch_id: int | None) -> DataFrameWriter:
    """A Delta write of `df` in `mode`, as (txnAppId, txnVersion) = (app_id, batch_id) when given."""
    writer = df.write.format("delta").mode(mode)
    if app_id is not None and batch_id is not None:
        writer = writer.option("txnAppId", app_id).option("txnVersion", str(batch_id))
    return writer
