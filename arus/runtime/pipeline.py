"""The multi-topic pipeline's four stages as streaming queries, and the order they run in.

    bronze     raw topic -> bronze table (records as received) + dead letters (table + topic)
    clean      raw topic -> parse, dedup within the watermark, enrich (devices), clean
                         -> silver table + clean topic; late events -> late table + topic
    aggregate  clean topic -> windows with watermark -> gold table (MERGE) + aggregates topic; late
    alerts     clean topic -> [alerts] rules (history from silver) -> alerts table + alerts topic

Each stage is one query with its own checkpoint (<checkpoints>/<stage>). The raw stages read [stream]
(its topics as the command line names them); the aggregate and alerts stages are the queries of the
main job and of the alerts job on the clean topic, which is [stream] with [pipeline] clean_schema.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from arus.config import Config, StreamConfig
from arus.core.clean import with_schema
from arus.core.rules import KEY_SEPARATOR, record_limits
from arus.core.stages import bronze_to_checked, bronze_to_silver
from arus.core.transforms import schema_from_ddl
from arus.grammar import duration_us
from arus.io.kafka import check_kafka
from arus.io.owners import Writes, writer
from arus.io.sinks import read_devices, read_kafka_stream
from arus.runtime.microbatch import LateOutput
from arus.runtime.progress import Tally, await_queries
from arus.runtime.queries import (
    AGGREGATE_APP,
    AggregateQuery,
    AlertsQuery,
    dead_letter_sink,
    start_aggregate_query,
    start_alerts_query,
    triggered,
)
from arus.runtime.writers import DeltaSink, write_bronze, write_clean
from arus.signals import stop_on_signals

STAGES = ("bronze", "clean", "aggregate", "alerts")
# availableNow runs in two phases: bronze and clean both read only the raw topic; aggregate reads
# the clean topic and alerts reads it and silver, which the first phase has finished by then.
PHASES = (("bronze", "clean"), ("aggregate", "alerts"))


@dataclass(frozen=True)
class Topics:
    raw: str
    clean: str
    devices: str
    deadletter: str
    late: str
    aggregates: str
    alerts: str


@dataclass(frozen=True)
class Tables:
    bronze: str
    silver: str
    gold: str
    deadletter: str
    late: str
    alerts: str
    devices: str  # a Delta device dimension; "" to read the devices topic


def tables_under(lake: Path, config: Config) -> Tables:
    """The pipeline's tables in the folder `lake`: [batch]'s, [stream]'s and [aggregate]'s gold."""
    batch = config.batch
    return Tables(
        bronze=str(lake / batch.bronze_table),
        silver=str(lake / batch.silver_table),
        gold=str(lake / config.aggregate.table),
        deadletter=str(lake / config.stream.deadletter_table),
        late=str(lake / config.stream.late_table),
        alerts=str(lake / batch.alerts_table),
        devices=str(lake / config.pipeline.device_table) if config.pipeline.device_table else "",
    )


@dataclass(frozen=True)
class PipelinePlan:
    """Which stages run, on which topics and tables, and how the readings are identified."""

    topics: Topics
    tables: Tables
    checkpoints: str
    stages: tuple[str, ...]
    trigger: str
    max_offsets_per_trigger: int | None
    starting_offsets: str
    id_field: str  # [stream] id_field: stages deduplicate, publish once and alert by it

    def checkpoint(self, stage: str) -> str:
        return f"{self.checkpoints}/{stage}"


def raw_stream(config: Config, plan: PipelinePlan) -> StreamConfig:
    """[stream] as the bronze and clean stages read it, with the plan's topics."""
    topics = plan.topics
    return replace(
        config.stream,
        topic=topics.raw,
        devices_topic=topics.devices,
        deadletter_topic=topics.deadletter,
        late_topic=topics.late,
    )


def read_raw(spark: SparkSession, config: Config, plan: PipelinePlan) -> DataFrame:
    """The raw topic.  # key, value, topic, partition, offset, timestamp, timestampType"""
    return read_kafka_stream(
        spark,
        config.kafka,
        plan.topics.raw,
        plan.starting_offsets,
        plan.max_offsets_per_trigger,
        fail_on_data_loss=config.stream.guards.fail_on_data_loss,
    )


def start_bronze(spark: SparkSession, config: Config, plan: PipelinePlan, tally: Tally) -> StreamingQuery:
    stream = raw_stream(config, plan)
    checkpoint = plan.checkpoint("bronze")
    dead = dead_letter_sink(stream, plan.tables.deadletter)
    write = write_bronze(
        config.kafka, DeltaSink(plan.tables.bronze, "bronze"), dead, checkpoint, tally, "bronze"
    )
    # _source (topic, partition, offset, timestamp, key, value), <raw schema fields...>, _error
    checked = bronze_to_checked(
        read_raw(spark, config, plan), schema_from_ddl(config.schema(stream.schema)), stream
    )
    writer = (
        checked.writeStream.queryName("bronze").foreachBatch(write).option("checkpointLocation", checkpoint)
    )
    return triggered(writer, plan.trigger).start()


