"""Progress of streaming queries: one line per micro-batch, a summary per query at the end.

    tally = Tally()                                   # foreachBatch writers record their counts
    tally.set("clean", batch_id, late=3, dead=1)
    await_queries(queries, tally)                     # prints as batches complete; raises on failure
                                                      # Ctrl-C or SIGTERM: the batch in hand ends first

A line: `clean batch 2: 120 rows, 850 rows/s, watermark 2026-03-01T12:03:00Z, late 3 (Spark
dropped 3), dead letters 1, state 240 rows`. The rows/s is Spark's processedRowsPerSecond; the
summary's events/s is the rows over the batches' own execution time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery

from arus.signals import stop_on_signals

LABELS = {"late": "late", "dead": "dead letters", "alerts": "alerts", "published": "published"}
# How long a stop signal waits for the micro-batch in hand before stopping the query mid-batch (which
# is safe: the batch is replayed on restart). systemd's default stop timeout is 90 s, so the summary
# still prints before it sends SIGKILL.
STOP_GRACE_S = 30.0


class Tally:
    """Counts that foreachBatch writers report per (query, batch); a replayed batch overwrites."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], dict[str, int]] = {}

    def set(self, query: str, batch_id: int, **counts: int) -> None:
        with self._lock:
            self._counts.setdefault((query, batch_id), {}).update(counts)

    def batch(self, query: str, batch_id: int) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get((query, batch_id), {}))

    def totals(self, query: str) -> dict[str, int]:
        total: dict[str, int] = {}
        with self._lock:
            for (name, _), counts in self._counts.items():
                if name == query:
                    for key, value in counts.items():
                        total[key] = total.get(key, 0) + value
        return total


def dropped_by_watermark(progress: Mapping[str, Any]) -> int:
    return sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in progress.get("stateOperators", []))


def executed(progress: Mapping[str, Any]) -> bool:
    """False for the progress Spark reports while a live query waits for data (no batch ran; it
    carries the id of the next batch, which is reported again once that batch has run)."""
    return "addBatch" in progress.get("durationMs", {})


def progress_line(progress: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    """One micro-batch, from a StreamingQueryProgress as a dict and the writer's counts."""
    parts = [
        f"{progress.get('numInputRows', 0)} rows",
        f"{progress.get('processedRowsPerSecond') or 0:,.0f} rows/s",
    ]
    watermark = progress.get("eventTime", {}).get("watermark")
    if watermark:
        parts.append(f"watermark {watermark}")
    for key, label in LABELS.items():
        if key in counts:
            text = f"{label} {counts[key]}"
            if key == "late" and progress.get("stateOperators"):
                text += f" (Spark dropped {dropped_by_watermark(progress)})"
            parts.append(text)
    operators = progress.get("stateOperators", [])
    if operators:
        parts.append(f"state {sum(int(op.get('numRowsTotal') or 0) for op in operators)} rows")
    return f"{progress.get('name') or '?'} batch {progress.get('batchId')}: " + ", ".join(parts)


@dataclass
class Rate:
    """What a query processed over its batches; `events_per_s` is rows over batch execution time."""

    batches: int = 0
    rows: int = 0
    busy_ms: int = 0
    seen: set[int] = field(default_factory=set)

    def add(self, progress: Mapping[str, Any]) -> None:
        batch_id = int(progress.get("batchId", -1))
        if batch_id in self.seen:
            return
        self.seen.add(batch_id)
        self.batches += 1
        self.rows += int(progress.get("numInputRows") or 0)
        self.busy_ms += int(progress.get("durationMs", {}).get("triggerExecution") or 0)

    @property
    def events_per_s(self) -> float:
        return self.rows / (self.busy_ms / 1000) if self.busy_ms else 0.0


def summary_line(name: str, rate: Rate, counts: Mapping[str, int]) -> str:
    extra = "".join(f", {LABELS[k]} {counts[k]}" for k in LABELS if k in counts)
    return (
        f"{name}: {rate.batches} batches, {rate.rows} rows in {rate.busy_ms / 1000:.1f} s of batch time "
        f"({rate.events_per_s:,.0f} events/s){extra}"
    )


def finish_batches(queries: Sequence[StreamingQuery], grace_s: float = STOP_GRACE_S) -> None:
    """Wait until no query is inside a trigger (its micro-batch committed), for at most `grace_s`."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(q.isActive and q.status["isTriggerActive"] for q in queries):
        time.sleep(0.2)


def await_queries(
    queries: Sequence[StreamingQuery],
    tally: Tally | None = None,
    out: TextIO | None = None,
    poll_s: int = 1,
    stop: threading.Event | None = None,
) -> dict[str, Rate]:
    """Wait for the queries to end (availableNow) or for a stop, printing each batch as it completes.

    Ctrl-C and SIGTERM set `stop` (a caller that runs several rounds passes its own and checks it
    between them); the queries then finish the micro-batch in hand and stop. Every query is stopped
    before this returns; a failed query raises RuntimeError, after all stop.
    """
    tally = tally or Tally()
    out = out or sys.stdout
    stop = stop or threading.Event()
    rates: dict[str, Rate] = {q.name: Rate() for q in queries}

    def report() -> None:
        for q in queries:
            for progress in q.recentProgress:
                rate = rates[q.name]
                if executed(progress) and int(progress["batchId"]) not in rate.seen:
                    rate.add(progress)
                    print(progress_line(progress, tally.batch(q.name, int(progress["batchId"]))), file=out)
        out.flush()

    signals: list[str] = []

    def asked(name: str) -> None:
        signals.append(name)
        stop.set()

    # Our handler replaces PySpark's SIGINT one, which raises KeyboardInterrupt inside a py4j call
    # and prints its tracebacks; this one only records the signal (printing here could re-enter a
    # write the main thread is in), so the wait below returns cleanly.
    with stop_on_signals(asked):
        try:
            while not stop.is_set() and any(q.isActive for q in queries):
                for q in queries:
                    if not stop.is_set():
                        q.awaitTermination(poll_s)
                report()
        except StreamingQueryException:
            # A failure (circuit breaker, data loss) is raised below, once every query has stopped.
            pass
        if stop.is_set():
            if signals:
                print(f"{signals[0]}: stopping once the micro-batch in hand is committed", file=sys.stderr)
            finish_batches(queries)
        for q in queries:
            q.stop()
    report()
    for q in queries:
        print(summary_line(q.name, rates[q.name], tally.totals(q.name)), file=out, flush=True)
    for q in queries:
        if q.exception():
            raise RuntimeError(f"query {q.name} failed: {q.exception()}")
    return rates
