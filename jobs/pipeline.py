"""The multi-topic pipeline: raw readings -> bronze, silver, gold and alerts, in Kafka and in Delta.

    python -m jobs.pipeline --available-now --show    # catch up in two phases, print gold and alerts
    python -m jobs.pipeline                           # live: every stage at once, [pipeline] trigger
    python -m jobs.pipeline --stages clean,aggregate  # some stages only

Each stage is one streaming query with its own checkpoint (`[paths] checkpoints`/pipeline/<stage>):

    bronze     raw topic -> bronze table (records as received) + dead letters (table + topic)
    clean      raw topic -> parse, dedup within the watermark, enrich (devices), clean
                         -> silver table + clean topic; late events -> late table + topic
    aggregate  clean topic -> windows with watermark -> gold table (MERGE) + aggregates topic; late
    alerts     clean topic -> [alerts] rules (history from silver) -> alerts table + alerts topic

Delta is written exactly once across restarts (appends under a (txnAppId, txnVersion) per batch,
MERGE by key for gold and alerts); Kafka at least once with deterministic keys, except that a
replayed clean batch does not publish its readings twice. `--available-now` runs bronze and clean
together to the end of the raw topic, then aggregate and alerts together on the complete clean
topic and silver table; live runs start them all together (docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from arus.jobs import aggregate, alerts
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.window import Window

from arus.config import AggregateConfig, Config, ConfigError, load_config
from arus.core.clean import parse_device_dimension, with_schema
from arus.core.late import interval_micros
from arus.core.stages import bronze_to_checked, bronze_to_silver, record_limits
from arus.core.transforms import KAFKA_COLUMNS, SOURCE, schema_from_ddl, to_kafka_records
from arus.io.sinks import append_to_delta, read_kafka_batch, read_kafka_stream
from arus.runtime.guards import GuardError, check_kafka, kill_point
from arus.runtime.microbatch import LateOutput, txn_app_id, write_kafka_once, write_late_events
from arus.runtime.progress import Tally, await_queries
from arus.runtime.session import build_session

APP = "arus-pipeline"
STAGES = ("bronze", "clean", "aggregate", "alerts")


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


@dataclass(frozen=True)
class Settings:
    topics: Topics
    tables: Tables
    checkpoints: str
    stages: tuple[str, ...]
    trigger: str
    max_offsets_per_trigger: int | None
    starting_offsets: str

    def checkpoint(self, stage: str) -> str:
        return f"{self.checkpoints}/{stage}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $ARUS_CONFIG or conf/arus.toml)")
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="catch up (bronze + clean, then aggregate + alerts), then stop",
    )
    parser.add_argument("--trigger", help="live micro-batch interval (default: [pipeline] trigger)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--lake", help="folder of the tables (default: [paths] lake)")
    parser.add_argument("--checkpoint", help="folder of the stages' checkpoints (default: under [paths])")
    for name in ("raw", "clean", "devices", "deadletter", "late", "aggregates", "alerts"):
        parser.add_argument(f"--{name}-topic", help=f"the {name} topic (default from conf)")
    parser.add_argument("--show", action="store_true", help="print the gold aggregates and alerts at the end")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> Settings:
    pipeline, job = config.pipeline, config.aggregate
    topics = Topics(
        raw=args.raw_topic or pipeline.raw_topic,
        clean=args.clean_topic or pipeline.clean_topic,
        devices=args.devices_topic or pipeline.devices_topic,
        deadletter=args.deadletter_topic or job.deadletter_topic,
        late=args.late_topic or job.late_topic,
        aggregates=args.aggregates_topic or job.output_topic,
        alerts=args.alerts_topic or config.alerts.topic,
    )
    lake = Path(args.lake) if args.lake else config.resolve(config.paths.lake)
    tables = Tables(
        bronze=str(lake / config.batch.bronze_table),
        silver=str(lake / config.batch.silver_table),
        gold=str(lake / job.table),
        deadletter=str(lake / job.deadletter_table),
        late=str(lake / config.batch.late_table),
        alerts=str(lake / config.batch.alerts_table),
        devices=str(lake / pipeline.device_table) if pipeline.device_table else "",
    )
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    cap = args.max_offsets_per_trigger or pipeline.max_offsets_per_trigger or None
    return Settings(
        topics=topics,
        tables=tables,
        checkpoints=args.checkpoint or str(config.resolve(config.paths.checkpoints) / "pipeline"),
        stages=stages,
        trigger="available-now" if args.available_now else (args.trigger or pipeline.trigger),
        max_offsets_per_trigger=cap,
        starting_offsets=job.starting_offsets,
    )


def raw_job(config: Config, settings: Settings) -> AggregateConfig:
    """[aggregate] as the clean stage reads the raw topic: its schema, watermark and dedup."""
    return replace(
        config.aggregate,
        input_topic=settings.topics.raw,
        schema=config.pipeline.raw_schema,
        deadletter_topic=settings.topics.deadletter,
        late_topic=settings.topics.late,
        dedup_field=config.aggregate.dedup_field or "event_id",
    )


def read_raw(spark: SparkSession, config: Config, settings: Settings, topic: str) -> DataFrame:
    return read_kafka_stream(
        spark,
        config.kafka,
        topic,
        settings.starting_offsets,
        settings.max_offsets_per_trigger,
        fail_on_data_loss=config.aggregate.fail_on_data_loss,
    )


def read_devices(spark: SparkSession, config: Config, settings: Settings) -> DataFrame:
    """The device dimension, one row per device: a Delta table, or the compacted devices topic.

    Static, so the clean stage's stream-static join reads it afresh for every micro-batch.
    """
    if settings.tables.devices:
        return spark.read.format("delta").load(settings.tables.devices)
    schema = schema_from_ddl(config.schema(config.pipeline.device_schema))
    return parse_device_dimension(read_kafka_batch(spark, config.kafka, settings.topics.devices), schema)


# --- bronze: records as received, and the dead letters ----------------------------------------


def start_bronze(spark: SparkSession, config: Config, settings: Settings, tally: Tally) -> StreamingQuery:
    job = raw_job(config, settings)
    checkpoint = settings.checkpoint("bronze")
    dead_settings = aggregate.Settings(
        job=job,
        slide=None,
        trigger=settings.trigger,
        table_path=settings.tables.gold,
        deadletter_path=settings.tables.deadletter,
        checkpoint=checkpoint,
        max_offsets_per_trigger=settings.max_offsets_per_trigger,
    )
    write_dead = aggregate.write_dead_letters(config, dead_settings, tally, "bronze", checkpoint)

    def write(checked: DataFrame, batch_id: int) -> None:
        checked.persist()
        try:
            # topic, partition, offset, timestamp, key, value: as received, bytes untouched
            bronze = checked.select(f"{SOURCE}.*").select(*KAFKA_COLUMNS)
            if not bronze.isEmpty():
                append_to_delta(bronze, settings.tables.bronze, txn_app_id("bronze", checkpoint), batch_id)
            kill_point("bronze-after-delta", batch_id)
            write_dead(checked, batch_id)
        finally:
            checked.unpersist()

    schema = schema_from_ddl(config.schema(job.schema))
    checked = bronze_to_checked(read_raw(spark, config, settings, settings.topics.raw), schema, job)
    writer = (
        checked.writeStream.queryName("bronze").foreachBatch(write).option("checkpointLocation", checkpoint)
    )
    return aggregate.triggered(writer, settings.trigger).start()


# --- clean: silver and the clean topic, and what the watermark dropped --------------------------


def start_clean(spark: SparkSession, config: Config, settings: Settings, tally: Tally) -> StreamingQuery:
    job = raw_job(config, settings)
    checkpoint = settings.checkpoint("clean")
    raw_schema = schema_from_ddl(config.schema(job.schema))
    clean_schema = schema_from_ddl(config.schema(config.pipeline.clean_schema))
    late = LateOutput(
        stage="clean",
        checkpoint=checkpoint,
        table_path=settings.tables.late,
        topic=settings.topics.late,
        event_time=job.event_time_field,
        id_field=job.dedup_field,
    )

    def parse(raw: DataFrame) -> DataFrame:
        return bronze_to_checked(raw, raw_schema, job)

    def write(silver: DataFrame, batch_id: int) -> None:
        silver.persist()
        try:
            rows = silver.count()
            if rows:
                append_to_delta(silver, settings.tables.silver, txn_app_id("silver", checkpoint), batch_id)
                kill_point("clean-after-delta", batch_id)
                records = to_kafka_records(silver, F.col("device_id"))
                write_kafka_once(
                    records,
                    config.kafka,
                    settings.topics.clean,
                    f"{checkpoint}/published",
                    batch_id,
                    "event_id",
                )
        finally:
            silver.unpersist()
        count = write_late_events(silver.sparkSession, config.kafka, late, parse, batch_id)
        tally.set("clean", batch_id, late=count)

    raw = read_raw(spark, config, settings, settings.topics.raw)
    devices = read_devices(spark, config, settings)
    events, _ = bronze_to_silver(raw, raw_schema, job, devices=devices, clean=config.clean)
    # the clean schema: the reading's fields, cleaned, then the device's (device_low, device_high)
    writer = (
        with_schema(events, clean_schema)
        .writeStream.queryName("clean")
        .foreachBatch(write)
        .option("checkpointLocation", checkpoint)
    )
    return aggregate.triggered(writer, settings.trigger).start()


# --- aggregate and alerts: the jobs themselves, on the clean topic ------------------------------


def aggregate_settings(config: Config, settings: Settings) -> aggregate.Settings:
    job = replace(
        config.aggregate,
        input_topic=settings.topics.clean,
        output_topic=settings.topics.aggregates,
        late_topic=settings.topics.late,
        schema=config.pipeline.clean_schema,
        # a replayed clean batch is published once, but a killed one may leave records in flight
        dedup_field=config.aggregate.dedup_field or "event_id",
    )
    return aggregate.Settings(
        job=job,
        slide=None,
        trigger=settings.trigger,
        table_path=settings.tables.gold,
        deadletter_path=settings.tables.deadletter,
        checkpoint=settings.checkpoint("aggregate"),
        max_offsets_per_trigger=settings.max_offsets_per_trigger,
        late_path=settings.tables.late,
        clean=None,  # the clean stage did it
        query_name="aggregate",
    )


def alerts_settings(config: Config, settings: Settings) -> alerts.Settings:
    return alerts.Settings(
        rules=replace(config.alerts, topic=settings.topics.alerts),
        input_topic=settings.topics.clean,
        schema=config.pipeline.clean_schema,
        event_time_field=config.aggregate.event_time_field,
        id_field=config.aggregate.dedup_field or "event_id",
        table_path=settings.tables.alerts,
        silver_path=settings.tables.silver,
        checkpoint=settings.checkpoint("alerts"),
        trigger=settings.trigger,
        starting_offsets=settings.starting_offsets,
        max_offsets_per_trigger=settings.max_offsets_per_trigger,
    )


def start_stage(
    stage: str, spark: SparkSession, config: Config, settings: Settings, tally: Tally
) -> StreamingQuery:
    starters: dict[str, Callable[[], StreamingQuery]] = {
        "bronze": lambda: start_bronze(spark, config, settings, tally),
        "clean": lambda: start_clean(spark, config, settings, tally),
        "aggregate": lambda: aggregate.start_aggregate_query(
            spark, config, aggregate_settings(config, settings), tally
        ),
        "alerts": lambda: alerts.start_alerts_query(spark, config, alerts_settings(config, settings), tally),
    }
    return starters[stage]()


# availableNow runs in two phases: bronze and clean both read only the raw topic; aggregate reads
# the clean topic and alerts reads it and silver, which the first phase has finished by then.
PHASES = (("bronze", "clean"), ("aggregate", "alerts"))


def run(spark: SparkSession, config: Config, settings: Settings, tally: Tally) -> None:
    """availableNow: each phase's stages together, to the end of their input. Live: all at once."""
    if settings.trigger == "available-now":
        for phase in PHASES:
            stages = [s for s in phase if s in settings.stages]
            if stages:
                await_queries([start_stage(s, spark, config, settings, tally) for s in stages], tally)
    else:
        await_queries([start_stage(s, spark, config, settings, tally) for s in settings.stages], tally)


