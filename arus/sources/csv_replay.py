"""Replay any CSV file into Kafka as JSON events, in file order: as fast as the rate allows, or at
event-time pace, resumable after a crash (the entry point, with its flags: producers/csv_replay.py,
`arus produce csv`).

Each row becomes a JSON object of its columns (numbers as numbers, empty/NA/null as null; types
inferred from the first rows unless given), the event time normalised to ISO-8601 UTC, and an
`event_id` (UUIDv5 of the file name, line number and row text), keyed by the key column, with
headers source, schema_version, source_file and line. A row that cannot be read (wrong column
count, unparseable time or number, bad UTF-8) goes to the dead-letter topic, or to a reject file
(JSONL), with its line number, the reason and its text; none vanish.

A cursor file records the last line up to which every row is acknowledged by Kafka (or
dead-lettered); a resumed replay continues after it, so a crash never skips a row and re-sends
only rows whose acknowledgement was not yet recorded (same event_id: downstream drops them). The
file is streamed, never loaded whole; gzip input (by its magic bytes) works.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Any, cast

from kafka import KafkaProducer

from arus.config import Config, ConfigError, CsvConfig
from arus.core.rules import time_text
from arus.io.producer import ProducerError
from arus.sources.base import Source, write_state
from arus.sources.send import (
    Record,
    SendLimits,
    SendLoop,
    Summary,
    origin_headers,
    parse_time,
    stable_id,
    timezone,
)

SOURCE = "csv-replay"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arus/csv")
ID_FIELD = "event_id"
TYPES = ("int", "float", "bool", "string")
TYPE_ALIASES = {"integer": "int", "long": "int", "double": "float", "number": "float", "str": "string"}
TRUE, FALSE = frozenset({"true", "yes"}), frozenset({"false", "no"})
INT = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
LEADING_ZERO = re.compile(r"[+-]?0\d+")
UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Layout:
    """How to read the rows of one file: its header, which columns to send, and as what."""

    header: tuple[str, ...]
    time_column: str
    key_column: str | None
    columns: tuple[str, ...]
    types: dict[str, str]
    time_format: str = "iso"
    tz: tzinfo = UTC
    null_values: frozenset[str] = frozenset({"", "NA", "N/A", "NaN", "null", "NULL", "None", "#N/A"})


@dataclass(frozen=True)
class Row:
    """One CSV record: the lines it spans, its fields, its text, the byte offset after it."""

    line: int
    last: int
    fields: list[str]
    text: str
    end: int
    error: str | None = None


@dataclass(frozen=True)
class Event:
    line: int
    key: str | None
    event_time: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    text: str


def convert(text: str, kind: str) -> object:
    """A field as `kind` (int, float, bool, string); raises ValueError when it is not one."""
    if kind == "string":
        return text
    value = text.strip()
    if kind == "int" and INT.fullmatch(value):
        return int(value)
    if kind == "float" and FLOAT.fullmatch(value):
        return float(value)
    if kind == "bool" and value.lower() in TRUE | FALSE:
        return value.lower() in TRUE
    raise ValueError(f"not a{'n' if kind == 'int' else ''} {kind}: {text!r}")


def infer_type(values: Iterable[str]) -> str:
    """The narrowest type the values fit: int, float, bool, or string (no values: string).

    Up to 1% of the values may not fit (a stray "err" in a number column then becomes a bad
    row, not a string column). Numbers with leading zeros (zip codes, ids) make the column a
    string, so no digit is lost.
    """
    misfits = {"int": 0, "float": 0, "bool": 0}
    n = 0
    for text in values:
        n += 1
        value = text.strip()
        if LEADING_ZERO.fullmatch(value):
            return "string"
        if not INT.fullmatch(value):
            misfits["int"] += 1
        if not FLOAT.fullmatch(value):
            misfits["float"] += 1
        if value.lower() not in TRUE | FALSE:
            misfits["bool"] += 1
    allowed = n // 100
    return next((kind for kind in ("int", "float", "bool") if n and misfits[kind] <= allowed), "string")


def infer_types(
    header: tuple[str, ...], rows: Iterable[list[str]], null_values: frozenset[str], skip: Iterable[str] = ()
) -> dict[str, str]:
    """Each column's type from sample rows; rows of the wrong length and null values are ignored."""
    columns = [c for c in header if c not in set(skip)]
    samples: dict[str, list[str]] = {c: [] for c in columns}
    index = {c: header.index(c) for c in columns}
    for fields in rows:
        if len(fields) != len(header):
            continue
        for column in columns:
            text = fields[index[column]]
            if text.strip() not in null_values:
                samples[column].append(text)
    return {column: infer_type(samples[column]) for column in columns}


