"""The streaming queries the jobs run: what each reads and computes, and the writer it ends in.

    query = aggregate_query(config, stream, job, checkpoint)  # [stream], [aggregate], caller's overrides
    preflight_aggregate(config.kafka, query)             # fail in seconds, before Spark starts
    start_aggregate_query(spark, config.kafka, query, tally)
    start_alerts_query(spark, config.kafka, alerts, tally)

The main job runs one aggregate query; the pipeline runs one as its aggregate stage (on the clean
topic, without dead letters) and the alerts query as its last stage (arus.runtime.pipeline).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from arus.config import (
    AggregateConfig,
    AlertsConfig,
    CleanConfig,
    Config,
    ConfigError,
    KafkaConfig,
    StreamConfig,
)
from arus.core.rules import GuardError, record_limits
from arus.core.stages import bronze_to_checked, bronze_to_silver, silver_to_gold
from arus.core.transforms import parse_events, schema_from_ddl, valid_events
from arus.io.kafka import check_kafka
from arus.io.owners import Writes, writer
from arus.io.sinks import read_kafka_stream
from arus.runtime.guards import check_lost_records
from arus.runtime.microbatch import LateOutput, observe_input
from arus.runtime.progress import Tally
from arus.runtime.writers import DeadLetterSink, DeltaSink, write_aggregates, write_alerts

# Transaction app ids of the aggregate and dead-letter writes, the job's and the pipeline's alike. They
# are what the jobs wrote before, so a query resumed from an existing checkpoint skips what it committed.
AGGREGATE_APP = "arus-aggregate"
DEADLETTER_APP = "arus-aggregate-deadletter"


def triggered(writer: DataStreamWriter, trigger: str) -> DataStreamWriter:
    """ "available-now" catches up and stops; anything else is a processing-time interval."""
    if trigger == "available-now":
        return writer.trigger(availableNow=True)
    return writer.trigger(processingTime=trigger)


def reading_id(config: Config) -> str:
    """The readings' id ([stream] id_field), which the pipeline and the alerts cannot do without."""
    if not config.stream.id_field:
        raise ConfigError(
            "[stream] id_field is empty: the pipeline and the alerts deduplicate, publish "
            "and name alerts by each reading's id"
        )
    return config.stream.id_field


def dead_letter_sink(stream: StreamConfig, path: str) -> DeadLetterSink:
    """The stream's dead-letter topic and circuit breaker, with the table at `path`."""
    return DeadLetterSink(
        DeltaSink(path, DEADLETTER_APP),
        stream.deadletter_topic,
        stream.guards.max_deadletter_ratio,
        stream.guards.breaker_min_records,
    )


@dataclass(frozen=True)
class AggregateQuery:
    """An aggregate query: input, event time, watermark and guards from `stream`, windows from `job`,
    and where it writes."""

    stream: StreamConfig
    job: AggregateConfig
    schema: str  # Spark DDL of the input records
    checkpoint: str  # a folder; the query's own checkpoint is its `aggregates` subfolder
    gold: DeltaSink
    late_table: str
    dead: DeadLetterSink | None  # None when another query handles the input's dead letters
    slide: str | None = None
    trigger: str = "available-now"
    max_offsets_per_trigger: int | None = None
    clean: CleanConfig | None = None
    name: str = "aggregates"

    @property
    def query_checkpoint(self) -> str:
        return f"{self.checkpoint}/aggregates"

    def late(self) -> LateOutput:
        """The first stateful operator decides what is late: deduplication by event time, else the window."""
        stream = self.stream
        return LateOutput(
            stage=self.name,
            checkpoint=self.query_checkpoint,
            table_path=self.late_table,
            topic=stream.late_topic,
            event_time=stream.event_time_field,
            id_field=stream.id_field,
            window=None if stream.id_field else self.job.window,
            slide=None if stream.id_field else self.slide,
        )


def aggregate_query(
    config: Config,
    stream: StreamConfig,
    job: AggregateConfig,
    checkpoint: str,
    slide: str | None = None,
    trigger: str = "available-now",
    max_offsets_per_trigger: int | None = None,
) -> AggregateQuery:
    """The main job's query: `job` ([aggregate]) over `stream` ([stream]), overrides applied; its
    tables under [paths] lake (an absolute name is a path), dead letters to Delta and Kafka,
    readings cleaned per [clean]."""
    lake = config.resolve(config.paths.lake)
    return AggregateQuery(
        stream=stream,
        job=job,
        schema=config.schema(stream.schema),
        checkpoint=checkpoint,
        gold=DeltaSink(str(lake / job.table), AGGREGATE_APP),
        late_table=str(lake / stream.late_table),
        dead=dead_letter_sink(stream, str(lake / stream.deadletter_table)),
        slide=slide,
        trigger=trigger,
        max_offsets_per_trigger=max_offsets_per_trigger,
        clean=config.clean,
    )


