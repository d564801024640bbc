"""Soak: the main job live at a fixed share of its measured maximum load for minutes, sampled every
few seconds; is anything growing that should not?

    result = run_soak(spark, config, rate, seconds, devices, trigger, work, created, every_s)

The job's own query (arus.runtime.queries.start_aggregate_query) runs with a processing-time
trigger, fed by the arus IoT producer (`--live --rate`, event time following the wall clock). Each
sample holds: consumer lag (the topic's end offsets minus the offsets the query has read), the
last batch's duration, the Spark JVM's resident and heap-used memory (driver and executor are one
JVM in local mode), this Python driver's resident memory, and the gold table's version and rows
(from its Delta log) and the rows its stateful operators hold. Flat means the mean of the last
fifth of the samples is within 20% of the mean of the first fifth. The checks start once the
job's state has filled (`state_fill_seconds`): until then every batch adds state that no batch
removes yet, by design, and the samples of that time are kept and plotted but not judged.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arus.bench.common import create_topic, run_client, unique_topic
from arus.bench.e2e import read_up_to, wait_idle
from arus.bench.spark_ladder import jvm_pid, progress_figures, scratch_query
from pyspark.sql import SparkSession

from arus.config import Config
from arus.grammar import duration_us
from arus.runtime.queries import start_aggregate_query

FLAT = 1.2
SERIES = ("lag", "batch_ms", "jvm_rss_mb", "jvm_heap_mb", "driver_rss_mb", "gold_rows", "state_rows")


def fifth_ratio(values: Sequence[float | None]) -> float | None:
    """Mean of the last fifth over the mean of the first fifth (None if either is empty or zero)."""
    clean = [v for v in values if v is not None]
    n = len(clean) // 5
    if n == 0:
        return None
    first, last = statistics.fmean(clean[:n]), statistics.fmean(clean[-n:])
    return last / first if first else None


def lag_bounded(lags: Sequence[float | None], slack: float) -> bool | None:
    """The last fifth's mean lag is within 20% of the first fifth's, or under `slack` records (what
    two triggers bring), since a lag near zero makes a ratio meaningless."""
    clean = [v for v in lags if v is not None]
    n = len(clean) // 5
    if n == 0:
        return None
    first, last = statistics.fmean(clean[:n]), statistics.fmean(clean[-n:])
    return last <= max(first * FLAT, slack)


def state_fill_seconds(config: Config) -> float:
    """How long the job at a steady load takes until its state holds all it ever will: the
    deduplication keeps a reading until the watermark passes its event time plus the watermark's
    delay (twice the delay behind the newest event), the aggregation a window until the watermark
    passes its end (window plus delay)."""
    delay = duration_us(config.stream.watermark) / 1e6
    return max(2 * delay, duration_us(config.aggregate.window) / 1e6 + delay)


def verdict(samples: list[dict[str, Any]], rate: float, trigger_s: float) -> dict[str, Any]:
    """Flatness of each series from the first to the last fifth, and whether gold grew. The samples
    taken while the state was filling, and those before the query's second batch (a cold start),
    are left out."""
    samples = [s for s in samples if (s.get("batch_id") or 0) >= 1 and not s.get("filling")]
    series = {name: [s.get(name) for s in samples] for name in SERIES}
    ratios = {name: fifth_ratio(series[name]) for name in ("batch_ms", "jvm_rss_mb", "driver_rss_mb")}
    gold = [g for g in series["gold_rows"] if g is not None]
    checks: dict[str, bool | None] = {
        f"{name} flat": None if ratio is None else ratio <= FLAT for name, ratio in ratios.items()
    }
    checks["lag bounded"] = lag_bounded(series["lag"], rate * trigger_s * 2)
    checks["gold growing"] = len(gold) >= 5 and gold[-1] > gold[len(gold) // 5]
    return {
        "ratios": ratios,
        "checks": checks,
        "met": all(checks.values()) if None not in checks.values() else None,
    }


def gold_rows(table: Path, seen: dict[str, int]) -> tuple[int, int]:
    """The gold table's newest version and the rows its commits inserted (reading new commits only)."""
    log = table / "_delta_log"
    for commit in sorted(log.glob("*.json")) if log.exists() else []:
        if commit.name in seen:
            continue
        rows = 0
        for line in commit.read_text().splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info:
                metrics = info.get("operationMetrics", {})
                rows = int(metrics.get("numTargetRowsInserted") or metrics.get("numOutputRows") or 0)
        seen[commit.name] = rows
    version = max((int(Path(name).stem) for name in seen), default=-1)
    return version, sum(seen.values())