def parse_row(layout: Layout, row: Row) -> Event | BadRow:
    """A record as an event, or the reason it cannot be one."""
    if row.error:
        return BadRow(row.line, row.error, row.text)
    if UNDECODABLE.search(row.text):
        return BadRow(row.line, "not valid UTF-8", row.text)
    if len(row.fields) != len(layout.header):
        return BadRow(row.line, f"expected {len(layout.header)} columns, got {len(row.fields)}", row.text)
    values = dict(zip(layout.header, row.fields, strict=True))
    try:
        event_time = parse_time(values[layout.time_column], layout.time_format, layout.tz)
    except ValueError as exc:
        return BadRow(row.line, f"column {layout.time_column!r}: {exc}", row.text)
    payload: dict[str, Any] = {}
    for column in layout.columns:
        text = values[column]
        if column == layout.time_column:
            payload[column] = time_text(event_time)
        elif text.strip() in layout.null_values:
            payload[column] = None
        else:
            try:
                payload[column] = convert(text, layout.types.get(column, "string"))
            except ValueError as exc:
                return BadRow(row.line, f"column {column!r}: {exc}", row.text)
    key = values[layout.key_column] if layout.key_column else None
    return Event(row.line, key if key else None, event_time, payload)


def event_id(source_file: str, row: Row) -> str:
    """Deterministic per file name, line and row text: a re-sent row keeps its id."""
    return stable_id(NAMESPACE, SOURCE, source_file, row.line, row.text)


def dead_letter(source_file: str, bad: BadRow) -> dict[str, Any]:
    """# source_file, line, reason, raw (bytes that are not UTF-8 written as \\xNN)"""
    raw = bad.text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return {"source_file": source_file, "line": bad.line, "reason": bad.reason, "raw": raw}


class _Lines:
    """The text lines of a binary stream, counting lines and bytes, keeping the current record's text."""

    def __init__(self, stream: IO[bytes], encoding: str, offset: int = 0, line: int = 0) -> None:
        self.stream = stream
        self.encoding = encoding
        self.offset = offset
        self.line = line
        self.pending: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.offset += len(raw)
            self.line += 1
            text = raw.decode(self.encoding, "surrogateescape")
            self.pending.append(text)
            yield text

    def take(self) -> str:
        text = "".join(self.pending).rstrip("\r\n")
        self.pending.clear()
        return text


