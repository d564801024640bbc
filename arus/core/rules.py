"""The rules both engines share: one definition, imported by the Spark path and the kafka-python path.

    record_limits(stream) -> RecordLimits        # the [stream.guards] record guards as plain values
    check_deadletter_ratio(bad, total, ...)      # the circuit breaker, per micro-batch or poll batch
    MISSING_FIELD.format(name=...) ...           # dead-letter reasons, word for word
    KEY_SEPARATOR, KEY_TIME_FORMAT               # the output record key
    DEAD_LETTER_HEADERS, LATE_HEADERS            # Kafka header names, in the order both write them

The Spark side builds Columns from these (arus.core.transforms, arus.core.late); the kafka-python
side (arus.pyengine) builds values; tests/integration/test_rules.py feeds the same edge cases to both.
Durations and schemas have their one grammar in arus.grammar, beside arus.config, which checks every
configured value with it at load.
Standard library and arus.config only (neither imports Spark), so the kafka-python engine and the
producers never start a JVM for them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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
