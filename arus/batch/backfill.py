"""Backfill: recompute silver and gold in batch with the streaming job's own stages, and write them.

Bronze rows (from arus.batch.sources) go through arus.core.stages.bronze_to_silver and
silver_to_gold, exactly as the streaming job runs them.

Writes are idempotent: silver is upserted by the dedup field, gold by (keys, window_start), and
only rows that differ are written, so running the same range again commits nothing. `replace`
also deletes rows inside the recomputed span that the recompute no longer produces. An offset or
timestamp range is taken as all the data of the windows it touches: give one that covers whole
windows, or bound it with since/until, which keep only the windows entirely inside them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.batch.sources import POSITION, BatchInput, read_input
from arus.config import AggregateConfig, CleanConfig, Config, StreamConfig
from arus.core.clean import with_schema
from arus.core.stages import bronze_to_silver, silver_to_gold
from arus.core.transforms import schema_from_ddl
from arus.io.delta import DEFAULT_TOLERANCE, Span, UpsertResult, upsert_changes, with_changed_rows
from arus.io.lake import is_table, table_location
from arus.io.sinks import read_devices


@dataclass(frozen=True)
class Recompute:
    """What a batch recompute runs: the streaming jobs' stages with these settings (`clean`, [clean],
    as the main job and the pipeline apply it), over the event times [since, until), None unbounded."""

    stream: StreamConfig
    job: AggregateConfig
    slide: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    clean: CleanConfig | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, config: Config) -> Recompute:
        """The config's stages with the flags input_parser adds (--slide, --since, --until)."""
        return cls(config.stream, config.aggregate, args.slide, args.since, args.until, config.clean)


@dataclass(frozen=True)
class BackfillSettings:
    recompute: Recompute
    source: BatchInput
    gold_path: str
    silver_path: str | None  # None: gold only
    deadletter_path: str | None
    replace: bool
    dry_run: bool
    retries: int
    devices: bool = False
    tolerance: float = DEFAULT_TOLERANCE


# --- pure transforms ----------------------------------------------------------------------------------


def with_event_time_range(
    silver: DataFrame, event_time: str, since: datetime | None, until: datetime | None
) -> DataFrame:
    df = silver
    if since:
        df = df.where(F.col(event_time) >= F.lit(since))
    if until:
        df = df.where(F.col(event_time) < F.lit(until))
    return df


def with_complete_windows(gold: DataFrame, since: datetime | None, until: datetime | None) -> DataFrame:
    """The windows entirely inside [since, until): the others saw only part of their events."""
    df = gold
    if since:
        df = df.where(F.col("window_start") >= F.lit(since))
    if until:
        df = df.where(F.col("window_end") <= F.lit(until))
    return df


def recompute(
    bronze: DataFrame, schema: T.StructType, plan: Recompute, devices: DataFrame | None = None
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Bronze -> (silver, gold, dead letters) through the streaming jobs' own stages, as `plan` says.

    `devices`, the device dimension, enriches silver as the pipeline's clean stage does (it changes
    no aggregate).
    """
    stream, since, until = plan.stream, plan.since, plan.until
    silver, dead = bronze_to_silver(bronze, schema, stream, devices=devices, clean=plan.clean)
    silver = with_event_time_range(silver, stream.event_time_field, since, until)
    gold = with_complete_windows(silver_to_gold(silver, stream, plan.job, plan.slide), since, until)
    return silver, gold, dead


# --- write ------------------------------------------------------------------------------------------


def span_of(df: DataFrame, column: str, since: datetime | None, until: datetime | None) -> Span | None:
    """The [start, end) a replacing write owns: the given bounds, else the data's own extent."""
    extent = df.agg(F.min(column).alias("lo"), F.max(column).alias("hi")).collect()[0]
    if extent["lo"] is None:
        return None
    start = F.lit(since) if since else F.lit(extent["lo"])
    end = F.lit(until) if until else F.lit(extent["hi"]) + F.expr("INTERVAL 1 MICROSECOND")
    return Span(column, start, end)


def write_table(
    df: DataFrame, path: str, keys: Sequence[str], settings: BackfillSettings, span_column: str
) -> UpsertResult:
    replaces = settings.replace and span_column != ""
    span = span_of(df, span_column, settings.recompute.since, settings.recompute.until) if replaces else None
    return upsert_changes(df, path, keys, span, settings.retries, tolerance=settings.tolerance)


def count_changes(spark: SparkSession, df: DataFrame, path: str, tolerance: float) -> int:
    if not is_table(path):
        return df.count()
    return with_changed_rows(df, spark.read.format("delta").load(path), tolerance).count()


def describe(result: UpsertResult) -> str:
    if not result.changed:
        return "unchanged"
    return f"{result.upserted} rows written, {result.deleted} deleted, now version {result.version}"


def backfill(spark: SparkSession, config: Config, settings: BackfillSettings) -> dict[str, UpsertResult]:
    """Recompute and write (or, dry, count) each target table, printing what each one got."""
    stream, job = settings.recompute.stream, settings.recompute.job
    schema = schema_from_ddl(config.schema(stream.schema))
    bronze = read_input(spark, config.kafka, settings.source, schema).persist()
    try:
        devices = None
        if settings.devices:
            pipeline = config.pipeline
            table = table_location(config, pipeline.device_table) if pipeline.device_table else ""
            ddl = config.schema(pipeline.device_schema)
            devices = read_devices(spark, config.kafka, table, stream.devices_topic, ddl, stream.device_key)
        silver, gold, dead = recompute(bronze, schema, settings.recompute, devices)
        if devices is not None:
            silver = with_schema(silver, schema_from_ddl(config.schema(config.pipeline.clean_schema)))
        silver, gold = silver.persist(), gold.persist()
        reasons = {r["error"]: r["n"] for r in dead.groupBy("error").agg(F.count("*").alias("n")).collect()}
        print(
            f"backfill: {bronze.count()} records from {settings.source.kind} {settings.source.location}: "
            f"{silver.count()} events, {sum(reasons.values())} dead letters, {gold.count()} windows"
        )
        for reason, n in sorted(reasons.items()):
            print(f"  dead letter: {n} x {reason}")
        silver_keys = [stream.id_field] if stream.id_field else silver.columns
        targets: list[tuple[str, DataFrame, str, Sequence[str], str]] = [
            ("gold", gold, settings.gold_path, [*job.keys, "window_start"], "window_start")
        ]
        if settings.silver_path:
            targets.append(("silver", silver, settings.silver_path, silver_keys, stream.event_time_field))
        if settings.deadletter_path:
            # Dead letters are only ever added: a record that parses now was still bad when it came.
            targets.append(("dead letters", dead, settings.deadletter_path, POSITION, ""))
        results: dict[str, UpsertResult] = {}
        for name, df, path, keys, span_column in targets:
            if settings.dry_run:
                changes = count_changes(spark, df, path, settings.tolerance)
                print(f"  {name} -> {path}: {changes} rows would change (dry run)")
                continue
            results[name] = write_table(df, path, keys, settings, span_column)
            print(f"  {name} -> {path}: {describe(results[name])}")
        silver.unpersist()
        gold.unpersist()
        return results
    finally:
        bronze.unpersist()
