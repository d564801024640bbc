"""Kafka record values parsed in plain Python exactly as the Spark job parses them.

    fields = parse_schema(config.schema("iot_reading"))   # arus.grammar; the DDL in conf/arus.toml
    event = parse_record(value, kafka_timestamp_ms, fields, limits)   # or InvalidRecord(reason)

arus.core.transforms.parse_events decides with from_json, get_json_object and json_object_keys what is
good and why the rest is bad; this module gives the same verdict, the same reason text and the same
field values, so the kafka-python consumer dead-letters exactly the records the Spark job does. The
rules below follow Spark's JSON reader (Jackson with Spark's options): a JSON object is read up to
its closing brace and anything after it ignored; strings may be single-quoted; a number in a string
field becomes its canonical text; timestamps follow Spark's string-to-timestamp rules in the UTC
session zone, or count seconds when written as an integer. One known gap: Python datetimes stop at
the year 9999, so later (or BCE) times are dead-lettered here and accepted by Spark.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arus.core.rules import (
    BEFORE_EARLIEST,
    EMPTY_FIELD,
    EMPTY_VALUE,
    MISSING_FIELD,
    NOT_JSON_OBJECT,
    NOT_UTF8,
    TOO_FAR_AHEAD,
    TOO_LARGE,
    WRONG_TYPE,
    RecordLimits,
)
from arus.grammar import Field

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class InvalidRecord(ValueError):
    """A record that goes to the dead-letter topic; `reason` is the Spark job's text for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- schema ---------------------------------------------------------------------------------------

# What Jackson's getLongValue/getIntValue/getShortValue/getByteValue accept; a byte may be written
# unsigned (128..255) and wraps.
_INT_RANGES = {
    "bigint": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "tinyint": (-(2**7), 2**8 - 1),
}
# --- JSON as Spark's Jackson reads it ----------------------------------------------------------------


_INTEGER = re.compile(r"-?\d+")


class _Number(str):
    """A JSON number's own text, so each field type can read it as Jackson would."""


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order, duplicates kept (Spark's reader sees every one)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(
    parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant, object_pairs_hook=_Object
)


def _double_quoted(text: str) -> str | None:
    """Single-quoted strings (which Spark's reader accepts) rewritten as JSON; None if there are none."""
    out: list[str] = []
    i, n, changed = 0, len(text), False
    while i < n:
        c = text[i]
        if c not in "\"'":
            out.append(c)
            i += 1
            continue
        j, chunk = i + 1, []
        while j < n and text[j] != c:
            if text[j] == "\\" and j + 1 < n:
                chunk.append("'" if c == "'" and text[j + 1] == "'" else text[j : j + 2])
                j += 2
                continue
            chunk.append('\\"' if text[j] == '"' else text[j])
            j += 1
        if j >= n:
            return None
        changed = changed or c == "'"
        out.append('"' + "".join(chunk) + '"')
        i = j + 1
    return "".join(out) if changed else None


def _first_json_value(text: str) -> Any:
    """The JSON value at the start of `text`; what follows it is ignored, as Spark's reader does."""
    start = 0 if text[:1] == "{" else len(text) - len(text.lstrip(" \t\n\r"))
    try:
        return _DECODER.raw_decode(text, start)[0]
    except ValueError:
        requoted = _double_quoted(text)
        if requoted is None:
            raise
        return _DECODER.raw_decode(requoted, start)[0]


