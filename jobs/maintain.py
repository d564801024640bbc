"""Maintain the lake's Delta tables: compact small files (OPTIMIZE), drop unused ones (VACUUM).

    arus maintain                              # what `make maintain` runs: every table
    arus maintain gold_aggregates silver       # some tables (names under the lake, or paths)
    arus maintain --no-vacuum                  # compact only
    spark-submit jobs/maintain.py --no-vacuum  # the same flags, on a cluster

Prints each table's data files before and after, and is safe while the streaming jobs write
(arus/batch/maintain.py says why). A retention under 7 days needs --unsafe-retention.
"""

from __future__ import annotations

import argparse
import sys

from arus.batch.maintain import SAFE_RETENTION_HOURS, maintain, print_outcome, table_paths
from arus.config import job_parser, load_config_or_say
from arus.io.lake import is_table, lake_dir
from arus.runtime.session import build_session

APP = "arus-maintain"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser(
        "arus maintain",
        "OPTIMIZE and VACUUM the lake's Delta tables, reporting file counts before and after.",
    )
    parser.add_argument("tables", nargs="*", help="table names or paths (default: every table in the lake)")
    parser.add_argument(
        "--retain-hours", type=float, help="VACUUM retention (default [batch] vacuum_retain_hours)"
    )
    parser.add_argument(
        "--unsafe-retention",
        action="store_true",
        help=f"allow a retention under {SAFE_RETENTION_HOURS:.0f} h (only when nothing else uses the table)",
    )
    parser.add_argument("--no-optimize", action="store_true", help="skip compaction")
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")
    parser.add_argument("--no-properties", action="store_true", help="leave table properties alone")
    args = parser.parse_args(argv)
    if (
        args.retain_hours is not None
        and args.retain_hours < SAFE_RETENTION_HOURS
        and not args.unsafe_retention
    ):
        parser.error(
            f"--retain-hours {args.retain_hours:g} is under {SAFE_RETENTION_HOURS:.0f}: files a running "
            "reader or writer still needs could go; add --unsafe-retention if nothing else uses these tables"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config_or_say("maintain", args.config)
    if config is None:
        return 2
    paths = table_paths(config, args.tables)
    missing = [p for p in paths if not is_table(p)]
    if missing:
        print(f"maintain: not Delta tables: {', '.join(missing)}", file=sys.stderr)
        return 2
    spark = build_session(APP, config.spark)
    retain = config.batch.vacuum_retain_hours if args.retain_hours is None else args.retain_hours
    lake = lake_dir(config)
    steps = [s for s, skip in (("OPTIMIZE", args.no_optimize), ("VACUUM", args.no_vacuum)) if not skip]
    where = ", ".join(args.tables) if args.tables else f"every table in {lake}"
    print(f"maintain: {where}; {' + '.join(steps) or 'no steps'}; VACUUM retention {retain:g} h")
    for path in paths:
        outcome = maintain(
            spark,
            path,
            retain,
            config.batch.conflict_retries,
            compact=not args.no_optimize,
            clean=not args.no_vacuum,
            properties=not args.no_properties,
        )
        print_outcome(outcome, lake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
