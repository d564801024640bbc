"""Gold growth: does the job's gold write cost more per micro-batch as the gold table grows?

    schema = gold_schema(spark, config, seed_topic, out, work)    # the table the job itself creates
    prebuild_gold(spark, schema, path, rows, keys, window_s)       # `rows` older windows, one batch write
    times = gold_write_times(spark, path, after_version)           # per commit the job made

For each size, a gold table is pre-built with `rows` synthetic windows of the gold schema (keys and
window starts the job's input never has, a day of windows per key in 2020, before the input's
event time), then the job's own query (arus.runtime.queries.start_aggregate_query) runs from a fresh
checkpoint over the same input topic in fixed-size batches, writing into it as it would into a
table it had grown itself. The write time of each batch is Delta's own figure for the commit
(operationMetrics executionTimeMs in DESCRIBE HISTORY, recorded for MERGE); the foreachBatch time
(addBatch in the streaming progress, the whole writer) is kept beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from arus.bench.spark_ladder import scratch_query
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StringType, StructType, TimestampType

from arus.config import Config
from arus.runtime.queries import start_aggregate_query

KEYS_PER_TABLE = 1000  # synthetic keys; a table of n rows holds n / 1000 windows of each
ORIGIN_S = 1_577_836_800  # 2020-01-01T00:00:00Z, before any benchmark input (2024)


def run_job(
    spark: SparkSession, config: Config, topic: str, out: str, work: Path, per_trigger: int, name: str
) -> Any:
    """The job's query over `topic` to its end, gold at work/gold, checkpoint work/<name>."""
    query = scratch_query(config, topic, out, work, max_offsets_per_trigger=per_trigger)
    running = start_aggregate_query(spark, config.kafka, replace(query, checkpoint=str(work / name)))
    running.awaitTermination()
    if running.exception():
        raise RuntimeError(f"gold: the job's query failed: {running.exception()}")
    return running


def gold_schema(spark: SparkSession, config: Config, topic: str, out: str, work: Path) -> StructType:
    """The gold table's schema as the job writes it (one short run on `topic`)."""
    run_job(spark, config, topic, out, work, 1_000_000, "seed")
    return spark.read.format("delta").load(str(work / "gold")).schema


def synthetic_gold(
    spark: SparkSession, schema: StructType, rows: int, keys: Sequence[str], window_s: int
) -> DataFrame:
    """`rows` gold rows of `schema`: KEYS_PER_TABLE keys x consecutive windows from ORIGIN_S."""
    n = F.col("id")
    start = F.lit(ORIGIN_S) + (n / KEYS_PER_TABLE).cast("long") * window_s
    columns: list[Column] = []
    for field in schema.fields:
        if field.name in keys:
            value = F.concat(F.lit("old-"), (n % KEYS_PER_TABLE).cast("string"))
        elif field.name == "window_start":
            value = F.timestamp_seconds(start)
        elif field.name == "window_end":
            value = F.timestamp_seconds(start + window_s)
        elif isinstance(field.dataType, NumericType):
            value = n % 97 + 1
        elif isinstance(field.dataType, StringType):
            value = F.lit("synthetic")
        elif isinstance(field.dataType, TimestampType):
            value = F.timestamp_seconds(start)
        else:
            value = F.lit(None)
        columns.append(value.cast(field.dataType).alias(field.name))
    return spark.range(rows).select(*columns)


def prebuild_gold(
    spark: SparkSession, schema: StructType, path: Path, rows: int, keys: Sequence[str], window_s: int
) -> int:
    """Write the synthetic rows as a new Delta table at `path`; its version after the write."""
    synthetic_gold(spark, schema, rows, keys, window_s).write.format("delta").mode("append").save(str(path))
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"])  # type: ignore[index]


def gold_write_times(spark: SparkSession, path: Path, after: int) -> list[dict[str, Any]]:
    """Each commit after version `after`: its operation and Delta's execution time, oldest first."""
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where(F.col("version") > after).collect()
    return commit_times([(r["version"], r["operation"], dict(r["operationMetrics"] or {})) for r in history])


def commit_times(history: Sequence[tuple[int, str, dict[str, str]]]) -> list[dict[str, Any]]:
    """(version, operation, metrics) rows -> per commit: version, operation, execution ms, rows out."""
    out = []
    for version, operation, metrics in sorted(history):
        ms = metrics.get("executionTimeMs")
        rows = metrics.get("numTargetRowsInserted") or metrics.get("numOutputRows")
        out.append(
            {
                "version": version,
                "operation": operation,
                "execution_ms": float(ms) if ms is not None else None,
                "rows_written": int(rows) if rows is not None else None,
            }
        )
    return out


def add_batch_ms(progress: Sequence[Any]) -> list[float]:
    """The foreachBatch time (the whole writer) of each data batch, from a query's progress."""
    return [float(p["durationMs"].get("addBatch", 0)) for p in progress if p["numInputRows"] > 0]


def flatness(medians: dict[int, float | None]) -> float | None:
    """max / min of the per-size medians (1.0 is perfectly flat); None with fewer than two."""
    values = [v for v in medians.values() if v]
    return max(values) / min(values) if len(values) >= 2 else None


def median_after_first(values: Sequence[float | None]) -> float | None:
    """The median leaving out a fresh query's first batch (no watermark yet to bound its merge)."""
    kept = [v for v in values[1:] if v is not None]
    return statistics.median(kept) if kept else None


def both_ways(sizes: Sequence[int]) -> list[int]:
    """Each size twice, smallest to largest and back: the JVM keeps warming up over the section, so
    one ascending pass would charge its warm-up to the small tables."""
    return [*sizes, *reversed(sizes)]


def write_ms(run: dict[str, Any]) -> list[float | None]:
    """Delta's execution time of each gold commit of one run."""
    return [c["execution_ms"] for c in run["commits"]]


def size_point(rows: int, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One gold size's figures: the lower of its runs' medians, each run without its first batch.
    Warm-up and a busy box only ever add time, so the lower median is the table's own cost."""
    writes = [m for m in (median_after_first(write_ms(run)) for run in runs) if m is not None]
    adds = [m for m in (median_after_first(run["add_batch_ms"]) for run in runs) if m is not None]
    return {
        "gold_rows": rows,
        "runs": list(runs),
        "write_ms_median": min(writes) if writes else None,
        "add_batch_ms_median": min(adds) if adds else None,
    }
