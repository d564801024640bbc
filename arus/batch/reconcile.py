"""Reconcile: compare the streaming gold table with a batch recompute over the same bronze data.

Gold is recomputed from bronze (or a Kafka range, or a file: arus.batch.sources) with the streaming
job's own stages, and every (key, window) where the two disagree is reported: missing from the
stream, extra in the stream, or a metric beyond the tolerance (counts and times exactly, floats
within a relative tolerance).

A streaming job rightly disagrees with a batch recompute in two cases, and reconciliation says
which one explains each difference:
  late    the stream dropped the event behind its watermark: from the late-events table, and from
          the query's checkpoint (each batch's offsets and watermark; see arus.io.checkpoints)
  unread  the stream has not read the record yet (it is past the last committed batch)
A difference is explained only if the stream's row equals a recompute that leaves those events out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.batch.backfill import Recompute, recompute, with_complete_windows
from arus.batch.sources import POSITION, BatchInput
from arus.core.transforms import ERROR, SOURCE, parse_events
from arus.io.checkpoints import StreamBatch, read_stream_batches
from arus.io.delta import close
from arus.io.lake import is_table

FLOAT_TYPES = (T.DoubleType, T.FloatType)


@dataclass(frozen=True)
class ReconcileSettings:
    recompute: Recompute
    source: BatchInput
    gold_path: str
    checkpoint: Path | None  # the streaming query's, when it has an offset log
    late_path: str | None
    tolerance: float


@dataclass
class Report:
    compared: int
    differences: list[dict[str, Any]]
    late_events: int
    unread_events: int
    evidence: list[str] = field(default_factory=list)

    @property
    def unexplained(self) -> list[dict[str, Any]]:
        return [d for d in self.differences if not d["explained_by"]]

    def counts(self) -> dict[str, int]:
        kinds = [d["kind"] for d in self.differences]
        return {
            "windows_compared": self.compared,
            "missing": kinds.count("missing"),
            "extra": kinds.count("extra"),
            "mismatch": kinds.count("mismatch"),
            "explained_late": sum(1 for d in self.differences if "late" in d["explained_by"]),
            "explained_unread": sum(1 for d in self.differences if "unread" in d["explained_by"]),
            "unexplained": len(self.unexplained),
            "late_events": self.late_events,
            "unread_events": self.unread_events,
        }

    def to_json(self) -> str:
        return json.dumps(
            {"counts": self.counts(), "evidence": self.evidence, "differences": self.differences},
            default=str,
            indent=2,
        )


# --- pure transforms ----------------------------------------------------------------------------------


def compare_aggregates(
    stream: DataFrame, batch: DataFrame, keys: Sequence[str], tolerance: float
) -> DataFrame:
    """Every (key, window) where the stream and the batch disagree.

    # *keys, window_start, kind (missing|extra|mismatch), columns, stream_count, batch_count
    """
    on = [*keys, "window_start"]
    metrics = [f for f in batch.schema.fields if f.name not in on]
    s = stream.select(*on, *[F.col(f.name).alias(f"s_{f.name}") for f in metrics], F.lit(True).alias("_s"))
    b = batch.select(*on, *[F.col(f.name).alias(f"b_{f.name}") for f in metrics], F.lit(True).alias("_b"))
    joined = s.join(b, on, "full_outer")
    differing = F.array_compact(F.array(*[F.when(~_same(f, tolerance), F.lit(f.name)) for f in metrics]))
    kind = (
        F.when(F.col("_s").isNull(), F.lit("missing"))
        .when(F.col("_b").isNull(), F.lit("extra"))
        .when(F.size(differing) > 0, F.lit("mismatch"))
    )
    return joined.select(
        *on,
        kind.alias("kind"),
        F.when(F.col("_s").isNotNull() & F.col("_b").isNotNull(), differing)
        .otherwise(F.array().cast("array<string>"))
        .alias("columns"),
        F.col("s_count").alias("stream_count"),
        F.col("b_count").alias("batch_count"),
    ).where(F.col("kind").isNotNull())


def _same(metric: T.StructField, tolerance: float) -> Column:
    s, b = F.col(f"s_{metric.name}"), F.col(f"b_{metric.name}")
    if isinstance(metric.dataType, FLOAT_TYPES):
        return close(s, b, tolerance)
    return s.eqNullSafe(b)


def with_stream_fate(events: DataFrame, batches: DataFrame, event_time: str) -> DataFrame:
    """What the stream did with each event: on time, late (behind the watermark), or unread.

    # topic, partition, offset, <event_time>, fate
    `batches`: topic, partition, lo (inclusive, null: unknown), hi (exclusive), late_watermark.
    """
    e, b = events.alias("e"), F.broadcast(batches).alias("b")
    read_by = (
        (F.col("e.topic") == F.col("b.topic"))
        & (F.col("e.partition") == F.col("b.partition"))
        & (F.col("b.lo").isNull() | (F.col("e.offset") >= F.col("b.lo")))
        & (F.col("e.offset") < F.col("b.hi"))
    )
    fate = (
        F.when(F.col("b.hi").isNull(), F.lit("unread"))
        .when(F.col(f"e.{event_time}") <= F.col("b.late_watermark"), F.lit("late"))
        .otherwise(F.lit("on time"))
    )
    return e.join(b, read_by, "left").select(*[F.col(f"e.{c}") for c in events.columns], fate.alias("fate"))


# --- read ---------------------------------------------------------------------------------------------


def read_batches(spark: SparkSession, batches: list[StreamBatch]) -> DataFrame:
    """The committed batches as offset ranges.  # topic, partition, lo, hi, late_watermark"""
    rows = []
    for batch in batches:
        late = None
        if batch.late_watermark_ms is not None:
            late = datetime.fromtimestamp(batch.late_watermark_ms / 1000, tz=UTC)
        for position, hi in batch.end.items():
            lo = batch.start.get(position, 0) if batch.start else None
            rows.append((position[0], position[1], lo, hi, late))
    schema = "topic STRING, partition INT, lo LONG, hi LONG, late_watermark TIMESTAMP"
    return spark.createDataFrame(rows, schema)


