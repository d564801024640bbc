"""The Spark benchmarks' pure parts: per-batch costs from progress marks, the fixed/marginal fit,
gold commit times, soak flatness, the issue's goals from a small recorded result, and its report."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from arus.bench.gold import commit_times, flatness, median_after_first
from arus.bench.pipeline_steady import summarise_stages
from arus.bench.report import render, render_profile
from arus.bench.run import goals
from arus.bench.soak import fifth_ratio, lag_bounded, state_fill_seconds, verdict
from arus.bench.steady import Batch, data_batches, fit_line, summarise_rung, warmed

from arus.config import Config


def test_fit_line_recovers_fixed_and_marginal_cost() -> None:
    xs = [1000.0, 5000.0, 20_000.0, 1000.0]
    ys = [300 + 0.05 * x for x in xs]
    fixed, marginal = fit_line(xs, ys) or (0, 0)
    assert fixed == pytest.approx(300)
    assert marginal == pytest.approx(0.05)
    assert fit_line([5.0, 5.0], [1.0, 2.0]) is None


def test_a_rung_is_warm_once_a_round_is_no_more_than_5_percent_faster() -> None:
    assert not warmed([])
    assert not warmed([2800.0])
    assert not warmed([2800.0, 2500.0])  # 11% faster: still warming up
    assert warmed([2800.0, 2500.0, 2400.0])  # 4% faster
    assert warmed([2400.0, 2600.0])  # slower (a busy box): no faster to get


def test_data_batches_charge_no_data_batches_to_the_next_data_batch() -> None:
    # (batch id, rows, triggerExecution ms, CPU seconds read at its progress report)
    marks = [(0, 100, 900.0, 12.0), (1, 0, 50.0, 12.2), (2, 100, 400.0, 12.9), (3, 80, 300.0, 13.4)]
    assert data_batches(marks, cpu_at_start=10.0) == [
        Batch(0, 100, pytest.approx(2.0), 900.0),
        Batch(2, 100, pytest.approx(0.9), 450.0),
        Batch(3, 80, pytest.approx(0.5), 300.0),
    ]


def test_summarise_rung_fits_over_every_batch_and_evaluates_a_live_batch() -> None:
    def batches(size: int) -> list[Batch]:
        # CPU 0.2 s + 20 us/event; wall 300 ms + 50 us/event
        return [Batch(i, size, 0.2 + 20e-6 * size, 300 + 0.05 * size) for i in range(3)]

    summary = summarise_rung({1000: batches(1000), 10_000: batches(10_000)})
    assert summary["fixed_cpu_ms"] == pytest.approx(200)
    assert summary["marginal_cpu_us"] == pytest.approx(20)
    assert summary["fixed_wall_ms"] == pytest.approx(300)
    assert summary["live_batch_wall_ms"] == pytest.approx(350)
    assert [p["size"] for p in summary["points"]] == [1000, 10_000]
    assert summary["largest_events_per_s"] == pytest.approx(10_000 / 0.8)


def test_summarise_stages_fits_each_stage_over_every_size_and_names_the_slowest(tmp_path: Path) -> None:
    def batches(size: int, fixed_ms: float, us_per_event: float) -> list[Batch]:
        return [
            Batch(
                i, size, (fixed_ms + us_per_event * size / 1000) / 1000, fixed_ms + us_per_event * size / 1000
            )
            for i in range(2)
        ]

    # (fixed ms, marginal us per event) per stage; alerts is the slowest at 1,000 events, though
    # aggregate costs more per event.
    costs = {"bronze": (400, 5), "clean": (900, 20), "aggregate": (1500, 100), "alerts": (3000, 30)}
    sizes = {size: {stage: batches(size, *cost) for stage, cost in costs.items()} for size in (1000, 5000)}
    summary = summarise_stages(sizes)
    assert list(summary["stages"]) == ["bronze", "clean", "aggregate", "alerts"]
    for stage, (fixed, marginal) in costs.items():
        fitted = summary["stages"][stage]
        assert (fitted["fixed_wall_ms"], fitted["marginal_wall_us"]) == (
            pytest.approx(fixed),
            pytest.approx(marginal),
        )
        assert fitted["fixed_cpu_ms"] == pytest.approx(fixed)
    assert summary["slowest"] == "alerts"
    # A stage that never ran is left out, not fitted on nothing.
    assert list(summarise_stages({1000: {"bronze": batches(1000, 400, 5)}})["stages"]) == ["bronze"]

    results = {
        "profile": "smoke",
        "pipeline": {"sizes": [1000, 5000], "batches_per_size": 2, "seconds": 50, **summary},
    }
    text = render(results, tmp_path / "r.json")
    assert "| alerts | 3,000 | 30.0 | 3,000 | 30.0 | 3,030 |" in text
    assert "Slowest at a live batch: alerts." in text


def test_commit_times_read_delta_history_metrics() -> None:
    history = [
        (4, "MERGE", {"executionTimeMs": "812", "numTargetRowsInserted": "40"}),
        (3, "WRITE", {"numOutputRows": "1000"}),
    ]
    assert commit_times(history) == [
        {"version": 3, "operation": "WRITE", "execution_ms": None, "rows_written": 1000},
        {"version": 4, "operation": "MERGE", "execution_ms": 812.0, "rows_written": 40},
    ]
    assert median_after_first([9000.0, 100.0, 300.0, None, 200.0]) == 200.0
    assert flatness({1000: 100.0, 10**6: 130.0}) == pytest.approx(1.3)
    assert flatness({1000: 100.0, 10**6: None}) is None


def soak_sample(batch_id: int, batch_ms: int, **extra: Any) -> dict[str, Any]:
    """One soak sample of a steady job: flat lag and memory, gold growing by 10 rows a batch."""
    return {
        "batch_id": batch_id,
        "lag": 10,
        "batch_ms": batch_ms,
        "jvm_rss_mb": 900,
        "driver_rss_mb": 100,
        "gold_rows": 10 * batch_id,
        **extra,
    }


def test_soak_flatness_from_first_to_last_fifth() -> None:
    assert fifth_ratio([10, 10, 11, 12, 12, 12, 13, 14, 15, 15]) == pytest.approx(1.5)
    assert fifth_ratio([1, 2, 3]) is None
    # A lag near zero is bounded by the slack; a lag that keeps growing is not.
    assert lag_bounded([0, 5, 0, 3, 10, 2, 0, 8, 30, 40], slack=100) is True
    assert lag_bounded([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], slack=100) is False
    samples = [soak_sample(i, batch_ms=500) for i in range(1, 11)]
    # The cold first batch is left out, however slow.
    samples.insert(0, {"batch_id": 0, "lag": 10, "batch_ms": 20_000, "jvm_rss_mb": 500, "driver_rss_mb": 50})
    result = verdict(samples, rate=50, trigger_s=2)
    assert result["met"] is True
    samples[-1]["batch_ms"] = samples[-2]["batch_ms"] = 1500
    failed = verdict(samples, rate=50, trigger_s=2)
    assert failed["checks"]["batch_ms flat"] is False
    assert failed["met"] is False


def test_soak_judges_only_the_samples_after_the_state_filled() -> None:
    # While the state fills every batch grows; after it, batches are flat.
    filling = [soak_sample(i, batch_ms=200 * i, filling=True) for i in range(1, 6)]
    filled = [soak_sample(i, batch_ms=1000, filling=False) for i in range(6, 16)]
    assert verdict(filling + filled, rate=50, trigger_s=2)["ratios"]["batch_ms"] == pytest.approx(1.0)
    for sample in filling:
        sample["filling"] = False
    assert verdict(filling + filled, rate=50, trigger_s=2)["checks"]["batch_ms flat"] is False


def test_the_state_fills_in_twice_the_watermark_or_a_window_past_it(config: Config) -> None:
    stream = replace(config.stream, watermark="2 minutes")
    assert state_fill_seconds(replace(config, stream=stream)) == 240
    ten_minutes = replace(config.aggregate, window="10 minutes")
    assert state_fill_seconds(replace(config, stream=stream, aggregate=ten_minutes)) == 720


def recorded() -> dict[str, Any]:
    """A small result file as the quick profile writes it (figures made up, shapes real)."""

    def rung(per_s: float, live_ms: float) -> dict[str, Any]:
        return {
            "points": [
                {
                    "size": 1000,
                    "wall_ms_per_batch": live_ms,
                    "cpu_ms_per_batch": 900.0,
                    "cpu_us_per_event": 900.0,
                    "events_per_s": 1000 / live_ms * 1000,
                    "batches": 10,
                    "rows_median": 1000,
                }
            ],
            "fixed_cpu_ms": 800.0,
            "marginal_cpu_us": 100.0,
            "fixed_wall_ms": live_ms - 50,
            "marginal_wall_us": 50.0,
            "live_batch_wall_ms": live_ms,
            "largest_events_per_s": per_s,
        }

    return {
        "profile": "quick",
        "steady": {
            "sizes": [1000, 20_000],
            "batches_per_size": 10,
            "rungs": {"parse": rung(20_000, 400), "delta": rung(8_000, 900), "job": rung(6_000, 1500)},
        },
        "versus": {
            "events": 1_000_000,
            "consumer": {"events": 1_000_000, "events_per_s": 15_000.0, "wall_s": 66.7},
            "spark": {"events": 1_000_000, "events_per_s": 30_000.0, "wall_s": 33.3},
        },
        "gold": {
            "batches": 6,
            "batch_size": 2000,
            "points": [
                {"gold_rows": 1000, "write_ms_median": 500.0, "add_batch_ms_median": 900.0},
                {"gold_rows": 1_000_000, "write_ms_median": 550.0, "add_batch_ms_median": 990.0},
            ],
            "write_flatness": 1.1,
            "add_batch_flatness": 1.1,
        },
        "scale": {
            "points": [
                {"events": 100_000, "cpu_us_per_event": 110.0},
                {"events": 1_000_000, "cpu_us_per_event": 100.0},
            ]
        },
        "soak": {
            "seconds": 300,
            "offered_events_per_s": 3000,
            "ratios": {"batch_ms": 1.05, "jvm_rss_mb": 1.3},
            "checks": {
                "batch_ms flat": True,
                "jvm_rss_mb flat": False,
                "lag bounded": True,
                "gold growing": True,
            },
            "met": False,
            "samples": [
                {
                    "t_s": 5.0 * i,
                    "lag": 10,
                    "batch_ms": 500,
                    "jvm_rss_mb": 900,
                    "jvm_heap_mb": 300,
                    "driver_rss_mb": 100,
                    "gold_rows": i,
                }
                for i in range(10)
            ],
        },
    }


def test_goals_name_each_goal_of_the_issue_with_its_ratio() -> None:
    by_goal = {g["goal"]: g for g in goals(recorded())}

    def find(*words: str) -> dict[str, Any]:
        (found,) = [g for name, g in by_goal.items() if all(w in name for w in words)]
        return found

    versus = find("Spark", "consumer")
    assert (versus["ratio"], versus["met"]) == (pytest.approx(2.0), False)
    delta = find("Delta", "parse")
    assert (delta["ratio"], delta["met"]) == (pytest.approx(0.4), False)
    gold = find("gold write")
    assert (gold["ratio"], gold["met"]) == (pytest.approx(1.1), True)
    cpu = find("10^7")
    # 10^5 and 10^6 only (the quick profile): the ratio is shown, the goal not judged.
    assert (cpu["ratio"], cpu["met"]) == (pytest.approx(1.1), None)
    assert "full profile" in cpu["how"]
    live = find("live batch")
    assert (live["ratio"], live["met"]) == (pytest.approx(1.5), False)
    assert find("soak")["met"] is False
    informative = find("informative", "10^6")
    assert informative["ratio"] == pytest.approx(0.6)
    assert find("end-to-end p99")["met"] is None


def test_report_shows_goals_split_growth_and_soak(tmp_path: Path) -> None:
    results = recorded()
    results["goals"] = goals(results)
    text = render(results, tmp_path / "r.json")
    assert "after a warm-up run of the same rung" in text  # a run from before the warm-up rounds
    results["steady"]["rungs"]["delta"]["warm_up_wall_ms"] = [2840.0, 2320.0, 2250.0]
    text = render(results, tmp_path / "r.json")
    assert "after warm-up rounds of the same rung" in text
    assert "- delta: 2,840 -> 2,320 -> 2,250" in text
    assert "| Spark aggregate job >= 3 x kafka-python consumer" in text
    assert "| job | 800 | 100.0 | 1,450 | 50.0 | 1,500 | 6,000 |" in text
    assert "| 1,000,000 | 550 | 990 |" in text
    assert "img/bench-soak.png" in text and "img/bench-gold-growth.png" in text
    assert "jvm_rss_mb flat: no" in text


def test_gold_and_soak_plots_are_drawn_from_the_results(tmp_path: Path) -> None:
    from arus.bench.report import plot_gold, plot_soak

    results = recorded()
    assert plot_gold(results, tmp_path / "gold.png") and plot_soak(results, tmp_path / "soak.png")
    assert (tmp_path / "gold.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert not plot_gold({}, tmp_path / "none.png")


def test_profile_table_lists_each_mode_with_its_steps_and_merge_metrics(tmp_path: Path) -> None:
    profile = {
        "started": "2026-12-02T07:00:00+00:00",
        "runs": [
            {
                "mode": "update",
                "size": 1000,
                "batches": 11,
                "batch_ms": 6100,
                "add_batch_ms": 5900,
                "steps_ms": {"first_window": 980, "merge_into_delta": 3400},
                "delta_merge_ms": {"executionTimeMs": 3000.0, "scanTimeMs": 800.0},
                "state_ms": {
                    "dedupeWithinWatermark": {"updates": 310, "removals": 29, "commit": 15},
                    "stateStoreSave": {"updates": 70, "removals": 8, "commit": 18},
                },
            },
            {
                "mode": "append",
                "size": 1000,
                "batches": 11,
                "batch_ms": 2500,
                "add_batch_ms": 2300,
                "steps_ms": {"append_to_delta": 700},
                "delta_merge_ms": {},
            },
        ],
    }
    rows = [line for line in render_profile(profile, tmp_path / "profile-x.json") if line.startswith("| ")]
    assert rows[1:] == [
        "| update | 1,000 | 11 | 6,100 | 5,900 | first_window 980, merge_into_delta 3,400 "
        "| executionTimeMs 3,000, scanTimeMs 800 | dedupeWithinWatermark: updates 310, removals 29, "
        "commit 15; stateStoreSave: updates 70, removals 8, commit 18 |",
        "| append | 1,000 | 11 | 2,500 | 2,300 | append_to_delta 700 | - | - |",
    ]


def test_state_times_are_each_operators_medians_from_the_progress() -> None:
    from types import SimpleNamespace

    from arus.bench.batch_profile import state_times

    def progress(dedup: tuple[int, int, int], save: tuple[int, int, int]) -> SimpleNamespace:
        ops = [
            SimpleNamespace(operatorName=name, allUpdatesTimeMs=u, allRemovalsTimeMs=r, commitTimeMs=c)
            for name, (u, r, c) in (("dedupeWithinWatermark", dedup), ("stateStoreSave", save))
        ]
        return SimpleNamespace(stateOperators=ops)

    batches = [
        progress((300, 20, 10), (70, 5, 9)),
        progress((900, 40, 30), (90, 6, 8)),
        progress((500, 30, 20), (80, 7, 7)),
    ]
    assert state_times(batches) == {
        "dedupeWithinWatermark": {"updates": 500, "removals": 30, "commit": 20},
        "stateStoreSave": {"updates": 80, "removals": 6, "commit": 8},
    }
    assert state_times([]) == {}


def test_versus_table_shows_the_job_as_configured_and_capped(tmp_path: Path) -> None:
    results = recorded()
    results["versus"]["spark_capped"] = {
        "events": 1_000_000,
        "events_per_s": 6_000.0,
        "wall_s": 166.7,
        "max_offsets_per_trigger": 100_000,
    }
    rows = [line for line in render(results, tmp_path / "r.json").splitlines() if "| `arus " in line]
    assert rows == [
        "| `arus aggregate` (Spark) | 1,000,000 | 33.3 | 30,000 | - | - |",
        "| `arus aggregate --max-offsets-per-trigger 100000` (Spark) | 1,000,000 | 166.7 | 6,000 | - | - |",
        "| `arus consume` (kafka-python) | 1,000,000 | 66.7 | 15,000 | - | - |",
    ]


def test_profile_metric_costs_follow_the_runs(tmp_path: Path) -> None:
    steps = [
        {"metrics": "count", "cpu_us_per_event": 0.7, "wall_s": 0.4},
        {"metrics": "+ mean", "cpu_us_per_event": 0.75, "added_cpu_us_per_event": 0.05, "wall_s": 0.4},
    ]
    profile = {"runs": [], "metrics": {"events": 1_000_000, "devices": 10_000, "steps": steps}}
    lines = render_profile(profile, tmp_path / "profile-x.json")
    assert [line for line in lines if line.startswith("| ") and "us/event" not in line] == [
        "| count | 0.70 | - | 0.40 |",
        "| + mean | 0.75 | 0.05 | 0.40 |",
    ]


def test_newest_run_is_by_its_recorded_start_and_skips_profiles_and_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arus.bench import report

    for name, start in (
        ("quick-20261202T063600Z", "2026-12-02T06:36:00.432829+00:00"),
        ("quick-20261125T175405Z", "2026-11-25T17:54:05.000000+00:00"),
        # named with --out: its name sorts after every timestamp, its run does not
        ("quick-versus-20261201-observe", "2026-12-01T07:18:12.662995+00:00"),
        ("quick-pipeline-rerun", "2026-12-03T00:00:00.000000+00:00"),
        ("profile-20270101T000000Z", "2027-01-01T00:00:00.000000+00:00"),
        ("profile-20261231T000000Z", "2026-12-31T00:00:00.000000+00:00"),
    ):
        (tmp_path / f"{name}.json").write_text(json.dumps({"started": start}))
    # the older run written last, as a clone leaves modification times
    os.utime(tmp_path / "quick-20261125T175405Z.json")
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    assert report.newest_result() == tmp_path / "quick-20261202T063600Z.json"
    assert report.newest_result("profile-") == tmp_path / "profile-20270101T000000Z.json"


def test_gold_sizes_run_both_ways_and_each_keeps_its_lower_median() -> None:
    from arus.bench.gold import both_ways, size_point

    assert both_ways([1000, 10_000, 100_000]) == [1000, 10_000, 100_000, 100_000, 10_000, 1000]

    def run(*ms: float | None) -> dict[str, Any]:
        return {"commits": [{"execution_ms": v} for v in ms], "add_batch_ms": [2 * (v or 0) for v in ms]}

    # each run's first batch (9,000 ms: no watermark yet) is left out; the cold run's median (300)
    # loses to the warm one's (200)
    point = size_point(1000, [run(9000.0, 250.0, 300.0, 350.0), run(9000.0, 200.0, None, 100.0, 700.0)])
    assert point["gold_rows"] == 1000
    assert point["write_ms_median"] == 200.0
    assert point["add_batch_ms_median"] == 300.0  # the second run's 400, 0, 200, 1400
    assert len(point["runs"]) == 2
