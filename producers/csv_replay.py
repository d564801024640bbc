"""Replay any CSV file into Kafka as JSON events, in file order: as fast as --rate allows, or at
event-time pace (--speed), resumable after a crash.

    arus produce csv samples/weather_stations.csv        # what `make produce-csv` runs
    arus produce csv big.csv.gz --time-column ts --key-column id --rate 5000
    arus produce csv log.csv --time-column when --time-format "%d/%m/%Y %H:%M" \\
        --key-column sensor --columns sensor,when,temp --types temp=float --speed 60 --rewrite-time
    arus produce csv big.csv.gz --time-column ts --key-column id --resume
    python -m producers.csv_replay FILE                  # the same, from a checkout

Rows that cannot be read go to the dead-letter topic, or with --reject-file to a JSONL file; the
cursor file records the last line up to which every row is delivered, and --resume continues after
it (arus/sources/csv_replay.py says how rows become events).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from arus.config import Config, job_parser
from arus.sources.base import add_send_arguments, launch
from arus.sources.csv_replay import CsvReplay, ReplayOptions
from arus.sources.send import SendLimits

# How to read the file's rows: text settings, each the ReplayOptions field of the same name.
READING_FLAGS = (
    ("--time-column", "the event-time column"),
    ("--time-format", "iso, epoch_s, epoch_ms or a strptime format"),
    ("--timezone", "zone of times without an offset, e.g. UTC or Asia/Jakarta"),
    ("--key-column", 'the column whose value keys each record ("" for no key)'),
    ("--columns", "comma-separated columns to send (default: all)"),
    ("--types", "comma-separated COLUMN=TYPE (int, float, bool, string); others inferred"),
)


def parser() -> argparse.ArgumentParser:
    parser = job_parser("arus produce csv", __doc__, metrics=True)
    parser.add_argument("file", type=Path, help="CSV file, plain or gzip")
    add_send_arguments(parser, speed="event-time replay: keep the gaps, divided by this")
    group = parser.add_argument_group("reading the file (defaults: [csv])")
    for flag, text in READING_FLAGS:
        group.add_argument(flag, help=text)
    group.add_argument("--delimiter", default=",", help="field delimiter (default ,)")
    group.add_argument("--encoding", default="utf-8", help="file encoding (default utf-8)")
    group.add_argument("--source-name", help="the source_file header and id namespace (default: file name)")
    group = parser.add_argument_group("sending")
    group.add_argument("--topic", help="topic for the events (default: [csv] topic)")
    group.add_argument("--deadletter-topic", help="topic for bad rows (default: [csv] deadletter_topic)")
    group.add_argument(
        "--reject-file", type=Path, help="write bad rows to this JSONL file instead of a topic"
    )
    group.add_argument(
        "--rewrite-time", action="store_true", help="shift event times so the first row is now"
    )
    group.add_argument(
        "--cursor", type=Path, help="cursor file (default: one per file under [csv] cursor_dir)"
    )
    group.add_argument("--resume", action="store_true", help="continue after the cursor's line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Each option is the flag of the same name.
    options = ReplayOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ReplayOptions)})

    def replay(config: Config, limits: SendLimits) -> CsvReplay:
        return CsvReplay(config, limits, args.file, options)

    return launch(CsvReplay.name, args, replay)


if __name__ == "__main__":
    sys.exit(main())
