"""The main job end to end: real broker, real Spark, real Delta, checked against a pandas oracle."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from kafka import KafkaConsumer
from pyspark.sql import SparkSession
from support import gold_frame, gold_oracle, produce, run_aggregate

from arus.config import Config
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import Record

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MALFORMED = [
    b"{not json",
    b'{"event_id":"x","device_id":"d","value":"hot","event_time":"2026-03-01T12:00:00Z"}',
]


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

    run_aggregate(topics, tmp_path)

    gold = spark.read.format("delta").load(str(tmp_path / "gold")).toPandas()
    expected = gold_oracle(events)
    got = gold_frame(gold, expected)
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
    run_aggregate(topics, tmp_path, "--max-offsets-per-trigger", "20")
    version_after_first = delta_version(spark, tmp_path / "gold")

    run_aggregate(topics, tmp_path)  # nothing new: the table must not change
    assert delta_version(spark, tmp_path / "gold") == version_after_first

    produce(config, [to_record(e, topics["in"]) for e in second])
    run_aggregate(topics, tmp_path, "--max-offsets-per-trigger", "20")

    gold = spark.read.format("delta").load(str(tmp_path / "gold")).toPandas()
    assert not gold.duplicated(["device_id", "window_start"]).any()
    expected = gold_oracle(first + second)
    pd.testing.assert_frame_equal(gold_frame(gold, expected), expected, check_dtype=False, rtol=1e-9)


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
