"""The rules both engines share: one definition, imported by the Spark path and the kafka-python path.

    record_limits(stream) -> RecordLimits        # the [stream.guards] record guards as plain values
    check_deadletter_ratio(bad, total, ...)      # the circuit breaker, per micro-batch or poll batch
    MISSING_FIELD.format(name=...) ...           # dead-letter reasons, word for word
    KEY_SEPARATOR, KEY_TIME_FORMAT               # the output record key
    DEAD_LETTER_HEADERS, LATE_HEADERS            # Kafka header names, in the order both write them
    UNITS                                        # [clean]'s known units and their conversions
    parse_filter("value > 30 and site in ('north', 'east')", types) -> Filter   # --where

The Spark side builds Columns from these (arus.core.transforms, arus.core.late); the kafka-python
side (arus.pyengine) builds values; tests/integration/test_rules.py feeds the same edge cases to both.
Durations and schemas have their one grammar in arus.grammar, beside arus.config, which checks every
configured value with it at load.
Standard library and arus.config only (neither imports Spark), so the kafka-python engine and the
producers never start a JVM for them.
"""

from __future__ import annotations

import argparse
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arus.config import ConfigError, StreamConfig

# --- where a record is --------------------------------------------------------------------------

Partition = tuple[str, int]  # topic, partition
RecordPosition = tuple[str, int, int]  # topic, partition, offset: one record


# --- time -----------------------------------------------------------------------------------------


def aware_time(text: str) -> datetime:
    """An ISO-8601 time with a zone, as UTC: argparse's `type=` for --since, --until, --start.

    A time without a zone is refused rather than guessed, since event time is always UTC-aware.
    """
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return at.astimezone(UTC)


# How a timestamp is written as text in output values and headers: Spark's pattern (to_json's
# timestampFormat, date_format; the session zone is UTC, so XXX writes Z) and time_text's result.
TIME_PATTERN = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"


def time_text(at: datetime) -> str:
    """`at` as Spark writes it with TIME_PATTERN: UTC, milliseconds, Z (2024-05-01T12:00:00.000Z).

    The one form of a time as text: output values and headers, producers' event times, metrics.
    A naive time is refused rather than read as the machine's local time.
    """
    if at.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the circuit breaker --------------------------------------------------------------------------


class GuardError(RuntimeError):
    """A job must not start or go on; the message says why and what to do."""


def check_deadletter_ratio(bad: int, total: int, max_ratio: float, min_records: int, batch_id: int) -> None:
    """The circuit breaker: a micro-batch with too large a share of bad records stops the job."""
    if total >= max(min_records, 1) and bad / total > max_ratio:
        raise GuardError(
            f"circuit breaker: {bad} of {total} records in micro-batch {batch_id} are bad "
            f"({bad / total:.0%} > max_deadletter_ratio {max_ratio:.0%}); is the upstream broken? "
            "Nothing of this batch was written; fix the source or raise [stream.guards] "
            "max_deadletter_ratio, then restart on the same checkpoint"
        )


# --- record limits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordLimits:
    """Bounds past which a record that parses is still dead-lettered (None: no bound).

    Event time is checked against `earliest` and against the record's own Kafka timestamp, so a
    replay of old data decides the same way every time.
    """

    event_time: str
    max_bytes: int | None = None
    earliest: datetime | None = None
    max_ahead_s: int | None = None


def record_limits(stream: StreamConfig) -> RecordLimits:
    """The stream's [stream.guards] as the plain values both engines check records against."""
    guards = stream.guards
    earliest = None
    if guards.min_event_time:
        try:
            earliest = datetime.fromisoformat(guards.min_event_time)
        except ValueError:
            earliest = None
        if earliest is None or earliest.tzinfo is None:
            raise ConfigError(
                "[stream.guards] min_event_time must be an ISO-8601 time with a zone, "
                f"got {guards.min_event_time!r}"
            )
    return RecordLimits(
        event_time=stream.event_time_field,
        max_bytes=guards.max_record_bytes or None,
        earliest=earliest,
        max_ahead_s=guards.max_event_ahead_s or None,
    )


