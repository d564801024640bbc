"""The send loop every source runs (arus.sources.base starts it): pacing (`--rate`, and `--speed`
for event-time replay), bounds (`--count`, `--duration`), a live progress line on a terminal, a
summary at the end, and a clean flush when asked to stop. Event generators stay pure; this module
is the only one that sends. ChildFeed moves a generator into a forked process.

Also the small pieces the sources agree on: the Kafka record, deterministic event ids (UUIDv5),
the origin headers, and how event times are parsed (to timezone-aware UTC; they are written by
arus.core.rules.time_text, the form every part of arus writes).
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import Any, Generic, NamedTuple, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future

from arus.config import Config
from arus.io.metrics import Metrics
from arus.io.metrics import record as metrics_line
from arus.io.producer import ConfluentProducer, ProducerError

SCHEMA_VERSION = "1"
METRICS_EVERY_S = 2.0  # a metrics line per interval: a record each would outweigh the records
T = TypeVar("T")


class Writer(Protocol):
    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...

    def isatty(self) -> bool: ...


class _Stderr:
    """Whatever sys.stderr is when written to (so a test's captured stderr gets the progress line)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class Record(NamedTuple):
    """One Kafka record. `due` is the event time at which it is due: `--speed` paces sends by it.

    A named tuple, not a frozen dataclass: one is made per event, and it builds four times faster.
    """

    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None
    due: datetime | None = None


def stable_id(namespace: uuid.UUID, *parts: object) -> str:
    """A UUIDv5 of the parts: the same event always gets the same id, so downstream can deduplicate."""
    return str(uuid.uuid5(namespace, "/".join(str(p) for p in parts)))


def origin_headers(source: str, **extra: str) -> tuple[tuple[str, bytes], ...]:
    """The headers that say where a record comes from: source, schema_version, then `extra`."""
    pairs = {"source": source, "schema_version": SCHEMA_VERSION, **extra}
    return tuple((k, v.encode()) for k, v in pairs.items())


def timezone(name: str) -> tzinfo:
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def parse_time(value: object, fmt: str = "iso", tz: tzinfo = UTC) -> datetime:
    """An event time as an aware UTC datetime; raises ValueError if it cannot be read.

    `fmt` is "iso" (ISO-8601), "epoch_s", "epoch_ms", or a strptime format. Times without an offset
    are taken to be in `tz`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("no event time")
    if fmt in ("epoch_s", "epoch_ms"):
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"not an epoch time: {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"not an epoch time: {value!r}")
        seconds = number / 1000 if fmt == "epoch_ms" else number
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch time out of range: {value!r}") from None
    if not isinstance(value, str):
        raise ValueError(f"not a time string: {value!r}")
    text = value.strip()
    try:
        if fmt == "iso":
            at = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        else:
            at = datetime.strptime(text, fmt)  # noqa: DTZ007 - the zone is added just below
    except ValueError:
        expected = "ISO-8601" if fmt == "iso" else repr(fmt)
        raise ValueError(f"not a time in {expected} format: {value!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz)
    return at.astimezone(UTC)


@dataclass
class Summary:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    errors: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "end of input"

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def count(self, name: str, n: int = 1) -> None:
        """A producer-specific tally shown in the summary (dead letters, duplicates injected, ...)."""
        if not n:
            return
        self.counts[name] = self.counts.get(name, 0) + n

    def line(self, rate: float | None = None) -> str:
        rate = self.acked / self.elapsed if rate is None else rate
        text = (
            f"sent {self.sent}, acked {self.acked}, errors {self.failed}, "
            f"{rate:,.0f} events/s, {self.elapsed:.1f}s"
        )
        if self.counts:
            text += " | " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        if self.errors:
            text += " | errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        return text


@dataclass(frozen=True)
class SendLimits:
    """How fast and how long a source sends, None for no limit: --rate (events a second), --speed
    (event time runs this many times faster than the clock), --count (events), --duration (seconds)."""

    rate: float | None = None
    speed: float | None = None
    count: int | None = None
    duration: float | None = None


class Pacer:
    """When to send the next record: at most `rate` per second, and with `speed`, at its event
    time scaled (speed 60 = one event-time minute per second, measured from the first record).

    Falling behind the rate is made up for, but never by more than one second's worth of records.
    """

    def __init__(
        self,
        rate: float | None = None,
        speed: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.speed = speed or None
        self.clock = clock
        self.next: float | None = None
        self.origin: tuple[float, datetime] | None = None

    def delay(self, due: datetime | None = None) -> float:
        """Seconds to wait before sending a record due at `due`; the caller then sends it."""
        now = self.clock()
        wait = 0.0
        if self.interval and self.next is not None:
            wait = self.next - now
        if self.speed and due is not None:
            if self.origin is None:
                self.origin = (now, due)
            wall, first = self.origin
            wait = max(wait, wall + (due - first).total_seconds() / self.speed - now)
        wait = max(wait, 0.0)
        if self.interval:
            at = now + wait
            self.next = max(self.next if self.next is not None else at, at - 1.0) + self.interval
        return wait


class SendMeter:
    """The producer's metrics (arus.io.metrics): a line per interval with the records sent and
    acknowledged in it; query is the topic the source's records go to."""

    def __init__(self, metrics: Metrics, app: str, topic: str, every_s: float = METRICS_EVERY_S) -> None:
        self.metrics = metrics
        self.app = app
        self.topic = topic
        self.every_s = every_s
        self.intervals = 0
        self.last = (time.monotonic(), 0, 0)  # time, sent, acked at the last line
        self.due = self.last[0] + every_s

    @classmethod
    def open(cls, config: Config, app: str, topic: str, port: int | None) -> SendMeter:
        """The meter writing to `app`'s file under [paths] metrics, serving on `port` if given;
        close() it when done."""
        return cls(Metrics.open(config, app, port), app, topic)

    def measure(self, summary: Summary) -> None:
        now = time.monotonic()
        since, sent, acked = self.last
        elapsed = max(now - since, 1e-9)
        self.metrics.write(
            metrics_line(
                "producer",
                self.app,
                self.topic,
                batch_id=self.intervals,
                rows=summary.acked - acked,
                input_rows_per_s=(summary.sent - sent) / elapsed,
                processed_rows_per_s=(summary.acked - acked) / elapsed,
                batch_duration_ms=round(elapsed * 1000),
            )
        )
        self.intervals += 1
        self.last = (now, summary.sent, summary.acked)
        self.due = now + self.every_s

    def close(self) -> None:
        self.metrics.close()


class SendLoop:
    """Sends records, counting acks and failures.

    With `on_ack` or `on_error`, every record gets delivery callbacks, which run on the producer's
    I/O thread. Without them (the loop only counts), kafka-python's futures are kept in send
    order and settled in bulk on the sending thread: the delivered ones at the head every
    SETTLE_EVERY sends, before each progress line and after the flush, so no callback is added
    per record nor run on the I/O thread, and every record is still counted as acknowledged or
    failed (by error type) exactly once. A record taken from the input is always sent, so the
    input may record what it handed out (a ledger, a cursor) when it yields.

    The per-record path is kept short (it runs tens of thousands of times a second): one bound
    method per callback unless `on_ack` / `on_error` need the record, and no lock around the ack
    count: CPython with its GIL switches threads only at calls and backward jumps, never inside
    `acked += 1` on a plain attribute, so no ack is lost even when a record settled before its
    callback was added runs it on the sending thread. Failures, rare and tallied by type in a
    dict, take a lock.
    """

    SETTLE_EVERY = 512

    def __init__(
        self,
        producer: KafkaProducer,
        *,
        progress: Writer | None = _Stderr(),  # noqa: B008 - stateless, safe to share
        progress_every: float = 1.0,
        on_ack: Callable[[Record], None] | None = None,
        on_error: Callable[[Record, Exception], None] | None = None,
    ) -> None:
        self.producer = producer
        self.summary = Summary()
        self.progress = progress
        self.progress_every = progress_every
        # The line redrawn every progress_every seconds only where someone watches: in a log or a
        # pipe it would be one record of carriage returns; the notes and the summary are written anyway.
        self.live = progress is not None and progress.isatty()
        self._clear = "\r\033[K" if self.live else ""
        self.on_ack = on_ack
        self.on_error = on_error
        self._stop = threading.Event()
        self._stopping = False  # the Event's flag, read once per record without a call
        self._lock = threading.Lock()
        # kafka-python's futures, oldest first, when nothing needs a per-record callback; the
        # confluent-kafka client settles its deliveries through callbacks on this thread anyway.
        self._pending: deque[Future] | None = None
        if on_ack is None and on_error is None and not _settles_by_callback(producer):
            self._pending = deque()
        # Records mostly share one headers tuple: its list (what the client takes) is made once.
        self._headers: tuple[tuple[str, bytes], ...] = ()
        self._header_list: list[tuple[str, bytes]] = []

    @property
    def stopped(self) -> bool:
        return self._stopping

    def stop(self, reason: str) -> None:
        self.summary.stopped_by = reason
        self._stopping = True
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once on Ctrl-C or SIGTERM; True if asked to stop."""
        return self._stop.wait(max(seconds, 0.0))

    def note(self, text: str) -> None:
        """A log line that does not garble the progress line."""
        if self.progress:
            self.progress.write(f"{self._clear}{text}\n")
            self.progress.flush()

    def _acked(self, _metadata: Any) -> None:
        self.summary.acked += 1

    def _acked_record(self, record: Record, _metadata: Any) -> None:
        self.summary.acked += 1
        if self.on_ack:
            self.on_ack(record)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.summary.failed += 1
            name = type(exc).__name__
            self.summary.errors[name] = self.summary.errors.get(name, 0) + 1

    def _failed_record(self, record: Record, exc: Exception) -> None:
        self._failed(exc)
        if self.on_error:
            self.on_error(record, exc)

    def run(
        self,
        records: Iterable[Record],
        limits: SendLimits = SendLimits(),
        *,
        pacer: Pacer | None = None,
        meter: SendMeter | None = None,
    ) -> Summary:
        """Send until the input ends, `limits.count` records are sent, `limits.duration` passes or
        `stop` is called; `meter` gets the rates per interval and once more after the flush."""
        count, duration = limits.count, limits.duration
        pacer = pacer or Pacer(limits.rate, limits.speed)
        delay = pacer.delay if pacer.interval or pacer.speed else None
        monotonic = time.monotonic
        deadline = monotonic() + duration if duration else None
        shown = (monotonic(), self.summary.acked)
        taken = 0
        # islice never takes the record after the last one sent: the input's records are all sent.
        iterator = iter(records) if count is None else itertools.islice(records, max(count, 0))
        send = self.send
        live = self.progress if self.live else None
        try:
            while not self._stopping:
                if deadline is not None and monotonic() >= deadline:
                    self.summary.stopped_by = "duration reached"
                    break
                record = next(iterator, None)
                if record is None:
                    if count is not None and taken >= count:
                        self.summary.stopped_by = "count reached"
                    break
                taken += 1
                if delay is not None:
                    wait = delay(record.due)
                    if deadline is not None:
                        wait = min(wait, deadline - monotonic())
                    if wait > 0:
                        self._stop.wait(wait)
                send(record)
                if meter is not None and monotonic() >= meter.due:
                    self.settle()
                    meter.measure(self.summary)
                if live:
                    now = monotonic()
                    if now - shown[0] >= self.progress_every:
                        self.settle()
                        rate_now = (self.summary.acked - shown[1]) / (now - shown[0])
                        live.write(f"{self._clear}{self.summary.line(rate_now)}")
                        live.flush()
                        shown = (now, self.summary.acked)
        finally:
            try:
                self.flush()
            finally:
                if meter is not None:
                    meter.measure(self.summary)
                if self.progress:
                    self.progress.write(f"{self._clear}{self.summary.line()} ({self.summary.stopped_by})\n")
                    self.progress.flush()
        return self.summary

    def send(self, record: Record) -> None:
        key, headers = record.key, record.headers
        if headers is not self._headers:
            self._headers, self._header_list = headers, list(headers)
        try:
            future = self.producer.send(
                record.topic,
                key=key.encode() if key is not None else None,
                value=record.value,
                headers=self._header_list,
                timestamp_ms=record.timestamp_ms,
            )
        except KafkaError as exc:
            self._failed_record(record, exc)
            return
        self.summary.sent += 1
        pending = self._pending
        if pending is not None:
            pending.append(future)
            if len(pending) >= self.SETTLE_EVERY:
                self.settle()
            return
        future.add_callback(self._acked if self.on_ack is None else partial(self._acked_record, record))
        future.add_errback(self._failed if self.on_error is None else partial(self._failed_record, record))

    def settle(self) -> None:
        """Count the futures at the head of the queue that have settled (acknowledged or failed),
        up to the first still in flight: every record in send order, each exactly once."""
        pending = self._pending
        if not pending:
            return
        summary = self.summary
        while pending and pending[0].is_done:
            exception = pending.popleft().exception
            if exception is None:
                summary.acked += 1
            else:
                self._failed(exception)

    def flush(self, timeout: float = 60.0) -> None:
        try:
            self.producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            self.settle()
            pending = self.summary.sent - self.summary.acked - self.summary.failed
            raise ProducerError(f"{pending} records were not acknowledged within {timeout:.0f}s") from None
        self.settle()


class ChildFeed(Generic[T]):
    """The items of `produce()`, made in a forked child process while this one sends.

    kafka-python builds every record in Python, so a producer that also generates its events
    spends its one interpreter on both. Here the child generates and pickles them in batches
    through a pipe, in order (the same seed still gives the same records in the same order), and
    it runs at most a pipe's worth ahead. Fork before the Kafka client starts its I/O thread:
    `can_fork()` says whether this process may. `close()` ends the child however far it got.

    The pipe is widened to PIPE_BYTES where the platform allows (Linux: 64 KiB by default, about
    one batch), so the child can be several batches ahead: on a busy machine it is not always
    scheduled when the sender wants the next batch, and a sender waiting on an empty pipe is
    time lost.
    """

    PIPE_BYTES = 1 << 20

    def __init__(self, produce: Callable[[], Iterable[T]], batch: int = 1024) -> None:
        context = multiprocessing.get_context("fork")
        self._reader, writer = context.Pipe(duplex=False)
        _widen_pipe(writer.fileno(), self.PIPE_BYTES)
        self._child = context.Process(
            target=_feed, args=(produce, self._reader, writer, batch), name="arus-generator", daemon=True
        )
        self._child.start()
        writer.close()

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                items = self._reader.recv()
            except EOFError:
                self._child.join(5.0)
                raise ProducerError(
                    f"the generator process stopped early (exit code {self._child.exitcode})"
                ) from None
            if items is None:
                return
            yield from items

    def close(self) -> None:
        """End the child at once: it holds nothing but readings not wanted any more."""
        self._reader.close()
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()

    def __enter__(self) -> ChildFeed[T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _widen_pipe(fd: int, size: int) -> None:
    """Best effort: a pipe of `size` bytes (Linux's F_SETPIPE_SZ, up to /proc/sys/fs/pipe-max-size)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over the user's pipe limit: the default pipe works, a little slower


def _settles_by_callback(producer: Any) -> bool:
    """Whether the producer's deliveries are not kafka-python futures (the confluent-kafka client's
    settle through callbacks run on the sending thread by its own poll)."""
    return isinstance(producer, ConfluentProducer)


def can_fork() -> bool:
    """True when a forked child is safe: this process runs no other thread (whose locks a child
    could inherit held) and the platform forks."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _feed(produce: Callable[[], Iterable[Any]], reader: Any, writer: Any, batch: int) -> None:
    """The child's side of ChildFeed: batches of items, then None at the end of the input."""
    reader.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        items = iter(produce())
        while chunk := list(itertools.islice(items, batch)):
            writer.send(chunk)
        writer.send(None)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent has all it wanted
    finally:
        writer.close()