def _canonical(value: Any) -> str:
    """A JSON value re-written as Jackson copies it into a string field: compact, numbers canonical."""
    if isinstance(value, _Number):
        if _INTEGER.fullmatch(value):
            return str(int(value))
        return java_double(float(value))
    if isinstance(value, _Object):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_canonical(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# --- timestamps as Spark's stringToTimestamp reads them ------------------------------------------------

# java.time.ZoneId.SHORT_IDS, which Spark passes to ZoneId.of.
_SHORT_IDS = {
    "EST": "-05:00",
    "HST": "-10:00",
    "MST": "-07:00",
    "ACT": "Australia/Darwin",
    "AET": "Australia/Sydney",
    "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo",
    "AST": "America/Anchorage",
    "BET": "America/Sao_Paulo",
    "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare",
    "CNT": "America/St_Johns",
    "CST": "America/Chicago",
    "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa",
    "ECT": "Europe/Paris",
    "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "MIT": "Pacific/Apia",
    "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi",
    "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico",
    "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh",
}
_OFFSET = re.compile(r"([+-])(\d)|([+-])(\d\d)(?::?(\d\d)(?::?(\d\d))?)?")


def _zone_offset(text: str) -> timezone:
    """java.time.ZoneOffset.of: +h, +hh, +hhmm, +hh:mm, +hhmmss, +hh:mm:ss, at most 18 hours."""
    if len(text) not in (2, 3, 5, 6, 7, 9) or not _OFFSET.fullmatch(text):
        raise ValueError(f"not an offset: {text!r}")
    if (len(text) in (6, 9) and text[3] != ":") or (len(text) == 9 and text[6] != ":"):
        raise ValueError(f"not an offset: {text!r}")
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[:2] if len(digits) > 1 else digits), 0, 0
    if len(digits) >= 4:
        minutes = int(digits[2:4])
    if len(digits) == 6:
        seconds = int(digits[4:6])
    if minutes > 59 or seconds > 59 or hours * 3600 + minutes * 60 + seconds > 18 * 3600:
        raise ValueError(f"offset out of range: {text!r}")
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes, seconds=seconds))


def zone_id(name: str) -> tzinfo:
    """Spark's DateTimeUtils.getZoneId: java.time.ZoneId.of with the short ids."""
    name = re.sub(r"([+-])(\d):", r"\g<1>0\2:", name, count=1)
    name = re.sub(r"([+-])(\d\d):(\d)$", r"\1\2:0\3", name, count=1)
    name = _SHORT_IDS.get(name, name)
    if name == "Z" or name in ("UTC", "GMT", "UT"):
        return UTC
    if name[:1] in ("+", "-"):
        return _zone_offset(name)
    for prefix in ("UTC", "GMT", "UT"):
        if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1] in ("+", "-"):
            return _zone_offset(name[len(prefix) :])
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9~/._+-]+", name):
        raise ValueError(f"not a zone: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown zone: {name!r}") from None


def _valid_digits(segment: int, digits: int) -> bool:
    return (
        segment == 6
        or (segment == 0 and 4 <= digits <= 6)
        or (segment == 7 and digits <= 2)
        or (segment not in (0, 6, 7) and 0 < digits <= 2)
    )


def _timestamp_segments(s: str) -> tuple[list[int], str | None, bool]:
    """A port of Spark's DateTimeUtils.parseTimestampString: year, month, day, hour, minute,
    second, microsecond; the zone text; whether only a time was given. ValueError if unparseable."""
    bad = ValueError(f"not a timestamp: {s!r}")
    segments = [1, 1, 1, 0, 0, 0, 0, 0, 0]
    i = value = digits = digits_fraction = 0
    j, end = 0, len(s)
    while j < end and (ord(s[j]) < 33 or ord(s[j]) == 127):
        j += 1
    while end > j and (ord(s[end - 1]) < 33 or ord(s[end - 1]) == 127):
        end -= 1
    if j == end:
        raise bad
    tz: str | None = None
    just_time = False
    year_sign: int | None = None
    if s[j] in "+-":
        year_sign = -1 if s[j] == "-" else 1
        j += 1

    def close(segment: int) -> None:
        nonlocal value, digits
        if not _valid_digits(segment, digits):
            raise bad
        segments[segment] = value
        value = digits = 0

    while j < end:
        b = s[j]
        if not "0" <= b <= "9":
            if j == 0 and b == "T":
                just_time = True
                i += 3
            elif i < 2:
                if b == "-":
                    close(i)
                    i += 1
                elif i == 0 and b == ":" and year_sign is None:
                    just_time = True
                    close(3)
                    i = 4
                else:
                    raise bad
            elif i == 2:
                if b not in " T":
                    raise bad
                close(i)
                i += 1
            elif i in (3, 4):
                if b != ":":
                    raise bad
                close(i)
                i += 1
            elif i in (5, 6):
                if b == "." and i == 5:
                    close(i)
                    i += 1
                else:
                    close(i)
                    i += 1
                    tz = s[j:end]
                    j = end - 1
                if i == 6 and b != ".":
                    i += 1
            elif i < 9 and b in ": ":
                close(i)
                i += 1
            else:
                raise bad
        else:
            if i == 6:
                digits_fraction += 1
            if i != 6 or digits < 6:
                value = value * 10 + ord(b) - 48
            digits += 1
        j += 1
    close(i)
    while digits_fraction < 6:
        segments[6] *= 10
        digits_fraction += 1
    segments[0] *= year_sign or 1
    return segments, tz, just_time


