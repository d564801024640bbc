"""Alert rules over clean readings: pure DataFrame -> DataFrame functions, one per rule.

    bound_alerts    a field above or below a configured limit ([[alerts.bounds]])
    range_alerts    a value outside its own device's nominal range (the device's metadata in silver)
    zscore_alerts   a value far from its device's previous N readings (rolling z-score)
    stuck_alerts    the same value N readings in a row
    silent_alerts   no reading from a device for N minutes of event time
    find_alerts     all of them for one micro-batch of readings, deduplicated

Each rule is a Check: the alert a reading raises (or null) and the window columns it reads over
its device's earlier readings. `judge` runs any set of checks in one pass over the readings, so
find_alerts sorts a micro-batch's readings once for all its rules instead of once per rule.

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Check:
    """One rule applied to each reading: `alert`, the alert it raises (_alert) or null; `over`, the
    window columns (name, column) it reads, which `judge` computes for all its checks at once."""

    alert: Column
    over: tuple[tuple[str, Column], ...] = ()

    def where(self, condition: Column) -> Check:
        """The same check, raising its alert only where `condition` holds too."""
        return Check(F.when(condition, self.alert), self.over)


def _alert(
    condition: Column,
    rule: str,
    key: str,
    alert_id: Column,
    event_id: Column,
    at: Column,
    value: Column,
    detail: Column,
) -> Column:
    """The alert a reading raises where `condition` holds, else null.  # struct of alert_columns"""
    return F.when(
        condition,
        F.struct(
            alert_id.alias("alert_id"),
            F.lit(rule).alias("rule"),
            F.col(key).alias(key),
            event_id.cast("string").alias(EVENT_ID),
            at.cast("timestamp").alias("event_time"),
            value.cast("double").alias("value"),
            detail.alias("detail"),
        ),
    )


def _reading_alert(
    condition: Column, rule: str, value: Column, detail: Column, *, key: str, id_field: str, time_field: str
) -> Column:
    """The alert `rule` raises on a reading where `condition` holds.  # alert_id <rule>|<event id>"""
    reading = F.col(id_field)
    return _alert(
        condition,
        rule,
        key,
        F.concat_ws("|", F.lit(rule), reading),
        reading,
        F.col(time_field),
        value,
        detail,
    )


def judge(readings: DataFrame, checks: Sequence[Check], key: str) -> DataFrame:
    """The alerts `checks` raise over `readings`.  # alert_id, rule, <key>, event_id, event_time, ...

    The checks' window columns are computed in one pass: those over the same window (a device's
    readings in order) share its shuffle and sort, where one query per rule and a union would sort
    the readings once per rule. Each reading then yields the alerts it raised.
    """
    if not checks:
        none = F.lit(None)
        checks = [
            Check(
                _alert(F.lit(False), "none", key, none.cast("string"), none, none, none, none.cast("string"))
            )
        ]
        readings = readings.limit(0)
    over = [column.alias(name) for check in checks for name, column in check.over]
    scored = readings.select("*", *over) if over else readings
    raised = F.filter(F.array(*(check.alert for check in checks)), lambda alert: alert.isNotNull())
    return scored.select(F.explode(raised).alias("_alert")).select("_alert.*")


def bound_checks(
    columns: Sequence[str], rules: Sequence[BoundRule], *, key: str, id_field: str, time_field: str
) -> list[Check]:
    """One check per bound rule whose field the readings (`columns`) have."""
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    checks = []
    for rule in rules:
        if rule.op not in OPS:
            raise ValueError(f"bound rule {rule.name!r}: op must be 'above' or 'below', got {rule.op!r}")
        if rule.field not in columns:
            continue
        broken = OPS[rule.op](F.col(rule.field), F.lit(rule.limit))
        if rule.kind and "kind" in columns:
            broken = broken & (F.col("kind") == rule.kind.lower())
        detail = F.format_string(
            f"{rule.field} %s {rule.op} {rule.limit:g}", F.col(rule.field).cast("string")
        )
        checks.append(Check(_reading_alert(broken, rule.name, F.col(rule.field), detail, **fields)))
    return checks