# --- dead-letter reasons --------------------------------------------------------------------------

# Checked in this order; the first that holds is the record's reason (the `error` header and column).
TOO_LARGE = "larger than {max_bytes} bytes"
EMPTY_VALUE = "empty value"
NOT_UTF8 = "not UTF-8"
NOT_JSON_OBJECT = "not a JSON object"
MISSING_FIELD = "missing required field {name}"  # per schema field, in schema order
EMPTY_FIELD = "empty required field {name}"
WRONG_TYPE = "wrong type for field {name}: expected {type}"  # {type} is Spark's simpleString
BEFORE_EARLIEST = "event time before {earliest}"  # earliest: isoformat()
TOO_FAR_AHEAD = "event time more than {max_ahead_s} s ahead of the Kafka timestamp"
LATE = "late"  # the `reason` header of a late event


# --- the output record key ------------------------------------------------------------------------

# <key fields as strings, nulls skipped>|<window start>: concat_ws("|", ...) in Spark.
KEY_SEPARATOR = "|"
KEY_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # strftime of the window start, in UTC
KEY_TIME_PATTERN = "yyyy-MM-dd'T'HH:mm:ss'Z'"  # the same text as Spark's date_format pattern


def aggregate_key(parts: Sequence[str], window_start: datetime) -> str:
    """The record key of an aggregate from its key fields, already cast to strings (nulls left out)."""
    return KEY_SEPARATOR.join([*parts, window_start.astimezone(UTC).strftime(KEY_TIME_FORMAT)])


# --- Kafka headers --------------------------------------------------------------------------------

Header = tuple[str, bytes]

ERROR_HEADER = "error"
REASON_HEADER = "reason"
EVENT_TIME_HEADER = "event_time"
WATERMARK_HEADER = "watermark"
SOURCE_HEADERS = ("source_topic", "source_partition", "source_offset")
# A dead letter: error, then where it was read; a late event: why, when, the watermark, where.
DEAD_LETTER_HEADERS = (ERROR_HEADER, *SOURCE_HEADERS)
LATE_HEADERS = (REASON_HEADER, EVENT_TIME_HEADER, WATERMARK_HEADER, *SOURCE_HEADERS)


def _headers(names: Sequence[str], values: Sequence[object]) -> list[Header]:
    return [(name, str(value).encode()) for name, value in zip(names, values, strict=True)]


def dead_letter_headers(error: str, at: RecordPosition) -> list[Header]:
    """The headers of a dead letter read at `at`, as the Spark job's dead_letter_records writes them."""
    return _headers(DEAD_LETTER_HEADERS, (error, *at))


def late_headers(event_time: datetime, watermark: datetime, at: RecordPosition) -> list[Header]:
    """The headers of a late event read at `at`, as the Spark job's late_records writes them."""
    return _headers(LATE_HEADERS, (LATE, time_text(event_time), time_text(watermark), *at))


# --- cleaning ([clean]) ---------------------------------------------------------------------------

# A known unit, lower-cased and trimmed of spaces -> (canonical unit, shift, factor): canonical value
# = (value + shift) * factor, a double. arus.core.clean builds Spark map literals from it,
# arus.pyengine.transform looks units up in it. An unknown unit is kept as sent, trimmed.
UNITS: dict[str, tuple[str, float, float]] = {
    **dict.fromkeys(("c", "°c", "degc", "celsius"), ("C", 0.0, 1.0)),
    **dict.fromkeys(("f", "°f", "degf", "fahrenheit"), ("C", -32.0, 5.0 / 9.0)),
    **dict.fromkeys(("k", "kelvin"), ("C", -273.15, 1.0)),
    **dict.fromkeys(("hpa", "mbar"), ("hPa", 0.0, 1.0)),
    "kpa": ("hPa", 0.0, 10.0),
    "pa": ("hPa", 0.0, 0.01),
    "bar": ("hPa", 0.0, 1000.0),
    "w": ("W", 0.0, 1.0),
    "kw": ("W", 0.0, 1000.0),
    **dict.fromkeys(("%", "pct", "percent", "%rh"), ("%", 0.0, 1.0)),
}


