"""Backfill: recompute silver and gold in batch with the streaming job's own stage functions.

    spark-submit jobs/backfill.py                                   # all of bronze -> silver, gold
    spark-submit jobs/backfill.py --since 2026-03-01T00:00Z --until 2026-03-02T00:00Z
    spark-submit jobs/backfill.py --source kafka --topic iot.readings \\
        --starting-offsets '{"iot.readings":{"0":1200,"1":1180,"2":1210}}' --ending-offsets latest
    spark-submit jobs/backfill.py --source kafka --starting-timestamp 2026-03-01T12:00:00Z \\
        --ending-timestamp 2026-03-01T13:00:00Z
    spark-submit jobs/backfill.py --source file --path events.jsonl      # or a .csv with a header
    spark-submit jobs/backfill.py --dry-run                          # count what would change

Sources, all brought to bronze's shape (topic, partition, offset, timestamp, key, value):
the bronze Delta table, a bounded range of a Kafka topic (offsets or record timestamps, end
exclusive), or a file (JSON Lines: each line is a record's value, as if read from Kafka; CSV with a
header: each row becomes a JSON record of the schema's fields). Then arus.core.stages.bronze_to_silver
and silver_to_gold, exactly as the streaming job runs them.

Writes are idempotent: silver is upserted by the dedup field, gold by (keys, window_start), and
only rows that differ are written, so running the same range again commits nothing. `--replace`
also deletes rows inside the recomputed span that the recompute no longer produces. An offset or
timestamp range is taken as all the data of the windows it touches: give one that covers whole
windows, or bound it with --since/--until, which keep only the windows entirely inside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.config import AggregateConfig, CleanConfig, Config, ConfigError, KafkaConfig, load_config
from arus.core.clean import parse_device_dimension, with_schema
from arus.core.stages import bronze_to_silver, silver_to_gold
from arus.core.transforms import KAFKA_COLUMNS, schema_from_ddl
from arus.io.delta import (
    Span,
    UpsertResult,
    is_delta_table,
    upsert_changes,
    with_changed_rows,
)
from arus.io.sinks import read_kafka_batch
from arus.runtime.session import build_session

APP = "arus-backfill"
NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


@dataclass(frozen=True)
class KafkaRange:
    """Which records of a topic: Spark's offsets JSON (or earliest/latest) or record timestamps."""

    starting_offsets: str = "earliest"
    ending_offsets: str = "latest"
    starting_timestamp: datetime | None = None
    ending_timestamp: datetime | None = None


@dataclass(frozen=True)
class Source:
    kind: str  # bronze | kafka | file
    location: str  # table path, topic, or file path
    range: KafkaRange = KafkaRange()
    file_format: str = ""


@dataclass(frozen=True)
class Settings:
    job: AggregateConfig
    source: Source
    slide: str | None
    since: datetime | None
    until: datetime | None
    gold_path: str
    silver_path: str | None
    deadletter_path: str | None
    replace: bool
    dry_run: bool
    retries: int
    clean: CleanConfig | None = None
    devices: bool = False
    tolerance: float = 1e-9


def parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return at.astimezone(UTC)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that pick the input, shared with jobs/reconcile.py."""
    parser.add_argument("--config", help="config file (default: $ARUS_CONFIG or conf/arus.toml)")
    parser.add_argument("--source", choices=("bronze", "kafka", "file"), default="bronze")
    parser.add_argument("--bronze-table", help="bronze table name or path (default [batch] bronze_table)")
    parser.add_argument("--topic", help="topic to read with --source kafka (default [aggregate] input_topic)")
    parser.add_argument("--path", help="file or folder to read with --source file")
    parser.add_argument("--format", choices=("json", "csv"), help="file format (default: from the extension)")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest, or Spark's offsets JSON")
    parser.add_argument(
        "--ending-offsets", default="latest", help="latest, or Spark's offsets JSON (exclusive)"
    )
    parser.add_argument(
        "--starting-timestamp", type=parse_time, help="first record timestamp, e.g. 2026-03-01T12:00Z"
    )
    parser.add_argument("--ending-timestamp", type=parse_time, help="record timestamp to stop before")
    parser.add_argument("--since", type=parse_time, help="event time: keep windows starting at or after this")
    parser.add_argument("--until", type=parse_time, help="event time: keep windows ending at or before this")
    parser.add_argument(
        "--slide", help="slide of sliding windows, as the streaming job was run (default: tumbling)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit jobs/backfill.py",
        description="Recompute silver and gold from bronze, a Kafka range or a file, idempotently.",
    )
    add_source_arguments(parser)
    parser.add_argument("--gold-table", help="gold table name or path (default [aggregate] table)")
    parser.add_argument("--silver-table", help="silver table name or path (default [batch] silver_table)")
    parser.add_argument("--no-silver", action="store_true", help="write gold only")
    parser.add_argument(
        "--devices",
        action="store_true",
        help="enrich silver with the device dimension, as the pipeline does ([pipeline] devices)",
    )
    parser.add_argument("--deadletter-table", help="also upsert the dead letters, by source position, here")
    parser.add_argument(
        "--replace", action="store_true", help="delete rows in the span that the recompute lacks"
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would change; write nothing")
    args = parser.parse_args(argv)
    check_range_arguments(parser, args)
    return args


def check_range_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    by_offsets = args.starting_offsets != "earliest" or args.ending_offsets != "latest"
    if by_offsets and (args.starting_timestamp or args.ending_timestamp):
        parser.error("give a range by offsets or by timestamps, not both")
    if args.source == "file" and not args.path:
        parser.error("--source file needs --path")
    if args.since and args.until and args.since >= args.until:
        parser.error("--since must be before --until")


def resolve_table(config: Config, name: str) -> str:
    path = Path(name)
    return str(path if path.is_absolute() else config.resolve(config.paths.lake) / name)


def source_from(args: argparse.Namespace, config: Config) -> Source:
    kafka_range = KafkaRange(
        args.starting_offsets, args.ending_offsets, args.starting_timestamp, args.ending_timestamp
    )
    if args.source == "kafka":
        return Source("kafka", args.topic or config.aggregate.input_topic, kafka_range)
    if args.source == "file":
        fmt = args.format or ("csv" if args.path.lower().endswith(".csv") else "json")
        return Source("file", args.path, file_format=fmt)
    return Source(
        "bronze", resolve_table(config, args.bronze_table or config.batch.bronze_table), kafka_range
    )


def settings_from(args: argparse.Namespace, config: Config) -> Settings:
    return Settings(
        job=config.aggregate,
        source=source_from(args, config),
        slide=args.slide,
        since=args.since,
        until=args.until,
        gold_path=resolve_table(config, args.gold_table or config.aggregate.table),
        silver_path=None
        if args.no_silver
        else resolve_table(config, args.silver_table or config.batch.silver_table),
        deadletter_path=resolve_table(config, args.deadletter_table) if args.deadletter_table else None,
        replace=args.replace,
        dry_run=args.dry_run,
        retries=config.batch.conflict_retries,
        clean=config.clean,
        devices=args.devices,
        tolerance=config.batch.tolerance,
    )


# --- read: every source as bronze rows ------------------------------------------------------------


def read_source(spark: SparkSession, kafka: KafkaConfig, source: Source, schema: T.StructType) -> DataFrame:
    """The source as bronze rows.  # topic, partition, offset, timestamp, key, value"""
    if source.kind == "kafka":
        return read_kafka_range(spark, kafka, source.location, source.range)
    if source.kind == "file":
        return read_file(spark, source.location, source.file_format, schema)
    bronze = spark.read.format("delta").load(source.location).select(*KAFKA_COLUMNS)
    return with_kafka_range(bronze, source.range)