def bound_alerts(
    readings: DataFrame,
    rules: Sequence[BoundRule],
    *,
    key: str,
    id_field: str,
    time_field: str,
) -> DataFrame:
    """One alert per reading and broken bound.  # alert_id (<rule name>|<event id>), rule, ..."""
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    return judge(readings, bound_checks(readings.columns, rules, **fields), key)


def range_checks(
    columns: Sequence[str], value_field: str, low_field: str, high_field: str, **fields: str
) -> list[Check]:
    """The range check, or none when it is off ("" fields) or the readings lack the fields.
    `fields`: key, id_field, time_field."""
    if not low_field or not high_field or {low_field, high_field} - set(columns):
        return []
    value, low, high = F.col(value_field), F.col(low_field), F.col(high_field)
    detail = F.format_string(
        f"{value_field} %s outside the device's nominal range %s to %s",
        value.cast("string"),
        low.cast("string"),
        high.cast("string"),
    )
    return [Check(_reading_alert((value < low) | (value > high), "range", value, detail, **fields))]


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
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    return judge(readings, range_checks(readings.columns, value_field, low_field, high_field, **fields), key)


def _in_order(key: str, id_field: str, time_field: str) -> WindowSpec:
    return Window.partitionBy(key).orderBy(F.col(time_field), F.col(id_field))


def zscore_check(
    n: int, threshold: float, value_field: str, *, key: str, id_field: str, time_field: str
) -> Check:
    """|z| of a reading against its device's previous `n` readings above `threshold` (sample sd)."""
    previous = _in_order(key, id_field, time_field).rowsBetween(-n, -1)
    value = F.col(value_field)
    count, mean, sd = F.col("_zscore_n"), F.col("_zscore_mean"), F.col("_zscore_sd")
    z = (value - mean) / sd
    detail = F.format_string(
        f"z-score %.2f against the previous {n} readings (mean %.3f, sd %.3f)", z, mean, sd
    )
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    return Check(
        _reading_alert((count == n) & (sd > 0) & (F.abs(z) > threshold), "zscore", value, detail, **fields),
        over=(
            ("_zscore_n", F.count(value).over(previous)),
            ("_zscore_mean", F.avg(value).over(previous)),
            ("_zscore_sd", F.stddev_samp(value).over(previous)),
        ),
    )


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
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    return judge(readings, [zscore_check(n, threshold, value_field, **fields)], key)


