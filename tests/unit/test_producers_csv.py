"""CSV replay without a broker: reading rows, type inference, parsing, bad rows, the cursor."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, ConfigError, load_config
from arus.io.producer import ProducerError
from arus.sources.csv_replay import (
    AckCursor,
    BadRow,
    Event,
    Layout,
    ReplayOptions,
    Row,
    build_layout,
    convert,
    dead_letter,
    event_id,
    infer_type,
    infer_types,
    load_cursor,
    open_input,
    parse_row,
    parse_types,
    read_header,
    read_rows,
    save_cursor,
)

HEADER = ("time", "station", "temp", "count", "ok", "note")
LAYOUT = Layout(
    header=HEADER,
    time_column="time",
    key_column="station",
    columns=HEADER,
    types={"station": "string", "temp": "float", "count": "int", "ok": "bool", "note": "string"},
)


def row(text: str, line: int = 2) -> Row:
    rows = list(read_rows(io.BytesIO(text.encode() + b"\n"), "utf-8", ",", line=line - 1))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-2", "+30"], "int"),
        (["1", "2.5", "1e3", "-.5"], "float"),
        (["true", "False", "yes"], "bool"),
        (["1", "x"], "string"),
        ([], "string"),
        (["007", "8"], "string"),  # leading zeros: an id, not a number
        (["0", "0.5"], "float"),
        ([*map(str, range(200)), "err"], "int"),  # one stray value in 201 is a bad row, not a string column
        ([*map(str, range(50)), "err"], "string"),  # but in 51 values it is too many
        (["nan", "inf"], "string"),
    ],
)
def test_infer_type(values: list[str], expected: str) -> None:
    assert infer_type(values) == expected


def test_infer_types_skips_nulls_and_rows_of_the_wrong_length() -> None:
    rows = [
        ["2024-01-01", "a", "1.5", "3", "true", "x"],
        ["2024-01-01", "b", "NA", "", "false", "y"],
        ["2024-01-01", "c", "2"],
        ["2024-01-01", "d", "", "4", "", "z"],
    ]
    nulls = frozenset({"", "NA"})
    assert infer_types(HEADER, rows, nulls, skip=["time"]) == {
        "station": "string",
        "temp": "float",
        "count": "int",
        "ok": "bool",
        "note": "string",
    }


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        (" 42 ", "int", 42),
        ("-1.5e2", "float", -150.0),
        ("7", "float", 7.0),
        ("YES", "bool", True),
        (" x ", "string", " x "),
    ],
)
def test_convert(text: str, kind: str, expected: object) -> None:
    value = convert(text, kind)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "kind"), [("4.5", "int"), ("abc", "float"), ("nan", "float"), ("1", "bool")]
)
def test_convert_refuses(text: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"not an? {kind}"):
        convert(text, kind)


def test_a_good_row_becomes_an_event() -> None:
    parsed = parse_row(LAYOUT, row("2024-03-01T19:00:00+07:00,jkt-1,28.5,3,true,hello, world"))
    assert parsed == BadRow(
        2, "expected 6 columns, got 7", "2024-03-01T19:00:00+07:00,jkt-1,28.5,3,true,hello, world"
    )
    parsed = parse_row(LAYOUT, row('2024-03-01T19:00:00+07:00,jkt-1,28.5,3,true,"hello, world"'))
    assert parsed == Event(
        line=2,
        key="jkt-1",
        event_time=datetime(2024, 3, 1, 12, tzinfo=UTC),
        payload={
            "time": "2024-03-01T12:00:00.000Z",
            "station": "jkt-1",
            "temp": 28.5,
            "count": 3,
            "ok": True,
            "note": "hello, world",
        },
    )


def test_null_values_become_null_and_selected_columns_only() -> None:
    layout = Layout(**{**LAYOUT.__dict__, "columns": ("station", "temp", "time")})
    parsed = parse_row(layout, row("2024-03-01T12:00:00Z,,NA,,,"))
    assert isinstance(parsed, Event)
    assert parsed.key is None
    assert parsed.payload == {"station": None, "temp": None, "time": "2024-03-01T12:00:00.000Z"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2024-03-01T12:00:00Z,a,1.0,3", "expected 6 columns, got 4"),
        (
            "2024-13-01T12:00:00Z,a,1.0,3,true,x",
            "column 'time': not a time in ISO-8601 format: '2024-13-01T12:00:00Z'",
        ),
        (",a,1.0,3,true,x", "column 'time': no event time"),
        ("2024-03-01T12:00:00Z,a,hot,3,true,x", "column 'temp': not a float: 'hot'"),
        ("2024-03-01T12:00:00Z,a,1.0,3.5,true,x", "column 'count': not an int: '3.5'"),
        ("2024-03-01T12:00:00Z,a,1.0,3,maybe,x", "column 'ok': not a bool: 'maybe'"),
    ],
)
def test_bad_rows_carry_line_and_reason(text: str, reason: str) -> None:
    assert parse_row(LAYOUT, row(text, line=17)) == BadRow(17, reason, text)


def test_bytes_that_are_not_utf8_make_a_bad_row_with_the_bytes_shown() -> None:
    rows = list(read_rows(io.BytesIO(b"2024-03-01T12:00:00Z,a\xff,1,2,true,x\n"), "utf-8", ","))
    bad = parse_row(LAYOUT, rows[0])
    assert isinstance(bad, BadRow) and bad.reason == "not valid UTF-8"
    assert dead_letter("f.csv", bad) == {
        "source_file": "f.csv",
        "line": 1,
        "reason": "not valid UTF-8",
        "raw": "2024-03-01T12:00:00Z,a\\xff,1,2,true,x",
    }


def test_time_formats_and_zones() -> None:
    jakarta = timezone(timedelta(hours=7))
    layout = Layout(**{**LAYOUT.__dict__, "time_format": "%d/%m/%Y %H:%M", "tz": jakarta})
    parsed = parse_row(layout, row("01/03/2024 19:00,a,1,2,true,x"))
    assert isinstance(parsed, Event) and parsed.event_time == datetime(2024, 3, 1, 12, tzinfo=UTC)
    layout = Layout(**{**LAYOUT.__dict__, "time_format": "epoch_ms"})
    parsed = parse_row(layout, row("1709294400000,a,1,2,true,x"))
    assert isinstance(parsed, Event) and parsed.payload["time"] == "2024-03-01T12:00:00.000Z"


CSV_TEXT = (
    "time,station,note\r\n"
    "2024-03-01T12:00:00Z,a,plain\r\n"
    "\r\n"
    '2024-03-01T12:01:00Z,b,"two\r\nlines"\r\n'
    "2024-03-01T12:02:00Z,c,last\r\n"
)


def test_rows_know_their_lines_and_where_they_end() -> None:
    data = CSV_TEXT.encode()
    rows = list(read_rows(io.BytesIO(data), "utf-8", ","))
    assert [(r.line, r.last, r.fields) for r in rows] == [
        (1, 1, ["time", "station", "note"]),
        (2, 2, ["2024-03-01T12:00:00Z", "a", "plain"]),
        (4, 5, ["2024-03-01T12:01:00Z", "b", "two\r\nlines"]),
        (6, 6, ["2024-03-01T12:02:00Z", "c", "last"]),
    ]
    # Reading on from where a row ends gives exactly the rows after it, with the same line numbers.
    for i, r in enumerate(rows):
        rest = list(read_rows(io.BytesIO(data[r.end :]), "utf-8", ",", offset=r.end, line=r.last))
        assert rest == rows[i + 1 :]


def test_gzip_is_read_by_its_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(CSV_TEXT.encode()))
    header, end, last = read_header(path, "utf-8", ",")
    assert (header, last) == (("time", "station", "note"), 1)
    with open_input(path) as stream:
        stream.seek(end)
        assert [r.line for r in read_rows(stream, "utf-8", ",", offset=end, line=last)] == [2, 4, 6]


def test_header_problems_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("\ufefftime,a,a\n1,2,3\n")
    with pytest.raises(ProducerError, match=r"duplicate column names \['a'\]"):
        read_header(path, "utf-8", ",")
    path.write_text("\ufefftime,,event_id\n")
    with pytest.raises(ProducerError, match="column named 'event_id'"):
        read_header(path, "utf-8", ",")
    path.write_text("\ufefftime,,b\n")
    assert read_header(path, "utf-8", ",")[0] == ("time", "column_2", "b")
    path.write_text("")
    with pytest.raises(ProducerError, match="empty file"):
        read_header(path, "utf-8", ",")


def test_the_cursor_moves_only_over_rows_all_handled() -> None:
    rows = list(read_rows(io.BytesIO(CSV_TEXT.encode()), "utf-8", ","))[1:]
    cursor = AckCursor(1, rows[0].end - len("2024-03-01T12:00:00Z,a,plain\r\n"))
    for r in rows:
        cursor.hand_out(r)
    cursor.done(6)  # acknowledgements come back out of order (other partitions)
    assert cursor.position() == (1, cursor.offset)
    cursor.done(2)
    assert cursor.position() == (2, rows[0].end)
    cursor.done(4)
    assert cursor.position() == (6, rows[2].end)


def test_cursor_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n")
    cursor = tmp_path / "c" / "in.cursor.json"
    assert load_cursor(cursor, source, ("a", "b")) is None
    save_cursor(cursor, source, ("a", "b"), 41, 1234)
    assert load_cursor(cursor, source, ("a", "b")) == (41, 1234)
    with pytest.raises(ProducerError, match="another header"):
        load_cursor(cursor, source, ("a", "c"))


def test_event_ids_are_stable_per_file_line_and_text() -> None:
    a = row("2024-03-01T12:00:00Z,a,1,2,true,x", line=5)
    assert event_id("f.csv", a) == event_id("f.csv", row("2024-03-01T12:00:00Z,a,1,2,true,x", line=5))
    others = {
        event_id("g.csv", a),
        event_id("f.csv", row("2024-03-01T12:00:00Z,a,1,2,true,x", line=6)),
        event_id("f.csv", row("2024-03-01T12:00:00Z,a,1,2,true,y", line=5)),
    }
    assert event_id("f.csv", a) not in others and len(others) == 3


def test_layout_from_flags_with_inferred_and_declared_types() -> None:
    config = load_config(DEFAULT_CONFIG, env={}).csv
    sample = [["2024-03-01T12:00:00Z", "a", "1", "2", "true", "007"]]
    layout = build_layout(
        HEADER,
        config,
        ReplayOptions(key_column="station", types="count=float", timezone="Asia/Jakarta"),
        sample,
    )
    assert layout.types == {
        "station": "string",
        "temp": "int",
        "count": "float",
        "ok": "bool",
        "note": "string",
    }
    assert (layout.time_column, layout.key_column, layout.columns) == ("time", "station", HEADER)
    assert datetime(2024, 1, 1, tzinfo=layout.tz).utcoffset() == timedelta(hours=7)
    with pytest.raises(ConfigError, match="--key-column: no column 'sensor'"):
        build_layout(HEADER, config, ReplayOptions(key_column="sensor"), sample)
    with pytest.raises(ConfigError, match="--columns: no column 'x'"):
        build_layout(HEADER, config, ReplayOptions(key_column="", columns="time,x"), sample)
    with pytest.raises(ConfigError, match="TYPE one of"):
        parse_types("a=decimal")
    assert parse_types("a=integer, b = number") == {"a": "int", "b": "float"}
