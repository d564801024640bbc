"""Delta writes and upkeep that batch jobs share: change-only upserts, conflict retries, file counts.

A backfill or a maintenance run may commit while a streaming query writes the same table. Delta's
optimistic concurrency makes one of two overlapping commits fail with a concurrent-modification
error; every writer here retries such a failure, which is safe because each of these writes is
idempotent (the same upsert or compaction again gives the same table).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.io.lake import is_table

R = TypeVar("R")

# Delta's own names for the table properties that compact small files as they are written (OSS
# Delta supports both since 3.1); maintenance sets them once per table.
AUTO_COMPACTION = {
    "delta.autoOptimize.optimizeWrite": "true",
    "delta.autoOptimize.autoCompact": "true",
}
ACTION = "_arus_action"
DEFAULT_TOLERANCE = 1e-9  # [batch] tolerance
# delta-spark raises each kind of lost commit race as its own class, none a subclass of another.
CONFLICTS = (
    DeltaConcurrentModificationException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentTransactionException,
)


class ConflictRetriesExhausted(RuntimeError):
    """A write kept losing to concurrent commits."""


def retry_on_conflict(
    action: Callable[[], R],
    attempts: int = 5,
    backoff_s: float = 0.5,
    on_retry: Callable[[int, Exception], None] | None = None,
) -> R:
    """Run `action`, again after a short pause whenever a concurrent Delta commit wins the race."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CONFLICTS as exc:
            if attempt == attempts:
                raise ConflictRetriesExhausted(
                    f"gave up after {attempts} conflicting attempts: {exc}"
                ) from exc
            (on_retry or _say_retry)(attempt, exc)
            time.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")


def _say_retry(attempt: int, exc: Exception) -> None:
    print(
        f"delta: lost a commit race ({type(exc).__name__}, attempt {attempt}); retrying",
        file=sys.stderr,
        flush=True,
    )


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    deleted: int
    version: int | None  # the table version written, None when nothing changed

    @property
    def changed(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class Span:
    """Rows of a time column in [start, end): the part of a table a replacing write owns."""

    column: str
    start: Column
    end: Column

    def contains(self, df: DataFrame) -> Column:
        return (df[self.column] >= self.start) & (df[self.column] < self.end)


def close(a: Column, b: Column, tolerance: float) -> Column:
    """Floats equal up to a relative tolerance (an absolute one near zero), nulls equal to nulls."""
    near = F.abs(a - b) <= F.lit(tolerance) * F.greatest(F.abs(a), F.abs(b), F.lit(1.0))
    return (a.isNull() & b.isNull()) | a.eqNullSafe(b) | F.coalesce(near, F.lit(False))


def with_changed_rows(
    source: DataFrame, target: DataFrame, tolerance: float = DEFAULT_TOLERANCE
) -> DataFrame:
    """The source rows that the target does not hold: null-safe equal on every source column,
    floats within `tolerance`.

    A recompute adds floats in whatever order a shuffle delivers them, so its means and deviations
    can differ from the last run's (or the stream's) in the last bits; that is not a change.
    """
    floats = {f.name for f in source.schema.fields if isinstance(f.dataType, T.DoubleType | T.FloatType)}
    same = [
        close(source[c], target[c], tolerance) if c in floats else source[c].eqNullSafe(target[c])
        for c in source.columns
    ]
    return source.join(target, same, "left_anti")


def with_stale_keys(target: DataFrame, source: DataFrame, keys: Sequence[str], span: Span) -> DataFrame:
    """Keys of target rows inside `span` that the source no longer has.  # *keys"""
    owned = target.where(span.contains(target))
    match = [owned[k].eqNullSafe(source[k]) for k in keys]
    return owned.join(source, match, "left_anti").select(*keys)


def upsert_changes(
    df: DataFrame,
    path: str,
    keys: Sequence[str],
    span: Span | None = None,
    retries: int = 5,
    properties: dict[str, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> UpsertResult:
    """Make the table at `path` hold `df`'s rows by `keys`, committing only what differs.

    Rows already present with equal values are not rewritten, so re-running the same write adds no
    files and no version. With `span`, target rows inside it that `df` lacks are deleted as well
    (a replace of that part of the table). The table is created on first use.
    """
    spark = df.sparkSession
    if not is_table(path):
        return _create(df, path, properties or {})

    def attempt() -> UpsertResult:
        target = spark.read.format("delta").load(path)
        changed = with_changed_rows(df, target, tolerance).withColumn(ACTION, F.lit("upsert"))
        source = changed
        if span is not None:
            stale = with_stale_keys(target, df, keys, span).withColumn(ACTION, F.lit("delete"))
            source = changed.unionByName(stale, allowMissingColumns=True)
        source = source.persist()
        try:
            counts = {
                r[ACTION]: r["n"] for r in source.groupBy(ACTION).agg(F.count("*").alias("n")).collect()
            }
            if not counts:
                return UpsertResult(0, 0, None)
            _merge(spark, source, path, keys, df.columns)
        finally:
            source.unpersist()
        return UpsertResult(counts.get("upsert", 0), counts.get("delete", 0), latest_version(spark, path))

    return retry_on_conflict(attempt, attempts=retries)


def _create(df: DataFrame, path: str, properties: dict[str, str]) -> UpsertResult:
    writer = df.write.format("delta").mode("errorifexists")
    for key, value in properties.items():
        writer = writer.option(key, value)
    writer.save(path)
    spark = df.sparkSession
    rows = spark.read.format("delta").load(path).count()
    return UpsertResult(rows, 0, latest_version(spark, path))


def _merge(
    spark: SparkSession, source: DataFrame, path: str, keys: Sequence[str], columns: list[str]
) -> None:
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    values: dict[str, str | Column] = {f"`{c}`": f"s.`{c}`" for c in columns}
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), condition)
        .whenMatchedDelete(f"s.{ACTION} = 'delete'")
        .whenMatchedUpdate(f"s.{ACTION} = 'upsert'", values)
        .whenNotMatchedInsert(f"s.{ACTION} = 'upsert'", values)
        .execute()
    )


def latest_version(spark: SparkSession, path: str) -> int:
    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


@dataclass(frozen=True)
class FileCounts:
    active: int  # data files in the current snapshot
    on_disk: int  # data files in the folder, including ones only old versions use
    bytes_active: int


def file_counts(spark: SparkSession, path: str) -> FileCounts:
    detail = DeltaTable.forPath(spark, path).detail().collect()[0]
    return FileCounts(int(detail["numFiles"]), data_files_on_disk(path), int(detail["sizeInBytes"]))


def data_files_on_disk(path: str) -> int:
    root = Path(path)
    return sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.relative_to(root).parts)


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    return dict(DeltaTable.forPath(spark, path).detail().collect()[0]["properties"] or {})
