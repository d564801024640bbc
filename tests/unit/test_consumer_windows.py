"""The consumer's window engine without Kafka: window assignment, watermark and lateness, dedup,
update output, and the offsets it lets the consumer commit."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from arus.config import CleanConfig
from arus.core.rules import parse_filter
from arus.grammar import duration_us, window_us
from arus.pyengine.windowing import Aggregator, Outcome, WindowSpec, to_us, window_start_us

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = 60_000_000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(delay: str = "2 minutes", dedup: str = "event_id", **kw: Any) -> WindowSpec:
    return WindowSpec(
        keys=("device_id",),
        value_fields=("value",),
        event_time="event_time",
        size_us=window_us("1 minute"),
        delay_us=duration_us(delay),
        dedup_field=dedup,
        **kw,
    )


def event(eid: str, seconds: float, value: float = 1.0, device: str = "d1", **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "device_id": device, "value": value, "event_time": at(seconds), **extra}


class Feed:
    """Adds events to an aggregator at increasing offsets of one partition."""

    def __init__(self, engine: Aggregator, partition: int = 0) -> None:
        self.engine = engine
        self.partition = partition
        self.offset = 0

    def __call__(self, e: dict[str, Any], replay: bool = False, was_late: bool = False) -> Outcome:
        outcome = self.engine.add(e, ("in", self.partition, self.offset), replay, was_late)
        self.offset += 1
        return outcome


def test_a_window_holds_its_start_but_not_its_end() -> None:
    assert window_start_us(to_us(at(0)), MINUTE) == to_us(at(0))
    assert window_start_us(to_us(at(59.999999)), MINUTE) == to_us(at(0))
    assert window_start_us(to_us(at(60)), MINUTE) == to_us(at(60))
    assert window_start_us(to_us(at(-0.000001)), MINUTE) == to_us(at(-60))
    # Before 1970 too: windows are aligned to the epoch, as Spark's are.
    assert window_start_us(-1, MINUTE) == -MINUTE


def test_events_go_to_their_key_and_window_and_rows_have_the_spark_columns() -> None:
    engine = Aggregator(spec())
    feed = Feed(engine)
    for e in [event("a", 5, 1.0), event("b", 50, 3.0), event("c", 60, 8.0), event("d", 30, 4.0, "d2")]:
        assert feed(e) is Outcome.AGGREGATED
    rows = {(r["device_id"], r["window_start"]): r for r in engine.end_batch()}
    assert set(rows) == {("d1", at(0)), ("d1", at(60)), ("d2", at(0))}
    first = rows[("d1", at(0))]
    assert list(first) == [
        "device_id",
        "window_start",
        "window_end",
        "count",
        "value_mean",
        "value_min",
        "value_max",
        "value_stddev",
        "value_p50",
        "value_p95",
    ]
    assert (first["window_end"], first["count"], first["value_mean"]) == (at(60), 2, 2.0)
    assert first["value_stddev"] == pytest.approx(2**0.5)
    assert rows[("d1", at(60))]["value_stddev"] is None


def test_update_mode_publishes_only_windows_changed_since_the_last_batch() -> None:
    engine = Aggregator(spec())
    feed = Feed(engine)
    feed(event("a", 5))
    feed(event("b", 65))
    assert len(engine.end_batch()) == 2
    feed(event("c", 70, 5.0))
    rows = engine.end_batch()
    assert [(r["window_start"], r["count"]) for r in rows] == [(at(60), 2)]
    assert engine.end_batch() == []


def test_watermark_is_max_event_time_of_earlier_batches_less_the_delay_and_never_goes_back() -> None:
    engine = Aggregator(spec("2 minutes"))
    feed = Feed(engine)
    assert engine.watermark_us is None
    feed(event("a", 300.0004))  # Spark keeps event time in whole milliseconds for the watermark
    engine.end_batch()
    assert engine.watermark_us == to_us(at(180))
    feed(event("b", 200))  # older than the max: the watermark stays
    engine.end_batch()
    assert engine.watermark_us == to_us(at(180))


def test_late_events_with_dedup_are_those_at_or_behind_the_watermark() -> None:
    engine = Aggregator(spec("2 minutes"))
    feed = Feed(engine)
    feed(event("a", 300))
    # Within one batch nothing is late: the watermark moves only between batches, as in Spark.
    assert feed(event("b", 10)) is Outcome.AGGREGATED
    engine.end_batch()  # watermark 12:03:00
    assert feed(event("c", 180)) is Outcome.LATE  # exactly at the watermark
    assert feed(event("d", 180.001)) is Outcome.AGGREGATED  # its window 12:03 is still open
    assert feed(event("e", 179)) is Outcome.LATE


def test_without_dedup_an_event_is_late_only_when_its_window_has_closed() -> None:
    engine = Aggregator(spec("2 minutes", dedup=""))
    feed = Feed(engine)
    feed(event("a", 300))
    engine.end_batch()  # watermark 12:03:00: windows ending at or before it are closed
    assert feed(event("b", 180)) is Outcome.AGGREGATED  # window [12:03, 12:04) is open
    assert feed(event("c", 179.999)) is Outcome.LATE  # window [12:02, 12:03) closed
    assert feed(event("c", 179.999)) is Outcome.LATE  # and no dedup: each copy is counted


def test_closed_windows_leave_state_and_are_not_published_again() -> None:
    engine = Aggregator(spec("30 seconds"))
    feed = Feed(engine)
    feed(event("a", 10))
    feed(event("b", 70))
    assert len(engine.end_batch()) == 2  # watermark 12:00:40: [12:00, 12:01) still open
    assert len(engine.windows) == 2
    feed(event("c", 95))
    assert [r["count"] for r in engine.end_batch()] == [2]  # watermark 12:01:05
    assert [w.start_us for w in engine.windows.values()] == [to_us(at(60))]
    assert feed(event("d", 59)) is Outcome.LATE
    assert engine.end_batch() == []


def test_duplicates_are_dropped_while_their_id_is_remembered() -> None:
    engine = Aggregator(spec("1 minute"))
    feed = Feed(engine)
    assert feed(event("a", 10, 1.0)) is Outcome.AGGREGATED
    assert feed(event("a", 10, 1.0)) is Outcome.DUPLICATE
    assert feed(event("a", 40, 9.0)) is Outcome.DUPLICATE  # same id, other content: still a duplicate
    assert feed(event("b", 100)) is Outcome.AGGREGATED
    rows = engine.end_batch()  # watermark 12:00:40: "a" expires at 10 s + 1 min = 12:01:10, kept
    assert [r["count"] for r in rows if r["window_start"] == at(0)] == [1]
    assert set(engine.seen) == {"a", "b"}
    feed(event("z", 131))
    engine.end_batch()  # watermark 12:01:11
    assert set(engine.seen) == {"b", "z"}


def test_where_filters_events_but_the_watermark_still_sees_them() -> None:
    engine = Aggregator(spec(where=parse_filter("kind=temperature", {"kind": "string"})))
    feed = Feed(engine)
    assert feed(event("a", 10, kind="temperature")) is Outcome.AGGREGATED
    assert feed(event("b", 500, kind="humidity")) is Outcome.FILTERED
    assert [r["count"] for r in engine.end_batch()] == [1]
    assert engine.watermark_us == to_us(at(380))


def test_events_are_cleaned_before_the_filter_and_after_dedup_and_lateness() -> None:
    types = {"kind": "string", "unit": "string", "value": "double"}
    where = parse_filter("kind = temperature and value > 30", types)
    engine = Aggregator(spec(clean=CleanConfig(("kind",), "unit", ("value",), 1), where=where))
    feed = Feed(engine)
    hot = event("a", 10, 95.0, kind=" Temperature", unit="F")  # 35.0 C after cleaning
    assert feed(hot) is Outcome.AGGREGATED
    assert feed(event("b", 11, 86.0, kind="TEMPERATURE", unit="f")) is Outcome.FILTERED  # 30.0 C
    assert feed(event("b", 12, 99.0, kind="temperature", unit="C")) is Outcome.DUPLICATE  # id b was used
    assert feed(event("c", 13, 40.0, kind="humidity", unit="%")) is Outcome.FILTERED
    [row] = engine.end_batch()
    assert (row["count"], row["value_mean"]) == (1, 35.0)
    assert hot["kind"] == " Temperature"  # the event as parsed is left alone (the late topic gets its bytes)
    assert feed(event("d", -200, 200.0, kind="temperature", unit="C")) is Outcome.LATE


def test_commit_positions_hold_back_to_the_first_record_an_open_window_or_id_needs() -> None:
    engine = Aggregator(spec("1 minute"))
    p0, p1 = Feed(engine, 0), Feed(engine, 1)
    p0(event("a", 10))  # offset 0, window 12:00
    p0(event("b", 70))  # offset 1, window 12:01
    p1(event("c", 20, device="d2"))  # p1 offset 0
    engine.end_batch()  # watermark 12:00:10: nothing closed
    consumed = {("in", 0): 2, ("in", 1): 1}
    assert engine.commit_positions(consumed) == {("in", 0): 0, ("in", 1): 0}

    p0(event("d", 200))  # offset 2
    engine.end_batch()  # watermark 12:02:20: windows 12:00 and 12:01 closed, ids a, b, c expired
    consumed = {("in", 0): 3, ("in", 1): 1}
    assert engine.commit_positions(consumed) == {("in", 0): 2, ("in", 1): 1}


def test_replay_rebuilds_windows_without_publishing_them_again() -> None:
    """A restart from committed offsets: replayed events rebuild state, new ones update it."""
    events = [event(f"e{i}", 5 * i, float(i)) for i in range(20)]  # 12:00:00 .. 12:01:35
    whole = Aggregator(spec("5 minutes"))
    feed = Feed(whole)
    for e in events:
        feed(e)
    expected = {r["window_start"]: r for r in whole.end_batch()}

    first = Aggregator(spec("5 minutes"))
    feed = Feed(first)
    for e in events[:8]:
        feed(e)
    first.end_batch()
    committed = first.commit_positions({("in", 0): 8})
    assert committed == {("in", 0): 0}  # every event is still in an open window

    restarted = Aggregator(spec("5 minutes"), first.watermark_us)
    feed = Feed(restarted)
    feed.offset = committed[("in", 0)]
    for e in events[:8]:
        assert feed(e, replay=True) is Outcome.AGGREGATED
    assert restarted.end_batch() == []  # nothing new to publish
    for e in events[8:]:
        feed(e)
    assert {r["window_start"]: r for r in restarted.end_batch()} == expected


def test_replay_with_the_stored_watermark_keeps_closed_windows_closed_and_ids_remembered() -> None:
    engine = Aggregator(spec("2 minutes"), watermark_us=to_us(at(60)))
    feed = Feed(engine)
    assert feed(event("old", 30), replay=True) is Outcome.LATE  # its window was published and closed
    assert engine.windows == {}
    # Its id stays remembered until 12:02:30, as it was before the restart.
    assert feed(event("old", 90)) is Outcome.DUPLICATE
    assert feed(event("new", 90)) is Outcome.AGGREGATED


def test_a_partition_with_a_backlog_holds_the_watermark_back() -> None:
    """Reading a backlog partition by partition must not make the later partitions' events late."""
    engine = Aggregator(spec("2 minutes"))
    p0, p1 = Feed(engine, 0), Feed(engine, 1)
    for second in range(0, 600, 10):  # partition 0 read to its end first: 12:00 .. 12:09:50
        p0(event(f"a{second}", second))
    engine.end_batch(behind={("in", 1)})  # partition 1 not read yet: its times are unknown
    assert engine.watermark_us is None
    p1(event("b0", 0, device="d2"))
    engine.end_batch(behind={("in", 1)})
    assert engine.watermark_us == to_us(at(-120))  # partition 1's 12:00:00 less 2 minutes
    assert p1(event("b1", 100, device="d2")) is Outcome.AGGREGATED
    engine.end_batch(behind={("in", 1)})
    assert engine.watermark_us == to_us(at(-20))
    p1(event("b2", 400, device="d2"))
    engine.end_batch(behind={("in", 1)})
    assert engine.watermark_us == to_us(at(280))  # partition 1's 12:06:40 less 2 minutes
    engine.end_batch(behind=())  # every partition caught up: Spark's rule, the largest time
    assert engine.watermark_us == to_us(at(470))


