"""Alert rules over clean readings, into an alerts topic and a Delta table.

    arus alerts                          # catch up on the clean topic, then stop
    arus alerts --trigger "10 seconds"   # run live until Ctrl-C
    arus alerts --show                   # then print the alerts table

Reads `[pipeline] clean_topic` (silver rows as JSON, `[pipeline] clean_schema`) and applies the
`[alerts]` rules (arus.core.alerts): bounds, device range, rolling z-score, stuck sensor, silent device, per
`[alerts] key`. The rolling rules look back on each device's earlier readings in the silver table
(`[batch] silver_table`), which the pipeline's clean stage writes before it publishes a reading,
so every reading this job sees is already there. Alerts are inserted into `[batch] alerts_table`
by their deterministic alert_id, never updated (exactly once in Delta); the ones a micro-batch
inserted are published to `[alerts] topic` keyed by alert_id (at-least-once). Readings are told
apart by `[stream] id_field`. The pipeline runs this query as its last stage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from arus.config import Config, job_parser
from arus.grammar import duration_us
from arus.io.kafka import check_kafka
from arus.io.owners import Writes, writer
from arus.runtime.progress import await_queries
from arus.runtime.queries import AlertsQuery, reading_id, start_alerts_query
from arus.runtime.session import streaming_main
from arus.runtime.show import show_alerts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser("arus alerts", __doc__, metrics=True)
    parser.add_argument("--input-topic", help="clean readings topic (default: [pipeline] clean_topic)")
    parser.add_argument("--alerts-topic", help="topic for the alerts (default: [alerts] topic)")
    parser.add_argument("--table", help="alerts Delta table name (under [paths] lake) or path")
    parser.add_argument("--silver-table", help="silver table the rolling rules look back on")
    parser.add_argument("--checkpoint", help="checkpoint folder (default under [paths] checkpoints)")
    parser.add_argument(
        "--trigger",
        default="available-now",
        help='"available-now" (process what is there, then stop) or an interval such as "10 seconds"',
    )
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--show", action="store_true", help="print the alerts table at the end")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> AlertsQuery:
    lake = config.resolve(config.paths.lake)
    rules = config.alerts
    if args.alerts_topic:
        rules = replace(rules, topic=args.alerts_topic)
    return AlertsQuery(
        rules=rules,
        input_topic=args.input_topic or config.pipeline.clean_topic,
        schema=config.schema(config.pipeline.clean_schema),
        event_time_field=config.stream.event_time_field,
        id_field=reading_id(config),
        table_path=str(lake / (args.table or config.batch.alerts_table)),
        silver_path=str(lake / (args.silver_table or config.batch.silver_table)),
        checkpoint=args.checkpoint or str(config.resolve(config.paths.checkpoints) / "alerts"),
        trigger=args.trigger,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
    )


def preflight(config: Config, query: AlertsQuery) -> None:
    """The lookback parses (ValueError otherwise), the broker answers and both topics exist."""
    duration_us(query.rules.lookback)
    check_kafka(config.kafka, [query.input_topic, query.rules.topic])


def main(argv: list[str] | None = None) -> int:
    return streaming_main(
        "alerts",
        parse_args(argv),
        settings_from,
        check=preflight,
        start=lambda spark, config, query, tally: await_queries(
            [start_alerts_query(spark, config.kafka, query, tally)], tally
        ),
        show=lambda spark, config, query: show_alerts(spark, query.table_path),
        # The alerts table records no writer (arus.io.owners); the checkpoint is still held.
        writes=lambda _config, query: Writes(writer(query.checkpoint, "arus alerts"), {}, ""),
    )


if __name__ == "__main__":
    sys.exit(main())