def start_clean(spark: SparkSession, config: Config, plan: PipelinePlan, tally: Tally) -> StreamingQuery:
    stream = raw_stream(config, plan)
    checkpoint = plan.checkpoint("clean")
    raw_schema = schema_from_ddl(config.schema(stream.schema))
    clean_schema = schema_from_ddl(config.schema(config.pipeline.clean_schema))
    late = LateOutput(
        stage="clean",
        checkpoint=checkpoint,
        table_path=plan.tables.late,
        topic=plan.topics.late,
        event_time=stream.event_time_field,
        id_field=stream.id_field,
    )
    # keyed by entity ([aggregate] keys), as the producers key the raw topic
    key = F.concat_ws(KEY_SEPARATOR, *[F.col(k).cast("string") for k in config.aggregate.keys])
    parse = functools.partial(bronze_to_checked, schema=raw_schema, stream=stream)
    write = write_clean(
        config.kafka,
        DeltaSink(plan.tables.silver, "silver"),
        plan.topics.clean,
        key,
        plan.id_field,
        late,
        parse,
        tally,
    )
    devices = read_devices(
        spark,
        config.kafka,
        plan.tables.devices,
        stream.devices_topic,
        config.schema(config.pipeline.device_schema),
        stream.device_key,
    )
    events, _ = bronze_to_silver(
        read_raw(spark, config, plan), raw_schema, stream, devices=devices, clean=config.clean
    )
    # the clean schema: the reading's fields, cleaned, then the device's (device_low, device_high)
    writer = (
        with_schema(events, clean_schema)
        .writeStream.queryName("clean")
        .foreachBatch(write)
        .option("checkpointLocation", checkpoint)
    )
    return triggered(writer, plan.trigger).start()


def aggregate_stage(config: Config, plan: PipelinePlan) -> AggregateQuery:
    """The main job's query on the clean topic: no dead letters (bronze has them), no cleaning (done).

    It deduplicates again by [stream] id_field: a replayed clean batch is published once, but a killed
    one may leave records in flight."""
    clean = replace(raw_stream(config, plan), topic=plan.topics.clean, schema=config.pipeline.clean_schema)
    return AggregateQuery(
        stream=clean,
        job=replace(config.aggregate, output_topic=plan.topics.aggregates),
        schema=config.schema(clean.schema),
        checkpoint=plan.checkpoint("aggregate"),
        gold=DeltaSink(plan.tables.gold, AGGREGATE_APP),
        late_table=plan.tables.late,
        dead=None,
        trigger=plan.trigger,
        max_offsets_per_trigger=plan.max_offsets_per_trigger,
        name="aggregate",
    )


def alerts_stage(config: Config, plan: PipelinePlan) -> AlertsQuery:
    return AlertsQuery(
        rules=replace(config.alerts, topic=plan.topics.alerts),
        input_topic=plan.topics.clean,
        schema=config.schema(config.pipeline.clean_schema),
        event_time_field=config.stream.event_time_field,
        id_field=plan.id_field,
        table_path=plan.tables.alerts,
        silver_path=plan.tables.silver,
        checkpoint=plan.checkpoint("alerts"),
        trigger=plan.trigger,
        starting_offsets=plan.starting_offsets,
        max_offsets_per_trigger=plan.max_offsets_per_trigger,
    )


def start_stage(
    stage: str, spark: SparkSession, config: Config, plan: PipelinePlan, tally: Tally
) -> StreamingQuery:
    starters: dict[str, Callable[[], StreamingQuery]] = {
        "bronze": lambda: start_bronze(spark, config, plan, tally),
        "clean": lambda: start_clean(spark, config, plan, tally),
        "aggregate": lambda: start_aggregate_query(spark, config.kafka, aggregate_stage(config, plan), tally),
        "alerts": lambda: start_alerts_query(spark, config.kafka, alerts_stage(config, plan), tally),
    }
    return starters[stage]()


def run_pipeline(spark: SparkSession, config: Config, plan: PipelinePlan, tally: Tally) -> None:
    """availableNow: each phase's stages together, to the end of their input. Live: all at once.

    Ctrl-C or SIGTERM during a phase ends it after the batches in hand and starts no later phase.
    """
    stop = threading.Event()
    # Also between phases, while the next phase's queries start.
    with stop_on_signals(lambda _signal: stop.set()):
        if plan.trigger == "available-now":
            for phase in PHASES:
                stages = [s for s in phase if s in plan.stages]
                if stages and not stop.is_set():
                    queries = [start_stage(s, spark, config, plan, tally) for s in stages]
                    await_queries(queries, tally, stop=stop)
        else:
            await_queries([start_stage(s, spark, config, plan, tally) for s in plan.stages], tally, stop=stop)


def preflight_pipeline(config: Config, plan: PipelinePlan) -> None:
    """Fail in seconds, naming the cause, before Spark starts: config values, then the topics."""
    stream = raw_stream(config, plan)
    record_limits(stream)
    duration_us(config.alerts.lookback)
    for name in (stream.schema, config.pipeline.clean_schema, config.pipeline.device_schema):
        config.schema(name)
    topics = plan.topics
    needed = {
        "bronze": [topics.raw, topics.deadletter],
        "clean": [topics.raw, topics.clean, topics.late] + ([] if plan.tables.devices else [topics.devices]),
        "aggregate": [topics.clean, topics.aggregates, topics.late],
        "alerts": [topics.clean, topics.alerts],
    }
    check_kafka(config.kafka, [t for stage in plan.stages for t in needed[stage]])


def pipeline_writes(config: Config, plan: PipelinePlan) -> Writes:
    """The tables the plan's stages write, each with every stage's checkpoint that writes it (the
    late table has two). The alerts table is left out (arus.io.owners)."""
    tables = plan.tables
    bronze, clean = plan.checkpoint("bronze"), plan.checkpoint("clean")
    gold = aggregate_stage(config, plan).query_checkpoint
    writers: dict[str, dict[str, tuple[str, ...]]] = {
        "bronze": {tables.bronze: (bronze,), tables.deadletter: (bronze,)},
        "clean": {tables.silver: (clean,), tables.late: (clean, gold)},
        "aggregate": {tables.gold: (gold,), tables.late: (clean, gold)},
        "alerts": {},
    }
    return Writes(
        writer(plan.checkpoints, "arus pipeline"),
        {table: checkpoints for stage in plan.stages for table, checkpoints in writers[stage].items()},
        "--lake <another folder>",
    )
