"""The pipeline's stages in steady state: what a micro-batch of each stage costs once the JVM is warm,
split into a fixed cost per batch and a marginal cost per event (as bench.steady does for the job).

    clock = BatchClock(spark)
    plan = stage_plan(config, raw, scratch_topics, work, 5000)
    batches = run_stages(spark, config, plan, clock)   # {stage: its data batches but the first}
    summary = summarise_stages({5000: batches, ...})   # per stage: bench.steady's fitted line

A measurement runs the four stages of arus.runtime.pipeline one at a time, in the order
`arus pipeline --available-now` runs them (bronze and clean on the raw topic, then aggregate and
alerts on the clean topic and the complete silver table), each to the end of its input with
maxOffsetsPerTrigger = the batch size, from fresh checkpoints and tables. One stage at a time, so
the CPU read at each progress report (the Spark JVM's and this driver's) is that stage's alone. Each
stage's first batch (planning, first Delta commits) is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arus.bench.payloads import SEED
from arus.bench.steady import Batch, BatchClock, summarise_rung
from pyspark.sql import SparkSession

from arus.config import Config
from arus.io.producer import make_producer
from arus.runtime.listener import drain
from arus.runtime.pipeline import STAGES, PipelinePlan, Topics, start_stage, tables_under
from arus.runtime.progress import Tally
from arus.runtime.queries import reading_id
from arus.sources.iot import device_record, fleet
from arus.sources.send import SendLoop

# The pipeline's topics besides the raw one, which the bench fills once per size.
SCRATCH_TOPICS = ("clean", "devices", "deadletter", "late", "aggregates", "alerts")


def stage_plan(config: Config, raw: str, scratch: Mapping[str, str], work: Path, size: int) -> PipelinePlan:
    """Every stage, availableNow in batches of `size`, from `raw`, with tables and checkpoints in `work`."""
    return PipelinePlan(
        topics=Topics(raw=raw, **{name: scratch[name] for name in SCRATCH_TOPICS}),
        tables=tables_under(work / "lake", config),
        checkpoints=str(work / "checkpoints"),
        stages=STAGES,
        trigger="available-now",
        max_offsets_per_trigger=size,
        starting_offsets="earliest",
        id_field=reading_id(config),
    )


def send_devices(config: Config, topic: str, devices: int) -> None:
    """The metadata of the fleet the bench's readings come from, so the clean stage enriches them
    (and the range rule has each device's nominal range) as in a real run."""
    producer = make_producer(config.kafka, config.producer)
    try:
        summary = SendLoop(producer, progress=None).run(device_record(d, topic) for d in fleet(devices, SEED))
    finally:
        producer.close()
    if summary.acked != devices:
        raise RuntimeError(f"devices topic {topic}: {summary.acked} of {devices} device records acked")


def run_stages(
    spark: SparkSession, config: Config, plan: PipelinePlan, clock: BatchClock
) -> dict[str, list[Batch]]:
    """Each stage alone to the end of its input; per stage, its data batches but the first."""
    tally = Tally()
    measured = {}
    for stage in plan.stages:
        query = start_stage(stage, spark, config, plan, tally)
        query.awaitTermination()
        if query.exception():
            raise RuntimeError(f"pipeline stage {stage} failed: {query.exception()}")
        drain(spark)  # the clock hears of the last batch after the query has ended
        batches = clock.batches(str(query.id))
        if len(batches) < 2:
            raise RuntimeError(
                f"pipeline stage {stage}: {len(batches)} data batches, nothing left to measure"
            )
        measured[stage] = batches[1:]
    return measured


def summarise_stages(sizes: Mapping[int, Mapping[str, list[Batch]]]) -> dict[str, Any]:
    """bench.steady's summary per stage over every size, and the stage slowest at a live batch."""
    stages = {
        stage: summarise_rung(
            {size: by_stage[stage] for size, by_stage in sizes.items() if stage in by_stage}
        )
        for stage in STAGES
        if any(stage in by_stage for by_stage in sizes.values())
    }
    timed = {
        stage: s["live_batch_wall_ms"] for stage, s in stages.items() if s["live_batch_wall_ms"] is not None
    }
    return {"stages": stages, "slowest": max(timed, key=timed.__getitem__) if timed else None}
