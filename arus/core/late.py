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

import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from arus.core.transforms import ERROR, SOURCE

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

_MICROS = {
    "microsecond": 1,
    "millisecond": 1_000,
    "ms": 1_000,
    "second": 1_000_000,
    "sec": 1_000_000,
    "s": 1_000_000,
    "minute": 60_000_000,
    "min": 60_000_000,
    "hour": 3_600_000_000,
    "h": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 604_800_000_000,
}


def interval_micros(text: str) -> int:
    """A Spark interval string such as "1 minute" or "1 hour 30 minutes" in microseconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([a-z]+)", "", text.lower()).strip(" ,"):
        raise ValueError(f"not an interval: {text!r} (e.g. '1 minute', '30 seconds')")
    total = 0.0
    for number, unit in parts:
        base = unit[:-1] if unit.endswith("s") and unit[:-1] in _MICROS else unit
        if base not in _MICROS:
            raise ValueError(f"unknown interval unit {unit!r} in {text!r}")
        total += float(number) * _MICROS[base]
    return int(total)


def first_window_end(event_time: Column, window: str, slide: str | None = None) -> Column:
    """The end of the earliest-ending window (Spark's alignment) that holds `event_time`, in micros."""
    length, step = interval_micros(window), interval_micros(slide or window)
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
    watermark_us = late_watermark_ms * 1000
    at = F.col(event_time)
    if window is None:
        late = F.unix_micros(at) <= F.lit(watermark_us)
    else:
        late = first_window_end(at, window, slide) <= F.lit(watermark_us)
    event_id = F.col(id_field).cast("string") if id_field else F.lit(None).cast("string")
    return parsed.where(F.col(ERROR).isNull() & late).select(
        f"{SOURCE}.*",
        event_id.alias("event_id"),
        at.cast("timestamp").alias("event_time"),
        F.timestamp_micros(F.lit(watermark_us)).alias("watermark"),
    )


def late_records(late: DataFrame) -> DataFrame:
    """Late events for a Kafka topic: original key and bytes, lateness and source in headers.

    # key, value, headers
    """

    def header(name: str, value: Column) -> Column:
        return F.struct(F.lit(name).alias("key"), value.cast("string").cast("binary").alias("value"))

    stamp = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
    return late.select(
        "key",
        "value",
        F.array(
            header("reason", F.lit("late")),
            header("event_time", F.date_format("event_time", stamp)),
            header("watermark", F.date_format("watermark", stamp)),
            header("source_topic", F.col("topic")),
            header("source_partition", F.col("partition")),
            header("source_offset", F.col("offset")),
        ).alias("headers"),
    )
