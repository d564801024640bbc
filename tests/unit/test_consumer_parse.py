"""The consumer's parsing, record keys and JSON, checked against what the Spark job produces
(the expected reasons are those of tests/integration/test_transforms.py's parse test)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from arus.jobs.consumer import parse_args, settings_from

from arus.config import load_config
from arus.core.rules import Condition, RecordLimits
from arus.grammar import Field, parse_schema, require
from arus.pyengine.consumer import ConsumerSettings, Counters, render_view
from arus.pyengine.records import (
    InvalidRecord,
    parse_event,
    parse_record,
    parse_timestamp,
    spark_string,
)
from arus.pyengine.windowing import aggregate_key_text, to_json

DDL = (
    "event_id STRING NOT NULL, device_id STRING NOT NULL, value DOUBLE NOT NULL, "
    "event_time TIMESTAMP NOT NULL, site STRING"
)
FIELDS = parse_schema(DDL)


def ts(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


def test_schema_ddl_fields_types_and_required() -> None:
    assert parse_schema("a STRING NOT NULL, `b` bigint, c Timestamp not null, d INTEGER") == (
        Field("a", "string", True),
        Field("b", "bigint", False),
        Field("c", "timestamp", True),
        Field("d", "int", False),
    )
    with pytest.raises(ValueError, match="not supported"):
        parse_schema("a MAP<STRING, INT>")
    assert require(parse_schema("t TIMESTAMP"), "t") == (Field("t", "timestamp", True),)


def test_good_records_parse_like_from_json() -> None:
    good = b'{"event_id":"e1","device_id":"d1","value":1.5,"event_time":"2026-01-01T00:00:01Z","extra":7}'
    assert parse_event(good, FIELDS) == {
        "event_id": "e1",
        "device_id": "d1",
        "value": 1.5,
        "event_time": ts(1),
        "site": None,
    }
    # A number where a string is expected is taken as its canonical text (Java's Double.toString).
    e6 = b'{"event_id":"e6","device_id":"d1","value":2,"event_time":"2026-01-01T00:00:02Z","site":5.50}'
    assert parse_event(e6, FIELDS)["site"] == "5.5"
    assert parse_event(e6, FIELDS)["value"] == 2.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"", "empty value"),
        (None, "empty value"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
        (
            b'{"event_id":"e2","device_id":"d1","event_time":"2026-01-01T00:00:01Z"}',
            "missing required field value",
        ),
        (
            b'{"event_id":"e3","device_id":"d1","value":"hot","event_time":"2026-01-01T00:00:01Z"}',
            "wrong type for field value: expected double",
        ),
        (
            b'{"event_id":"e4","device_id":"d1","value":2,"event_time":"yesterday"}',
            "wrong type for field event_time: expected timestamp",
        ),
        (
            b'{"event_id":"e5","device_id":"d1","value":null,"event_time":"2026-01-01T00:00:01Z"}',
            "missing required field value",
        ),
        # The first failing check wins, in schema order: event_id is checked before value.
        (b'{"device_id":"d1","value":"hot"}', "missing required field event_id"),
        (
            b'{"event_id":"e","device_id":"d1","value":true,"event_time":"2026-01-01"}',
            "wrong type for field value: expected double",
        ),
        (
            b'{"event_id":"e","device_id":"d1","value":"","event_time":"2026-01-01"}',
            "wrong type for field value: expected double",
        ),
        (b'{"event_id":"e","device_id":"d1","value":NaN,"event_time":"2026-01-01"}', "not a JSON object"),
    ],
)
def test_bad_records_get_the_spark_jobs_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord) as bad:
        parse_event(value, FIELDS)
    assert bad.value.reason == reason


def test_numeric_types_and_their_edges() -> None:
    fields = parse_schema("i INT, b BIGINT, t TINYINT, f FLOAT, d DOUBLE, ok BOOLEAN")
    assert parse_event(b'{"i":-7,"b":9007199254740993,"t":200,"f":0.1,"d":"NaN","ok":true}', fields) == {
        "i": -7,
        "b": 9007199254740993,
        "t": -56,  # Jackson reads a byte as unsigned up to 255 and wraps it
        "f": 0.10000000149011612,  # a FLOAT is 32 bits wide
        "d": pytest.approx(math.nan, nan_ok=True),
        "ok": True,
    }
    for doc, name in [(b'{"i":1.0}', "i"), (b'{"t":256}', "t"), (b'{"ok":1}', "ok"), (b'{"d":"1.5"}', "d")]:
        with pytest.raises(InvalidRecord, match=f"wrong type for field {name}"):
            parse_event(doc, fields)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:01Z", ts(1)),
        ("2026-01-01T00:00:01.250Z", ts(1) + timedelta(milliseconds=250)),
        ("2026-01-01 00:00:01", ts(1)),  # no zone: the session's, UTC
        ("2026-01-01T07:00:01+07:00", ts(1)),
        ("2026-01-01T07:00:01+0700", ts(1)),
        ("2026-01-01", ts(0)),
        ("2026-01-01T00:00:01.1234567Z", ts(1) + timedelta(microseconds=123456)),
        # Less common spellings Spark's cast to timestamp accepts too.
        ("2026", ts(0)),
        ("2026-1-1", ts(0)),
        ("+2026-01-01", ts(0)),
        ("2026-01-01T00:00", ts(0)),
        ("2026-01-01 0:0:1", ts(1)),
        (" 2026-01-01T00:00:01Z ", ts(1)),
        ("2026-01-01T00:00:01.Z", ts(1)),
        ("2026-01-01T00:00:01 Z", ts(1)),
        ("2026-01-01T07:00:01+7", ts(1)),
        ("2026-01-01T07:00:01+7:00", ts(1)),
        ("2026-01-01T07:00:01+07:00:00", ts(1)),
        ("2026-01-01T07:00:01UTC+7", ts(1)),
        ("2026-01-01T07:00:01 GMT+07:00", ts(1)),
        ("2026-01-01T00:00:01GMT", ts(1)),
        ("2026-01-01T07:00:01 Asia/Jakarta", ts(1)),
        ("2026-01-01T09:00:01JST", ts(1)),
        ("2026-01-01 00:00:01.5 UTC", ts(1) + timedelta(milliseconds=500)),
    ],
)
def test_timestamps_in_the_forms_spark_reads(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_integer_event_time_is_epoch_seconds() -> None:
    fields = parse_schema("t TIMESTAMP NOT NULL")
    assert parse_event(b'{"t":1767225601}', fields)["t"] == ts(1)
    with pytest.raises(InvalidRecord, match="wrong type for field t"):
        parse_event(b'{"t":1767225601.5}', fields)


def test_aggregate_key_and_json_are_the_spark_jobs() -> None:
    row = {
        "device_id": "dev-0001",
        "window_start": ts(0),
        "window_end": ts(0) + timedelta(minutes=1),
        "count": 1,
        "value_mean": 20.5,
        "value_stddev": None,
    }
    assert aggregate_key_text(row, ["device_id"]) == "dev-0001|2026-01-01T00:00:00Z"
    assert aggregate_key_text({**row, "device_id": None}, ["device_id"]) == "2026-01-01T00:00:00Z"
    assert json.loads(to_json(row)) == {
        "device_id": "dev-0001",
        "window_start": "2026-01-01T00:00:00.000Z",
        "window_end": "2026-01-01T00:01:00.000Z",
        "count": 1,
        "value_mean": 20.5,
    }  # null fields left out, as to_json does


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a", "a"),
        (7, "7"),
        (True, "true"),
        (1.5, "1.5"),
        (2.0, "2.0"),
        (1e7, "1.0E7"),
        (1.25e-5, "1.25E-5"),
        (-123456789.0, "-1.23456789E8"),
        (math.inf, "Infinity"),
        (datetime(2026, 1, 1, 7, tzinfo=timezone(timedelta(hours=7))), "2026-01-01 00:00:00"),
        (ts(1) + timedelta(milliseconds=500), "2026-01-01 00:00:01.5"),
    ],
)
def test_key_fields_are_cast_to_string_as_spark_casts_them(value: object, text: str) -> None:
    assert spark_string(value) == text


def settings(*argv: str) -> ConsumerSettings:
    from arus.config import load_config

    return settings_from(parse_args(list(argv)), load_config())


def test_consumer_settings_take_aggregate_config_and_flags() -> None:
    s = settings("--window", "5 minutes", "--where", "kind=temperature", "--no-view", "--until-idle", "3")
    assert (s.spec.keys, s.spec.value_fields, s.spec.dedup_field) == (("device_id",), ("value",), "event_id")
    assert (s.spec.size_us, s.spec.delay_us) == (300_000_000, 120_000_000)
    assert s.spec.where == Condition("kind", "=", ("temperature",))
    assert s.spec.clean == load_config().clean
    assert (s.view, s.until_idle, s.max_records) == (False, 3.0, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--window", "soon"], "not a duration"),
        (["--keys", "nope"], "fields not in schema"),
        (["--event-time-field", "device_id"], "must be a TIMESTAMP"),
        (["--where", "kind"], "--where: expected =, !=, <, <=, >, >= or 'in', found the end at column 5"),
        (["--where", "value > hot"], "value is a double: compare it with a number"),
        (["--where", "kind = a", "--where", "nope in (1)"], "no field 'nope' in the schema"),
    ],
)
def test_bad_settings_fail_fast(argv: list[str], message: str) -> None:
    from arus.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        settings(*argv)


def test_live_view_shows_the_latest_windows_first() -> None:
    s = settings("--view-rows", "2")
    rows = [
        {"device_id": f"d{i}", "window_start": ts(0) + timedelta(minutes=i), "count": i, "value_mean": 1.0}
        for i in range(1, 4)
    ]
    text = render_view(rows, Counters(records=6, aggregated=6), s, None, 3)
    lines = text.splitlines()
    assert "records 6" in lines[1] and "open windows 3" in lines[1] and "watermark -" in lines[1]
    assert lines[3].split()[:2] == ["key", "window"]
    assert [line.split()[0] for line in lines[4:]] == ["d3", "d2"]


@pytest.mark.parametrize(
    ("value", "site"),
    [
        (b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01"} trailing', None),
        (b'  {"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01"}{"x":1}', None),
        (
            b"{'event_id':'e','device_id':'d','value':1,'event_time':'2026-01-01','site':'say \"hi\"'}",
            'say "hi"',
        ),
        (b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01","site":1E2}', "100.0"),
        (b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01","site":-0}', "0"),
        (
            b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01","site":[1, {"a": 2.50}]}',
            '[1,{"a":2.5}]',
        ),
        (b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01","site":"a","site":"b"}', "b"),
    ],
)
def test_json_is_read_as_sparks_reader_reads_it(value: bytes, site: str | None) -> None:
    """Read up to the object's end; single quotes; canonical number text; the last duplicate wins."""
    assert parse_event(value, FIELDS)["site"] == site


