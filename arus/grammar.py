"""The text forms config values take, parsed once: Spark's interval strings and the flat DDL of
[schemas].

    duration_us("2 minutes")                 # microseconds; window_us for a window's length
    parse_schema("a STRING NOT NULL, b DOUBLE") -> (Field, ...)

A base module beside arus.config (standard library only, no layer): the config checks every
duration and schema with these at load, and both engines read them through arus.core.rules and
arus.pyengine, so one grammar decides everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# --- durations ------------------------------------------------------------------------------------

# Spark's interval strings (IntervalUtils.stringToInterval, which window() and withWatermark() use),
# restricted to the units of fixed length: Spark refuses months and years for a window.
_UNIT_US = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 604_800_000_000,
}
_TERM = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?\s+([a-z]+)(?:\s+|$)")
_EXAMPLES = "(write e.g. '1 minute', '90 seconds' or '1 hour 30 minutes')"


def duration_us(text: str) -> int:
    """A Spark interval string ("1 minute", "90 seconds", "1 hour 30 minutes") in microseconds.

    Spark's grammar: case-insensitive, an optional leading "interval", then terms of a number,
    whitespace and a unit in the singular or plural; only seconds take a fraction ("1.5 seconds").
    Abbreviations ("1 min", "10s"), months, years and a negative total are refused, as Spark's
    window() refuses them. Zero is a valid watermark delay; a window must be longer (window_us).
    """
    body = text.strip().lower()
    if body.startswith("interval") and body[8:9].isspace():
        body = body[8:].lstrip()
    total, at = 0, 0
    while at < len(body):
        term = _TERM.match(body, at)
        if term is None:
            raise ValueError(f"not a duration: {text!r} {_EXAMPLES}")
        sign, whole, fraction, word = term.groups()
        unit = word.removesuffix("s") if word.removesuffix("s") in _UNIT_US else word
        if unit not in _UNIT_US or not (whole or fraction) or (fraction is not None and unit != "second"):
            raise ValueError(f"not a duration: {text!r} {_EXAMPLES}")
        # Spark keeps nanoseconds of a fraction (at most 9 digits) and drops what is below a microsecond.
        if fraction is not None and len(fraction) > 9:
            raise ValueError(f"not a duration: {text!r} {_EXAMPLES}")
        us = int(whole or 0) * _UNIT_US[unit] + int((fraction or "").ljust(6, "0")[:6])
        total += -us if sign == "-" else us
        at = term.end()
    if not body or total < 0:
        raise ValueError(f"not a duration: {text!r} {_EXAMPLES}")
    return total


def window_us(text: str) -> int:
    """A window length or slide: a duration longer than zero, as Spark's window() requires."""
    us = duration_us(text)
    if us <= 0:
        raise ValueError(f"a window must be longer than zero: {text!r}")
    return us


# --- schema --------------------------------------------------------------------------------------

# DDL type name -> Spark's simpleString, the name its error messages use.
DDL_TYPES = {
    "STRING": "string",
    "DOUBLE": "double",
    "FLOAT": "float",
    "REAL": "float",
    "BIGINT": "bigint",
    "LONG": "bigint",
    "INT": "int",
    "INTEGER": "int",
    "SMALLINT": "smallint",
    "SHORT": "smallint",
    "TINYINT": "tinyint",
    "BYTE": "tinyint",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",
}
_FIELD = re.compile(r"`?(?P<name>[A-Za-z_]\w*)`?\s+(?P<type>\w+)(?P<not_null>\s+NOT\s+NULL)?", re.I)


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # Spark's simple type name: "string", "double", "bigint", "timestamp", ...
    required: bool


def parse_schema(ddl: str) -> tuple[Field, ...]:
    """The flat Spark DDL of conf/ ("a STRING NOT NULL, b DOUBLE") as fields; NOT NULL = required."""
    fields = []
    for item in (part.strip() for part in ddl.split(",")):
        match = _FIELD.fullmatch(item)
        if not match or match["type"].upper() not in DDL_TYPES:
            raise ValueError(
                f"schema field {item!r} is not supported by the consumer "
                f"(flat fields of type {', '.join(sorted(set(DDL_TYPES)))})"
            )
        fields.append(Field(match["name"], DDL_TYPES[match["type"].upper()], bool(match["not_null"])))
    return tuple(fields)


def require(fields: Sequence[Field], name: str) -> tuple[Field, ...]:
    """The fields with `name` marked required: the consumer cannot window an event without a time."""
    if name not in {f.name for f in fields}:
        raise ValueError(f"field {name!r} is not in the schema")
    return tuple(Field(f.name, f.type, f.required or f.name == name) for f in fields)