def test_a_caught_up_or_empty_partition_does_not_hold_the_watermark_back() -> None:
    """Only partitions with records still to read hold the watermark back: an idle partition
    (its last event long ago) or an empty one (never an event) does not."""
    engine = Aggregator(spec("2 minutes"))
    idle, busy = Feed(engine, 0), Feed(engine, 1)
    idle(event("a", 0))
    busy(event("b", 600, device="d2"))
    engine.end_batch(behind={("in", 1)})  # partition 0 caught up at 12:00; partition 2 is empty
    assert engine.watermark_us == to_us(at(480))  # partition 1's 12:10 less 2 minutes
    busy(event("c", 700, device="d2"))
    engine.end_batch(behind=())
    assert engine.watermark_us == to_us(at(580))


def test_the_slowest_backlog_sets_the_watermark_and_a_faster_one_cannot_make_it_late() -> None:
    engine = Aggregator(spec("2 minutes"))
    fast, slow = Feed(engine, 0), Feed(engine, 1)
    for second in range(0, 1200, 10):
        fast(event(f"f{second}", second))
    slow(event("s0", 0, device="d2"))
    engine.end_batch(behind={("in", 0), ("in", 1)})
    assert engine.watermark_us == to_us(at(-120))
    # The slow partition's next events are 20 minutes behind the fast one's and still on time.
    assert slow(event("s1", 10, device="d2")) is Outcome.AGGREGATED
    assert slow(event("s2", 20, device="d2")) is Outcome.AGGREGATED


