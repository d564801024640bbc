"""The benchmark code runs on toy sizes against the real broker (this is not a timed test), and the
optional confluent-kafka client delivers exactly what kafka-python would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from arus.bench.common import run_client
from arus.bench.payloads import read_payload_file, write_payload_file
from kafka import KafkaConsumer

from arus.config import Config
from arus.io.producer import make_producer
from arus.sources.iot import HEADERS
from arus.sources.send import Record, SendLoop

pytestmark = pytest.mark.integration


def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        out = []
        for message in consumer:
            out.append((message.key, message.value, list(message.headers)))
            if len(out) >= expected:
                break
        return out
    finally:
        consumer.close()


def test_bare_loop_case_sends_every_payload(
    kafka: str, config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic("bench", partitions=3)
    payload = tmp_path / "payload.txt"
    write_payload_file(payload, 150, devices=5)
    result = run_client(
        "kp-bare", ["--topic", topic, "--count", "300", "--payload", str(payload)], config, 60
    )
    assert result["events"] == 300
    assert result["events_per_s"] > 0 and result["cpu_us_per_event"] > 0
    got = read_all(kafka, topic, 300)
    # Each of the 150 payloads twice, with its device as key and the IoT producer's headers.
    expected = sorted(read_payload_file(payload) * 2)
    assert sorted((k, v) for k, v, _ in got) == expected
    assert all(h == list(HEADERS) for _, _, h in got)


def test_confluent_client_through_send_loop(
    kafka: str, config: Config, new_topic: Callable[..., str]
) -> None:
    pytest.importorskip("confluent_kafka")
    topic = new_topic("confluent", partitions=3)
    settings = replace(config.producer, client="confluent-kafka")
    producer = make_producer(config.kafka, settings)
    assert type(producer).__name__ == "ConfluentProducer"
    acked: list[str] = []
    loop = SendLoop(producer, progress=None, on_ack=lambda r: acked.append(r.value.decode()))
    records = [Record(topic, f"k{i % 4}", f"v{i}".encode(), HEADERS) for i in range(2500)]
    summary = loop.run(records)
    producer.close()
    assert (summary.sent, summary.acked, summary.failed) == (2500, 2500, 0)
    assert sorted(acked) == sorted(f"v{i}" for i in range(2500))
    got = read_all(kafka, topic, 2500)
    assert sorted((k.decode(), v.decode()) for k, v, _ in got) == sorted(
        (f"k{i % 4}", f"v{i}") for i in range(2500)
    )
    assert all(h == list(HEADERS) for _, _, h in got)


def test_confluent_client_names_a_missing_topic(config: Config, kafka: str) -> None:
    pytest.importorskip("confluent_kafka")
    producer = make_producer(config.kafka, replace(config.producer, client="confluent-kafka"))
    try:
        assert producer.partitions_for("bench.no-such-topic.x") is None
    finally:
        producer.close()
