"""Time travel: a Delta table's history, and the table as it was at a version or a time.

    arus history gold_aggregates                              # its commits, newest first
    arus history gold_aggregates --version 3                  # the rows as of version 3
    arus history gold_aggregates --timestamp 2026-03-01T12:00:00Z
    python jobs/history.py gold_aggregates                    # the same, without the command

Reads with the `deltalake` package (no Spark, no JVM). A table is a name under [paths] lake
(ARUS_LAKE_DIR overrides it) or a path. Versions that VACUUM has cleaned up can no longer be read.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from arus.config import ConfigError, job_parser, load_config
from arus.core.rules import aware_time
from arus.io import lake


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser("arus history", __doc__)
    parser.add_argument("table", help="table name under the lake, or a path")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--version", type=int, help="read the table as of this version")
    when.add_argument("--timestamp", type=aware_time, help="read the table as of this time (UTC if Z)")
    parser.add_argument("--limit", type=int, default=20, help="how many commits of history to show")
    parser.add_argument("--show", type=int, default=10, help="how many rows of the old version to show")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        root = lake.lake_dir(load_config(args.config))
    except ConfigError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    path = lake.table_path(args.table, root)
    if not lake.is_table(path):
        print(f"history: no Delta table at {path}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"{path}: history, newest first")
        print(lake.history(path, args.limit).to_string(index=False))
        if args.version is None and args.timestamp is None:
            return 0
        try:
            old = lake.read_table(path, version=args.version, as_of=args.timestamp)
        except Exception as exc:  # deltalake raises its own error types for a version it cannot load
            print(
                f"history: cannot read {path} as of {args.version or args.timestamp}: {exc}", file=sys.stderr
            )
            return 1
        assert old is not None
        label = (
            f"version {args.version}" if args.version is not None else f"{args.timestamp:%Y-%m-%dT%H:%M:%SZ}"
        )
        print(f"\nas of {label}: {len(old)} rows")
        print(old.head(args.show).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
