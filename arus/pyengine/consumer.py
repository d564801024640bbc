"""The kafka-python consumer: the main job's window aggregates in a consumer group, without Spark.

    settings = consumer_settings(stream, job, consumer, config.schema(stream.schema), config.clean, where)
    counters = run(config, settings)        # until a bound, Ctrl-C or SIGTERM; the summary counts

Poll -> parse (arus.pyengine.records) -> deduplicate, clean, filter (arus.pyengine.transform),
window (arus.pyengine.windowing) -> produce and await every acknowledgement -> commit.
At-least-once: it commits no further than the first record an open window still needs, with the
watermark (and the offsets of late events in still-open windows) in the commit metadata, so after
a crash or a rebalance the group replays those records to rebuild its windows; replayed records it
had already published for are not published again. Output published after the last commit is
published again after a crash. Dead letters and late events carry the Spark job's headers (arus.core.rules).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any, TextIO

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from arus.config import AggregateConfig, CleanConfig, Config, ConsumerConfig, KafkaConfig, StreamConfig
from arus.core.rules import (
    GuardError,
    Header,
    Partition,
    RecordLimits,
    all_of,
    check_deadletter_ratio,
    dead_letter_headers,
    late_headers,
    parse_filter,
    record_limits,
    time_text,
)
from arus.grammar import Field, duration_us, parse_schema, require, window_us
from arus.io.metrics import Metrics, lag_key, record
from arus.io.producer import make_producer
from arus.pyengine.records import InvalidRecord, parse_record
from arus.pyengine.transform import cleaned_types
from arus.pyengine.windowing import Aggregator, Outcome, WindowSpec, aggregate_key_text, from_us, to_json
from arus.signals import stop_on_signals

APP = "arus-consumer"
FLUSH_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 60.0
MAX_LATE_OFFSETS = 300  # late events a commit remembers per partition for replays (see _commit)
METRICS_EVERY_S = 2.0  # a metrics line per interval, not per poll: polls come hundreds a second

Output = tuple[str, bytes | None, bytes | None, list[Header]]  # topic, key, value, headers


@dataclass(frozen=True)
class ConsumerSettings:
    stream: StreamConfig
    job: AggregateConfig
    consumer: ConsumerConfig
    spec: WindowSpec
    fields: tuple[Field, ...]
    limits: RecordLimits
    until_idle: float | None = None
    max_records: int | None = None
    view: bool = True


def consumer_settings(
    stream: StreamConfig,
    job: AggregateConfig,
    consumer: ConsumerConfig,
    schema_ddl: str,
    clean: CleanConfig | None = None,
    where: Sequence[str] = (),
    until_idle: float | None = None,
    max_records: int | None = None,
    view: bool = True,
) -> ConsumerSettings:
    """The [stream], [aggregate], [clean] and [consumer] settings the consumer runs with; ValueError
    naming what it cannot run with (arus.core.rules.FilterError for a filter). `where`: --where
    expressions that must all hold for an event, cleaned, to be aggregated."""
    fields = require(parse_schema(schema_ddl), stream.event_time_field)
    types = {f.name: f.type for f in fields}
    if types[stream.event_time_field] != "timestamp":
        raise ValueError(f"event-time field {stream.event_time_field!r} must be a TIMESTAMP")
    filter_types = cleaned_types(types, clean) if clean is not None else types
    unknown = [n for n in (*job.keys, *job.value_fields) if n not in types]
    if stream.id_field and stream.id_field not in types:
        unknown.append(stream.id_field)
    if unknown:
        raise ValueError(f"fields not in schema {stream.schema!r}: {', '.join(unknown)}")
    spec = WindowSpec(
        keys=job.keys,
        value_fields=job.value_fields,
        event_time=stream.event_time_field,
        size_us=window_us(job.window),
        delay_us=duration_us(stream.watermark),
        dedup_field=stream.id_field,
        clean=clean,
        where=all_of([parse_filter(text, filter_types) for text in where]),
    )
    limits = record_limits(stream)
    return ConsumerSettings(stream, job, consumer, spec, fields, limits, until_idle, max_records, view)


@dataclass
class Counters:
    records: int = 0  # read for the first time
    replayed: int = 0  # read again after a restart or rebalance, to rebuild windows
    aggregated: int = 0
    duplicates: int = 0
    late: int = 0
    filtered: int = 0
    dead: int = 0
    produced: int = 0
    commits: int = 0
    first_at: float | None = None
    last_at: float | None = None
    stopped_by: str = ""

    @property
    def events_per_s(self) -> float:
        """Input records per second of processing, from the first poll with records to the last commit."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return (self.records + self.replayed) / (self.last_at - self.first_at)

    def line(self) -> str:
        return (
            f"consumer: {self.records} records ({self.replayed} replayed), {self.aggregated} aggregated, "
            f"{self.duplicates} duplicates, {self.late} late, {self.dead} dead letters, "
            f"{self.filtered} filtered; {self.produced} records out, {self.commits} commits, "
            f"{self.events_per_s:,.0f} events/s ({self.stopped_by})"
        )


