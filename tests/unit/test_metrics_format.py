"""The metrics line built from a StreamingQueryProgress, and what the Prometheus endpoint exposes."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest

from arus.io.metrics import KEYS, Metrics, batch_line, record
from arus.runtime.listener import spark_line

# Batch 0 of the main job on a 3-partition topic with 90 records and --max-offsets-per-trigger 40,
# in the shape Spark 4.0 reports it (StreamingQueryProgress.json), trimmed of the fields not used.
PROGRESS = json.loads("""{
  "id": "5b0c6a5e-8a43-4c52-9f0e-2b1f3e0c8d11", "runId": "0d7e2f53-3c1a-4f6e-9d7e-6f4b8a2c1e90",
  "name": "aggregates", "timestamp": "2026-12-01T23:52:09.328Z", "batchId": 0, "batchDuration": 196711,
  "numInputRows": 40, "inputRowsPerSecond": 0.0, "processedRowsPerSecond": 0.2033,
  "durationMs": {"addBatch": 190210, "getBatch": 12, "latestOffset": 1650, "queryPlanning": 3120,
                 "triggerExecution": 196711, "walCommit": 610},
  "eventTime": {"avg": "2026-03-01T12:00:32.500Z", "max": "2026-03-01T12:01:10.000Z",
                "min": "2026-03-01T12:00:00.000Z", "watermark": "1970-01-01T00:00:00.000Z"},
  "stateOperators": [
    {"operatorName": "dedupeWithinWatermark", "numRowsTotal": 40, "numRowsUpdated": 40,
     "memoryUsedBytes": 11032, "numRowsDroppedByWatermark": 0},
    {"operatorName": "stateStoreSave", "numRowsTotal": 10, "numRowsUpdated": 10,
     "memoryUsedBytes": 5192, "numRowsDroppedByWatermark": 0}
  ],
  "sources": [{
    "description": "KafkaV2[Subscribe[test.in.8ddf645c06]]",
    "startOffset": null,
    "endOffset": {"test.in.8ddf645c06": {"0": 14, "1": 13, "2": 13}},
    "latestOffset": {"test.in.8ddf645c06": {"0": 34, "1": 33, "2": 23}},
    "numInputRows": 40, "inputRowsPerSecond": 0.0, "processedRowsPerSecond": 0.2033,
    "metrics": {"avgOffsetsBehindLatest": "16.67", "maxOffsetsBehindLatest": "20",
                "minOffsetsBehindLatest": "10"}
  }],
  "sink": {"description": "ForeachBatchSink", "numOutputRows": -1}
}""")


def test_a_spark_line_carries_the_batch_and_the_writers_counts() -> None:
    line = spark_line("arus-aggregate", PROGRESS, {"late": 0, "dead": 2})
    assert line == {
        "time": "2026-12-01T23:52:09.328Z",
        "source": "spark",
        "app": "arus-aggregate",
        "query": "aggregates",
        "batch_id": 0,
        "input_rows_per_s": 0.0,
        "processed_rows_per_s": 0.2033,
        "batch_duration_ms": 196711,
        "rows": 40,
        "watermark": "1970-01-01T00:00:00.000Z",
        "state_rows": 50,
        "state_memory_bytes": 16224,
        "late": 0,
        "dead_letters": 2,
        "lag": {"test.in.8ddf645c06:0": 20, "test.in.8ddf645c06:1": 20, "test.in.8ddf645c06:2": 10},
    }
    assert tuple(line) == KEYS


def test_without_a_writer_count_late_is_what_spark_dropped() -> None:
    dropped = {
        **PROGRESS,
        "stateOperators": [{**PROGRESS["stateOperators"][0], "numRowsDroppedByWatermark": 7}],
    }
    assert spark_line("arus-x", dropped, {})["late"] == 7
    assert spark_line("arus-x", {**PROGRESS, "stateOperators": []}, {})["late"] is None


def test_the_endpoint_exposes_each_line_and_the_file_keeps_it(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path / "arus-consumer.jsonl")  # no port: the file alone
    line = record(
        "consumer", "arus-consumer", "g1", rows=30, batch_id=4, late=1, dead_letters=2, lag={"t:0": 5}
    )
    metrics.write(line)
    assert [json.loads(raw) for raw in (tmp_path / "arus-consumer.jsonl").read_text().splitlines()] == [line]

    with Metrics(tmp_path / "arus-consumer.jsonl", port=0) as served:
        assert served.exporter is not None
        served.write(line)
        served.write({**line, "rows": 12, "late": 0, "watermark": "2026-03-01T12:00:00.000Z"})
        text = generate_latest(served.exporter.registry).decode()
    labels = 'app="arus-consumer",query="g1"'
    for expected in (
        f"arus_rows_total{{{labels}}} 42.0",
        f"arus_batches_total{{{labels}}} 2.0",
        f"arus_late_total{{{labels}}} 1.0",
        f"arus_dead_letters_total{{{labels}}} 4.0",
        f"arus_batch_id{{{labels}}} 4.0",
        'arus_lag_records{app="arus-consumer",partition="0",query="g1",topic="t"} 5.0',
        f"arus_watermark_timestamp_seconds{{{labels}}} 1.7723664e+09",  # 2026-03-01T12:00:00Z
    ):
        assert expected in text


def test_lag_finds_the_newest_line_of_a_querys_batch(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path / "arus-aggregate.jsonl")
    old = record(
        "spark", "arus-aggregate", "aggregates", rows=1, batch_id=3, late=9, time="2026-01-01T00:00:00.000Z"
    )
    new = {**old, "late": 2, "time": "2026-01-02T00:00:00.000Z"}
    for line in (old, new, {**new, "batch_id": 4, "late": 5}):
        metrics.write(line)
    assert batch_line(tmp_path, "aggregates", 3) == new
    assert batch_line(tmp_path, "clean", 3) is None
