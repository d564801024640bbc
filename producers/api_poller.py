"""Poll a JSON HTTP API on an interval and publish each new record once, keyed by its id.

    arus produce api                # what `make produce-api` runs: USGS quakes, each minute
    arus produce api --polls 1      # one poll (every page), then stop
    arus produce api --url https://api.example.com/v1/items --records-path data \\
        --id-field id --time-field created_at --time-format iso --next-path links.next --interval 30
    python -m producers.api_poller  # the same, from a checkout

Ids already published are kept in the state file, so a record is published once across polls and
restarts; 5xx, 429 and timeouts are retried with backoff (arus/sources/api_poller.py says how).
Set API_BEARER_TOKEN in the environment to send `Authorization: Bearer ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from arus.config import Config, job_parser
from arus.sources.api_poller import ApiPoller
from arus.sources.base import add_send_arguments, launch
from arus.sources.send import SendLimits


def parser() -> argparse.ArgumentParser:
    parser = job_parser("arus produce api", __doc__, metrics=True)
    add_send_arguments(parser)
    parser.add_argument("--polls", type=int, help="stop after this many polls (default: poll until stopped)")
    group = parser.add_argument_group("the API (defaults: [api])")
    group.add_argument("--url", help="first page's URL")
    group.add_argument("--records-path", help='dotted path to the list of records ("" = the whole response)')
    group.add_argument("--id-field", help="dotted path of a record's id")
    group.add_argument("--time-field", help="dotted path of a record's event time")
    group.add_argument("--time-format", help="iso, epoch_s, epoch_ms or a strptime format")
    group.add_argument("--next-path", help="dotted path of the next page's URL")
    group.add_argument("--interval", type=float, help="seconds between polls")
    group.add_argument("--timeout", type=float, help="seconds to wait for a response")
    group.add_argument("--max-retries", type=int, help="retries of 5xx, 429 and timeouts")
    group.add_argument("--backoff-base", type=float, help="first backoff ceiling in seconds (doubles)")
    group.add_argument("--backoff-max", type=float, help="largest backoff in seconds")
    group.add_argument("--topic", help="topic to publish to")
    group.add_argument("--source-name", help="the source header, and the namespace of event ids")
    # Made absolute here: a path given on the command line is taken from the working directory,
    # where [api] state_file is taken from the project folder.
    group.add_argument("--state-file", type=os.path.abspath, help="ids already published and ETags")
    group.add_argument("--seed", type=int, help="seed of the backoff jitter (default: random)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # [api] settings, by their names there, that a flag overrides.
    flags = {
        "url": args.url,
        "topic": args.topic,
        "source_name": args.source_name,
        "records_path": args.records_path,
        "id_field": args.id_field,
        "time_field": args.time_field,
        "time_format": args.time_format,
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "max_retries": args.max_retries,
        "backoff_base_s": args.backoff_base,
        "backoff_max_s": args.backoff_max,
        "next_path": args.next_path,
        "state_file": args.state_file,
    }

    def poller(config: Config, limits: SendLimits) -> ApiPoller:
        api = dataclasses.replace(config.api, **{k: v for k, v in flags.items() if v is not None})
        return ApiPoller(config, limits, api, polls=args.polls, seed=args.seed)

    return launch(ApiPoller.name, args, poller)


if __name__ == "__main__":
    sys.exit(main())
