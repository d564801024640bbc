"""The multi-topic pipeline end to end through the real broker, interrupted and restarted once.

A seeded fleet's readings, with repeated sends, malformed records, late events, out-of-order (but
on-time) events, units to convert, names to normalise and readings that should raise each kind of
alert, go to a one-partition raw topic. The pipeline runs with availableNow, stage by stage; the
clean stage reads micro-batches of PER_BATCH records, is stopped after its first batch (possibly
in the middle of the next one) and is run again on the same checkpoint. Every table must then
equal an oracle computed with pandas from what was sent, each row exactly once.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import pipeline
from kafka import KafkaConsumer
from pyspark.sql import SparkSession
from streaming_data import (
    MALFORMED,
    START,
    Sent,
    bad,
    good,
    iso,
    on_time_events,
    produce,
    reading,
    round_half_up,
    spark_late,
)
from support import gold_frame, gold_oracle

from arus.config import Config, TopicConfig
from arus.ops.topics import ensure_topics
from arus.runtime import writers
from arus.runtime.microbatch import executed_drops

# Minutes on a busy 2-core box; the module fixture runs every stage once for all the tests below.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

PER_BATCH = 120
ROUNDS = 45  # a reading every 10 s: 7.5 minutes of event time
WATERMARK = timedelta(minutes=2)
# device -> kind, site in the device topic, unit sent, normal value, what the reading sends as site
FLEET = {
    "d0": ("temperature", "jakarta", "C", 22.0, None),  # no site: the device topic supplies it
    "d1": ("humidity", "bandung", "%", 50.0, " Bandung "),  # a site to normalise
    "d2": ("pressure", "medan", "hPa", 1010.0, "medan"),
    "d3": ("power", "surabaya", "W", 250.0, "surabaya"),
    "d4": ("temperature", "jakarta", "F", 71.6, "Jakarta"),  # Fahrenheit, converted to C
    "d5": ("humidity", "medan", "%", 55.0, "medan"),
    "d6": ("pressure", "bandung", "hPa", 1005.0, "bandung"),
    "d7": ("power", "unknown", "W", 300.0, "surabaya"),  # not in the device topic
}
DEVICE_RECORDS = {d: (kind, site, unit) for d, (kind, site, unit, _, _) in FLEET.items() if d != "d7"}
NOMINAL = {
    "temperature": (15.0, 30.0),
    "humidity": (30.0, 70.0),
    "pressure": (990.0, 1030.0),
    "power": (50.0, 500.0),
}


def value_of(device: str, r: int, rng: random.Random) -> float:
    _, _, unit, normal, _ = FLEET[device]
    if device == "d0" and r == 30:
        return 45.0  # temperature above its bound and its range, and far from its recent readings
    if device == "d1" and r == 25:
        return 95.0  # humidity above its bound
    if device == "d2" and 10 <= r <= 17:
        return 1010.0  # stuck for eight readings
    if unit == "F":
        return round(normal + rng.randint(-10, 10) / 10, 1)
    return round(normal + rng.gauss(0, 0.5), 2)


def dataset() -> list[Sent]:
    rng = random.Random(7)
    sent: list[Sent] = []
    for r in range(ROUNDS):
        for device, (kind, _, unit, _, site) in FLEET.items():
            if device == "d5" and r > 8:  # silent from 80 s on
                continue
            if device == "d6" and 5 <= r <= 37:  # a gap of 340 s
                continue
            extra: dict[str, object] = {"kind": kind.upper() if device == "d3" else kind, "unit": unit}
            if site is not None:
                extra["site"] = site
            value = value_of(device, r, rng)
            sent.append(good(reading(device, r, value, START + timedelta(seconds=10 * r), **extra)))
    # d3's reading of round 20 arrives 20 s late: out of order, but within the watermark
    moved = next(i for i, s in enumerate(sent) if s.event and s.event["event_id"] == "d3-20")
    sent.insert(moved + 14, sent.pop(moved))
    for position in (30, 100, 170, 200, 230, 290):  # a producer retry re-sends an event
        original = sent[position - 3]
        assert original.event is not None
        sent.insert(position, good(original.event, "dup"))
    for position, value in zip((11, 77, 140, 211, 260), MALFORMED, strict=True):
        sent.insert(position, bad(value))
    for k, position in enumerate((250, 262, 275, 281)):  # ten minutes behind, sent in the third batch
        late = reading(
            "d1",
            900 + k,
            48.0,
            START - timedelta(minutes=10) + timedelta(seconds=k),
            kind="humidity",
            unit="%",
        )
        sent.insert(position, good(late, "late"))
    return sent


# --- oracles: pandas and plain Python over what was sent -----------------------------------------


def silver_oracle(events: list[dict[str, object]]) -> pd.DataFrame:
    """Cleaning and enrichment restated: device fields fill gaps, names lower-cased, F to C, 3 decimals."""
    rows = []
    for e in events:
        device = DEVICE_RECORDS.get(str(e["device_id"]))
        kind = e.get("kind") or (device[0] if device else None)
        site = e.get("site") or (device[1] if device else None)
        unit = str(e.get("unit") or (device[2] if device else ""))
        value = float(e["value"])  # type: ignore[arg-type]
        if unit == "F":
            unit, value = "C", (value - 32) * 5 / 9
        low, high = NOMINAL[device[0]] if device else (None, None)
        rows.append(
            {
                "event_id": e["event_id"],
                "device_id": e["device_id"],
                "kind": str(kind).strip().lower() if kind else None,
                "site": str(site).strip().lower() if site else None,
                "unit": unit,
                "value": round_half_up(value),
                "seq": e["seq"],
                "event_time": pd.Timestamp(str(e["event_time"])),
                "device_low": low,
                "device_high": high,
            }
        )
    return pd.DataFrame(rows).sort_values("event_id").reset_index(drop=True)


def alerts_oracle(silver: pd.DataFrame, config: Config) -> set[str]:
    """The [alerts] rules restated over the whole silver table, as alert ids."""
    rules = config.alerts
    ids: set[str] = set()
    for bound in rules.bounds:
        kind = silver["kind"] == bound.kind
        broken = silver["value"] > bound.limit if bound.op == "above" else silver["value"] < bound.limit
        ids |= {f"{bound.name}|{e}" for e in silver[kind & broken]["event_id"]}
    # NaN (a device with no metadata) is outside nothing.
    value = silver[rules.value_field]
    outside = (value < silver[rules.range_low_field]) | (value > silver[rules.range_high_field])
    ids |= {f"range|{e}" for e in silver[outside]["event_id"]}
    n, limit = rules.zscore_readings, timedelta(minutes=rules.silent_minutes)
    clock = silver["event_time"].max()
    for device, rows in silver.sort_values(["event_time", "event_id"]).groupby("device_id"):
        values, times, events = list(rows["value"]), list(rows["event_time"]), list(rows["event_id"])
        previous = pd.Series(values).shift(1).rolling(n)
        mean, sd = previous.mean(), previous.std(ddof=1)
        for i, value in enumerate(values):
            if i >= n and sd[i] > 0 and abs(value - mean[i]) / sd[i] > rules.zscore_threshold:
                ids.add(f"zscore|{events[i]}")
            k = rules.stuck_readings
            run = values[max(0, i - k + 1) : i + 1]
            if len(run) == k and len(set(run)) == 1 and (i < k or values[i - k] != value):
                ids.add(f"stuck|{events[i]}")
        silences = [a for a, b in itertools.pairwise(times) if b - a > limit]
        if clock - times[-1] > limit:
            silences.append(times[-1])
        ids |= {f"silent|{device}|{iso(t.to_pydatetime())}" for t in silences}
    return ids


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Run:
    sent: list[Sent]
    topics: dict[str, str]
    lake: Path
    stopped_after: int
    seconds: float
    drops: list[int | None]  # what each batch of the clean stage's second run dropped as late

    def table(self, spark: SparkSession, name: str) -> pd.DataFrame:
        return spark.read.format("delta").load(str(self.lake / name)).toPandas()


def read_topic(config: Config, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(
        topic, auto_offset_reset="earliest", consumer_timeout_ms=3000, **config.kafka.client_kwargs()
    )
    try:
        return [(m.key, m.value, dict(m.headers)) for m in consumer]
    finally:
        consumer.close()


def run_quietly(args: list[str]) -> None:
    try:
        pipeline.main(args)
    except RuntimeError as exc:
        print(f"first run: {exc}")


def stop_clean_stage_after_first_batch(spark: SparkSession, running: threading.Thread) -> int:
    """Stop the clean stage's query once a batch of it has completed; the batch it was on then."""
    while running.is_alive():
        for query in spark.streams.active:
            if query.name == "clean" and query.lastProgress is not None:
                batch = int(query.lastProgress["batchId"])
                query.stop()
                return batch
        time.sleep(0.2)
    raise AssertionError("the pipeline finished before its clean stage could be stopped")


