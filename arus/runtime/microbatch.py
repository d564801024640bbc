"""A micro-batch's own input beside its output, and writes safe to replay.

    stream = with_batch_input(output, checked, late)   # the query's output and its parsed input records
    output, checked = split_batch_input(batch)          # ... apart again, inside foreachBatch
    write_kafka_once(records, ..., marks)               # a replayed batch does not publish its records twice
    write_late_events(kafka, out, checked, batch_id)    # what a batch dropped as late, to Delta + Kafka

A query's foreachBatch sees only its own output, so the input rows its stateful operators dropped
as late are gone; the query therefore carries its parsed input records beside its output, and
arus.core.late finds the late ones among them. The watermark they are judged against comes from
the query's checkpoint through arus.io.checkpoints (read_stream_batch), which is logged before
the batch runs, so it is there inside its foreachBatch and the same when Spark runs the batch again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.config import KafkaConfig
from arus.core.late import LATE_COLUMNS, late_events, late_records
from arus.core.transforms import ERROR, SOURCE
from arus.io.checkpoints import checkpoint_path, query_id, read_stream_batch
from arus.io.sinks import append_to_delta, read_kafka_batch, write_kafka
from arus.runtime.guards import kill_point

# A query's output row holds one of these: a row of what it computes, or one of its input records.
OUTPUT, INPUT = "_output", "_input"


def with_batch_input(output: DataFrame, checked: DataFrame, late: LateOutput) -> DataFrame:
    """`output` (a stream computed from `checked`) and `checked`'s records themselves, in one stream.

    # _output (output's columns) | _input (_source, <late.id_field>, <late.event_time>, _error)
    foreachBatch sees only its query's output, and the stateful operators of `output` drop late
    events without a trace; carrying each input record beside the output gives the writer the
    batch's dead letters and late events from the query's own read and parse (split_batch_input).
    """
    fields = [f for f in (late.id_field, late.event_time) if f]
    records = checked.select(SOURCE, *fields, ERROR)
    return output.select(
        F.struct(*[F.col(f"`{c}`") for c in output.columns]).alias(OUTPUT),
        F.lit(None).cast(T.StructType(records.schema.fields)).alias(INPUT),
    ).unionByName(
        records.select(
            F.lit(None).cast(T.StructType(output.schema.fields)).alias(OUTPUT),
            F.struct(*[F.col(f"`{c}`") for c in records.columns]).alias(INPUT),
        )
    )


def split_batch_input(batch: DataFrame) -> tuple[DataFrame, DataFrame]:
    """A with_batch_input micro-batch -> (its output rows, its input records); persist `batch` first."""
    return (
        batch.where(F.col(OUTPUT).isNotNull()).select(f"{OUTPUT}.*"),
        batch.where(F.col(INPUT).isNotNull()).select(f"{INPUT}.*"),
    )


def end_offsets(kafka: KafkaConfig, topic: str) -> dict[str, int]:
    """The next offset of each partition of `topic`."""
    consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}")
        return {str(tp.partition): offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def write_kafka_once(
    records: DataFrame, kafka: KafkaConfig, topic: str, marks: str | Path, batch_id: int, id_field: str | None
) -> None:
    """Publish a micro-batch's records (key, value JSON with `id_field`) once, even when replayed;
    with `id_field` None, the record key is the id (a batch publishes each key once).

    Before the first attempt the topic's end offsets are noted under `marks`; a replay of the batch
    reads what the earlier attempt already published after them and sends only the rest. The
    query must be the topic's only writer. Records a killed attempt left in flight in a producer
    can still arrive late, so readers deduplicate by id all the same (Kafka output stays
    at-least-once; this keeps replays from doubling it).
    """
    folder = checkpoint_path(marks)
    folder.mkdir(parents=True, exist_ok=True)
    mark = folder / f"{batch_id}.json"
    if mark.exists():
        before = {topic: json.loads(mark.read_text())}  # Spark's offsets JSON
        spark = records.sparkSession
        published = (
            read_kafka_batch(spark, kafka, topic, json.dumps(before), "latest")
            .select(record_id(id_field).alias("_id"))
            .distinct()
        )
        records = records.join(published, record_id(id_field) == F.col("_id"), "left_anti")
    else:
        partial = folder / f".{batch_id}.{uuid.uuid4().hex}"
        partial.write_text(json.dumps(end_offsets(kafka, topic)))
        partial.rename(mark)
        for old in folder.glob("*.json"):
            if old.stem.isdigit() and int(old.stem) < batch_id - 100:
                old.unlink(missing_ok=True)
    write_kafka(records, kafka, topic)


def record_id(id_field: str | None) -> Column:
    """What identifies a Kafka record: its value's `id_field`, or its key given None."""
    if id_field is None:
        return F.col("key").cast("string")
    return F.get_json_object(F.col("value").cast("string"), f"$.{id_field}")


@dataclass(frozen=True)
class LateOutput:
    """Where a stateful query's late events go, and the rule that found them (see arus.core.late)."""

    stage: str  # the query's name, recorded with each late event
    checkpoint: str  # the query's checkpoint folder
    table_path: str
    topic: str
    event_time: str
    id_field: str = ""
    window: str | None = None  # set when no deduplication precedes the window aggregation
    slide: str | None = None


def write_late_events(kafka: KafkaConfig, out: LateOutput, checked: DataFrame, batch_id: int) -> int:
    """Find what batch `batch_id` dropped as late, append it to Delta once and publish it; the count.

    `checked` is the batch's input as the query parsed it (split_batch_input), so lateness is judged
    on exactly the events the query saw. Nothing is written when nothing was late.
    # late table: topic, partition, offset, timestamp, key, value, event_id, event_time, watermark,
    #             stage, batch_id
    """
    batch = read_stream_batch(out.checkpoint, batch_id)
    if not batch.late_watermark_ms or batch.empty:
        return 0
    late = late_events(
        checked,
        out.event_time,
        batch.late_watermark_ms,
        out.id_field,
        out.window,
        out.slide,
    ).select(*LATE_COLUMNS, F.lit(out.stage).alias("stage"), F.lit(batch_id).cast("long").alias("batch_id"))
    late.persist()
    try:
        count = late.count()
        if count:
            append_to_delta(late, out.table_path, txn_app_id(f"{out.stage}-late", out.checkpoint), batch_id)
            kill_point("late-after-delta", batch_id)
            write_kafka(late_records(late), kafka, out.topic)
        return count
    finally:
        late.unpersist()


def txn_app_id(name: str, checkpoint: str | Path) -> str:
    """A Delta txnAppId for one query's writes to one table: `name` and the query's id."""
    return f"{name}-{query_id(checkpoint)}"
