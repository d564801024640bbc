"""Alert rules over clean readings, into an alerts topic and a Delta table.

    python -m jobs.alerts                          # catch up on the clean topic, then stop
    python -m jobs.alerts --trigger "10 seconds"   # run live until Ctrl-C
    python -m jobs.alerts --show                   # then print the alerts table

Reads `[pipeline] clean_topic` (silver rows as JSON, `[pipeline] clean_schema`) and applies the
`[alerts]` rules (arus.core.alerts): bounds, rolling z-score, stuck sensor, silent device. The rolling
rules look back on each device's earlier readings in the silver table (`[batch] silver_table`),
which the pipeline's clean stage writes before it publishes a reading, so every reading this job
sees is already there. Alerts are inserted into `[batch] alerts_table` by their deterministic
alert_id, never updated (exactly once in Delta); the ones a micro-batch inserted are published
to `[alerts] topic` keyed by alert_id (at-least-once). The pipeline runs this as its last stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import reduce

from arus.jobs.aggregate import triggered
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from arus.config import AlertsConfig, Config, ConfigError, load_config
from arus.core.alerts import alert_columns, bound_alerts, silent_alerts, stuck_alerts, zscore_alerts
from arus.core.late import interval_micros
from arus.core.transforms import parse_events, schema_from_ddl, to_kafka_records, valid_events
from arus.io.sinks import read_kafka_stream, write_kafka
from arus.runtime.guards import GuardError, check_kafka
from arus.runtime.microbatch import insert_new_into_delta, query_id
from arus.runtime.progress import Tally, await_queries
from arus.runtime.session import build_session

APP = "arus-alerts"


@dataclass(frozen=True)
class Settings:
    rules: AlertsConfig
    input_topic: str
    schema: str
    event_time_field: str
    id_field: str
    table_path: str
    silver_path: str
    checkpoint: str
    trigger: str = "available-now"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    query_name: str = "alerts"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.alerts", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $ARUS_CONFIG or conf/arus.toml)")
    parser.add_argument("--input-topic", help="clean readings topic (default: [pipeline] clean_topic)")
    parser.add_argument("--alerts-topic", help="topic for the alerts (default: [alerts] topic)")
    parser.add_argument("--table", help="alerts Delta table name (under [paths] lake) or path")
    parser.add_argument("--silver-table", help="silver table the rolling rules look back on")
    parser.add_argument("--checkpoint", help="checkpoint folder (default under [paths] checkpoints)")
    parser.add_argument(
        "--trigger",
        default="available-now",
        help='"available-now" (process what is there, then stop) or an interval such as "10 seconds"',
    )
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--show", action="store_true", help="print the alerts table at the end")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> Settings:
    lake = config.resolve(config.paths.lake)
    rules = config.alerts
    if args.alerts_topic:
        rules = replace(rules, topic=args.alerts_topic)
    return Settings(
        rules=rules,
        input_topic=args.input_topic or config.pipeline.clean_topic,
        schema=config.pipeline.clean_schema,
        event_time_field=config.aggregate.event_time_field,
        id_field=config.aggregate.dedup_field or "event_id",
        table_path=str(lake / (args.table or config.batch.alerts_table)),
        silver_path=str(lake / (args.silver_table or config.batch.silver_table)),
        checkpoint=args.checkpoint or str(config.resolve(config.paths.checkpoints) / "alerts"),
        trigger=args.trigger,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )


def find_alerts(
    readings: DataFrame,
    batch_ids: DataFrame,
    latest: DataFrame,
    rules: AlertsConfig,
    clock: datetime | None,
    id_field: str = "event_id",
    time_field: str = "event_time",
) -> DataFrame:
    """A micro-batch's alerts.  # alert_id, rule, <key>, event_id, event_time, value, detail

    `readings`: the batch's readings and the earlier ones of its devices; `batch_ids`: the batch's
    event ids (one column, event_id); `latest`: every device's latest reading time (<key>,
    <time_field>); `clock`: the stream's latest event time. Reading rules report only the batch's
    readings; silence is judged on the whole fleet.
    """
    key = rules.key
    common = {"key": key, "id_field": id_field, "time_field": time_field}
    per_reading = reduce(
        DataFrame.unionByName,
        [
            bound_alerts(readings, rules.bounds, **common),
            zscore_alerts(
                readings, rules.zscore_readings, rules.zscore_threshold, rules.value_field, **common
            ),
            stuck_alerts(readings, rules.stuck_readings, rules.value_field, **common),
        ],
    ).join(batch_ids, "event_id", "left_semi")
    silent = silent_alerts(readings, rules.silent_minutes, None, key, time_field).unionByName(
        silent_alerts(latest, rules.silent_minutes, clock, key, time_field)
    )
    return per_reading.unionByName(silent).dropDuplicates(["alert_id"]).select(*alert_columns(key))


def write_alerts(
    config: Config, settings: Settings, tally: Tally | None = None
) -> Callable[[DataFrame, int], None]:
    """Per micro-batch: find alerts, insert the new ones into Delta, publish what this batch found."""
    rules, key, time_field, id_field = (
        settings.rules,
        settings.rules.key,
        settings.event_time_field,
        settings.id_field,
    )
    lookback_s = interval_micros(rules.lookback) / 1_000_000

    def write(batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        cached: list[DataFrame] = []

        def cache(df: DataFrame) -> DataFrame:
            cached.append(df.persist())
            return df

        try:
            batch = cache(batch.dropDuplicates([id_field]))
            span = batch.agg(F.min(time_field).alias("first")).first()
            if span is None or span["first"] is None:
                return
            if DeltaTable.isDeltaTable(spark, settings.silver_path):
                silver = spark.read.format("delta").load(settings.silver_path)
                since = F.lit(span["first"]) - F.make_dt_interval(secs=F.lit(lookback_s))
                devices = batch.select(key).distinct()
                history = silver.where(F.col(time_field) >= since).join(devices, key, "left_semi")
                everyone = silver.select(key, time_field).unionByName(batch.select(key, time_field))
            else:
                history = batch.limit(0)
                everyone = batch.select(key, time_field)
            # Every rule scans these, so each is computed once.
            readings = cache(history.unionByName(batch, allowMissingColumns=True).dropDuplicates([id_field]))
            latest = cache(everyone.groupBy(key).agg(F.max(time_field).alias(time_field)))
            newest = latest.agg(F.max(time_field)).first()[0]  # type: ignore[index]
            # collect() gives naive local datetimes; astimezone reads them as such.
            clock = newest.astimezone(UTC) if newest is not None else None
            batch_ids = batch.select(F.col(id_field).alias("event_id"))
            found = find_alerts(readings, batch_ids, latest, rules, clock, id_field, time_field)
            detected = f"{query_id(settings.checkpoint)}/{batch_id}"
            found = cache(found.withColumn("detected_in", F.lit(detected)))
            insert_new_into_delta(found, settings.table_path, "alert_id")
            # What this batch inserted, again after a replay: a crash before publishing loses nothing.
            table = spark.read.format("delta").load(settings.table_path)
            new = cache(table.where(F.col("detected_in") == detected).drop("detected_in"))
            count = new.count()
            if count:
                write_kafka(to_kafka_records(new, F.col("alert_id")), config.kafka, rules.topic)
            if tally is not None:
                tally.set(settings.query_name, batch_id, alerts=count)
        finally:
            for df in cached:
                df.unpersist()

    return write


def start_alerts_query(
    spark: SparkSession, config: Config, settings: Settings, tally: Tally | None = None
) -> StreamingQuery:
    """Clean topic -> valid readings -> rules per micro-batch -> alerts table + topic."""
    schema = schema_from_ddl(config.schema(settings.schema))
    raw = read_kafka_stream(
        spark, config.kafka, settings.input_topic, settings.starting_offsets, settings.max_offsets_per_trigger
    )
    readings = valid_events(parse_events(raw, schema), schema)
    writer = (
        readings.writeStream.queryName(settings.query_name)
        .foreachBatch(write_alerts(config, settings, tally))
        .option("checkpointLocation", settings.checkpoint)
    )
    return triggered(writer, settings.trigger).start()


def show_alerts(spark: SparkSession, path: str, rows: int = 20) -> None:
    if not DeltaTable.isDeltaTable(spark, path):
        print(f"Alerts: none yet ({path} does not exist)")
        return
    alerts = spark.read.format("delta").load(path)
    print(f"\nAlerts in {path}: {alerts.count()} (by rule below)")
    alerts.groupBy("rule").count().orderBy("rule").show(truncate=False)
    alerts.orderBy("event_time", "alert_id").drop("detected_in").show(rows, truncate=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        settings = settings_from(args, config)
        config.schema(settings.schema)
        interval_micros(settings.rules.lookback)
        check_kafka(config.kafka, [settings.input_topic, settings.rules.topic])
    except (ConfigError, GuardError, ValueError) as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return 1
    spark = build_session(APP, config.spark)
    started = time.monotonic()
    tally = Tally()
    await_queries([start_alerts_query(spark, config, settings, tally)], tally)
    print(f"alerts: done in {time.monotonic() - started:.1f}s")
    if args.show:
        show_alerts(spark, settings.table_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
