"""Shared by the batch and notebook tests: seeded IoT events, sending them, a streaming run, bronze.

Events are generated here in plain Python (independently of the producers) so the tests can compute
what to expect from what was sent.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from arus.jobs import aggregate
from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession

from arus.config import Config, TopicConfig
from arus.core.transforms import KAFKA_COLUMNS
from arus.ops.topics import ensure_topics

KINDS = {"temperature": ("C", 22.0, 4.0), "humidity": ("%", 50.0, 10.0), "power": ("W", 250.0, 80.0)}
SITES = ("jakarta", "bandung")
BAD_RECORDS = [
    b"{not json",
    b'{"event_id":"bad-1","device_id":"d","value":"hot","event_time":"2026-03-01T12:00:00Z"}',
]


def events(
    devices: int, start: datetime, count: int, interval_s: float, seed: int
) -> list[dict[str, object]]:
    """`count` readings per device, every `interval_s` of event time from `start`, in time order."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    out = []
    for seq in range(count):
        at = start + timedelta(seconds=seq * interval_s)
        for d in range(devices):
            kind = kinds[d % len(kinds)]
            unit, mid, span = KINDS[kind]
            value = mid + span * math.sin(seq / 9 + d) + rng.gauss(0, span / 10)
            out.append(
                {
                    "event_id": str(
                        uuid.uuid5(uuid.NAMESPACE_URL, f"test/{seed}/{d}/{seq}/{at.isoformat()}")
                    ),
                    "device_id": f"dev-{d:02d}",
                    "kind": kind,
                    "site": SITES[d % len(SITES)],
                    "unit": unit,
                    "value": round(value, 3),
                    "battery": round(100 - seq * 0.05, 2),
                    "seq": seq,
                    "event_time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                }
            )
    return out


def encode(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def create_topic(config: Config, prefix: str, partitions: int) -> str:
    name = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
    ensure_topics(config, topics=(TopicConfig(name, partitions, -1, "delete"),))
    return name


def send(config: Config, topic: str, records: list[tuple[str | None, bytes]]) -> None:
    producer = KafkaProducer(acks="all", **config.kafka.client_kwargs())
    try:
        futures = [producer.send(topic, key=k.encode() if k else None, value=v) for k, v in records]
        producer.flush(30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(5)


def send_events(config: Config, topic: str, batch: list[dict[str, object]]) -> None:
    send(config, topic, [(str(e["device_id"]), encode(e)) for e in batch])


@dataclass(frozen=True)
class StreamRun:
    topic: str
    gold: Path
    deadletter: Path
    checkpoint: Path  # the aggregates query's own checkpoint (offsets/, commits/)


def stream_run(
    config: Config, topic: str, root: Path, gold: Path | None = None, dead: Path | None = None
) -> StreamRun:
    """Run the main streaming job (availableNow) over `topic`; its lake is root/lake."""
    run = StreamRun(
        topic, gold or root / "gold", dead or root / "deadletter", root / "checkpoint" / "aggregates"
    )
    outputs = tuple(TopicConfig(f"{topic}.{suffix}", 1, -1, "delete") for suffix in ("out", "dead", "late"))
    ensure_topics(config, topics=outputs)
    with environment(ARUS_LAKE_DIR=str(root / "lake"), ARUS_CHECKPOINT_DIR=str(root / "checkpoints")):
        code = aggregate.main(
            [
                "--input-topic", topic,
                "--output-topic", f"{topic}.out",
                "--deadletter-topic", f"{topic}.dead",
                "--late-topic", f"{topic}.late",
                "--table", str(run.gold),
                "--deadletter-table", str(run.deadletter),
                "--checkpoint", str(root / "checkpoint"),
            ]
        )  # fmt: skip
    assert code == 0
    return run


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (jobs load their config, and its overrides, anew)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def land_bronze(spark: SparkSession, config: Config, topic: str, path: Path) -> DataFrame:
    """Bronze exactly as defined: the topic's Kafka rows as received, into a Delta table."""
    rows = (
        spark.read.format("kafka")
        .options(**config.kafka.spark_read_options())
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .select(*KAFKA_COLUMNS)
    )
    rows.write.format("delta").mode("overwrite").save(str(path))
    return spark.read.format("delta").load(str(path))


def delta(spark: SparkSession, path: Path | str) -> DataFrame:
    return spark.read.format("delta").load(str(path))


def version(spark: SparkSession, path: Path | str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(path)).history(1).collect()[0]["version"])
