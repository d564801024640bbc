"""Cleaning, filtering and enrichment of readings: pure DataFrame -> DataFrame transforms.

    events -> with_normalised_names -> with_canonical_units -> with_rounded_values   (clean_events)
    events.where(filter_column(parse_filter(text, types)))                          (a --where filter)
    events + device dimension -> with_device_metadata                               (stream-static join)

Every function skips the columns a DataFrame does not have, so a topic with another schema passes
through unharmed. None of them reads, writes or starts a query (docs/pipeline.md). The rule data
(the units, the filter grammar) is arus.core.rules', which the kafka-python consumer applies too
(arus.pyengine.transform).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.core.rules import COMPARISONS, UNITS, AllOf, AnyOf, Filter


def _literal_map(values: dict[str, object]) -> Column:
    return F.create_map(*[F.lit(v) for item in values.items() for v in item])


def with_normalised_names(events: DataFrame, fields: Sequence[str]) -> DataFrame:
    """Name-like text fields trimmed and lower-cased, so " Jakarta" and "jakarta" group together."""
    present = [f for f in fields if f in events.columns]
    return events.withColumns({f: F.lower(F.trim(F.col(f))) for f in present}) if present else events


def with_canonical_units(events: DataFrame, unit_field: str, value_fields: Sequence[str]) -> DataFrame:
    """Values in a known unit converted to its canonical one (F and K to C, kPa to hPa, kW to W).

    An unknown unit is kept as sent (trimmed), with its value unchanged.
    """
    if not unit_field or unit_field not in events.columns:
        return events
    unit = F.lower(F.trim(F.col(unit_field)))
    canonical = _literal_map({k: v[0] for k, v in UNITS.items()})[unit]
    shift = _literal_map({k: v[1] for k, v in UNITS.items()})[unit]
    factor = _literal_map({k: v[2] for k, v in UNITS.items()})[unit]
    converted = {
        f: F.when(factor.isNotNull(), (F.col(f) + shift) * factor).otherwise(F.col(f))
        for f in value_fields
        if f in events.columns
    }
    return events.withColumns({**converted, unit_field: F.coalesce(canonical, F.trim(F.col(unit_field)))})


def with_rounded_values(events: DataFrame, fields: Sequence[str], decimals: int) -> DataFrame:
    """Numeric fields rounded half-up to `decimals` places (sensor noise below that is not signal)."""
    present = [f for f in fields if f in events.columns]
    return events.withColumns({f: F.round(F.col(f), decimals) for f in present}) if present else events


def clean_events(
    events: DataFrame,
    name_fields: Sequence[str],
    unit_field: str,
    value_fields: Sequence[str],
    decimals: int,
) -> DataFrame:
    """Names normalised, units made canonical, values rounded.  # same columns as `events`"""
    return (
        events.transform(with_normalised_names, name_fields)
        .transform(with_canonical_units, unit_field, value_fields)
        .transform(with_rounded_values, value_fields, decimals)
    )


def filter_column(where: Filter) -> Column:
    """A parsed --where filter (arus.core.rules.parse_filter) as a Column for `events.where(...)`.

    A null field makes its condition null, which `where` drops: the "does not hold" of the rules.
    """
    if isinstance(where, AllOf | AnyOf):
        join = operator.and_ if isinstance(where, AllOf) else operator.or_
        return functools.reduce(join, [filter_column(part) for part in where.parts])
    field = F.col(where.field)
    if where.op == "in":
        return field.isin(*where.values)
    if where.op == "not in":
        return ~field.isin(*where.values)
    result: Column = COMPARISONS[where.op](field, F.lit(where.values[0]))
    return result


def with_device_metadata(
    events: DataFrame, devices: DataFrame, key: str, prefix: str = "device_"
) -> DataFrame:
    """Each event joined with its device's row (left join: unknown devices keep nulls).

    # <event columns...>, <prefix><device-only columns...>
    A field both carry keeps the event's value and takes the device's only where the event has none;
    fields only the device has are added with `prefix`. `devices` must hold one row per key. With a
    streaming `events` and a static `devices` this is a stream-static join: each micro-batch joins
    against the dimension as it is then.
    """
    shared = [c for c in devices.columns if c in events.columns and c != key]
    extra = [c for c in devices.columns if c not in events.columns]
    dimension = devices.select(
        key,
        *[F.col(c).alias(f"_device_{c}") for c in shared],
        *[F.col(c).alias(f"{prefix}{c}") for c in extra],
    )
    return events.join(dimension, on=key, how="left").select(
        *[
            F.coalesce(F.col(c), F.col(f"_device_{c}")).alias(c) if c in shared else F.col(c)
            for c in events.columns
        ],
        *[f"{prefix}{c}" for c in extra],
    )


def parse_device_dimension(raw: DataFrame, schema: T.StructType, key: str) -> DataFrame:
    """Kafka rows of a compacted topic -> the latest value of each key; a tombstone removes the key.

    # <schema fields...>   (one row per key)
    Compaction keeps at least the latest record per key but may not have run yet, so the newest
    offset wins here (a key always lands in the same partition, so offsets order its versions).
    """
    latest = Window.partitionBy("_key").orderBy(F.col("offset").desc())
    parsed = F.from_json(F.col("value").cast("string"), schema)
    return (
        raw.select(F.col("key").cast("string").alias("_key"), "offset", parsed.alias("_d"))
        .withColumn("_rank", F.row_number().over(latest))
        .where((F.col("_rank") == 1) & F.col("_d").isNotNull() & F.col(f"_d.{key}").isNotNull())
        .select("_d.*")
    )


def with_schema(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Exactly the schema's columns in its order: cast where present, null where missing."""
    types = {f.name: f.dataType for f in df.schema.fields}

    def column(field: T.StructField) -> Column:
        if field.name not in types:
            return F.lit(None).cast(field.dataType).alias(field.name)
        if types[field.name] == field.dataType:
            # Re-aliasing a column to its own name after a stream-static join on it makes Spark 4.2
            # fail the micro-batch ("key not found: device_id#..."); an untouched column does not.
            return F.col(field.name)
        return F.col(field.name).cast(field.dataType).alias(field.name)

    return df.select(*[column(f) for f in schema.fields])
