"""The consumer's window statistics against definitions computed independently here."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from arus.pyengine.windowing import Stats, percentile


def smallest_with_at_least(values: list[float], p: float) -> float:
    """The definition, by brute force: the smallest v with at least p of the values <= v."""
    return min(v for v in values if sum(x <= v for x in values) >= p * len(values))


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [
        ([7.0], 7.0, 7.0),
        ([1.0, 3.0], 1.0, 3.0),  # the lower of two, not their mean
        ([1.0, 2.0, 3.0, 4.0], 2.0, 4.0),
        ([4.0, 1.0, 3.0, 2.0, 5.0], 3.0, 5.0),
        ([2.0, 2.0, 2.0, 9.0], 2.0, 9.0),
        ([float(i) for i in range(1, 21)], 10.0, 19.0),  # 0.95 * 20 = 19: the 19th value
        ([float(i) for i in range(1, 101)], 50.0, 95.0),
    ],
)
def test_percentiles_follow_spark_percentile_approx_on_few_values(
    values: list[float], p50: float, p95: float
) -> None:
    ordered = sorted(values)
    assert (percentile(ordered, 0.5), percentile(ordered, 0.95)) == (p50, p95)


def test_percentiles_match_the_definition_on_random_windows() -> None:
    rng = random.Random(11)
    for _ in range(300):
        values = [round(rng.uniform(-50, 50), rng.choice([0, 1, 3])) for _ in range(rng.randint(1, 60))]
        ordered = sorted(values)
        for p in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99):
            assert percentile(ordered, p) == smallest_with_at_least(values, p), (values, p)


def test_extreme_percentiles_are_the_minimum_and_maximum() -> None:
    ordered = [1.0, 2.0, 3.0]
    assert percentile(ordered, 0.0) == 1.0
    assert percentile(ordered, 1.0) == 3.0


def test_stats_against_the_statistics_module() -> None:
    rng = random.Random(5)
    for n in (1, 2, 3, 10, 57):
        values = [rng.gauss(20, 4) for _ in range(n)]
        stats = Stats()
        for v in values:
            stats.add(v)
        got = stats.result("value")
        assert got["value_mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert (got["value_min"], got["value_max"]) == (min(values), max(values))
        if n == 1:
            assert got["value_stddev"] is None  # stddev_samp of one value is null in Spark
        else:
            assert got["value_stddev"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert got["value_p50"] == smallest_with_at_least(values, 0.5)
        assert got["value_p95"] == smallest_with_at_least(values, 0.95)


def test_identical_values_have_a_stddev_of_exactly_zero() -> None:
    stats = Stats()
    for _ in range(5):
        stats.add(0.1)
    assert stats.result("v")["v_stddev"] == 0.0


def test_null_values_are_skipped_and_a_field_with_only_nulls_has_null_metrics() -> None:
    stats = Stats()
    stats.add(None)
    assert set(stats.result("v").values()) == {None}
    stats.add(4.0)
    stats.add(None)
    stats.add(6.0)
    got = stats.result("v")
    assert (got["v_mean"], got["v_min"], got["v_max"], got["v_p50"]) == (5.0, 4.0, 6.0, 4.0)
    assert math.isclose(got["v_stddev"] or 0.0, math.sqrt(2))


def test_nan_sorts_above_every_value_as_in_spark() -> None:
    stats = Stats()
    for v in (3.0, math.nan, 1.0, math.inf):
        stats.add(v)
    got = stats.result("v")
    assert (got["v_min"], got["v_p50"]) == (1.0, 3.0)
    assert all(math.isnan(got[f"v_{m}"] or 0.0) for m in ("max", "mean", "stddev", "p95"))
