"""The rules both engines share (arus.core.rules), fed the same edge cases on the Spark path and the
kafka-python path: durations, record limits, dead-letter reasons, the output key, the headers,
[clean] and --where filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from support import kafka_rows

from arus.config import CleanConfig
from arus.core.clean import clean_events, filter_column
from arus.core.late import late_records
from arus.core.rules import (
    RecordLimits,
    dead_letter_headers,
    late_headers,
    parse_filter,
)
from arus.core.transforms import (
    aggregate_key_column,
    dead_letter_records,
    dead_letters,
    parse_events,
    schema_from_ddl,
)
from arus.grammar import duration_us, parse_schema, window_us
from arus.pyengine.records import InvalidRecord, parse_record
from arus.pyengine.transform import cleaner, predicate
from arus.pyengine.windowing import aggregate_key_text

DDL = "event_id STRING NOT NULL, device_id STRING NOT NULL, value DOUBLE, event_time TIMESTAMP NOT NULL"
KAFKA_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = RecordLimits("event_time", max_bytes=120, earliest=datetime(2000, 1, 1, tzinfo=UTC), max_ahead_s=60)

MINUTE = 60_000_000
DURATIONS = [
    ("1 minute", MINUTE),
    ("2 minutes", 2 * MINUTE),
    ("90 seconds", 90_000_000),
    ("1 hour", 60 * MINUTE),
    ("1 hour 30 minutes", 90 * MINUTE),
    ("INTERVAL 2 Minutes", 2 * MINUTE),
    ("  1  minute ", MINUTE),
    ("1.5 seconds", 1_500_000),
    ("500 milliseconds", 500_000),
    ("1 week", 7 * 1440 * MINUTE),
]
# Spellings the other grammar took (abbreviations, a fraction of a minute, no space) and mistakes.
BAD_DURATIONS = [
    "1 min",
    "2 mins",
    "10s",
    "1 h",
    "90seconds",
    "1.5 minutes",
    "1 minutess",
    "1 hours,30 minutes",
]
BAD_DURATIONS += ["soon", "3 fortnights", "1 minutes 30", "-1 minute", "1 month", "1e3 seconds"]


def record(event_time: str, **fields: Any) -> bytes:
    text = f'{{"event_id":"e1","device_id":"d1","value":1.5,"event_time":"{event_time}"'
    return (text + "".join(f',"{k}":{v}' for k, v in fields.items()) + "}").encode()


WRONG = "wrong type for field value: expected double"
# The same bytes for both engines, each with the reason both must give (None: a good record).
RECORDS: list[tuple[bytes | None, str | None]] = [
    (record("2026-03-01T12:00:30Z"), None),
    (record("2026-03-01T12:01:00Z"), None),  # exactly max_ahead_s ahead is still on time
    (record("2026-03-01T12:01:00.001Z"), "event time more than 60 s ahead of the Kafka timestamp"),
    (record("1999-12-31T23:59:59Z"), "event time before 2000-01-01T00:00:00+00:00"),
    (record("2026-03-01T12:00:00Z", padding='"' + "x" * 40 + '"'), "larger than 120 bytes"),
    (b"", "empty value"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"device_id":"d1","event_time":"2026-03-01T12:00:00Z"}', "missing required field event_id"),
    (
        b'{"event_id":" ","device_id":"d1","event_time":"2026-03-01T12:00:00Z"}',
        "empty required field event_id",
    ),
    (b'{"event_id":"e","device_id":"d","value":"x","event_time":"2026-03-01T12:00:00Z"}', WRONG),
]


@pytest.mark.parametrize(("text", "us"), DURATIONS)
def test_durations_read_as_spark_reads_them(text: str, us: int) -> None:
    assert duration_us(text) == window_us(text) == us


@pytest.mark.parametrize("text", ["", "interval", *BAD_DURATIONS])
def test_durations_spark_refuses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        duration_us(text)


def test_zero_is_a_watermark_delay_but_not_a_window() -> None:
    assert duration_us("0 seconds") == 0
    with pytest.raises(ValueError):
        window_us("0 seconds")


def test_record_limits_and_reasons_on_the_kafka_python_path() -> None:
    fields = parse_schema(DDL)
    kafka_ms = int(KAFKA_TIME.timestamp() * 1000)
    for value, reason in RECORDS:
        try:
            parse_record(value, kafka_ms, fields, LIMITS)
            got = None
        except InvalidRecord as bad:
            got = bad.reason
        assert got == reason, value


def test_headers_name_the_reason_and_where_the_record_was_read() -> None:
    assert dead_letter_headers("not UTF-8", ("in", 2, 41)) == [
        ("error", b"not UTF-8"),
        ("source_topic", b"in"),
        ("source_partition", b"2"),
        ("source_offset", b"41"),
    ]
    event_time, watermark = KAFKA_TIME, KAFKA_TIME + timedelta(minutes=1, microseconds=1500)
    assert late_headers(event_time, watermark, ("in", 0, 7)) == [
        ("reason", b"late"),
        ("event_time", b"2026-03-01T12:00:00.000Z"),
        ("watermark", b"2026-03-01T12:01:00.001Z"),
        ("source_topic", b"in"),
        ("source_partition", b"0"),
        ("source_offset", b"7"),
    ]


# --- the same cases on the Spark path -----------------------------------------------------------


def spark_window_us(spark: SparkSession, text: str) -> int:
    times = spark.createDataFrame([(KAFKA_TIME,)], "t timestamp")
    window = times.select(F.window("t", text).alias("w"))
    return int(window.select(F.unix_micros("w.end") - F.unix_micros("w.start")).first()[0])


def spark_accepts_watermark(spark: SparkSession, text: str) -> bool:
    try:
        spark.createDataFrame([(KAFKA_TIME,)], "t timestamp").withWatermark("t", text)
    except (PySparkException, ValueError):
        return False
    return True


@pytest.mark.integration
def test_both_engines_read_and_refuse_the_same_durations(spark: SparkSession) -> None:
    for text, us in DURATIONS:
        assert spark_window_us(spark, text) == window_us(text) == us, text
        assert spark_accepts_watermark(spark, text), text
    for text in BAD_DURATIONS:
        with pytest.raises(PySparkException):
            spark_window_us(spark, text)
        with pytest.raises(ValueError):
            duration_us(text)
    assert spark_accepts_watermark(spark, "0 seconds") and duration_us("0 seconds") == 0


@pytest.mark.integration
def test_both_engines_dead_letter_the_same_records_for_the_same_reasons(spark: SparkSession) -> None:
    checked = parse_events(
        kafka_rows(spark, [v for v, _ in RECORDS], KAFKA_TIME), schema_from_ddl(DDL), LIMITS
    )
    spark_reasons = [r["_error"] for r in checked.orderBy("_source.offset").collect()]
    fields = parse_schema(DDL)
    python_reasons = []
    for value, _ in RECORDS:
        try:
            parse_record(value, int(KAFKA_TIME.timestamp() * 1000), fields, LIMITS)
            python_reasons.append(None)
        except InvalidRecord as bad:
            python_reasons.append(bad.reason)
    assert spark_reasons == python_reasons == [reason for _, reason in RECORDS]


@pytest.mark.integration
def test_both_engines_write_the_same_record_key(spark: SparkSession) -> None:
    start = datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    rows = [("d1", "jakarta", 2.0, start), (None, "bandung", 1e-5, start), ("d2", None, 3.5, start)]
    frame = spark.createDataFrame(rows, "device_id string, site string, value double, window_start timestamp")
    keys = ["device_id", "site", "value"]
    spark_keys = [r["key"] for r in frame.select(aggregate_key_column(keys).alias("key")).collect()]
    python_keys = [
        aggregate_key_text(dict(zip([*keys, "window_start"], row, strict=True)), keys) for row in rows
    ]
    assert (
        spark_keys
        == python_keys
        == [
            "d1|jakarta|2.0|2026-03-01T12:01:00Z",
            "bandung|1.0E-5|2026-03-01T12:01:00Z",
            "d2|3.5|2026-03-01T12:01:00Z",
        ]
    )


def headers_of(records: DataFrame) -> list[list[tuple[str, bytes]]]:
    return [[(h["key"], bytes(h["value"])) for h in r["headers"]] for r in records.collect()]


@pytest.mark.integration
def test_both_engines_write_the_same_headers(spark: SparkSession) -> None:
    checked = parse_events(kafka_rows(spark, [b"", b"[1]"], KAFKA_TIME), schema_from_ddl(DDL))
    assert headers_of(dead_letter_records(dead_letters(checked).orderBy("offset"))) == [
        dead_letter_headers("empty value", ("in", 0, 0)),
        dead_letter_headers("not a JSON object", ("in", 0, 1)),
    ]
    event_time, watermark = KAFKA_TIME, KAFKA_TIME + timedelta(minutes=2, microseconds=999)
    late = spark.createDataFrame(
        [(b"k", b"v", "in", 3, 12, event_time, watermark)],
        "key binary, value binary, topic string, partition int, offset long, event_time timestamp, "
        "watermark timestamp",
    )
    assert headers_of(late_records(late)) == [late_headers(event_time, watermark, ("in", 3, 12))]


# --- [clean] and --where on both engines ------------------------------------------------------------

CLEAN = CleanConfig(
    name_fields=("kind", "site"), unit_field="unit", value_fields=("value", "seq"), decimals=3
)
READINGS = "id int, kind string, site string, unit string, value double, seq bigint"
NAN, INF = float("nan"), float("inf")
# Names with spaces, tabs, capitals and non-ASCII; every unit spelling, unknown and null ones;
# values on a rounding half, below it, tiny negatives, huge, NaN, infinite, null; integers.
TO_CLEAN = [
    (0, " Temperature ", "JAKARTA", "F", 98.6, 3),
    (1, "\tHumidity", "Bandung  ", " °F ", 2.0005, None),
    (2, "PRESSURE", "İstanbul", "kPa", 101.3255, 7),
    (3, "power", "ΣΊΣΥΦΟΣ", "KW", 1.23456789, -2),
    (4, None, "medan", "K", 300.0, 0),
    (5, "x", " ", "Pa", 123456.789, 1),
    (6, "x", "", "bar", 1.0015, 1),
    (7, "x", "a", " lux ", 2.675, 1),
    (8, "x", "a", None, -0.0001, 1),
    (9, "x", "a", "%RH", NAN, 1),
    (10, "x", "a", "mbar", INF, 1),
    (11, "x", "a", "degC", None, None),
    (12, "x", "a", "w", 1e300, 1),
    (13, "x", "a", "celsius", -40.00049, 1),
    (14, "x", "a", "fahrenheit", -40.0, 1),
    (15, "x", "a", "", 0.1 + 0.2, 1),
]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    return bool(a == b) and type(a) is type(b)


@pytest.mark.integration
def test_both_engines_clean_the_same_way(spark: SparkSession) -> None:
    rows = spark.createDataFrame(TO_CLEAN, READINGS)
    cleaned = clean_events(rows, CLEAN.name_fields, CLEAN.unit_field, CLEAN.value_fields, CLEAN.decimals)
    from_spark = [r.asDict() for r in cleaned.orderBy("id").collect()]
    names = ["id", "kind", "site", "unit", "value", "seq"]
    from_python = [cleaner(CLEAN)(dict(zip(names, row, strict=True))) for row in TO_CLEAN]
    different = [
        (s, p)
        for s, p in zip(from_spark, from_python, strict=True)
        if not all(same(s[n], p[n]) for n in names)
    ]
    assert not different
    assert from_python[0]["value"] == 37.0 and from_python[1]["kind"] == "\thumidity"  # they did change


EVENTS = "id int, kind string, site string, value double, seq bigint, ok boolean, event_time timestamp"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
TO_FILTER = [
    (0, "temperature", "jakarta", 31.5, 7, True, T0),
    (1, "temperature", "medan", 30.0, 30, False, T0 + timedelta(seconds=1)),
    (2, "humidity", "jakarta", NAN, None, None, None),
    (3, None, None, None, -1, True, T0 - timedelta(microseconds=1)),
    (4, "Temperature", "bandung", -INF, 9_007_199_254_740_993, False, T0),
    (5, "power", "surabaya", 250.0, 0, True, T0 + timedelta(days=1)),
    (6, "", "ΣΊΣΥΦΟΣ", -0.0, 2, False, T0),
]
FILTERS = [
    "value > 30",
    "value >= 30 and value <= 31.5",
    "value = 0",
    "value != 30",
    "value < 1e308",
    "value in (30, 31.5, 0)",
    "value not in (30)",
    "seq > 6.5 or seq < 0",
    "seq = 9007199254740993",
    "seq not in (7, 30)",
    "kind = temperature and site in ('jakarta', 'medan')",
    "kind != temperature",
    "kind < 'p' or site >= 'Σ'",
    "kind = ''",
    "(kind = temperature or site = jakarta) and ok = true",
    "ok != true or value > 100",
    "event_time > '2026-03-01T12:00:00Z'",
    "event_time <= '2026-03-01T19:00:00+07:00' and event_time >= 2026-03-01T11:59:59.999999Z",
    "site not in ('jakarta') and (value > 0 or value < 0)",
]


@pytest.mark.integration
def test_both_engines_keep_the_same_events_for_a_filter(spark: SparkSession) -> None:
    rows = spark.createDataFrame(TO_FILTER, EVENTS)
    types = {f.name: f.type for f in parse_schema(EVENTS)}
    filters = [parse_filter(text, types) for text in FILTERS]
    # One query for every filter: what `where` keeps is where the condition is true (not null).
    kept = rows.select(
        "id", *[F.coalesce(filter_column(f), F.lit(False)).alias(f"f{i}") for i, f in enumerate(filters)]
    ).collect()
    from_spark = [{r["id"] for r in kept if r[f"f{i}"]} for i in range(len(filters))]
    names = EVENTS.replace(",", "").split()[::2]
    events = [dict(zip(names, row, strict=True)) for row in TO_FILTER]
    from_python = [{e["id"] for e in events if predicate(f)(e)} for f in filters]
    assert list(zip(FILTERS, from_python, strict=True)) == list(zip(FILTERS, from_spark, strict=True))
    assert {0, 1} <= from_python[1] and from_python[1] != from_python[2]  # they did filter