# --- filters (--where) ----------------------------------------------------------------------------

# One grammar, parsed here into typed conditions; arus.core.clean.filter_column makes the Spark
# Column of a Filter and arus.pyengine.transform.predicate the Python function, so both engines
# keep the same events:
#
#     filter     := all ("or" all)*
#     all        := term ("and" term)*
#     term       := "(" filter ")" | FIELD OP value | FIELD ["not"] "in" "(" value ("," value)* ")"
#     OP         := "=" | "!=" | "<" | "<=" | ">" | ">="
#     value      := a number, a 'quoted' or "quoted" string, or a bare word (kind=temperature)
#
# Keywords are case-insensitive. A value takes its field's schema type: a number for a numeric
# field (compared as numbers), true/false for a boolean, an ISO-8601 time with a zone for a
# timestamp, text for a string. A condition on a field that is null (or absent) does not hold,
# whatever the operator, as SQL's three-valued logic filters it; NaN equals NaN and is above every
# number, as in Spark. There is no general "not": with only and/or over conditions, a null condition
# read as false gives exactly SQL's result, which a negation of a null would not.

FilterValue = str | int | float | bool | datetime
# Python's comparison operators, which a Spark Column overloads too (col > lit is GreaterThan).
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
NUMERIC_TYPES = ("double", "float", "bigint", "int", "smallint", "tinyint")


@dataclass(frozen=True)
class Condition:
    """FIELD OP value, or FIELD [not] in (values...): one value for a comparison."""

    field: str
    op: str  # one of COMPARISONS, "in" or "not in"
    values: tuple[FilterValue, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Filter, ...]


Filter = Condition | AllOf | AnyOf


