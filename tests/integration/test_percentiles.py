"""One percentile digest per field (issue 12): the same p50 and p95 as one digest per quantile, at
the default accuracy and at [aggregate] percentile_accuracy, which the stage passes through."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from arus.config import DEFAULT_CONFIG, load_config
from arus.core.stages import silver_to_gold

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# 400 distinct values in one window of one device: exact at 10000, approximate at 20.
VALUES = [float(i * 7919 % 400) for i in range(400)]


def test_one_digest_gives_each_quantile_of_its_own_digest(spark: SparkSession) -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    rows = [("d1", START + timedelta(milliseconds=50 * i), v) for i, v in enumerate(VALUES)]
    events = spark.createDataFrame(rows, "device_id string, event_time timestamp, value double")

    def quantiles(accuracy: int):
        job = dataclasses.replace(config.aggregate, percentile_accuracy=accuracy)
        return silver_to_gold(events, config.stream, job).select("device_id", "value_p50", "value_p95")

    def oracle(accuracy: int):
        # Spark's own percentile_approx, one digest per quantile, as the job computed them before.
        return events.groupBy("device_id").agg(
            F.percentile_approx("value", 0.5, accuracy).alias("value_p50"),
            F.percentile_approx("value", 0.95, accuracy).alias("value_p95"),
        )

    exact = sorted(VALUES)
    assert [tuple(r) for r in quantiles(10000).collect()] == [("d1", exact[199], exact[379])]
    for accuracy in (10000, 20):
        assert_df_equality(quantiles(accuracy), oracle(accuracy), ignore_nullable=True)
    coarse = quantiles(20).first()
    assert (coarse["value_p50"], coarse["value_p95"]) != (exact[199], exact[379])  # type: ignore[index]
