"""The kafka-python consumer against the Spark job: same verdicts on records, same statistics, and
on one real topic the same aggregate rows and the same dead letters, with [clean] changing units,
names and decimals, and with a compound --where filter."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from support import RAW_KAFKA, consumer_settings, produce, run_aggregate, topic_records

from arus.config import Config
from arus.core.clean import filter_column
from arus.core.rules import parse_filter, record_limits
from arus.core.stages import bronze_to_checked, bronze_to_silver, silver_to_gold
from arus.core.transforms import aggregate_key_column, aggregate_windows, schema_from_ddl
from arus.grammar import parse_schema, window_us
from arus.pyengine.consumer import run
from arus.pyengine.records import InvalidRecord, parse_record
from arus.pyengine.transform import cleaned_types
from arus.pyengine.windowing import Aggregator, WindowSpec, to_us
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import Record

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KAFKA_TIME = datetime(2026, 3, 2, tzinfo=UTC)


def doc(**fields: Any) -> bytes:
    """An IoT reading with some fields replaced by raw JSON text (None: left out)."""
    base = {"event_id": '"e"', "device_id": '"d"', "value": "1", "event_time": '"2026-03-01T12:00:00Z"'}
    base.update(fields)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in base.items() if v is not None) + "}").encode()


TIMES = [
    "2026-03-01T12:00:00Z",
    "2026-03-01T12:00:00.123Z",
    "2026-03-01T12:00:00.1234567Z",
    "2026-03-01 12:00:00",
    "2026-03-01T12:00",
    "2026-03-01",
    "2026-03",
    "2026",
    "+2026-03-01",
    "2026-3-1T1:2:3",
    " 2026-03-01T12:00:00Z ",
    "2026-03-01T12:00:00.Z",
    "2026-03-01T12:00:00 Z",
    "2026-03-01T19:00:00+07:00",
    "2026-03-01T19:00:00+0700",
    "2026-03-01T19:00:00+7",
    "2026-03-01T19:00:00+7:00",
    "2026-03-01T19:00:00+07:00:00",
    "2026-03-01T12:00:00-00:00",
    "2026-03-01T19:00:00UTC+7",
    "2026-03-01T19:00:00 GMT+07:00",
    "2026-03-01T12:00:00GMT",
    "2026-03-01T12:00:00UTC",
    "2026-03-01T19:00:00 Asia/Jakarta",
    "2026-03-01T21:00:00JST",
    "2026-03-01T12:00:00Etc/UTC",
    "2026-03-01T12:00:00z",
    "2026-03-01T12:00Z",
    "2026-03-01T12:00:00,5Z",
    "2026-03-01T12:00:00+19:00",
    "2026-02-30",
    "2026-13-01",
    "2026-03-01T24:00:00Z",
    "2026-03-01T23:59:60Z",
    "20260301T120000Z",
    "2026-03-01T",
    "yesterday",
    "",
    "1999-12-31T23:59:59Z",
    "2026-03-03T00:00:01Z",
    "2026-01-01T00:00:00 Nowhere/City",
]
NUMBERS = [
    "-0",
    "1E2",
    "1.0",
    "100000000000000000000",
    "0.001",
    "1e-3",
    "12345678.9",
    "1.0e7",
    "0.0001",
    "-1.5e-10",
]
EDGE_CASES: list[bytes | None] = [
    None,
    b"",
    b"   ",
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf" + doc(),
    b"not json",
    b"[1, 2]",
    b"null",
    b"{",
    b"{}",
    doc(),
    doc() + b" trailing",
    doc() + b'{"x":1}',
    b"\n  " + doc(),
    doc().replace(b'"', b"'"),
    b"{event_id:'e'}",
    doc()[:-1] + b",}",
    doc(value="NaN"),
    doc(value='"NaN"'),
    doc(value='"-Infinity"'),
    doc(value='"1.5"'),
    doc(value='""'),
    doc(value="true"),
    doc(value="null"),
    doc(value=None),
    doc(value="1e400"),
    doc(value="[1]"),
    doc(event_id=None),
    doc(event_id='""'),
    doc(event_id='" "'),
    doc(event_id='"\\t"'),
    doc(event_id="7"),
    doc(device_id='{"a": [1, 2.50, "x"]}'),
    doc(event_time="1772366400"),
    doc(event_time="1772366400.5"),
    doc(event_time="-1"),
    doc(seq="1.0"),
    doc(seq='"5"'),
    doc(seq="9223372036854775807"),
    doc(seq="9223372036854775808"),
    doc(battery='"x"', seq="3"),
    doc(kind="true", site="false", unit="null"),
    b'{"event_id":"e","device_id":"d","value":1,"value":"hot","event_time":"2026-03-01T12:00:00Z"}',
    b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-03-01T12:00:00Z","site":"a","site":"b"}',
    b'{"event_id":"e","device_id":"d","value":1,"event_time":"2026-03-01T12:00:00Z","EVENT_ID":"x","Value":"y"}',
    doc(site='"caf\\u00e9 \u2615"'),
    b"x" * 2_000_000,
    *(doc(event_time=json.dumps(t)) for t in TIMES),
    *(doc(site=n) for n in NUMBERS),
]


def test_consumer_gives_every_record_the_spark_jobs_verdict(spark: SparkSession, config: Config) -> None:
    """Good or bad, the reason, and every field's value: Spark's parse_events vs arus.pyengine.records."""
    stream = config.stream
    ddl = config.schema(stream.schema)
    rows = [(b"k", v, "in", 0, i, KAFKA_TIME) for i, v in enumerate(EDGE_CASES)]
    checked = bronze_to_checked(spark.createDataFrame(rows, RAW_KAFKA), schema_from_ddl(ddl), stream)
    fields = parse_schema(ddl)
    timestamps = [f.name for f in fields if f.type == "timestamp"]
    spark_rows = (
        checked.select(
            F.col("_source.offset").alias("offset"),
            *[
                F.unix_micros(name).alias(name) if name in timestamps else F.col(name)
                for name in (f.name for f in fields)
            ],
            F.col("_error").alias("error"),
        )
        .orderBy("offset")
        .collect()
    )
    limits = record_limits(stream)
    kafka_ms = int(KAFKA_TIME.timestamp() * 1000)
    mismatches = []
    for value, row in zip(EDGE_CASES, spark_rows, strict=True):
        expected: Any = row["error"] or {f.name: row[f.name] for f in fields}
        try:
            event = parse_record(value, kafka_ms, fields, limits)
            got: Any = {k: to_us(v) if k in timestamps and v is not None else v for k, v in event.items()}
        except InvalidRecord as bad:
            got = bad.reason
        if not same_values(got, expected):
            mismatches.append(f"{(value or b'')[:100]!r}: spark {expected!r}, consumer {got!r}")
    assert not mismatches, "\n".join(mismatches)


def same_values(got: Any, expected: Any) -> bool:
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_values(got[k], expected[k]) for k in got)
    if isinstance(got, float) and isinstance(expected, float) and math.isnan(got):
        return math.isnan(expected)
    return bool(got == expected) and type(got) is type(expected)


def test_consumer_statistics_match_spark_aggregate_windows(spark: SparkSession) -> None:
    """Random windows of 1..40 values with many ties: every metric, Spark vs arus.pyengine.windowing."""
    rng = random.Random(23)
    events = []
    for device in ("d1", "d2", "d3", "d4"):
        for minute in range(4):
            for _ in range(rng.randint(1, 40)):
                at = START + timedelta(minutes=minute, seconds=rng.uniform(0, 59.999))
                events.append((f"e{len(events)}", device, round(rng.gauss(20, 5), rng.choice([0, 1, 3])), at))
    df = spark.createDataFrame(
        events, "event_id string, device_id string, value double, event_time timestamp"
    )
    spark_rows = {
        (r["device_id"], r["start"]): r.asDict()
        for r in aggregate_windows(df, ["device_id"], ["value"], "event_time", "1 minute")
        .withColumn("start", F.unix_micros("window_start"))
        .drop("window_start", "window_end")
        .collect()
    }
    spec = WindowSpec(("device_id",), ("value",), "event_time", window_us("1 minute"), 10**12)
    engine = Aggregator(spec)
    for i, (eid, device, value, at) in enumerate(events):
        engine.add({"event_id": eid, "device_id": device, "value": value, "event_time": at}, ("t", 0, i))
    mine = {(r["device_id"], to_us(r["window_start"])): r for r in engine.end_batch()}
    assert mine.keys() == spark_rows.keys()
    for key, row in mine.items():
        expected = spark_rows[key]
        assert row["count"] == expected["count"]
        for metric in ("mean", "min", "max", "stddev", "p50", "p95"):
            name = f"value_{metric}"
            assert close(row[name], expected[name]), (key, name, row[name], expected[name])


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


# --- the same topic through both ---------------------------------------------------------------------------

MALFORMED = [
    b"{not json",
    b'{"event_id":"m2","device_id":"dev-0001","value":"hot","event_time":"2026-03-01T12:00:00Z"}',
    b"",
    b"\xff\xfe\x00",
    b'{"event_id":"m5","device_id":" ","value":1,"event_time":"2026-03-01T12:00:00Z"}',
    b'{"event_id":"m6","device_id":"dev-0002","value":1}',
    b'{"event_id":"m7","device_id":"dev-0003","value":1,"event_time":"1999-12-31T23:59:59Z"}',
    b'{"event_id":"m8","device_id":"dev-0004","value":1,"event_time":"2026-03-01T12:00:00Z","seq":1.5}',
]
# Unusual but valid for Spark's reader, so valid for the consumer too: they are aggregated. (No NaN:
# Spark's percentile_approx over a NaN depends on how rows are split; see docs/consumer.md.)
ODD_BUT_VALID = [
    b"{'event_id':'odd1','device_id':'dev-0000','value':1.5,'event_time':'2026-03-01 12:00:05'}",
    b'{"event_id":"odd2","device_id":"dev-0000","value":2,"event_time":"2026-03-01T19:00:06+07:00"} tail',
    b'{"event_id":"odd3","device_id":"dev-0000","value":"x","value":1E2,"event_time":"2026-03-01T12:00:07Z"}',
]


# Keyed by a name [clean] normalises too, so a consumer that did not clean would key other windows.
KEYS = ("device_id", "site")
# Reads cleaned values: each value bound is near the median in canonical units, which raw Fahrenheit,
# Kelvin or kPa readings are not; " JAKARTA" and "Temperature" match nothing uncleaned.
WHERE = (
    "(kind = temperature and value >= 26) "
    "or (site in ('jakarta', 'medan') and kind != humidity and value < 1011)"
)


def messy(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A reading as a careless source sends it: other units, names in other cases and padded with
    spaces, decimals past the sensor's; the shipped [clean] makes it a canonical reading again."""
    out = dict(event)
    value, roll = float(event["value"]), rng.random()
    if event["kind"] == "temperature" and roll < 0.3:
        out["unit"], out["value"] = rng.choice(["F", " °f", "fahrenheit"]), value * 9 / 5 + 32
    elif event["kind"] == "temperature" and roll < 0.45:
        out["unit"], out["value"] = "K", value + 273.15
    elif event["kind"] == "pressure" and roll < 0.3:
        out["unit"], out["value"] = "kPa", value / 10
    elif event["kind"] == "power" and roll < 0.3:
        out["unit"], out["value"] = "kW", value / 1000
    elif roll < 0.6:
        out["value"] = value + 0.00049
    if rng.random() < 0.4:
        out["site"] = rng.choice([f" {event['site'].upper()} ", event["site"].title(), f"{event['site']}  "])
    if rng.random() < 0.3:
        out["kind"] = rng.choice([event["kind"].title(), f" {event['kind']}"])
    return out


