"""`arus lag` on the real broker: zero once a reader has caught up, then exactly the records sent
since, for a Spark checkpoint (the main job) and for a consumer group (kafka-python)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from support import aggregated_readings, produce

from arus.config import Config
from arus.core.rules import time_text
from arus.ops import lag
from arus.sources.iot import to_record
from arus.sources.send import Record

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WATERMARK = timedelta(minutes=2)


def lag_report(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()  # what the test printed before (a job's progress lines) is not the report
    assert lag.main([*argv, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def assert_partitions_add_up(reader: dict[str, Any]) -> None:
    for p in reader["partitions"]:
        assert p["lag"] == p["end"] - p["offset"], p
    assert reader["lag"] == sum(p["lag"] for p in reader["partitions"])


@pytest.mark.usefixtures("spark")
def test_a_spark_checkpoint_lags_by_the_records_after_its_last_batch(
    config: Config, new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics, events, first = aggregated_readings(config, new_topic, tmp_path, 6, 11, START)

    # The job's --checkpoint folder: lag finds the query's own checkpoint (aggregates/) below it.
    [query] = lag_report(capsys, "--checkpoint", str(tmp_path / "checkpoint"))["queries"]
    assert query["name"] == "aggregates"
    assert (query["lag"], query["in_flight_batch"]) == (0, None)
    assert sum(p["offset"] for p in query["partitions"]) == len(first)
    assert {p["partition"] for p in query["partitions"]} == {0, 1, 2}
    # Spark's watermark after the batch: the newest event time minus the delay.
    newest = max(datetime.fromisoformat(str(e["event_time"])) for e in first)
    assert query["watermark"] == time_text(newest - WATERMARK)
    assert (query["late"], query["dead_letters"]) == (0, 0)  # from the job's metrics file
    last_batch = query["last_batch"]

    more = [next(events) for _ in range(17)]
    produce(config, [to_record(e, topics["in"]) for e in more])

    [query] = lag_report(capsys, "--checkpoint", str(tmp_path / "checkpoint"))["queries"]
    assert query["lag"] == len(more)
    assert_partitions_add_up(query)
    assert query["last_batch"] == last_batch


def test_a_consumer_group_lags_by_the_records_after_its_commit(
    config: Config, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("lag", 3)
    group = f"lag-test.{topic}"
    produce(config, [Record(topic, f"key-{i}", b"{}") for i in range(30)])
    consumer = KafkaConsumer(
        topic,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **config.kafka.client_kwargs(),
    )
    try:
        read, deadline = 0, time.monotonic() + 30
        while read < 30:
            assert time.monotonic() < deadline, f"read {read} of 30 records"
            read += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
        consumer.commit()
    finally:
        consumer.close()

    [caught_up] = lag_report(capsys, "--group", group)["groups"]
    assert caught_up["group"] == group
    assert caught_up["lag"] == 0
    assert sum(p["offset"] for p in caught_up["partitions"]) == 30

    produce(config, [Record(topic, f"key-{i}", b"{}") for i in range(30, 37)])
    report = lag_report(capsys, "--group", group)
    assert report["queries"] == []  # naming a group shows only that group
    [behind] = report["groups"]
    assert behind["lag"] == 7
    assert_partitions_add_up(behind)

    # --watch into a pipe: plain tables one after another, no screen redraws, Ctrl-C ends it with 0.
    watch = subprocess.Popen(
        [sys.executable, "-m", "arus.cli", "lag", "--group", group, "--watch", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    watch.send_signal(signal.SIGINT)
    out, _ = watch.communicate(timeout=30)
    assert watch.returncode == 0
    assert out.count(f"consumer group {group} ") >= 2
    assert out.count("total lag 7") >= 2
    assert "\x1b" not in out


def test_a_group_the_broker_does_not_know_exits_2_naming_it(
    kafka: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lag.main(["--group", "no-such-group-a8f3"]) == 2
    assert "no consumer group 'no-such-group-a8f3'" in capsys.readouterr().err