def _string_to_timestamp(s: str) -> datetime:
    segments, tz_text, just_time = _timestamp_segments(s)
    zone = zone_id(tz_text.strip(" \t\n\r")) if tz_text is not None else UTC
    clock = time(segments[3], segments[4], segments[5], segments[6])
    day = datetime.now(zone).date() if just_time else date(segments[0], segments[1], segments[2])
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


# The common shapes, on which Spark and datetime.fromisoformat agree; the rest takes the port.
_ISO_SHAPE = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{3}(?:\d{3})?)?(?:Z|[+-](?:0\d|1[0-7]):[0-5]\d)?"
)


def parse_timestamp(text: str) -> datetime:
    """A timestamp string as Spark's JSON reader takes it (session zone UTC); ValueError where
    Spark gives null. Like Spark, it retries without any "GMT" before giving up."""
    if _ISO_SHAPE.fullmatch(text):
        at = datetime.fromisoformat(text)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    try:
        return _string_to_timestamp(text)
    except ValueError:
        if "GMT" not in text:
            raise
        return _string_to_timestamp(text.replace("GMT", ""))


# --- values -------------------------------------------------------------------------------------------


def _float32(x: float) -> float:
    if math.isfinite(x) and abs(x) > 3.4028235677973366e38:
        return math.copysign(math.inf, x)
    return float(struct.unpack("f", struct.pack("f", x))[0])


_NON_NUMERIC = {
    "NaN": math.nan,
    "+INF": math.inf,
    "+Infinity": math.inf,
    "Infinity": math.inf,
    "-INF": -math.inf,
    "-Infinity": -math.inf,
}


def _to_string(value: Any) -> str:
    return value if type(value) is str else _canonical(value)


def _to_double(value: Any) -> float:
    if isinstance(value, _Number):
        return float(value)
    if type(value) is str and value in _NON_NUMERIC:
        return _NON_NUMERIC[value]
    raise ValueError(value)


def _to_float(value: Any) -> float:
    return _float32(_to_double(value))


def _to_integer(type_name: str) -> Any:
    low, high = _INT_RANGES[type_name]

    def to_integer(value: Any) -> int:
        if not isinstance(value, _Number) or not _INTEGER.fullmatch(value):
            raise ValueError(value)
        number = int(value)
        if not low <= number <= high:
            raise ValueError(value)
        return number - 256 if type_name == "tinyint" and number > 127 else number

    return to_integer


def _to_boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _to_timestamp(value: Any) -> datetime:
    if isinstance(value, _Number):
        if not _INTEGER.fullmatch(value):
            raise ValueError(value)
        return EPOCH + timedelta(seconds=int(value))
    if type(value) is not str or not value:
        raise ValueError(value)
    return parse_timestamp(value)


# Spark type name -> how its reader converts a non-null JSON value (ValueError where it fails).
_CONVERTERS: dict[str, Any] = {
    "string": _to_string,
    "double": _to_double,
    "float": _to_float,
    **{name: _to_integer(name) for name in _INT_RANGES},
    "boolean": _to_boolean,
    "timestamp": _to_timestamp,
}


def _unsupported(value: Any) -> Any:
    raise ValueError(f"no conversion for {value!r}")


def convert(value: Any, type_name: str) -> Any:
    """A non-null JSON value as Spark's reader converts it; ValueError where Spark fails the field."""
    return _CONVERTERS.get(type_name, _unsupported)(value)


