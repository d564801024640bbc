"""Steady-state Spark: what a micro-batch costs once the JVM is warm, split into a fixed cost per
batch and a marginal cost per event.

    clock = BatchClock(spark)                      # a listener: CPU and wall at every batch's end
    batches = run_steady(spark, config, "job", topic, out, 5000, work, clock)
    summary = summarise_rung({5000: batches, ...})  # per size medians, and the fitted line

Each measurement is one query from a fresh checkpoint with trigger(availableNow=True) and
maxOffsetsPerTrigger = the batch size, on a topic holding exactly `batches + 1` batches; its first
batch (planning, state store creation, first Delta commit) is left out. CPU per batch is the Spark
JVM's plus this Python driver's between two progress reports; wall per batch is the progress's
triggerExecution. The line CPU per batch = fixed + marginal x rows is fitted by least squares over
every measured batch of every size.

Rungs (all built from the job's own code, so they measure whatever the engine does):

    parse   Kafka source, parse_events + valid_events -> noop (the ladder's parse rung)
    delta   the job's query (arus.runtime.queries.start_aggregate_query) without the dead-letter pass
    job     the job's query as `arus aggregate` runs it (the configured [aggregate] output_mode)
    append  the job's query with output_mode "append": each final window written once
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arus.bench.common import proc_cpu_seconds
from arus.bench.spark_ladder import jvm_pid, scratch_query, start_rung
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from arus.config import Config
from arus.runtime.queries import start_aggregate_query

RUNGS = ("parse", "delta", "job", "append")
LIVE_BATCH = 1000  # events in "a live micro-batch of about 1,000 events"
# The JIT compiles Spark's and Delta's code for minutes: over 80 batches of 1,000 in one JVM, the
# compiler threads' CPU fell from 7.8 to 2.2 s per 10 s and the batch from 2.8 to 2.1 s. A rung is
# warm once a round of WARM_ROUND batches is no more than WARM_SETTLED faster than the round before.
WARM_ROUND = 10
WARM_SETTLED = 0.05


@dataclass(frozen=True)
class Batch:
    """One data batch of a query: its rows, and the CPU and wall time since the data batch before."""

    batch_id: int
    rows: int
    cpu_s: float
    wall_ms: float


class BatchClock(StreamingQueryListener):
    """Reads the JVM's and the driver's CPU at every progress report, per query."""

    def __init__(self, spark: SparkSession) -> None:
        self.pid = jvm_pid(spark)
        self.lock = threading.Lock()
        self.marks: dict[str, list[tuple[int, int, float, float]]] = {}  # id -> (batch, rows, ms, cpu)
        self.started: dict[str, float] = {}
        spark.streams.addListener(self)

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid) + time.process_time()

    def onQueryStarted(self, event: Any) -> None:
        with self.lock:
            self.started[str(event.id)] = self.cpu()

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        mark = (p.batchId, p.numInputRows, float(p.durationMs.get("triggerExecution", 0)), self.cpu())
        with self.lock:
            self.marks.setdefault(str(p.id), []).append(mark)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    def batches(self, query_id: str) -> list[Batch]:
        with self.lock:
            marks = sorted(self.marks.get(query_id, []))
            start = self.started.get(query_id, marks[0][3] if marks else 0.0)
        return data_batches(marks, start)


def data_batches(marks: Sequence[tuple[int, int, float, float]], cpu_at_start: float) -> list[Batch]:
    """Per data batch (rows > 0): CPU since the previous data batch's report, and the wall time of it
    and of the no-data batches (a watermark moving on) run since, which a live job pays too."""
    out = []
    cpu_before, wall = cpu_at_start, 0.0
    for batch_id, rows, ms, cpu in marks:
        wall += ms
        if rows > 0:
            out.append(Batch(batch_id, rows, cpu - cpu_before, wall))
            cpu_before, wall = cpu, 0.0
    return out


def warmed(round_medians: Sequence[float]) -> bool:
    """Whether the last warm-up round's median wall per batch is within WARM_SETTLED of (or above)
    the round before it: the JIT no longer speeds the batches up."""
    return len(round_medians) >= 2 and round_medians[-1] >= round_medians[-2] * (1 - WARM_SETTLED)


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares intercept and slope of ys against xs (None without two distinct xs)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def summarise_rung(sizes: dict[int, list[Batch]]) -> dict[str, Any]:
    """Medians per batch size, and the fitted fixed and marginal costs (CPU and wall) of the rung."""
    points = []
    for size, batches in sorted(sizes.items()):
        if not batches:
            continue
        rows = statistics.median(b.rows for b in batches)
        wall = statistics.median(b.wall_ms for b in batches)
        cpu = statistics.median(b.cpu_s for b in batches)
        points.append(
            {
                "size": size,
                "batches": len(batches),
                "rows_median": rows,
                "cpu_ms_per_batch": cpu * 1000,
                "wall_ms_per_batch": wall,
                "cpu_us_per_event": cpu / rows * 1e6,
                "events_per_s": rows / wall * 1000 if wall else None,
            }
        )
    every = [b for batches in sizes.values() for b in batches]
    xs = [float(b.rows) for b in every]
    cpu_fit = fit_line(xs, [b.cpu_s * 1000 for b in every])
    wall_fit = fit_line(xs, [b.wall_ms for b in every])
    return {
        "points": points,
        "fixed_cpu_ms": cpu_fit[0] if cpu_fit else None,
        "marginal_cpu_us": cpu_fit[1] * 1000 if cpu_fit else None,
        "fixed_wall_ms": wall_fit[0] if wall_fit else None,
        "marginal_wall_us": wall_fit[1] * 1000 if wall_fit else None,
        "live_batch_wall_ms": wall_fit[0] + wall_fit[1] * LIVE_BATCH if wall_fit else None,
        "largest_events_per_s": points[-1]["events_per_s"] if points else None,
        "batches": [b.__dict__ for b in every],
    }


def start_steady_rung(
    spark: SparkSession, config: Config, rung: str, topic: str, out: str, size: int, work: Path
) -> StreamingQuery:
    if rung == "parse":
        return start_rung(spark, config, "parse", topic, out, work, size)[0]
    query = scratch_query(config, topic, out, work, max_offsets_per_trigger=size)
    if rung == "delta":
        query = replace(query, dead=None)
    elif rung == "append":
        query = replace(query, job=replace(query.job, output_mode="append"))
    elif rung != "job":
        raise ValueError(f"unknown steady rung {rung!r}; choose from {RUNGS}")
    return start_aggregate_query(spark, config.kafka, query)


def run_steady(
    spark: SparkSession,
    config: Config,
    rung: str,
    topic: str,
    out: str,
    size: int,
    work: Path,
    clock: BatchClock,
    events: int,
) -> list[Batch]:
    """One measurement: the rung over `topic` in batches of `size`; its data batches but the first."""
    query = start_steady_rung(spark, config, rung, topic, out, size, work)
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"steady rung {rung} failed: {query.exception()}")
    batches = _settled(clock, str(query.id), events)
    read = sum(b.rows for b in batches)
    if read < events:
        raise RuntimeError(f"steady rung {rung} at {size}: progress reports {read} rows of {events}")
    return batches[1:]


def _settled(clock: BatchClock, query_id: str, events: int) -> list[Batch]:
    """The listener hears of the last batches a moment after the query ends."""
    deadline = time.monotonic() + 10
    while True:
        batches = clock.batches(query_id)
        if sum(b.rows for b in batches) >= events or time.monotonic() > deadline:
            return batches
        time.sleep(0.1)
