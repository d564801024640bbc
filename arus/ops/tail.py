"""Print a topic's records: partition, offset, time, key, headers, and the value (indented when JSON).

    arus tail iot.readings                        new records as they arrive, until Ctrl-C
    arus tail iot.readings --from-beginning       every record, then stop
    arus tail iot.readings -n 5                   the newest 5 records of the topic
    arus tail iot.readings --partition 2 --offset 40 --follow
    arus tail iot.deadletter -n 3 --json          one JSON object per line, for scripts

Without a start (--from-beginning, -n, --offset) tail waits for new records until Ctrl-C or SIGTERM.
With one, it stops at the end offsets the topic had when it started, unless --follow.

A dead letter's `error` header (or a late record's `reason`) is printed first, before the record.
With --json each line holds topic, partition, offset, timestamp (UTC ISO), key, headers (a list of
[name, value]) and either "value" (the parsed JSON) or "raw" (the value as text when it is not JSON;
bytes that are not printable UTF-8 escaped as in a Python bytes literal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from arus.config import ConfigError, job_parser, load_config
from arus.core.rules import ERROR_HEADER, REASON_HEADER, time_text
from arus.ops.topics import TopicError, failed, partitions_of, positive, reader
from arus.signals import stop_on_signals

POLL_MS = 200  # how soon a Ctrl-C is noticed between polls
WHY_HEADERS = (ERROR_HEADER, REASON_HEADER)  # why a record is a dead letter or late


def text(data: bytes) -> str:
    """Printable UTF-8 as it is; anything else escaped as in a Python bytes literal (b'\\x00')."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)[2:-1]
    return decoded if decoded.isprintable() else repr(data)[2:-1]


def record_json(record: Any) -> dict[str, Any]:
    """The --json line of a kafka-python ConsumerRecord."""
    shown: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": timestamp(record.timestamp),
        "key": None if record.key is None else text(record.key),
        "headers": [[name, None if value is None else text(value)] for name, value in record.headers],
    }
    if record.value is None:
        shown["value"] = None  # a tombstone: the key's record is deleted on compaction
        return shown
    try:
        shown["value"] = json.loads(record.value)
    except ValueError:
        shown["raw"] = text(record.value)
    return shown


def timestamp(ms: int) -> str | None:
    # -1: the producer set none (message format v0).
    return time_text(datetime.fromtimestamp(ms / 1000, UTC)) if ms >= 0 else None


def record_text(record: Any) -> str:
    """A record for a person: why it failed first (dead letters, late records), then where and what."""
    shown = record_json(record)
    headers = shown["headers"]
    lines = [f"{name}: {value}" for name, value in headers if name in WHY_HEADERS]
    key = "" if shown["key"] is None else f"  key {shown['key']}"
    lines.append(f"partition {record.partition}  offset {record.offset}  {shown['timestamp']}{key}")
    rest = [f"{name}={value}" for name, value in headers if name not in WHY_HEADERS]
    if rest:
        lines.append("  headers  " + "  ".join(rest))
    if "raw" in shown:
        body = shown["raw"]
    elif shown["value"] is None:
        body = "(no value: a tombstone)"
    else:
        body = json.dumps(shown["value"], indent=2, ensure_ascii=False)
    lines.extend(f"  {line}" for line in body.splitlines() or [""])
    return "\n".join(lines) + "\n"


def start_offsets(
    earliest: dict[TopicPartition, int], end: dict[TopicPartition, int], args: argparse.Namespace
) -> tuple[dict[TopicPartition, int], list[str]]:
    """Where each partition's reading starts, and notes for the user on offsets out of range."""
    if args.from_beginning:
        return earliest, []
    if args.last is not None:
        # The newest N in all are among the newest N of each partition; `newest` keeps N of them.
        return {tp: max(earliest[tp], end[tp] - args.last) for tp in end}, []
    if args.offset is not None:
        [tp] = end
        start = min(max(args.offset, earliest[tp]), end[tp])
        if start == args.offset:
            return {tp: start}, []
        where = "earliest (retention has deleted the rest)" if start > args.offset else "end"
        return {tp: start}, [f"offset {args.offset} is out of range: starting at the {where}, {start}"]
    return end, []


