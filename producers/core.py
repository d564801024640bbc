"""The send loop every producer shares: a kafka-python KafkaProducer with acks=all and idempotence,
pacing (`--rate`), bounds (`--count`, `--duration`), a live progress line, a summary at exit, and a
clean flush on Ctrl-C or SIGTERM. Event generators stay pure; this module is the only one that sends.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from arus.config import KafkaConfig, ProducerConfig


class ProducerError(RuntimeError):
    """A producer cannot start or continue (broker down, topic missing, ...)."""


@dataclass(frozen=True)
class Record:
    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


@dataclass
class Summary:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    errors: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "end of input"

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        return (
            f"sent {self.sent}, acked {self.acked}, errors {self.failed}, "
            f"{self.acked / self.elapsed:,.0f} events/s over {self.elapsed:.1f}s"
        )


def make_producer(kafka: KafkaConfig, settings: ProducerConfig, **overrides: Any) -> KafkaProducer:
    """A KafkaProducer with the configured durability and batching; fails fast if no broker answers."""
    kwargs: dict[str, Any] = {
        **kafka.client_kwargs(),
        "acks": "all" if settings.acks == "all" else int(settings.acks),
        "enable_idempotence": settings.idempotence,
        "compression_type": settings.compression or None,
        "linger_ms": settings.linger_ms,
        "batch_size": settings.batch_size,
        "max_block_ms": settings.max_block_ms,
        "bootstrap_timeout_ms": settings.max_block_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        **overrides,
    }
    try:
        return KafkaProducer(**kwargs)
    except KafkaTimeoutError:
        raise ProducerError(
            f"no Kafka broker answers at {kafka.bootstrap_servers} (is it up? `make kafka-up`)"
        ) from None


def check_topics(producer: KafkaProducer, topics: Iterable[str], bootstrap: str) -> None:
    """Fail within max_block_ms, with the topic's name, when a topic does not exist."""
    for topic in set(topics):
        try:
            partitions = producer.partitions_for(topic)
        except KafkaTimeoutError:
            partitions = None
        if not partitions:
            raise ProducerError(
                f"topic {topic!r} does not exist on {bootstrap} (create it: `make kafka-up` creates "
                "the topics in conf/arus.toml)"
            )


class Pacer:
    """Spaces sends to `rate` per second (None: as fast as possible), without drifting."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.next = clock()

    def wait(self) -> None:
        if not self.interval:
            return
        delay = self.next - self.clock()
        if delay > 0:
            time.sleep(delay)
        self.next = max(self.next, self.clock() - 1.0) + self.interval


class SendLoop:
    """Sends records, counting acks and failures from delivery callbacks."""

    def __init__(
        self,
        producer: KafkaProducer,
        *,
        progress: TextIO | None = sys.stderr,
        progress_every: float = 1.0,
        on_ack: Callable[[Record], None] | None = None,
        on_error: Callable[[Record, Exception], None] | None = None,
    ) -> None:
        self.producer = producer
        self.summary = Summary()
        self.progress = progress
        self.progress_every = progress_every
        self.on_ack = on_ack
        self.on_error = on_error
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        self.summary.stopped_by = reason
        self._stop.set()

    def _ack(self, record: Record) -> Callable[[Any], None]:
        def callback(_metadata: Any) -> None:
            with self._lock:
                self.summary.acked += 1
            if self.on_ack:
                self.on_ack(record)

        return callback

    def _fail(self, record: Record) -> Callable[[Exception], None]:
        def callback(exc: Exception) -> None:
            with self._lock:
                self.summary.failed += 1
                name = type(exc).__name__
                self.summary.errors[name] = self.summary.errors.get(name, 0) + 1
            if self.on_error:
                self.on_error(record, exc)

        return callback

    def run(
        self,
        records: Iterable[Record],
        *,
        rate: float | None = None,
        count: int | None = None,
        duration: float | None = None,
        pacer: Pacer | None = None,
    ) -> Summary:
        pacer = pacer or Pacer(rate)
        deadline = time.monotonic() + duration if duration else None
        last_progress = time.monotonic()
        with _signals_stop(self):
            for record in _bounded(records, count):
                if self._stop.is_set():
                    break
                if deadline and time.monotonic() >= deadline:
                    self.summary.stopped_by = "duration reached"
                    break
                pacer.wait()
                self.send(record)
                now = time.monotonic()
                if self.progress and now - last_progress >= self.progress_every:
                    self.progress.write(f"\r{self.summary.line()}   ")
                    self.progress.flush()
                    last_progress = now
            else:
                if count is not None and self.summary.sent >= count:
                    self.summary.stopped_by = "count reached"
            self.flush()
        if self.progress:
            self.progress.write(f"\r{self.summary.line()} ({self.summary.stopped_by})\n")
        return self.summary

    def send(self, record: Record) -> None:
        try:
            future = self.producer.send(
                record.topic,
                key=record.key.encode() if record.key is not None else None,
                value=record.value,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
            )
        except KafkaError as exc:
            self._fail(record)(exc)
            return
        self.summary.sent += 1
        future.add_callback(self._ack(record))
        future.add_errback(self._fail(record))

    def flush(self, timeout: float = 60.0) -> None:
        try:
            self.producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            pending = self.summary.sent - self.summary.acked - self.summary.failed
            raise ProducerError(f"{pending} records were not acknowledged within {timeout:.0f}s") from None


def _bounded(records: Iterable[Record], count: int | None) -> Iterator[Record]:
    for i, record in enumerate(records):
        if count is not None and i >= count:
            return
        yield record


class _signals_stop:
    """Within the block, SIGINT and SIGTERM ask the loop to stop after the current record."""

    def __init__(self, loop: SendLoop) -> None:
        self.loop = loop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.loop.stop(signal.Signals(signum).name)

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every producer takes."""
    parser.add_argument("--config", help="config file (default: $ARUS_CONFIG or conf/arus.toml)")
    parser.add_argument("--rate", type=_rate, default=None, help="events per second, or 'unlimited'")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")


def _rate(text: str) -> float | None:
    if text in ("unlimited", "0", ""):
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("rate must be positive or 'unlimited'")
    return value
