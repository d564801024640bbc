"""The alert rules on inline rows, each compared as a whole DataFrame."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from arus.config import AlertsConfig, BoundRule
from arus.core import alerts

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
READINGS = "event_id string, device_id string, kind string, value double, event_time timestamp"
ALERTS = (
    "alert_id string, rule string, device_id string, event_id string, event_time timestamp, "
    "value double, detail string"
)


# The rules take the field names from config ([alerts] key, [aggregate] dedup_field, event_time_field).
FIELDS = {"key": "device_id", "id_field": "event_id", "time_field": "event_time"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def series(spark: SparkSession, device: str, values: list[float], kind: str = "temperature") -> DataFrame:
    """One reading every 10 s; event ids d-0, d-1, ..."""
    rows = [(f"{device}-{i}", device, kind, v, at(10 * i)) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, READINGS)


def test_bounds_apply_to_their_kind_only(spark: SparkSession) -> None:
    readings = spark.createDataFrame(
        [
            ("a", "d1", "temperature", 41.0, at(0)),
            ("b", "d1", "temperature", 40.0, at(10)),  # at the limit is not above it
            ("c", "d2", "humidity", 95.0, at(0)),
            ("d", "d3", "power", 95.0, at(0)),
            ("e", "d1", "temperature", -1.5, at(20)),
        ],
        READINGS,
    )
    rules = [
        BoundRule("temperature_high", "value", "above", 40.0, "temperature"),
        BoundRule("temperature_low", "value", "below", 0.0, "temperature"),
        BoundRule("humidity_high", "value", "above", 90.0, "humidity"),
    ]
    expected = spark.createDataFrame(
        [
            ("temperature_high|a", "temperature_high", "d1", "a", at(0), 41.0, "value 41.0 above 40"),
            ("temperature_low|e", "temperature_low", "d1", "e", at(20), -1.5, "value -1.5 below 0"),
            ("humidity_high|c", "humidity_high", "d2", "c", at(0), 95.0, "value 95.0 above 90"),
        ],
        ALERTS,
    )
    assert_df_equality(
        alerts.bound_alerts(readings, rules, **FIELDS), expected, ignore_row_order=True, ignore_nullable=True
    )


def test_a_bound_with_an_unknown_op_is_refused(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="op must be"):
        alerts.bound_alerts(series(spark, "d", [1.0]), [BoundRule("x", "value", "over", 1.0)], **FIELDS)


def test_range_judges_each_reading_by_its_own_devices_range_from_the_first_one(spark: SparkSession) -> None:
    readings = spark.createDataFrame(
        [
            ("a", "t1", 31.5, 15.0, 30.0, at(0)),  # a temperature sensor's first reading, above its range
            ("b", "t1", 30.0, 15.0, 30.0, at(10)),  # at the edge is inside
            ("c", "p1", 960.25, 990.0, 1030.0, at(0)),  # a pressure sensor below its own range
            ("d", "p1", 31.5, None, None, at(10)),  # a device with no metadata: no range to judge by
        ],
        "event_id string, device_id string, value double, device_low double, device_high double, "
        "event_time timestamp",
    )
    expected = spark.createDataFrame(
        [
            (
                "range|a", "range", "t1", "a", at(0), 31.5,
                "value 31.5 outside the device's nominal range 15.0 to 30.0",
            ),
            (
                "range|c", "range", "p1", "c", at(0), 960.25,
                "value 960.25 outside the device's nominal range 990.0 to 1030.0",
            ),
        ],
        ALERTS,
    )  # fmt: skip
    result = alerts.range_alerts(readings, "value", "device_low", "device_high", **FIELDS)
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    # "" in [alerts] turns the rule off; readings without the fields (no device metadata) have none.
    assert alerts.range_alerts(readings, "value", "", "", **FIELDS).count() == 0
    assert (
        alerts.range_alerts(
            series(spark, "t1", [99.0]), "value", "device_low", "device_high", **FIELDS
        ).count()
        == 0
    )


def test_no_rule_to_judge_gives_no_alerts_with_the_alert_columns(spark: SparkSession) -> None:
    none = alerts.range_alerts(series(spark, "t1", [99.0]), "value", "", "", **FIELDS)
    assert none.count() == 0
    assert_df_equality(none, spark.createDataFrame([], ALERTS), ignore_nullable=True)


def test_zscore_needs_n_previous_readings_and_alerts_on_the_outlier(spark: SparkSession) -> None:
    readings = series(spark, "d1", [10.0, 11.0, 10.0, 11.0, 50.0, 10.5]).unionByName(
        series(spark, "d2", [10.0, 80.0])  # too few earlier readings to judge
    )
    result = alerts.zscore_alerts(readings, 3, 3.0, "value", **FIELDS)
    # previous three of d1-4: 11, 10, 11 -> mean 10.667, sd 0.577, z = 68.13; d1-5 against 10, 11, 50: z < 3.
    mean, sd = 32 / 3, (1 / 3) ** 0.5
    expected = spark.createDataFrame(
        [
            (
                "zscore|d1-4",
                "zscore",
                "d1",
                "d1-4",
                at(40),
                50.0,
                f"z-score {(50 - mean) / sd:.2f} against the previous 3 readings "
                f"(mean {mean:.3f}, sd {sd:.3f})",
            )
        ],
        ALERTS,
    )
    assert_df_equality(result, expected, ignore_nullable=True)


def test_zscore_ignores_a_flat_history(spark: SparkSession) -> None:
    assert (
        alerts.zscore_alerts(series(spark, "d1", [5.0, 5.0, 5.0, 9.0]), 3, 3.0, "value", **FIELDS).count()
        == 0
    )


def test_stuck_alerts_once_when_a_run_reaches_n(spark: SparkSession) -> None:
    readings = series(spark, "d1", [1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0]).unionByName(
        series(spark, "d2", [4.0, 4.0])
    )
    expected = spark.createDataFrame(
        [
            ("stuck|d1-3", "stuck", "d1", "d1-3", at(30), 2.0, "value 2.0 unchanged over 3 readings"),
            ("stuck|d1-7", "stuck", "d1", "d1-7", at(70), 3.0, "value 3.0 unchanged over 3 readings"),
        ],
        ALERTS,
    )
    assert_df_equality(
        alerts.stuck_alerts(readings, 3, "value", **FIELDS),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_stuck_orders_readings_by_event_time_not_arrival(spark: SparkSession) -> None:
    readings = spark.createDataFrame(
        [("c", "d1", "t", 7.0, at(20)), ("a", "d1", "t", 7.0, at(0)), ("b", "d1", "t", 7.0, at(10))], READINGS
    )
    assert [r.alert_id for r in alerts.stuck_alerts(readings, 3, "value", **FIELDS).collect()] == ["stuck|c"]


def test_silent_finds_gaps_and_devices_behind_the_clock(spark: SparkSession) -> None:
    readings = spark.createDataFrame(
        [
            ("a1", "d1", "t", 1.0, at(0)),
            ("a2", "d1", "t", 1.0, at(400)),  # 400 s after a1: silent for more than 5 minutes
            ("a3", "d1", "t", 1.0, at(410)),
            ("b1", "d2", "t", 1.0, at(60)),  # d2 then says nothing until the clock at 410 s
            ("c1", "d3", "t", 1.0, at(300)),  # 110 s behind the clock: not silent yet
        ],
        READINGS,
    )

    def silent(device: str, last: float) -> tuple[object, ...]:
        text = at(last).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        detail = f"no reading for more than 5 minutes after {text}"
        return (f"silent|{device}|{text}", "silent", device, None, at(last), None, detail)

    expected = spark.createDataFrame([silent("d1", 0), silent("d2", 60)], ALERTS)
    result = alerts.silent_alerts(readings, 5, at(410), key="device_id", time_field="event_time")
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)

    gaps_only = spark.createDataFrame([silent("d1", 0)], ALERTS)
    assert_df_equality(
        alerts.silent_alerts(readings, 5, key="device_id", time_field="event_time"),
        gaps_only,
        ignore_nullable=True,
    )


# Readings after the batch's latest (silver read while it grows ahead of the alerts query): with
# `until` at the batch's latest they change no alert, and the batch's own latest readings still count.
LATER = [("r6", "s1", 1.0, 0.0, 100.0, at(30)), ("r7", "s2", 99.0, 0.0, 100.0, at(30))]


@pytest.mark.parametrize(("later", "until"), [([], None), (LATER, at(20))])
def test_find_alerts_takes_its_field_names_from_config_and_reports_only_the_batch(
    spark: SparkSession, later: list[tuple[object, ...]], until: datetime | None
) -> None:
    readings = spark.createDataFrame(
        [
            ("r0", "s2", 98.0, 0.0, 100.0, at(0)),  # earlier readings: history, not the batch's, so no alert
            ("r1", "s1", 1.0, 0.0, 100.0, at(0)),
            ("r2", "s1", 1.0, 0.0, 100.0, at(10)),
            ("r3", "s1", 1.0, 0.0, 100.0, at(20)),  # the third equal value in a row: stuck
            ("r4", "s2", 99.0, 0.0, 100.0, at(20)),  # above the bound
            ("r5", "s3", -2.0, 0.0, 100.0, at(20)),  # below its sensor's range
            *later,
        ],
        "rid string, sensor string, level double, lo double, hi double, ts timestamp",
    )
    batch_ids = readings.where("rid IN ('r2', 'r3', 'r4', 'r5')").select("rid")
    latest = readings.groupBy("sensor").agg({"ts": "max"}).withColumnRenamed("max(ts)", "ts")
    rules = AlertsConfig(
        key="sensor",
        value_field="level",
        zscore_readings=3,
        stuck_readings=3,
        silent_minutes=5,
        bounds=(BoundRule("level_high", "level", "above", 50.0),),
        range_low_field="lo",
        range_high_field="hi",
    )
    result = alerts.find_alerts(
        readings, batch_ids, latest, rules, at(30), id_field="rid", time_field="ts", until=until
    )
    expected = spark.createDataFrame(
        [
            ("stuck|r3", "stuck", "s1", "r3", at(20), 1.0, "value 1.0 unchanged over 3 readings"),
            ("level_high|r4", "level_high", "s2", "r4", at(20), 99.0, "level 99.0 above 50"),
            (
                "range|r5",
                "range",
                "s3",
                "r5",
                at(20),
                -2.0,
                "level -2.0 outside the device's nominal range 0.0 to 100.0",
            ),
        ],
        ALERTS.replace("device_id", "sensor"),
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    # Every rolling rule and the silence gaps read one window over each device's readings in
    # order: one sort of the readings for all of them, not one per rule.
    plan = result._jdf.queryExecution().executedPlan().toString()
    assert re.findall(r"\bWindow \[", plan) == ["Window ["], plan
