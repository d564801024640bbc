"""What a batch recompute reads: the bronze table, a bounded range of a Kafka topic, or a file.

Every input is brought to bronze's shape (topic, partition, offset, timestamp, key, value), so the
streaming stages run on it unchanged. `input_parser` gives `arus backfill` and `arus reconcile`
the same flags for choosing it.

    bronze  the bronze Delta table, optionally cut to a Kafka range of its own columns
    kafka   a bounded read of a topic: offsets (Spark's JSON) or record timestamps, end exclusive
    file    JSON Lines (each line a record's value, as if read from Kafka), or CSV with a header
            (each row becomes a JSON record of the schema's fields)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.config import Config, KafkaConfig, job_parser
from arus.core.rules import aware_time
from arus.core.transforms import KAFKA_COLUMNS
from arus.io.lake import table_location
from arus.io.sinks import read_kafka_batch

NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
POSITION = ["topic", "partition", "offset"]  # a bronze row's place: the key of dead letters and late events


@dataclass(frozen=True)
class KafkaRange:
    """Which records of a topic: Spark's offsets JSON (or earliest/latest) or record timestamps."""

    starting_offsets: str = "earliest"
    ending_offsets: str = "latest"
    starting_timestamp: datetime | None = None
    ending_timestamp: datetime | None = None


@dataclass(frozen=True)
class BatchInput:
    kind: str  # bronze | kafka | file
    location: str  # table path, topic, or file path
    range: KafkaRange = KafkaRange()
    file_format: str = ""


# --- arguments --------------------------------------------------------------------------------------


def input_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags that pick the input and the event-time span (backfill, reconcile)."""
    parser = job_parser(prog, description)
    parser.add_argument("--source", choices=("bronze", "kafka", "file"), default="bronze")
    parser.add_argument("--bronze-table", help="bronze table name or path (default [batch] bronze_table)")
    parser.add_argument("--topic", help="topic to read with --source kafka (default [stream] topic)")
    parser.add_argument("--path", help="file or folder to read with --source file")
    parser.add_argument("--format", choices=("json", "csv"), help="file format (default: from the extension)")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest, or Spark's offsets JSON")
    parser.add_argument(
        "--ending-offsets", default="latest", help="latest, or Spark's offsets JSON (exclusive)"
    )
    parser.add_argument(
        "--starting-timestamp", type=aware_time, help="first record timestamp, e.g. 2026-03-01T12:00Z"
    )
    parser.add_argument("--ending-timestamp", type=aware_time, help="record timestamp to stop before")
    parser.add_argument("--since", type=aware_time, help="event time: keep windows starting at or after this")
    parser.add_argument("--until", type=aware_time, help="event time: keep windows ending at or before this")
    parser.add_argument(
        "--slide", help="slide of sliding windows, as the streaming job was run (default: tumbling)"
    )
    return parser


def parse_input_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then refuse the input flags' combinations that cannot mean anything."""
    args = parser.parse_args(argv)
    by_offsets = args.starting_offsets != "earliest" or args.ending_offsets != "latest"
    if by_offsets and (args.starting_timestamp or args.ending_timestamp):
        parser.error("give a range by offsets or by timestamps, not both")
    if args.source == "file" and not args.path:
        parser.error("--source file needs --path")
    if args.since and args.until and args.since >= args.until:
        parser.error("--since must be before --until")
    return args


def check_schema(config: Config, _settings: object) -> None:
    """A batch job's preflight (arus.runtime.job.prepare): the [stream] schema it parses records
    with is declared, or a ConfigError before Spark starts."""
    config.schema(config.stream.schema)


def input_from(args: argparse.Namespace, config: Config) -> BatchInput:
    kafka_range = KafkaRange(
        args.starting_offsets, args.ending_offsets, args.starting_timestamp, args.ending_timestamp
    )
    if args.source == "kafka":
        return BatchInput("kafka", args.topic or config.stream.topic, kafka_range)
    if args.source == "file":
        fmt = args.format or ("csv" if args.path.lower().endswith(".csv") else "json")
        return BatchInput("file", args.path, file_format=fmt)
    return BatchInput(
        "bronze", table_location(config, args.bronze_table or config.batch.bronze_table), kafka_range
    )


# --- read: every input as bronze rows ---------------------------------------------------------------


def read_input(
    spark: SparkSession, kafka: KafkaConfig, source: BatchInput, schema: T.StructType
) -> DataFrame:
    """The input as bronze rows.  # topic, partition, offset, timestamp, key, value"""
    if source.kind == "kafka":
        return read_kafka_range(spark, kafka, source.location, source.range)
    if source.kind == "file":
        return read_file(spark, source.location, source.file_format, schema)
    bronze = spark.read.format("delta").load(source.location).select(*KAFKA_COLUMNS)
    return with_kafka_range(bronze, source.range)


def read_kafka_range(spark: SparkSession, kafka: KafkaConfig, topic: str, bounds: KafkaRange) -> DataFrame:
    """A bounded read of a topic.  # topic, partition, offset, timestamp, key, value"""
    if not (bounds.starting_timestamp or bounds.ending_timestamp):
        return read_kafka_batch(spark, kafka, topic, bounds.starting_offsets, bounds.ending_offsets).select(
            *KAFKA_COLUMNS
        )
    reader = spark.read.format("kafka").options(**kafka.spark_read_options()).option("subscribe", topic)
    # Past the last record, a timestamp lookup finds no offset: read to the end instead of failing.
    reader = reader.option("startingOffsetsByTimestampStrategy", "latest")
    if bounds.starting_timestamp:
        reader = reader.option("startingTimestamp", str(_ms(bounds.starting_timestamp)))
    if bounds.ending_timestamp:
        reader = reader.option("endingTimestamp", str(_ms(bounds.ending_timestamp)))
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


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)