def test_a_duplicate_that_does_not_convert_keeps_the_earlier_value() -> None:
    value = b'{"event_id":"e","device_id":"d","value":1,"value":"hot","event_time":"2026-01-01"}'
    assert parse_event(value, FIELDS)["value"] == 1.0


@pytest.mark.parametrize("event_id", ['""', '" "'])
def test_blank_required_strings_are_dead_letters(event_id: str) -> None:
    value = f'{{"event_id":{event_id},"device_id":"d","value":1,"event_time":"2026-01-01"}}'.encode()
    with pytest.raises(InvalidRecord, match=r"^empty required field event_id$"):
        parse_event(value, FIELDS)
    tab = b'{"event_id":"\\t","device_id":"d","value":1,"event_time":"2026-01-01"}'
    assert parse_event(tab, FIELDS)["event_id"] == "\t"  # Spark's trim removes spaces only


def test_records_without_repeated_members_get_the_verdict_of_the_full_rule() -> None:
    """parse_event's short path (each member written once) against the rule it shortens, which
    handles repeated members: every mix of absent, null, good, mistyped and blank fields."""
    fields = parse_schema(DDL + ", seq BIGINT, ok BOOLEAN, ratio FLOAT")
    choices = {
        "event_id": [None, "null", '"e"', '""', '" "', "7", "[1]"],
        "device_id": [None, "null", '"d"', '" "', "1.50", "true"],
        "value": [None, "null", "1", "2.5", '"NaN"', '"x"', "1e400", "true"],
        "event_time": [None, "null", '"2026-01-01T00:00:00Z"', '"x"', "1767225600", "1.5", '""'],
        "site": [None, "null", '"s"', "12", "{}"],
        "seq": [None, "9223372036854775808", "3", "3.0", '"3"'],
        "ok": [None, "true", "1", '"true"'],
        "ratio": [None, "1e39", "0.1", '"Infinity"', "false"],
    }
    rng = random.Random(3)
    for _ in range(3000):
        written = {name: rng.choice(options) for name, options in choices.items()}
        text = "{" + ",".join(f'"{k}":{v}' for k, v in written.items() if v is not None) + "}"
        assert same(verdict(parse_event, text.encode(), fields), verdict(full_rule, text, fields)), text


