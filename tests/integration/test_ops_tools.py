"""`arus topics`, `arus tail` and `arus send` against the real broker: what they show is what the
broker holds, what they send is what kafka-python reads back, and their failures exit 1 or 2 with a
message and no traceback."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import topic_records

from arus.config import Config
from arus.io.producer import make_producer
from arus.ops import send, tail, topics

# (partition, key, headers, value): what the tail tests send, in this order, a second apart.
Sent = tuple[int, bytes | None, list[tuple[str, bytes]], bytes | None]
RECORDS: list[Sent] = [
    (0, b"d1", [], b'{"device_id": "d1", "temp_c": 21.5}'),
    (0, b"d2", [("trace", b"t-1"), ("trace", b"t-2")], b'{"device_id": "d2", "temp_c": 19.0}'),
    (1, None, [("error", b"not JSON"), ("source_offset", b"7")], b"{oops"),
    (1, b"\xff\x00", [], b"\x00\x01binary"),
    (0, b"d1", [], None),  # a tombstone
]
SENT_AT_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z; record i is stamped i seconds later
# What `arus tail --json` shows of each, besides the topic and the timestamp, written out by hand.
SHOWN: list[dict[str, Any]] = [
    {"partition": 0, "offset": 0, "key": "d1", "headers": [], "value": {"device_id": "d1", "temp_c": 21.5}},
    {
        "partition": 0,
        "offset": 1,
        "key": "d2",
        "headers": [["trace", "t-1"], ["trace", "t-2"]],
        "value": {"device_id": "d2", "temp_c": 19.0},
    },
    {
        "partition": 1,
        "offset": 0,
        "key": None,
        "headers": [["error", "not JSON"], ["source_offset", "7"]],
        "raw": "{oops",
    },
    {"partition": 1, "offset": 1, "key": "\\xff\\x00", "headers": [], "raw": "\\x00\\x01binary"},
    {"partition": 0, "offset": 2, "key": "d1", "headers": [], "value": None},
]


def produce_to(config: Config, topic: str, records: Sequence[Sent]) -> None:
    """Send each record to its partition, one at a time, record i stamped SENT_AT_MS + i seconds."""
    producer = make_producer(config.kafka, config.producer)
    try:
        for i, (partition, key, headers, value) in enumerate(records):
            at = SENT_AT_MS + i * 1000
            producer.send(topic, value, key, headers, partition, timestamp_ms=at).get(10)
    finally:
        producer.close(timeout=10)


def run(
    main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str, first: str) -> list[list[str]]:
    """The rows of the table whose header starts with `first`, split on whitespace."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    table = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        table.append(line.split())
    return table


# --- topics ---------------------------------------------------------------------------------------


