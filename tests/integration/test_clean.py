"""Cleaning, enrichment and the bronze -> silver chain on inline rows, compared as whole DataFrames."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from support import kafka_rows

from arus.config import DEFAULT_CONFIG, CleanConfig, load_config
from arus.core.clean import (
    clean_events,
    parse_device_dimension,
    with_canonical_units,
    with_device_metadata,
    with_normalised_names,
    with_rounded_values,
    with_schema,
)
from arus.core.stages import bronze_to_silver
from arus.core.transforms import schema_from_ddl

pytestmark = pytest.mark.integration

READINGS = "device_id string, kind string, site string, unit string, value double"


def test_names_are_trimmed_and_lower_cased_and_absent_fields_skipped(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [("d1", " Temperature", "JAKARTA "), ("d2", None, "bandung")],
        "device_id string, kind string, site string",
    )
    result = with_normalised_names(rows, ["kind", "site", "not_there"])
    expected = spark.createDataFrame(
        [("d1", "temperature", "jakarta"), ("d2", None, "bandung")],
        "device_id string, kind string, site string",
    )
    assert_df_equality(result, expected, ignore_row_order=True)


def test_known_units_are_converted_to_the_canonical_one(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [
            ("d1", "temperature", "s", "F", 212.0),
            ("d2", "temperature", "s", "°C", 21.5),
            ("d3", "temperature", "s", "K", 300.0),
            ("d4", "pressure", "s", "kPa", 101.3),
            ("d5", "power", "s", " kW", 1.5),
            ("d6", "power", "s", "furlongs", 7.0),
            ("d7", "humidity", "s", None, 40.0),
        ],
        READINGS,
    )
    result = with_canonical_units(rows, "unit", ["value"])
    expected = spark.createDataFrame(
        [
            ("d1", "temperature", "s", "C", 100.0),
            ("d2", "temperature", "s", "C", 21.5),
            ("d3", "temperature", "s", "C", 300.0 - 273.15),
            ("d4", "pressure", "s", "hPa", 1013.0),
            ("d5", "power", "s", "W", 1500.0),
            ("d6", "power", "s", "furlongs", 7.0),
            ("d7", "humidity", "s", None, 40.0),
        ],
        READINGS,
    )
    assert_df_equality(result, expected, ignore_row_order=True, allow_nan_equality=True)


def test_values_are_rounded_half_up(spark: SparkSession) -> None:
    rows = spark.createDataFrame([("a", 1.23456), ("b", 2.0005), ("c", None)], "id string, value double")
    result = with_rounded_values(rows, ["value", "absent"], 3)
    expected = spark.createDataFrame([("a", 1.235), ("b", 2.001), ("c", None)], "id string, value double")
    assert_df_equality(result, expected, ignore_row_order=True)


def test_clean_events_normalises_names_then_converts_then_rounds(spark: SparkSession) -> None:
    rows = spark.createDataFrame([("d1", "Temperature ", " Medan", "f", 70.0)], READINGS)
    result = clean_events(rows, ["kind", "site"], "unit", ["value"], 3)
    expected = spark.createDataFrame([("d1", "temperature", "medan", "C", 21.111)], READINGS)
    assert_df_equality(result, expected)


DEVICES = "device_id string, kind string, site string, unit string, low double, high double"


def test_device_metadata_fills_gaps_and_adds_prefixed_fields(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [
            ("d1", None, None, "C", 20.0),
            ("d2", "power", "medan", "W", 100.0),
            ("zz", "power", None, "W", 1.0),
        ],
        READINGS,
    )
    devices = spark.createDataFrame(
        [("d1", "temperature", "jakarta", "C", 15.0, 30.0), ("d2", "power", "bandung", "W", 50.0, 500.0)],
        DEVICES,
    )
    result = with_device_metadata(events, devices, key="device_id")
    expected = spark.createDataFrame(
        [
            ("d1", "temperature", "jakarta", "C", 20.0, 15.0, 30.0),
            ("d2", "power", "medan", "W", 100.0, 50.0, 500.0),  # the event's own site wins
            ("zz", "power", None, "W", 1.0, None, None),  # an unknown device keeps its row
        ],
        f"{READINGS}, device_low double, device_high double",
    )
    assert_df_equality(result, expected, ignore_row_order=True)


def test_device_dimension_keeps_the_newest_record_per_key_and_honours_tombstones(spark: SparkSession) -> None:
    def record(offset: int, key: str, value: dict[str, object] | None) -> tuple[object, ...]:
        return (key.encode(), json.dumps(value).encode() if value else None, 0, offset)

    raw = spark.createDataFrame(
        [
            record(
                0, "d1", {"device_id": "d1", "kind": "power", "site": "old", "unit": "W", "low": 1, "high": 2}
            ),
            record(
                1, "d2", {"device_id": "d2", "kind": "power", "site": "x", "unit": "W", "low": 1, "high": 2}
            ),
            record(
                2, "d1", {"device_id": "d1", "kind": "power", "site": "new", "unit": "W", "low": 1, "high": 2}
            ),
            record(3, "d2", None),
            (b"d3", b"{broken", 0, 4),
        ],
        "key binary, value binary, partition int, offset long",
    )
    result = parse_device_dimension(raw, schema_from_ddl(DEVICES), key="device_id")
    expected = spark.createDataFrame([("d1", "power", "new", "W", 1.0, 2.0)], DEVICES)
    assert_df_equality(result, expected, ignore_nullable=True)


def test_with_schema_casts_orders_and_fills_missing_columns(spark: SparkSession) -> None:
    rows = spark.createDataFrame([(2, "d1")], "value int, device_id string")
    result = with_schema(rows, schema_from_ddl("device_id STRING, value DOUBLE, site STRING"))
    expected = spark.createDataFrame([("d1", 2.0, None)], "device_id string, value double, site string")
    assert_df_equality(result, expected)


# The shipped [stream]: events keyed by event_id and timed by event_time, its guards on.
STREAM = load_config(DEFAULT_CONFIG, env={}).stream


def test_bronze_to_silver_deduplicates_enriches_and_cleans(spark: SparkSession) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def reading(event_id: str, device: str, unit: str, value: float, site: str | None) -> bytes:
        body = {"event_id": event_id, "device_id": device, "unit": unit, "value": value, "site": site}
        return json.dumps({**body, "event_time": "2026-03-01T12:00:00Z"}).encode()

    values = [
        reading("e1", "d1", "F", 50.0, " Medan"),
        reading("e1", "d1", "F", 50.0, " Medan"),  # a repeated send
        reading("e2", "d2", "kW", 0.25, None),
        b"not json",
    ]
    bronze = kafka_rows(spark, values, at)
    devices = spark.createDataFrame(
        [("d1", "temperature", "jakarta", "C", 15.0, 30.0), ("d2", "power", "Bandung", "W", 50.0, 500.0)],
        DEVICES,
    )
    ddl = (
        "event_id STRING NOT NULL, device_id STRING NOT NULL, site STRING, unit STRING, "
        "value DOUBLE NOT NULL, event_time TIMESTAMP NOT NULL"
    )
    silver, dead = bronze_to_silver(
        bronze, schema_from_ddl(ddl), STREAM, devices=devices, clean=CleanConfig()
    )

    # The schema has no `kind`, so the device's kind arrives as device_kind.
    expected = spark.createDataFrame(
        [
            ("e1", "d1", "medan", "C", 10.0, at, "temperature", 15.0, 30.0),
            ("e2", "d2", "bandung", "W", 250.0, at, "power", 50.0, 500.0),
        ],
        "event_id string, device_id string, site string, unit string, value double, event_time timestamp, "
        "device_kind string, device_low double, device_high double",
    )
    assert_df_equality(silver, expected, ignore_row_order=True, ignore_nullable=True)
    assert [(r.offset, r.error) for r in dead.collect()] == [(3, "not a JSON object")]
