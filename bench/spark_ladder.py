"""The Spark ladder: the main job's query built up one rung at a time on a pre-filled topic, each
rung run with trigger(availableNow=True) from a fresh checkpoint.

    read       Kafka source -> noop sink
    parse      + parse_events / valid_events (stateless)
    aggregate  + watermark, dedup by id, 1-minute windows (bronze_to_silver + silver_to_gold) -> noop
    kafka      the aggregates -> the real Kafka sink
    delta      the aggregates -> the real Delta sink (merge_into_delta through foreachBatch, as the job)
    job        arus.runtime.queries.start_aggregate_query: Delta + Kafka + dead letters + late events,
               exactly the job's query

Events/s and CPU time per event (the Spark JVM's plus this Python driver's), batch durations from
the streaming progress, state memory, and Delta files added per commit.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from arus.bench.common import proc_cpu_seconds
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from arus.config import Config
from arus.core.stages import bronze_to_silver, silver_to_gold
from arus.core.transforms import (
    aggregate_key_column,
    parse_events,
    schema_from_ddl,
    to_kafka_records,
    valid_events,
)
from arus.io.sinks import merge_into_delta, read_kafka_stream
from arus.runtime.queries import AggregateQuery, aggregate_query, start_aggregate_query

RUNGS = ("read", "parse", "aggregate", "kafka", "delta", "job")


def jvm_pid(spark: SparkSession) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]


def start_rung(
    spark: SparkSession,
    config: Config,
    rung: str,
    topic: str,
    out_topic: str,
    work: Path,
    max_per_trigger: int | None,
) -> list[StreamingQuery]:
    """Start one rung's query (queries, for `job`) with availableNow and a fresh checkpoint."""
    stream, job = config.stream, config.aggregate
    checkpoint = str(work / "checkpoint")
    if rung == "job":
        return _start_job(spark, config, topic, out_topic, work, max_per_trigger)
    schema = schema_from_ddl(config.schema(stream.schema))
    raw = read_kafka_stream(spark, config.kafka, topic, "earliest", max_per_trigger)
    if rung == "read":
        return [_noop(raw, "append", checkpoint)]
    if rung == "parse":
        return [_noop(valid_events(parse_events(raw, schema), schema), "append", checkpoint)]
    events, _dead = bronze_to_silver(raw, schema, stream)
    aggregates = silver_to_gold(events, stream, job)
    # *keys, window_start, window_end, count, value_mean, value_min, value_max, value_stddev, value_p50, ...
    if rung == "aggregate":
        return [_noop(aggregates, "update", checkpoint)]
    if rung == "kafka":
        records = to_kafka_records(aggregates, aggregate_key_column(list(job.keys)))
        query = (
            records.writeStream.format("kafka")
            .options(**config.kafka.spark_options())
            .option("topic", out_topic)
            .option("checkpointLocation", checkpoint)
            .outputMode("update")
            .trigger(availableNow=True)
            .start()
        )
        return [query]
    if rung == "delta":
        table = str(work / "gold")
        keys = [*job.keys, "window_start"]
        query = (
            aggregates.writeStream.foreachBatch(_merge_into(table, keys))
            .option("checkpointLocation", checkpoint)
            .outputMode("update")
            .trigger(availableNow=True)
            .start()
        )
        return [query]
    raise ValueError(f"unknown rung {rung!r}; choose from {RUNGS}")


def _merge_into(table: str, keys: list[str]) -> Callable[[DataFrame, int], None]:
    def write(batch: DataFrame, _batch_id: int) -> None:
        merge_into_delta(batch, table, keys)

    return write


def _noop(df: DataFrame, mode: str, checkpoint: str) -> StreamingQuery:
    return (
        df.writeStream.format("noop")
        .outputMode(mode)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )


def scratch_query(
    config: Config, topic: str, out_topic: str, work: Path, window: str | None = None, **options: Any
) -> AggregateQuery:
    """The main job's query on `topic`, gold in `work`; every other output goes to `out_topic` and `work`."""
    stream = replace(
        config.stream,
        topic=topic,
        deadletter_topic=out_topic,
        late_topic=out_topic,
        deadletter_table=str(work / "deadletter"),
        late_table=str(work / "late"),
        starting_offsets="earliest",
    )
    job = replace(
        config.aggregate,
        output_topic=out_topic,
        table=str(work / "gold"),
        window=window or config.aggregate.window,
    )
    return aggregate_query(config, stream, job, str(work / "checkpoint"), **options)


def _start_job(
    spark: SparkSession, config: Config, topic: str, out_topic: str, work: Path, max_per_trigger: int | None
) -> list[StreamingQuery]:
    query = scratch_query(config, topic, out_topic, work, max_offsets_per_trigger=max_per_trigger or None)
    return [start_aggregate_query(spark, config.kafka, query)]


def measure_rung(
    spark: SparkSession,
    config: Config,
    rung: str,
    topic: str,
    out_topic: str,
    events: int,
    work: Path,
    max_per_trigger: int | None,
) -> dict[str, Any]:
    """Run one rung to its end; throughput, CPU per event and what the progress reports say."""
    pid = jvm_pid(spark)
    cpu_jvm0, cpu_py0, wall0 = proc_cpu_seconds(pid), time.process_time(), time.perf_counter()
    queries = start_rung(spark, config, rung, topic, out_topic, work, max_per_trigger)
    for query in queries:
        query.awaitTermination()
    wall = time.perf_counter() - wall0
    cpu = proc_cpu_seconds(pid) - cpu_jvm0 + time.process_time() - cpu_py0
    for query in queries:
        if query.exception():
            raise RuntimeError(f"rung {rung} failed: {query.exception()}")
    main = queries[0]
    progress = main.recentProgress
    rows = sum(p["numInputRows"] for p in progress)
    if rows < events:
        raise RuntimeError(f"rung {rung} read {rows} rows, expected {events}")
    return {
        "events": rows,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s": rows / wall,
        "cpu_us_per_event": cpu / rows * 1e6,
        **progress_figures(progress),
        **delta_figures(work / "gold"),
    }


def progress_figures(progress: Sequence[Any]) -> dict[str, Any]:
    """Batch durations and state memory from a query's progress reports (batches with input only)."""
    batches = [p for p in progress if p["numInputRows"] > 0]
    durations = [p["durationMs"].get("triggerExecution", 0) for p in batches]
    state = [sum(op.get("memoryUsedBytes", 0) for op in p.get("stateOperators", [])) for p in progress]
    return {
        "batches": len(batches),
        "batch_ms_median": statistics.median(durations) if durations else None,
        "batch_ms_max": max(durations) if durations else None,
        "state_memory_mb_max": round(max(state, default=0) / 2**20, 2),
    }


def delta_figures(table: Path) -> dict[str, Any]:
    """Commits in the Delta log and the data files each one added (the table's file count grows by this)."""
    log = table / "_delta_log"
    if not log.exists():
        return {}
    adds = []
    for commit in sorted(log.glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        adds.append(sum(1 for a in actions if "add" in a))
    data_commits = adds[1:]  # version 0 only creates the empty table
    return {
        "delta_commits": len(data_commits),
        "delta_files_per_commit": statistics.mean(data_commits) if data_commits else 0,
        "delta_files_in_table_dir": sum(1 for _ in table.glob("*.parquet")),
    }
