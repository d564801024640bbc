"""The late-event rule, on inline rows (the checkpoint reading behind it: test_batch_checkpoints)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from support import kafka_rows

from arus.core.late import first_window_end, is_late, late_events
from arus.core.transforms import parse_events, schema_from_ddl
from arus.runtime.microbatch import InputCounts, count_input


def ts(minute: int, second: float = 0) -> datetime:
    return datetime(2026, 3, 1, 12, minute, int(second), int(second % 1 * 1_000_000), tzinfo=UTC)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@pytest.mark.integration
def test_first_window_end_follows_spark_alignment(spark: SparkSession) -> None:
    times = spark.createDataFrame([(ts(0, 30),), (ts(1, 0),), (ts(0, 45),), (ts(0, 15),)], "t timestamp")
    got = times.select(
        "t",
        F.timestamp_micros(first_window_end(F.col("t"), "1 minute")).alias("tumbling"),
        F.timestamp_micros(first_window_end(F.col("t"), "1 minute", "30 seconds")).alias("sliding"),
    )
    expected = spark.createDataFrame(
        [
            (ts(0, 30), ts(1), ts(1)),
            (ts(1, 0), ts(2), ts(1, 30)),  # a window owns its start, not its end
            (ts(0, 45), ts(1), ts(1)),
            (ts(0, 15), ts(1), ts(0, 30)),
        ],
        "t timestamp, tumbling timestamp, sliding timestamp",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    # Spark's own windows agree: the earliest window holding each time ends where we say.
    spark_ends = times.select("t", F.window("t", "1 minute", "30 seconds").end.alias("end"))
    earliest = {r.t: r.end for r in spark_ends.groupBy("t").agg(F.min("end").alias("end")).collect()}
    assert earliest == {r.t: r.sliding for r in expected.collect()}


DDL = "event_id STRING NOT NULL, value DOUBLE NOT NULL, event_time TIMESTAMP NOT NULL"
LATE = (
    "topic string, partition int, offset long, timestamp timestamp, key binary, value binary, "
    "event_id string, event_time timestamp, watermark timestamp"
)


def parsed_rows(spark: SparkSession, events: list[tuple[str, datetime]]) -> tuple[list[bytes], DataFrame]:
    values = [
        json.dumps({"event_id": e, "value": 1.0, "event_time": at.isoformat()}).encode() for e, at in events
    ]
    values.append(b"not json")  # a dead letter is never late
    raw = kafka_rows(spark, values, ts(9))
    return values, parse_events(raw, schema_from_ddl(DDL))


@pytest.mark.integration
def test_an_event_at_or_before_the_watermark_is_late(spark: SparkSession) -> None:
    values, parsed = parsed_rows(spark, [("a", ts(2)), ("b", ts(1, 59)), ("c", ts(2, 0.5))])
    got = late_events(parsed, "event_time", ms(ts(2)), "event_id")
    expected = spark.createDataFrame(
        [
            ("in", 0, 0, ts(9), b"k", values[0], "a", ts(2), ts(2)),
            ("in", 0, 1, ts(9), b"k", values[1], "b", ts(1, 59), ts(2)),
        ],
        LATE,
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.integration
def test_without_deduplication_an_event_is_late_when_its_window_has_closed(spark: SparkSession) -> None:
    # Window [12:01, 12:02) ends at the watermark, so b is late; c's window ends at 12:03.
    values, parsed = parsed_rows(spark, [("b", ts(1, 30)), ("c", ts(2, 0.5))])
    got = late_events(parsed, "event_time", ms(ts(2)), "event_id", window="1 minute")
    expected = spark.createDataFrame([("in", 0, 0, ts(9), b"k", values[0], "b", ts(1, 30), ts(2))], LATE)
    assert_df_equality(got, expected, ignore_nullable=True)


@pytest.mark.integration
def test_one_pass_counts_the_records_dead_letters_and_late_events(spark: SparkSession) -> None:
    # The writer weighs dead letters and skips the late-event write on these counts alone.
    _, parsed = parsed_rows(spark, [("a", ts(2)), ("b", ts(1, 59)), ("c", ts(2, 0.5)), ("d", ts(1, 30))])
    watermark = ms(ts(2))
    assert count_input(parsed, is_late("event_time", watermark)) == InputCounts(total=5, dead=1, late=3)
    # Without deduplication the window's end decides: b's and d's [12:01, 12:02) has closed, a's not.
    by_window = is_late("event_time", watermark, window="1 minute")
    assert count_input(parsed, by_window) == InputCounts(total=5, dead=1, late=2)
    assert count_input(parsed) == InputCounts(total=5, dead=1, late=0)
    assert count_input(None, is_late("event_time", watermark)) == InputCounts()
