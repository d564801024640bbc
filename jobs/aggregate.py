"""The main job: event-time window aggregates of a JSON Kafka topic, into a Kafka topic and Delta.

    spark-submit jobs/aggregate.py                          # catch up on the topic, then stop
    spark-submit jobs/aggregate.py --trigger "10 seconds"   # run live until Ctrl-C
    spark-submit jobs/aggregate.py --window "5 minutes" --slide "1 minute" --show

Reads `[aggregate] input_topic` (any JSON topic: schema, keys, value fields and event-time field
come from conf/arus.toml), drops nothing: records that fail to parse go to the dead-letter topic
and table with their original bytes and the reason; events behind the watermark, which Spark's
stateful operators drop, are found again in the batch's input and go to the late topic and
[batch] late_table (arus.core.late). Readings are cleaned per [clean] before they are aggregated.
Aggregates are upserted into the Delta table by (keys, window), so a replayed micro-batch writes
each row exactly once; the Kafka output is at-least-once, each record keyed by entity and window
start so consumers can deduplicate. It is one streaming query: each micro-batch's Kafka input is
read again from the offsets in its checkpoint and parsed once more for the dead letters and the
late events, both written exactly once to Delta under the batch's id. Each micro-batch prints a
progress line with its watermark and its late and dead-letter counts (arus.runtime.progress).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from arus.config import AggregateConfig, CleanConfig, Config, ConfigError, load_config
from arus.core.stages import bronze_to_checked, bronze_to_silver, record_limits, silver_to_gold
from arus.core.transforms import aggregate_key, dead_letters, schema_from_ddl, to_kafka_records
from arus.io.sinks import append_to_delta, merge_into_delta, read_kafka_batch, read_kafka_stream, write_kafka
from arus.runtime.guards import (
    GuardError,
    check_deadletter_ratio,
    check_kafka,
    check_lost_records,
    kill_point,
)
from arus.runtime.microbatch import LateOutput, batch_range, read_batch_input, txn_app_id, write_late_events
from arus.runtime.progress import Tally
from arus.runtime.progress import await_queries as await_and_report
from arus.runtime.session import build_session

APP = "arus-aggregate"


@dataclass(frozen=True)
class Settings:
    job: AggregateConfig
    slide: str | None
    trigger: str
    table_path: str
    deadletter_path: str
    checkpoint: str
    max_offsets_per_trigger: int | None
    late_path: str = ""
    clean: CleanConfig | None = None
    query_name: str = "aggregates"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit jobs/aggregate.py",
        description="Event-time window aggregates of a JSON Kafka topic, into Kafka and Delta.",
    )
    parser.add_argument("--config", help="config file (default: $ARUS_CONFIG or conf/arus.toml)")
    parser.add_argument("--input-topic", help="topic to read")
    parser.add_argument("--output-topic", help="topic for the aggregates")
    parser.add_argument("--deadletter-topic", help="topic for records that fail to parse")
    parser.add_argument("--table", help="Delta table name (under [paths] lake) or absolute path")
    parser.add_argument("--deadletter-table", help="dead-letter Delta table name or path")
    parser.add_argument("--late-topic", help="topic for events behind the watermark")
    parser.add_argument("--late-table", help="late-events Delta table name or path ([batch] late_table)")
    parser.add_argument("--window", help='window length, e.g. "1 minute"')
    parser.add_argument("--slide", help='slide for sliding windows, e.g. "30 seconds" (default: tumbling)')
    parser.add_argument("--watermark", help='how late events may be, e.g. "2 minutes"')
    parser.add_argument("--keys", help="comma-separated key fields")
    parser.add_argument("--value-fields", help="comma-separated numeric fields to aggregate")
    parser.add_argument("--event-time-field", help="the event-time field")
    parser.add_argument(
        "--trigger",
        default="available-now",
        help='"available-now" (process what is there, then stop) or an interval such as "10 seconds"',
    )
    parser.add_argument("--starting-offsets", help="earliest or latest, for a new checkpoint")
    parser.add_argument("--checkpoint", help="checkpoint folder (default under [paths] checkpoints)")
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--show", action="store_true", help="print the table and topic contents at the end")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> Settings:
    def csv(text: str | None) -> tuple[str, ...] | None:
        return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None

    overrides = {
        "input_topic": args.input_topic,
        "output_topic": args.output_topic,
        "deadletter_topic": args.deadletter_topic,
        "table": args.table,
        "deadletter_table": args.deadletter_table,
        "late_topic": args.late_topic,
        "window": args.window,
        "watermark": args.watermark,
        "keys": csv(args.keys),
        "value_fields": csv(args.value_fields),
        "event_time_field": args.event_time_field,
        "starting_offsets": args.starting_offsets,
    }
    job = replace(config.aggregate, **{k: v for k, v in overrides.items() if v is not None})
    lake = config.resolve(config.paths.lake)
    return Settings(
        job=job,
        slide=args.slide,
        trigger=args.trigger,
        table_path=str(lake / job.table),
        deadletter_path=str(lake / job.deadletter_table),
        checkpoint=args.checkpoint or str(config.resolve(config.paths.checkpoints) / "aggregate"),
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        late_path=str(lake / (args.late_table or config.batch.late_table)),
        clean=config.clean,
    )


def late_output(settings: Settings) -> LateOutput:
    """The first stateful operator decides what is late: deduplication by event time, else the window."""
    job = settings.job
    return LateOutput(
        stage=settings.query_name,
        checkpoint=f"{settings.checkpoint}/aggregates",
        table_path=settings.late_path,
        topic=job.late_topic,
        event_time=job.event_time_field,
        id_field=job.dedup_field,
        window=None if job.dedup_field else job.window,
        slide=None if job.dedup_field else settings.slide,
    )


def write_aggregates(
    config: Config, settings: Settings, tally: Tally | None = None, with_dead_letters: bool = False
) -> Callable[[DataFrame, int], None]:
    """The per-micro-batch writer: upsert into Delta, publish to Kafka, then the batch's dead letters
    (`with_dead_letters`) and late events.

    The query's own output holds only aggregates, so the batch's Kafka input is read again (its
    offsets are in the checkpoint) and parsed once for both the dead letters and the late events.
    The circuit breaker weighs that input before anything of the batch is written.
    """
    keys = list(settings.job.keys)
    schema = schema_from_ddl(config.schema(settings.job.schema))
    late = late_output(settings)
    parse = functools.partial(bronze_to_checked, schema=schema, job=settings.job)

    def write(batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        checked = None
        if with_dead_letters:
            rng = batch_range(late.checkpoint, batch_id)
            if not rng.empty:
                checked = parse(read_batch_input(spark, config.kafka, rng)).persist()
        try:
            dead = None
            if with_dead_letters:
                dead = count_dead_letters(checked, settings, batch_id, tally, settings.query_name)
            batch.persist()
            try:
                app_id = txn_app_id(APP, late.checkpoint)
                merge_into_delta(batch, settings.table_path, [*keys, "window_start"], app_id, batch_id)
                kill_point("after-delta", batch_id)
                write_kafka(
                    to_kafka_records(batch, aggregate_key(keys)), config.kafka, settings.job.output_topic
                )
                kill_point("after-kafka", batch_id)
            finally:
                batch.unpersist()
            if dead is not None:
                publish_dead_letters(config, settings, dead, batch_id, late.checkpoint)
            count = write_late_events(spark, config.kafka, late, parse, batch_id, checked)
        finally:
            if checked is not None:
                checked.unpersist()
        if tally is not None:
            tally.set(settings.query_name, batch_id, late=count)

    return write


def count_dead_letters(
    checked: DataFrame | None, settings: Settings, batch_id: int, tally: Tally | None, query: str
) -> DataFrame | None:
    """The batch's dead letters (None when it read nothing), counted; too many trip the breaker.

    It sees every checked record so the circuit breaker can weigh the bad ones against the total.
    """
    if checked is None:
        if tally is not None:
            tally.set(query, batch_id, dead=0)
        return None
    job = settings.job
    batch = dead_letters(checked)
    bad, total = batch.count(), checked.count()
    if tally is not None:
        tally.set(query, batch_id, dead=bad)
    check_deadletter_ratio(bad, total, job.max_deadletter_ratio, job.breaker_min_records, batch_id)
    return batch


def publish_dead_letters(
    config: Config, settings: Settings, dead: DataFrame, batch_id: int, checkpoint: str
) -> None:
    """Dead letters: appended to Delta once per batch; to Kafka with the original bytes as value."""
    app_id = txn_app_id(f"{APP}-deadletter", checkpoint)
    append_to_delta(dead, settings.deadletter_path, app_id, batch_id)
    kill_point("deadletter-after-delta", batch_id)
    write_kafka(dead_letter_records(dead), config.kafka, settings.job.deadletter_topic)


def write_dead_letters(
    config: Config,
    settings: Settings,
    tally: Tally | None = None,
    query: str = "deadletter",
    checkpoint: str | None = None,
) -> Callable[[DataFrame, int], None]:
    """A writer of the dead letters among a query's checked records (parse_events rows).

    `query` and its `checkpoint` name the query that calls it (the pipeline's bronze stage).
    """
    folder = checkpoint or f"{settings.checkpoint}/deadletter"

    def write(checked: DataFrame, batch_id: int) -> None:
        checked.persist()
        try:
            dead = count_dead_letters(checked, settings, batch_id, tally, query)
            assert dead is not None
            publish_dead_letters(config, settings, dead, batch_id, folder)
        finally:
            checked.unpersist()

    return write


def dead_letter_records(dead: DataFrame) -> DataFrame:
    """Original key and bytes, with the reason and the source position in headers.

    # key, value, headers
    """
    return dead.select(
        "key",
        "value",
        F.array(
            _header("error", F.col("error")),
            _header("source_topic", F.col("topic")),
            _header("source_partition", F.col("partition")),
            _header("source_offset", F.col("offset")),
        ).alias("headers"),
    )


def _header(name: str, value: Column) -> Column:
    return F.struct(F.lit(name).alias("key"), value.cast("string").cast("binary").alias("value"))


def triggered(writer: DataStreamWriter, trigger: str) -> DataStreamWriter:
    """ "available-now" catches up and stops; anything else is a processing-time interval."""
    if trigger == "available-now":
        return writer.trigger(availableNow=True)
    return writer.trigger(processingTime=trigger)


def start_aggregate_query(
    spark: SparkSession,
    config: Config,
    settings: Settings,
    tally: Tally | None = None,
    with_dead_letters: bool = False,
) -> StreamingQuery:
    """Input topic -> parse, dedup, clean -> windows with watermark -> Delta MERGE + Kafka (+ late,
    + the dead letters to Delta + Kafka and the circuit breaker, with `with_dead_letters`)."""
    job = settings.job
    schema = schema_from_ddl(config.schema(job.schema))
    raw = read_kafka_stream(
        spark,
        config.kafka,
        job.input_topic,
        job.starting_offsets,
        settings.max_offsets_per_trigger,
        fail_on_data_loss=job.fail_on_data_loss,
    )
    events, _ = bronze_to_silver(raw, schema, job, clean=settings.clean)
    aggregates = silver_to_gold(events, job, settings.slide)
    writer = (
        aggregates.writeStream.queryName(settings.query_name)
        .outputMode("update")
        .foreachBatch(write_aggregates(config, settings, tally, with_dead_letters))
        .option("checkpointLocation", f"{settings.checkpoint}/aggregates")
    )
    return triggered(writer, settings.trigger).start()


def start_queries(
    spark: SparkSession, config: Config, settings: Settings, tally: Tally | None = None
) -> list[StreamingQuery]:
    """The job: one query for the aggregates, the dead letters and the late events."""
    return [start_aggregate_query(spark, config, settings, tally, with_dead_letters=True)]


def await_queries(queries: list[StreamingQuery], tally: Tally | None = None) -> None:
    """Wait for the queries to end (availableNow) or for Ctrl-C, printing each batch's progress.

    A failure (circuit breaker, data loss) is raised as RuntimeError once every query has stopped.
    """
    await_and_report(queries, tally)


def show_results(spark: SparkSession, config: Config, settings: Settings) -> None:
    job = settings.job
    table = spark.read.format("delta").load(settings.table_path)
    print(f"\nDelta table {settings.table_path}: {table.count()} rows")
    table.orderBy("window_start", *job.keys).show(20, truncate=False)
    topic = read_kafka_batch(spark, config.kafka, job.output_topic)
    print(f"Kafka topic {job.output_topic}: {topic.count()} records (latest per key is current)")
    topic.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value").show(5, truncate=False)
    dead = (
        spark.read.format("delta").load(settings.deadletter_path)
        if _is_table(spark, settings.deadletter_path)
        else None
    )
    print(f"Dead letters: {dead.count() if dead is not None else 0} records in {settings.deadletter_path}")
    late = (
        spark.read.format("delta").load(settings.late_path) if _is_table(spark, settings.late_path) else None
    )
    print(f"Late events: {late.count() if late is not None else 0} records in {settings.late_path}")


def _is_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def preflight(config: Config, settings: Settings) -> None:
    """Fail in seconds, naming the cause, before Spark starts (see arus.runtime.guards)."""
    job = settings.job
    record_limits(job)
    check_kafka(config.kafka, [job.input_topic, job.output_topic, job.deadletter_topic])
    queries = [Path(settings.checkpoint) / "aggregates"]
    for gap in check_lost_records(config.kafka, job.input_topic, queries, job.fail_on_data_loss):
        print(f"aggregate: WARNING: skipping lost records: {gap}", file=sys.stderr, flush=True)
    try:
        check_kafka(config.kafka, [job.late_topic])
    except GuardError as exc:
        print(f"aggregate: WARNING: a late event will stop the job: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        settings = settings_from(args, config)
        config.schema(settings.job.schema)
        preflight(config, settings)
    except (ConfigError, GuardError) as exc:
        print(f"aggregate: {exc}", file=sys.stderr)
        return 1
    spark = build_session(APP, config.spark)
    started = time.monotonic()
    tally = Tally()
    queries = start_queries(spark, config, settings, tally)
    await_queries(queries, tally)
    print(f"aggregate: done in {time.monotonic() - started:.1f}s")
    if args.show:
        show_results(spark, config, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
