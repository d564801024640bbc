"""Pure DataFrame -> DataFrame transforms, shared by the streaming and the batch jobs.

None of these functions reads, writes or starts a query; they work the same on `spark.read` and
`spark.readStream` DataFrames. Event time is always UTC (the session time zone is UTC).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.config import AggregateConfig
from arus.core.rules import (
    BEFORE_EARLIEST,
    DEAD_LETTER_HEADERS,
    EMPTY_FIELD,
    EMPTY_VALUE,
    KEY_SEPARATOR,
    KEY_TIME_PATTERN,
    MISSING_FIELD,
    NOT_JSON_OBJECT,
    NOT_UTF8,
    TIME_PATTERN,
    TOO_FAR_AHEAD,
    TOO_LARGE,
    WRONG_TYPE,
    RecordLimits,
)

# Kafka's columns and the parse error live under names that no event field is expected to take.
SOURCE = "_source"
ERROR = "_error"
KAFKA_COLUMNS = ("topic", "partition", "offset", "timestamp", "key", "value")
# What from_json's reader takes as a number (Jackson's non-numeric numbers: NaN, [+-]Infinity,
# [+-]INF) and json_object_keys's does not; "Inf" covers both spellings of infinity.
NON_NUMERIC_TOKENS = ("NaN", "Inf", "INF")


def schema_from_ddl(ddl: str) -> T.StructType:
    """A Spark DDL string ("a STRING NOT NULL, b DOUBLE") as a StructType; NOT NULL marks required."""
    schema = T._parse_datatype_string(ddl)
    if not isinstance(schema, T.StructType):
        raise ValueError(f"schema must be a list of fields, got {ddl!r}")
    return schema


def required_fields(schema: T.StructType) -> list[str]:
    return [f.name for f in schema.fields if not f.nullable]


def _nullable(schema: T.StructType) -> T.StructType:
    return T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])


def parse_json_error(value: Column, text: Column, parsed: Column, schema: T.StructType) -> Column:
    """Why a record is bad, or null when it is good: the first reason in a fixed order.

    "Not a JSON object" is json_object_keys's verdict (get_json_object's reader). A record with a
    parsed field is an object to that reader too unless it holds a bare NaN or Infinity, which
    only from_json accepts, so the second read of the JSON is skipped for good records: it cost
    as much as from_json itself (docs/benchmarks.md). A field's raw text (get_json_object) is
    looked at only when its parsed value is null: a parsed value means the field was written and
    converted, so the per-field reads are skipped for good records too (When and And evaluate
    lazily). A field's raw text is null when every occurrence of it is absent or JSON null.
    """
    required = set(required_fields(schema))
    some_parsed = functools.reduce(operator.or_, [parsed[f.name].isNotNull() for f in schema.fields])
    lenient = functools.reduce(operator.or_, [text.contains(token) for token in NON_NUMERIC_TOKENS])
    checks: list[tuple[Column, str]] = [
        (value.isNull() | (F.length(value) == 0), EMPTY_VALUE),
        (~F.call_function("is_valid_utf8", value), NOT_UTF8),
        ((~some_parsed | lenient) & F.json_object_keys(text).isNull(), NOT_JSON_OBJECT),
    ]
    for field in schema.fields:
        unparsed = parsed[field.name].isNull()
        raw = F.get_json_object(text, f"$.{field.name}")
        if field.name in required:
            checks.append((unparsed & raw.isNull(), MISSING_FIELD.format(name=field.name)))
            if isinstance(field.dataType, T.StringType):
                checks.append((F.trim(parsed[field.name]) == "", EMPTY_FIELD.format(name=field.name)))
        wrong = WRONG_TYPE.format(name=field.name, type=field.dataType.simpleString())
        checks.append((unparsed & raw.isNotNull(), wrong))
    reason: Column = F.lit(None).cast("string")
    for condition, message in reversed(checks):
        reason = F.when(condition, F.lit(message)).otherwise(reason)
    return reason


def record_limit_errors(
    value: Column, timestamp: Column, parsed: Column, limits: RecordLimits
) -> tuple[Column, Column]:
    """Why a record breaks `limits`, or null: (its size, checked before parsing; its event time)."""
    none: Column = F.lit(None).cast("string")
    size = none
    if limits.max_bytes:
        size = F.when(
            F.octet_length(value) > limits.max_bytes, F.lit(TOO_LARGE.format(max_bytes=limits.max_bytes))
        )
    when = none
    event_time = parsed[limits.event_time].cast("timestamp")
    if limits.max_ahead_s:
        ahead = event_time > timestamp + F.make_dt_interval(secs=F.lit(limits.max_ahead_s))
        when = F.when(ahead, F.lit(TOO_FAR_AHEAD.format(max_ahead_s=limits.max_ahead_s)))
    if limits.earliest is not None:
        before = event_time < F.lit(limits.earliest)
        reason = BEFORE_EARLIEST.format(earliest=limits.earliest.isoformat())
        when = F.when(before, F.lit(reason)).otherwise(when)
    return size, when


def parse_events(raw: DataFrame, schema: T.StructType, limits: RecordLimits | None = None) -> DataFrame:
    """Kafka rows -> one row per record with the schema's fields, its Kafka source and an error.

    # _source (topic, partition, offset, timestamp, key, value), <schema fields...>, _error
    `_error` is null for a good record; every record keeps its original bytes in `_source.value`.
    """
    parsed = F.from_json(F.col("value").cast("string"), _nullable(schema))
    # The guard is always true; being nondeterministic, it keeps the optimizer from copying
    # from_json into every expression (and pushed-down filter) that reads a parsed field, which
    # would parse each record once per field reference.
    rows = raw.select(
        F.struct(*KAFKA_COLUMNS).alias(SOURCE), F.when(F.spark_partition_id() >= 0, parsed).alias("_parsed")
    )
    value, fields = F.col(f"{SOURCE}.value"), F.col("_parsed")
    error = parse_json_error(value, value.cast("string"), fields, schema)
    if limits is not None:
        size, when = record_limit_errors(value, F.col(f"{SOURCE}.timestamp"), fields, limits)
        error = F.coalesce(size, error, when)
    return rows.select(SOURCE, "_parsed.*", error.alias(ERROR))


def valid_events(parsed: DataFrame, schema: T.StructType) -> DataFrame:
    """The good records, with exactly the schema's fields.  # <schema fields...>"""
    return parsed.where(F.col(ERROR).isNull()).select(*schema.fieldNames())


