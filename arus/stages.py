"""The pipeline's stages as compositions of the pure transforms, shared by stream and batch jobs.

    bronze (Kafka records as received) -> silver (valid, deduplicated events) + dead letters
    silver -> gold (window aggregates)

Streaming jobs apply these to `readStream` DataFrames, batch jobs (backfill, reconciliation) to
`read` DataFrames of the same shape, so both compute the same thing by construction.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from arus.config import AggregateConfig
from arus.transforms import (
    aggregate_windows,
    dead_letters,
    drop_duplicate_events,
    parse_events,
    valid_events,
    with_watermark,
)


def bronze_to_silver(
    bronze: DataFrame, schema: T.StructType, job: AggregateConfig
) -> tuple[DataFrame, DataFrame]:
    """Kafka-shaped rows -> (valid deduplicated events, dead letters).

    # silver: <schema fields...>
    # dead:   topic, partition, offset, timestamp, key, value, error
    """
    parsed = parse_events(bronze, schema)
    events = with_watermark(valid_events(parsed, schema), job.event_time_field, job.watermark)
    if job.dedup_field:
        events = drop_duplicate_events(events, job.dedup_field)
    return events, dead_letters(parsed)


def silver_to_gold(silver: DataFrame, job: AggregateConfig, slide: str | None = None) -> DataFrame:
    """Events -> window aggregates per key.  # *keys, window_start, window_end, count, metrics..."""
    return aggregate_windows(
        silver,
        keys=job.keys,
        value_fields=job.value_fields,
        event_time=job.event_time_field,
        window=job.window,
        slide=slide,
    )