def open_input(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed if it is gzip (known by its magic bytes, not its name)."""
    stream = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if stream.read(2) == b"\x1f\x8b":
        stream.close()
        return cast(IO[bytes], gzip.open(path, "rb"))
    stream.seek(0)
    return stream


def read_rows(
    stream: IO[bytes], encoding: str, delimiter: str, offset: int = 0, line: int = 0
) -> Iterator[Row]:
    """The records of a CSV stream positioned at byte `offset`, after line `line`; blank lines skipped."""
    lines = _Lines(stream, encoding, offset, line)
    reader = csv.reader(lines, delimiter=delimiter)
    last = line
    while True:
        error = None
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            fields, error = [], f"not readable as CSV: {exc}"
        if fields is None:
            return
        text = lines.take()
        start, last = last + 1, lines.line
        if fields or error:
            yield Row(start, last, fields, text, lines.offset, error)


def read_header(path: Path, encoding: str, delimiter: str) -> tuple[tuple[str, ...], int, int]:
    """(column names, byte offset after the header, its last line)."""
    with open_input(path) as stream:
        first = next(read_rows(stream, encoding, delimiter), None)
    if first is None:
        raise ProducerError(f"{path}: empty file, no header")
    names = [name.strip().lstrip("\ufeff") or f"column_{i + 1}" for i, name in enumerate(first.fields)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProducerError(f"{path}: duplicate column names {duplicates}")
    if ID_FIELD in names:
        raise ProducerError(f"{path}: has a column named {ID_FIELD!r}, the field the producer adds")
    return tuple(names), first.end, first.last


def sample_rows(path: Path, encoding: str, delimiter: str, n: int) -> Iterator[list[str]]:
    """The fields of the first n data rows (the file is read again, only this far)."""
    with open_input(path) as stream:
        rows = read_rows(stream, encoding, delimiter)
        next(rows, None)
        for i, row in enumerate(rows):
            if i >= n:
                return
            yield row.fields


class AckCursor:
    """The last line up to which every row is handled: acknowledged by Kafka, or rejected to a file.

    Rows are handed out in file order; acknowledgements come back in any order (several
    partitions), on the producer's thread. The cursor only moves over a contiguous prefix.
    """

    def __init__(self, line: int, offset: int) -> None:
        self.line = line
        self.offset = offset
        self._handed: deque[Row] = deque()
        self._done: set[int] = set()
        self._lock = threading.Lock()

    def hand_out(self, row: Row) -> None:
        with self._lock:
            self._handed.append(row)

    def done(self, line: int) -> None:
        """The row starting on `line` is handled."""
        with self._lock:
            self._done.add(line)
            while self._handed and self._handed[0].line in self._done:
                row = self._handed.popleft()
                self._done.discard(row.line)
                self.line, self.offset = row.last, row.end

    def position(self) -> tuple[int, int]:
        with self._lock:
            return self.line, self.offset


def default_cursor_path(config_dir: Path, path: Path) -> Path:
    """One cursor per input file: its name plus a hash of its absolute path."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    return config_dir / f"{path.name}.{digest}.cursor.json"


def load_cursor(path: Path, source: Path, header: tuple[str, ...]) -> tuple[int, int] | None:
    """(line, byte offset) to resume after, or None if there is no cursor yet."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProducerError(f"cursor {path} cannot be read: {exc}") from None
    if state.get("file") != str(source.resolve()) or tuple(state.get("header", ())) != header:
        raise ProducerError(
            f"cursor {path} belongs to {state.get('file')} with another header; remove it or pass --cursor"
        )
    return int(state["line"]), int(state["offset"])


def save_cursor(path: Path, source: Path, header: tuple[str, ...], line: int, offset: int) -> None:
    state = {
        "file": str(source.resolve()),
        "header": list(header),
        "line": line,
        "offset": offset,
        "saved_at": time_text(datetime.now(UTC)),
    }
    write_state(path, state)


def parse_types(text: str | None) -> dict[str, str]:
    """`--types a=int,b=float` as {column: type}."""
    types: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        column, sep, kind = item.partition("=")
        kind = TYPE_ALIASES.get(kind.strip().lower(), kind.strip().lower())
        if not sep or kind not in TYPES:
            raise ConfigError(
                f"--types: expected COLUMN=TYPE with TYPE one of {', '.join(TYPES)}, got {item!r}"
            )
        types[column.strip()] = kind
    return types


@dataclass(frozen=True)
class ReplayOptions:
    """How to read and send one file, each the flag of the same name (None: the [csv] setting).

    `columns` and `types` are comma-separated, as the flags take them: "a,b", "a=int,b=float".
    """

    time_column: str | None = None
    time_format: str | None = None
    timezone: str | None = None
    key_column: str | None = None  # "" for no key
    columns: str | None = None
    types: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    source_name: str | None = None
    topic: str | None = None
    deadletter_topic: str | None = None
    reject_file: Path | None = None
    rewrite_time: bool = False
    cursor: Path | None = None
    resume: bool = False


def build_layout(
    header: tuple[str, ...],
    csv_config: CsvConfig,
    options: ReplayOptions,
    sample: Iterable[list[str]],
) -> Layout:
    """The file's layout from its header, the config, the options and sample rows (type inference)."""
    time_column = options.time_column or csv_config.time_column
    key_column = csv_config.key_column if options.key_column is None else options.key_column
    columns = tuple(c.strip() for c in options.columns.split(",")) if options.columns else header
    declared = parse_types(options.types)
    wanted = {"--time-column": [time_column], "--columns": list(columns), "--types": list(declared)}
    if key_column:
        wanted["--key-column"] = [key_column]
    for flag, names in wanted.items():
        missing = [n for n in names if n not in header]
        if missing:
            raise ConfigError(
                f"{flag}: no column {missing[0]!r} in the file; its columns: {', '.join(header)}"
            )
    nulls = frozenset(csv_config.null_values)
    inferred = infer_types(header, sample, nulls, skip=[time_column, *declared])
    return Layout(
        header=header,
        time_column=time_column,
        key_column=key_column or None,
        columns=columns,
        types={**inferred, **declared},
        time_format=options.time_format or csv_config.time_format,
        tz=timezone(options.timezone or csv_config.timezone),
        null_values=nulls,
    )


class CsvReplay(Source):
    """The rows of one CSV file, read rows to the topic and bad ones to the dead-letter topic (or
    the reject file), the cursor saved as they are acknowledged and once more at the end."""

    name = "produce-csv"

    def __init__(self, config: Config, limits: SendLimits, path: Path, options: ReplayOptions) -> None:
        super().__init__(config, limits)
        settings = config.csv
        self.path = path
        self.options = options
        self.source_file = options.source_name or path.name
        self.topic = options.topic or settings.topic
        self.deadletter_topic = options.deadletter_topic or settings.deadletter_topic
        self.cursor_path = options.cursor or default_cursor_path(config.resolve(settings.cursor_dir), path)
        # Set by open(): the file's layout, the line and byte offset to start after, the acknowledged
        # position and the last one saved, the stream.
        self.layout: Layout
        self.begin: tuple[int, int]
        self.cursor: AckCursor
        self.saved: tuple[int, int]
        self.stream: IO[bytes]
        self.reject: IO[str] | None = None

    def topics(self) -> list[str]:
        return [self.topic] if self.options.reject_file else [self.topic, self.deadletter_topic]

    def open(self, resources: ExitStack) -> None:
        options, path = self.options, self.path
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        header, header_end, header_line = read_header(path, options.encoding, options.delimiter)
        sample = sample_rows(path, options.encoding, options.delimiter, self.config.csv.infer_rows)
        self.layout = build_layout(header, self.config.csv, options, sample)
        self.begin = (header_line, header_end)
        if options.resume:
            saved = load_cursor(self.cursor_path, path, header)
            if saved:
                self.begin = saved
                print(f"{self.name}: resuming after line {saved[0]} ({self.cursor_path})", file=sys.stderr)
        self.cursor = AckCursor(*self.begin)
        self.saved = self.begin
        self.stream = resources.enter_context(open_input(path))
        self.stream.seek(self.begin[1])
        if options.reject_file:
            self.reject = resources.enter_context(open(options.reject_file, "a", encoding="utf-8"))  # noqa: SIM115 - ExitStack
        resources.callback(self.save, force=True)

    def send_loop(self, producer: KafkaProducer) -> SendLoop:
        return SendLoop(producer, on_ack=self.acked)

    def acked(self, record: Record) -> None:
        self.cursor.done(int(dict(record.headers)["line"]))

    def save(self, force: bool = False) -> None:
        position = self.cursor.position()
        if position != self.saved or force:
            save_cursor(self.cursor_path, self.path, self.layout.header, *position)
            self.saved = position

    def run(self, loop: SendLoop) -> Iterator[Record]:
        options, layout, source_file, reject = self.options, self.layout, self.source_file, self.reject
        first_time: datetime | None = None
        now = datetime.now(UTC)
        last_save = time.monotonic()
        rows = read_rows(
            self.stream, options.encoding, options.delimiter, offset=self.begin[1], line=self.begin[0]
        )
        for row in rows:
            self.cursor.hand_out(row)
            headers = origin_headers(SOURCE, source_file=source_file, line=str(row.line))
            parsed = parse_row(layout, row)
            if isinstance(parsed, BadRow):
                loop.summary.count("bad rows")
                letter = json.dumps(
                    dead_letter(source_file, parsed), ensure_ascii=False, separators=(",", ":")
                )
                if reject is not None:
                    reject.write(letter + "\n")
                    reject.flush()
                    self.cursor.done(row.line)
                else:
                    yield Record(self.deadletter_topic, source_file, letter.encode(), headers)
            else:
                at = parsed.event_time
                if options.rewrite_time:
                    first_time = first_time or at
                    at = now + (at - first_time) / (self.limits.speed or 1.0)
                payload = {
                    **parsed.payload,
                    layout.time_column: time_text(at),
                    ID_FIELD: event_id(source_file, row),
                }
                loop.summary.count("rows")
                value = json.dumps(payload, separators=(",", ":")).encode()
                yield Record(self.topic, parsed.key, value, headers, due=parsed.event_time)
            if time.monotonic() - last_save >= 0.5:
                self.save()
                last_save = time.monotonic()

    def finish(self, summary: Summary) -> int:
        line, _ = self.cursor.position()
        print(
            f"{self.name}: every row up to line {line} is delivered; cursor {self.cursor_path}",
            file=sys.stderr,
        )
        return super().finish(summary)