def dead_letters(parsed: DataFrame) -> DataFrame:
    """The bad records with where they came from, why, and their original bytes.

    # topic, partition, offset, timestamp, key, value, error
    """
    return parsed.where(F.col(ERROR).isNotNull()).select(f"{SOURCE}.*", F.col(ERROR).alias("error"))


def kafka_headers(names: Sequence[str], values: Sequence[Column]) -> Column:
    """Kafka headers from names and values (any type, written as its string): arus.core.rules'
    header lists, so the Spark path writes what the kafka-python path writes."""
    return F.array(
        *[
            F.struct(F.lit(name).alias("key"), value.cast("string").cast("binary").alias("value"))
            for name, value in zip(names, values, strict=True)
        ]
    )


def dead_letter_records(dead: DataFrame) -> DataFrame:
    """Dead letters for a Kafka topic: original key and bytes, the reason and the source in headers.

    # key, value, headers
    """
    source = [F.col("error"), F.col("topic"), F.col("partition"), F.col("offset")]
    return dead.select("key", "value", kafka_headers(DEAD_LETTER_HEADERS, source).alias("headers"))


def with_watermark(events: DataFrame, event_time: str, delay: str) -> DataFrame:
    """Bound how late an event may arrive; a no-op on batch DataFrames."""
    return events.withWatermark(event_time, delay)


def drop_duplicate_events(events: DataFrame, id_field: str) -> DataFrame:
    """One row per event id; in a stream, ids are remembered until the watermark passes them."""
    if events.isStreaming:
        return events.dropDuplicatesWithinWatermark([id_field])
    return events.dropDuplicates([id_field])


def aggregate_windows(
    events: DataFrame,
    keys: Sequence[str],
    value_fields: Sequence[str],
    event_time: str,
    window: str,
    slide: str | None = None,
    accuracy: int = AggregateConfig.percentile_accuracy,
) -> DataFrame:
    """Event-time window aggregates per key: tumbling, or sliding when `slide` is given.

    # *keys, window_start, window_end, count, <f>_mean, <f>_min, <f>_max, <f>_stddev, <f>_p50, <f>_p95
    `stddev` is the sample standard deviation (null for one event); p50/p95 are approximate, from one
    percentile_approx digest per field at `accuracy` ([aggregate] percentile_accuracy): exact below
    accuracy / 2 values a window.
    """
    win = F.window(event_time, window, slide) if slide else F.window(event_time, window)
    metrics: list[Column] = [F.count(F.lit(1)).alias("count")]
    for field in value_fields:
        col = F.col(field).cast("double")
        metrics += [
            F.avg(col).alias(f"{field}_mean"),
            F.min(col).alias(f"{field}_min"),
            F.max(col).alias(f"{field}_max"),
            F.stddev_samp(col).alias(f"{field}_stddev"),
            # One digest answers both quantiles: half the state and the work of one per quantile.
            F.percentile_approx(col, list(QUANTILES.values()), accuracy).alias(f"{field}_quantiles"),
        ]
    return (
        events.groupBy(win.alias("window"), *keys)
        .agg(*metrics)
        .select(
            *keys,
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            *_metrics(value_fields),
        )
    )


# The quantiles of each value field, by output name, in the digest's order.
QUANTILES = {"p50": 0.5, "p95": 0.95}


def _metrics(value_fields: Sequence[str]) -> list[Column]:
    columns = [F.col("count")]
    for field in value_fields:
        columns += [F.col(f"{field}_{m}") for m in ("mean", "min", "max", "stddev")]
        columns += [F.col(f"{field}_quantiles")[i].alias(f"{field}_{q}") for i, q in enumerate(QUANTILES)]
    return columns


def aggregate_key_column(keys: Sequence[str]) -> Column:
    """The record key of an aggregate (arus.core.rules.aggregate_key): key fields, window start."""
    return F.concat_ws(
        KEY_SEPARATOR,
        *[F.col(k).cast("string") for k in keys],
        F.date_format("window_start", KEY_TIME_PATTERN),
    )


def to_kafka_records(df: DataFrame, key: Column) -> DataFrame:
    """Any rows -> Kafka records: the given key, all columns as a JSON value.  # key, value"""
    return df.select(
        key.cast("string").alias("key"),
        F.to_json(F.struct(*df.columns), {"timestampFormat": TIME_PATTERN}).alias("value"),
    )
