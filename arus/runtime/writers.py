"""The per-micro-batch writers of the streaming queries (for foreachBatch), each given its sinks.

    write_aggregates(kafka, gold, topic, keys, late, parse, dead)  # gold MERGE + topic, dead letters, late
    write_bronze(kafka, bronze, dead, checkpoint)                 # records as received + dead letters
    write_clean(kafka, silver, topic, key, id_field, late, parse) # silver + the clean topic once, late
    write_alerts(kafka, rules, table, silver, ...)                # new alerts into Delta, the topic once

A sink is a plain spec (a DeltaSink, a DeadLetterSink, a LateOutput, a topic name), so a query's
writer never reads another query's settings. Delta is written once per micro-batch however often
Spark runs it: appends and MERGEs carry (<sink app>-<query id>, batch id), the query id read from
the query's checkpoint (arus.io.checkpoints): appends in the commit's userMetadata (arus.io.marks),
MERGEs as Delta's (txnAppId, txnVersion). Kafka output is
at-least-once with deterministic keys; the clean and alerts topics are published once per batch
(write_kafka_once) even when it is replayed. Kill points (arus.runtime.guards) sit after each
write, where the fault tests stop the process (docs/reliability.md lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from arus.config import AlertsConfig, KafkaConfig
from arus.core.alerts import Check, batch_checks, find_alerts
from arus.core.rules import check_deadletter_ratio
from arus.core.transforms import (
    KAFKA_COLUMNS,
    SOURCE,
    aggregate_key_column,
    dead_letter_records,
    dead_letters,
    to_kafka_records,
)
from arus.grammar import duration_us
from arus.io.checkpoints import StreamBatch, query_id, read_stream_batch
from arus.io.lake import is_table
from arus.io.sinks import StateWarmer, append_to_delta, ensure_table, merge_into_delta, write_kafka
from arus.runtime.guards import kill_point
from arus.runtime.microbatch import (
    InputCounts,
    LateOutput,
    count_input,
    executed_counts,
    executed_drops,
    late_rule,
    read_batch_input,
    txn_app_id,
    write_kafka_once,
    write_late_events,
)
from arus.runtime.progress import Tally

Writer = Callable[[DataFrame, int], None]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeltaSink:
    """A Delta table a query writes once per micro-batch; `app` starts the transaction app id."""

    path: str
    app: str

    def app_id(self, checkpoint: str) -> str:
        return txn_app_id(self.app, checkpoint)


@dataclass(frozen=True)
class DeadLetterSink:
    """Where records that fail to parse go, and the circuit breaker's limit on their share."""

    table: DeltaSink
    topic: str
    max_ratio: float  # a micro-batch with a larger bad share stops the query
    min_records: int  # ... when it has at least this many records


