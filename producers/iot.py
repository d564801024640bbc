"""IoT sensor fleet simulator: seeded readings from N devices of four kinds, sent to Kafka as JSON.

    arus produce iot --count 3000                 # what `make produce-iot` runs; stops by itself
    arus produce iot --speed 60 --duration 120    # live: one event-time minute per second
    arus produce iot --rate 200 --devices 100 --seed 7 --ledger data/iot-ledger.jsonl
    arus produce iot --clean --count 1000         # no injected faults or delivery problems
    arus produce iot --inject late=0.05 --inject malformed=0
    python -m producers.iot --count 3000          # the same, from a checkout

The devices' metadata goes to the compacted devices topic first, then the readings, with the
sensor faults and delivery problems of [iot.faults] and [iot.delivery] (arus/sources/iot.py says
how they are made); `--ledger` writes the ground truth of every problem injected (JSONL).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from arus.config import Config, checked, job_parser
from arus.core.rules import aware_time
from arus.sources.base import add_send_arguments, launch
from arus.sources.iot import DELIVERY_RATES, FAULT_RATES, IotSimulator, SimulatorOptions, parse_inject
from arus.sources.send import SendLimits


def parser() -> argparse.ArgumentParser:
    parser = job_parser("arus produce iot", __doc__, metrics=True)
    add_send_arguments(parser, speed="event-time speed-up: 60 = a simulated minute per second")
    parser.add_argument("--devices", type=checked("iot.devices"), help="fleet size (default: [iot] devices)")
    parser.add_argument("--seed", type=int, help="random seed (default: [iot] seed)")
    parser.add_argument("--start", type=aware_time, help="event time of the first reading (default: now)")
    parser.add_argument("--interval", type=float, help="event-time seconds between a device's readings")
    parser.add_argument("--topic", help="readings topic (default: [stream] topic)")
    parser.add_argument(
        "--devices-topic", help="compacted device metadata topic (default: [stream] devices_topic)"
    )
    parser.add_argument(
        "--ledger", type=Path, help="write the ground truth of every injected problem here (JSONL)"
    )
    parser.add_argument("--clean", action="store_true", help="inject no faults and no delivery problems")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="generate readings in the sending process even when nothing paces them "
        "(by default a forked process generates while this one sends)",
    )
    parser.add_argument(
        "--inject",
        type=parse_inject,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"override one rate; KIND is one of {', '.join([*FAULT_RATES, *DELIVERY_RATES])}",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    # Each option is the flag of the same name.
    options = SimulatorOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(SimulatorOptions)}
    )

    def simulator(config: Config, limits: SendLimits) -> IotSimulator:
        return IotSimulator(config, limits, options)

    return launch(IotSimulator.name, args, simulator)


if __name__ == "__main__":
    sys.exit(main())