def rows_by_key(frame: DataFrame) -> dict[str, dict[str, Any]]:
    """Aggregate rows as the jobs publish them: their record key -> the row as Spark's to_json writes it."""
    as_json = frame.select(
        aggregate_key_column(KEYS).alias("key"),
        F.to_json(F.struct(*frame.columns), {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"}).alias("row"),
    ).collect()
    return {r["key"]: json.loads(r["row"]) for r in as_json}


def latest_by_key(config: Config, topic: str) -> dict[str, dict[str, Any]]:
    """What a reader of the at-least-once output keeps: the last record per key."""
    return {r.key.decode(): json.loads(r.value) for r in topic_records(config, topic)}


def dead_letter_set(config: Config, topic: str) -> set[tuple[Any, ...]]:
    return {
        (
            r.key,
            r.value,
            *(dict(r.headers)[h] for h in ("error", "source_topic", "source_partition", "source_offset")),
        )
        for r in topic_records(config, topic)
    }


def same_rows(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    return got.keys() == expected.keys() and all(
        close(got[k], expected[k]) if isinstance(got[k], float) else got[k] == expected[k] for k in got
    )


def test_consumer_and_spark_job_agree_on_one_topic(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = {
        "in": new_topic("in", 3),
        "spark_out": new_topic("spark-out", 3),
        "spark_dead": new_topic("spark-dead"),
        "out": new_topic("consumer-out", 3),
        "dead": new_topic("consumer-dead"),
        "late": new_topic("consumer-late"),
    }
    gen = readings(fleet(20, seed=9), START, 10.0, seed=9)
    events = [next(gen) for _ in range(20 * 150)]  # 25 minutes of event time
    records: list[Record] = []
    rng = random.Random(9)
    for i, event in enumerate(events):
        sent = to_record(messy(event, rng), topics["in"])
        records.append(sent)
        if i == 40:  # among events of their own minute, so on time for both (see the watermark rules)
            records += [Record(topics["in"], "dev-0000", value) for value in ODD_BUT_VALID]
        if rng.random() < 0.01:  # a retrying producer sends it again
            records.append(sent)
        if i % 400 == 7:
            records.append(Record(topics["in"], f"bad-{i}", MALFORMED[(i // 400) % len(MALFORMED)]))
    records += [Record(topics["in"], "bad-tail", value) for value in MALFORMED]
    produce(config, records)

    started = time.monotonic()
    keys = ("--keys", ",".join(KEYS))
    spark_topics = {"in": topics["in"], "out": topics["spark_out"], "dead": topics["spark_dead"]}
    run_aggregate(spark_topics, tmp_path, *keys)
    spark_s = time.monotonic() - started
    print(f"\nspark job {spark_s:.1f}s", flush=True)

    counters = run(
        config, consumer_settings(config, topics, f"parity-{topics['in']}", *keys, "--until-idle", "3")
    )
    print(counters.line())

    unique = len(events) + len(ODD_BUT_VALID)
    malformed = [r.value for r in records if r.key is not None and r.key.startswith("bad")]
    assert (counters.records, counters.dead, counters.late) == (len(records), len(malformed), 0)
    assert counters.aggregated == unique

    from_spark = latest_by_key(config, topics["spark_out"])
    from_consumer = latest_by_key(config, topics["out"])
    assert sorted(from_consumer) == sorted(from_spark)
    assert sum(row["count"] for row in from_consumer.values()) == unique
    different = [k for k in from_spark if not same_rows(from_consumer[k], from_spark[k])]
    assert not different, [(from_spark[k], from_consumer[k]) for k in different[:3]]

    gold = rows_by_key(spark.read.format("delta").load(str(tmp_path / "gold")))
    assert gold.keys() == from_consumer.keys()
    assert all(same_rows(from_consumer[k], gold[k]) for k in gold)
    # [clean] changed what was sent: the keys carry only the four sites' cleaned names.
    assert {k.split("|")[1] for k in gold if k.count("|") == 2} == {"bandung", "jakarta", "medan", "surabaya"}

    spark_dead = dead_letter_set(config, topics["spark_dead"])
    consumer_dead = dead_letter_set(config, topics["dead"])
    assert sorted(d[1] for d in consumer_dead) == sorted(malformed)
    assert consumer_dead == spark_dead
    assert topic_records(config, topics["late"]) == []

    # The same records through a compound --where: the consumer's rows are Spark's silver, filtered
    # by the Column the same expression gives, then windowed (a batch query, no second job run).
    started = time.monotonic()
    filtered = {**topics, "out": new_topic("consumer-where", 3)}
    # Until idle, as the first run: the output must hold every partition's windows.
    where_run = consumer_settings(
        config, filtered, f"where-{topics['in']}", *keys, "--where", WHERE, "--until-idle", "3"
    )
    counters = run(config, where_run)
    bronze = spark.createDataFrame(
        [
            (r.key.encode() if r.key else None, r.value, r.topic, 0, i, KAFKA_TIME)
            for i, r in enumerate(records)
        ],
        RAW_KAFKA,
    )
    ddl = config.schema(config.stream.schema)
    silver, _ = bronze_to_silver(bronze, schema_from_ddl(ddl), config.stream, clean=config.clean)
    types = cleaned_types({f.name: f.type for f in parse_schema(ddl)}, config.clean)
    kept = silver.where(filter_column(parse_filter(WHERE, types)))
    expected = rows_by_key(silver_to_gold(kept, config.stream, replace(config.aggregate, keys=KEYS)))
    from_consumer = latest_by_key(config, filtered["out"])
    assert from_consumer.keys() == expected.keys()
    assert all(same_rows(from_consumer[k], expected[k]) for k in expected)
    assert 0 < sum(row["count"] for row in expected.values()) == counters.aggregated < unique
    assert counters.filtered == unique - counters.aggregated
    print(f"filtered run and its Spark batch {time.monotonic() - started:.1f}s", flush=True)