def test_topics_shows_the_partitions_and_offsets_just_produced(
    config: Config, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("ops", partitions=3)
    produce_to(config, topic, [(0, b"a", [], b"{}")] * 2 + [(1, b"b", [], b"{}")] * 3)

    code, out, _ = run(topics.main, ["--match", topic], capsys)
    assert code == 0
    assert rows(out, "TOPIC") == [[topic, "3", "1", "delete", "forever", "5"]]

    code, out, _ = run(topics.main, ["describe", topic], capsys)
    assert code == 0
    partitions = [row[:7] for row in rows(out, "PARTITION")]
    # partition, leader, replicas, ISR, earliest, latest, messages
    assert partitions == [
        ["0", "1", "1", "1", "0", "2", "2"],
        ["1", "1", "1", "1", "0", "3", "3"],
        ["2", "1", "1", "1", "0", "0", "0"],
    ]
    sizes = [row[7] for row in rows(out, "PARTITION")]
    assert sizes[2] == "0" and sizes[0] != "0", out  # the broker's DescribeLogDirs sizes
    assert "size: the leader's copy on disk" in out


def test_topics_create_and_alter(config: Config, kafka: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"test.ops.{uuid.uuid4().hex[:10]}"
    argv = ["create", topic, "--partitions", "2", "--config", "retention.ms=60000"]
    code, out, _ = run(topics.main, argv, capsys)
    assert (code, out) == (0, f"created {topic}: 2 partitions, replication factor 1, retention.ms=60000\n")

    code, _, err = run(topics.main, argv, capsys)
    assert code == 1 and "already exists" in err

    code, _, err = run(topics.main, ["alter", topic, "--partitions", "1"], capsys)
    assert code == 1 and "never remove" in err
    code, out, err = run(topics.main, ["alter", topic, "--partitions", "4"], capsys)
    assert (code, out) == (0, f"{topic}: 2 -> 4 partitions\n")
    assert "hash to the new count" in err

    code, out, _ = run(topics.main, ["describe", topic], capsys)
    assert rows(out, "TOPIC") == [[topic, "4", "1", "delete", "1m", "0"]]


def test_topics_usage_and_runtime_errors(
    config: Config, kafka: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        topics.main(["create", "test.ops.undeclared"])
    assert exit_.value.code == 2
    assert "--partitions is required" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:
        topics.main(["create", "test.ops.x", "--partitions", "1", "--config", "conf/arus.toml"])
    assert exit_.value.code == 2
    assert "the config file goes before it" in capsys.readouterr().err

    code, _, err = run(topics.main, ["describe", "test.ops.missing"], capsys)
    assert code == 1 and "'test.ops.missing' does not exist" in err


def test_an_unreachable_broker_exits_1_saying_so(
    config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, out, err = run(topics.main, [], capsys)
    assert (code, out) == (1, "")
    assert err == "topics: no Kafka broker answers at 127.0.0.1:1 (is it up? `make kafka-up`)\n"


# --- tail -----------------------------------------------------------------------------------------


def shown(topic: str, *indexes: int) -> list[dict[str, Any]]:
    return [{"topic": topic, **SHOWN[i], "timestamp": f"2026-12-01T00:00:0{i}.000Z"} for i in indexes]


def test_tail_prints_exactly_the_records_sent(
    config: Config, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("tail", partitions=2)
    produce_to(config, topic, RECORDS)

    code, out, _ = run(tail.main, [topic, "--from-beginning", "--json"], capsys)
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    # Partitions are read side by side, so only the order within each is fixed.
    assert sorted(got, key=lambda r: (r["partition"], r["offset"])) == shown(topic, 0, 1, 4, 2, 3)

    # The newest 2 of the topic in all, by timestamp: the last two sent, oldest first.
    code, out, _ = run(tail.main, [topic, "-n", "2", "--json"], capsys)
    assert (code, [json.loads(line) for line in out.splitlines()]) == (0, shown(topic, 3, 4))

    code, out, _ = run(tail.main, [topic, "--partition", "0", "--offset", "1", "--json"], capsys)
    assert (code, [json.loads(line) for line in out.splitlines()]) == (0, shown(topic, 1, 4))


def test_tail_shows_a_dead_letters_error_first_and_json_indented(
    config: Config, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("tail")
    produce_to(config, topic, [(0, b"d1", [], RECORDS[0][3]), (0, None, [], RECORDS[2][3])])
    produce_to(config, topic, [(0, None, RECORDS[2][2], RECORDS[2][3])])

    code, out, _ = run(tail.main, [topic, "--from-beginning"], capsys)
    assert code == 0
    first, second, third = out.rstrip("\n").split("\n\n")
    assert first.splitlines()[0].startswith("partition 0  offset 0  ")
    assert first.splitlines()[0].endswith("Z  key d1")
    assert first.splitlines()[1:] == ["  {", '    "device_id": "d1",', '    "temp_c": 21.5', "  }"]
    assert second.splitlines()[1:] == ["  {oops"]
    assert third.splitlines()[0] == "error: not JSON"
    assert third.splitlines()[1].startswith("partition 0  offset 2  ")
    assert third.splitlines()[2:] == ["  headers  source_offset=7", "  {oops"]


def test_tail_and_send_refuse_a_missing_topic(kafka: str, capsys: pytest.CaptureFixture[str]) -> None:
    for main, argv in ((tail.main, ["test.ops.missing"]), (send.main, ["test.ops.missing", "--value", "{}"])):
        code, out, err = run(main, argv, capsys)
        assert (code, out) == (1, "")
        assert "topic 'test.ops.missing' does not exist on" in err
        assert "Traceback" not in err


def test_tail_refuses_a_partition_the_topic_does_not_have(
    new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("tail", partitions=2)
    code, _, err = run(tail.main, [topic, "--partition", "2", "-n", "1"], capsys)
    assert code == 1 and "has partitions 0-1, not 2" in err
    with pytest.raises(SystemExit) as exit_:
        tail.main([topic, "--offset", "3"])
    assert exit_.value.code == 2


# --- send -----------------------------------------------------------------------------------------


def test_send_records_are_read_back(
    config: Config, new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("send")
    argv = [topic, "--value", '{"a": 1}', "--value", '[1, "two"]', "--key", "k1", "--header", "trace=abc"]
    code, out, err = run(send.main, argv, capsys)
    assert code == 0
    assert out == "--value 1: partition 0 offset 0\n--value 2: partition 0 offset 1\n"
    assert err == f"sent 2 records to {topic} (acks=all)\n"
    back = topic_records(config, topic)
    assert [(r.key, r.value, r.headers) for r in back] == [
        (b"k1", b'{"a": 1}', [("trace", b"abc")]),
        (b"k1", b'[1, "two"]', [("trace", b"abc")]),
    ]


def test_send_stops_at_a_bad_json_line_naming_it(
    config: Config,
    new_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("send")
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"n": 1}\n\n{"n": 2}\n{"n": 3,}\n{"n": 4}\n'))
    code, out, err = run(send.main, [topic], capsys)
    assert code == 2
    assert out == "line 1: partition 0 offset 0\nline 3: partition 0 offset 1\n"
    assert err.startswith("send: line 4 is not JSON (")
    assert err.endswith("; the 2 records before it were sent, as printed\n")
    assert [r.value for r in topic_records(config, topic)] == [b'{"n": 1}', b'{"n": 2}']

    # A bad --value is a usage error found before anything is sent.
    with pytest.raises(SystemExit) as exit_:
        send.main([topic, "--value", "{}", "--value", "nope"])
    assert exit_.value.code == 2
    assert "--value 2 is not JSON" in capsys.readouterr().err
    assert len(topic_records(config, topic)) == 2


# --- the arus executable --------------------------------------------------------------------------


@pytest.mark.timeout(120)  # a tail that printed less than expected would block the readline
def test_the_arus_command_sends_and_follows_until_sigterm(
    config: Config, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("exe")
    arus = str(Path(sys.executable).parent / "arus")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    follower = subprocess.Popen(
        [arus, "tail", topic, "--from-beginning", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        sent = subprocess.run(
            [arus, "send", topic, "--key", "k", "--header", "h=1"],
            input='{"n": 1}\n{"n": 2}\n',
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == "line 1: partition 0 offset 0\nline 2: partition 0 offset 1\n"
        assert follower.stdout is not None
        lines = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [(r["key"], r["headers"], r["value"]) for r in lines] == [
            ("k", [["h", "1"]], {"n": 1}),
            ("k", [["h", "1"]], {"n": 2}),
        ]
        follower.send_signal(signal.SIGTERM)
        rest, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert rest == ""
    assert err == "tail: stopped by SIGTERM after 2 records\n"
