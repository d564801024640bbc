"""The kafka-python consumer's delivery semantics on the real broker: a restart mid-stream, a
failed output, and a second group member joining mid-stream all end with every window complete,
checked against aggregates computed here in plain Python."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from arus.jobs import consumer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from support import consumer_settings

from arus.config import Config, TopicConfig
from arus.io.producer import make_producer
from arus.ops.topics import ensure_topics
from arus.pyengine.consumer import WindowConsumer, make_consumer, run
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import SendLoop

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def produce(config: Config, topic: str, events: list[dict[str, Any]]) -> None:
    producer = make_producer(config.kafka, config.producer)
    try:
        summary = SendLoop(producer, progress=None).run(to_record(e, topic) for e in events)
    finally:
        producer.close()
    assert (summary.acked, summary.failed) == (len(events), 0)


def produce_events(config: Config, topic: str, devices: int, per_device: int) -> list[dict[str, Any]]:
    gen = readings(fleet(devices, seed=4), START, 10.0, seed=4)
    events = [next(gen) for _ in range(devices * per_device)]
    produce(config, topic, events)
    return events


def oracle(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Count, mean, min, max and the percentiles' definition per device and minute, by hand."""
    values: dict[str, list[float]] = defaultdict(list)
    for e in events:
        values[f"{e['device_id']}|{str(e['event_time'])[:16]}:00Z"].append(float(e["value"]))  # type: ignore[arg-type]
    out = {}
    for key, vs in values.items():
        ordered = sorted(vs)
        out[key] = {
            "count": len(vs),
            "value_mean": sum(vs) / len(vs),
            "value_min": ordered[0],
            "value_max": ordered[-1],
            "value_p50": next(v for v in ordered if sum(x <= v for x in vs) >= 0.5 * len(vs)),
            "value_p95": next(v for v in ordered if sum(x <= v for x in vs) >= 0.95 * len(vs)),
        }
    return out


def latest_by_key(config: Config, topic: str) -> dict[str, dict[str, Any]]:
    reader = KafkaConsumer(enable_auto_commit=False, **config.kafka.client_kwargs())
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        reader.assign(partitions)
        reader.seek_to_beginning()
        end = reader.end_offsets(partitions)
        latest: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while any(reader.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline
            for batch in reader.poll(timeout_ms=500).values():
                latest.update({r.key.decode(): json.loads(r.value) for r in batch})
        return latest
    finally:
        reader.close()


def assert_matches_oracle(got: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(expected)
    for key, row in expected.items():
        assert got[key]["count"] == row["count"], key
        for name, value in row.items():
            assert math.isclose(got[key][name], value, rel_tol=1e-9), (key, name)


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return {
        "in": new_topic("in", 3),
        "out": new_topic("out", 3),
        "dead": new_topic("dead"),
        "late": new_topic("late"),
    }


def committed(config: Config, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(**config.kafka.client_kwargs())
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {tp.partition: o.offset for tp, o in offsets.items() if o.offset >= 0}
    finally:
        admin.close()


def test_a_restart_mid_window_replays_and_completes_every_window(
    config: Config, topics: dict[str, str]
) -> None:
    events = produce_events(config, topics["in"], devices=12, per_device=100)
    group = f"restart-{topics['in']}"

    # 1,150 of 1,200 records in 3 partitions of 400: every partition is read, so each has open
    # windows to replay after the restart, whichever partition the next run's first poll returns.
    # (A rebalance during this run replays too; replays never count as records read.)
    first = run(config, consumer_settings(config, topics, group, "--max-records", "1150"))
    assert first.records == 1150
    held_back = committed(config, group)
    # Open windows hold the commit back, so fewer than the records read are committed.
    assert len(held_back) == 3 and sum(held_back.values()) < 1150

    # --max-records counts new records only, not the replays that rebuild the open windows (which
    # go on partition by partition, so this run stops before it has replayed them all).
    second = run(config, consumer_settings(config, topics, group, "--max-records", "30"))
    assert second.records == 30 and second.replayed > 0
    third = run(config, consumer_settings(config, topics, group, "--until-idle", "2"))
    assert third.records == len(events) - 1180
    runs = (first, second, third)
    assert (sum(r.late for r in runs), sum(r.duplicates for r in runs)) == (0, 0)
    assert_matches_oracle(latest_by_key(config, topics["out"]), oracle(events))


def test_nothing_is_committed_when_the_output_cannot_be_delivered(
    config: Config, topics: dict[str, str]
) -> None:
    events = produce_events(config, topics["in"], devices=4, per_device=30)
    group = f"fail-{topics['in']}"
    missing = dict(topics, out=f"{topics['out']}.missing")  # the broker does not create topics
    argv = ["--until-idle", "2"]

    # The command checks its topics first and says which one is missing.
    assert consumer.main(["--input-topic", missing["in"], "--output-topic", missing["out"], *argv]) == 2
    # Past that check (say the topic is deleted while it runs), a send that fails stops the run.
    with pytest.raises(KafkaError):
        run(config, consumer_settings(config, missing, group, *argv))
    assert committed(config, group) == {}

    ensure_topics(config, topics=(TopicConfig(missing["out"], 3, -1, "delete"),))
    counters = run(config, consumer_settings(config, missing, group, *argv))
    assert counters.records == len(events)  # everything again: at least once
    assert_matches_oracle(latest_by_key(config, missing["out"]), oracle(events))


def test_a_member_joining_mid_stream_takes_over_partitions_without_losing_windows(
    config: Config, topics: dict[str, str]
) -> None:
    """Member A reads half the data; B joins and takes partitions, whose open windows it rebuilds
    from the committed offsets; then the second half arrives and both aggregate it."""
    gen = readings(fleet(12, seed=4), START, 10.0, seed=4)
    halves = [[next(gen) for _ in range(12 * 50)] for _ in range(2)]
    group = f"rebalance-{topics['in']}"
    live = consumer_settings(config, topics, group)
    producers = [make_producer(config.kafka, config.producer) for _ in range(2)]
    members = [WindowConsumer(live, make_consumer(config.kafka, live), producer) for producer in producers]
    threads = [threading.Thread(target=member.run) for member in members]

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            assert all(t.is_alive() for t in threads if t.ident), "a member stopped"
            time.sleep(0.05)

    a, b = members
    try:
        produce(config, topics["in"], halves[0])
        threads[0].start()
        wait_for(lambda: a.counters.records == len(halves[0]), "A has read the first half")
        threads[1].start()
        wait_for(
            lambda: len(b.consumer.assignment()) > 0 and len(a.consumer.assignment()) < 3, "B has joined"
        )
        produce(config, topics["in"], halves[1])
        wait_for(lambda: a.counters.records + b.counters.records == 2 * len(halves[0]), "all is read")
        time.sleep(1)  # the idle settle step: the last commit
    finally:
        for member in members:
            member.stop_event.set()
        for thread in threads:
            thread.join(timeout=30)
        for member, producer in zip(members, producers, strict=True):
            member.consumer.close(autocommit=False)
            producer.close()

    assert b.counters.records > 0 and b.counters.replayed > 0  # B rebuilt the windows it took over
    assert a.counters.late + b.counters.late == 0
    assert_matches_oracle(latest_by_key(config, topics["out"]), oracle(halves[0] + halves[1]))
