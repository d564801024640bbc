"""Set-up shared by every test folder: Kafka's raw record schema and inline rows in it, sending
records and reading topics back, the main job run to the end, the pandas oracle of its gold
table, and the kafka-python consumer's settings.

tests/conftest.py sits beside this module, so pytest puts tests/ on the path and every folder's tests
`import support`. Suite-specific helpers stay with their suite (tests/faults/faultkit.py,
tests/integration/streaming_data.py and batch_support.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from arus.jobs import aggregate, consumer
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from arus.config import Config, KafkaConfig
from arus.io.producer import make_producer
from arus.pyengine.consumer import ConsumerSettings
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import Record, SendLoop

# The columns spark.read.format("kafka") gives, before any parsing.
RAW_KAFKA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)


def kafka_rows(spark: SparkSession, values: Sequence[bytes | None], at: datetime) -> DataFrame:
    """Raw Kafka rows of `values`: key b"k", topic "in", partition 0, offsets 0, 1, ..., timestamp `at`."""
    return spark.createDataFrame([(b"k", v, "in", 0, i, at) for i, v in enumerate(values)], RAW_KAFKA)


def produce(config: Config, records: Sequence[Record], kafka: KafkaConfig | None = None) -> None:
    """Send every record through arus's own send loop and check each one was acknowledged."""
    producer = make_producer(kafka or config.kafka, config.producer)
    try:
        summary = SendLoop(producer, progress=None).run(records)
    finally:
        producer.close(timeout=10)
    assert (summary.acked, summary.failed) == (len(records), 0), summary.line()


def topic_records(config: Config, topic: str) -> list[Any]:
    """Every record of `topic` from the start up to its end offsets at the time of the call."""
    reader = KafkaConsumer(enable_auto_commit=False, **config.kafka.client_kwargs())
    try:
        deadline = time.monotonic() + 30
        # A topic a job has just created may not be in this client's metadata yet.
        while not (ids := reader.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no metadata for {topic}"
            time.sleep(0.2)
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        reader.assign(partitions)
        reader.seek_to_beginning()
        end = reader.end_offsets(partitions)
        records: list[Any] = []
        while any(reader.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in reader.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        reader.close()


def job_args(topics: dict[str, str], folder: Path, *extra: str) -> list[str]:
    """The main job's arguments for topics {"in", "out", "dead"}, with its tables under `folder`."""
    return [
        "--input-topic", topics["in"],
        "--output-topic", topics["out"],
        "--deadletter-topic", topics["dead"],
        "--table", str(folder / "gold"),
        "--deadletter-table", str(folder / "deadletter"),
        "--late-table", str(folder / "late"),
        "--checkpoint", str(folder / "checkpoint"),
        *extra,
    ]  # fmt: skip


def run_aggregate(topics: dict[str, str], folder: Path, *extra: str) -> None:
    """The main job in this process, to the end of its input (its default availableNow trigger)."""
    assert aggregate.main(job_args(topics, folder, *extra)) == 0


def aggregated_readings(
    config: Config, new_topic: Callable[..., str], folder: Path, devices: int, seed: int, start: datetime
) -> tuple[dict[str, str], Iterator[dict[str, object]], list[dict[str, object]]]:
    """New topics {"in", "out"} of 3 partitions and "dead"; the first 60 readings of a seeded fleet
    (one every 10 s per device from `start`) sent to "in" and aggregated by the main job with a
    2-minute watermark, tables under `folder`. The topics, the readings still to come, the 60."""
    topics = {"in": new_topic("in", 3), "out": new_topic("out", 3), "dead": new_topic("dead")}
    events = readings(fleet(devices, seed=seed), start, 10.0, seed=seed)
    first = [next(events) for _ in range(60)]
    produce(config, [to_record(e, topics["in"]) for e in first])
    run_aggregate(topics, folder, "--watermark", "2 minutes")
    return topics, events, first


def consumer_settings(config: Config, topics: dict[str, str], group: str, *extra: str) -> ConsumerSettings:
    """The kafka-python consumer's settings for topics {"in", "out", "dead", "late"} in `group`,
    without its live view, as `arus consume` would parse them."""
    argv = [
        "--input-topic", topics["in"],
        "--output-topic", topics["out"],
        "--deadletter-topic", topics["dead"],
        "--late-topic", topics["late"],
        "--group-id", group,
        "--no-view",
        *extra,
    ]  # fmt: skip
    return consumer.settings_from(consumer.parse_args(argv), config)


def gold_oracle(events: Sequence[dict[str, object]], keys: Sequence[str] = ("device_id",)) -> pd.DataFrame:
    """Tumbling 1-minute aggregates computed with pandas alone, after dropping repeated event ids."""
    df = pd.DataFrame(list(events)).drop_duplicates("event_id")
    df["window_start"] = pd.to_datetime(df["event_time"], utc=True).dt.floor("1min")
    groups = df.groupby([*keys, "window_start"])["value"]
    out = groups.agg(
        count="count",
        value_mean="mean",
        value_min="min",
        value_max="max",
        value_stddev=lambda v: v.std(ddof=1),
        # Spark's percentile_approx on few values: the smallest value with at least p of them <= it.
        value_p50=lambda v: np.percentile(v, 50, method="inverted_cdf"),
        value_p95=lambda v: np.percentile(v, 95, method="inverted_cdf"),
    )
    return out.reset_index().sort_values([*keys, "window_start"]).reset_index(drop=True)


def gold_frame(
    table: pd.DataFrame, expected: pd.DataFrame, keys: Sequence[str] = ("device_id",)
) -> pd.DataFrame:
    """A gold Delta table as read into pandas, in the oracle's order and columns."""
    table = table.copy()
    table["window_start"] = pd.to_datetime(table["window_start"], utc=True)
    return table.sort_values([*keys, "window_start"]).reset_index(drop=True)[expected.columns]
