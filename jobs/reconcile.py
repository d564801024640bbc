"""Reconcile: compare the streaming gold table with a batch recompute over the same bronze data.

    arus reconcile                                   # what `make reconcile` runs
    arus reconcile --checkpoint data/checkpoints/aggregate/aggregates --json report.json
    arus reconcile --source kafka --topic iot.readings --since 2026-03-01T00:00Z
    spark-submit jobs/reconcile.py --json report.json    # the same flags, on a cluster

The input flags are backfill's (arus/batch/sources.py). Each difference is explained by late
events or by records the stream has not read yet, or not at all (arus/batch/reconcile.py).
Exit status: 0 when every difference is explained, 1 when some is not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arus.batch.backfill import Recompute
from arus.batch.reconcile import ReconcileSettings, print_report, reconcile
from arus.batch.sources import check_schema, input_from, input_parser, parse_input_args, read_input
from arus.config import Config
from arus.core.transforms import schema_from_ddl
from arus.io.lake import is_table, table_location
from arus.runtime.job import FAILED, prepared_main, refuse
from arus.runtime.session import build_session

APP = "arus-reconcile"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = input_parser(
        "arus reconcile", "Compare the streaming gold table with a batch recompute over the same bronze data."
    )
    parser.add_argument("--gold-table", help="the streaming gold table (default [aggregate] table)")
    parser.add_argument(
        "--checkpoint",
        help="the streaming query's checkpoint (default: the main job's, else the pipeline's clean stage)",
    )
    parser.add_argument("--late-table", help="late-events table name or path (default [stream] late_table)")
    parser.add_argument("--tolerance", type=float, help="relative tolerance for floats (default [batch])")
    parser.add_argument("--json", help="also write the full report to this file")
    parser.add_argument("--show", type=int, default=20, help="how many differences to print")
    return parse_input_args(parser, argv)


def settings_from(args: argparse.Namespace, config: Config) -> ReconcileSettings:
    root = config.resolve(config.paths.checkpoints)
    # the main job's own query, else the pipeline's clean stage (where its watermark drops late events)
    defaults = [root / "aggregate" / "aggregates", root / "pipeline" / "clean"]
    checkpoint = (
        Path(args.checkpoint)
        if args.checkpoint
        else next((c for c in defaults if (c / "offsets").is_dir()), defaults[0])
    )
    return ReconcileSettings(
        recompute=Recompute.from_args(args, config),
        source=input_from(args, config),
        gold_path=table_location(config, args.gold_table or config.aggregate.table),
        checkpoint=checkpoint if (checkpoint / "offsets").is_dir() else None,
        late_path=table_location(config, args.late_table or config.stream.late_table),
        tolerance=config.batch.tolerance if args.tolerance is None else args.tolerance,
    )


def main(argv: list[str] | None = None) -> int:
    return prepared_main("reconcile", parse_args(argv), settings_from, check_schema, run_reconcile)


def run_reconcile(args: argparse.Namespace, config: Config, settings: ReconcileSettings) -> int:
    for what, path in (("gold", settings.gold_path), ("bronze", settings.source.location)):
        if (what == "gold" or settings.source.kind == "bronze") and not is_table(path):
            return refuse("reconcile", f"no {what} Delta table at {path}")
    spark = build_session(APP, config.spark)
    schema = schema_from_ddl(config.schema(settings.recompute.stream.schema))  # parsing DDL needs the session
    stream_gold = spark.read.format("delta").load(settings.gold_path)
    bronze = read_input(spark, config.kafka, settings.source, schema)
    report = reconcile(spark, stream_gold, bronze, schema, settings)
    print_report(report, settings.recompute.job.keys, args.show)
    if args.json:
        Path(args.json).write_text(report.to_json())
    return FAILED if report.unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