def read(
    consumer: KafkaConsumer, stop: dict[TopicPartition, int] | None, stopping: list[str]
) -> Iterator[Any]:
    """Records from the consumer's positions until the `stop` offsets (None: until a stop signal)."""

    def done() -> bool:
        return stop is not None and all(consumer.position(tp) >= stop[tp] for tp in stop)

    while not stopping and not done():
        for tp, batch in consumer.poll(timeout_ms=POLL_MS).items():
            for record in batch:
                if stop is None or record.offset < stop[tp]:
                    yield record


def following(consumer: KafkaConsumer, end: dict[TopicPartition, int], stopping: list[str]) -> Iterator[Any]:
    """The records after `end`, until a stop signal."""
    # Reading up to `end` may have fetched (and dropped) records past it: go back for them.
    for tp, offset in end.items():
        consumer.seek(tp, offset)
    yield from read(consumer, None, stopping)


def newest(found: Iterator[Any], count: int) -> list[Any]:
    """The `count` newest records by timestamp (then partition, offset), oldest first."""
    return sorted(found, key=lambda r: (r.timestamp, r.partition, r.offset))[-count:]


def natural(text: str) -> int:
    """argparse's `type=` for an offset or a partition: 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "arus tail",
        __doc__,
        "arus tail iot.readings                      new records until Ctrl-C",
        "arus tail iot.readings --from-beginning",
        "arus tail iot.deadletter -n 10              the newest 10 dead letters, error first",
        "arus tail iot.readings --partition 1 --offset 100 --follow",
        "arus tail iot.aggregates --from-beginning --json | jq .value",
    )
    parser.add_argument("topic")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="from each partition's earliest record")
    start.add_argument(
        "-n",
        dest="last",
        type=positive,
        metavar="N",
        help="the newest N records of the topic in all (not per partition), oldest first, by timestamp",
    )
    start.add_argument(
        "--offset", type=natural, metavar="O", help="from offset O of --partition (required with it)"
    )
    parser.add_argument("--partition", type=natural, metavar="P", help="read only partition P")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="after the records up to the end, keep printing new ones until Ctrl-C (without a start, "
        "tail always follows; with one and without --follow, it stops at the end offsets it found)",
    )
    parser.add_argument("--max", type=positive, metavar="N", help="stop after N records")
    parser.add_argument("--json", action="store_true", help="one JSON object per record and line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.offset is not None and args.partition is None:
        parser.error("--offset needs --partition: an offset means something only within one partition")
    # Without a start there is no backlog to read: tail follows, as kafka-console-consumer does.
    follow = args.follow or not (args.from_beginning or args.last is not None or args.offset is not None)
    show = (lambda r: json.dumps(record_json(r), ensure_ascii=False)) if args.json else record_text
    stopping: list[str] = []
    printed = 0
    try:
        config = load_config(args.config)
        with reader(config.kafka) as consumer, stop_on_signals(stopping.append):
            partitions = partitions_of(consumer, args.topic, config.kafka)
            if args.partition is not None:
                if args.partition not in {tp.partition for tp in partitions}:
                    raise TopicError(
                        f"{args.topic!r} has partitions 0-{len(partitions) - 1}, not {args.partition}"
                    )
                partitions = [TopicPartition(args.topic, args.partition)]
            end = consumer.end_offsets(partitions)
            start, notes = start_offsets(consumer.beginning_offsets(partitions), end, args)
            for note in notes:
                print(f"tail: {note}", file=sys.stderr)
            consumer.assign(list(start))
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            found = read(consumer, end, stopping)
            if args.last is not None:
                found = iter(newest(found, args.last))
            if follow:
                found = chain(found, following(consumer, end, stopping))
            for record in found:
                print(show(record), flush=True)
                printed += 1
                if printed == args.max:
                    break
    except (ConfigError, RuntimeError, KafkaError) as exc:
        return failed("tail", exc)
    except BrokenPipeError:
        # `arus tail T | head` closed the pipe: the reader has what it wanted. Python's recipe:
        # point stdout at /dev/null so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if stopping:
        count = f"{printed} record" if printed == 1 else f"{printed} records"
        print(f"tail: stopped by {stopping[0]} after {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