def verdict(parse: Callable[..., dict[str, object]], *args: object) -> object:
    try:
        return parse(*args)
    except InvalidRecord as bad:
        return bad.reason


def full_rule(text: str, fields: tuple[Field, ...]) -> dict[str, object]:
    from arus.pyengine.records import _first_json_value, _with_repeated_members

    return _with_repeated_members(_first_json_value(text), fields)


def same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def test_record_limits_in_the_spark_jobs_order() -> None:
    limits = RecordLimits(
        "event_time", max_bytes=200, earliest=datetime(2000, 1, 1, tzinfo=UTC), max_ahead_s=60
    )
    kafka_ms = 1767225600000  # 2026-01-01T00:00:00Z
    ok = b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-01-01T00:01:00Z"}'
    assert parse_record(ok, kafka_ms, FIELDS, limits)["value"] == 1.0
    cases = [
        (b"x" * 201, "larger than 200 bytes"),  # size is checked before parsing
        (ok.replace(b"00:01:00", b"00:01:01"), "event time more than 60 s ahead of the Kafka timestamp"),
        (
            ok.replace(b"00:01:00Z", b"00:01:00.000001Z"),
            "event time more than 60 s ahead of the Kafka timestamp",
        ),
        (ok.replace(b"2026-01-01T00:01", b"1999-01-01T00:01"), "event time before 2000-01-01T00:00:00+00:00"),
        (ok.replace(b'"value":1', b'"value":"x"'), "wrong type for field value: expected double"),
    ]
    for value, reason in cases:
        with pytest.raises(InvalidRecord) as bad:
            parse_record(value, kafka_ms, FIELDS, limits)
        assert bad.value.reason == reason


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T",
        "2026-01-01T00:00Z",  # a zone needs seconds
        "2026-01-01T00:00:01z",
        "2026-01-01T00:00:01,5Z",
        "2026-01-01T00:00:01+19:00",
        "2026-02-30",
        "2026-01-01T24:00:00Z",
        "20260101T000001Z",
        "yesterday",
    ],
)
def test_timestamp_forms_spark_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_the_fast_iso_path_agrees_with_the_port_of_sparks_parser() -> None:
    from arus.pyengine.records import _ISO_SHAPE, _string_to_timestamp

    rng = random.Random(3)
    for _ in range(2000):
        text = (
            f"{rng.randint(1000, 9999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}"
            f"{rng.choice('T ')}{rng.randint(0, 24):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 60):02d}"
            f"{rng.choice(['', '.123', '.000001', '.999999'])}"
            f"{rng.choice(['', 'Z', '+07:00', '-05:30', '+17:59', '-00:00'])}"
        )
        assert _ISO_SHAPE.fullmatch(text)
        try:
            expected: object = _string_to_timestamp(text)
        except ValueError:
            expected = ValueError
        try:
            got: object = parse_timestamp(text)
        except ValueError:
            got = ValueError
        assert got == expected, text
