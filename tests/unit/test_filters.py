"""The --where grammar (arus.core.rules.parse_filter) and the kafka-python side of [clean] and of
filters (arus.pyengine.transform), without Spark; tests/integration/test_rules.py holds them
against Spark's Columns."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from arus.config import CleanConfig
from arus.core.rules import AllOf, AnyOf, Condition, FilterError, all_of, parse_filter
from arus.pyengine.transform import cleaned_types, cleaner, predicate, rounded

TYPES = {
    "kind": "string",
    "site": "string",
    "value": "double",
    "seq": "bigint",
    "ok": "boolean",
    "event_time": "timestamp",
}


def matches(text: str, event: dict[str, Any]) -> bool:
    return predicate(parse_filter(text, TYPES))(event)


# --- the grammar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("kind=temperature", Condition("kind", "=", ("temperature",))),
        ("value > 30", Condition("value", ">", (30.0,))),
        ("seq <= -2", Condition("seq", "<=", (-2,))),
        ("seq != 2.5", Condition("seq", "!=", (2.5,))),
        ("site = 'north east'", Condition("site", "=", ("north east",))),
        ('site = "it\\"s"', Condition("site", "=", ('it"s',))),
        ("site = 007", Condition("site", "=", ("007",))),  # a string field keeps the text as written
        ("ok = TRUE", Condition("ok", "=", (True,))),
        (
            "event_time >= '2026-03-01T19:00:00+07:00'",
            Condition("event_time", ">=", (datetime(2026, 3, 1, 12, tzinfo=UTC),)),
        ),
        ("site IN ('a', b ,'c')", Condition("site", "in", ("a", "b", "c"))),
        ("site not in (a)", Condition("site", "not in", ("a",))),
        (
            "value > 30 and site in ('north','east')",
            AllOf((Condition("value", ">", (30.0,)), Condition("site", "in", ("north", "east")))),
        ),
        # and binds tighter than or; parentheses group
        (
            "kind = a or kind = b and value < 1",
            AnyOf(
                (
                    Condition("kind", "=", ("a",)),
                    AllOf((Condition("kind", "=", ("b",)), Condition("value", "<", (1.0,)))),
                )
            ),
        ),
        (
            "(kind = a or kind = b) AND value < 1",
            AllOf(
                (
                    AnyOf((Condition("kind", "=", ("a",)), Condition("kind", "=", ("b",)))),
                    Condition("value", "<", (1.0,)),
                )
            ),
        ),
        ("((value>1e3))", Condition("value", ">", (1000.0,))),
    ],
)
def test_filters_parse_into_typed_conditions(text: str, parsed: object) -> None:
    assert parse_filter(text, TYPES) == parsed


@pytest.mark.parametrize(
    ("text", "column", "problem"),
    [
        ("", 1, "an empty filter"),
        ("value >", 8, "expected a value, found the end"),
        ("value > 30 and", 15, "expected a field name or '(', found the end"),
        ("value >> 3", 8, "expected a value, found '>'"),
        ("value == 3", 8, "expected a value, found '='"),
        ("value 3", 7, "expected =, !=, <, <=, >, >= or 'in', found '3'"),
        ("site not ('a')", 10, "expected 'in', found '('"),
        ("site in 'a'", 9, "expected '(' after 'in', found 'a'"),
        ("site in ('a' 'b')", 14, "expected ',' or ')', found 'b'"),
        ("(value > 1", 11, "expected ')', found the end"),
        ("value > 1 site = a", 11, "expected 'and', 'or' or the end, found 'site'"),
        ("site = 'north", 8, "unclosed quote"),
        ("value ! 3", 7, "unexpected character"),
        ("temprature > 30", 1, "no field 'temprature' in the schema"),
        ("value > hot", 9, "value is a double: compare it with a number, not 'hot'"),
        ("value > '30'", 9, "value is a double: compare it with a number, not '30'"),
        ("ok = yes", 6, "ok is a boolean: compare it with true or false"),
        ("event_time > 2026-03-01T12:00:00", 14, "event_time is a timestamp: compare it with an ISO-8601"),
        ("and = 1", 1, "expected a field name or '(', found 'and'"),
    ],
)
def test_a_bad_filter_is_refused_pointing_at_the_place(text: str, column: int, problem: str) -> None:
    with pytest.raises(FilterError) as refused:
        parse_filter(text, TYPES)
    assert refused.value.problem.startswith(problem)
    assert refused.value.at == column - 1
    message = str(refused.value).splitlines()
    assert message[0] == f"{refused.value.problem} at column {column}:"
    assert message[1:] == [f"  {text}", "  " + " " * (column - 1) + "^"]


def test_repeated_filters_must_all_hold() -> None:
    a, b = parse_filter("kind = a", TYPES), parse_filter("value > 1", TYPES)
    assert all_of([]) is None
    assert all_of([a]) == a
    assert all_of([a, b]) == AllOf((a, b))


# --- the Python predicate -------------------------------------------------------------------------------

EVENT = {"kind": "temperature", "site": "north", "value": 31.5, "seq": 7, "ok": True, "event_time": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value > 30", True),
        ("value > 31.5", False),
        ("value >= 31.5", True),
        ("value = 31.50", True),  # numbers compare as numbers, not as text
        ("value < 100", True),  # as text "31.5" > "100"
        ("seq > 6.5 and seq < 7.5", True),
        ("seq in (1, 7)", True),
        ("seq in (7.0)", True),
        ("seq not in (1, 2)", True),
        ("site in ('north', 'east') and kind = temperature", True),
        ("site in ('south', 'east') or kind = humidity", False),
        ("(site = south or value > 30) and ok = true", True),
        ("site > 'n' and site < 'o'", True),
        ("kind = Temperature", False),  # strings compare exactly (cleaning lower-cases the event first)
        ("ok != false", True),
        # A null field fails every condition on it, != and not in included (SQL's three-valued logic).
        ("event_time < '2030-01-01T00:00:00Z'", False),
        ("event_time != '2030-01-01T00:00:00Z'", False),
        ("missing_in_event != 3", False),
        ("event_time > '2000-01-01T00:00:00Z' or kind = temperature", True),
    ],
)
def test_the_predicate_keeps_what_the_filter_says(text: str, expected: bool) -> None:
    types = {**TYPES, "missing_in_event": "bigint"}
    assert predicate(parse_filter(text, types))(EVENT) is expected


def test_nan_equals_nan_and_is_above_every_number_as_in_spark() -> None:
    nan = {"value": math.nan}
    assert [matches(t, nan) for t in ("value > 1e308", "value = 1", "value != 1", "value < 0")] == [
        True,
        False,
        True,
        False,
    ]
    assert matches("value not in (1, 2)", nan) and not matches("value in (1, 2)", nan)


def test_timestamps_compare_as_instants() -> None:
    event = {"event_time": datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)}
    assert matches("event_time > 2026-03-01T12:00:00Z", event)
    assert not matches("event_time > '2026-03-01T19:00:01+07:00'", event)


# --- [clean] on one event -------------------------------------------------------------------------------

CLEAN = CleanConfig(name_fields=("kind", "site"), unit_field="unit", value_fields=("value",), decimals=3)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"kind": " Temperature ", "site": "JAKARTA", "unit": " F ", "value": 98.6},
            {"kind": "temperature", "site": "jakarta", "unit": "C", "value": 37.0},
        ),
        ({"kind": "\tx ", "unit": "kPa", "value": 101.325}, {"kind": "\tx", "unit": "hPa", "value": 1013.25}),
        ({"unit": "K", "value": 300.0}, {"unit": "C", "value": 26.85}),
        ({"unit": " lux ", "value": 1.23456}, {"unit": "lux", "value": 1.235}),
        ({"unit": None, "value": 2.0005}, {"unit": None, "value": 2.001}),
        ({"unit": "c", "value": None}, {"unit": "C", "value": None}),
        ({"unit": "w", "value": 7}, {"unit": "W", "value": 7.0}),  # with a unit field, a double
        ({"value": 7}, {"value": 7}),  # without one, an integer stays one
        ({"site": 12.5}, {"site": "12.5"}),  # trim casts to a string
        ({"other": " X "}, {"other": " X "}),
    ],
)
def test_an_event_is_cleaned_as_the_spark_job_cleans_a_row(
    event: dict[str, Any], expected: dict[str, Any]
) -> None:
    cleaned = cleaner(CLEAN)(event)
    assert cleaned == expected
    assert [type(v) for v in cleaned.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (2.675, 2, 2.68),  # half-up on the shortest text; Python's round gives 2.67
        (-2.675, 2, -2.68),
        (0.0005, 3, 0.001),
        (-0.0001, 3, 0.0),
        (1e300, 3, 1e300),
        (123.456, 0, 123.0),
        (1.5, 3, 1.5),
        (math.inf, 3, math.inf),
        (12, 3, 12),
    ],
)
def test_values_round_half_up_as_spark_rounds(value: float, decimals: int, expected: float) -> None:
    got = rounded(value, decimals)
    assert got == expected and type(got) is type(expected)
    assert math.copysign(1, got) == math.copysign(1, expected)


def test_nan_stays_nan() -> None:
    assert math.isnan(rounded(math.nan, 3))


def test_a_filter_compares_with_cleaned_types() -> None:
    types = {"kind": "bigint", "unit": "string", "value": "bigint", "seq": "bigint"}
    assert cleaned_types(types, CLEAN) == {
        "kind": "string",
        "unit": "string",
        "value": "double",
        "seq": "bigint",
    }
    assert cleaned_types({"value": "bigint"}, CLEAN) == {"value": "bigint"}