def render_view(
    rows: list[dict[str, Any]],
    counters: Counters,
    settings: ConsumerSettings,
    watermark_us: int | None,
    open_windows: int,
) -> str:
    """The live table: a status line, then the latest windows, newest first."""
    spec = settings.spec
    value = spec.value_fields[0] if spec.value_fields else None
    watermark = from_us(watermark_us).strftime("%Y-%m-%d %H:%M:%S") if watermark_us is not None else "-"
    lines = [
        f"{settings.stream.topic} -> {settings.consumer.output_topic}  group {settings.consumer.group_id}",
        f"records {counters.records:,} ({counters.events_per_s:,.0f}/s)  aggregated {counters.aggregated:,}  "
        f"dup {counters.duplicates}  late {counters.late}  dead {counters.dead}  "
        f"filtered {counters.filtered}  open windows {open_windows}  watermark {watermark}",
        "",
    ]
    metrics = [f"{value}_{m}" for m in ("mean", "min", "max", "p95")] if value else []
    header = ["key", "window start (UTC)", "count", *metrics]
    table = [header]
    latest = sorted(rows, key=lambda r: (r["window_start"], aggregate_key_text(r, spec.keys)), reverse=True)
    for row in latest[: settings.consumer.view_rows]:
        table.append(
            [
                "|".join(str(row.get(k)) for k in spec.keys),
                row["window_start"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                str(row["count"]),
                *("-" if row.get(m) is None else f"{row[m]:.3f}" for m in metrics),
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        cells = [
            r[0].ljust(widths[0]),
            r[1].ljust(widths[1]),
            *(c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


class _Rebalance(ConsumerRebalanceListener):
    """A rebalance pauses the consumer; a new assignment makes it start over from its commits."""

    def __init__(self, app: WindowConsumer) -> None:
        self.app = app

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.app.rebalancing = True

    def on_partitions_lost(self, lost: Any) -> None:
        self.app.rebalancing = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.app.rebalancing = False
        self.app.reassigned = True
        self.app.joined = True


class WindowConsumer:
    """Poll -> parse, window, deduplicate -> produce and await acks -> commit, until told to stop."""

    def __init__(
        self,
        settings: ConsumerSettings,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        out: TextIO = sys.stdout,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.out = out
        self.metrics = metrics
        self.counters = Counters()
        self.measured = (time.monotonic(), Counters())  # the last metrics line's time and counts
        self.intervals = 0
        self.busy_s = 0.0  # processing time since the last metrics line
        self.engine = Aggregator(settings.spec)
        self.consumed: dict[Partition, int] = {}
        self.replay_until: dict[Partition, int] = {}
        self.replay_late: dict[Partition, set[int]] = {}  # offsets late when first read
        self.latest: dict[str, dict[str, Any]] = {}
        self.stop_event = threading.Event()
        # Set by the rebalance listener. While a rebalance runs nothing is processed or committed
        # (and no offsets are looked up, which kafka-python does not survive mid-rebalance).
        self.rebalancing = False
        self.reassigned = False
        self.joined = False  # a first assignment (possibly empty) has come

    def _restart_from_commits(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """After a rebalance (or at start): drop all state and go back to the committed offsets of
        every assigned partition, kept ones included (kafka-python keeps their read position), so
        replay rebuilds the windows; the watermark and replay bounds come from the commit metadata.
        """
        self.consumed = {}
        self.replay_until = {}
        self.replay_late = {}
        watermark: int | None = None
        for tp in self.consumer.assignment():
            committed = self.consumer.committed(tp, metadata=True)
            if committed is None or committed.offset < 0:
                if polled.get(tp):  # no commit yet: back to where the reset policy started it
                    self.consumer.seek(tp, polled[tp][0].offset)
                continue
            self.consumer.seek(tp, committed.offset)
            if not committed.metadata:
                continue
            meta = json.loads(committed.metadata)
            self.replay_until[(tp.topic, tp.partition)] = int(meta["upto"])
            if meta.get("late"):
                self.replay_late[(tp.topic, tp.partition)] = set(meta["late"])
            stored = meta["watermark_us"]
            if stored is not None and (watermark is None or stored > watermark):
                watermark = stored
        self.engine = Aggregator(self.settings.spec, watermark)

    def run(self) -> Counters:
        settings = self.settings
        self._wait_for_metadata(settings.stream.topic)
        self.consumer.subscribe([settings.stream.topic], listener=_Rebalance(self))
        started = last_record = time.monotonic()
        next_view = 0.0
        settled = True
        while not self.stop_event.is_set():
            polled = self.consumer.poll(timeout_ms=200, max_records=self._poll_limit())
            now = time.monotonic()
            if not self.joined:
                if now - started > JOIN_TIMEOUT_S:
                    raise GuardError(
                        f"group {settings.consumer.group_id!r} assigned nothing in {JOIN_TIMEOUT_S:.0f}s"
                    )
                last_record = now  # still joining the group: not idle yet
            elif self.rebalancing:
                polled = {}
            elif self.reassigned:
                self.reassigned = False
                self._restart_from_commits(polled)
                polled = {}  # read again from the committed offsets by the next poll
                last_record = now
            if polled:
                self.counters.first_at = self.counters.first_at or now
                self._process(polled)
                last_record = self.counters.last_at = time.monotonic()
                self.busy_s += last_record - now
                now = last_record
                settled = False
            elif not settled and not self.rebalancing:
                # Caught up: let the watermark move on and commit what that closes.
                self._process({})
                settled = True
            if settings.max_records is not None and self.counters.records >= settings.max_records:
                self.counters.stopped_by = f"read {settings.max_records} records"
                break
            if settings.until_idle is not None and now - last_record >= settings.until_idle:
                self.counters.stopped_by = f"idle for {settings.until_idle:g}s"
                break
            if settings.view and now >= next_view:
                self._show()
                next_view = now + settings.consumer.view_refresh_s
            if now - self.measured[0] >= METRICS_EVERY_S:
                self._measure(now)
        else:
            self.counters.stopped_by = "stopped"
        self._measure(time.monotonic())
        if settings.view:
            self._show()
        return self.counters

    def _measure(self, now: float) -> None:
        """A metrics line for the interval since the last one: what was read (replays included),
        late and dead, the open windows, and per assigned partition what is left to read."""
        if self.metrics is None:
            return
        (since, before), counters = self.measured, self.counters
        rows = counters.records + counters.replayed - before.records - before.replayed
        lag = {}
        for tp in self.consumer.assignment():
            high, position = self.consumer.highwater(tp), self.consumed.get((tp.topic, tp.partition))
            if high is not None and position is not None:
                lag[lag_key(tp.topic, tp.partition)] = max(high - position, 0)
        watermark = self.engine.watermark_us
        self.metrics.write(
            record(
                "consumer",
                APP,
                self.settings.consumer.group_id,
                batch_id=self.intervals,
                rows=rows,
                input_rows_per_s=rows / max(now - since, 1e-9),
                processed_rows_per_s=rows / self.busy_s if self.busy_s else None,
                batch_duration_ms=round(self.busy_s * 1000),
                watermark=None if watermark is None else time_text(from_us(watermark)),
                state_rows=len(self.engine.windows),
                late=counters.late - before.late,
                dead_letters=counters.dead - before.dead,
                lag=lag,
            )
        )
        self.measured = (now, replace(counters))
        self.intervals += 1
        self.busy_s = 0.0

    def _wait_for_metadata(self, topic: str, timeout_s: float = 15.0) -> None:
        """Know the topic's partitions before joining: a group leader that does not assigns none."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise GuardError(f"no partitions found for topic {topic!r} within {timeout_s:.0f}s")
            time.sleep(0.2)

    def _poll_limit(self) -> int:
        limit = self.settings.consumer.max_poll_records
        if self.settings.max_records is not None:
            # Replays rebuild windows a restart or a rebalance lost; they do not count as read.
            limit = max(1, min(limit, self.settings.max_records - self.counters.records))
        return limit

    def _process(self, polled: dict[TopicPartition, list[Any]]) -> None:
        consumer_settings = self.settings.consumer
        counters = self.counters
        outputs: list[Output] = []
        read = fresh = dead = 0
        fields, limits, add = self.settings.fields, self.settings.limits, self.engine.add
        late_topic = consumer_settings.late_topic
        for tp, messages in polled.items():
            if not messages:
                continue
            where = (tp.topic, tp.partition)
            replay_until = self.replay_until.get(where, 0)
            replay_late = self.replay_late.get(where, set())
            self.consumed[where] = messages[-1].offset + 1
            for m in messages:
                replay = m.offset < replay_until
                if not replay:
                    fresh += 1
                try:
                    event = parse_record(m.value, m.timestamp, fields, limits)
                except InvalidRecord as bad:
                    if not replay:
                        dead += 1
                        at = (m.topic, m.partition, m.offset)
                        headers = dead_letter_headers(bad.reason, at)
                        outputs.append((consumer_settings.deadletter_topic, m.key, m.value, headers))
                    continue
                outcome = add(
                    event, (m.topic, m.partition, m.offset), replay, replay and m.offset in replay_late
                )
                if replay:
                    continue
                if outcome is Outcome.AGGREGATED:
                    counters.aggregated += 1
                elif outcome is Outcome.DUPLICATE:
                    counters.duplicates += 1
                elif outcome is Outcome.FILTERED:
                    counters.filtered += 1
                else:
                    counters.late += 1
                    if late_topic:
                        watermark = from_us(self.engine.watermark_us or 0)
                        at = (m.topic, m.partition, m.offset)
                        headers = late_headers(event[self.settings.spec.event_time], watermark, at)
                        outputs.append((late_topic, m.key, m.value, headers))
            read += len(messages)
        counters.records += fresh
        counters.replayed += read - fresh
        counters.dead += dead
        guards = self.settings.stream.guards
        check_deadletter_ratio(
            dead, fresh, guards.max_deadletter_ratio, guards.breaker_min_records, counters.commits
        )
        for row in self.engine.end_batch(self._behind()):
            key = aggregate_key_text(row, self.settings.spec.keys)
            outputs.append((consumer_settings.output_topic, key.encode(), to_json(row), []))
            self.latest[key] = row
        self._publish(outputs)
        self._commit()
        self._trim_view()

    def _behind(self) -> set[Partition]:
        """Assigned partitions with records still to read (or not known yet to have none)."""
        behind = set()
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            position = self.consumed.get((tp.topic, tp.partition))
            if position is None:
                position = self.consumer.position(tp)
            if high is None or position is None or position < high:
                behind.add((tp.topic, tp.partition))
        return behind

    def _publish(self, outputs: list[Output]) -> None:
        """Send everything, then wait for every acknowledgement; any failure raises before the commit."""
        futures = [
            self.producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value, headers in outputs
        ]
        self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        for future in futures:
            future.get(timeout=FLUSH_TIMEOUT_S)
        self.counters.produced += len(futures)

    def _commit(self) -> None:
        """Commit the replay-safe positions; the metadata carries the watermark and how far output
        has been published (`upto`, which replay after a restart must not lower)."""
        positions = self.engine.commit_positions(self.consumed)
        late = self.engine.late_offsets(positions)
        offsets = {}
        for (topic, partition), offset in positions.items():
            upto = max(self.consumed[(topic, partition)], self.replay_until.get((topic, partition), 0))
            fields: dict[str, Any] = {"watermark_us": self.engine.watermark_us, "upto": upto}
            if late.get((topic, partition)):
                # Kafka keeps at most 4 KB of metadata per partition (offset.metadata.max.bytes).
                fields["late"] = late[(topic, partition)][-MAX_LATE_OFFSETS:]
            meta = json.dumps(fields, separators=(",", ":"))
            offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, meta, -1)
        if offsets:
            self.consumer.commit(offsets)
            self.counters.commits += 1

    def _trim_view(self) -> None:
        keep = 4 * self.settings.consumer.view_rows
        if len(self.latest) > 2 * keep:
            newest = sorted(self.latest.items(), key=lambda kv: kv[1]["window_start"], reverse=True)[:keep]
            self.latest = dict(newest)

    def _show(self) -> None:
        text = render_view(
            list(self.latest.values()),
            self.counters,
            self.settings,
            self.engine.watermark_us,
            len(self.engine.windows),
        )
        if self.out.isatty():
            self.out.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            self.out.write(text + "\n\n")
        self.out.flush()


def make_consumer(kafka: KafkaConfig, settings: ConsumerSettings) -> KafkaConsumer:
    return KafkaConsumer(
        group_id=settings.consumer.group_id,
        client_id=APP,
        enable_auto_commit=False,
        auto_offset_reset=settings.stream.starting_offsets,
        max_poll_records=settings.consumer.max_poll_records,
        **kafka.client_kwargs(),
    )


def run(
    config: Config, settings: ConsumerSettings, out: TextIO = sys.stdout, metrics_port: int | None = None
) -> Counters:
    """Run until a bound is reached (or Ctrl-C); KafkaError if output cannot be delivered. Metrics
    go to the app's file under [paths] metrics, and to Prometheus on `metrics_port` if given."""
    producer = make_producer(config.kafka, config.producer)
    try:
        consumer = make_consumer(config.kafka, settings)
        try:
            with Metrics.open(config, APP, metrics_port) as metrics:
                app = WindowConsumer(settings, consumer, producer, out, metrics)
                # Ctrl-C or SIGTERM: finish the batch in hand (produce, commit), then stop.
                with stop_on_signals(lambda _signal: app.stop_event.set()):
                    return app.run()
        finally:
            consumer.close(autocommit=False)
    finally:
        producer.close(timeout=10)