def stuck_check(n: int, value_field: str, *, key: str, id_field: str, time_field: str) -> Check:
    """The reading that makes a device's value the same `n` readings in a row (once per run)."""
    if n < 2:
        raise ValueError(f"stuck_readings must be at least 2, got {n}")
    order = _in_order(key, id_field, time_field)
    value = F.col(value_field)
    # _stuck_k: the value k readings before this one
    over = tuple((f"_stuck_{k}", F.lag(value, k).over(order)) for k in range(1, n + 1))
    same = reduce(Column.__and__, [F.col(f"_stuck_{k}") == value for k in range(1, n)])
    before = F.col(f"_stuck_{n}")
    fields = {"key": key, "id_field": id_field, "time_field": time_field}
    detail = F.format_string(f"value %s unchanged over {n} readings", value.cast("string"))
    return Check(
        _reading_alert(same & (before.isNull() | (before != value)), "stuck", value, detail, **fields),
        over=over,
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
    return judge(
        readings, [stuck_check(n, value_field, key=key, id_field=id_field, time_field=time_field)], key
    )


def _silence(condition: Column, last: Column, minutes: float, key: str) -> Column:
    """The silence after a device's reading at `last`, where `condition` holds."""
    last_text = F.date_format(last, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    return _alert(
        condition,
        "silent",
        key,
        F.concat_ws("|", F.lit("silent"), F.col(key), last_text),
        F.lit(None),
        last,
        F.lit(None),
        F.format_string(f"no reading for more than {minutes:g} minutes after %s", last_text),
    )


def gap_check(minutes: float, *, key: str, time_field: str, id_field: str | None = None) -> Check:
    """A reading more than `minutes` after its device's previous one: silence after that one.

    Readings in time order; ties in time make no gap whichever comes first, so `id_field`, given,
    only lets the check share the order of the rolling rules' window (and its sort)."""
    at = F.col(time_field)
    order = (
        Window.partitionBy(key).orderBy(at, F.col(id_field))
        if id_field
        else Window.partitionBy(key).orderBy(at)
    )
    last = F.col("_gap_last")
    gap = F.unix_micros(at) - F.unix_micros(last) > minutes * 60 * 1_000_000
    return Check(_silence(gap, last, minutes, key), over=(("_gap_last", F.lag(at, 1).over(order)),))


def clock_check(minutes: float, clock: datetime, *, key: str, time_field: str) -> Check:
    """A device whose latest reading (`time_field` of a row per device) is more than `minutes`
    behind `clock`, the stream's current event time: silence after it."""
    if clock.tzinfo is None:
        raise ValueError("clock must be timezone-aware")
    last = F.col(time_field)
    behind = F.unix_micros(F.lit(clock).cast("timestamp")) - F.unix_micros(last) > minutes * 60 * 1_000_000
    return Check(_silence(behind, last, minutes, key))


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
    found = judge(readings, [gap_check(minutes, key=key, time_field=time_field)], key)
    if clock is not None:
        latest = readings.groupBy(key).agg(F.max(time_field).alias(time_field))
        found = found.unionByName(
            judge(latest, [clock_check(minutes, clock, key=key, time_field=time_field)], key)
        )
    return found.dropDuplicates(["alert_id"])


# Per reading: whether the reading rules judge it; find_alerts sets it for each batch, so the
# checks themselves depend on nothing of a batch.
JUDGED = "_judged"


def batch_checks(
    columns: Sequence[str], rules: AlertsConfig, *, id_field: str, time_field: str
) -> list[Check]:
    """What find_alerts judges on readings with `columns`: the rules on each reading (where JUDGED),
    then the silence gaps. A stream builds them once: each costs tens of calls into the JVM."""
    fields = {"key": rules.key, "id_field": id_field, "time_field": time_field}
    per_reading = [
        *bound_checks(columns, rules.bounds, **fields),
        *range_checks(columns, rules.value_field, rules.range_low_field, rules.range_high_field, **fields),
        zscore_check(rules.zscore_readings, rules.zscore_threshold, rules.value_field, **fields),
        stuck_check(rules.stuck_readings, rules.value_field, **fields),
    ]
    return [*(check.where(F.col(JUDGED)) for check in per_reading), gap_check(rules.silent_minutes, **fields)]


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
    checks: Sequence[Check] | None = None,
) -> DataFrame:
    """A micro-batch's alerts.  # alert_id, rule, <key>, event_id, event_time, value, detail

    `readings`: the batch's readings and the earlier ones of its devices; `batch_ids`: the batch's
    reading ids (one column, `id_field`); `latest`: every device's latest reading time (<key>,
    <time_field>); `clock`: the stream's latest event time. Reading rules report only the batch's
    readings; silence is judged on the whole fleet. `checks`: batch_checks for `readings`' columns,
    when the caller keeps them from an earlier batch.

    `until` (the batch's latest reading time) spares the reading rules the readings after it, which
    a caller's history may hold (silver read while it grows ahead of the batch): the rolling rules
    look only at readings before a reading in (time, id) order, so those change no alert of the
    batch's. Silence still looks at all of them: a gap between two of them is an alert.
    """
    key = rules.key
    if checks is None:
        checks = batch_checks(readings.columns, rules, id_field=id_field, time_field=time_field)
    # The rolling rules look only backwards in (time, id) order, so judging every reading and
    # keeping the alerts up to `until` is judging the readings up to it.
    judged = F.col(id_field).isNotNull()
    if until is not None:
        judged = judged & (F.col(time_field) <= F.lit(until))
    raised = judge(readings.withColumn(JUDGED, judged), checks, key)
    # A reading's alerts count for the batch's readings only; silence names no reading (event_id null).
    marks = batch_ids.select(F.col(id_field).cast("string").alias(EVENT_ID), F.lit(True).alias("_in_batch"))
    in_batch = raised.join(marks, EVENT_ID, "left").where(F.col(EVENT_ID).isNull() | F.col("_in_batch"))
    found = in_batch.drop("_in_batch")
    if clock is not None:
        found = found.unionByName(
            judge(latest, [clock_check(rules.silent_minutes, clock, key=key, time_field=time_field)], key)
        )
    return found.dropDuplicates(["alert_id"]).select(*alert_columns(key))
