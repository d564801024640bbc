"""Metrics on the real broker: the main job writes one line per micro-batch whose rows add up to
the records it read, and a live `arus consume` serves arus_* figures over HTTP while it runs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import produce, run_aggregate

from arus.config import Config
from arus.io.metrics import KEYS
from arus.sources.iot import fleet, readings, to_record

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("spark")
def test_the_main_job_writes_one_line_per_batch_with_its_rows(
    config: Config, new_topic: Callable[..., str], tmp_path: Path, metrics_dir: Path
) -> None:
    topics = {"in": new_topic("in", 3), "out": new_topic("out"), "dead": new_topic("dead")}
    events = readings(fleet(5, seed=3), START, 10.0, seed=3)
    records = [to_record(next(events), topics["in"]) for _ in range(90)]
    produce(config, records)
    file = metrics_dir / "arus-aggregate.jsonl"
    before = len(file.read_text().splitlines()) if file.exists() else 0

    # 40 records per batch: 40, 40 and 10, then the batch without data that moves the watermark on.
    run_aggregate(topics, tmp_path, "--max-offsets-per-trigger", "40", "--metrics-port", str(free_port()))

    lines = [json.loads(raw) for raw in file.read_text().splitlines()[before:]]
    assert [tuple(line) for line in lines] == [KEYS] * len(lines)
    assert [line["batch_id"] for line in lines] == [0, 1, 2, 3]
    assert [line["rows"] for line in lines] == [40, 40, 10, 0]
    assert sum(line["rows"] for line in lines) == len(records)
    assert {(line["source"], line["app"], line["query"]) for line in lines} == {
        ("spark", "arus-aggregate", "aggregates")
    }
    assert [line["dead_letters"] for line in lines] == [0, 0, 0, 0]
    # The last batch read to the end of every partition; the first left 50 records behind.
    assert sum(lines[0]["lag"].values()) == 50
    assert lines[-1]["lag"] == {f"{topics['in']}:{p}": 0 for p in range(3)}
    assert all(line["state_rows"] is not None and line["watermark"] for line in lines)


def test_a_live_consumer_serves_its_metrics(
    config: Config, new_topic: Callable[..., str], metrics_dir: Path
) -> None:
    topics = {name: new_topic(name) for name in ("in", "out", "dead", "late")}
    events = readings(fleet(3, seed=5), START, 10.0, seed=5)
    produce(config, [to_record(next(events), topics["in"]) for _ in range(30)])
    port = free_port()
    group = f"metrics.{topics['in']}"
    argv = [
        "--input-topic", topics["in"], "--output-topic", topics["out"], "--deadletter-topic", topics["dead"],
        "--late-topic", topics["late"], "--group-id", group, "--no-view",
        "--starting-offsets", "earliest", "--metrics-port", str(port),
    ]  # fmt: skip
    live = subprocess.Popen(
        [sys.executable, "-m", "arus.jobs.consumer", *argv],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        text=True,
    )
    labels = f'app="arus-consumer",query="{group}"'
    rows = re.compile(rf"^arus_rows_total\{{{re.escape(labels)}\}} (\S+)$", re.M)
    try:
        deadline = time.monotonic() + 60
        text = ""
        # Every record read counts, replays included (a rebalance on a busy machine replays the
        # open windows), so the endpoint shows at least the 30 records once all are read.
        while not (found := rows.search(text)) or float(found.group(1)) < 30:
            assert live.poll() is None, "the consumer stopped"
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue  # not serving yet
        assert f"arus_dead_letters_total{{{labels}}} 0.0" in text
        lag = f'partition="0",query="{group}",topic="{topics["in"]}"}} 0.0'
        assert f'arus_lag_records{{app="arus-consumer",{lag}' in text
    finally:
        live.terminate()
        out, _ = live.communicate(timeout=30)
    assert live.returncode == 0
    # The file holds the same counts as the consumer's own summary, replays included.
    summary = re.search(r"consumer: (\d+) records \((\d+) replayed\)", out)
    assert summary, out
    lines = [json.loads(raw) for raw in (metrics_dir / "arus-consumer.jsonl").read_text().splitlines()]
    mine = [line for line in lines if line["query"] == group]
    assert sum(line["rows"] for line in mine) == int(summary.group(1)) + int(summary.group(2))
    assert int(summary.group(1)) == 30
