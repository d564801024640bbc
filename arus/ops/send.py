"""Send JSON records to a topic, each acknowledged by the broker before the next is read.

    echo '{"device_id": "d1", "temp_c": 21.5}' | arus send iot.readings --key d1
    arus send scratch --value '{"a": 1}' --value '{"a": 2}' --header trace=abc
    arus send scratch < records.jsonl            one JSON value a line; blank lines are skipped

Each record is printed with the partition and offset the broker gave it (the console producer's
acks, made visible). A line that is not JSON is refused with its line number, and nothing from it
on is sent; the lines before it were sent and acknowledged, as printed. Records go through the
producer every arus writer uses ([kafka], [producer] in conf/: acks, idempotence, compression),
one at a time: for volume, use `arus produce`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence

from kafka.errors import KafkaError

from arus.config import ConfigError, job_parser, load_config
from arus.io.kafka import logged_warnings
from arus.io.producer import close_producer, make_producer
from arus.ops.topics import partitions_of, reader

ACK_TIMEOUT_S = 30.0
# get() waits this much longer than the producer's own delivery timeout, so the producer gives up
# first: the record's future then fails and close() has nothing left to flush.
GRACE_S = 5.0
RETRIED = "attempts left): "  # kafka-python's "retrying (N attempts left): <error>" warning


class BadJson(ValueError):
    """An input line is not JSON; the message names the line."""


def header(text: str) -> tuple[str, bytes]:
    """argparse's `type=` for --header name=value."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value")
    return name, value.encode()


def values(lines: Iterable[str], source: str) -> Iterator[tuple[str, bytes]]:
    """(where, value) of each non-blank line, checked to be JSON, as it is read (stdin may be a person)."""
    for number, line in enumerate(lines, start=1):
        value = line.strip()
        if not value:
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            raise BadJson(f"{source} {number} is not JSON ({exc}): {value[:80]!r}") from None
        yield f"{source} {number}", value.encode()


def refusal(exc: KafkaError, seen: Sequence[str]) -> str:
    """The error, and what the broker kept answering when kafka-python retried until it gave up
    (NOT_ENOUGH_REPLICAS, NOT_LEADER...): the error alone is then a bare timeout."""
    retried = [message.split(RETRIED, 1)[1] for message in seen if RETRIED in message]
    return f"{exc} (the broker kept answering {retried[-1]})" if retried else str(exc)


def positive_seconds(text: str) -> float:
    seconds = float(text)
    if not seconds > 0:
        raise ValueError(text)
    return seconds


def plural(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "arus send",
        __doc__,
        "echo '{\"a\": 1}' | arus send scratch",
        "arus send scratch --value '{\"a\": 1}' --key k1 --header trace=abc",
        "arus send scratch < records.jsonl",
    )
    parser.add_argument("topic")
    parser.add_argument(
        "--value",
        action="append",
        metavar="JSON",
        help="a record's value, repeatable; without it, JSON lines are read from stdin (a line that is "
        "not JSON stops the send with exit 2: the lines before it were sent, nothing from it on)",
    )
    parser.add_argument("--key", help="every record's key (default: none, so the partitioner spreads them)")
    parser.add_argument(
        "--header", action="append", type=header, default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=ACK_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long a record may take to be acknowledged, retries included (default {ACK_TIMEOUT_S:g})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Every --value is checked before anything is sent: they are all there already.
        given = list(values(args.value, "--value")) if args.value else None
    except BadJson as exc:
        parser.error(str(exc))
    sent = 0
    seen: list[str] = []
    try:
        config = load_config(args.config)
        # Checked first: a broker that creates topics on first use would otherwise make a typo a topic.
        with reader(config.kafka) as consumer:
            partitions_of(consumer, args.topic, config.kafka)
        # linger_ms=0: each record is sent alone and waited for, so lingering would only add delay.
        # kafka-python wants a request to fit in the delivery timeout, which --timeout sets.
        deadline_ms = int(args.timeout * 1000)
        producer = make_producer(
            config.kafka,
            config.producer,
            linger_ms=0,
            delivery_timeout_ms=deadline_ms,
            request_timeout_ms=max(1, min(config.producer.request_timeout_ms, deadline_ms - 1)),
        )
        try:
            key = None if args.key is None else args.key.encode()
            with logged_warnings() as seen:
                for where, value in given if given is not None else values(sys.stdin, "line"):
                    pending = producer.send(args.topic, value=value, key=key, headers=args.header)
                    meta = pending.get(args.timeout + GRACE_S)
                    print(f"{where}: partition {meta.partition} offset {meta.offset}", flush=True)
                    sent += 1
        finally:
            close_producer(producer)
    except BadJson as exc:
        verb = "was" if sent == 1 else "were"
        before = f"the {plural(sent)} before it {verb} sent, as printed" if sent else "nothing was sent"
        print(f"send: {exc}; {before}", file=sys.stderr)
        return 2
    except (ConfigError, RuntimeError) as exc:  # ProducerError, TopicError, KafkaUnavailable
        print(f"send: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        why = refusal(exc, seen)
        print(f"send: {plural(sent)} sent, then the broker refused one: {why}", file=sys.stderr)
        return 1
    print(f"sent {plural(sent)} to {args.topic} (acks={config.producer.acks})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
