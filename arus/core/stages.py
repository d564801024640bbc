"""The pipeline's stages as compositions of the pure transforms, shared by stream and batch jobs.

    bronze (Kafka records as received) -> silver (valid, deduplicated, enriched, clean) + dead letters
    silver -> gold (window aggregates)

Streaming jobs apply these to `readStream` DataFrames, batch jobs (backfill, reconciliation) to
`read` DataFrames of the same shape, so both compute the same thing by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from arus.config import AggregateConfig, CleanConfig, StreamConfig
from arus.core.clean import clean_events, with_device_metadata
from arus.core.rules import record_limits
from arus.core.transforms import (
    aggregate_windows,
    dead_letters,
    drop_duplicate_events,
    parse_events,
    valid_events,
    with_watermark,
)


def bronze_to_checked(bronze: DataFrame, schema: T.StructType, stream: StreamConfig) -> DataFrame:
    """Kafka rows -> every record parsed and checked against the stream's guards.

    # _source (topic, partition, offset, timestamp, key, value), <schema fields...>, _error
    """
    return parse_events(bronze, schema, record_limits(stream))


def bronze_to_silver(
    bronze: DataFrame,
    schema: T.StructType,
    stream: StreamConfig,
    devices: DataFrame | None = None,
    clean: CleanConfig | None = None,
    on_checked: Callable[[DataFrame], DataFrame] | None = None,
) -> tuple[DataFrame, DataFrame]:
    """Kafka-shaped rows -> (valid deduplicated events, enriched and cleaned; dead letters).

    # silver: <schema fields...>, device_<device-only fields...> (with `devices`)
    # dead:   topic, partition, offset, timestamp, key, value, error
    `devices` (one row per [stream] device_key; static, so a stream joins it per micro-batch) adds device
    metadata; `clean` ([clean] in conf) normalises names and units and rounds values. Neither drops
    or reorders rows, so what the watermark judges late does not depend on them. `on_checked`, a
    transform that keeps the rows as they are (a streaming query's observe, say), is applied to
    every checked record, good or bad, before the good ones go on.
    """
    parsed = bronze_to_checked(bronze, schema, stream)
    if on_checked is not None:
        parsed = on_checked(parsed)
    events = with_watermark(valid_events(parsed, schema), stream.event_time_field, stream.watermark)
    if stream.id_field:
        events = drop_duplicate_events(events, stream.id_field)
    if devices is not None:
        events = with_device_metadata(events, devices, key=stream.device_key)
    if clean is not None:
        events = clean_events(events, clean.name_fields, clean.unit_field, clean.value_fields, clean.decimals)
    return events, dead_letters(parsed)


def silver_to_gold(
    silver: DataFrame, stream: StreamConfig, job: AggregateConfig, slide: str | None = None
) -> DataFrame:
    """Events -> window aggregates per key.  # *keys, window_start, window_end, count, metrics..."""
    return aggregate_windows(
        silver,
        keys=job.keys,
        value_fields=job.value_fields,
        event_time=stream.event_time_field,
        window=job.window,
        slide=slide,
        accuracy=job.percentile_accuracy,
    )
