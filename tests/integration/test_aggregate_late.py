"""The main job's late-data side output against Spark's own late rule, through the real broker.

Several micro-batches (one partition, --max-offsets-per-trigger) let the watermark advance, so
events sent well behind it are dropped by Spark's deduplication; the job must find exactly those
again and write them to the late table and topic, and its progress lines must count them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from kafka import KafkaConsumer
from pyspark.sql import Column, DataFrame, SparkSession
from streaming_data import (
    MALFORMED,
    START,
    Sent,
    bad,
    good,
    on_time_events,
    produce,
    reading,
    spark_late,
)
from support import gold_frame, gold_oracle, run_aggregate

from arus.config import Config
from arus.runtime import writers
from arus.runtime.microbatch import InputCounts, count_input, executed_counts

pytestmark = pytest.mark.integration

PER_BATCH = 45  # three batches: the late events arrive in the third
DEVICES = 4


def dataset() -> list[Sent]:
    """4 devices, a reading every 10 s for 5 minutes; repeats, malformed and late records mixed in."""
    sent = [
        good(
            reading(
                f"d{d}", r, round(20 + ((r * 7 + d * 3) % 11) * 0.37, 2), START + timedelta(seconds=10 * r)
            )
        )
        for r in range(30)
        for d in range(DEVICES)
    ]
    for position, value in zip((15, 70, 71, 99, 104), MALFORMED, strict=True):
        sent.insert(position, bad(value))
    for position in (20, 60, 90):  # a retrying producer sends an event again a few records later
        original = sent[position - 3]
        assert original.event is not None
        sent.insert(position, good(original.event, "dup"))
    for k, position in enumerate((95, 100, 110)):  # sent after 10 minutes of event time had passed
        sent.insert(
            position,
            good(reading("d1", 900 + k, 99.0, START - timedelta(minutes=10) + timedelta(seconds=k)), "late"),
        )
    return sent


def test_late_events_go_to_the_late_table_and_topic_and_are_counted(
    spark: SparkSession,
    config: Config,
    new_topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = {name: new_topic(name) for name in ("in", "out", "dead", "late")}
    sent = dataset()
    produce(config, topics["in"], sent)

    executed: list[InputCounts | None] = []
    counted_again: list[InputCounts] = []

    def spy(checkpoint: str) -> InputCounts | None:
        executed.append(executed_counts(checkpoint))
        return executed[-1]

    def count_spy(checked: DataFrame | None, late: Column | None = None) -> InputCounts:
        counted_again.append(count_input(checked, late))
        return counted_again[-1]

    monkeypatch.setattr(writers, "executed_counts", spy)
    monkeypatch.setattr(writers, "count_input", count_spy)
    run_aggregate(
        topics, tmp_path, "--late-topic", topics["late"], "--max-offsets-per-trigger", str(PER_BATCH)
    )
    output = capsys.readouterr().out
    print(output)

    expected_late = spark_late(sent, PER_BATCH, timedelta(minutes=2))
    assert {e["event_id"] for e in expected_late} == {
        "d1-900",
        "d1-901",
        "d1-902",
    }  # the data does what it says
    late = spark.read.format("delta").load(str(tmp_path / "late")).toPandas()
    assert sorted(late["event_id"]) == sorted(str(e["event_id"]) for e in expected_late)
    assert set(late["stage"]) == {"aggregates"}
    assert (pd.to_datetime(late["event_time"], utc=True) <= pd.to_datetime(late["watermark"], utc=True)).all()
    by_id = {s.event["event_id"]: s.value for s in sent if s.role == "late" and s.event}
    assert all(bytes(row.value) == by_id[row.event_id] for row in late.itertuples())

    expected = gold_oracle(on_time_events(sent, expected_late))
    gold = spark.read.format("delta").load(str(tmp_path / "gold")).toPandas()
    assert not gold.duplicated(["device_id", "window_start"]).any()
    pd.testing.assert_frame_equal(gold_frame(gold, expected), expected, check_dtype=False, rtol=1e-9)

    dead = spark.read.format("delta").load(str(tmp_path / "deadletter")).toPandas()
    assert sorted(bytes(v) for v in dead["value"]) == sorted(MALFORMED)

    consumer = KafkaConsumer(
        topics["late"], auto_offset_reset="earliest", consumer_timeout_ms=3000, **config.kafka.client_kwargs()
    )
    try:
        published = [(m.value, dict(m.headers)) for m in consumer]
    finally:
        consumer.close()
    assert sorted(v for v, _ in published) == sorted(by_id.values())
    assert {h["reason"] for _, h in published} == {b"late"}

    # Every batch that read records counted them as it ran: none paid for a pass over its input
    # to count them again, and the counts add up to what was sent.
    assert executed and None not in executed and not counted_again
    assert sum(c.total for c in executed if c) == len(sent)
    assert sum(c.dead for c in executed if c) == len(MALFORMED)
    assert sum(c.late for c in executed if c) == len(expected_late)

    # Each batch's progress line counts the late events the job found, which is what Spark dropped.
    counted = re.findall(r"^aggregates batch \d+: .*late (\d+) \(Spark dropped (\d+)\)", output, re.M)
    assert counted and all(mine == spark_count for mine, spark_count in counted)
    assert sum(int(mine) for mine, _ in counted) == len(expected_late)
    assert re.search(r"^aggregates batch \d+: .*late \d+ .*, dead letters \d+", output, re.M)
    assert re.search(
        r"^aggregates: \d+ batches, \d+ rows .* events/s\), late 3, dead letters 5$", output, re.M
    )