def read_late_positions(spark: SparkSession, late_path: str, events: DataFrame, id_field: str) -> DataFrame:
    """Positions in bronze of the events the late-events table holds.  # topic, partition, offset

    A late event read from bronze's own topic is matched by its position (a resent copy of an
    on-time event is a different record). One that a later stage dropped, after reading it from
    an intermediate topic, is matched by its event id.
    """
    late = spark.read.format("delta").load(late_path)
    has_position = set(POSITION) <= set(late.columns)
    has_id = bool(id_field) and id_field in late.columns
    if not has_position and not has_id:
        raise ValueError(f"{late_path}: a late-events table needs {', '.join(POSITION)} or {id_field!r}")
    if not has_position:
        return events.join(late.select(id_field).distinct(), id_field, "left_semi").select(*POSITION)
    topics = events.select("topic").distinct()
    here = late.join(topics, "topic", "left_semi").select(*POSITION)
    if not has_id:
        return here.distinct()
    elsewhere = late.join(topics, "topic", "left_anti").select(id_field).distinct()
    by_id = events.join(elsewhere, id_field, "left_semi").select(*POSITION)
    return here.unionByName(by_id).distinct()


# --- the comparison -------------------------------------------------------------------------------------


def reconcile(
    spark: SparkSession,
    stream_gold: DataFrame,
    bronze: DataFrame,
    schema: T.StructType,
    settings: ReconcileSettings,
) -> Report:
    plan = settings.recompute
    raw, job = plan.stream, plan.job
    keys = list(job.keys)
    on = [*keys, "window_start"]
    evidence = []

    bronze = bronze.persist()
    parsed = parse_events(bronze, schema).where(F.col(ERROR).isNull())
    id_cols = [raw.id_field] if raw.id_field else []
    events = parsed.select(
        *[F.col(f"{SOURCE}.{c}").alias(c) for c in POSITION], raw.event_time_field, *id_cols
    )

    fates = events.withColumn("fate", F.lit("on time"))
    if settings.checkpoint is not None:
        batches = read_stream_batches(settings.checkpoint)
        read = {topic for batch in batches for topic, _ in batch.end}
        held = {r["topic"] for r in events.select("topic").distinct().collect()}
        if held <= read:
            fates = with_stream_fate(events, read_batches(spark, batches), raw.event_time_field)
            evidence.append(f"checkpoint {settings.checkpoint}: {len(batches)} committed batches")
        else:
            # Offsets of another topic (a later stage's input) say nothing about bronze's records.
            reads = f"it reads {', '.join(sorted(read))}, bronze holds {', '.join(sorted(held))}"
            evidence.append(f"checkpoint {settings.checkpoint} not used: {reads}")
    if settings.late_path and is_table(settings.late_path):
        late = read_late_positions(spark, settings.late_path, events, raw.id_field).withColumn(
            "_late", F.lit(1)
        )
        fates = fates.join(late, POSITION, "left").select(
            *events.columns,
            F.when(F.col("_late").isNotNull(), F.lit("late")).otherwise(F.col("fate")).alias("fate"),
        )
        evidence.append(f"late-events table {settings.late_path}")
    if len(evidence) == sum(1 for e in evidence if " not used: " in e):
        evidence.append("none usable: no difference can be explained")
    excluded = fates.where(F.col("fate") != "on time").select(*POSITION, "fate").persist()
    try:
        fate_counts = {
            r["fate"]: r["n"] for r in excluded.groupBy("fate").agg(F.count("*").alias("n")).collect()
        }

        def gold_of(rows: DataFrame) -> DataFrame:
            _, gold, _ = recompute(rows, schema, plan)
            return gold

        stream = with_complete_windows(stream_gold, plan.since, plan.until)
        batch = gold_of(bronze).persist()
        as_streamed = gold_of(bronze.join(excluded, POSITION, "left_anti"))
        differences = compare_aggregates(stream, batch, keys, settings.tolerance)
        residual = compare_aggregates(stream, as_streamed, keys, settings.tolerance).select(
            *on, F.lit(1).alias("_r")
        )
        touched = None
        for fate in sorted(fate_counts):
            windows = gold_of(bronze.join(excluded.where(F.col("fate") == fate), POSITION, "left_semi"))
            windows = windows.select(*on, F.lit(fate).alias("fate"))
            touched = windows if touched is None else touched.unionByName(windows)
        explained = F.lit("")
        diffs = differences.join(residual, on, "left")
        if touched is not None:
            reasons = touched.groupBy(*on).agg(
                F.array_join(F.sort_array(F.collect_set("fate")), ",").alias("_why")
            )
            diffs = diffs.join(reasons, on, "left")
            explained = F.when(F.col("_r").isNull(), F.coalesce(F.col("_why"), F.lit(""))).otherwise(
                F.lit("")
            )
        utc = F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ss'Z'").alias("window_start")
        columns = [utc if c == "window_start" else F.col(c) for c in differences.columns]
        rows = diffs.orderBy(*on).select(*columns, explained.alias("explained_by")).collect()
        compared = batch.count() + sum(1 for r in rows if r["kind"] == "extra")
        batch.unpersist()
    finally:
        excluded.unpersist()
        bronze.unpersist()
    return Report(
        compared=compared,
        differences=[r.asDict() for r in rows],
        late_events=fate_counts.get("late", 0),
        unread_events=fate_counts.get("unread", 0),
        evidence=evidence,
    )