def read_kafka_range(spark: SparkSession, kafka: KafkaConfig, topic: str, bounds: KafkaRange) -> DataFrame:
    """A bounded read of a topic.  # topic, partition, offset, timestamp, key, value"""
    reader = spark.read.format("kafka").options(**kafka.spark_options()).option("subscribe", topic)
    if bounds.starting_timestamp or bounds.ending_timestamp:
        # Past the last record, a timestamp lookup finds no offset: read to the end instead of failing.
        reader = reader.option("startingOffsetsByTimestampStrategy", "latest")
        if bounds.starting_timestamp:
            reader = reader.option("startingTimestamp", str(_ms(bounds.starting_timestamp)))
        if bounds.ending_timestamp:
            reader = reader.option("endingTimestamp", str(_ms(bounds.ending_timestamp)))
    else:
        reader = reader.option("startingOffsets", bounds.starting_offsets).option(
            "endingOffsets", bounds.ending_offsets
        )
    return reader.load().select(*KAFKA_COLUMNS)


def read_file(spark: SparkSession, path: str, file_format: str, schema: T.StructType) -> DataFrame:
    """A JSON Lines or CSV file as bronze rows; the file is the topic, the row number the offset."""
    if file_format == "csv":
        rows = csv_rows_as_values(spark.read.option("header", "true").csv(path), schema)
    else:
        rows = spark.read.text(path).select(F.col("value").cast("binary").alias("value"))
    return rows.select(
        F.lit(f"file:{path}").alias("topic"),
        F.lit(0).alias("partition"),
        F.monotonically_increasing_id().alias("offset"),
        F.lit(None).cast("timestamp").alias("timestamp"),
        F.lit(None).cast("binary").alias("key"),
        "value",
    )


def read_devices(spark: SparkSession, config: Config) -> DataFrame:
    """The device dimension as the pipeline reads it: a Delta table, or the compacted topic."""
    if config.pipeline.device_table:
        return spark.read.format("delta").load(resolve_table(config, config.pipeline.device_table))
    schema = schema_from_ddl(config.schema(config.pipeline.device_schema))
    return parse_device_dimension(
        read_kafka_batch(spark, config.kafka, config.pipeline.devices_topic), schema
    )


# --- pure transforms ----------------------------------------------------------------------------------


def csv_rows_as_values(rows: DataFrame, schema: T.StructType) -> DataFrame:
    """CSV rows (all strings) -> one JSON object per row with the schema's fields.  # value

    A numeric or boolean field is written as a JSON number or boolean when its text is one, and as
    a string otherwise, so parsing reports it as a wrong type instead of losing it. Empty cells are
    left out, as a missing field.
    """
    parts = []
    for field in schema.fields:
        if field.name not in rows.columns:
            continue
        raw = F.col(field.name)
        quoted = F.regexp_extract(F.to_json(F.array(raw)), r"^\[(.*)\]$", 1)
        literal: Column = quoted
        if isinstance(field.dataType, NUMERIC):
            literal = F.when(raw.rlike(JSON_NUMBER), raw).otherwise(quoted)
        elif isinstance(field.dataType, T.BooleanType):
            literal = F.when(F.lower(raw).isin("true", "false"), F.lower(raw)).otherwise(quoted)
        name = json.dumps(field.name)
        parts.append(F.when(raw.isNotNull() & (raw != ""), F.concat(F.lit(f"{name}:"), literal)))
    value = F.concat(F.lit("{"), F.concat_ws(",", *parts), F.lit("}"))
    return rows.select(value.cast("binary").alias("value"))