def parse_event(value: bytes | None, fields: Sequence[Field]) -> dict[str, Any]:
    """A Kafka record value -> the schema's fields (absent ones None), or InvalidRecord.

    The checks and reasons are arus.core.transforms.parse_json_error's, in its order: empty value,
    not UTF-8, not a JSON object, then per field: missing required field, empty required string,
    wrong type. A field written twice takes its last value that converts, as Spark's reader does.
    """
    if not value:
        raise InvalidRecord(EMPTY_VALUE)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRecord(NOT_UTF8) from None
    try:
        doc = _first_json_value(text)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, _Object):
        raise InvalidRecord(NOT_JSON_OBJECT)
    members = dict(doc)
    if len(members) < len(doc):  # a member written more than once: Spark's rule for each such field
        return _with_repeated_members(doc, fields)
    event: dict[str, Any] = {}
    for name, converter, required, required_string, type_name in _plan(fields):
        raw = members.get(name)
        if raw is None:
            if required:
                raise InvalidRecord(MISSING_FIELD.format(name=name))
            event[name] = None
            continue
        try:
            parsed = converter(raw)
        except (ValueError, OverflowError):
            raise InvalidRecord(WRONG_TYPE.format(name=name, type=type_name)) from None
        if required_string and not parsed.strip(" "):
            raise InvalidRecord(EMPTY_FIELD.format(name=name))
        event[name] = parsed
    return event


# Per field: name, converter, required, required string, type name. parse_event runs per record,
# so the lookups are made once per schema (Field tuples from parse_schema live as long as a job).
_Plan = list[tuple[str, Any, bool, bool, str]]
_PLANS: dict[int, tuple[Sequence[Field], _Plan]] = {}


def _plan(fields: Sequence[Field]) -> _Plan:
    cached = _PLANS.get(id(fields))
    if cached is not None and cached[0] is fields:
        return cached[1]
    plan = [
        (f.name, _CONVERTERS.get(f.type, _unsupported), f.required, f.required and f.type == "string", f.type)
        for f in fields
    ]
    if type(fields) is tuple:  # immutable, so its plan cannot go stale
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[id(fields)] = (fields, plan)
    return plan


def _with_repeated_members(doc: _Object, fields: Sequence[Field]) -> dict[str, Any]:
    written: dict[str, list[Any]] = {}
    for name, member in doc:
        written.setdefault(name, []).append(member)
    return {f.name: _last_that_converts(f, written.get(f.name, [None])) for f in fields}


def _last_that_converts(f: Field, written: list[Any]) -> Any:
    """A field written more than once: each value in turn, a null resets it, a failure is skipped."""
    if f.required and written[0] is None:
        raise InvalidRecord(MISSING_FIELD.format(name=f.name))
    parsed = None
    for raw in written:
        try:
            parsed = None if raw is None else convert(raw, f.type)
        except (ValueError, OverflowError):
            continue
    if f.required and f.type == "string" and parsed is not None and not parsed.strip(" "):
        raise InvalidRecord(EMPTY_FIELD.format(name=f.name))
    if written[0] is not None and parsed is None:
        raise InvalidRecord(WRONG_TYPE.format(name=f.name, type=f.type))
    return parsed


def parse_record(
    value: bytes | None, timestamp_ms: int | None, fields: Sequence[Field], limits: RecordLimits | None = None
) -> dict[str, Any]:
    """parse_event, then the job's limits, in arus.core.transforms.parse_events' order: size first, then
    the parse checks, then event time (before `earliest`, or too far past the Kafka timestamp)."""
    if limits is not None and limits.max_bytes and value is not None and len(value) > limits.max_bytes:
        raise InvalidRecord(TOO_LARGE.format(max_bytes=limits.max_bytes))
    event = parse_event(value, fields)
    if limits is None or event.get(limits.event_time) is None:
        return event
    at: datetime = event[limits.event_time]
    if limits.earliest is not None and at < limits.earliest:
        raise InvalidRecord(BEFORE_EARLIEST.format(earliest=limits.earliest.isoformat()))
    # In whole microseconds since the epoch: exact, and cheaper than building timedeltas.
    if (
        limits.max_ahead_s
        and timestamp_ms is not None
        and (at - EPOCH) // _US > timestamp_ms * 1000 + limits.max_ahead_s * 1_000_000
    ):
        raise InvalidRecord(TOO_FAR_AHEAD.format(max_ahead_s=limits.max_ahead_s))
    return event


# --- Spark's casts to string ----------------------------------------------------------------------------


def spark_string(value: Any) -> str:
    """CAST(value AS STRING), which the aggregate key applies to each key field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f").rstrip("0")
        return text.rstrip(".")
    return str(value)


def java_double(x: float) -> str:
    """Java's Double.toString, which Spark uses to write a double as text."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        text = repr(x)
        return text if "." in text else f"{text}.0"
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits))
    return f"{'-' if sign else ''}{mantissa[0]}.{mantissa[1:] or '0'}E{len(digits) - 1 + exponent}"
