"""Scenarios 2 and 3: brokers SIGKILLed while producers (acks=all, idempotence) send.

2. The single broker dies under a producer and a live streaming job, and comes back: every
   acknowledged event is in the topic exactly once, every other one was reported to the producer
   as an error, and the job either rides through or fails clearly and recovers on restart.
3. A 3-broker cluster (replication factor 3, min ISR 2) loses the leader of a partition while a
   producer and a consumer run: no acknowledged event is lost and both keep going.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from arus.jobs import aggregate
from faultkit import (
    HEAP,
    json_record,
    make_topics,
    read_delta,
    read_topic,
    reading,
    wait_for,
    write_config,
)
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession
from support import job_args

from arus.config import Config, KafkaConfig
from arus.io.producer import make_producer
from arus.ops import broker
from arus.sources.send import Record, SendLimits, SendLoop

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]


class Sender(threading.Thread):
    """Sends readings 0..n-1 at `rate` per second and keeps what each delivery callback said."""

    def __init__(self, kafka: KafkaConfig, config: Config, topic: str, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.records = [json_record(topic, reading(i)) for i in range(n)]
        self.producer = make_producer(kafka, config.producer, delivery_timeout_ms=60000)
        self.acked: list[str] = []
        self.failed: dict[str, str] = {}
        self.acked_at: list[float] = []
        self.loop = SendLoop(self.producer, progress=None, on_ack=self._ack, on_error=self._error)
        self.rate = rate
        self.error: BaseException | None = None

    @staticmethod
    def event_id(record: Record) -> str:
        return str(json.loads(record.value)["event_id"])

    def _ack(self, record: Record) -> None:
        self.acked.append(self.event_id(record))
        self.acked_at.append(time.monotonic())

    def _error(self, record: Record, exc: Exception) -> None:
        self.failed[self.event_id(record)] = type(exc).__name__

    def run(self) -> None:
        try:
            self.loop.run(self.records, SendLimits(rate=self.rate))
        except BaseException as exc:  # the test thread reports it
            self.error = exc
        finally:
            self.producer.close(timeout=10)

    def longest_silence(self) -> float:
        """The longest time between two acknowledgements: how long the failover stalled sends."""
        gaps = [b - a for a, b in zip(self.acked_at, self.acked_at[1:], strict=False)]
        return round(max(gaps, default=0.0), 1)


def delivery_figures(sender: Sender, in_topic: Counter[str]) -> dict[str, object]:
    """Check and count: acked events exactly once, nothing unaccounted for, no duplicates."""
    sent = {sender.event_id(r) for r in sender.records}
    acked = set(sender.acked)
    assert len(sender.acked) == len(acked), "an event was acknowledged twice"
    assert not acked & set(sender.failed), "an event was both acknowledged and failed"
    assert acked | set(sender.failed) == sent, "an event was neither acknowledged nor reported failed"
    lost = [e for e in acked if in_topic[e] == 0]
    duplicated = [e for e, n in in_topic.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged events lost: {lost[:5]}"
    assert not duplicated, f"{len(duplicated)} events written twice: {duplicated[:5]}"
    return {
        "sent": len(sent),
        "acked": len(acked),
        "reported_failed": len(sender.failed),
        "failure_kinds": dict(Counter(sender.failed.values())),
        "failed_but_written": sum(1 for e in sender.failed if in_topic[e]),
        "acked_lost": len(lost),
        "duplicates": len(duplicated),
        "longest_ack_silence_s": sender.longest_silence(),
    }


def event_ids(kafka: KafkaConfig, topic: str) -> Counter[str]:
    return Counter(json.loads(value)["event_id"] for _, value, _ in read_topic(kafka, topic))


def test_broker_killed_under_producer_and_live_job(
    private_broker: Config, spark: SparkSession, tmp_path: Path, isolated_env, figures: dict[str, object]
) -> None:
    config = private_broker
    (node,) = broker.nodes_for(config)
    topics = dict(
        zip(["in", "out", "dead"], make_topics(config.kafka, ("in", 2), ("out", 1), ("dead", 1)), strict=True)
    )
    conf = write_config(tmp_path / "arus.toml", config)
    args = ["--config", str(conf), *job_args(topics, tmp_path)]
    isolated_env()

    job_error: list[BaseException] = []

    def live_job() -> None:
        try:
            aggregate.main([*args, "--trigger", "1 second"])
        except BaseException as exc:  # reported below
            job_error.append(exc)

    job = threading.Thread(target=live_job, daemon=True)
    job.start()
    wait_for(lambda: bool(spark.streams.active) or bool(job_error), 300, "the live job to start")
    sender = Sender(config.kafka, config, topics["in"], n=2400, rate=400)
    sender.start()
    try:
        wait_for(lambda: len(sender.acked) >= 600, 60, "600 acknowledgements")
        broker.stop_node(node, signal.SIGKILL)
        killed_at = len(sender.acked)
        time.sleep(2)
    finally:
        broker.start_node(node, HEAP)
        broker.wait_until_ready([node], config)
    sender.join(timeout=120)
    assert not sender.is_alive() and sender.error is None, sender.error

    in_topic = event_ids(config.kafka, topics["in"])
    figures.update(delivery_figures(sender, in_topic), acked_when_killed=killed_at)

    def caught_up() -> bool:
        if job_error or not (tmp_path / "gold").exists():
            return bool(job_error)
        return int(read_delta(tmp_path / "gold")["count"].sum()) == len(in_topic)

    wait_for(caught_up, 120, "the live job to catch up")
    for query in spark.streams.active:
        query.stop()
    job.join(timeout=60)
    if job_error:
        # It did not ride through: it must have said why, and a restart must lose nothing.
        assert "query" in str(job_error[0]) and "failed" in str(job_error[0])
        assert aggregate.main(args) == 0
    gold = read_delta(tmp_path / "gold")
    assert int(gold["count"].sum()) == len(in_topic)
    assert not gold.duplicated(["device_id", "window_start"]).any()
    figures.update(
        job="failed clearly, recovered on restart" if job_error else "rode through",
        job_error=str(job_error[0])[:300] if job_error else "",
        job_events_aggregated=int(gold["count"].sum()),
    )


def test_partition_leader_killed_in_a_three_broker_cluster(
    cluster: tuple[Config, list[broker.Node]], figures: dict[str, object]
) -> None:
    config, nodes = cluster
    (topic,) = make_topics(config.kafka, ("replicated", 2), replication=3)
    consumed: list[tuple[str, float]] = []
    stop = threading.Event()

    def consume() -> None:
        consumer = KafkaConsumer(**config.kafka.client_kwargs(), enable_auto_commit=False)
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        try:
            while not stop.is_set():
                for batch in consumer.poll(timeout_ms=200).values():
                    consumed.extend((json.loads(m.value)["event_id"], time.monotonic()) for m in batch)
        finally:
            consumer.close()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    sender = Sender(config.kafka, config, topic, n=3000, rate=600)
    sender.start()
    wait_for(lambda: len(sender.acked) >= 1000, 60, "1000 acknowledgements")
    admin = KafkaAdminClient(**config.kafka.client_kwargs(), request_timeout_ms=10000)
    try:
        leader = admin.describe_topics([topic])[0]["partitions"][0]["leader_id"]
    finally:
        admin.close()
    victim = next(n for n in nodes if n.node_id == leader)
    broker.stop_node(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    sender.join(timeout=120)
    assert not sender.is_alive() and sender.error is None, sender.error
    wait_for(
        lambda: set(sender.acked) <= {e for e, _ in consumed}, 60, "the consumer to see every acked event"
    )
    stop.set()
    consumer.join(timeout=10)

    survivors = [n for n in nodes if n is not victim]
    in_topic = event_ids(dataclasses.replace(config.kafka, bootstrap_servers=survivors[0].address), topic)
    seen = Counter(e for e, _ in consumed)
    assert not [e for e, n in seen.items() if n > 1], "the consumer saw an event twice"
    figures.update(
        delivery_figures(sender, in_topic),
        killed_leader=leader,
        acked_after_kill=sum(1 for t in sender.acked_at if t > killed_at),
        consumed_after_kill=sum(1 for _, t in consumed if t > killed_at),
        consumed=len(seen),
    )
    assert figures["acked_after_kill"] and figures["consumed_after_kill"], "the pipeline stopped"
    # The cluster is the session's: later tests (topics, lag, the cluster lab) need all three.
    broker.start_node(victim, HEAP)
    broker.wait_until_ready(nodes, config)
