"""CSV replay against the real broker: every row read back once, bad rows dead-lettered, a crash resumed.

The expected rows come from pandas reading the same file (an independent parser), not from the
producer's own code.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from arus.producers.csv_replay import main as produce_csv
from producers_readback import read_topic

from arus.config import REPO_ROOT

pytestmark = pytest.mark.integration

SAMPLE = REPO_ROOT / "samples" / "weather_stations.csv"
NUMBERS = {
    "temperature_c": float,
    "humidity_pct": int,
    "pressure_hpa": float,
    "wind_kmh": float,
    "rain_mm": float,
}
NULLS = {"", "NA"}


def expected_rows() -> tuple[dict[int, dict[str, object]], set[int]]:
    """{line: payload} of the good rows of the sample, and the lines of the bad ones, by pandas."""
    df = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    df["line"] = df.index + 2
    # pandas pads short rows with ""; count the fields of each line as they are in the file.
    with open(SAMPLE, newline="") as fh:
        widths = [len(fields) for fields in csv.reader(fh)][1:]
    times = pd.to_datetime(df["time"], utc=True, errors="coerce", format="ISO8601")
    good: dict[int, dict[str, object]] = {}
    bad: set[int] = set()
    for (_, row), at, width in zip(df.iterrows(), times, widths, strict=True):
        complete = width == len(df.columns) - 1
        numbers = {
            c: pd.to_numeric(row[c], errors="coerce") if row[c] not in NULLS else None for c in NUMBERS
        }
        if not complete or pd.isna(at) or any(v is not None and pd.isna(v) for v in numbers.values()):
            bad.add(int(row["line"]))
            continue
        good[int(row["line"])] = {
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "station": row["station"],
            **{c: None if v is None else NUMBERS[c](v) for c, v in numbers.items()},
            "condition": row["condition"],
        }
    return good, bad


def replay(*argv: str) -> int:
    return produce_csv([*map(str, argv)])


def test_the_sample_replays_every_row_and_dead_letters_the_bad_ones(
    kafka: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic, dead = new_topic("csv", partitions=3), new_topic("csvdl")
    rc = replay(
        SAMPLE,
        "--topic",
        topic,
        "--deadletter-topic",
        dead,
        "--cursor",
        tmp_path / "c.json",
        "--bootstrap-servers",
        kafka,
    )
    assert rc == 0
    good, bad = expected_rows()
    assert len(good) == 573 and bad == {99, 253, 404}

    got = read_topic(kafka, topic)
    assert len(got) == len(good)
    payloads = {int(r.headers["line"]): json.loads(r.value) for r in got}
    ids = {p.pop("event_id") for p in payloads.values()}
    assert payloads == good
    assert len(ids) == len(good)
    for r in got:
        assert r.key == json.loads(r.value)["station"]
        assert r.headers == {
            "source": "csv-replay",
            "schema_version": "1",
            "source_file": "weather_stations.csv",
            "line": r.headers["line"],
        }

    letters = [json.loads(r.value) for r in read_topic(kafka, dead)]
    assert {d["line"] for d in letters} == bad
    reasons = {d["line"]: d["reason"] for d in letters}
    assert reasons[99] == "expected 8 columns, got 5"
    assert reasons[253].startswith("column 'time': not a time")
    assert reasons[404] == "column 'temperature_c': not a float: 'err'"
    raw_lines = SAMPLE.read_text().splitlines()
    assert all(d["raw"] == raw_lines[d["line"] - 1] for d in letters)
    assert json.loads((tmp_path / "c.json").read_text())["line"] == len(raw_lines)


def test_gzip_input_column_selection_and_a_reject_file(
    kafka: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    compressed = tmp_path / "weather.csv.gz"
    compressed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    plain_topic, gz_topic = new_topic("csv"), new_topic("csvgz")
    rejects = tmp_path / "rejects.jsonl"
    common = ["--bootstrap-servers", kafka, "--source-name", "weather_stations.csv"]
    assert (
        replay(SAMPLE, "--topic", plain_topic, "--reject-file", rejects, "--cursor", tmp_path / "a", *common)
        == 0
    )
    columns = "time,station,temperature_c"
    argv = [
        compressed,
        "--topic",
        gz_topic,
        "--reject-file",
        rejects,
        "--cursor",
        tmp_path / "b",
        "--columns",
        columns,
    ]
    assert replay(*argv, *common) == 0

    plain, gz = read_topic(kafka, plain_topic), read_topic(kafka, gz_topic)
    assert len(plain) == len(gz) == 573
    # The same rows under the same source name get the same event ids, gzip or not.
    assert {json.loads(r.value)["event_id"] for r in plain} == {json.loads(r.value)["event_id"] for r in gz}
    assert all(set(json.loads(r.value)) == {"time", "station", "temperature_c", "event_id"} for r in gz)
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [d["line"] for d in rejected] == [99, 253, 404] * 2


def test_event_time_replay_keeps_the_gaps_scaled_and_can_rewrite_times_to_now(
    kafka: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "gaps.csv"
    t0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
    offsets = [0, 10, 30, 40]  # seconds of event time
    path.write_text(
        "ts,k,v\n" + "".join(f"{(t0 + timedelta(seconds=s)).isoformat()},a,{s}\n" for s in offsets)
    )
    topic = new_topic("csv")
    before = datetime.now(UTC)
    argv = [path, "--time-column", "ts", "--key-column", "k", "--topic", topic, "--cursor", tmp_path / "c"]
    assert replay(*argv, "--speed", "20", "--rewrite-time", "--bootstrap-servers", kafka) == 0
    got = read_topic(kafka, topic)
    assert [json.loads(r.value)["v"] for r in got] == offsets
    # Sent at the original gaps divided by 20: 0.5 s, 1 s, 0.5 s (Kafka's CreateTime is the send time).
    sent = [r.timestamp_ms / 1000 for r in got]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps == pytest.approx([0.5, 1.0, 0.5], abs=0.2)
    # Rewritten event times start now and keep the scaled gaps exactly.
    times = [datetime.fromisoformat(json.loads(r.value)["ts"]) for r in got]
    assert before - timedelta(seconds=1) <= times[0] <= before + timedelta(seconds=10)
    assert [(t - times[0]).total_seconds() for t in times] == [0.0, 0.5, 1.5, 2.0]


def write_big_csv(path: Path, rows: int) -> None:
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["time", "key", "value"])
        for i in range(rows):
            out.writerow([(t0 + timedelta(seconds=i)).isoformat(), f"k{i % 7}", i])


def test_a_replay_killed_mid_file_resumes_and_delivers_every_row(
    kafka: str, new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 4000
    path, cursor = tmp_path / "big.csv", tmp_path / "big.cursor.json"
    write_big_csv(path, rows)
    topic, dead = new_topic("csv", partitions=3), new_topic("csvdl")
    argv = [
        path,
        "--time-column",
        "time",
        "--key-column",
        "key",
        "--topic",
        topic,
        "--deadletter-topic",
        dead,
    ]
    argv += ["--cursor", cursor, "--bootstrap-servers", kafka]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers.csv_replay", *map(str, argv), "--rate", "1000"],
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if cursor.exists() and json.loads(cursor.read_text())["line"] > 800:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no flush, no final cursor save
        proc.wait(timeout=10)
    finally:
        proc.kill()
    killed_at = json.loads(cursor.read_text())["line"]
    assert 800 < killed_at < rows + 1, "the first run should die mid-file"

    assert replay(*argv, "--resume") == 0
    assert f"resuming after line {killed_at}" in capsys.readouterr().err

    got = read_topic(kafka, topic)
    lines = Counter(int(r.headers["line"]) for r in got)
    assert set(lines) == set(range(2, rows + 2))  # every row, none skipped
    assert all(lines[n] == 1 for n in range(2, killed_at + 1))  # acknowledged rows were not sent again
    by_id: dict[str, set[bytes]] = {}
    for r in got:
        by_id.setdefault(json.loads(r.value)["event_id"], set()).add(r.value)
    assert len(by_id) == rows  # after dedup by event_id: each row exactly once
    assert all(len(values) == 1 for values in by_id.values())  # a re-sent row is byte for byte the same
    assert all(json.loads(r.value)["value"] == int(r.headers["line"]) - 2 for r in got)
    assert read_topic(kafka, dead) == []
