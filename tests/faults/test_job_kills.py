"""Scenarios 1 and 6: the main job SIGKILLed mid-batch and restarted on the same checkpoint.

The job runs as its own process; ARUS_FAULT_KILL_AFTER makes it SIGKILL its whole process group
(Python driver and JVM) at a named point of a named micro-batch: each run replays the batch the
previous one died in, then dies in the next batch, the last one after it wrote late events (a batch's
late events are judged against the watermark of the batch before, so they need batch 2 or later).
After a recovery run the Delta tables (gold, dead letters, late) must equal a pandas oracle with every
row once and every Delta transaction (app id, batch id) committed once; a further restart
with no new data must add nothing.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import aggregate
from faultkit import (
    START,
    MainJob,
    clean_env,
    json_record,
    make_topics,
    produce,
    read_delta,
    read_topic,
    reading,
    run_job_process,
    write_config,
)
from pyspark.sql import SparkSession
from support import job_args

from arus.config import Config
from arus.runtime.guards import FAULT_ENV
from arus.sources.send import Record

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(1500)]

CHUNK = 48  # readings per chunk: 4 devices x 12, two minutes of event time
LATE = 3  # readings of the last chunk ten minutes behind every watermark the job has by then
# (kill point:batch, what the process has done when it dies). Run k starts after chunk k is sent and
# replays batch k-1 (planned by the run before), so batch k reads chunk k alone.
KILLS = [
    ("after-delta:0", "aggregates merged into Delta, not yet published to Kafka nor committed"),
    ("after-kafka:1", "aggregates in Delta and Kafka, the batch not yet committed by Spark"),
    ("deadletter-after-delta:2", "dead letters appended to Delta, not yet published nor committed"),
    ("late-after-delta:3", "late events appended to Delta, not yet published nor committed"),
]


def chunk(k: int, topic: str) -> tuple[list[dict[str, object]], list[dict[str, object]], list[Record]]:
    """Chunk k: its on-time readings and the late ones (the last chunk only), sent with 4 repeated
    sends and 2 malformed records mixed in."""
    events = [reading(i) for i in range(k * CHUNK, (k + 1) * CHUNK)]
    behind = START - timedelta(minutes=10)
    late = [
        reading(i, event_id=f"late-{i}", event_time=f"{behind + timedelta(seconds=i):%Y-%m-%dT%H:%M:%SZ}")
        for i in range(LATE if k == len(KILLS) - 1 else 0)
    ]
    records = [json_record(topic, e) for e in events]
    records[10:10] = [json_record(topic, e) for e in events[:4]]
    records[20:20] = [Record(topic, "bad", f"{{broken {k}".encode()), Record(topic, "bad", b"\xff\xfe")]
    records[30:30] = [json_record(topic, e) for e in late]
    return events, late, records


def oracle(events: list[dict[str, object]]) -> pd.DataFrame:
    """1-minute tumbling aggregates per device with pandas alone, repeated event ids dropped."""
    df = pd.DataFrame(events).drop_duplicates("event_id")
    df["window_start"] = pd.to_datetime(df["event_time"], utc=True).dt.floor("1min")
    out = df.groupby(["device_id", "window_start"])["value"].agg(
        count="count", value_mean="mean", value_min="min", value_max="max"
    )
    return out.reset_index().sort_values(["device_id", "window_start"]).reset_index(drop=True)


def delta_txns(table: Path) -> list[tuple[str, int]]:
    """Every (app id, batch id) recorded in a Delta table's log, one entry per commit: Delta's own
    transaction id (MERGEs, a table's first write) or the mark in an append's userMetadata."""
    txns = []
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action:
                txns.append((action["txn"]["appId"], int(action["txn"]["version"])))
            elif "userMetadata" in action.get("commitInfo", {}):
                marked = json.loads(action["commitInfo"]["userMetadata"])["arus_batch"]
                txns.append((marked["app"], int(marked["batch"])))
    return txns


def delta_versions(table: Path) -> int:
    return len(list((table / "_delta_log").glob("*.json")))


def test_job_killed_in_four_batches_restarts_exactly_once(
    private_broker: Config,
    spark: SparkSession,
    tmp_path: Path,
    isolated_env,
    figures: dict[str, object],
) -> None:
    config = private_broker
    kafka = config.kafka
    names = make_topics(kafka, ("in", 2), ("out", 1), ("dead", 1), ("late", 1))
    topics = dict(zip(["in", "out", "dead", "late"], names, strict=True))
    conf = write_config(tmp_path / "arus.toml", config)
    args = ["--config", str(conf), *job_args(topics, tmp_path, "--late-topic", topics["late"])]

    events: list[dict[str, object]] = []
    late: list[dict[str, object]] = []
    bad: list[bytes] = []
    for k, (wanted, _) in enumerate(KILLS):
        new_events, new_late, records = chunk(k, topics["in"])
        events += new_events
        late += new_late
        bad += [r.value for r in records if r.key == "bad"]
        produce(kafka, config, records)
        crashed = run_job_process(args, clean_env(**{FAULT_ENV: wanted}))
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        point, _, batch = wanted.partition(":")
        assert f"fault injection: SIGKILL at {point}, batch {batch}" in crashed.stderr

    # Recovery runs the same main() in this process (its Spark session is warm already).
    isolated_env()
    assert aggregate.main(args) == 0

    gold_path, dead_path, late_path = tmp_path / "gold", tmp_path / "deadletter", tmp_path / "late"
    gold = read_delta(gold_path)
    assert not gold.duplicated(["device_id", "window_start"]).any()
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    expected = oracle(events)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)

    dead = read_delta(dead_path)
    assert sorted(bytes(v) for v in dead["value"]) == sorted(bad)
    assert not dead.duplicated(["partition", "offset"]).any()

    late_rows = read_delta(late_path)
    assert sorted(late_rows["event_id"]) == sorted(str(e["event_id"]) for e in late)
    assert set(late_rows["batch_id"]) == {len(KILLS) - 1}
    # At-least-once: every late event published, any repeat an exact copy (same key and value).
    late_records = read_topic(kafka, topics["late"])
    assert {(key, value) for key, value, _ in late_records} == {
        (str(e["device_id"]).encode(), json.dumps(e).encode()) for e in late
    }

    txns = {table.name: Counter(delta_txns(table)) for table in (gold_path, dead_path, late_path)}
    twice = {name: [t for t, n in counts.items() if n > 1] for name, counts in txns.items()}
    assert all(txns.values()) and not any(twice.values()), f"transactions committed twice: {twice}"

    # Kafka output is at-least-once: a consumer keeping the latest record per key sees the table.
    out_records = read_topic(kafka, topics["out"])
    latest = {key.decode(): json.loads(value) for key, value, _ in out_records}
    assert {k: v["count"] for k, v in latest.items()} == {
        f"{r.device_id}|{r.window_start:%Y-%m-%dT%H:%M:%SZ}": r.count for r in expected.itertuples()
    }
    dead_records = read_topic(kafka, topics["dead"])
    positions = Counter((h["source_partition"], h["source_offset"]) for _, _, h in dead_records)
    assert len(positions) == len(bad)

    # Scenario 6: a clean restart with nothing new adds no Delta version, so no rows.
    versions = [delta_versions(table) for table in (gold_path, dead_path, late_path)]
    assert aggregate.main(args) == 0
    assert [delta_versions(table) for table in (gold_path, dead_path, late_path)] == versions

    figures.update(
        kill_points=[p for p, _ in KILLS],
        kill_points_survived=len(KILLS),
        events=len(events),
        repeated_sends=4 * len(KILLS),
        events_lost=int(expected["count"].sum() - got["count"].sum()),
        gold_rows=len(got),
        gold_duplicate_rows=int(gold.duplicated(["device_id", "window_start"]).sum()),
        dead_letters=len(dead),
        late_rows=len(late_rows),
        late_rows_twice=int(late_rows.duplicated(["partition", "offset"]).sum()),
        kafka_late_records=len(late_records),
        delta_txns={name: len(counts) for name, counts in txns.items()},
        delta_txns_committed_twice=sum(len(t) for t in twice.values()),
        kafka_output_records=len(out_records),
        kafka_output_keys=len(latest),
        kafka_deadletter_redelivered=sum(n - 1 for n in positions.values()),
        clean_restart_new_versions=0,
    )


# Append mode: 30 s of watermark, so each chunk's earlier windows are final within the chunk.
APPEND_WATERMARK = timedelta(seconds=30)
# Run k of chunk k: batch 2k reads the chunk (its windows are not final yet), then the no-data batch
# 2k + 1 appends the windows the chunk's watermark passed; run 1 first replays batch 1.
APPEND_KILLS = [
    ("after-delta:1", "final windows appended to Delta, not yet published nor committed"),
    ("after-kafka:3", "final windows in Delta and Kafka, the batch not yet committed by Spark"),
]


def test_append_mode_killed_restarts_with_each_final_window_once(
    main_job: MainJob, spark: SparkSession, tmp_path: Path, figures: dict[str, object]
) -> None:
    config, topics = main_job.config, main_job.topics
    conf = write_config(tmp_path / "arus.toml", config)
    watermark = f"{APPEND_WATERMARK.seconds} seconds"
    args = [
        "--config",
        str(conf),
        *job_args(topics, tmp_path, "--output-mode", "append", "--watermark", watermark),
    ]

    events: list[dict[str, object]] = []
    for k, (wanted, _) in enumerate(APPEND_KILLS):
        chunk_events = [reading(i) for i in range(k * CHUNK, (k + 1) * CHUNK)]
        events += chunk_events
        repeats = [json_record(topics["in"], e) for e in chunk_events[:4]]
        produce(config.kafka, config, [json_record(topics["in"], e) for e in chunk_events] + repeats)
        crashed = run_job_process(args, clean_env(**{FAULT_ENV: wanted}))
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        point, _, batch = wanted.partition(":")
        assert f"fault injection: SIGKILL at {point}, batch {batch}" in crashed.stderr
    assert aggregate.main(args) == 0

    # Final: the watermark (latest event time - 30 s) is at or past the window's end.
    last = max(pd.to_datetime([str(e["event_time"]) for e in events], utc=True))
    everything = oracle(events)
    final = everything["window_start"] + timedelta(minutes=1) <= last - APPEND_WATERMARK
    expected = everything[final].reset_index(drop=True)
    assert 0 < len(expected) < len(everything)  # the last minute is still open, so not written
    gold = read_delta(tmp_path / "gold")
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    txns = Counter(delta_txns(tmp_path / "gold"))
    assert txns and max(txns.values()) == 1, f"transactions committed twice: {txns}"

    # Each final window published once, though both killed batches were replayed.
    out = Counter(key.decode() for key, _, _ in read_topic(config.kafka, topics["out"]) if key)
    assert out == Counter(f"{r.device_id}|{r.window_start:%Y-%m-%dT%H:%M:%SZ}" for r in expected.itertuples())

    figures.update(
        append_kill_points=[p for p, _ in APPEND_KILLS],
        append_events=len(events),
        append_final_windows=len(expected),
        append_open_windows_unwritten=len(everything) - len(expected),
        append_gold_rows=len(gold),
        append_delta_txns=len(txns),
        append_kafka_output_records=sum(out.values()),
    )
