"""Backfill: recompute silver and gold in batch with the streaming job's own stage functions.

    arus backfill                                        # all of bronze -> silver, gold
    arus backfill --since 2026-03-01T00:00Z --until 2026-03-02T00:00Z
    arus backfill --source kafka --topic iot.readings \\
        --starting-offsets '{"iot.readings":{"0":1200,"1":1180,"2":1210}}' --ending-offsets latest
    arus backfill --source kafka --starting-timestamp 2026-03-01T12:00:00Z \\
        --ending-timestamp 2026-03-01T13:00:00Z
    arus backfill --source file --path events.jsonl      # or a .csv with a header
    arus backfill --dry-run                              # count what would change
    spark-submit jobs/backfill.py --since 2026-03-01T00:00Z   # the same flags, on a cluster

The input (bronze, a Kafka range, a file) is described in arus/batch/sources.py; the recompute
and its idempotent writes (`--replace` also deletes what the recompute no longer produces) in
arus/batch/backfill.py.
"""

from __future__ import annotations

import argparse
import sys

from arus.batch.backfill import BackfillSettings, Recompute, backfill
from arus.batch.sources import check_schema, input_from, input_parser, parse_input_args
from arus.config import Config
from arus.io.lake import is_table, table_location
from arus.runtime.job import prepared_main, refuse
from arus.runtime.session import build_session

APP = "arus-backfill"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = input_parser(
        "arus backfill", "Recompute silver and gold from bronze, a Kafka range or a file, idempotently."
    )
    parser.add_argument("--gold-table", help="gold table name or path (default [aggregate] table)")
    parser.add_argument("--silver-table", help="silver table name or path (default [batch] silver_table)")
    parser.add_argument("--deadletter-table", help="also upsert the dead letters, by source position, here")
    for switch, text in (
        ("--no-silver", "write gold only"),
        ("--devices", "enrich silver with the device dimension, as the pipeline does ([pipeline] devices)"),
        ("--replace", "delete rows in the span that the recompute lacks"),
        ("--dry-run", "count what would change; write nothing"),
    ):
        parser.add_argument(switch, action="store_true", help=text)
    return parse_input_args(parser, argv)


def settings_from(args: argparse.Namespace, config: Config) -> BackfillSettings:
    silver = args.silver_table or config.batch.silver_table
    return BackfillSettings(
        recompute=Recompute.from_args(args, config),
        source=input_from(args, config),
        gold_path=table_location(config, args.gold_table or config.aggregate.table),
        silver_path=None if args.no_silver else table_location(config, silver),
        deadletter_path=table_location(config, args.deadletter_table) if args.deadletter_table else None,
        replace=args.replace,
        dry_run=args.dry_run,
        retries=config.batch.conflict_retries,
        devices=args.devices,
        tolerance=config.batch.tolerance,
    )


def main(argv: list[str] | None = None) -> int:
    return prepared_main("backfill", parse_args(argv), settings_from, check_schema, run_backfill)


def run_backfill(_args: argparse.Namespace, config: Config, settings: BackfillSettings) -> int:
    if settings.source.kind == "bronze" and not is_table(settings.source.location):
        return refuse("backfill", f"no bronze Delta table at {settings.source.location}")
    backfill(build_session(APP, config.spark), config, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