def preflight_aggregate(kafka: KafkaConfig, query: AggregateQuery) -> None:
    """Fail in seconds, naming the cause, before Spark starts (see arus.runtime.guards)."""
    stream = query.stream
    record_limits(stream)
    check_kafka(kafka, [stream.topic, query.job.output_topic, stream.deadletter_topic])
    for gap in check_lost_records(
        kafka, stream.topic, [Path(query.query_checkpoint)], stream.guards.fail_on_data_loss
    ):
        print(f"aggregate: WARNING: skipping lost records: {gap}", file=sys.stderr, flush=True)
    try:
        check_kafka(kafka, [stream.late_topic])
    except GuardError as exc:
        print(f"aggregate: WARNING: a late event will stop the job: {exc}", file=sys.stderr, flush=True)


def aggregate_writes(query: AggregateQuery) -> Writes:
    """The main job's tables (gold, late, dead letters), all written by its one query."""
    tables = [query.gold.path, query.late_table] + ([query.dead.table.path] if query.dead else [])
    return Writes(
        writer(query.checkpoint, "arus aggregate"),
        {table: (query.query_checkpoint,) for table in tables},
        "ARUS_LAKE_DIR=<another folder>, or --table, --deadletter-table and --late-table",
    )


def start_aggregate_query(
    spark: SparkSession, kafka: KafkaConfig, query: AggregateQuery, tally: Tally | None = None
) -> StreamingQuery:
    """Input topic -> parse, dedup, clean -> windows with watermark -> Delta MERGE + Kafka, late
    events, and (given `query.dead`) the dead letters to Delta + Kafka and the circuit breaker."""
    stream, job = query.stream, query.job
    schema = schema_from_ddl(query.schema)
    raw = read_kafka_stream(
        spark,
        kafka,
        stream.topic,
        stream.starting_offsets,
        query.max_offsets_per_trigger,
        fail_on_data_loss=stream.guards.fail_on_data_loss,
    )
    # The batch's records and dead letters are counted as it runs, for its writer.
    events, _ = bronze_to_silver(raw, schema, stream, clean=query.clean, on_checked=observe_input)
    # *keys, window_start, window_end, count, <f>_mean, <f>_min, <f>_max, <f>_stddev, <f>_p50, <f>_p95
    aggregates = silver_to_gold(events, stream, job, query.slide)
    parse = functools.partial(bronze_to_checked, schema=schema, stream=stream)
    append = job.output_mode == "append"
    write = write_aggregates(
        kafka, query.gold, job.output_topic, job.keys, query.late(), parse, query.dead, tally, append
    )
    writer = (
        aggregates.writeStream.queryName(query.name)
        .outputMode(job.output_mode)
        .foreachBatch(write)
        .option("checkpointLocation", query.query_checkpoint)
    )
    return triggered(writer, query.trigger).start()


@dataclass(frozen=True)
class AlertsQuery:
    """The alerts query: [alerts] rules over a topic of clean readings, into a table and a topic."""

    rules: AlertsConfig  # its topic is where the alerts go
    input_topic: str
    schema: str  # Spark DDL of the clean readings
    event_time_field: str
    id_field: str
    table_path: str
    silver_path: str  # the rolling rules look back on a device's earlier readings here
    checkpoint: str
    trigger: str = "available-now"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    name: str = "alerts"


def start_alerts_query(
    spark: SparkSession, kafka: KafkaConfig, query: AlertsQuery, tally: Tally | None = None
) -> StreamingQuery:
    """Clean topic -> valid readings -> rules per micro-batch -> alerts table + topic."""
    schema = schema_from_ddl(query.schema)
    raw = read_kafka_stream(
        spark, kafka, query.input_topic, query.starting_offsets, query.max_offsets_per_trigger
    )
    # <clean schema fields...>
    readings = valid_events(parse_events(raw, schema), schema)
    write = write_alerts(
        kafka,
        query.rules,
        query.table_path,
        query.silver_path,
        query.id_field,
        query.event_time_field,
        query.checkpoint,
        tally,
        query.name,
    )
    writer = (
        readings.writeStream.queryName(query.name)
        .foreachBatch(write)
        .option("checkpointLocation", query.checkpoint)
    )
    return triggered(writer, query.trigger).start()
