"""Which parsed records a stateful streaming query dropped as late, as pure DataFrame functions.

Spark's stateful operators drop an event behind the watermark without a trace beyond a count in
the query's progress. Its rule, from IncrementalExecution and WatermarkSupport: in micro-batch N an
input row is late when its event time is at or before the watermark of batch N-1 (the late-event
filter lags one batch behind the watermark that evicts state). The first stateful operator decides:
  - deduplication (dropDuplicatesWithinWatermark) compares the event time itself;
  - a window aggregation without it compares the window's end, so an event is dropped from each of
    its windows that ended at or before the watermark.
arus.runtime.microbatch re-reads a batch's exact input; `late_events` applies this rule to it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from arus.core.rules import LATE, LATE_HEADERS, TIME_PATTERN
from arus.core.transforms import ERROR, SOURCE, kafka_headers
from arus.grammar import window_us

# topic, partition, offset, timestamp, key, value, event_id, event_time, watermark
LATE_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "event_id",
    "event_time",
    "watermark",
)


def first_window_end(event_time: Column, window: str, slide: str | None = None) -> Column:
    """The end of the earliest-ending window (Spark's alignment) that holds `event_time`, in micros."""
    length, step = window_us(window), window_us(slide or window)
    t = F.unix_micros(event_time) - F.lit(length)
    return t - F.pmod(t, F.lit(step)) + F.lit(step + length)


def late_events(
    parsed: DataFrame,
    event_time: str,
    late_watermark_ms: int,
    id_field: str = "",
    window: str | None = None,
    slide: str | None = None,
) -> DataFrame:
    """The valid records of `parse_events` output that the query dropped behind the watermark.

    # topic, partition, offset, timestamp, key, value, event_id, event_time, watermark
    `window` (and `slide`) when the first stateful operator is the window aggregation (no
    deduplication): then an event counts as late when it missed at least its earliest window.
    """
    event_id = F.col(id_field).cast("string") if id_field else F.lit(None).cast("string")
    return parsed.where(is_late(event_time, late_watermark_ms, window, slide)).select(
        f"{SOURCE}.*",
        event_id.alias("event_id"),
        F.col(event_time).cast("timestamp").alias("event_time"),
        F.timestamp_micros(F.lit(late_watermark_ms * 1000)).alias("watermark"),
    )


def is_late(
    event_time: str, late_watermark_ms: int, window: str | None = None, slide: str | None = None
) -> Column:
    """Whether a row of `parse_events` output is a valid record the query dropped behind the
    watermark: the condition `late_events` keeps, for counting them without collecting them."""
    watermark_us = F.lit(late_watermark_ms * 1000)
    at = F.col(event_time)
    if window is None:
        late = F.unix_micros(at) <= watermark_us
    else:
        late = first_window_end(at, window, slide) <= watermark_us
    return F.col(ERROR).isNull() & late


def late_records(late: DataFrame) -> DataFrame:
    """Late events for a Kafka topic: original key and bytes, lateness and source in headers.

    # key, value, headers
    """
    values = [
        F.lit(LATE),
        F.date_format("event_time", TIME_PATTERN),
        F.date_format("watermark", TIME_PATTERN),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
    ]
    return late.select("key", "value", kafka_headers(LATE_HEADERS, values).alias("headers"))
