"""Event-time tumbling windows in plain Python: the engine of the kafka-python consumer.

    engine = Aggregator(spec)
    engine.add(event, (topic, partition, offset))   # an event from arus.pyengine.records -> Outcome
    engine.end_batch()                              # rows to publish; the watermark advances
    engine.commit_positions(consumed)               # offsets it is safe to commit
    engine.late_offsets(positions)                  # late events a replay from there re-reads

It computes what jobs/aggregate.py computes with Spark (arus.core.transforms.aggregate_windows,
aggregate_key_column, drop_duplicate_events with the watermark): the same window boundaries, watermark,
late rule and dedup rule, the same statistics with Spark's percentile definition, and the same
rows, JSON field names and record keys. Nothing here touches Kafka; arus.pyengine.consumer does.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from arus.config import CleanConfig
from arus.core.rules import Filter, Partition, RecordPosition, aggregate_key, time_text
from arus.pyengine.records import EPOCH, java_double, spark_string
from arus.pyengine.transform import cleaner, predicate

# percentile_approx(col, [0.5, 0.95], accuracy) in arus.core.transforms, accuracy from [aggregate]
# percentile_accuracy: its summary is exact below accuracy / 2 values per window (2 * n / accuracy
# < 1), so the exact percentiles here match it there: below 5,000 values at the default 10000. A
# window of more values, or a lower accuracy, may differ by the sketch's error (1 / accuracy).
RELATIVE_ERROR = 1.0 / 10000


# --- windows and statistics ------------------------------------------------------------------------


_US = timedelta(microseconds=1)  # made once: the constructor costs more than the arithmetic


def to_us(at: datetime) -> int:
    return (at - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + _US * us


def window_start_us(event_us: int, size_us: int) -> int:
    """The start of the tumbling window holding `event_us`: windows are [start, start + size)."""
    return event_us - event_us % size_us


def percentile(ordered: Sequence[float], p: float) -> float:
    """Spark's percentile_approx on few values: the smallest value with at least p of them <= it."""
    if p <= RELATIVE_ERROR:
        return ordered[0]
    if p >= 1 - RELATIVE_ERROR:
        return ordered[-1]
    return ordered[max(math.ceil(p * len(ordered)), 1) - 1]


@dataclass
class Stats:
    """One value field in one window: Spark's avg, min, max, stddev_samp and percentile_approx."""

    n: int = 0
    total: float = 0.0
    mean: float = 0.0  # running mean and m2 as Spark's CentralMomentAgg keeps them
    m2: float = 0.0
    values: list[float] = field(default_factory=list)
    unsorted: bool = False  # values are sorted when a result needs them, not per value
    nan: bool = False

    def add(self, x: float | None) -> None:
        if x is None:
            return
        self.n += 1
        self.total += x
        delta = x - self.mean
        delta_n = delta / self.n
        self.mean += delta_n
        self.m2 += delta * (delta - delta_n)
        values = self.values
        if x != x:  # NaN compares false both ways: from now on only the ordering key sorts them
            self.nan = True
        if self.nan or (values and x < values[-1]):
            self.unsorted = True
        values.append(x)

    @property
    def ordered(self) -> list[float]:
        if self.unsorted:
            self.values.sort(key=_spark_order if self.nan else None)
            self.unsorted = False
        return self.values

    def result(self, name: str) -> dict[str, float | None]:
        # <name>_mean, <name>_min, <name>_max, <name>_stddev, <name>_p50, <name>_p95
        if not self.n:
            return {f"{name}_{m}": None for m in ("mean", "min", "max", "stddev", "p50", "p95")}
        ordered = self.ordered
        return {
            f"{name}_mean": self.total / self.n,
            f"{name}_min": ordered[0],
            f"{name}_max": ordered[-1],
            f"{name}_stddev": math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None,
            f"{name}_p50": percentile(ordered, 0.5),
            f"{name}_p95": percentile(ordered, 0.95),
        }