class FilterError(ValueError):
    """A filter that does not parse or does not fit the schema; the message points at the place."""

    def __init__(self, text: str, at: int, problem: str) -> None:
        super().__init__(f"{problem} at column {at + 1}:\n  {text}\n  {' ' * at}^")
        self.at = at
        self.problem = problem


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>!=|<=|>=|=|<|>|\(|\)|,)
      | (?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<word>[^\s()',"=<>!]+)
    )""",
    re.X,
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_FIELD_NAME = re.compile(r"[A-Za-z_]\w*")
_KEYWORDS = ("and", "or", "not", "in")


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "quoted", "word" or "end"
    text: str
    at: int

    def keyword(self, word: str) -> bool:
        return self.kind == "word" and self.text.lower() == word


def _tokens(text: str) -> list[_Token]:
    tokens, at = [], 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None or match.lastgroup is None:
            start = len(text) - len(text[at:].lstrip())
            raise FilterError(
                text, start, "unclosed quote" if text[start] in "'\"" else "unexpected character"
            )
        tokens.append(_Token(match.lastgroup, match[match.lastgroup], match.start(match.lastgroup)))
        at = match.end()
    return [*tokens, _Token("end", "", len(text.rstrip()))]


class _Parser:
    """Recursive descent over the tokens, one method per rule of the grammar."""

    def __init__(self, text: str, types: Mapping[str, str]) -> None:
        self.text, self.types = text, types
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def next(self) -> _Token:
        return self.tokens[self.i]

    def fail(self, token: _Token, problem: str) -> FilterError:
        found = {"end": "the end", "quoted": token.text}.get(token.kind, repr(token.text))
        return FilterError(self.text, token.at, f"{problem}, found {found}")

    def take(self, op: str, what: str) -> None:
        if self.next.kind != "op" or self.next.text != op:
            raise self.fail(self.next, f"expected {what}")
        self.i += 1

    def parse(self) -> Filter:
        result = self.any_of()
        if self.next.kind != "end":
            raise self.fail(self.next, "expected 'and', 'or' or the end")
        return result

    def any_of(self) -> Filter:
        return self.joined("or", self.all_of, AnyOf)

    def all_of(self) -> Filter:
        return self.joined("and", self.term, AllOf)

    def joined(self, word: str, part: Callable[[], Filter], node: type[AllOf | AnyOf]) -> Filter:
        parts = [part()]
        while self.next.keyword(word):
            self.i += 1
            parts.append(part())
        return parts[0] if len(parts) == 1 else node(tuple(parts))

    def term(self) -> Filter:
        if self.next.kind == "op" and self.next.text == "(":
            self.i += 1
            inner = self.any_of()
            self.take(")", "')'")
            return inner
        name = self.next
        if name.kind != "word" or not _FIELD_NAME.fullmatch(name.text) or name.text.lower() in _KEYWORDS:
            raise self.fail(name, "expected a field name or '('")
        if name.text not in self.types:
            known = ", ".join(sorted(self.types))
            raise FilterError(self.text, name.at, f"no field {name.text!r} in the schema (fields: {known})")
        self.i += 1
        op = self.next
        if op.kind == "op" and op.text in COMPARISONS:
            self.i += 1
            return Condition(name.text, op.text, (self.value(name.text),))
        negated = op.keyword("not")
        if negated:
            self.i += 1
        if not self.next.keyword("in"):
            raise self.fail(self.next, "expected 'in'" if negated else "expected =, !=, <, <=, >, >= or 'in'")
        self.i += 1
        self.take("(", "'(' after 'in'")
        values = [self.value(name.text)]
        while self.next.kind == "op" and self.next.text == ",":
            self.i += 1
            values.append(self.value(name.text))
        self.take(")", "',' or ')'")
        return Condition(name.text, "not in" if negated else "in", tuple(values))

    def value(self, field: str) -> FilterValue:
        token = self.next
        if token.kind not in ("word", "quoted"):
            raise self.fail(token, "expected a value")
        self.i += 1
        text = token.text
        if token.kind == "quoted":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        kind = self.types[field]
        try:
            return _typed(text, kind, token.kind == "quoted")
        except ValueError as exc:
            raise FilterError(self.text, token.at, f"{field} is a {kind}: {exc}") from None


def _typed(text: str, kind: str, quoted: bool) -> FilterValue:
    """A filter value as its field's type (ValueError saying what it must be)."""
    if kind in NUMERIC_TYPES:
        if quoted or not _NUMBER.fullmatch(text):
            raise ValueError(f"compare it with a number, not {text!r}")
        # A whole number stays exact for an integer field (within a BIGINT, as Spark's literals are).
        if _INTEGER.fullmatch(text) and kind not in ("double", "float") and abs(int(text)) < 2**63:
            return int(text)
        return float(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"compare it with true or false, not {text!r}")
        return text.lower() == "true"
    if kind == "timestamp":
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise ValueError(
                f"compare it with an ISO-8601 time with a zone, e.g. 2026-03-01T12:00:00Z, not {text!r}"
            )
        return at.astimezone(UTC)
    return text


def parse_filter(text: str, types: Mapping[str, str]) -> Filter:
    """A --where expression as typed conditions; `types` maps each field a filter may name to its
    Spark simple type name (arus.grammar.Field.type). FilterError points at what is wrong."""
    if not text.strip():
        raise FilterError(text, 0, "an empty filter")
    return _Parser(text, types).parse()


def all_of(filters: Sequence[Filter]) -> Filter | None:
    """Several filters that must all hold (repeated --where) as one; None for none."""
    if len(filters) <= 1:
        return filters[0] if filters else None
    return AllOf(tuple(filters))