def show_results(spark: SparkSession, config: Config, settings: Settings, rows: int = 20) -> None:
    """Row counts of every table and topic, then the gold aggregates (Delta and Kafka) and the alerts."""
    tables, topics = settings.tables, settings.topics
    print("\nTables:")
    for name in ("bronze", "silver", "gold", "deadletter", "late", "alerts"):
        path = getattr(tables, name)
        count = spark.read.format("delta").load(path).count() if DeltaTable.isDeltaTable(spark, path) else 0
        print(f"  {name:<11} {count:>7} rows  {path}")
    print("\nTopics:")
    for topic in (topics.raw, topics.clean, topics.deadletter, topics.late, topics.aggregates, topics.alerts):
        print(f"  {topic:<20} {read_kafka_batch(spark, config.kafka, topic).count():>7} records")
    if DeltaTable.isDeltaTable(spark, tables.gold):
        gold = spark.read.format("delta").load(tables.gold)
        print(f"\nGold aggregates in Delta (latest {rows} windows):")
        gold.orderBy(F.col("window_start").desc(), "device_id").limit(rows).orderBy(
            "window_start", "device_id"
        ).show(rows, truncate=False)
    # a window's record is re-sent whenever the window changes: the newest per key is current
    latest = (
        read_kafka_batch(spark, config.kafka, topics.aggregates)
        .withColumn("newest", F.max("offset").over(Window.partitionBy("partition", "key")))
        .where(F.col("offset") == F.col("newest"))
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
    )
    print(f"The same aggregates on topic {topics.aggregates} (newest record per key, {rows // 4} of them):")
    latest.orderBy(F.col("key").desc()).show(rows // 4, truncate=False)
    alerts.show_alerts(spark, tables.alerts, rows)


def preflight(config: Config, settings: Settings) -> None:
    job = raw_job(config, settings)
    record_limits(job)
    interval_micros(config.alerts.lookback)
    for name in (job.schema, config.pipeline.clean_schema, config.pipeline.device_schema):
        config.schema(name)
    topics = settings.topics
    needed = {
        "bronze": [topics.raw, topics.deadletter],
        "clean": [topics.raw, topics.clean, topics.late]
        + ([] if settings.tables.devices else [topics.devices]),
        "aggregate": [topics.clean, topics.aggregates, topics.late],
        "alerts": [topics.clean, topics.alerts],
    }
    check_kafka(config.kafka, [t for stage in settings.stages for t in needed[stage]])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(argv) if argv is not None else None)
    try:
        config = load_config(args.config)
        settings = settings_from(args, config)
        preflight(config, settings)
    except (ConfigError, GuardError, ValueError) as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 1
    spark = build_session(APP, config.spark)
    started = time.monotonic()
    run(spark, config, settings, Tally())
    print(f"pipeline: done in {time.monotonic() - started:.1f}s")
    if args.show:
        show_results(spark, config, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
