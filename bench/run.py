"""Run the benchmark suite and write its results to bench/results/<profile>-<time>.json.

    arus bench run                       # quick profile on the benchmarks' own broker (make bench)
    arus bench run --profile full        # larger sizes, 10^7-event growth (make bench-full)
    arus bench run --bootstrap 127.0.0.1:9092   # against a running broker instead
    arus bench run --only producers,consumers   # some sections only
    arus bench run --profile smoke --only steady,gold   # toy sizes, a few sections
    arus bench run --only soak --e2e-max-rate 8000      # the soak alone, at half of 8,000 events/s

Sections: producers, sweep (throughput against record size), consumers, spark (the cold-start
ladder), steady (Spark's fixed cost per batch and marginal cost per event in steady state), pipeline
(the same for each stage of `arus pipeline`), versus
(`arus aggregate` against `arus consume` on one 10^6-event topic), scale (CPU per event as the
input grows), gold (gold write time as the gold table grows), soak (the job live at half its
maximum load), e2e (end to end at fixed offered loads), growth. A profile may leave some out (the
quick one: sweep, spark, growth); --only runs any. Cases alternate within each repetition, so load
from other processes on the machine falls on all of them alike. `arus bench report FILE` turns
the JSON into docs/benchmarks.md and its plots.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from arus.bench import java
from arus.bench.common import (
    RESULTS_DIR,
    SPARK_CONF,
    bench_config,
    create_topic,
    delete_topics,
    load_average,
    proc_cpu_seconds,
    producer_properties,
    run_client,
    running_broker,
    stats,
    topics,
    unique_topic,
    versions,
)
from arus.bench.payloads import write_csv, write_payload_file

from arus.config import Config, job_parser, load_config

CONSUMER_PARTITIONS = 3
SECTIONS = (
    "producers",
    "sweep",
    "consumers",
    "spark",
    "steady",
    "pipeline",
    "versus",
    "scale",
    "gold",
    "soak",
    "e2e",
    "growth",
)


@dataclass(frozen=True)
class Profile:
    runs: int
    py_events: int  # kafka-python producers
    fast_events: int  # Java and confluent-kafka producers
    sweep_sizes: tuple[int, ...]
    sweep_runs: int
    sweep_bytes: int  # bytes per sweep point, so large records do not take all day
    consumer_events: int
    spark_events: int
    spark_max_per_trigger: int
    e2e_fractions: tuple[float, ...]
    e2e_seconds: float
    e2e_window: str
    e2e_trigger: str
    growth_events: tuple[int, ...]
    growth_devices: tuple[int, ...]
    growth_devices_events: int
    steady_sizes: tuple[int, ...] = (1000, 5000, 20_000)
    steady_batches: int = 10
    steady_warm_rounds: int = 6  # at most, until warm (bench.steady.warmed)
    pipeline_batches: int = 3  # per size and stage: four stages of 10 would not fit the quick profile
    versus_events: int = 1_000_000
    # The job also runs capped, as the user ran it: each batch pays the fixed cost again.
    versus_capped: int = 100_000
    scale_max_per_trigger: int = 100_000
    scale_events: tuple[int, ...] = (100_000, 1_000_000)
    gold_rows: tuple[int, ...] = (1000, 10_000, 100_000, 1_000_000)
    gold_batches: int = 12  # 11 measured commits per run: one commit spreads by a third
    gold_batch_size: int = 2000
    soak_seconds: float = 300
    soak_trigger: str = "2 seconds"
    soak_sample_s: float = 5
    soak_fill: bool = True  # wait for the job's state to fill before judging (smoke: machinery only)
    skipped: tuple[str, ...] = ()  # sections the profile leaves out unless --only names them
    devices: int = 50
    notes: tuple[str, ...] = field(default=())


PROFILES = {
    "smoke": Profile(
        runs=1,
        py_events=500,
        fast_events=2000,
        sweep_sizes=(250, 1000),
        sweep_runs=1,
        sweep_bytes=200_000,
        consumer_events=1000,
        spark_events=1000,
        spark_max_per_trigger=500,
        e2e_fractions=(0.5,),
        e2e_seconds=5,
        e2e_window="2 seconds",
        e2e_trigger="1 second",
        growth_events=(500, 1000),
        growth_devices=(10, 100),
        growth_devices_events=500,
        steady_warm_rounds=1,
        steady_sizes=(200, 500, 1000),
        steady_batches=3,
        pipeline_batches=2,
        versus_events=2000,
        versus_capped=1000,
        scale_max_per_trigger=1000,
        scale_events=(1000, 2000),
        gold_rows=(1000, 10_000),
        gold_batches=3,
        gold_batch_size=500,
        soak_seconds=30,
        soak_sample_s=2,
        soak_fill=False,
        skipped=("sweep", "spark", "growth"),
    ),
    "quick": Profile(
        runs=3,
        py_events=20_000,
        fast_events=200_000,
        sweep_sizes=(250, 1000, 10_000),
        sweep_runs=1,
        sweep_bytes=20_000_000,
        consumer_events=50_000,
        spark_events=50_000,
        spark_max_per_trigger=25_000,
        e2e_fractions=(0.5,),
        e2e_seconds=30,
        e2e_window="10 seconds",
        e2e_trigger="2 seconds",
        growth_events=(10_000, 100_000),
        growth_devices=(10, 1000, 100_000),
        growth_devices_events=10_000,
        skipped=("sweep", "spark", "growth"),
        notes=(
            "quick profile: Spark CPU per event at 10^5 and 10^6 events (10^7 is in the full profile); "
            "gold tables of 10^3-10^6 rows; a 5-minute soak once the state has filled; end to end at 50% "
            "load only, with 10-second windows and a 2-second trigger for 30 s; the record-size sweep, the "
            "cold-start Spark ladder and the producer growth table are left out (the full profile runs them)",
        ),
    ),
    "full": Profile(
        runs=3,
        py_events=100_000,
        fast_events=1_000_000,
        sweep_sizes=(250, 500, 1000, 3000, 10_000),
        sweep_runs=3,
        sweep_bytes=100_000_000,
        consumer_events=200_000,
        spark_events=500_000,
        spark_max_per_trigger=100_000,
        e2e_fractions=(0.25, 0.5, 0.8),
        e2e_seconds=240,
        e2e_window="1 minute",
        e2e_trigger="10 seconds",
        growth_events=(100_000, 1_000_000, 10_000_000),
        growth_devices=(10, 1000, 100_000),
        growth_devices_events=1_000_000,
        steady_sizes=(5000, 25_000, 100_000),
        scale_events=(100_000, 1_000_000, 10_000_000),
        gold_rows=(1000, 10_000, 100_000, 1_000_000, 10_000_000),
        soak_seconds=1800,
        soak_trigger="10 seconds",
    ),
}


class Bench:
    """One benchmark run: its config, working folder, broker PID and the results so far."""

    def __init__(self, config: Config, profile: Profile, work: Path, broker_pid: int | None) -> None:
        self.config = config
        self.profile = profile
        self.work = work
        self.broker_pid = broker_pid
        self.results: dict[str, Any] = {}
        self.payload = work / "payload.txt"
        self.payload_info = write_payload_file(self.payload, 10_000, profile.devices)
        self.max_rate: float | None = None  # --e2e-max-rate, when e2e runs without the other sections
        self.filled: dict[int, str] = {}  # pre-filled input topics by size, shared by sections

    def log(self, text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)

    def broker_cpu(self) -> float:
        return proc_cpu_seconds(self.broker_pid) if self.broker_pid else float("nan")

    def measured(self, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one measurement, adding the broker's CPU per event and the load average."""
        cpu0 = self.broker_cpu()
        result = run()
        events = result.get("events") or 0
        broker = self.broker_cpu() - cpu0
        result["broker_cpu_us_per_event"] = broker / events * 1e6 if events and broker == broker else None
        result["load_average_1m"] = load_average()[0]
        return result

    # --- producers ---------------------------------------------------------------------------

    def producers(self) -> dict[str, Any]:
        p = self.profile
        csv_file = self.work / "readings.csv"
        write_csv(csv_file, p.py_events, p.devices)
        cases: dict[str, Callable[[str], dict[str, Any]]] = {
            "kafka-perf-tool (Java)": lambda t: java.producer_perf(
                self.config, t, p.fast_events, self.payload, p.devices, self.java_producer_baseline
            ),
            "bare kafka-python loop": lambda t: self.client(
                "kp-bare", t, p.py_events, "--payload", str(self.payload)
            ),
            "arus IoT producer (kafka-python)": lambda t: self.client(
                "arus-iot", t, p.py_events, "--devices", str(p.devices)
            ),
        }
        if importlib.util.find_spec("arus.sources.csv_replay"):
            cases["arus CSV replay (kafka-python)"] = lambda t: self.client(
                "arus-csv",
                t,
                p.py_events,
                "--csv",
                str(csv_file),
                "--cursor",
                str(self.work / f"cursor-{t}.json"),
                "--reject-file",
                str(self.work / "rejects.jsonl"),
            )
        if self.confluent_available():
            cases["bare confluent-kafka loop"] = lambda t: self.client(
                "ck-bare", t, p.fast_events, "--payload", str(self.payload)
            )
            if self.arus_confluent_available():
                cases["arus IoT producer (confluent-kafka)"] = lambda t: self.client(
                    "arus-iot", t, p.py_events * 3, "--devices", str(p.devices), "--client", "confluent-kafka"
                )
        self.java_producer_baseline = 0.0
        with topics(self.config) as created:
            warm = create_topic(self.config, unique_topic("warm"), 3)
            created.append(warm)
            self.java_producer_baseline = java.producer_perf(self.config, warm, 1, self.payload, 1)[
                "cpu_s_total"
            ]
            # A broker started seconds ago still interprets its request path; whichever case ran
            # first would pay for its JIT (0.60x on a fresh broker, 1.10x on the same one warm).
            self.log("producers: warm-up of the broker (not measured)")
            java.producer_perf(self.config, warm, p.fast_events, self.payload, p.devices)
            self.client("kp-bare", warm, p.py_events, "--payload", str(self.payload))
        return {
            "record_bytes_mean": self.payload_info["mean_bytes"],
            "java_startup_cpu_s": self.java_producer_baseline,
            "cases": self.repeat(cases, partitions=3),
        }

    def client(self, case: str, topic: str, count: int, *args: str) -> dict[str, Any]:
        return run_client(case, ["--topic", topic, "--count", str(count), *args], self.config)

    def client_case(self, case: str, count: int, *args: str) -> Callable[[str], dict[str, Any]]:
        """A bench.clients case as a function of the topic."""
        return lambda topic: self.client(case, topic, count, *args)

    def java_producer(self, payload: Path, count: int) -> Callable[[str], dict[str, Any]]:
        return lambda topic: java.producer_perf(
            self.config, topic, count, payload, self.profile.devices, self.java_producer_baseline
        )

    def repeat(
        self, cases: dict[str, Callable[[str], dict[str, Any]]], partitions: int, topic: str | None = None
    ) -> dict[str, Any]:
        """Every case `runs` times, alternating; a fresh topic per run unless `topic` is given."""
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for run in range(self.profile.runs):
            for name, case in cases.items():
                with topics(self.config) as created:
                    target = topic
                    if target is None:
                        target = create_topic(self.config, unique_topic("p"), partitions)
                        created.append(target)
                    self.log(f"run {run + 1}/{self.profile.runs}: {name}")
                    try:
                        result = self.measured(partial(case, target))
                        if not result.get("events"):
                            raise RuntimeError(f"no events measured: {result}")
                        raw[name].append(result)
                    except RuntimeError as exc:
                        self.log(f"  failed: {exc}")
                        raw[name].append({"error": str(exc)[-1500:]})
                last = raw[name][-1]
                if last.get("events_per_s"):
                    self.log(
                        f"  {last['events_per_s']:,.0f} events/s, "
                        f"{last.get('cpu_us_per_event') or float('nan'):.1f} us CPU/event"
                    )
        return {name: summarise_runs(runs) for name, runs in raw.items()}

    @staticmethod
    def confluent_available() -> bool:
        return importlib.util.find_spec("confluent_kafka") is not None

    def arus_confluent_available(self) -> bool:
        return "client" in {f for f in type(self.config.producer).__dataclass_fields__}

    # --- record-size sweep -------------------------------------------------------------------

    def sweep(self) -> dict[str, Any]:
        p = self.profile
        points: list[dict[str, Any]] = []
        for size in p.sweep_sizes:
            payload = self.work / f"payload-{size}.txt"
            info = write_payload_file(payload, 2000, p.devices, size=size)
            fast = max(min(p.fast_events, 20_000), min(p.fast_events, p.sweep_bytes // size))
            slow = max(min(p.py_events, 2000), min(p.py_events, p.sweep_bytes // size // 5))
            cases: dict[str, Callable[[str], dict[str, Any]]] = {
                "kafka-perf-tool (Java)": self.java_producer(payload, fast),
                "bare kafka-python loop": self.client_case("kp-bare", slow, "--payload", str(payload)),
            }
            if self.confluent_available():
                cases["bare confluent-kafka loop"] = self.client_case(
                    "ck-bare", fast, "--payload", str(payload)
                )
            saved_runs = p.runs
            self.profile = _with_runs(p, p.sweep_runs)
            try:
                results = self.repeat(cases, partitions=3)
            finally:
                self.profile = _with_runs(p, saved_runs)
            points.append({"record_bytes": info["mean_bytes"], "cases": results})
        return {"points": points}

    # --- consumers ----------------------------------------------------------------------------

    def consumers(self) -> dict[str, Any]:
        p = self.profile
        with topics(self.config) as created:
            # Three partitions, keyed by device: each partition's backlog is in event-time order,
            # and the arus consumer's per-partition watermark marks none of it late (as Spark).
            topic = create_topic(self.config, unique_topic("c-in"), CONSUMER_PARTITIONS)
            out = create_topic(self.config, unique_topic("c-out"), 3)
            created += [topic, out]
            self.fill(topic, p.consumer_events)
            baseline = java.consumer_perf(self.config, topic, 1)["cpu_s_total"]
            cases: dict[str, Callable[[str], dict[str, Any]]] = {
                "kafka-perf-tool (Java)": lambda t: java.consumer_perf(
                    self.config, t, p.consumer_events, baseline
                ),
                "bare kafka-python consumer": lambda t: self.client("kp-consumer", t, p.consumer_events),
            }
            if importlib.util.find_spec("arus.jobs.consumer"):
                cases["arus aggregating consumer"] = lambda t: self.client(
                    "arus-consumer", t, p.consumer_events, "--out-topic", out
                )
            if importlib.util.find_spec("quixstreams"):
                cases["Quix Streams aggregation"] = lambda t: self.client(
                    "quix", t, p.consumer_events, "--out-topic", out
                )
            return {
                "java_startup_cpu_s": baseline,
                "partitions": CONSUMER_PARTITIONS,
                "cases": self.repeat(cases, partitions=CONSUMER_PARTITIONS, topic=topic),
            }

    def fill(self, topic: str, count: int, devices: int | None = None) -> None:
        """Pre-fill a topic with `count` IoT readings in event-time order (confluent-kafka if there,
        which is fastest; else kafka-python)."""
        payload = self.work / f"fill-{count}-{devices or self.profile.devices}.txt"
        if not payload.exists():
            write_payload_file(payload, count, devices or self.profile.devices)
        case = "ck-bare" if self.confluent_available() else "kp-bare"
        self.log(f"filling {topic} with {count} readings ({case})")
        run_client(case, ["--topic", topic, "--count", str(count), "--payload", str(payload)], self.config)

    # --- Spark ---------------------------------------------------------------------------------

    def spark_session(self) -> Any:
        from arus.runtime.session import build_session

        return build_session("arus-bench", self.config.spark, SPARK_CONF)

    def spark(self) -> dict[str, Any]:
        from arus.bench.spark_ladder import RUNGS, measure_rung

        p = self.profile
        spark = self.spark_session()
        with topics(self.config) as created:
            topic = create_topic(self.config, unique_topic("s-in"), 3)
            out = create_topic(self.config, unique_topic("s-out"), 3)
            warm_topic = create_topic(self.config, unique_topic("s-warm"), 3)
            created += [topic, out, warm_topic]
            self.fill(topic, p.spark_events)
            self.fill(warm_topic, min(p.spark_events, 2000))
            self.log("spark: warm-up (the read rung once on a small topic)")
            measure_rung(spark, self.config, "read", warm_topic, out, 1, self.fresh("warm"), None)

            cases = {rung: self.rung_case(spark, rung, out, p.spark_events) for rung in RUNGS}
            return {
                "events": p.spark_events,
                "max_offsets_per_trigger": p.spark_max_per_trigger,
                "partitions": 3,
                "rungs": self.repeat(cases, partitions=3, topic=topic),
            }

    def rung_case(
        self, spark: Any, rung: str, out: str, events: int, max_per_trigger: int | None = None
    ) -> Callable[[str], dict[str, Any]]:
        from arus.bench.spark_ladder import measure_rung

        per_trigger = max_per_trigger or self.profile.spark_max_per_trigger
        return lambda topic: measure_rung(
            spark, self.config, rung, topic, out, events, self.fresh(rung), per_trigger
        )

    def fresh(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))

    # --- steady state -------------------------------------------------------------------------

    def steady(self) -> dict[str, Any]:
        from arus.bench.steady import RUNGS, BatchClock

        p = self.profile
        spark = self.spark_session()
        clock = BatchClock(spark)
        with topics(self.config) as created:
            out = create_topic(self.config, unique_topic("st-out"), 3)
            created.append(out)
            rungs = {}
            try:
                for rung in RUNGS:
                    try:
                        rungs[rung] = self.steady_rung(spark, clock, rung, out)
                    except Exception as exc:  # one broken rung must not lose the others
                        self.log(f"steady: {rung} failed: {exc!r}")
                        rungs[rung] = {"error": traceback.format_exc()[-4000:]}
            finally:
                # Its callback runs on every progress report: not in the sections after this one.
                spark.streams.removeListener(clock)
        return {"sizes": list(p.steady_sizes), "batches_per_size": p.steady_batches, "rungs": rungs}

    def steady_rung(self, spark: Any, clock: Any, rung: str, out: str) -> dict[str, Any]:
        """Warm-up rounds of the rung at the smallest size until it is warm (bench.steady.warmed), then
        each size measured from a fresh checkpoint on a topic of one batch more than measured (the
        first is left out)."""
        from arus.bench.steady import WARM_ROUND, run_steady, summarise_rung, warmed

        sizes, batches = self.profile.steady_sizes, self.profile.steady_batches
        warm = sizes[0] * (WARM_ROUND + 1)
        rounds: list[float] = []
        while not warmed(rounds) and len(rounds) < self.profile.steady_warm_rounds:
            done = run_steady(
                spark,
                self.config,
                rung,
                self.filled_topic(warm),
                out,
                sizes[0],
                self.fresh(rung),
                clock,
                warm,
            )
            rounds.append(statistics.median(b.wall_ms for b in done))
            self.log(
                f"steady: {rung}: warm-up round {len(rounds)}, {rounds[-1]:,.0f} ms/batch (not measured)"
            )
        measured = {}
        for size in sizes:
            self.log(f"steady: {rung}: {batches} batches of {size}")
            count = size * (batches + 1)
            topic = self.filled_topic(count)
            measured[size] = run_steady(
                spark, self.config, rung, topic, out, size, self.fresh(rung), clock, count
            )
        r = {**summarise_rung(measured), "warm_up_wall_ms": rounds}
        self.log(
            f"  fixed {r['fixed_cpu_ms'] or float('nan'):,.0f} ms CPU/batch, marginal "
            f"{r['marginal_cpu_us'] or float('nan'):,.1f} us CPU/event, "
            f"{r['largest_events_per_s'] or float('nan'):,.0f} events/s at {sizes[-1]}"
        )
        return r

    # --- the pipeline's stages in steady state -----------------------------------------------

    def pipeline(self) -> dict[str, Any]:
        """A warm-up run of every stage (2 batches of the smallest size), then each size through every
        stage on a raw topic of one batch more than measured (each stage's first is left out)."""
        from arus.bench.pipeline_steady import summarise_stages
        from arus.bench.steady import BatchClock

        sizes, batches = self.profile.steady_sizes, self.profile.pipeline_batches
        spark = self.spark_session()
        clock = BatchClock(spark)
        try:
            self.log("pipeline: warm-up (not measured)")
            self.pipeline_run(spark, clock, sizes[0], sizes[0] * 2)
            measured = {}
            for size in sizes:
                self.log(f"pipeline: {batches} batches of {size} through each stage")
                measured[size] = self.pipeline_run(spark, clock, size, size * (batches + 1))
        finally:
            spark.streams.removeListener(clock)
        result = summarise_stages(measured)
        for stage, s in result["stages"].items():
            self.log(
                f"  {stage}: fixed {s['fixed_wall_ms'] or float('nan'):,.0f} ms wall/batch, marginal "
                f"{s['marginal_wall_us'] or float('nan'):,.1f} us wall/event; fixed "
                f"{s['fixed_cpu_ms'] or float('nan'):,.0f} ms CPU/batch"
            )
        return {"sizes": list(sizes), "batches_per_size": batches, **result}

    def pipeline_run(self, spark: Any, clock: Any, size: int, events: int) -> dict[str, list[Any]]:
        from arus.bench.pipeline_steady import SCRATCH_TOPICS, run_stages, send_devices, stage_plan

        raw = self.filled_topic(events)
        with topics(self.config) as created:
            scratch = {
                name: create_topic(self.config, unique_topic(f"pl-{name}"), 3) for name in SCRATCH_TOPICS
            }
            created += scratch.values()
            send_devices(self.config, scratch["devices"], self.profile.devices)
            plan = stage_plan(self.config, raw, scratch, self.fresh("pipeline"), size)
            return run_stages(spark, self.config, plan, clock)

    def filled_topic(self, events: int) -> str:
        """A 3-partition topic of `events` readings, filled once per run (deleted at its end)."""
        if events not in self.filled:
            self.filled[events] = create_topic(self.config, unique_topic(f"in-{events}"), 3)
            self.fill(self.filled[events], events)
        return self.filled[events]

    # --- Spark against the kafka-python consumer ---------------------------------------------

    def versus(self) -> dict[str, Any]:
        from arus.bench.versus import run_consumer, run_spark_job

        p = self.profile
        topic = self.filled_topic(p.versus_events)
        timeout = max(600.0, p.versus_events / 500)
        with topics(self.config) as created:
            out = create_topic(self.config, unique_topic("vs-out"), 3)
            created.append(out)
            self.log(f"versus: arus consume on {p.versus_events:,} readings")
            consumer = run_consumer(self.config, topic, out, self.fresh("consume"), timeout)
            consumer["events_per_s"] = consumer["events"] / consumer["wall_s"]
            self.log(f"  {consumer['events_per_s']:,.0f} events/s ({consumer['wall_s']} s)")
            runs = {}
            # The default first: `arus aggregate` as a user runs it, every record in one batch.
            for cap in (None, p.versus_capped):
                flag = f" --max-offsets-per-trigger {cap}" if cap else ""
                self.log(f"versus: arus aggregate{flag} on {p.versus_events:,} readings")
                work = self.fresh("aggregate")
                job = run_spark_job(self.config, topic, out, work, cap, timeout)
                # Every reading is in exactly one window: the gold counts add up to what the job read.
                job["events"] = self.gold_events(work / "lake" / self.config.aggregate.table)
                job["events_per_s"] = job["events"] / job["wall_s"]
                job["max_offsets_per_trigger"] = cap
                runs["spark_capped" if cap else "spark"] = job
                self.log(f"  {job['events_per_s']:,.0f} events/s ({job['wall_s']} s)")
            for engine in (consumer, *runs.values()):
                engine["cpu_us_per_event"] = (
                    engine["cpu_s"] / engine["events"] * 1e6 if engine["events"] else None
                )
        read = {name: run["events"] for name, run in {"consumer": consumer, **runs}.items()}
        if set(read.values()) != {p.versus_events}:
            raise RuntimeError(f"read {read} of {p.versus_events}")
        return {"events": p.versus_events, "consumer": consumer, **runs}

    def gold_events(self, table: Path) -> int:
        from pyspark.sql import functions as F

        total = self.spark_session().read.format("delta").load(str(table)).agg(F.sum("count")).first()
        return int(total[0] or 0) if total else 0

    # --- CPU per event as the input grows ------------------------------------------------------

    def scale(self) -> dict[str, Any]:
        p = self.profile
        spark = self.spark_session()
        points = []
        with topics(self.config) as created:
            out = create_topic(self.config, unique_topic("sc-out"), 3)
            created.append(out)
            if "job" not in self.results.get("steady", {}).get("rungs", {}):
                self.log("scale: the job rung once on the smallest input (warm-up, not measured)")
                case = self.rung_case(spark, "job", out, p.scale_events[0], p.scale_max_per_trigger)
                case(self.filled_topic(p.scale_events[0]))
            for events in p.scale_events:
                topic = self.filled_topic(events)
                self.log(f"scale: the job rung on {events:,} readings")
                case = self.rung_case(spark, "job", out, events, p.scale_max_per_trigger)
                point = self.measured(partial(case, topic))
                self.log(
                    f"  {point['events_per_s']:,.0f} events/s, {point['cpu_us_per_event']:,.1f} us CPU/event"
                )
                points.append(point)
        return {"max_offsets_per_trigger": p.scale_max_per_trigger, "points": points}

    # --- gold growth ---------------------------------------------------------------------------

    def gold(self) -> dict[str, Any]:
        from arus.bench import gold

        from arus.grammar import duration_us

        p = self.profile
        spark = self.spark_session()
        window_s = duration_us(self.config.aggregate.window) // 1_000_000
        events = p.gold_batches * p.gold_batch_size
        topic = self.filled_topic(events)
        with topics(self.config) as created:
            out = create_topic(self.config, unique_topic("gold-out"), 3)
            created.append(out)
            self.log("gold: the job once to learn its gold schema (and warm up)")
            schema = gold.gold_schema(spark, self.config, topic, out, self.fresh("gold-seed"))
            passes: dict[int, list[dict[str, Any]]] = {}
            for rows in gold.both_ways(p.gold_rows):
                work = self.fresh("gold")
                self.log(
                    f"gold: a table of {rows:,} rows, then {p.gold_batches} batches of {p.gold_batch_size}"
                )
                after = gold.prebuild_gold(
                    spark, schema, work / "gold", rows, self.config.aggregate.keys, window_s
                )
                query = gold.run_job(spark, self.config, topic, out, work, p.gold_batch_size, "checkpoint")
                run = {
                    "commits": gold.gold_write_times(spark, work / "gold", after),
                    "add_batch_ms": gold.add_batch_ms(query.recentProgress),
                }
                passes.setdefault(rows, []).append(run)
                self.log(
                    f"  gold write {gold.median_after_first(gold.write_ms(run))} ms, "
                    f"foreachBatch {gold.median_after_first(run['add_batch_ms'])} ms"
                )
        points = [gold.size_point(rows, runs) for rows, runs in passes.items()]
        return {
            "batches": p.gold_batches,
            "batch_size": p.gold_batch_size,
            "points": points,
            "write_flatness": gold.flatness({x["gold_rows"]: x["write_ms_median"] for x in points}),
            "add_batch_flatness": gold.flatness({x["gold_rows"]: x["add_batch_ms_median"] for x in points}),
        }

    # --- soak ----------------------------------------------------------------------------------

    def max_load(self) -> tuple[float | None, str]:
        """The job's measured maximum events/s (steady state at the largest batch, else the job at
        10^6), capped by what the arus IoT producer sends; with where it came from."""
        steady = self.results.get("steady", {}).get("rungs", {}).get("job", {}).get("largest_events_per_s")
        versus = self.results.get("versus", {}).get("spark", {}).get("events_per_s")
        producer = self.results.get("producers", {}).get("cases", {}).get("arus IoT producer (kafka-python)")
        producer_max = (producer or {}).get("events_per_s", {}).get("median")
        found = {
            "the job in steady state at the largest batch": steady or versus,
            "the arus IoT producer": producer_max,
            "--e2e-max-rate": self.max_rate,
        }
        found = {k: v for k, v in found.items() if v}
        if not found:
            return None, "needs the steady (or versus) section in the same run, or --e2e-max-rate"
        source = min(found, key=lambda k: found[k])
        return found[source], source

    def soak(self) -> dict[str, Any]:
        from arus.bench.soak import run_soak, state_fill_seconds

        p = self.profile
        max_rate, source = self.max_load()
        if max_rate is None:
            return {"skipped": source}
        rate = round(max_rate / 2)
        spark = self.spark_session()
        fill = state_fill_seconds(self.config) if p.soak_fill else 0.0
        self.log(
            f"soak: {rate} events/s (half of {max_rate:,.0f}, {source}) for {fill:.0f} s while the state"
            f" fills, then {p.soak_seconds:.0f} s judged"
        )
        with topics(self.config) as created:
            result = run_soak(
                spark,
                self.config,
                rate,
                p.soak_seconds,
                p.devices,
                p.soak_trigger,
                self.fresh("soak"),
                created,
                p.soak_sample_s,
                fill,
            )
        self.log(f"  {result['checks']}")
        return {"max_events_per_s": max_rate, "max_from": source, **result}

    # --- end to end ------------------------------------------------------------------------------

    def e2e(self) -> dict[str, Any]:
        from arus.bench.e2e import run_load

        p = self.profile
        max_rate, source = self.max_load()
        if max_rate is None:
            return {"skipped": source}
        spark = self.spark_session()
        loads = []
        with topics(self.config) as created:
            for fraction in p.e2e_fractions:
                rate = round(max_rate * fraction)
                self.log(f"e2e: {fraction:.0%} of {max_rate:,.0f} = {rate} events/s for {p.e2e_seconds:.0f}s")
                load = run_load(
                    spark,
                    self.config,
                    rate,
                    p.e2e_seconds,
                    p.devices,
                    p.e2e_window,
                    p.e2e_trigger,
                    self.fresh("e2e"),
                    created,
                )
                load["fraction"] = fraction
                loads.append(load)
                self.log(
                    f"  p50 {load['latency_p50_s']} s, p99 {load['latency_p99_s']} s, "
                    f"median batch {load['batch_ms_median']} ms"
                )
        return {
            "max_events_per_s": max_rate,
            "max_from": source,
            "window": p.e2e_window,
            "trigger": p.e2e_trigger,
            "seconds_per_load": p.e2e_seconds,
            "loads": loads,
        }

    # --- growth ----------------------------------------------------------------------------------

    def growth(self) -> dict[str, Any]:
        p = self.profile
        points = [(n, p.devices) for n in p.growth_events] + [
            (p.growth_devices_events, d) for d in p.growth_devices
        ]
        spark = self.spark_session()
        results = []
        for events, devices in dict.fromkeys(points):
            with topics(self.config) as created:
                topic = create_topic(self.config, unique_topic("g-in"), 3)
                out = create_topic(self.config, unique_topic("g-out"), 3)
                created += [topic, out]
                self.log(f"growth: {events} events, {devices} devices: arus IoT producer")
                producer = self.measured(
                    partial(self.client_case("arus-iot", events, "--devices", str(devices)), topic)
                )
                self.log(f"growth: {events} events, {devices} devices: Spark aggregate -> Delta")
                job = self.measured(partial(self.rung_case(spark, "delta", out, events), topic))
                results.append({"events": events, "devices": devices, "producer": producer, "spark": job})
        return {"points": results}


def _with_runs(profile: Profile, runs: int) -> Profile:
    from dataclasses import replace

    return replace(profile, runs=runs)


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every numeric figure over the runs that worked; the raw runs too."""
    ok = [r for r in runs if "error" not in r]
    keys = sorted(
        {k for r in ok for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    summary: dict[str, Any] = {k: stats([float(r[k]) for r in ok if r.get(k) is not None]) for k in keys}
    summary["runs_ok"] = len(ok)
    summary["raw"] = runs
    return summary


AIM_EVENTS_PER_S = 50_000  # the aim for the job at 10^6 events on this box (informative)


def goal(name: str, ratio: float | None, target: float, how: str, at_most: bool = False) -> dict[str, Any]:
    """One goal: met when the ratio reaches the target (or stays under it, `at_most`)."""
    met = None if ratio is None else (ratio <= target if at_most else ratio >= target)
    return {"goal": name, "target": target, "ratio": ratio, "met": met, "how": how}


def unmeasured(name: str, target: float, how: str) -> dict[str, Any]:
    return {"goal": name, "target": target, "ratio": None, "met": None, "how": how}


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of the issues as ratios of figures measured in this run."""

    def median(section: str, group: str, case: str, figure: str = "events_per_s") -> float | None:
        value = results.get(section, {}).get(group, {}).get(case, {}).get(figure, {})
        return value.get("median") if isinstance(value, dict) else None

    cases = results.get("producers", {}).get("cases", {})
    arus_paths = {
        k: v["events_per_s"]["median"]
        for k, v in cases.items()
        if k.startswith("arus") and v.get("events_per_s", {}).get("median")
    }
    fastest = max(arus_paths, key=lambda k: arus_paths[k]) if arus_paths else None
    return [
        goal(
            "arus IoT producer >= 0.9 x bare kafka-python loop",
            _ratio(
                median("producers", "cases", "arus IoT producer (kafka-python)"),
                median("producers", "cases", "bare kafka-python loop"),
            ),
            0.9,
            "events/s medians, same settings and records",
        ),
        goal(
            "fastest arus producer path >= 0.5 x Java perf tool",
            _ratio(
                arus_paths.get(fastest) if fastest else None,
                median("producers", "cases", "kafka-perf-tool (Java)"),
            ),
            0.5,
            f"fastest arus path: {fastest}",
        ),
        goal(
            "arus aggregating consumer >= 1.0 x Quix Streams",
            _ratio(
                median("consumers", "cases", "arus aggregating consumer"),
                median("consumers", "cases", "Quix Streams aggregation"),
            ),
            1.0,
            "events/s medians on the same topic and windows",
        ),
        spark_versus_consumer(results.get("versus", {})),
        delta_versus_parse(results),
        gold_flat(results.get("gold", {})),
        cpu_flat(results.get("scale", {})),
        e2e_p99(results.get("e2e", {})),
        live_batch(results.get("steady", {})),
        soak_flat(results.get("soak", {})),
        events_at_million(results.get("versus", {})),
    ]


def spark_versus_consumer(versus: dict[str, Any]) -> dict[str, Any]:
    name = "Spark aggregate job >= 3 x kafka-python consumer (events/s, same topic, from process start)"
    spark, consumer = versus.get("spark", {}), versus.get("consumer", {})
    if not spark.get("events_per_s") or not consumer.get("events_per_s"):
        return unmeasured(name, 3.0, "not measured in this run (section versus)")
    return goal(
        name,
        spark["events_per_s"] / consumer["events_per_s"],
        3.0,
        f"`arus aggregate` {spark['events_per_s']:,.0f} events/s ({spark['wall_s']} s) against "
        f"`arus consume` {consumer['events_per_s']:,.0f} ({consumer['wall_s']} s) "
        f"on {versus['events']:,} readings" + _capped(versus.get("spark_capped")),
    )


def _capped(job: dict[str, Any] | None) -> str:
    if not job:
        return ""
    return (
        f"; with --max-offsets-per-trigger {job['max_offsets_per_trigger']}: "
        f"{job['events_per_s']:,.0f} events/s ({job['wall_s']} s)"
    )


def delta_versus_parse(results: dict[str, Any]) -> dict[str, Any]:
    name = "Spark aggregate -> Delta >= 0.5 x parse-only, in steady state"
    rungs = results.get("steady", {}).get("rungs", {})
    delta = rungs.get("delta", {}).get("largest_events_per_s")
    parse = rungs.get("parse", {}).get("largest_events_per_s")
    if not delta or not parse:
        return unmeasured(name, 0.5, "not measured in this run (section steady)")
    size = results["steady"]["sizes"][-1]
    return goal(
        name,
        delta / parse,
        0.5,
        f"steady-state events/s at {size:,} per batch: delta {delta:,.0f}, parse {parse:,.0f}",
    )


def gold_flat(gold: dict[str, Any]) -> dict[str, Any]:
    name = "gold write time per batch flat within 20% from 10^3 to 10^6 gold rows"
    points = gold.get("points", [])
    ratio, figure = gold.get("write_flatness"), "Delta's executionTimeMs of each gold commit"
    if ratio is None:
        ratio, figure = gold.get("add_batch_flatness"), "the foreachBatch time (Delta recorded no time)"
    if ratio is None:
        return unmeasured(name, 1.2, "not measured in this run (section gold)")
    sizes = [p["gold_rows"] for p in points]
    entry = goal(name, ratio, 1.2, f"max / min of the median {figure} over {sizes} rows", at_most=True)
    if min(sizes) > 1000 or max(sizes) < 1_000_000:
        entry["met"] = None
        entry["how"] += "; not the full range 10^3-10^6, so not judged"
    return entry


def cpu_flat(scale: dict[str, Any]) -> dict[str, Any]:
    name = "Spark CPU per event flat within 20% from 10^5 to 10^7 events"
    cpu = {
        p["events"]: p.get("cpu_us_per_event") for p in scale.get("points", []) if p.get("cpu_us_per_event")
    }
    if len(cpu) < 2:
        return unmeasured(name, 1.2, "not measured in this run (section scale)")
    ratio = max(cpu.values()) / min(cpu.values())
    shown = ", ".join(f"{n:,}: {v:,.0f} us" for n, v in sorted(cpu.items()))
    entry = goal(name, ratio, 1.2, f"max / min of the job rung's CPU per event ({shown})", at_most=True)
    if max(cpu) < 10_000_000:
        entry["met"] = None
        entry["how"] += "; 10^7 events are measured in the full profile only (make bench-full), so not judged"
    return entry


def e2e_p99(e2e: dict[str, Any]) -> dict[str, Any]:
    name = "end-to-end p99 at 50% load <= trigger + 2 x median batch"
    half = next((x for x in e2e.get("loads", []) if x.get("fraction") == 0.5), None)
    if not half or half.get("latency_p99_s") is None or half.get("batch_ms_median") is None:
        return unmeasured(name, 1.0, "not measured in this run (section e2e)")
    trigger_s = float(e2e["trigger"].split()[0])
    bound = trigger_s + 2 * half["batch_ms_median"] / 1000
    return goal(
        name,
        half["latency_p99_s"] / bound,
        1.0,
        f"p99 {half['latency_p99_s']:.2f} s against {bound:.2f} s (ratio <= 1 meets it)",
        at_most=True,
    )


def live_batch(steady: dict[str, Any]) -> dict[str, Any]:
    from arus.bench.steady import LIVE_BATCH

    name = "a live batch of about 1,000 events completes in <= 1 s (steady state)"
    job = steady.get("rungs", {}).get("job", {})
    fitted = job.get("live_batch_wall_ms")
    if fitted is None:
        return unmeasured(name, 1.0, "not measured in this run (section steady)")
    measured = next((p["wall_ms_per_batch"] for p in job.get("points", []) if p["size"] == LIVE_BATCH), None)
    seen = f"; measured median {measured:,.0f} ms at {LIVE_BATCH:,}" if measured is not None else ""
    return goal(
        name,
        fitted / 1000,
        1.0,
        f"the job rung's wall per batch fitted at {LIVE_BATCH:,} events: {fitted:,.0f} ms "
        f"(fixed {job['fixed_wall_ms']:,.0f} ms + {job['marginal_wall_us']:,.1f} us/event){seen}",
        at_most=True,
    )


def soak_flat(soak: dict[str, Any]) -> dict[str, Any]:
    name = "soak at 50% load: lag bounded, batch time and memory flat within 20%, gold growing"
    checks = soak.get("checks")
    if not checks:
        return unmeasured(name, 1.2, "not measured in this run (section soak)")
    ratios = {k: v for k, v in soak.get("ratios", {}).items() if v is not None}
    worst = max(ratios.values(), default=None)
    failed = [k for k, v in checks.items() if v is False]
    how = f"{soak['seconds']:.0f} s at {soak['offered_events_per_s']:,.0f} events/s; "
    how += "worst last/first-fifth ratio"
    how += f" {worst:.2f}" if worst is not None else " -"
    how += f"; failed: {', '.join(failed)}" if failed else "; every check held"
    return {"goal": name, "target": 1.2, "ratio": worst, "met": soak.get("met"), "how": how}


def events_at_million(versus: dict[str, Any]) -> dict[str, Any]:
    name = f"informative: the Spark job's events/s at 10^6 events (aim {AIM_EVENTS_PER_S:,})"
    spark = versus.get("spark", {})
    if not spark.get("events_per_s"):
        return unmeasured(name, 1.0, "not measured in this run (section versus)")
    entry = goal(
        name,
        spark["events_per_s"] / AIM_EVENTS_PER_S,
        1.0,
        f"{spark['events_per_s']:,.0f} events/s over {versus['events']:,} readings, from process start; "
        "informative, not a pass mark",
    )
    if versus["events"] != 1_000_000:
        entry["met"] = None
        entry["how"] += f" ({versus['events']:,} readings in this profile, so not judged)"
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("arus bench run", __doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--bootstrap", help="use this running broker instead of starting the bench broker")
    parser.add_argument("--only", help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/<profile>-<time>.json)")
    parser.add_argument(
        "--e2e-max-rate", type=float, help="the 100%% load for e2e when producers/spark do not run"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    every = [s for s in SECTIONS if s not in profile.skipped]
    sections = [s.strip() for s in args.only.split(",")] if args.only else every
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    config = bench_config(load_config(args.config), args.bootstrap)
    started = datetime.now(UTC)
    out = args.out or RESULTS_DIR / f"{args.profile}-{started:%Y%m%dT%H%M%SZ}.json"
    results: dict[str, Any] = {
        "profile": args.profile,
        "command": "arus bench run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started.isoformat(),
        "broker": {
            "bootstrap": config.kafka.bootstrap_servers,
            "own": not args.bootstrap,
            "heap": config.broker.heap,
        },
        "settings": {
            "producer": producer_properties(config.producer),
            "devices": profile.devices,
            "profile": {k: v for k, v in profile.__dict__.items()},
            "spark": {
                "master": config.spark.master,
                "shuffle_partitions": config.spark.shuffle_partitions,
                "driver_memory": config.spark.driver_memory,
            },
            "aggregate": {"window": config.aggregate.window, "watermark": config.stream.watermark},
        },
        "versions": versions(),
        "load_average_start": load_average(),
    }
    wall0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="arus-bench-"))
    try:
        with running_broker(config, own=not args.bootstrap) as pid:
            bench = Bench(config, profile, work, pid)
            bench.max_rate = args.e2e_max_rate
            results["record_bytes_mean"] = bench.payload_info["mean_bytes"]
            try:
                run_sections(bench, sections, results, out)
            finally:
                delete_topics(config, list(bench.filled.values()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["goals"] = goals(results)
    results["finished"] = datetime.now(UTC).isoformat()
    results["duration_s"] = round(time.monotonic() - wall0, 1)
    results["load_average_end"] = load_average()
    _write(out, results)
    print(f"bench: results in {out} ({results['duration_s']:.0f}s)")
    for g in results["goals"]:
        ratio = f"{g['ratio']:.2f}" if g["ratio"] is not None else "-"
        state = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        print(f"  {g['goal']}: {ratio} ({state})")
    return 0


def run_sections(bench: Bench, sections: list[str], results: dict[str, Any], out: Path) -> None:
    """Each section in turn, its results written as soon as it ends."""
    for section in sections:
        bench.log(f"== {section}")
        t0 = time.monotonic()
        try:
            bench.results[section] = getattr(bench, section)()
        except Exception as exc:  # one broken section must not lose the others' results
            bench.log(f"{section} failed: {exc!r}")
            bench.results[section] = {"error": traceback.format_exc()[-4000:]}
        bench.results[section]["seconds"] = round(time.monotonic() - t0, 1)
        results[section] = bench.results[section]
        _write(out, results)


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
