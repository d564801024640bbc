"""Where one micro-batch of the main job spends its time: each step of its foreachBatch, timed.

    arus bench profile                         # 1,000 records per trigger, 12 batches, both output modes
    arus bench profile --size 5000 --batches 20 --modes update
    arus bench profile --bootstrap 127.0.0.1:9092   # against a running broker instead of its own
    arus bench profile --metrics 1000000 --modes ""  # only the cost of each metric, on 10^6 events
    arus bench profile --reads 1000 --modes ""       # only a bounded read to the end of a topic

The job's query (arus.runtime.queries, as `arus aggregate` builds it) runs on a pre-filled topic
with available-now and `--size` records per trigger. The writer's steps (arus.runtime.writers:
the count of the input's records, dead letters and late events, the gold MERGE or append, the
Kafka publish, the late events) are wrapped in timers, and Delta's own MERGE metrics are read
from the gold table's history. The first batch is left out (cold). The result goes to
bench/results/profile-<time>.json; `arus bench report` shows the newest one.

`--metrics N` also times the job's aggregation alone (1-minute windows per device, the
[aggregate] metrics added one at a time, the percentiles at two accuracies) over N readings
generated and cached in Spark, so neither Kafka nor parsing is in the figure: the cost of each
metric, in JVM CPU per event.

`--reads N` times a bounded Spark read of a topic holding N readings, from its start to its end
(what a batch job, a catch-up's last micro-batch or the re-read of a quiet topic does), counted,
with the broker holding an empty fetch for Kafka's default 500 ms and for arus's own setting
(KafkaConfig.spark_read_options), in turn.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arus.bench.common import (
    RESULTS_DIR,
    SPARK_CONF,
    bench_config,
    create_topic,
    run_client,
    running_broker,
    topics,
    unique_topic,
    versions,
)
from arus.bench.payloads import write_payload_file

from arus.config import Config, load_config

# The writer's steps, in the order a batch runs them. The first action on the persisted batch
# (first_window) is where the stateful aggregation itself runs.
STEPS = (
    "first_window",
    "input_counts",
    "merge_into_delta",
    "append_to_delta",
    "write_kafka",
    "write_kafka_once",
    "publish_dead_letters",
    "write_late_events",
)
DELTA_METRICS = ("executionTimeMs", "scanTimeMs", "rewriteTimeMs", "materializeSourceTimeMs")


@contextmanager
def timed_steps() -> Iterator[dict[str, list[float]]]:
    """Seconds of each call of the writer's STEPS while the block runs (the functions are put back)."""
    from arus.runtime import writers

    seconds: dict[str, list[float]] = {}
    originals = {name: getattr(writers, name) for name in STEPS}

    def timer(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                seconds.setdefault(name, []).append(time.monotonic() - started)

        return run

    for name, function in originals.items():
        setattr(writers, name, timer(name, function))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(writers, name, function)


def merge_metrics(spark: Any, gold: Path) -> dict[str, float]:
    """Medians of Delta's MERGE metrics (ms) over the gold table's MERGE commits after its first."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, str(gold)).history().orderBy("version").collect()
    merges = [row["operationMetrics"] for row in history if row["operation"] == "MERGE"][1:]
    return {
        name: statistics.median(float(m[name]) for m in merges)
        for name in DELTA_METRICS
        if merges and all(name in m for m in merges)
    }


def profile_mode(
    spark: Any, config: Config, topic: str, out: str, work: Path, size: int, mode: str
) -> dict[str, Any]:
    """One run of the job's query in output `mode` over `topic`, `size` records per trigger."""
    from arus.bench.spark_ladder import scratch_query

    from arus.runtime.queries import start_aggregate_query

    query = scratch_query(config, topic, out, work, max_offsets_per_trigger=size)
    query = replace(query, job=replace(query.job, output_mode=mode))
    with timed_steps() as seconds:
        running = start_aggregate_query(spark, config.kafka, query)
        running.awaitTermination()
    batches = [p for p in running.recentProgress if p.numInputRows][1:]
    per_step = {
        name: round(statistics.median(values[1:]) * 1000)
        for name, values in seconds.items()
        if len(values) > 1 and max(values[1:]) > 0.0005
    }
    durations = [p.durationMs for p in batches]
    return {
        "mode": mode,
        "size": size,
        "batches": len(batches),
        "batch_ms": round(statistics.median(d["triggerExecution"] for d in durations)) if durations else None,
        "add_batch_ms": round(statistics.median(d["addBatch"] for d in durations)) if durations else None,
        "steps_ms": per_step,
        "delta_merge_ms": merge_metrics(spark, work / "gold") if mode == "update" else {},
        "state_ms": state_times(batches),
    }


def state_times(batches: list[Any]) -> dict[str, dict[str, int]]:
    """Medians (ms) of each stateful operator's updates, removals and commit, from the batches'
    progress: the part of `first_window` the state stores take, operator by operator."""
    times: dict[str, dict[str, list[int]]] = {}
    for progress in batches:
        for op in progress.stateOperators:
            spent = times.setdefault(op.operatorName, {})
            for name, ms in (
                ("updates", op.allUpdatesTimeMs),
                ("removals", op.allRemovalsTimeMs),
                ("commit", op.commitTimeMs),
            ):
                spent.setdefault(name, []).append(ms)
    return {
        op: {name: round(statistics.median(ms)) for name, ms in spent.items()} for op, spent in times.items()
    }


# Readings for the metric costs: this many devices, one reading each every READING_S seconds.
METRIC_DEVICES, READING_S = 10_000, 6
ACCURACIES = (10_000, 1_000)  # [aggregate] percentile_accuracy's default, and a tenth of it


def metric_steps(value: Any) -> list[tuple[str, list[Any]]]:
    """The aggregation's metrics added one step at a time (each step holds the ones before it), then
    the percentiles at the lower accuracy in place of the default's; as aggregate_windows computes them."""
    from pyspark.sql import functions as F

    from arus.core.transforms import QUANTILES

    def quantiles(accuracy: int) -> Any:
        return F.percentile_approx(value, list(QUANTILES.values()), accuracy)

    steps = [
        ("count", [F.count(F.lit(1))]),
        ("+ mean", [F.avg(value)]),
        ("+ min, max", [F.min(value), F.max(value)]),
        ("+ stddev", [F.stddev_samp(value)]),
        (f"+ p50, p95 at accuracy {ACCURACIES[0]:,}", [quantiles(ACCURACIES[0])]),
    ]
    cumulative: list[tuple[str, list[Any]]] = []
    chosen: list[Any] = []
    for name, columns in steps:
        chosen = chosen + columns
        cumulative.append((name, chosen))
    lower = cumulative[-2][1] + [quantiles(ACCURACIES[1])]
    return [*cumulative, (f"p50, p95 at accuracy {ACCURACIES[1]:,} instead", lower)]


def metric_costs(spark: Any, events: int, repeats: int = 3) -> list[dict[str, Any]]:
    """JVM CPU and wall per event of the window aggregation over `events` cached readings, per step of
    metric_steps (medians of `repeats` runs after one warm-up), and what each step added."""
    from arus.bench.common import proc_cpu_seconds
    from arus.bench.spark_ladder import jvm_pid
    from pyspark.sql import functions as F

    pid = jvm_pid(spark)
    readings = spark.range(events).select(
        (F.col("id") % METRIC_DEVICES).cast("string").alias("device_id"),
        F.timestamp_seconds((F.col("id") / METRIC_DEVICES).cast("long") * READING_S).alias("event_time"),
        F.rand(7).alias("value"),
    )
    readings.persist()
    try:
        readings.count()
        steps = metric_steps(F.col("value"))

        def aggregate(columns: list[Any]) -> None:
            windows = readings.groupBy(F.window("event_time", "1 minute"), "device_id").agg(*columns)
            windows.write.format("noop").mode("overwrite").save()

        # The JIT warms up on every metric first, or the first steps pay for it.
        for _, columns in steps[-2:]:
            aggregate(columns)
        rows: list[dict[str, Any]] = []
        for name, columns in steps:
            cpu, wall = [], []
            for attempt in range(repeats + 1):
                cpu_before, started = proc_cpu_seconds(pid), time.monotonic()
                aggregate(columns)
                if attempt:
                    cpu.append(proc_cpu_seconds(pid) - cpu_before)
                    wall.append(time.monotonic() - started)
            rows.append(
                {
                    "metrics": name,
                    "cpu_us_per_event": round(statistics.median(cpu) / events * 1e6, 2),
                    "wall_s": round(statistics.median(wall), 2),
                }
            )
            print(
                f"  {name}: {rows[-1]['cpu_us_per_event']} us CPU/event, {rows[-1]['wall_s']} s", flush=True
            )
    finally:
        readings.unpersist()
    # What each step added to the one above it; the lower accuracy, to the step without percentiles.
    cumulative, lower = rows[:-1], rows[-1]
    for before, row in itertools.pairwise(cumulative):
        row["added_cpu_us_per_event"] = round(row["cpu_us_per_event"] - before["cpu_us_per_event"], 2)
    lower["added_cpu_us_per_event"] = round(lower["cpu_us_per_event"] - cumulative[-2]["cpu_us_per_event"], 2)
    return rows


KAFKA_FETCH_MAX_WAIT_MS = 500  # the consumer's default fetch.max.wait.ms


def read_costs(spark: Any, config: Config, topic: str, repeats: int = 6) -> list[dict[str, Any]]:
    """Median wall of counting `topic` from its start to its end, with Kafka's default fetch wait
    and with arus's (KafkaConfig.spark_read_options); the two alternate, after one read of each."""
    options = config.kafka.spark_read_options()
    waits = {"Kafka's default": str(KAFKA_FETCH_MAX_WAIT_MS), "arus": options["kafka.fetch.max.wait.ms"]}
    seconds: dict[str, list[float]] = {name: [] for name in waits}
    for attempt in range(repeats + 1):
        for name, wait in waits.items():
            started = time.monotonic()
            (
                spark.read.format("kafka")
                .options(**{**options, "kafka.fetch.max.wait.ms": wait})
                .option("subscribe", topic)
                .option("startingOffsets", "earliest")
                .option("endingOffsets", "latest")
                .load()
                .count()
            )
            if attempt:
                seconds[name].append(time.monotonic() - started)
    return [
        {"setting": name, "fetch_max_wait_ms": int(waits[name]), "read_s": round(statistics.median(s), 3)}
        for name, s in seconds.items()
    ]


def filled_topics(config: Config, work: Path, events: int) -> tuple[str, str]:
    """A new input topic holding `events` IoT readings, and a new output topic."""
    topic = create_topic(config, unique_topic("p-in"), 3)
    sink = create_topic(config, unique_topic("p-out"), 3)
    payload = work / "payload.txt"
    write_payload_file(payload, events, 50)
    print(f"bench profile: filling {topic} with {events} readings", flush=True)
    run_client("kp-bare", ["--topic", topic, "--count", str(events), "--payload", str(payload)], config)
    return topic, sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arus bench profile",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="arus config file (default: the usual search)")
    parser.add_argument("--size", type=int, default=1000, help="records per trigger (default 1000)")
    parser.add_argument("--batches", type=int, default=12, help="batches per mode, the first left out")
    parser.add_argument("--modes", default="update,append", help="output modes to profile, comma-separated")
    parser.add_argument("--bootstrap", help="use this running broker instead of the benchmarks' own")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/profile-<time>.json)")
    parser.add_argument(
        "--metrics",
        type=int,
        metavar="N",
        help="also time the aggregation per metric over N generated readings",
    )
    parser.add_argument(
        "--reads",
        type=int,
        metavar="N",
        help="also time a read of N readings to the end of a topic, per fetch wait",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"update", "append"})
    if unknown or args.size < 1 or args.batches < 2:
        parser.error(f"--modes takes update and append (got {unknown}); --size >= 1, --batches >= 2")
    if args.metrics is not None and args.metrics < METRIC_DEVICES:
        parser.error(f"--metrics takes at least {METRIC_DEVICES:,} readings (one per device)")
    if args.reads is not None and args.reads < 1:
        parser.error("--reads takes at least 1 reading")
    if not modes and args.metrics is None and args.reads is None:
        parser.error("nothing to profile: give --modes, --metrics, --reads or several")
    config = bench_config(load_config(args.config), args.bootstrap)
    started = datetime.now(UTC)
    out = args.out or RESULTS_DIR / f"profile-{started:%Y%m%dT%H%M%SZ}.json"
    work = Path(tempfile.mkdtemp(prefix="arus-profile-"))
    try:
        with running_broker(config, own=not args.bootstrap), topics(config) as created:
            from arus.runtime.session import build_session

            spark = build_session("arus-bench-profile", config.spark, SPARK_CONF)
            runs = []
            if modes:
                topic, sink = filled_topics(config, work, args.size * args.batches)
                created += [topic, sink]
            for mode in modes:
                print(f"bench profile: {mode} mode, {args.batches} batches of {args.size}", flush=True)
                runs.append(profile_mode(spark, config, topic, sink, work / mode, args.size, mode))
                print(f"  median batch {runs[-1]['batch_ms']} ms: {runs[-1]['steps_ms']}", flush=True)
            metrics = None
            if args.metrics is not None:
                print(f"bench profile: the cost of each metric over {args.metrics:,} readings", flush=True)
                metrics = {
                    "events": args.metrics,
                    "devices": METRIC_DEVICES,
                    "steps": metric_costs(spark, args.metrics),
                }
            reads = None
            if args.reads is not None:
                print(f"bench profile: reading {args.reads:,} readings to the end of a topic", flush=True)
                read_topic, unused = filled_topics(config, work, args.reads)
                created += [read_topic, unused]
                reads = {"events": args.reads, "partitions": 3, "runs": read_costs(spark, config, read_topic)}
                for row in reads["runs"]:
                    print(f"  fetch wait {row['fetch_max_wait_ms']} ms: {row['read_s']} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"started": started.isoformat(), "versions": versions(), "runs": runs}
    if metrics is not None:
        result["metrics"] = metrics
    if reads is not None:
        result["reads"] = reads
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bench profile: {out}")
    return 0