def with_kafka_range(bronze: DataFrame, bounds: KafkaRange) -> DataFrame:
    """Bronze rows inside a Kafka range, with the Kafka source's semantics (end exclusive).

    Partitions the offsets JSON does not name are not bounded; -2 means earliest, -1 latest.
    """
    df = bronze
    if bounds.starting_timestamp:
        df = df.where(F.col("timestamp") >= F.lit(bounds.starting_timestamp))
    if bounds.ending_timestamp:
        df = df.where(F.col("timestamp") < F.lit(bounds.ending_timestamp))
    start = _offset_bound(bounds.starting_offsets, skip=-2)
    if start is not None:
        df = df.where(start.isNull() | (F.col("offset") >= start))
    end = _offset_bound(bounds.ending_offsets, skip=-1)
    if end is not None:
        df = df.where(end.isNull() | (F.col("offset") < end))
    return df


def _offset_bound(offsets: str, skip: int) -> Column | None:
    if offsets in ("earliest", "latest"):
        return None
    bound: Column = F.lit(None).cast("long")
    for topic, partitions in json.loads(offsets).items():
        for partition, offset in partitions.items():
            if int(offset) == skip:
                continue
            here = (F.col("topic") == topic) & (F.col("partition") == int(partition))
            bound = F.when(here, F.lit(int(offset))).otherwise(bound)
    return bound


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
    bronze: DataFrame,
    schema: T.StructType,
    job: AggregateConfig,
    slide: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    clean: CleanConfig | None = None,
    devices: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Bronze -> (silver, gold, dead letters) through the streaming jobs' own stages.

    `clean` ([clean]) as the main job and the pipeline apply it; `devices`, the device dimension,
    enriches silver as the pipeline's clean stage does (it changes no aggregate).
    """
    silver, dead = bronze_to_silver(bronze, schema, job, devices=devices, clean=clean)
    silver = with_event_time_range(silver, job.event_time_field, since, until)
    gold = with_complete_windows(silver_to_gold(silver, job, slide), since, until)
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
    df: DataFrame, path: str, keys: Sequence[str], settings: Settings, span_column: str
) -> UpsertResult:
    replaces = settings.replace and span_column != ""
    span = span_of(df, span_column, settings.since, settings.until) if replaces else None
    return upsert_changes(df, path, keys, span, settings.retries, tolerance=settings.tolerance)


def count_changes(spark: SparkSession, df: DataFrame, path: str, tolerance: float) -> int:
    if not is_delta_table(spark, path):
        return df.count()
    return with_changed_rows(df, spark.read.format("delta").load(path), tolerance).count()


def describe(result: UpsertResult) -> str:
    if not result.changed:
        return "unchanged"
    return f"{result.upserted} rows written, {result.deleted} deleted, now version {result.version}"


def run(spark: SparkSession, config: Config, settings: Settings) -> dict[str, UpsertResult]:
    job = settings.job
    schema = schema_from_ddl(config.schema(job.schema))
    bronze = read_source(spark, config.kafka, settings.source, schema).persist()
    try:
        devices = read_devices(spark, config) if settings.devices else None
        silver, gold, dead = recompute(
            bronze, schema, job, settings.slide, settings.since, settings.until, settings.clean, devices
        )
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
        silver_keys = [job.dedup_field] if job.dedup_field else silver.columns
        targets: list[tuple[str, DataFrame, str, Sequence[str], str]] = [
            ("gold", gold, settings.gold_path, [*job.keys, "window_start"], "window_start")
        ]
        if settings.silver_path:
            targets.append(("silver", silver, settings.silver_path, silver_keys, job.event_time_field))
        if settings.deadletter_path:
            # Dead letters are only ever added: a record that parses now was still bad when it came.
            targets.append(
                ("dead letters", dead, settings.deadletter_path, ["topic", "partition", "offset"], "")
            )
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


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        settings = settings_from(args, config)
        config.schema(settings.job.schema)
    except ConfigError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    spark = build_session(APP, config.spark)
    if settings.source.kind == "bronze" and not is_delta_table(spark, settings.source.location):
        print(f"backfill: no bronze Delta table at {settings.source.location}", file=sys.stderr)
        return 2
    run(spark, config, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
