"""The main job: event-time window aggregates of a JSON Kafka topic, into a Kafka topic and Delta.

    arus aggregate                                          # catch up on the topic, then stop
    arus aggregate --trigger "10 seconds"                   # run live until Ctrl-C
    arus aggregate --window "5 minutes" --slide "1 minute" --show
    arus aggregate --output-mode append                     # each window written once, when final
    arus aggregate --take-over gold_aggregates              # after the pipeline wrote it, on purpose
    spark-submit jobs/aggregate.py [the same options]       # on a cluster, or a local Spark

Reads `[stream] topic` (any JSON topic: its schema and event-time field come from [stream], keys
and value fields from [aggregate] in conf/arus.toml), drops nothing: records that fail to parse go
to the dead-letter topic and table with their original bytes and the reason; events behind the
watermark, which Spark's stateful operators drop, go to the [stream] late topic and table.
Readings are cleaned per [clean] before they are aggregated. Aggregates are upserted into the
Delta table by (keys, window), so a replayed micro-batch writes each row exactly once; the Kafka
output is at-least-once, each record keyed by entity and window start. With --output-mode append
([aggregate] output_mode) each window is appended and published once, when the watermark passes
its end: later, cheaper, and never a partial window. One streaming query
(arus.runtime.queries) does it all; each micro-batch prints a progress line with its watermark,
late and dead-letter counts.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from arus.config import Config, checked, job_parser
from arus.runtime.job import add_take_over
from arus.runtime.progress import await_queries
from arus.runtime.queries import (
    AggregateQuery,
    aggregate_query,
    aggregate_writes,
    preflight_aggregate,
    start_aggregate_query,
)
from arus.runtime.session import streaming_main
from arus.runtime.show import show_aggregates

# the [stream] keys that an option overrides (--input-topic: topic), with its help
STREAM_FLAGS = {
    "input_topic": "topic to read",
    "deadletter_topic": "topic for records that fail to parse",
    "deadletter_table": "dead-letter Delta table name or path",
    "late_topic": "topic for events behind the watermark",
    "late_table": "late-events Delta table name or path",
    "watermark": 'how late events may be, e.g. "2 minutes"',
    "event_time_field": "the event-time field",
    "starting_offsets": "earliest or latest, for a new checkpoint",
}
# the [aggregate] keys that an option of the same name overrides, with its help
AGGREGATE_FLAGS = {
    "output_topic": "topic for the aggregates",
    "table": "Delta table name (under [paths] lake) or absolute path",
    "window": 'window length, e.g. "1 minute"',
    "keys": "comma-separated key fields",
    "value_fields": "comma-separated numeric fields to aggregate",
    "output_mode": "update (each batch upserts the windows it changed) or append (each window once, "
    "final, when the watermark passes it)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(
        "arus aggregate",
        "Event-time window aggregates of a JSON Kafka topic, into Kafka and Delta.",
        metrics=True,
    )
    for name, text in {**STREAM_FLAGS, **AGGREGATE_FLAGS}.items():
        # Checked as the config key it overrides (a bad --window is refused before anything starts).
        key = f"stream.{name}" if name in STREAM_FLAGS else f"aggregate.{name}"
        kind = checked(key) if name in ("watermark", "starting_offsets", "window", "output_mode") else str
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    parser.add_argument(
        "--slide",
        type=checked("aggregate.window"),
        help='slide for sliding windows, e.g. "30 seconds" (default: tumbling)',
    )
    parser.add_argument(
        "--trigger",
        default="available-now",
        help='"available-now" (process what is there, then stop) or an interval such as "10 seconds"',
    )
    parser.add_argument("--checkpoint", help="checkpoint folder (default under [paths] checkpoints)")
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--show", action="store_true", help="print the table and topic contents at the end")
    add_take_over(parser)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> AggregateQuery:
    stream = {name: getattr(args, name) for name in STREAM_FLAGS}
    stream["topic"] = stream.pop("input_topic")
    job = {name: getattr(args, name) for name in AGGREGATE_FLAGS}
    for name in ("keys", "value_fields"):
        text = job[name]
        job[name] = tuple(s.strip() for s in text.split(",") if s.strip()) if text else None
    return aggregate_query(
        config,
        replace(config.stream, **{k: v for k, v in stream.items() if v is not None}),
        replace(config.aggregate, **{k: v for k, v in job.items() if v is not None}),
        args.checkpoint or str(config.resolve(config.paths.checkpoints) / "aggregate"),
        slide=args.slide,
        trigger=args.trigger,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )


def main(argv: list[str] | None = None) -> int:
    return streaming_main(
        "aggregate",
        parse_args(argv),
        settings_from,
        check=lambda config, query: preflight_aggregate(config.kafka, query),
        start=lambda spark, config, query, tally: await_queries(
            [start_aggregate_query(spark, config.kafka, query, tally)], tally
        ),
        show=lambda spark, config, query: show_aggregates(spark, config.kafka, query),
        writes=lambda _config, query: aggregate_writes(query),
    )


if __name__ == "__main__":
    sys.exit(main())
