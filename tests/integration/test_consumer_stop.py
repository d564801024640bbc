"""SIGTERM (systemd, `docker stop`) stops a live `arus consume` as Ctrl-C does: exit 0 with its summary."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from streaming_data import START, good, produce, reading

from arus.config import REPO_ROOT, Config

pytestmark = pytest.mark.integration


def records_in(config: Config, topic: str) -> int:
    reader = KafkaConsumer(**config.kafka.client_kwargs())
    try:
        partition = TopicPartition(topic, 0)
        return int(reader.end_offsets([partition])[partition])
    finally:
        reader.close()


def test_sigterm_stops_a_live_consumer_with_its_summary_and_exit_0(
    config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = {name: new_topic(name) for name in ("in", "out", "dead", "late")}
    events = [
        reading(f"d{d}", r, 20.0 + r, START + timedelta(seconds=10 * r)) for r in range(10) for d in range(3)
    ]
    produce(config, topics["in"], [good(e) for e in events])
    command = [
        sys.executable, "-m", "arus.cli", "consume", "--no-view",
        "--group-id", f"test.stop.{uuid.uuid4().hex}",
        "--input-topic", topics["in"],
        "--output-topic", topics["out"],
        "--deadletter-topic", topics["dead"],
        "--late-topic", topics["late"],
    ]  # fmt: skip
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 60
        while records_in(config, topics["out"]) == 0:  # it has read and aggregated the readings
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert re.search(rf"^consumer: {len(events)} records .*\(stopped\)$", stdout, re.MULTILINE), stdout