def _spark_order(x: float) -> tuple[bool, float]:
    """Spark's order of doubles: NaN above everything, so min skips it and max is NaN."""
    return (math.isnan(x), x)


def as_double(value: Any) -> float | None:
    """CAST(value AS DOUBLE) for the types a schema can hold."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return to_us(value) / 1e6
    try:
        return float(value)
    except ValueError:
        return None


# --- the aggregator ----------------------------------------------------------------------------------


class Outcome(StrEnum):
    AGGREGATED = "aggregated"
    LATE = "late"
    DUPLICATE = "duplicate"
    FILTERED = "filtered"


@dataclass(frozen=True)
class WindowSpec:
    """What to aggregate: the [stream] and [aggregate] settings as plain values."""

    keys: tuple[str, ...]
    value_fields: tuple[str, ...]
    event_time: str
    size_us: int
    delay_us: int
    dedup_field: str = ""
    clean: CleanConfig | None = None  # [clean], applied to on-time, first-seen events
    where: Filter | None = None  # then only events it holds for are aggregated (--where)


@dataclass
class Window:
    keys: tuple[Any, ...]
    start_us: int
    count: int
    stats: dict[str, Stats]
    holds: dict[Partition, int]  # the first offset per partition: replay starts there
    alive: bool = True  # False once closed; its entries in the engine's heaps are then skipped


@dataclass
class _Seen:
    expires_us: int
    alive: bool = True


class Aggregator:
    """Tumbling-window aggregates per key with a watermark, deduplication and late-event detection.

    Its rules are the Spark job's, micro-batch for micro-batch:
    - the watermark is the largest event time seen in earlier batches less the delay (in whole
      milliseconds, as Spark keeps it), and never goes back. One difference: while partitions
      still have a backlog (`behind` in end_batch), the smallest of their largest event times is
      used instead. Spark reads every partition in each micro-batch; a consumer reads a backlog
      partition by partition, and without this rule the first partition read would make the
      others' on-time events late;
    - a window closes (is dropped from state) once its end <= watermark; an event for a closed
      window is late;
    - with deduplication, an event whose time is <= watermark is late too, and an id is remembered
      until watermark >= its event time + delay: Spark's dropDuplicatesWithinWatermark;
    - what is left is cleaned ([clean]) and filtered (--where), in that order, as the Spark job's
      silver is cleaned after deduplication: so a filter sees canonical units and lower-case names,
      and an event filtered out still counts for the watermark and still uses up its id.
    Spark's late filter lags one micro-batch behind its watermark; this one does not, so events
    within one batch of the watermark may be counted late here and aggregated there.

    Closing windows, forgetting ids and finding the offsets to commit cost time in proportion to
    what changes, not to the state held: heaps keep windows by end, ids by expiry and, per
    partition, the offsets open windows and remembered ids hold (closed ones are skipped lazily).
    """

    def __init__(self, spec: WindowSpec, watermark_us: int | None = None) -> None:
        self.spec = spec
        self.watermark_us = watermark_us
        self.max_event_ms: dict[Partition, int] = {}  # per partition
        self.windows: dict[tuple[tuple[Any, ...], int], Window] = {}
        self.seen: dict[Any, _Seen] = {}
        self._updated: set[tuple[tuple[Any, ...], int]] = set()
        self._seq = itertools.count()  # heap tie-breaker: entries never compare their payloads
        self._by_end: list[tuple[int, int, tuple[tuple[Any, ...], int]]] = []
        self._by_expiry: list[tuple[int, int, Any, _Seen]] = []
        self._holds: dict[Partition, list[tuple[int, int, Window | _Seen]]] = {}
        self._hold_entries = 0  # in the hold heaps, closed ones included
        self._live_holds = 0
        self._late_open: list[tuple[int, int, Partition]] = []  # window end, offset, partition
        self._clean = cleaner(spec.clean) if spec.clean is not None else None
        self._keep = predicate(spec.where) if spec.where is not None else None

    def is_late(self, event_us: int) -> bool:
        if self.watermark_us is None:
            return False
        if self.spec.dedup_field and event_us <= self.watermark_us:
            return True
        end = window_start_us(event_us, self.spec.size_us) + self.spec.size_us
        return end <= self.watermark_us

    def add(
        self, event: Mapping[str, Any], at: RecordPosition, replay: bool = False, was_late: bool = False
    ) -> Outcome:
        """Take one parsed event. A replayed event rebuilds state after a restart without
        marking its window as updated: its output was published before the restart.

        Replay cannot tell from the restored watermark alone whether an event at or before it, in
        a window still open, was on time when first read (the watermark was lower then) or late:
        `was_late` says so, from the offsets `late_offsets` gave the commit."""
        spec = self.spec
        event_us = to_us(event[spec.event_time])
        event_ms = event_us // 1000
        tp = (at[0], at[1])
        if event_ms > self.max_event_ms.get(tp, event_ms - 1):
            self.max_event_ms[tp] = event_ms
        wm = self.watermark_us
        end = event_us - event_us % spec.size_us + spec.size_us
        if wm is not None and (
            end <= wm or (spec.dedup_field and event_us <= wm and (was_late or not replay))
        ):
            if replay and end <= wm and spec.dedup_field:
                self._remember(event.get(spec.dedup_field), event_us, tp, at[2])
            if end > wm:  # late by the dedup rule in a window still open: a replay must know
                heapq.heappush(self._late_open, (end, at[2], tp))
            return Outcome.LATE
        if spec.dedup_field:
            event_id = event.get(spec.dedup_field)
            if event_id in self.seen:
                return Outcome.DUPLICATE
            self._remember(event_id, event_us, tp, at[2])
        if self._clean is not None:
            event = self._clean(event)
        if self._keep is not None and not self._keep(event):
            return Outcome.FILTERED
        keys = tuple([event.get(k) for k in spec.keys])
        start = window_start_us(event_us, spec.size_us)
        key = (keys, start)
        window = self.windows.get(key)
        if window is None:
            window = Window(keys, start, 0, {f: Stats() for f in spec.value_fields}, {})
            self.windows[key] = window
            heapq.heappush(self._by_end, (start + spec.size_us, next(self._seq), key))
        window.count += 1
        for name in spec.value_fields:
            value = event.get(name)
            window.stats[name].add(value if type(value) is float else as_double(value))
        if tp not in window.holds:
            window.holds[tp] = at[2]
            self._hold(tp, at[2], window)
        if not replay:
            self._updated.add(key)
        return Outcome.AGGREGATED

    def _remember(self, event_id: Any, event_us: int, tp: Partition, offset: int) -> None:
        expires = event_us + self.spec.delay_us // 1000 * 1000
        if (self.watermark_us is None or self.watermark_us < expires) and event_id not in self.seen:
            seen = self.seen[event_id] = _Seen(expires)
            heapq.heappush(self._by_expiry, (expires, next(self._seq), event_id, seen))
            self._hold(tp, offset, seen)

    def _hold(self, tp: Partition, offset: int, holder: Window | _Seen) -> None:
        heapq.heappush(self._holds.setdefault(tp, []), (offset, next(self._seq), holder))
        self._hold_entries += 1
        self._live_holds += 1

    def end_batch(self, behind: Collection[Partition] = ()) -> list[dict[str, Any]]:
        """Close a batch: the rows of the windows it updated (Spark's update output mode), then the
        watermark advances over it and the windows and ids it passes are dropped."""
        rows = [self.row(self.windows[k]) for k in sorted(self._updated, key=_sort_key)]
        self._updated.clear()
        reached = self._reached_ms(behind)
        if reached is not None:
            candidate = (reached - self.spec.delay_us // 1000) * 1000
            if self.watermark_us is None or candidate > self.watermark_us:
                self.watermark_us = candidate
        if self.watermark_us is not None:
            self._drop_until(self.watermark_us)
        return rows

    def _drop_until(self, wm: int) -> None:
        """Close the windows that end at or before the watermark and forget the ids it passed."""
        by_end, by_expiry, late_open = self._by_end, self._by_expiry, self._late_open
        while late_open and late_open[0][0] <= wm:
            heapq.heappop(late_open)
        while by_end and by_end[0][0] <= wm:
            window = self.windows.pop(heapq.heappop(by_end)[2])
            window.alive = False
            self._live_holds -= len(window.holds)
        while by_expiry and by_expiry[0][0] <= wm:
            _, _, event_id, seen = heapq.heappop(by_expiry)
            del self.seen[event_id]
            seen.alive = False
            self._live_holds -= 1
        if self._hold_entries > 2 * self._live_holds + 1024:
            # Closed holders at the bottom of a heap wait behind an open one; rebuild now and then
            # so a long-open window cannot make the heaps grow with everything read after it.
            for tp, heap in self._holds.items():
                self._holds[tp] = [entry for entry in heap if entry[2].alive]
                heapq.heapify(self._holds[tp])
            self._hold_entries = self._live_holds

    def _reached_ms(self, behind: Collection[Partition]) -> int | None:
        """The event time the watermark trails: the largest seen, or the slowest backlog's."""
        if not self.max_event_ms or any(tp not in self.max_event_ms for tp in behind):
            return None
        if behind:
            return min(self.max_event_ms[tp] for tp in behind)
        return max(self.max_event_ms.values())

    def commit_positions(self, consumed: Mapping[Partition, int]) -> dict[Partition, int]:
        """Per partition, the offset to commit: the next unread one, held back to the first record
        any open window or remembered id depends on, so a restart can rebuild them by replay."""
        positions = dict(consumed)
        for tp, position in positions.items():
            heap = self._holds.get(tp)
            while heap and not heap[0][2].alive:
                heapq.heappop(heap)
                self._hold_entries -= 1
            if heap and heap[0][0] < position:
                positions[tp] = heap[0][0]
        return positions

    def late_offsets(self, positions: Mapping[Partition, int]) -> dict[Partition, list[int]]:
        """Per partition, the late events from `positions` on whose windows are still open: a replay
        from there reads them again and must not count them (see `add`)."""
        late: dict[Partition, list[int]] = {}
        for _, offset, tp in self._late_open:
            if tp in positions and offset >= positions[tp]:
                late.setdefault(tp, []).append(offset)
        return {tp: sorted(offsets) for tp, offsets in late.items()}

    def row(self, window: Window) -> dict[str, Any]:
        """One window as the Spark job's row.

        # *keys, window_start, window_end, count, <f>_mean, <f>_min, <f>_max, <f>_stddev, <f>_p50, <f>_p95
        """
        row: dict[str, Any] = dict(zip(self.spec.keys, window.keys, strict=True))
        row["window_start"] = from_us(window.start_us)
        row["window_end"] = from_us(window.start_us + self.spec.size_us)
        row["count"] = window.count
        for name in self.spec.value_fields:
            row.update(window.stats[name].result(name))
        return row


def _sort_key(k: tuple[tuple[Any, ...], int]) -> tuple[int, str]:
    return (k[1], "|".join(spark_string(v) for v in k[0]))


# --- output ------------------------------------------------------------------------------------------


def aggregate_key_text(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The record key of an aggregate row (arus.core.rules.aggregate_key): key fields cast to
    strings as Spark casts them, nulls skipped as concat_ws skips them, then the window start."""
    return aggregate_key([spark_string(row[k]) for k in keys if row.get(k) is not None], row["window_start"])


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return java_double(value)
    return value


def to_json(row: Mapping[str, Any]) -> bytes:
    """A row as Spark's to_json writes it: null fields left out, timestamps as ...ss.SSSZ."""
    return _ENCODER.encode({k: _json_value(v) for k, v in row.items() if v is not None}).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps makes a new one per call with these
