"""Metrics of every running stage, in one format for the Spark jobs, the kafka-python consumer and the
producers: a line of JSON per micro-batch (or per interval) appended to `<[paths] metrics>/<app>.jsonl`,
and, with `--metrics-port`, the same figures as Prometheus gauges and counters on loopback.

    metrics = Metrics.open(config, "arus-aggregate", port=9464)
    metrics.write(record("spark", "arus-aggregate", "aggregates", rows=120, batch_id=3, ...))
    metrics.close()

A line holds exactly KEYS (the dashboard and `arus lag` read them):
{"time": "2026-12-01T23:40:01.123Z", "source": "spark", "app": "arus-aggregate", "query": "aggregates",
"batch_id": 3, "input_rows_per_s": 812.5, "processed_rows_per_s": 950.1, "batch_duration_ms": 1263,
"rows": 120, "watermark": "2026-03-01T12:03:00.000Z", "state_rows": 240, "state_memory_bytes": 91832,
"late": 3, "dead_letters": 1, "lag": {"iot.readings:0": 0}}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from arus.config import Config
from arus.core.rules import time_text

KEYS = (
    "time",
    "source",
    "app",
    "query",
    "batch_id",
    "input_rows_per_s",
    "processed_rows_per_s",
    "batch_duration_ms",
    "rows",
    "watermark",
    "state_rows",
    "state_memory_bytes",
    "late",
    "dead_letters",
    "lag",
)
SOURCES = ("spark", "consumer", "producer")
LOOPBACK = "127.0.0.1"


def record(
    source: str,
    app: str,
    query: str,
    *,
    rows: int,
    time: str | None = None,
    batch_id: int | None = None,
    input_rows_per_s: float | None = None,
    processed_rows_per_s: float | None = None,
    batch_duration_ms: int | None = None,
    watermark: str | None = None,
    state_rows: int | None = None,
    state_memory_bytes: int | None = None,
    late: int | None = None,
    dead_letters: int | None = None,
    lag: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One line of the file, its keys in KEYS order; `time` defaults to now."""
    if source not in SOURCES:
        raise ValueError(f"metrics source must be one of {', '.join(SOURCES)}, not {source!r}")
    return {
        "time": time or time_text(datetime.now(UTC)),
        "source": source,
        "app": app,
        "query": query,
        "batch_id": batch_id,
        "input_rows_per_s": None if input_rows_per_s is None else float(input_rows_per_s),
        "processed_rows_per_s": None if processed_rows_per_s is None else float(processed_rows_per_s),
        "batch_duration_ms": batch_duration_ms,
        "rows": rows,
        "watermark": watermark,
        "state_rows": state_rows,
        "state_memory_bytes": state_memory_bytes,
        "late": late,
        "dead_letters": dead_letters,
        "lag": dict(lag or {}),
    }


def lag_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Exporter:
    """The Prometheus side: its own registry (never the process-wide default, so tests and a job's
    several queries cannot collide), served on loopback only, updated from each record."""

    LABELS = ("app", "query")

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels, registry = self.LABELS, self.registry

        def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, text, (*labels, *extra), registry=registry)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, labels, registry=registry)

        self.batches = counter("arus_batches", "micro-batches (Spark) or intervals (consumer, producer)")
        self.rows = counter("arus_rows", "rows processed (Spark, consumer) or acknowledged (producer)")
        self.late = counter("arus_late", "events behind the watermark")
        self.dead_letters = counter("arus_dead_letters", "records that failed to parse or to pass a guard")
        self.batch_id = gauge("arus_batch_id", "id of the last micro-batch")
        self.input_rate = gauge("arus_input_rows_per_second", "input (or sent) rows per second, last batch")
        self.processed_rate = gauge(
            "arus_processed_rows_per_second", "processed (or acknowledged) rows per second, last batch"
        )
        self.duration = gauge("arus_batch_duration_seconds", "duration of the last batch")
        self.watermark = gauge("arus_watermark_timestamp_seconds", "event-time watermark, Unix seconds")
        self.state_rows = gauge("arus_state_rows", "rows held in state (Spark state stores, open windows)")
        self.state_memory = gauge("arus_state_memory_bytes", "memory of the state stores")
        self.lag = gauge("arus_lag_records", "records behind the partition's end", ("topic", "partition"))

    def update(self, line: Mapping[str, Any]) -> None:
        labels = (line["app"], line["query"])
        self.batches.labels(*labels).inc()
        self.rows.labels(*labels).inc(line["rows"])
        for counter, key in ((self.late, "late"), (self.dead_letters, "dead_letters")):
            if line[key] is not None:
                counter.labels(*labels).inc(line[key])
        values = {
            self.batch_id: line["batch_id"],
            self.input_rate: line["input_rows_per_s"],
            self.processed_rate: line["processed_rows_per_s"],
            self.duration: None if line["batch_duration_ms"] is None else line["batch_duration_ms"] / 1000,
            self.state_rows: line["state_rows"],
            self.state_memory: line["state_memory_bytes"],
            self.watermark: _epoch_s(line["watermark"]),
        }
        for gauge, value in values.items():
            if value is not None:
                gauge.labels(*labels).set(value)
        for where, behind in line["lag"].items():
            topic, _, partition = where.rpartition(":")
            self.lag.labels(*labels, topic, partition).set(behind)


def _epoch_s(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Metrics:
    """Appends records to one JSONL file (always) and feeds the exporter (when serving); safe to
    call from several threads, as Spark's listener and a job's own thread both may."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.exporter: Exporter | None = None
        self._server: Any = None
        if port is not None:
            self.exporter = Exporter()
            self._server, _thread = start_http_server(port, addr=LOOPBACK, registry=self.exporter.registry)

    @classmethod
    def open(cls, config: Config, app: str, port: int | None = None) -> Metrics:
        """The file of `app` under [paths] metrics, and the endpoint on `port` if one is given."""
        return cls(config.resolve(config.paths.metrics) / f"{app}.jsonl", port)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def write(self, line: Mapping[str, Any]) -> None:
        if tuple(line) != KEYS:
            raise ValueError(f"a metrics line has exactly the keys {', '.join(KEYS)}")
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            # Opened per line so a rotated or deleted file is recreated, and a crash loses no line.
            with self.path.open("a", encoding="utf-8") as file:
                file.write(text)
            if self.exporter is not None:
                self.exporter.update(line)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def batch_line(folder: Path, query: str, batch_id: int) -> dict[str, Any] | None:
    """The newest Spark line of `query`'s batch `batch_id` in any <app>.jsonl of `folder`, None when
    no file has one (a run without the listener, or metrics written elsewhere)."""
    found: dict[str, Any] | None = None
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line being appended while this reads
            if (line.get("source"), line.get("query"), line.get("batch_id")) == (
                "spark",
                query,
                batch_id,
            ) and (found is None or line["time"] >= found["time"]):
                found = line
    return found
