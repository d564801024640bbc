"""Alert rules over clean readings: pure DataFrame -> DataFrame functions, one per rule.

    bound_alerts    a field above or below a configured limit ([[alerts.bounds]])
    range_alerts    a value outside its own device's nominal range (the device's metadata in silver)
    zscore_alerts   a value far from its device's previous N readings (rolling z-score)
    stuck_alerts    the same value N readings in a row
    silent_alerts   no reading from a device for N minutes of event time
    find_alerts     all of them for one micro-batch of readings, deduplicated

Each returns rows of ALERT_COLUMNS with a deterministic `alert_id`, so an alert found twice (a
replayed micro-batch, a later batch that sees the same silence) is stored and keyed once. The
rolling rules read a device's readings in event-time order (ties broken by event id); batch and
stream callers pass them a frame of a device's recent readings (docs/pipeline.md). The entity key
(`key`), the readings' id (`id_field`) and event time (`time_field`) are the caller's, from config
([alerts] key, [stream] id_field and event_time_field); whatever the input calls its id, an
alert names the reading it is about in its `event_id` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import reduce

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from arus.config import AlertsConfig, BoundRule

# An alert's column naming the reading it is about, whatever the readings call their id.
EVENT_ID = "event_id"
# alert_id, rule, <key>, event_id, event_time, value, detail
ALERT_COLUMNS = ("alert_id", "rule", EVENT_ID, "event_time", "value", "detail")
OPS = {"above": lambda c, limit: c > limit, "below": lambda c, limit: c < limit}


def alert_columns(key: str) -> list[str]:
    """The alert row's columns: # alert_id, rule, <key>, event_id, event_time, value, detail"""
    return ["alert_id", "rule", key, *ALERT_COLUMNS[2:]]


def _alerts(
    df: DataFrame,
    rule: str,
    key: str,
    alert_id: Column,
    event_id: Column,
    at: Column,
    value: Column,
    detail: Column,
) -> DataFrame:
    return df.select(
        alert_id.alias("alert_id"),
        F.lit(rule).alias("rule"),
        F.col(key),
        event_id.cast("string").alias(EVENT_ID),
        at.cast("timestamp").alias("event_time"),
        value.cast("double").alias("value"),
        detail.alias("detail"),
    )


def _empty(readings: DataFrame, key: str) -> DataFrame:
    none = F.lit(None)
    return _alerts(readings.limit(0), "none", key, none.cast("string"), none, none, none, none.cast("string"))


def bound_alerts(
    readings: DataFrame,
    rules: Sequence[BoundRule],
    *,
    key: str,
    id_field: str,
    time_field: str,
) -> DataFrame:
    """One alert per reading and broken bound.  # alert_id (<rule name>|<event id>), rule, ..."""
    frames = []
    for rule in rules:
        if rule.op not in OPS:
            raise ValueError(f"bound rule {rule.name!r}: op must be 'above' or 'below', got {rule.op!r}")
        if rule.field not in readings.columns:
            continue
        broken = OPS[rule.op](F.col(rule.field), F.lit(rule.limit))
        if rule.kind and "kind" in readings.columns:
            broken = broken & (F.col("kind") == rule.kind.lower())
        detail = F.format_string(
            f"{rule.field} %s {rule.op} {rule.limit:g}", F.col(rule.field).cast("string")
        )
        frames.append(
            _alerts(
                readings.where(broken),
                rule.name,
                key,
                F.concat_ws("|", F.lit(rule.name), F.col(id_field)),
                F.col(id_field),
                F.col(time_field),
                F.col(rule.field),
                detail,
            )
        )
    return reduce(DataFrame.unionByName, frames) if frames else _empty(readings, key)


def range_alerts(
    readings: DataFrame,
    value_field: str,
    low_field: str,
    high_field: str,
    *,
    key: str,
    id_field: str,
    time_field: str,
) -> DataFrame:
    """A reading outside the nominal range its device declares (low and high are the reading's own
    columns: silver carries the device's metadata), so it holds from a device's first reading on.

    # alert_id (range|<event id>), rule, ...   A reading with no range (an unknown device) has none.
    """
    if not low_field or not high_field or {low_field, high_field} - set(readings.columns):
        return _empty(readings, key)
    value, low, high = F.col(value_field), F.col(low_field), F.col(high_field)
    return _alerts(
        readings.where((value < low) | (value > high)),
        "range",
        key,
        F.concat_ws("|", F.lit("range"), F.col(id_field)),
        F.col(id_field),
        F.col(time_field),
        value,
        F.format_string(
            f"{value_field} %s outside the device's nominal range %s to %s",
            value.cast("string"),
            low.cast("string"),
            high.cast("string"),
        ),
    )


def _in_order(key: str, id_field: str, time_field: str) -> WindowSpec:
    return Window.partitionBy(key).orderBy(F.col(time_field), F.col(id_field))