@pytest.fixture(scope="module")
def run(
    spark: SparkSession, config: Config, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    suffix = f"{time.time_ns():x}"
    names = {"raw": 1, "devices": 1, "clean": 1, "deadletter": 1, "late": 1, "aggregates": 1, "alerts": 1}
    topics = {name: f"test.pipeline.{name}.{suffix}" for name in names}
    ensure_topics(
        config,
        kafka,
        topics=tuple(
            TopicConfig(topics[n], p, -1, "compact" if n == "devices" else "delete") for n, p in names.items()
        ),
    )
    devices = [
        good({"device_id": d, "kind": k, "site": s, "unit": u, "low": NOMINAL[k][0], "high": NOMINAL[k][1]})
        for d, (k, s, u) in DEVICE_RECORDS.items()
    ]
    produce(config, topics["devices"], devices)
    sent = dataset()
    produce(config, topics["raw"], sent)

    folder = tmp_path_factory.mktemp("pipeline")
    common = [
        "--available-now",
        "--lake", str(folder / "lake"),
        "--checkpoint", str(folder / "checkpoints"),
        *[arg for name, topic in topics.items() for arg in (f"--{name}-topic", topic)],
    ]  # fmt: skip
    clean = ["--stages", "clean", "--max-offsets-per-trigger", str(PER_BATCH), *common]
    started = time.monotonic()
    # Stage by stage, as --available-now runs them, so that only the clean stage (where the
    # watermark needs several batches to drop anything) pays for small micro-batches.
    assert pipeline.main(["--stages", "bronze", *common]) == 0
    # A stop in the middle of a batch may surface as that query failing: the first run may end
    # either way. What matters is that the second run on the same checkpoint puts it right.
    first = threading.Thread(target=run_quietly, args=(clean,))
    first.start()
    try:
        stopped_after = stop_clean_stage_after_first_batch(spark, first)
    finally:
        first.join()
    drops: list[int | None] = []

    def spy(checkpoint: str) -> int | None:
        drops.append(executed_drops(checkpoint))
        return drops[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writers, "executed_drops", spy)
        assert pipeline.main(clean) == 0
    assert pipeline.main(["--stages", "aggregate,alerts", *common]) == 0
    yield Run(sent, topics, folder / "lake", stopped_after, time.monotonic() - started, drops)


def test_the_data_set_has_what_the_test_needs(run: Run) -> None:
    roles = [s.role for s in run.sent]
    assert (roles.count("dup"), roles.count("bad"), roles.count("late")) == (6, 5, 4)
    assert len(run.sent) > 2 * PER_BATCH and run.stopped_after >= 0
    print(f"pipeline: two runs over {len(run.sent)} records took {run.seconds:.1f}s")


def test_bronze_holds_every_record_as_received_once(spark: SparkSession, run: Run) -> None:
    bronze = run.table(spark, "bronze").sort_values("offset")
    assert list(bronze["offset"]) == list(range(len(run.sent)))
    assert [bytes(v) if v is not None else b"" for v in bronze["value"]] == [s.value for s in run.sent]
    assert set(bronze["topic"]) == {run.topics["raw"]}


def test_dead_letters_are_exactly_the_malformed_records(
    spark: SparkSession, config: Config, run: Run
) -> None:
    dead = run.table(spark, "deadletter")
    assert not dead.duplicated(["partition", "offset"]).any()
    assert sorted(bytes(v) if v is not None else b"" for v in dead["value"]) == sorted(MALFORMED)
    published = read_topic(config, run.topics["deadletter"])
    assert sorted(v or b"" for _, v, _ in published) == sorted(MALFORMED)


def test_late_output_is_exactly_what_the_watermark_dropped(
    spark: SparkSession, config: Config, run: Run
) -> None:
    expected = spark_late(run.sent, PER_BATCH, WATERMARK)
    assert sorted(str(e["event_id"]) for e in expected) == ["d1-900", "d1-901", "d1-902", "d1-903"]
    late = run.table(spark, "late")
    assert not late.duplicated(["stage", "partition", "offset"]).any()
    assert sorted(late["event_id"]) == sorted(str(e["event_id"]) for e in expected)
    assert set(late["stage"]) == {"clean"}  # the aggregate stage dropped nothing
    # Each clean batch knew from its own run whether it dropped anything, so only those re-read.
    assert run.drops and None not in run.drops and sum(d or 0 for d in run.drops) == len(expected)
    assert (pd.to_datetime(late["event_time"], utc=True) <= pd.to_datetime(late["watermark"], utc=True)).all()
    published = read_topic(config, run.topics["late"])
    assert {v for _, v, _ in published} == {s.value for s in run.sent if s.role == "late"}


def test_silver_is_clean_deduplicated_and_enriched(spark: SparkSession, config: Config, run: Run) -> None:
    events = on_time_events(run.sent, spark_late(run.sent, PER_BATCH, WATERMARK))
    expected = silver_oracle(events)
    silver = run.table(spark, "silver")
    assert not silver.duplicated(["event_id"]).any()
    got = silver.sort_values("event_id").reset_index(drop=True)[expected.columns]
    got["event_time"] = pd.to_datetime(got["event_time"], utc=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)
    # A multiset: the stop and restart must not publish a reading twice (write_kafka_once).
    published = Counter(json.loads(v)["event_id"] for _, v, _ in read_topic(config, run.topics["clean"]))
    assert published == Counter(expected["event_id"])


def test_gold_equals_the_pandas_oracle(spark: SparkSession, config: Config, run: Run) -> None:
    events = on_time_events(run.sent, spark_late(run.sent, PER_BATCH, WATERMARK))
    cleaned = silver_oracle(events).assign(
        event_time=lambda df: df["event_time"].map(lambda t: t.isoformat())
    )
    expected = gold_oracle(cleaned.to_dict("records"))
    gold = run.table(spark, "gold_aggregates")
    assert not gold.duplicated(["device_id", "window_start"]).any()
    pd.testing.assert_frame_equal(gold_frame(gold, expected), expected, check_dtype=False, rtol=1e-9)
    latest = {k.decode(): json.loads(v) for k, v, _ in read_topic(config, run.topics["aggregates"]) if k}
    assert {k: v["count"] for k, v in latest.items()} == {
        f"{r.device_id}|{r.window_start:%Y-%m-%dT%H:%M:%SZ}": r.count for r in expected.itertuples()
    }


def test_alerts_are_exactly_the_expected_ones(spark: SparkSession, config: Config, run: Run) -> None:
    events = on_time_events(run.sent, spark_late(run.sent, PER_BATCH, WATERMARK))
    expected = alerts_oracle(silver_oracle(events), config)
    assert {a.split("|")[0] for a in expected} >= {
        "temperature_high",
        "humidity_high",
        "range",
        "zscore",
        "stuck",
        "silent",
    }
    assert {"silent|d5|2026-03-02T08:01:20.000Z", "silent|d6|2026-03-02T08:00:40.000Z"} <= expected
    alerts = run.table(spark, "alerts")
    assert not alerts.duplicated(["alert_id"]).any()
    assert set(alerts["alert_id"]) == expected
    published = Counter(k.decode() for k, _, _ in read_topic(config, run.topics["alerts"]) if k)
    assert published == Counter(expected)