def test_heaps_close_windows_and_forget_ids_exactly_as_a_scan_of_the_state_would() -> None:
    """Random event times on three partitions, random backlogs: after every batch the open windows,
    the remembered ids and the commit positions equal those of plain dicts scanned in full."""
    rng = random.Random(11)
    engine = Aggregator(spec("30 seconds"))
    feeds = [Feed(engine, p) for p in range(3)]
    windows: dict[tuple[str, int], dict[tuple[str, int], int]] = {}  # (device, start) -> first offsets
    remembered: dict[str, tuple[tuple[str, int], int, int]] = {}  # id -> partition, offset, expiry
    clock = 0.0
    for _ in range(80):
        for _ in range(rng.randint(0, 30)):
            clock += rng.uniform(0, 3)
            p = rng.randrange(3)
            e = event(f"e{rng.randrange(300)}", clock - rng.uniform(0, 50), device=f"d{rng.randrange(4)}")
            tp, offset, e_us = ("in", p), feeds[p].offset, to_us(e["event_time"])
            wm = engine.watermark_us
            if feeds[p](e) is Outcome.AGGREGATED:
                windows.setdefault((e["device_id"], e_us - e_us % MINUTE), {}).setdefault(tp, offset)
                expires = e_us + duration_us("30 seconds")
                if wm is None or wm < expires:
                    remembered[e["event_id"]] = (tp, offset, expires)
        engine.end_batch(behind={("in", p) for p in range(3) if rng.random() < 0.3})
        wm = engine.watermark_us
        if wm is not None:
            windows = {k: v for k, v in windows.items() if k[1] + MINUTE > wm}
            remembered = {i: r for i, r in remembered.items() if r[2] > wm}
        assert {(w.keys[0], w.start_us) for w in engine.windows.values()} == set(windows)
        assert set(engine.seen) == set(remembered)
        consumed = {("in", p): feeds[p].offset for p in range(3)}
        expected = dict(consumed)
        for tp, offset in [
            *(h for v in windows.values() for h in v.items()),
            *((t, o) for t, o, _ in remembered.values()),
        ]:
            expected[tp] = min(expected[tp], offset)
        assert engine.commit_positions(consumed) == expected