def write_aggregates(
    kafka: KafkaConfig,
    gold: DeltaSink,
    topic: str,
    keys: Sequence[str],
    late: LateOutput,
    parse: Callable[[DataFrame], DataFrame],
    dead: DeadLetterSink | None = None,
    tally: Tally | None = None,
    append: bool = False,
) -> Writer:
    """Upsert the aggregates into `gold` by (keys, window_start), publish them to `topic`, then the
    batch's dead letters (given `dead`) and late events. `late` names the query and its checkpoint.
    The upsert reads only the gold rows from the batch's earliest window on, so its cost follows the
    batch, not the table; a batch without aggregates writes none. With `append` (a query in append
    mode, whose batches hold each window once, final), the aggregates are appended instead of
    merged and published once even when the batch is replayed. After a batch that merged, the gold
    table's new state is built in the background (StateWarmer), ready for the next batch's merge.

    The query's own output holds only aggregates. Its input's records and dead letters are counted
    as the batch runs (observe_input in the query) and its late events weighed by what the stateful
    operators dropped (input_counts); the circuit breaker weighs them before anything of the batch
    is written. Only a batch with dead letters or late events reads its Kafka input again (its
    offsets are in the checkpoint), parsed with `parse`, the query's own parsing: a clean batch
    reads and parses its input once.
    """
    merge_keys = [*keys, "window_start"]
    warmer = StateWarmer(gold.path)

    def write(batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        read = read_stream_batch(late.checkpoint, batch_id)
        batch.persist()
        try:
            # The first action runs the batch: its state stores, and the input counts it observes.
            # The batch's earliest window bounds the gold rows the merge reads; None: no rows.
            since = first_window(batch)
            counts, checked = input_counts(spark, kafka, read, late, parse, dead is not None)
            bad = (
                judge_dead_letters(checked, counts, dead, batch_id, tally, late.stage)
                if dead is not None
                else None
            )
            app_id = gold.app_id(late.checkpoint)
            if since is None:
                ensure_table(batch, gold.path)
            elif append:
                append_to_delta(batch, gold.path, app_id, batch_id)
            else:
                merge_into_delta(batch, gold.path, merge_keys, app_id, batch_id, since=since)
            kill_point("after-delta", batch_id)
            records = to_kafka_records(batch, aggregate_key_column(keys))
            if since is not None and append:
                write_kafka_once(records, kafka, topic, f"{late.checkpoint}/published", batch_id, None)
            elif since is not None:
                write_kafka(records, kafka, topic)
            kill_point("after-kafka", batch_id)
        finally:
            batch.unpersist()
        if dead is not None:
            publish_dead_letters(kafka, dead, bad, batch_id, late.checkpoint)
        count = write_late_events(spark, kafka, late, parse, batch_id, checked, counts.late)
        if tally is not None:
            tally.set(late.stage, batch_id, late=count)
        if since is not None and not append:
            warmer.warm(spark)

    return write


def input_counts(
    spark: SparkSession,
    kafka: KafkaConfig,
    read: StreamBatch,
    late: LateOutput,
    parse: Callable[[DataFrame], DataFrame],
    dead: bool,
) -> tuple[InputCounts, DataFrame | None]:
    """A run batch's input counts (records, dead letters, late events) and, when it has dead letters
    (counted given `dead`) or late events (once a watermark is in force) to write, its input
    `read` again and parsed with `parse`. The counts are the batch's own (executed_counts) where
    Spark shows them, so a batch with nothing more to write reads its input once; else they come
    from one pass over the re-read input."""
    late_rows = late_rule(late, read)
    if read.empty or (not dead and late_rows is None):
        return InputCounts(), None
    counts = executed_counts(late.checkpoint)
    if counts is None:
        checked = parse(read_batch_input(spark, kafka, read))
        return count_input(checked, late_rows), checked
    if (dead and counts.dead) or (late_rows is not None and counts.late):
        return counts, parse(read_batch_input(spark, kafka, read))
    return counts, None


def first_window(aggregates: DataFrame) -> tuple[str, datetime] | None:
    """("window_start", the earliest window start in `aggregates`, in UTC), or None without rows."""
    micros = aggregates.agg(F.unix_micros(F.min("window_start"))).first()[0]  # type: ignore[index]
    if micros is None:
        return None
    return "window_start", EPOCH + timedelta(microseconds=micros)


def write_bronze(
    kafka: KafkaConfig, bronze: DeltaSink, dead: DeadLetterSink, checkpoint: str, tally: Tally, query: str
) -> Writer:
    """The records of a batch as received into `bronze`, and its dead letters.

    Its input is parse_events rows, so the bad records among them are the dead letters.
    """

    def write(checked: DataFrame, batch_id: int) -> None:
        checked.persist()
        try:
            # topic, partition, offset, timestamp, key, value: as received, bytes untouched
            records = checked.select(f"{SOURCE}.*").select(*KAFKA_COLUMNS)
            if not records.isEmpty():
                append_to_delta(records, bronze.path, bronze.app_id(checkpoint), batch_id)
            kill_point("bronze-after-delta", batch_id)
            bad = judge_dead_letters(checked, count_input(checked), dead, batch_id, tally, query)
            publish_dead_letters(kafka, dead, bad, batch_id, checkpoint)
        finally:
            checked.unpersist()

    return write


def write_clean(
    kafka: KafkaConfig,
    silver: DeltaSink,
    topic: str,
    key: Column,
    id_field: str,
    late: LateOutput,
    parse: Callable[[DataFrame], DataFrame],
    tally: Tally,
) -> Writer:
    """Clean readings appended to `silver`, then published to `topic` keyed by `key`, then the late
    events. A replayed batch leaves out the readings (by `id_field`) an earlier attempt published."""
    marks = f"{late.checkpoint}/published"

    def write(readings: DataFrame, batch_id: int) -> None:
        readings.persist()
        try:
            if readings.count():
                append_to_delta(readings, silver.path, silver.app_id(late.checkpoint), batch_id)
                kill_point("clean-after-delta", batch_id)
                records = to_kafka_records(readings, key)
                write_kafka_once(records, kafka, topic, marks, batch_id, id_field)
                kill_point("clean-after-kafka", batch_id)
        finally:
            readings.unpersist()
        # What the batch dropped as late, known from its run (the count above ran it): a batch
        # with nothing late reads its input only once.
        dropped = executed_drops(late.checkpoint)
        count = write_late_events(readings.sparkSession, kafka, late, parse, batch_id, count=dropped)
        tally.set(late.stage, batch_id, late=count)

    return write


def judge_dead_letters(
    checked: DataFrame | None,
    counts: InputCounts,
    dead: DeadLetterSink,
    batch_id: int,
    tally: Tally | None,
    query: str,
) -> DataFrame | None:
    """The batch's dead letters (None when it has none), tallied; too many trip the breaker,
    weighed against every record the batch read."""
    if tally is not None:
        tally.set(query, batch_id, dead=counts.dead)
    check_deadletter_ratio(counts.dead, counts.total, dead.max_ratio, dead.min_records, batch_id)
    # topic, partition, offset, timestamp, key, value, error
    return dead_letters(checked) if checked is not None and counts.dead else None


def publish_dead_letters(
    kafka: KafkaConfig, dead: DeadLetterSink, bad: DataFrame | None, batch_id: int, checkpoint: str
) -> None:
    """Dead letters: appended to Delta once per batch; to Kafka with the original bytes as value.
    A batch without any (`bad` None) writes nothing; its kill point is reached all the same."""
    if bad is None:
        kill_point("deadletter-after-delta", batch_id)
        return
    # Two writes of records that may be read from Kafka again: read once.
    bad.persist()
    try:
        append_to_delta(bad, dead.table.path, dead.table.app_id(checkpoint), batch_id)
        kill_point("deadletter-after-delta", batch_id)
        write_kafka(dead_letter_records(bad), kafka, dead.topic)
    finally:
        bad.unpersist()


class LatestReadings:
    """Each device's latest reading time, kept by an alerts query from one micro-batch to the next.

    Read from silver at the query's first batch in this process (all silver holds by then, as after
    a restart), then moved on by each batch's own readings: a batch costs a pass over its readings,
    not over silver, however long the pipeline has run. A device's silence is judged against the
    readings the query has read: one the clean stage has already put in silver counts once this
    query reads it too.
    """

    def __init__(self, key: str, time_field: str) -> None:
        self.key, self.time_field = key, time_field
        # collect() gives naive local datetimes, which createDataFrame reads back as such.
        self.times: dict[object, datetime] = {}
        self.started = False

    def advance(self, spark: SparkSession, silver: str, batch: DataFrame) -> tuple[datetime, datetime] | None:
        """Take in `batch`'s readings; its first and last reading time, None when it has none."""
        at = F.col(self.time_field)
        if not self.started:
            self.started = True
            if is_table(silver):
                table = spark.read.format("delta").load(silver)
                self._take(table.groupBy(self.key).agg(F.max(at)).collect())
        # One pass gives the batch's span and each of its devices' latest reading.
        spans = (
            batch.groupBy(self.key)
            .agg(F.min(at).alias("first"), F.max(at).alias("last"))
            .where(F.col("last").isNotNull())
            .collect()
        )
        if not spans:
            return None
        self._take([(row[self.key], row["last"]) for row in spans])
        return min(row["first"] for row in spans), max(row["last"] for row in spans)

    def _take(self, rows: Sequence[tuple[object, datetime | None]] | list[Row]) -> None:
        for device, at in rows:
            if at is not None and (device not in self.times or at > self.times[device]):
                self.times[device] = at

    def latest(self, spark: SparkSession, schema: StructType) -> DataFrame:
        """<key>, <time_field>: every device's latest reading time, with the types of `schema`."""
        fields = StructType([schema[self.key], schema[self.time_field]])
        return spark.createDataFrame(list(self.times.items()), fields)

    def newest(self) -> datetime | None:
        """The latest reading time of the whole fleet (the stream's clock), timezone-aware."""
        if not self.times:
            return None
        return max(self.times.values()).astimezone(UTC)


def write_alerts(
    kafka: KafkaConfig,
    rules: AlertsConfig,
    table: str,
    silver: str,
    id_field: str,
    time_field: str,
    checkpoint: str,
    tally: Tally | None = None,
    query: str = "alerts",
) -> Writer:
    """Find a batch's alerts (rules over it and its devices' earlier readings in the `silver`
    table), insert the new ones into `table` by alert_id, publish what this batch inserted to
    [alerts] topic (`rules.topic`) once.

    `silver` keeps growing while the pipeline runs, so a replayed batch could find more alerts than
    its first attempt: the insert carries the batch's Delta transaction id, and a replay skips it
    and publishes what the first attempt stored, read back from `table`. A batch whose MERGE
    inserted none or all of what it found publishes that without the read, and a batch that finds
    nothing runs no MERGE, unless it is the query's first (the only one that can be a replay, which
    must publish what its first attempt stored whatever it finds now). Silence is judged on
    each device's latest reading (LatestReadings): silver's at the query's first batch, then the
    batches' own.
    """
    key = rules.key
    marks = f"{checkpoint}/published"
    lookback_s = duration_us(rules.lookback) / 1_000_000
    # The rules' columns by the readings' columns: built once, not for every batch.
    checks: dict[tuple[str, ...], list[Check]] = {}
    fleet = LatestReadings(key, time_field)
    # Spark replays only the batch in hand when a query restarts, so only this writer's first batch
    # may be one the table already holds.
    may_replay = True

    def write(batch: DataFrame, batch_id: int) -> None:
        nonlocal may_replay
        spark = batch.sparkSession
        cached: list[DataFrame] = []

        def cache(df: DataFrame) -> DataFrame:
            cached.append(df.persist())
            return df

        try:
            batch = cache(batch.dropDuplicates([id_field]))
            span = fleet.advance(spark, silver, batch)
            if span is None:
                return
            first, last = span
            if is_table(silver):
                history_table = spark.read.format("delta").load(silver)
                since = F.lit(first) - F.make_dt_interval(secs=F.lit(lookback_s))
                devices = batch.select(key).distinct()
                history = history_table.where(F.col(time_field) >= since).join(devices, key, "left_semi")
            else:
                history = batch.limit(0)
            # Every rule scans these, so each is computed once.
            readings = cache(history.unionByName(batch, allowMissingColumns=True).dropDuplicates([id_field]))
            latest = fleet.latest(spark, batch.schema)
            clock = fleet.newest()
            batch_ids = batch.select(id_field)
            columns = tuple(readings.columns)
            if columns not in checks:
                checks[columns] = batch_checks(columns, rules, id_field=id_field, time_field=time_field)
            found = find_alerts(
                readings,
                batch_ids,
                latest,
                rules,
                clock,
                id_field=id_field,
                time_field=time_field,
                until=last,
                checks=checks[columns],
            )
            detected = f"{query_id(checkpoint)}/{batch_id}"
            found = cache(found.withColumn("detected_in", F.lit(detected)))
            # The query id is in its checkpoint once the query has started.
            app_id = txn_app_id(query, checkpoint)
            total = found.count()
            inserted: int | None = 0
            if total or may_replay:
                inserted = merge_into_delta(found, table, ["alert_id"], app_id, batch_id, update=False)
            may_replay = False
            kill_point("alerts-after-delta", batch_id)
            if inserted is not None and inserted in (0, total):
                # The MERGE inserted none, or every one of them: what it stored is `found`.
                new, count = found.drop("detected_in"), inserted
            else:
                # What this batch inserted, again after a replay: a crash before publishing loses
                # nothing. Also when some of the alerts were in the table before.
                stored = spark.read.format("delta").load(table)
                new = cache(stored.where(F.col("detected_in") == detected).drop("detected_in"))
                count = new.count()
            if count:
                records = to_kafka_records(new, F.col("alert_id"))
                write_kafka_once(records, kafka, rules.topic, marks, batch_id, "alert_id")
                kill_point("alerts-after-kafka", batch_id)
            if tally is not None:
                tally.set(query, batch_id, alerts=count)
        finally:
            for df in cached:
                df.unpersist()

    return write