def zscore_alerts(
    readings: DataFrame,
    n: int,
    threshold: float,
    value_field: str,
    *,
    key: str,
    id_field: str,
    time_field: str,
) -> DataFrame:
    """A reading whose |z| against its device's previous `n` readings exceeds `threshold`.

    # alert_id (zscore|<event id>), rule, ...   Needs n earlier readings with some spread (sample sd).
    """
    previous = _in_order(key, id_field, time_field).rowsBetween(-n, -1)
    value = F.col(value_field)
    scored = readings.select(
        "*",
        F.count(value).over(previous).alias("_n"),
        F.avg(value).over(previous).alias("_mean"),
        F.stddev_samp(value).over(previous).alias("_sd"),
    ).withColumn("_z", (value - F.col("_mean")) / F.col("_sd"))
    broken = (F.col("_n") == n) & (F.col("_sd") > 0) & (F.abs(F.col("_z")) > threshold)
    detail = F.format_string(
        f"z-score %.2f against the previous {n} readings (mean %.3f, sd %.3f)",
        F.col("_z"),
        F.col("_mean"),
        F.col("_sd"),
    )
    return _alerts(
        scored.where(broken),
        "zscore",
        key,
        F.concat_ws("|", F.lit("zscore"), F.col(id_field)),
        F.col(id_field),
        F.col(time_field),
        value,
        detail,
    )


def stuck_alerts(
    readings: DataFrame,
    n: int,
    value_field: str,
    *,
    key: str,
    id_field: str,
    time_field: str,
) -> DataFrame:
    """The reading that makes a device's value the same `n` readings in a row (once per run).

    # alert_id (stuck|<event id>), rule, ...
    """
    if n < 2:
        raise ValueError(f"stuck_readings must be at least 2, got {n}")
    order = _in_order(key, id_field, time_field)
    value = F.col(value_field)
    same = reduce(Column.__and__, [F.lag(value, k).over(order) == value for k in range(1, n)])
    before = F.lag(value, n).over(order)
    run_starts_here = same & (before.isNull() | (before != value))
    return _alerts(
        readings.withColumn("_stuck", run_starts_here).where("_stuck"),
        "stuck",
        key,
        F.concat_ws("|", F.lit("stuck"), F.col(id_field)),
        F.col(id_field),
        F.col(time_field),
        value,
        F.format_string(f"value %s unchanged over {n} readings", value.cast("string")),
    )


def silent_alerts(
    readings: DataFrame,
    minutes: float,
    clock: datetime | None = None,
    *,
    key: str,
    time_field: str,
) -> DataFrame:
    """A device with no reading for more than `minutes` after its reading at `event_time`.

    # alert_id (silent|<key>|<last reading time>), rule, <key>, event_id null, event_time, value null
    Found two ways that give the same alert: a gap between two consecutive readings, and (given
    `clock`, the stream's current event time) a device whose latest reading is that far behind.
    `readings` needs only <key> and <time_field>.
    """
    if clock is not None and clock.tzinfo is None:
        raise ValueError("clock must be timezone-aware")
    limit_s = minutes * 60
    at = F.col(time_field)
    # Ties in time make no gap whichever comes first, so time alone orders them here.
    previous = F.lag(at, 1).over(Window.partitionBy(key).orderBy(at))
    gaps = readings.select(key, previous.alias("_last"), at.alias("_next")).where(
        F.unix_micros("_next") - F.unix_micros("_last") > limit_s * 1_000_000
    )
    frames = [gaps.select(key, "_last")]
    if clock is not None:
        latest = readings.groupBy(key).agg(F.max(at).alias("_last"))
        behind = F.unix_micros(F.lit(clock).cast("timestamp")) - F.unix_micros("_last") > limit_s * 1_000_000
        frames.append(latest.where(behind))
    last = reduce(DataFrame.unionByName, frames).distinct()
    last_text = F.date_format("_last", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    return _alerts(
        last,
        "silent",
        key,
        F.concat_ws("|", F.lit("silent"), F.col(key), last_text),
        F.lit(None),
        F.col("_last"),
        F.lit(None),
        F.format_string(f"no reading for more than {minutes:g} minutes after %s", last_text),
    )


def find_alerts(
    readings: DataFrame,
    batch_ids: DataFrame,
    latest: DataFrame,
    rules: AlertsConfig,
    clock: datetime | None,
    *,
    id_field: str,
    time_field: str,
    until: datetime | None = None,
) -> DataFrame:
    """A micro-batch's alerts.  # alert_id, rule, <key>, event_id, event_time, value, detail

    `readings`: the batch's readings and the earlier ones of its devices; `batch_ids`: the batch's
    reading ids (one column, `id_field`); `latest`: every device's latest reading time (<key>,
    <time_field>); `clock`: the stream's latest event time. Reading rules report only the batch's
    readings; silence is judged on the whole fleet.

    `until` (the batch's latest reading time) spares the reading rules the readings after it, which
    a caller's history may hold (silver read while it grows ahead of the batch): the rolling rules
    look only at readings before a reading in (time, id) order, so those change no alert of the
    batch's. Silence still looks at all of them: a gap between two of them is an alert.
    """
    key = rules.key
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    judged = readings if until is None else readings.where(F.col(time_field) <= F.lit(until))
    per_reading = reduce(
        DataFrame.unionByName,
        [
            bound_alerts(judged, rules.bounds, **fields),
            range_alerts(judged, rules.value_field, rules.range_low_field, rules.range_high_field, **fields),
            zscore_alerts(judged, rules.zscore_readings, rules.zscore_threshold, rules.value_field, **fields),
            stuck_alerts(judged, rules.stuck_readings, rules.value_field, **fields),
        ],
    )
    in_batch = per_reading.join(batch_ids.select(F.col(id_field).alias(EVENT_ID)), EVENT_ID, "left_semi")
    silent = silent_alerts(readings, rules.silent_minutes, key=key, time_field=time_field).unionByName(
        silent_alerts(latest, rules.silent_minutes, clock, key=key, time_field=time_field)
    )
    return in_batch.unionByName(silent).dropDuplicates(["alert_id"]).select(*alert_columns(key))