def test_replay_puts_back_events_on_time_when_read_and_leaves_out_those_that_were_late() -> None:
    """After a restart the watermark is the committed one, ahead of what some replayed events saw
    when first read: an event then on time is aggregated again, one then late is not."""
    first = Aggregator(spec("2 minutes"))
    feed = Feed(first)
    feed(event("a", 70))  # offset 0: window 12:01, on time when read
    feed(event("b", 200))  # offset 1
    first.end_batch()  # watermark 12:01:20: window 12:01 still open, "a" now at or before it
    assert feed(event("c", 75)) is Outcome.LATE  # offset 2: at or before the watermark (dedup rule)
    assert feed(event("d", 90)) is Outcome.AGGREGATED  # offset 3
    first.end_batch()
    committed = first.commit_positions({("in", 0): 4})
    assert committed == {("in", 0): 0}
    assert first.late_offsets(committed) == {("in", 0): [2]}
    assert first.late_offsets({("in", 0): 3}) == {}  # a replay from offset 3 does not read it

    restarted = Aggregator(spec("2 minutes"), first.watermark_us)
    feed = Feed(restarted)
    outcomes = [
        feed(event("a", 70), replay=True),
        feed(event("b", 200), replay=True),
        feed(event("c", 75), replay=True, was_late=True),
        feed(event("d", 90), replay=True),
    ]
    assert outcomes == [Outcome.AGGREGATED, Outcome.AGGREGATED, Outcome.LATE, Outcome.AGGREGATED]
    assert feed(event("e", 95)) is Outcome.AGGREGATED
    assert [(r["window_start"], r["count"]) for r in restarted.end_batch()] == [(at(60), 3)]
    assert restarted.late_offsets({("in", 0): 0}) == {("in", 0): [2]}  # kept for the next restart
    restarted.end_batch()
    feed(event("f", 400))
    restarted.end_batch()  # window 12:01 closes: its late events no longer matter
    assert restarted.late_offsets({("in", 0): 0}) == {}
