"""The IoT producer against the real broker: what is read back is exactly what the generator made.

Also the shared send loop's edges: a broker that is down, a missing topic, SIGTERM mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arus.producers.iot import main as produce_iot
from kafka.partitioner.default import murmur2
from producers_readback import read_topic

from arus.config import DEFAULT_CONFIG, REPO_ROOT, Config
from arus.sources import iot

pytestmark = pytest.mark.integration

START = datetime(2024, 3, 1, tzinfo=UTC)
INJECT = {
    "spike": 0.01,
    "stuck": 0.01,
    "dropout": 0.01,
    "battery_decline": 0.005,
    "late": 0.02,
    "out_of_order": 0.02,
    "duplicate": 0.03,
    "malformed": 0.03,
}


def usable(value: bytes) -> dict[str, object] | None:
    """The reading in a record, or None if a consumer could not use it (an independent check)."""
    try:
        event = json.loads(value.decode())
        datetime.fromisoformat(event["event_time"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("value"), int | float):
        return None
    return event


def run_cli(argv: list[str], client: str = "kafka-python") -> None:
    """`python -m producers.iot` in a fresh (single-threaded) process: its readings come from the
    forked generator process."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ARUS_PRODUCER_CLIENT": client}
    done = subprocess.run(
        [sys.executable, "-m", "producers.iot", *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["in-process", "generator process", "confluent-kafka"])
def test_iot_records_read_back_exactly_as_generated(
    kafka: str, config: Config, new_topic: Callable[..., str], tmp_path: Path, mode: str
) -> None:
    if mode == "confluent-kafka":
        pytest.importorskip("confluent_kafka")
    readings_topic = new_topic("iot", partitions=3)
    devices_topic = new_topic("devices", cleanup_policy="compact")
    ledger = tmp_path / "ledger.jsonl"
    argv = ["--count", "800", "--devices", "10", "--seed", "17", "--start", START.isoformat()]
    argv += ["--topic", readings_topic, "--devices-topic", devices_topic, "--ledger", str(ledger)]
    argv += ["--bootstrap-servers", kafka]
    for kind, rate in INJECT.items():
        argv += ["--inject", f"{kind}={rate}"]
    if mode == "in-process":
        assert produce_iot([*argv, "--in-process"]) == 0
    else:
        run_cli(argv, client="confluent-kafka" if mode == "confluent-kafka" else "kafka-python")

    # The oracle: the pure generator with the same seed, start and rates.
    faults, delivery = iot.with_rates(config.iot.faults, config.iot.delivery, INJECT)
    devices = iot.fleet(10, 17)
    expected, truth = [], []
    for message in iot.simulate(devices, START, config.iot.interval_s, 17, faults, delivery):
        truth += message.truth
        record = iot.message_record(message, readings_topic)
        if record is not None:
            expected.append(record)
        if len(expected) == 800:
            break

    got = read_topic(kafka, readings_topic)
    assert len(got) == 800
    by_key: dict[str | None, list[bytes]] = defaultdict(list)
    for r in got:
        by_key[r.key].append(r.value)
    expected_by_key: dict[str | None, list[bytes]] = defaultdict(list)
    for e in expected:
        expected_by_key[e.key].append(e.value)
    assert by_key == expected_by_key  # same records, and each device's in the order sent
    assert all(r.headers == {"source": "iot-simulator", "schema_version": "1"} for r in got)
    assert len({r.partition for r in got}) == 3
    # Every client partitions as the Java client does: murmur2 of the key.
    assert all(r.partition == (murmur2(str(r.key).encode()) & 0x7FFFFFFF) % 3 for r in got)

    # The ledger is the generator's ground truth, and agrees with what a consumer sees.
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entries == truth
    kinds = Counter(e["kind"] for e in entries)
    assert set(kinds) == set(INJECT), kinds
    events = [usable(r.value) for r in got]
    assert sum(e is None for e in events) == kinds["malformed"]
    copies = Counter(str(e["event_id"]) for e in events if e is not None)
    assert sum(n - 1 for n in copies.values()) == kinds["duplicate"]
    for e in events:
        if e is not None:
            assert e["event_id"] == iot.event_id(str(e["device_id"]), str(e["event_time"]))
    sent_ids = set(copies)
    assert not {e["event_id"] for e in entries if e["kind"] == "dropout"} & sent_ids
    for e in entries:
        if e["kind"] == "late":
            # A later reading of the same device was already in the topic when it came.
            values = [usable(v) for v in by_key[e["device_id"]]]
            position = next(i for i, v in enumerate(values) if v and v["event_id"] == e["event_id"])
            assert any(v and int(v["seq"]) > e["seq"] for v in values[:position])  # type: ignore[call-overload]

    got_devices = read_topic(kafka, devices_topic)
    assert {r.key: json.loads(r.value) for r in got_devices} == {d.device_id: asdict(d) for d in devices}


@pytest.fixture
def quick_config(tmp_path: Path) -> str:
    """The project config with max_block_ms at 1.5 s (default 5 s), so failing tests fail fast."""
    text = DEFAULT_CONFIG.read_text()
    assert "max_block_ms = 5000" in text
    path = tmp_path / "arus.toml"
    path.write_text(text.replace("max_block_ms = 5000", "max_block_ms = 1500"))
    return str(path)


def test_a_broker_that_is_down_fails_fast_and_clearly(
    quick_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert produce_iot(["--config", quick_config, "--bootstrap-servers", "127.0.0.1:1", "--count", "1"]) == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "produce-iot: no Kafka broker answers at 127.0.0.1:1" in err
    assert "Traceback" not in err


def test_a_missing_topic_fails_fast_and_names_it(
    kafka: str, quick_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    argv = [
        "--config",
        quick_config,
        "--bootstrap-servers",
        kafka,
        "--count",
        "1",
        "--topic",
        "test.no-such-topic.x1",
    ]
    assert produce_iot(argv) == 1
    assert time.monotonic() - started < 5
    assert "topic 'test.no-such-topic.x1' does not exist" in capsys.readouterr().err


def test_sigterm_flushes_and_prints_the_summary(kafka: str, new_topic: Callable[..., str]) -> None:
    readings_topic = new_topic("iot")
    devices_topic = new_topic("devices", cleanup_policy="compact")
    # Live pace: 5 devices every 10 event-time seconds at speed 30 = 15 readings a second.
    argv = ["--speed", "30", "--devices", "5", "--clean", "--topic", readings_topic]
    argv += ["--devices-topic", devices_topic, "--bootstrap-servers", kafka]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.iot", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    final = err.split("\r")[-1]
    found = re.search(r"sent (\d+), acked (\d+), errors 0, .*\(SIGTERM\)", final)
    assert found, err
    sent, acked = int(found.group(1)), int(found.group(2))
    assert sent == acked > 5
    readings = read_topic(kafka, readings_topic)
    assert len(readings) + len(read_topic(kafka, devices_topic)) == acked
    seqs = [json.loads(r.value)["seq"] for r in readings if r.key == "dev-0000"]
    assert seqs == list(range(len(seqs)))  # nothing lost before the stop
