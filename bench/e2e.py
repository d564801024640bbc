"""End to end: the IoT producer at a fixed offered load -> the main job (live trigger) -> gold.

The producer's event time follows the wall clock (interval = devices / rate), so a window's end is
a moment in real time. A window's latency is the time its final aggregate (the count it ends with)
first appears in the gold Delta table (the commit's timestamp) minus the window's end. The job runs
in update mode, which publishes a window as soon as a batch touches it, so the watermark adds no
wait and is not subtracted (it would be in append mode).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from arus.bench.common import create_topic, run_client, unique_topic
from arus.bench.spark_ladder import progress_figures, scratch_query
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from arus.config import Config
from arus.runtime.queries import start_aggregate_query


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a non-empty list, else None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


Row = tuple[str, float, float, int]  # key, window start, window end (epoch seconds), count


def window_latencies(versions: list[tuple[float, list[Row]]], produced_until: float) -> list[float]:
    """Seconds from each window's end to the first commit showing its final count.

    versions: (commit time, rows) in commit order, times in epoch seconds. Windows ending after
    `produced_until` are left out: nothing more came for them.
    """
    final: dict[tuple[str, float], tuple[float, int]] = {}
    for _at, rows in versions:
        for key, start, end, count in rows:
            final[(key, start)] = (end, count)
    seen: dict[tuple[str, float], float] = {}
    for at, rows in versions:
        for key, start, _end, count in rows:
            if (key, start) not in seen and count == final[(key, start)][1]:
                seen[(key, start)] = at
    return [seen[k] - end for k, (end, _count) in final.items() if end <= produced_until and k in seen]


def delta_versions(spark: SparkSession, table: str, key: str) -> list[tuple[float, list[Row]]]:
    """Every committed version of the gold table: (commit time, rows)."""
    log = Path(table) / "_delta_log"
    out = []
    for commit in sorted(log.glob("*.json")):
        version = int(commit.stem)
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        at = info.get("timestamp", commit.stat().st_mtime * 1000) / 1000
        rows = (
            spark.read.format("delta")
            .option("versionAsOf", version)
            .load(table)
            # Epoch seconds computed in Spark: no time-zone conversion on the Python side.
            .select(
                key,
                F.unix_micros("window_start") / 1e6,
                F.unix_micros("window_end") / 1e6,
                "count",
            )
            .collect()
        )
        out.append((at, [(r[0], float(r[1]), float(r[2]), int(r[3])) for r in rows]))
    return out


def run_load(
    spark: SparkSession,
    config: Config,
    rate: float,
    seconds: float,
    devices: int,
    window: str,
    trigger: str,
    work: Path,
    created: list[str],
) -> dict[str, Any]:
    """One offered load: start the job live, run the producer for `seconds`, let the job catch up."""
    topic = create_topic(config, unique_topic("e2e-in"), 3)
    out = create_topic(config, unique_topic("e2e-out"), 3)
    created += [topic, out]
    table = str(work / "gold")
    spec = scratch_query(config, topic, out, work, window, trigger=trigger)
    stream = start_aggregate_query(spark, config.kafka, spec)
    count = int(rate * seconds)
    result: dict[str, Any] = {}

    def produce() -> None:
        result.update(
            run_client(
                "arus-iot",
                [
                    "--topic",
                    topic,
                    "--count",
                    str(count),
                    "--devices",
                    str(devices),
                    "--interval",
                    str(devices / rate),
                    "--rate",
                    str(rate),
                    "--live",
                ],
                config,
            )
        )

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        producer.join()
        produced_until = time.time()
        wait_idle(stream, count, timeout=120)
    finally:
        stream.stop()
    aggregates = stream.recentProgress
    latencies = window_latencies(delta_versions(spark, table, config.aggregate.keys[0]), produced_until)
    figures = progress_figures(aggregates)
    return {
        "offered_events_per_s": rate,
        "achieved_events_per_s": result.get("events_per_s"),
        "events": count,
        "windows_measured": len(latencies),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies, default=None),
        **figures,
    }


def wait_idle(query: Any, records: int, timeout: float) -> None:
    """Until the job has read all `records` of its input and its batch is over (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = query.lastProgress
        if progress and read_up_to(progress) >= records and not query.status["isTriggerActive"]:
            return
        time.sleep(0.5)


def read_up_to(progress: dict[str, Any]) -> int:
    total = 0
    for source in progress.get("sources", []):
        end = source.get("endOffset")
        offsets = json.loads(end) if isinstance(end, str) else end or {}
        total += sum(int(o) for partitions in offsets.values() for o in partitions.values())
    return total
