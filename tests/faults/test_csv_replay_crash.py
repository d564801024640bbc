"""Scenario 4: the CSV replay producer SIGKILLed mid-file, then resumed from its cursor.

Every row must reach the topic, and after dropping repeated event ids (what the job does), none
twice; rows sent again after the crash must carry the same event id as their first send.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from faultkit import START, clean_env, make_topics, read_topic, wait_for

from arus.config import REPO_ROOT, Config

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROWS = 4000


def write_csv(path: Path) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["row_id", "ts", "station", "temp"])
        for i in range(ROWS):
            at = START + timedelta(seconds=i)
            out.writerow([i, at.isoformat().replace("+00:00", "Z"), f"st-{i % 7}", round(15 + i % 50 / 7, 3)])


def cursor_line(cursor: Path) -> int:
    try:
        return int(json.loads(cursor.read_text())["line"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_csv_replay_killed_mid_file_resumes_from_its_cursor(
    private_broker: Config, tmp_path: Path, figures: dict[str, object]
) -> None:
    kafka = private_broker.kafka
    topic, dead = make_topics(kafka, ("csv", 2), ("csvdead", 1))
    source = tmp_path / "stations.csv"
    write_csv(source)
    cursor = tmp_path / "cursor.json"
    cmd = [
        sys.executable, "-m", "producers.csv_replay", str(source),
        "--time-column", "ts", "--key-column", "station",
        "--topic", topic, "--deadletter-topic", dead, "--cursor", str(cursor),
    ]  # fmt: skip
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers)

    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            [*cmd, "--rate", "1500"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            wait_for(
                lambda: cursor_line(cursor) >= ROWS // 4 or first.poll() is not None, 60, "a quarter sent"
            )
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    killed_after = cursor_line(cursor)
    assert ROWS // 4 <= killed_after < ROWS

    resumed = subprocess.run(
        [*cmd, "--resume"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after line {killed_after}" in resumed.stderr

    records = [json.loads(value) for _, value, _ in read_topic(kafka, topic)]
    by_id: dict[str, set[int]] = {}
    for record in records:
        by_id.setdefault(record["event_id"], set()).add(record["row_id"])
    assert all(len(rows) == 1 for rows in by_id.values()), "one event id for two different rows"
    delivered = Counter(row for rows in by_id.values() for row in rows)
    assert sorted(delivered) == list(range(ROWS)), "a row is missing"
    twice = sum(n - 1 for n in delivered.values())
    assert twice == 0, "a row got two event ids"
    assert read_topic(kafka, dead, idle_ms=500) == []
    figures.update(
        rows=ROWS,
        killed_after_line=killed_after,
        records_in_topic=len(records),
        resent_after_crash=len(records) - ROWS,
        rows_missing=ROWS - len(delivered),
        rows_twice_after_dedup=twice,
    )
