"""The main job's window aggregates without Spark: a kafka-python consumer group.

    arus consume                          # run live with a table of the latest windows
    arus consume --until-idle 10          # catch up, stop after 10 s without records
    arus consume --max-records 5000 --no-view --where kind=temperature
    arus consume --where "value > 30 and site in ('north', 'east')" --group-id hot-sites

It reads `[stream] topic` and computes what `arus aggregate` computes, from the same [stream]
(schema, event time, watermark, id field) and [aggregate] settings (keys, value fields, window), in
plain Python (arus.pyengine): the same rows, field names and record keys, with readings cleaned
per [clean] as the Spark job cleans them. Records that fail to parse
go to `[consumer] deadletter_topic` with their original bytes and the reason, events behind the
watermark to `late_topic`, window aggregates to `output_topic` (update mode: each change of a
window is published; the latest record per key is current). At-least-once: output is acknowledged
before offsets are committed (arus.pyengine.consumer says how replays rebuild the windows).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from kafka.errors import KafkaError

from arus.config import Config, ConfigError, job_parser
from arus.core.rules import FilterError, GuardError
from arus.io.kafka import check_kafka
from arus.io.producer import ProducerError
from arus.pyengine.consumer import ConsumerSettings, consumer_settings, run
from arus.runtime.job import FAILED, GUARD_STOPPED, prepared_main

# Options that override a key of [stream] (--input-topic: topic), [aggregate] or [consumer] of the
# same name, with their help.
STREAM_FLAGS = {
    "input_topic": "topic to read (default: [stream] topic)",
    "watermark": 'how late events may be, e.g. "2 minutes"',
    "event_time_field": "the event-time field",
}
AGGREGATE_FLAGS = {
    "window": 'window length, e.g. "1 minute"',
    "keys": "comma-separated key fields",
    "value_fields": "comma-separated numeric fields to aggregate",
}
CONSUMER_FLAGS = {
    "output_topic": "topic for the aggregates",
    "deadletter_topic": "topic for records that fail to parse",
    "late_topic": 'topic for events behind the watermark ("" to only count them)',
    "group_id": "consumer group",
}
LISTS = ("keys", "value_fields")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser("arus consume", __doc__ or "", metrics=True)
    for name, text in {**STREAM_FLAGS, **AGGREGATE_FLAGS, **CONSUMER_FLAGS}.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=text)
    parser.add_argument("--starting-offsets", choices=("earliest", "latest"), help="for a new group")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FILTER",
        help="aggregate only the (cleaned) events this holds for, e.g. kind=temperature or "
        "\"value >= 30 and (site in ('north', 'east') or kind != humidity)\": "
        "=, !=, <, <=, >, >=, in (...), not in (...), and, or, parentheses; repeatable, all must hold "
        "(docs/consumer.md)",
    )
    parser.add_argument("--until-idle", type=float, metavar="SECONDS", help="stop after this long idle")
    parser.add_argument(
        "--max-records",
        type=int,
        help="stop after reading this many new records (records replayed after a restart or a rebalance, "
        "to rebuild open windows, do not count)",
    )
    parser.add_argument("--no-view", action="store_true", help="no live table, only the summary at the end")
    parser.add_argument("--view-rows", type=int, help="windows the live table shows")
    parser.add_argument("--refresh", type=float, metavar="SECONDS", help="live table refresh interval")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> ConsumerSettings:
    """Flags over config; ConfigError for anything the consumer cannot run with."""

    def given(names: list[str], **more: Any) -> dict[str, Any]:
        values = {name: getattr(args, name) for name in names} | more
        for name in [n for n in LISTS if values.get(n)]:
            values[name] = tuple(s.strip() for s in values[name].split(",") if s.strip())
        return {k: v for k, v in values.items() if v is not None}

    stream = given([*STREAM_FLAGS], starting_offsets=args.starting_offsets)
    if "input_topic" in stream:
        stream["topic"] = stream.pop("input_topic")
    raw = replace(config.stream, **stream)
    job = replace(config.aggregate, **given([*AGGREGATE_FLAGS]))
    view = {"view_rows": args.view_rows, "view_refresh_s": args.refresh}
    consumer = replace(config.consumer, **given([*CONSUMER_FLAGS], **view))
    try:
        schema = config.schema(raw.schema)
        return consumer_settings(
            raw,
            job,
            consumer,
            schema,
            config.clean,
            args.where,
            args.until_idle,
            args.max_records,
            not args.no_view,
        )
    except FilterError as exc:
        raise ConfigError(f"--where: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None


def preflight(config: Config, settings: ConsumerSettings) -> None:
    """The broker answers and every topic the run reads or writes exists."""
    out = settings.consumer
    topics = [settings.stream.topic, out.output_topic, out.deadletter_topic, out.late_topic]
    check_kafka(config.kafka, [topic for topic in topics if topic])


def main(argv: list[str] | None = None) -> int:
    return prepared_main("consume", parse_args(argv), settings_from, preflight, consume)


def consume(args: argparse.Namespace, config: Config, settings: ConsumerSettings) -> int:
    try:
        counters = run(config, settings, metrics_port=args.metrics_port)
    except GuardError as exc:
        print(f"consume: stopped by a guard, without committing the batch in hand: {exc}", file=sys.stderr)
        return GUARD_STOPPED
    except (KafkaError, ProducerError) as exc:
        print(f"consume: stopped without committing the batch in hand: {exc}", file=sys.stderr)
        return FAILED
    print(counters.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