def print_report(report: Report, keys: Sequence[str], show: int) -> None:
    counts = report.counts()
    print(
        f"reconcile: {counts['windows_compared']} windows compared; "
        f"{counts['missing']} missing from the stream, {counts['extra']} extra in it, "
        f"{counts['mismatch']} with values beyond tolerance"
    )
    print(
        f"  explained: {counts['explained_late']} by late events ({counts['late_events']} events), "
        f"{counts['explained_unread']} by records the stream has not read ({counts['unread_events']} records)"
    )
    print(f"  unexplained: {counts['unexplained']}")
    print(f"  evidence of what the stream did: {'; '.join(report.evidence)}")
    ordered = report.unexplained + [d for d in report.differences if d["explained_by"]]
    for d in ordered[:show]:
        key = ", ".join(str(d[k]) for k in keys)
        why = f"explained: {d['explained_by']}" if d["explained_by"] else "UNEXPLAINED"
        cols = f" ({', '.join(d['columns'])})" if d["columns"] else ""
        print(
            f"  {d['kind']:8} {key} {d['window_start']}{cols}: "
            f"stream count {d['stream_count']}, batch count {d['batch_count']}; {why}"
        )
    if len(ordered) > show:
        print(f"  ... {len(ordered) - show} more (--show N, or --json FILE for all)")
