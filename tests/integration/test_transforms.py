"""The pure transforms on inline rows, compared as whole DataFrames."""

from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from support import kafka_rows

from arus.config import DEFAULT_CONFIG, load_config
from arus.core.rules import TOO_FAR_AHEAD, record_limits
from arus.core.transforms import (
    aggregate_key_column,
    aggregate_windows,
    dead_letters,
    drop_duplicate_events,
    parse_events,
    schema_from_ddl,
    valid_events,
)

DDL = (
    "event_id STRING NOT NULL, device_id STRING NOT NULL, value DOUBLE NOT NULL, "
    "event_time TIMESTAMP NOT NULL, site STRING"
)
KAFKA_TS = datetime(2026, 1, 1, tzinfo=UTC)


def ts(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 1, 0, minute, second, tzinfo=UTC)


def raw_rows(spark: SparkSession, values: list[bytes | None]):
    return kafka_rows(spark, values, KAFKA_TS)


@pytest.mark.integration
def test_parse_events_splits_good_records_from_every_kind_of_bad_one(spark: SparkSession) -> None:
    good = b'{"event_id":"e1","device_id":"d1","value":1.5,"event_time":"2026-01-01T00:00:01Z","extra":7}'
    values = [
        good,
        b"not json",
        b"\xff\xfe\x00",
        b"",
        None,
        b"[1, 2]",
        b'{"event_id":"e2","device_id":"d1","event_time":"2026-01-01T00:00:01Z"}',
        b'{"event_id":"e3","device_id":"d1","value":"hot","event_time":"2026-01-01T00:00:01Z"}',
        b'{"event_id":"e4","device_id":"d1","value":2,"event_time":"yesterday"}',
        b'{"event_id":"e5","device_id":"d1","value":null,"event_time":"2026-01-01T00:00:01Z"}',
        b'{"event_id":"e6","device_id":"d1","value":2,"event_time":"2026-01-01T00:00:02Z","site":5}',
    ]
    schema = schema_from_ddl(DDL)
    parsed = parse_events(raw_rows(spark, values), schema)

    # Spark's JSON reader takes a number where a string is expected as its text, so e6 is good.
    expected_valid = spark.createDataFrame(
        [("e1", "d1", 1.5, ts(0, 1), None), ("e6", "d1", 2.0, ts(0, 2), "5")],
        "event_id string, device_id string, value double, event_time timestamp, site string",
    )
    assert_df_equality(
        valid_events(parsed, schema), expected_valid, ignore_row_order=True, ignore_nullable=True
    )

    expected_dead = spark.createDataFrame(
        [
            ("in", 0, 1, KAFKA_TS, b"k", values[1], "not a JSON object"),
            ("in", 0, 2, KAFKA_TS, b"k", values[2], "not UTF-8"),
            ("in", 0, 3, KAFKA_TS, b"k", values[3], "empty value"),
            ("in", 0, 4, KAFKA_TS, b"k", values[4], "empty value"),
            ("in", 0, 5, KAFKA_TS, b"k", values[5], "not a JSON object"),
            ("in", 0, 6, KAFKA_TS, b"k", values[6], "missing required field value"),
            ("in", 0, 7, KAFKA_TS, b"k", values[7], "wrong type for field value: expected double"),
            ("in", 0, 8, KAFKA_TS, b"k", values[8], "wrong type for field event_time: expected timestamp"),
            ("in", 0, 9, KAFKA_TS, b"k", values[9], "missing required field value"),
        ],
        "topic string, partition int, offset long, timestamp timestamp, key binary, value binary, "
        "error string",
    )
    assert_df_equality(dead_letters(parsed), expected_dead, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.integration
def test_default_guard_dead_letters_an_hour_ahead_and_accepts_a_minute_ahead(spark: SparkSession) -> None:
    # A device clock an hour fast would hold the watermark an hour past now: everyone else late.
    limits = record_limits(load_config(DEFAULT_CONFIG, env={}).stream)
    assert limits.max_ahead_s == 60
    at = {"minute": KAFKA_TS + timedelta(seconds=60), "hour": KAFKA_TS + timedelta(hours=1)}
    values = [
        f'{{"event_id":"{name}","device_id":"d1","value":1.0,"event_time":"{t.isoformat()}"}}'.encode()
        for name, t in at.items()
    ]
    schema = schema_from_ddl(DDL)
    parsed = parse_events(raw_rows(spark, values), schema, limits)

    expected_valid = spark.createDataFrame(
        [("minute", "d1", 1.0, at["minute"], None)],
        "event_id string, device_id string, value double, event_time timestamp, site string",
    )
    assert_df_equality(valid_events(parsed, schema), expected_valid, ignore_nullable=True)
    expected_dead = spark.createDataFrame(
        [("in", 0, 1, KAFKA_TS, b"k", values[1], TOO_FAR_AHEAD.format(max_ahead_s=60))],
        "topic string, partition int, offset long, timestamp timestamp, key binary, value binary, "
        "error string",
    )
    assert_df_equality(dead_letters(parsed), expected_dead, ignore_nullable=True)


@pytest.mark.integration
def test_parse_events_edge_cases_of_json(spark: SparkSession) -> None:
    """Scalars, NaN, duplicate keys, nested values, quotes, blanks and bytes that are not UTF-8."""
    t = '"event_time":"2026-01-01T00:00:0'
    values = [
        b"null",
        b"7",
        b'"text"',
        b'{"event_id":"x","device_id":"d1","value":NaN,' + t.encode() + b'1Z"}',
        b"\xc3\x28",
        b'{"event_id":"e1","device_id":"d1","value":1,"value":null,' + t.encode() + b'1Z"}',
        b'{"event_id":"e2","device_id":"d1","value":null,"value":2,' + t.encode() + b'2Z"}',
        b'{"event_id":"e3","device_id":"d1","value":3,"value":"hot",' + t.encode() + b'3Z"}',
        b'{"event_id":" ","device_id":"d1","value":1,' + t.encode() + b'1Z"}',
        b'{"event_id":"","device_id":"d1","value":1,' + t.encode() + b'1Z"}',
        b'{"event_id":"e4","device_id":{"id":"d1"},"value":4,' + t.encode() + b'4Z","site":{"a":[1, 2.50]}}',
        b"{'event_id':'e5','device_id':'d1','value':5,'event_time':'2026-01-01T00:00:05Z'}",
        b'{"event_id":"x","device_id":"d1","value":"6",' + t.encode() + b'6Z"}',
        b'{"event_id":"e7","device_id":"d1","value":7,' + t.encode() + b'7Z","site":null} trailing',
        b'{"nested":{"event_id":"x"},"device_id":"d1","value":1,' + t.encode() + b'1Z"}',
        b'{"event_id":"x","device_id":"d1","value":1,"event_time":""}',
        # Every field parses, but a bare -INF elsewhere is not JSON to json_object_keys.
        b'{"event_id":"x","device_id":"d1","value":1,' + t.encode() + b'1Z","spare":-INF}',
        # A token in a string is text: the object is judged by the second reader, and is good.
        b'{"event_id":"e9","device_id":"NaN-Infinity","value":9,' + t.encode() + b'9Z"}',
    ]
    schema = schema_from_ddl(DDL)
    parsed = parse_events(raw_rows(spark, values), schema)

    expected_valid = spark.createDataFrame(
        [
            ("e2", "d1", 2.0, ts(0, 2), None),
            ("e3", "d1", 3.0, ts(0, 3), None),  # a later duplicate that does not convert is ignored
            ("e4", '{"id":"d1"}', 4.0, ts(0, 4), '{"a":[1,2.5]}'),  # nested JSON kept as its text
            ("e5", "d1", 5.0, ts(0, 5), None),
            ("e7", "d1", 7.0, ts(0, 7), None),
            ("e9", "NaN-Infinity", 9.0, ts(0, 9), None),
        ],
        "event_id string, device_id string, value double, event_time timestamp, site string",
    )
    assert_df_equality(
        valid_events(parsed, schema), expected_valid, ignore_row_order=True, ignore_nullable=True
    )
    reasons = {
        0: "not a JSON object",
        1: "not a JSON object",
        2: "not a JSON object",
        3: "not a JSON object",
        4: "not UTF-8",
        5: "wrong type for field value: expected double",  # the later null wins, but value was written
        8: "empty required field event_id",
        9: "empty required field event_id",
        12: "wrong type for field value: expected double",
        14: "missing required field event_id",
        15: "wrong type for field event_time: expected timestamp",
        16: "not a JSON object",
    }
    expected_dead = spark.createDataFrame(
        [(i, reason) for i, reason in reasons.items()], "offset long, error string"
    )
    assert_df_equality(
        dead_letters(parsed).select("offset", "error"),
        expected_dead,
        ignore_row_order=True,
        ignore_nullable=True,
    )


EVENTS = "event_id string, device_id string, value double, event_time timestamp"


@pytest.mark.integration
def test_tumbling_window_aggregates(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [
            ("a", "d1", 1.0, ts(0, 5)),
            ("b", "d1", 3.0, ts(0, 50)),
            ("c", "d1", 8.0, ts(1, 0)),
            ("d", "d2", 4.0, ts(0, 30)),
        ],
        EVENTS,
    )
    result = aggregate_windows(events, ["device_id"], ["value"], "event_time", "1 minute")
    expected = spark.createDataFrame(
        [
            ("d1", ts(0), ts(1), 2, 2.0, 1.0, 3.0, 2**0.5, 1.0, 3.0),
            ("d1", ts(1), ts(2), 1, 8.0, 8.0, 8.0, None, 8.0, 8.0),
            ("d2", ts(0), ts(1), 1, 4.0, 4.0, 4.0, None, 4.0, 4.0),
        ],
        "device_id string, window_start timestamp, window_end timestamp, count long, value_mean double, "
        "value_min double, value_max double, value_stddev double, value_p50 double, value_p95 double",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.integration
def test_sliding_windows_count_an_event_in_each_window_that_covers_it(spark: SparkSession) -> None:
    events = spark.createDataFrame([("a", "d1", 1.0, ts(0, 45)), ("b", "d1", 5.0, ts(1, 10))], EVENTS)
    result = aggregate_windows(events, ["device_id"], ["value"], "event_time", "1 minute", "30 seconds")
    expected = spark.createDataFrame(
        [
            ("d1", ts(0, 0), 1, 1.0),
            ("d1", ts(0, 30), 2, 5.0),
            ("d1", ts(1, 0), 1, 5.0),
        ],
        "device_id string, window_start timestamp, count long, value_max double",
    )
    assert_df_equality(
        result.select("device_id", "window_start", "count", "value_max"),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )


@pytest.mark.integration
def test_duplicate_event_ids_are_dropped(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [("a", "d1", 1.0, ts(0, 5)), ("a", "d1", 1.0, ts(0, 5)), ("b", "d1", 2.0, ts(0, 6))], EVENTS
    )
    result = drop_duplicate_events(events, "event_id")
    expected = spark.createDataFrame([("a", "d1", 1.0, ts(0, 5)), ("b", "d1", 2.0, ts(0, 6))], EVENTS)
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.integration
def test_aggregate_key_is_entity_and_window_start_in_utc(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [("d1", "s1", ts(3))], "device_id string, site string, window_start timestamp"
    )
    keys = rows.select(aggregate_key_column(["device_id", "site"]).alias("key"))
    assert_df_equality(
        keys, spark.createDataFrame([("d1|s1|2026-01-01T00:03:00Z",)], "key string"), ignore_nullable=True
    )