def _rss_mb(pid: int | str) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def run_soak(
    spark: SparkSession,
    config: Config,
    rate: float,
    seconds: float,
    devices: int,
    trigger: str,
    work: Path,
    created: list[str],
    every_s: float,
    fill_s: float,
) -> dict[str, Any]:
    """The job live for `fill_s` + `seconds` at `rate` events/s, sampled every `every_s` seconds;
    the samples of the first `fill_s` seconds are marked `filling`."""
    from kafka import KafkaConsumer, TopicPartition

    topic = create_topic(config, unique_topic("soak-in"), 3)
    out = create_topic(config, unique_topic("soak-out"), 3)
    created += [topic, out]
    spec = scratch_query(config, topic, out, work, trigger=trigger)
    query = start_aggregate_query(spark, config.kafka, spec)
    count = int(rate * (fill_s + seconds))
    produced: dict[str, Any] = {}
    producer = threading.Thread(
        target=lambda: produced.update(
            run_client(
                "arus-iot",
                [
                    *("--topic", topic, "--count", str(count), "--devices", str(devices)),
                    *("--interval", str(devices / rate), "--rate", str(rate), "--live"),
                ],
                config,
                timeout=(fill_s + seconds) * 3 + 120,
            )
        )
    )
    offsets = KafkaConsumer(**config.kafka.client_kwargs())
    partitions = [TopicPartition(topic, p) for p in range(3)]
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()  # type: ignore[union-attr]
    pid = jvm_pid(spark)
    seen: dict[str, int] = {}
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        producer.start()
        while producer.is_alive():
            time.sleep(every_s)
            if query.exception():
                raise RuntimeError(f"soak: the job failed: {query.exception()}")
            progress: dict[str, Any] = query.lastProgress or {}
            end = sum(offsets.end_offsets(partitions).values())
            version, rows = gold_rows(work / "gold", seen)
            t_s = time.monotonic() - started
            samples.append(
                {
                    "t_s": round(t_s, 1),
                    "filling": t_s < fill_s,
                    "lag": end - read_up_to(progress) if progress else None,
                    "batch_id": progress.get("batchId"),
                    "batch_ms": progress.get("durationMs", {}).get("triggerExecution"),
                    "batch_rows": progress.get("numInputRows"),
                    "state_rows": sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators", [])),
                    "jvm_rss_mb": _rss_mb(pid),
                    "jvm_heap_mb": (runtime.totalMemory() - runtime.freeMemory()) / 2**20,
                    "driver_rss_mb": _rss_mb("self"),
                    "gold_version": version,
                    "gold_rows": rows,
                }
            )
        # Stopping mid-batch makes Spark log the cancelled batch's failure: let the last batch end.
        wait_idle(query, count, timeout=120)
    finally:
        query.stop()
        offsets.close()
        producer.join()
    trigger_s = duration_us(trigger) / 1e6
    return {
        "offered_events_per_s": rate,
        "achieved_events_per_s": produced.get("events_per_s"),
        "seconds": seconds,
        "fill_s": fill_s,
        "trigger": trigger,
        "samples": samples,
        **progress_figures(query.recentProgress),
        **verdict(samples, rate, trigger_s),
    }
