"""The main job end to end: real broker, real Spark, real Delta, checked against a pandas oracle."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from arus.jobs import aggregate
from kafka import KafkaConsumer
from pyspark.sql import SparkSession

from arus.config import Config
from arus.io.producer import make_producer
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import Record, SendLoop

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MALFORMED = [
    b"{not json",
    b'{"event_id":"x","device_id":"d","value":"hot","event_time":"2026-03-01T12:00:00Z"}',
]


def produce(config: Config, records: list[Record]) -> None:
    producer = make_producer(config.kafka, config.producer)
    try:
        summary = SendLoop(producer, progress=None).run(records)
    finally:
        producer.close()
    assert (summary.acked, summary.failed) == (len(records), 0)


def oracle(events: list[dict[str, object]]) -> pd.DataFrame:
    """Tumbling 1-minute aggregates computed with pandas alone, after dropping repeated event ids."""
    df = pd.DataFrame(events).drop_duplicates("event_id")
    df["window_start"] = pd.to_datetime(df["event_time"], utc=True).dt.floor("1min")
    groups = df.groupby(["device_id", "window_start"])["value"]
    out = groups.agg(
        count="count",
        value_mean="mean",
        value_min="min",
        value_max="max",
        value_stddev=lambda v: v.std(ddof=1),
        # Spark's percentile_approx on few values: the smallest value with at least p of them <= it.
        value_p50=lambda v: np.percentile(v, 50, method="inverted_cdf"),
        value_p95=lambda v: np.percentile(v, 95, method="inverted_cdf"),
    )
    return out.reset_index().sort_values(["device_id", "window_start"]).reset_index(drop=True)


def run_job(config: Config, tmp_path: Path, topics: dict[str, str], *extra: str) -> None:
    code = aggregate.main(
        [
            "--input-topic", topics["in"],
            "--output-topic", topics["out"],
            "--deadletter-topic", topics["dead"],
            "--table", str(tmp_path / "gold"),
            "--deadletter-table", str(tmp_path / "deadletter"),
            "--checkpoint", str(tmp_path / "checkpoint"),
            *extra,
        ]
    )  # fmt: skip
    assert code == 0


def test_aggregate_job_matches_pandas_oracle(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = {"in": new_topic("in", 3), "out": new_topic("out", 3), "dead": new_topic("dead")}
    gen = readings(fleet(6, seed=3), START, 10.0, seed=3)
    events = [next(gen) for _ in range(6 * 30)]  # 5 minutes of event time, 6 readings a minute
    duplicates = events[:4]  # sent twice, as a retrying producer would
    records = [to_record(e, topics["in"]) for e in events + duplicates]
    records += [Record(topics["in"], "bad", value) for value in MALFORMED]
    produce(config, records)

    run_job(config, tmp_path, topics)

    gold = spark.read.format("delta").load(str(tmp_path / "gold")).toPandas()
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)[oracle(events).columns]
    expected = oracle(events)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    assert int(got["count"].sum()) == len(events)

    dead = spark.read.format("delta").load(str(tmp_path / "deadletter")).toPandas()
    assert sorted(bytes(v) for v in dead["value"]) == sorted(MALFORMED)
    assert set(dead["error"]) == {"not a JSON object", "wrong type for field value: expected double"}

    latest = latest_by_key(config, topics["out"])
    assert len(latest) == len(expected)
    for row in expected.itertuples():
        key = f"{row.device_id}|{row.window_start:%Y-%m-%dT%H:%M:%SZ}"
        assert latest[key]["count"] == row.count
        assert latest[key]["value_mean"] == pytest.approx(row.value_mean, rel=1e-9)

    dead_records = read_all(config, topics["dead"])
    assert sorted(value for _, value, _ in dead_records) == sorted(MALFORMED)
    assert all(dict(headers)["error"] for _, _, headers in dead_records)


def test_restart_on_the_same_checkpoint_writes_each_row_once(
    spark: SparkSession, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = {"in": new_topic("in", 1), "out": new_topic("out"), "dead": new_topic("dead")}
    gen = readings(fleet(4, seed=5), START, 10.0, seed=5)
    first = [next(gen) for _ in range(4 * 12)]
    second = [next(gen) for _ in range(4 * 12)]

    produce(config, [to_record(e, topics["in"]) for e in first])
    run_job(config, tmp_path, topics, "--max-offsets-per-trigger", "20")
    version_after_first = delta_version(spark, tmp_path / "gold")

    run_job(config, tmp_path, topics)  # nothing new: the table must not change
    assert delta_version(spark, tmp_path / "gold") == version_after_first

    produce(config, [to_record(e, topics["in"]) for e in second])
    run_job(config, tmp_path, topics, "--max-offsets-per-trigger", "20")

    gold = spark.read.format("delta").load(str(tmp_path / "gold")).toPandas()
    assert not gold.duplicated(["device_id", "window_start"]).any()
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)
    expected = oracle(first + second)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False, rtol=1e-9)


def delta_version(spark: SparkSession, path: Path) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(path)).history(1).collect()[0]["version"])


def read_all(config: Config, topic: str) -> list[tuple[str | None, bytes, list[tuple[str, bytes]]]]:
    consumer = KafkaConsumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        **config.kafka.client_kwargs(),
    )
    try:
        return [(m.key.decode() if m.key else None, m.value, m.headers) for m in consumer]
    finally:
        consumer.close()


def latest_by_key(config: Config, topic: str) -> dict[str, dict[str, object]]:
    """What a consumer of the at-least-once output sees after keeping the last record per key."""
    latest: dict[str, dict[str, object]] = {}
    for key, value, _ in read_all(config, topic):
        assert key is not None
        latest[key] = json.loads(value)
    return latest
