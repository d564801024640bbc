"""What a micro-batch of a Kafka-reading query read, from its checkpoint; and writes safe to replay.

    read_batch_input(spark, kafka, batch)     # exactly the Kafka records a batch read, again
    write_kafka_once(records, ..., marks)     # a replayed batch does not publish its records twice
    write_late_events(spark, kafka, out, ...) # what a batch dropped behind the watermark, to Delta + Kafka
    late_rule(out, batch)                     # ... and the condition that counts it in another pass
    observe_input(checked); executed_counts(checkpoint)  # counts of the batch as it ran
    executed_drops(checkpoint)                 # ... what its stateful operators dropped as late

A query's foreachBatch sees only its own output, so the input rows its stateful operators dropped
as late are gone; arus.core.late finds them in the re-read input. What a batch read comes from
its checkpoint through arus.io.checkpoints (read_stream_batch), which is logged before the batch
runs, so it is there inside its foreachBatch and the same when Spark runs the batch again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kafka import KafkaConsumer, TopicPartition
from py4j.java_gateway import JavaObject
from py4j.protocol import Py4JError
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from arus.config import KafkaConfig
from arus.core.late import LATE_COLUMNS, is_late, late_events, late_records
from arus.core.transforms import ERROR
from arus.io.checkpoints import StreamBatch, checkpoint_path, query_id, read_stream_batch
from arus.io.sinks import append_to_delta, read_kafka_batch, write_kafka
from arus.runtime.guards import kill_point


def read_batch_input(spark: SparkSession, kafka: KafkaConfig, batch: StreamBatch) -> DataFrame:
    """The Kafka records `batch` read.  # key, value, topic, partition, offset, timestamp, ..."""
    partitions: dict[str, list[int]] = {}
    for topic, partition in sorted(batch.end):
        partitions.setdefault(topic, []).append(partition)
    # Spark's offsets JSON: topic -> partition (a string) -> offset. A partition that appeared
    # during the batch was read from its beginning (-2: earliest).
    start = {t: {str(p): batch.start.get((t, p), -2) for p in ps} for t, ps in partitions.items()}
    end = {t: {str(p): batch.end[(t, p)] for p in ps} for t, ps in partitions.items()}
    return (
        spark.read.format("kafka")
        .options(**kafka.spark_read_options())
        .option("assign", json.dumps(partitions))
        .option("startingOffsets", json.dumps(start))
        .option("endingOffsets", json.dumps(end))
        # The stream already applied the job's fail_on_data_loss to this range; records deleted
        # since (or skipped under fail_on_data_loss = false) are simply not there to re-judge.
        .option("failOnDataLoss", "false")
        .load()
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
class InputCounts:
    """A micro-batch's input records: all of them, the dead letters and the late events.

    From executed_counts, `late` is what the stateful operators dropped behind the watermark: at
    least the late events (an event missing only a later sliding window counts too), so 0 still
    means none."""

    total: int = 0
    dead: int = 0
    late: int = 0


def count_input(checked: DataFrame | None, late: Column | None = None) -> InputCounts:
    """Count `checked` (parse_events rows; None: nothing read) in one pass: its records, the bad
    ones and, given the late_rule of its batch, the late ones."""
    if checked is None:
        return InputCounts()
    late_count = F.count_if(late) if late is not None else F.lit(0)
    row = checked.agg(F.count(F.lit(1)), F.count_if(F.col(ERROR).isNotNull()), late_count).first()
    return InputCounts(*row) if row is not None else InputCounts()


T = TypeVar("T")
OBSERVED_INPUT = "arus_input"  # the name of observe_input's metrics in the query's progress


def observe_input(checked: DataFrame) -> DataFrame:
    """`checked` (parse_events rows of a streaming read), its records and bad ones counted as each
    micro-batch runs, for executed_counts (and the progress's observedMetrics)."""
    return checked.observe(
        OBSERVED_INPUT, F.count(F.lit(1)).alias("total"), F.count_if(F.col(ERROR).isNotNull()).alias("dead")
    )


def executed_counts(checkpoint: str) -> InputCounts | None:
    """What the running micro-batch of the query at `checkpoint` counted as it ran, from inside its
    foreachBatch once an action has run the batch: its records and dead letters (observe_input)
    and the rows its stateful operators dropped behind the watermark. None when Spark does not
    show them: the caller counts in a pass over the re-read input instead.

    Spark reports these in the progress only after the batch, so they are read from the batch's
    execution (StreamExecution.lastExecution, through the JVM gateway): internal API, pinned with
    pyspark in constraints.txt; on a Spark without it this returns None.
    """
    return _from_execution(checkpoint, _counts)


def executed_drops(checkpoint: str) -> int | None:
    """The rows the running micro-batch's stateful operators dropped behind the watermark, as
    executed_counts has them (at least its late events), for a query that observes no counts."""
    return _from_execution(checkpoint, _dropped_by_watermark)


def _from_execution(checkpoint: str, read: Callable[[JavaObject], T | None]) -> T | None:
    """`read` of the running micro-batch's execution of the query at `checkpoint`; None without it."""
    # The session that started the query: foreachBatch's batch has a clone of it, whose query
    # manager holds no queries.
    session = SparkSession.getActiveSession()
    query = session.streams.get(query_id(checkpoint)) if session is not None else None
    if query is None:
        return None
    try:
        return read(query._jsq.streamingQuery().lastExecution())
    except (AttributeError, Py4JError):
        return None


def _counts(execution: JavaObject) -> InputCounts | None:
    observed = execution.observedMetrics().get(OBSERVED_INPUT)
    if not observed.isDefined():
        return None
    row = observed.get()
    return InputCounts(row.getLong(0), row.getLong(1), _dropped_by_watermark(execution))


def _dropped_by_watermark(execution: JavaObject) -> int:
    """The numRowsDroppedByWatermark metric summed over the nodes of an execution's physical plan."""
    dropped, nodes = 0, [execution.executedPlan()]
    while nodes:
        node = nodes.pop()
        metrics = node.metrics()
        if metrics.contains("numRowsDroppedByWatermark"):
            dropped += metrics.apply("numRowsDroppedByWatermark").value()
        children = node.children()
        nodes.extend(children.apply(i) for i in range(children.size()))
    return dropped


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


def late_rule(out: LateOutput, batch: StreamBatch) -> Column | None:
    """What marks a parsed record of `batch` late (arus.core.late.is_late), None when it can have
    no late event: it read nothing, or no watermark was in force yet."""
    if not batch.late_watermark_ms or batch.empty:
        return None
    return is_late(out.event_time, batch.late_watermark_ms, out.window, out.slide)


def write_late_events(
    spark: SparkSession,
    kafka: KafkaConfig,
    out: LateOutput,
    parse: Callable[[DataFrame], DataFrame],
    batch_id: int,
    checked: DataFrame | None = None,
    count: int | None = None,
) -> int:
    """Find what batch `batch_id` dropped as late, append it to Delta once and publish it; the count.

    `parse` must be the query's own parsing (Kafka rows -> parse_events rows), so the replay judges
    exactly the events the query saw; `checked`, when given, is that parse of the batch's input
    (read_batch_input), so it is not built again. `count`, when the caller already knows how many
    late events there are at most (late_rule's count in a pass it made anyway, or executed_counts),
    spares a batch without any another pass over its input. Nothing is written when nothing was late.
    # late table: topic, partition, offset, timestamp, key, value, event_id, event_time, watermark,
    #             stage, batch_id
    """
    batch = read_stream_batch(out.checkpoint, batch_id)
    if count == 0 or not batch.late_watermark_ms or batch.empty:
        return 0
    if checked is None:
        checked = parse(read_batch_input(spark, kafka, batch))
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
    """The app id of one query's writes to one table: `name` and the query's id. Its appends mark
    their commits with it (arus.io.marks), its MERGEs use it as Delta's txnAppId."""
    return f"{name}-{query_id(checkpoint)}"
