"""Progress lines and summaries from StreamingQueryProgress-shaped dicts (no Spark needed)."""

from __future__ import annotations

from arus.runtime.progress import Rate, Tally, executed, progress_line, summary_line

PROGRESS = {
    "name": "clean",
    "batchId": 2,
    "numInputRows": 66,
    "processedRowsPerSecond": 41.25,
    "durationMs": {"addBatch": 1200, "triggerExecution": 1600},
    "eventTime": {"watermark": "2026-03-02T08:04:50.000Z"},
    "stateOperators": [
        {"numRowsTotal": 172, "numRowsDroppedByWatermark": 4},
        {"numRowsTotal": 8, "numRowsDroppedByWatermark": 0},
    ],
}


def test_a_line_shows_rows_rate_watermark_counts_and_state() -> None:
    assert progress_line(PROGRESS, {"late": 4, "dead": 1}) == (
        "clean batch 2: 66 rows, 41 rows/s, watermark 2026-03-02T08:04:50.000Z, "
        "late 4 (Spark dropped 4), dead letters 1, state 180 rows"
    )


def test_a_stateless_query_shows_no_watermark_or_state() -> None:
    stateless = {"name": "bronze", "batchId": 0, "numInputRows": 10, "processedRowsPerSecond": 5.0}
    assert progress_line(stateless, {"dead": 2}) == "bronze batch 0: 10 rows, 5 rows/s, dead letters 2"


def test_tally_overwrites_a_replayed_batch_and_sums_per_query() -> None:
    tally = Tally()
    tally.set("clean", 0, late=1)
    tally.set("clean", 1, late=2)
    tally.set("clean", 1, late=3)  # the same batch again after a restart
    tally.set("aggregate", 0, late=7)
    assert tally.batch("clean", 1) == {"late": 3}
    assert tally.totals("clean") == {"late": 4}


def test_summary_rate_is_rows_over_batch_time_counting_each_batch_once() -> None:
    rate = Rate()
    rate.add(PROGRESS)
    rate.add(PROGRESS)
    rate.add({**PROGRESS, "batchId": 3, "numInputRows": 34, "durationMs": {"triggerExecution": 400}})
    assert (rate.batches, rate.rows, rate.busy_ms) == (2, 100, 2000)
    assert summary_line("clean", rate, {"late": 4}) == (
        "clean: 2 batches, 100 rows in 2.0 s of batch time (50 events/s), late 4"
    )


def test_an_idle_trigger_is_not_a_batch() -> None:
    idle = {
        "name": "bronze",
        "batchId": 1,
        "numInputRows": 0,
        "durationMs": {"latestOffset": 3, "triggerExecution": 3},
    }
    assert executed(PROGRESS) and not executed(idle)
