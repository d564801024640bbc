"""Seeded test data for the streaming jobs, and the Python oracles of which events are late (the
gold table's pandas oracle is support.gold_oracle, shared with the other folders).

The data is built by hand here (not by the producers) so the tests say exactly what was sent: every
record in send order with what it is meant to be (a good reading, a repeated send, a late event,
a malformed record). The oracles work from that list alone, never from what Spark produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from arus.config import Config
from arus.io.producer import make_producer
from arus.sources.send import Record, SendLoop

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MALFORMED = [
    b"{not json",
    b'{"event_id":"bad-1","device_id":"d","value":"hot","event_time":"2026-03-02T08:01:00Z"}',
    b'{"event_id":"bad-2","device_id":"d","event_time":"2026-03-02T08:01:00Z"}',
    b"\xff\xfe\x00garbage",
    b"",
]


@dataclass(frozen=True)
class Sent:
    """One record as sent: what it is, its event (None when malformed) and its bytes."""

    role: str  # ok | dup | late | bad
    event: dict[str, object] | None
    value: bytes
    key: str


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading(device: str, seq: int, value: float, at: datetime, **extra: object) -> dict[str, object]:
    return {
        "event_id": f"{device}-{seq}",
        "device_id": device,
        "value": value,
        "seq": seq,
        "event_time": iso(at),
        **extra,
    }


def good(event: dict[str, object], role: str = "ok") -> Sent:
    return Sent(role, event, json.dumps(event, separators=(",", ":")).encode(), str(event["device_id"]))


def bad(value: bytes) -> Sent:
    return Sent("bad", None, value, "bad")


def produce(config: Config, topic: str, sent: Sequence[Sent]) -> None:
    producer = make_producer(config.kafka, config.producer)
    try:
        records = [Record(topic, s.key, s.value) for s in sent]
        summary = SendLoop(producer, progress=None).run(records)
    finally:
        producer.close()
    assert (summary.acked, summary.failed) == (len(sent), 0)


def event_time(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["event_time"]).replace("Z", "+00:00"))


def spark_late(sent: Sequence[Sent], per_batch: int, delay: timedelta) -> list[dict[str, object]]:
    """The events a deduplicating stream drops as late, read from one partition `per_batch` at a time.

    Spark's rule, restated: the watermark after batch k is the latest event time seen in batches
    0..k minus `delay`; batch N drops an event at or before the watermark after batch N-2 (the
    late-event filter uses the watermark of the previous batch, which was computed from the ones
    before it). Nothing is late in batches 0 and 1.
    """
    late: list[dict[str, object]] = []
    latest: datetime | None = None
    watermarks: list[datetime | None] = []  # watermark in force in batch k (computed before it)
    for start in range(0, len(sent), per_batch):
        batch = [s.event for s in sent[start : start + per_batch] if s.event is not None]
        watermarks.append(latest - delay if latest else None)
        judge = watermarks[-2] if len(watermarks) >= 2 else None
        late += [e for e in batch if judge is not None and event_time(e) <= judge]
        times = [event_time(e) for e in batch]
        if times:
            latest = max([latest, *times]) if latest else max(times)
    return late


def on_time_events(sent: Iterable[Sent], late: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """The valid events that are not late, first send of each event id."""
    late_ids = {id(e) for e in late}
    seen: set[object] = set()
    events = []
    for s in sent:
        if s.event is None or id(s.event) in late_ids or s.event["event_id"] in seen:
            continue
        seen.add(s.event["event_id"])
        events.append(s.event)
    return events


def round_half_up(value: float, decimals: int = 3) -> float:
    """Spark's round(): half-up on the decimal the double prints as."""
    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
