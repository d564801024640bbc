"""What every producer is, and how one runs: a Source (start / stop / run, like quix-streams'
BaseSource), the flags all of them take, and `launch`, what an entry point's `main` returns.

A source says which topics it writes and makes its records (`run`) from pure, seeded generators;
`start` does the rest, the same way for each: open the source's files, connect and check the
topics, send through a SendLoop (pacing, bounds, progress), stop on Ctrl-C or SIGTERM, flush,
close, and choose the exit code (arus.runtime.job's convention): 0 when every record is
acknowledged, 1 when some were not or the source cannot go on, 2 for a usage or config mistake.

A new source: subclass Source (topics, run, and the hooks it needs), then write its entry point in
producers/ as the three there are written: flags, then `launch` with a function that makes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

from kafka import KafkaProducer

from arus.config import Config, ConfigError, checked, load_config
from arus.io.producer import ProducerError, connect
from arus.signals import stop_on_signals
from arus.sources.send import Record, SendLimits, SendLoop, SendMeter, Summary


class Source(ABC):
    """A producer: records made from what it reads or simulates, sent to Kafka by `start`.

    Subclasses say which topics they write (`topics`) and make the records (`run`); the hooks
    (`open`, `preamble`, `send_loop`, `finish`) are there for what a source does besides.
    """

    name: ClassVar[str]  # what its messages start with: "produce-iot"

    def __init__(self, config: Config, limits: SendLimits) -> None:
        self.config = config
        self.limits = limits
        self.loop: SendLoop | None = None

    @abstractmethod
    def topics(self) -> list[str]:
        """Every topic the source writes to: each is checked before anything is sent."""

    @abstractmethod
    def run(self, loop: SendLoop) -> Iterable[Record]:
        """The records to send, made as the loop takes them. `loop` is for tallies and notes
        (`loop.summary.count`, `loop.note`) and waits that end when the source is stopped (`loop.wait`)."""

    def open(self, resources: ExitStack) -> None:  # noqa: B027 - a hook a source may leave alone
        """Before connecting, so nothing is sent yet: open what the source reads and writes, and put
        on `resources` how to close it. They are closed after the flush, whatever happened."""

    def preamble(self) -> Iterable[Record]:
        """Records sent before run()'s, outside --count and pacing (the IoT devices' metadata)."""
        return ()

    def send_loop(self, producer: KafkaProducer) -> SendLoop:
        """The loop that sends; a source that follows each delivery gives it callbacks."""
        return SendLoop(producer)

    def finish(self, summary: Summary) -> int:
        """The exit code, once everything is closed: 0 when every record was acknowledged, else 1."""
        return 0 if summary.failed == 0 and summary.acked == summary.sent else 1

    def stop(self, reason: str) -> None:
        """Stop after the record in hand (what Ctrl-C and SIGTERM do while the source sends)."""
        if self.loop is not None:
            self.loop.stop(reason)

    def start(self, metrics_port: int | None = None) -> int:
        """Send until the records end, a limit is reached or the source is stopped; the exit code.
        Rates go to the metrics file, and to Prometheus on `metrics_port` if given."""
        with ExitStack() as resources:
            self.open(resources)
            producer = connect(self.config, self.topics())
            resources.callback(producer.close, timeout=10)  # first to close: its last acks are counted
            meter = SendMeter.open(self.config, f"arus-{self.name}", self.topics()[0], metrics_port)
            resources.callback(meter.close)
            loop = self.loop = self.send_loop(producer)
            with stop_on_signals(self.stop):
                for record in self.preamble():
                    loop.send(record)
                summary = loop.run(self.run(loop), self.limits, meter=meter)
        return self.finish(summary)


def launch(name: str, args: argparse.Namespace, make: Callable[[Config, SendLimits], Source]) -> int:
    """An entry point's exit code: the source `make` builds from the config (the connection flags
    applied) and the limits in `args`, started. A mistake in the settings or the input, or a Kafka
    that cannot be reached, is one line on stderr, after `name`: exit code 2 for a config mistake
    (nothing was sent), 1 for the rest."""
    try:
        config = with_send_arguments(load_config(args.config), args)
        return make(config, SendLimits(args.rate, args.speed, args.count, args.duration)).start(
            args.metrics_port
        )
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"{name}: {line}", file=sys.stderr)
        return 2
    # ValueError covers the input's own mistakes (an unknown time zone).
    except (ProducerError, OSError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def add_send_arguments(parser: argparse.ArgumentParser, *, speed: str | None = None) -> None:
    """The flags every source takes besides --config (job_parser): the limits, the Kafka
    connection; --speed too, with `speed` as its help, for a source whose records have event times
    to pace by."""
    parser.add_argument("--rate", type=_rate, default=None, help="events per second, or 'unlimited'")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    if speed:
        parser.add_argument("--speed", type=_speed, help=speed)
    else:
        parser.set_defaults(speed=None)
    group = parser.add_argument_group("Kafka connection and batching (default: [kafka], [producer])")
    group.add_argument("--bootstrap-servers", help="host:port[,host:port...] (env KAFKA_BOOTSTRAP_SERVERS)")
    group.add_argument("--acks", choices=("all", "1", "0"), help="acknowledgements to wait for")
    group.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"))
    group.add_argument(
        "--linger-ms", type=checked("producer.linger_ms"), help="how long a batch may wait to fill up"
    )
    group.add_argument("--batch-size", type=checked("producer.batch_size"), help="bytes per partition batch")


def with_send_arguments(config: Config, args: argparse.Namespace) -> Config:
    """The config with the connection and batching flags applied."""
    kafka = config.kafka
    if args.bootstrap_servers:
        kafka = dataclasses.replace(kafka, bootstrap_servers=args.bootstrap_servers)
    overrides: dict[str, Any] = {
        "acks": args.acks,
        "compression": "" if args.compression == "none" else args.compression,
        "linger_ms": args.linger_ms,
        "batch_size": args.batch_size,
    }
    producer = dataclasses.replace(config.producer, **{k: v for k, v in overrides.items() if v is not None})
    if producer.acks != "all" and producer.idempotence:
        # Kafka refuses idempotence without acks=all; a user asking for fewer acks wants speed.
        producer = dataclasses.replace(producer, idempotence=False)
    return dataclasses.replace(config, kafka=kafka, producer=producer)


def _rate(text: str) -> float | None:
    if text in ("unlimited", "0", ""):
        return None
    return _not_negative(text, "rate must be positive or 'unlimited'")


def _speed(text: str) -> float | None:
    """0 means no event-time pacing."""
    return _not_negative(text, "speed must be positive (or 0: as fast as --rate allows)") or None


def _not_negative(text: str, refusal: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(refusal)
    return value


def write_state(path: Path, state: dict[str, Any]) -> None:
    """A source's position (the CSV cursor, the poller's ids) as JSON, atomically: a crash leaves
    the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
