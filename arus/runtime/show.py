"""What a job prints at the end with `--show`: its tables and topics, read back.

show_aggregates(spark, kafka, query)           # the main job: gold, its topic, dead letters, late
show_pipeline(spark, kafka, topics, tables, keys)  # every table and topic, gold, the alerts
show_alerts(spark, path)                       # the alerts by rule, then the latest
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from arus.config import KafkaConfig
from arus.io.lake import is_table
from arus.io.sinks import read_kafka_batch
from arus.runtime.pipeline import Tables, Topics
from arus.runtime.queries import AggregateQuery


def _count(spark: SparkSession, path: str) -> int:
    return spark.read.format("delta").load(path).count() if is_table(path) else 0


def show_aggregates(spark: SparkSession, kafka: KafkaConfig, query: AggregateQuery) -> None:
    """The gold table, the first records of the output topic, and the dead-letter and late counts."""
    job, gold = query.job, query.gold.path
    table = spark.read.format("delta").load(gold)
    print(f"\nDelta table {gold}: {table.count()} rows")
    table.orderBy("window_start", *job.keys).show(20, truncate=False)
    topic = read_kafka_batch(spark, kafka, job.output_topic)
    print(f"Kafka topic {job.output_topic}: {topic.count()} records (latest per key is current)")
    topic.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value").show(5, truncate=False)
    if query.dead is not None:
        dead = query.dead.table.path
        print(f"Dead letters: {_count(spark, dead)} records in {dead}")
    print(f"Late events: {_count(spark, query.late_table)} records in {query.late_table}")


def show_pipeline(
    spark: SparkSession,
    kafka: KafkaConfig,
    topics: Topics,
    tables: Tables,
    keys: Sequence[str],
    rows: int = 20,
) -> None:
    """Row counts of every table and topic, then the gold aggregates (Delta and Kafka) and the alerts."""
    print("\nTables:")
    for name in ("bronze", "silver", "gold", "deadletter", "late", "alerts"):
        path = getattr(tables, name)
        print(f"  {name:<11} {_count(spark, path):>7} rows  {path}")
    print("\nTopics:")
    for topic in (topics.raw, topics.clean, topics.deadletter, topics.late, topics.aggregates, topics.alerts):
        print(f"  {topic:<20} {read_kafka_batch(spark, kafka, topic).count():>7} records")
    if is_table(tables.gold):
        gold = spark.read.format("delta").load(tables.gold)
        print(f"\nGold aggregates in Delta (latest {rows} windows):")
        gold.orderBy(F.col("window_start").desc(), *keys).limit(rows).orderBy("window_start", *keys).show(
            rows, truncate=False
        )
    # a window's record is re-sent whenever the window changes: the newest per key is current
    latest = (
        read_kafka_batch(spark, kafka, topics.aggregates)
        .withColumn("newest", F.max("offset").over(Window.partitionBy("partition", "key")))
        .where(F.col("offset") == F.col("newest"))
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
    )
    print(f"The same aggregates on topic {topics.aggregates} (newest record per key, {rows // 4} of them):")
    latest.orderBy(F.col("key").desc()).show(rows // 4, truncate=False)
    show_alerts(spark, tables.alerts, rows)


def show_alerts(spark: SparkSession, path: str, rows: int = 20) -> None:
    if not is_table(path):
        print(f"Alerts: none yet ({path} does not exist)")
        return
    alerts = spark.read.format("delta").load(path)
    print(f"\nAlerts in {path}: {alerts.count()} (by rule below)")
    alerts.groupBy("rule").count().orderBy("rule").show(truncate=False)
    alerts.orderBy("event_time", "alert_id").drop("detected_in").show(rows, truncate=False)
