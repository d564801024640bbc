"""The consumer's watermark on a multi-partition backlog, through the real broker.

kafka-python hands a backlog over one partition's fetch at a time, so a watermark taken from the
largest event time of each poll would make the partitions read later look late (two thirds of the
events of three partitions). Spark reads every partition in each micro-batch and marks none of them
late. The consumer keeps a watermark per partition and follows the slowest partition that still
has records to read; partitions with nothing to read (empty, or caught up) do not hold it back.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaAdminClient
from support import consumer_settings, topic_records

from arus.config import Config
from arus.io.producer import make_producer
from arus.pyengine import consumer as engine

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DELAY = timedelta(minutes=2)  # [aggregate] watermark, which the test passes explicitly


def reading(device: str, at: datetime, value: float) -> dict[str, Any]:
    return {
        "event_id": f"{device}@{at.isoformat()}",
        "device_id": device,
        "value": value,
        "event_time": at.isoformat().replace("+00:00", "Z"),
    }


def send(config: Config, topic: str, by_partition: dict[int, list[dict[str, Any]]]) -> None:
    """Each partition's readings to that partition, in order."""
    producer = make_producer(config.kafka, config.producer)
    try:
        futures = [
            producer.send(topic, partition=p, key=r["device_id"].encode(), value=json.dumps(r).encode())
            for p, rs in by_partition.items()
            for r in rs
        ]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close()


def committed_watermarks(config: Config, group: str) -> set[int | None]:
    admin = KafkaAdminClient(**config.kafka.client_kwargs())
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {json.loads(o.metadata)["watermark_us"] for o in offsets.values() if o.metadata}
    finally:
        admin.close()


def run(config: Config, topics: dict[str, str], group: str) -> engine.Counters:
    settings = consumer_settings(
        config, topics, group, "--window", "1 minute", "--watermark", "2 minutes", "--until-idle", "3"
    )
    return engine.run(config, settings)


def test_a_backlog_on_three_partitions_and_an_empty_one_has_no_late_events_spark_would_not_have(
    config: Config, new_topic: Callable[..., str]
) -> None:
    topics = {
        "in": new_topic("in", 4),
        "out": new_topic("out", 3),
        "dead": new_topic("dead"),
        "late": new_topic("late"),
    }
    group = f"backlog-{topics['in']}"
    # Partitions 0-2: 10 devices each, a reading every 10 s for 30 minutes, in event-time order, so
    # each partition alone spans far more than the 2-minute delay. Partition 3 stays empty.
    backlog = {
        p: [
            reading(f"p{p}-d{d}", START + timedelta(seconds=10 * i), float(i % 7 + d))
            for i in range(180)
            for d in range(10)
        ]
        for p in range(3)
    }
    send(config, topics["in"], backlog)
    events = [r for rs in backlog.values() for r in rs]

    first = run(config, topics, group)

    # Spark reads the whole backlog in one micro-batch (and in several, a slice of every partition
    # each): nothing in it is behind its watermark, so nothing may be late here either.
    assert (first.records, first.aggregated, first.late, first.dead) == (len(events), len(events), 0, 0)
    counts = Counter(f"{r['device_id']}|{r['event_time'][:16]}:00Z" for r in events)
    latest = {r.key.decode(): json.loads(r.value) for r in topic_records(config, topics["out"])}
    assert {k: row["count"] for k, row in latest.items()} == dict(counts)
    assert topic_records(config, topics["late"]) == []
    # Caught up on every partition: the empty one did not hold the watermark back, it is Spark's
    # (the largest event time less the delay).
    newest = START + timedelta(seconds=10 * 179)
    watermark_us = (newest - DELAY - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert committed_watermarks(config, group) == {watermark_us}

    # After the backlog, on partition 1: an event whose window has closed and one at the watermark
    # (late for Spark too: its watermark is the same), and one on time in the window of the latter,
    # which the restart rebuilds from records at or before the restored watermark.
    closed = reading("p1-d0", newest - DELAY - timedelta(minutes=3), 1.0)
    at_watermark = {**reading("p1-d2", newest - DELAY, 2.0), "event_id": "resent-late"}
    on_time = reading("p1-d2", newest - DELAY + timedelta(seconds=1), 3.0)
    send(config, topics["in"], {1: [closed, at_watermark, on_time]})

    second = run(config, topics, group)  # same group: restarts from its commits

    assert (second.records, second.late, second.aggregated) == (3, 2, 1)
    late = topic_records(config, topics["late"])
    assert sorted(json.loads(r.value)["event_id"] for r in late) == sorted(
        [closed["event_id"], at_watermark["event_id"]]
    )
    assert {dict(r.headers)["watermark"] for r in late} == {b"2026-03-01T12:27:50.000Z"}
    key = f"p1-d2|{on_time['event_time'][:16]}:00Z"
    latest = {r.key.decode(): json.loads(r.value) for r in topic_records(config, topics["out"])}
    assert latest[key]["count"] == counts[key] + 1

    # Once more: the replay now also reads the late event in that open window, which the commit
    # names as late, so it stays out of the window's count.
    again = reading("p1-d2", newest - DELAY + timedelta(seconds=2), 4.0)
    send(config, topics["in"], {1: [again]})
    third = run(config, topics, group)
    assert (third.records, third.late, third.aggregated) == (1, 0, 1)
    latest = {r.key.decode(): json.loads(r.value) for r in topic_records(config, topics["out"])}
    assert latest[key]["count"] == counts[key] + 2
