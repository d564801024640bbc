"""arus scorecard and arus trace on the IoT demo run (the `demo_run` fixture): the simulator's
ledger of injected faults against what the pipeline wrote.

The oracles are independent of the commands: the ledger counted here, the raw topic read back from
the broker for topic, partition and offset, and event ids and windows computed from the fleet's
schedule (a device reads every 10 s, so a minute's window holds six of its readings).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import BATTERY_RULE, DEMO_DEVICES, DEMO_READINGS, DemoRun
from deltalake import DeltaTable, write_deltalake
from faultkit import START, read_delta
from kafka import KafkaConsumer, TopicPartition

from arus.core.rules import time_text
from arus.ops import scorecard, trace
from arus.sources.iot import event_id

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]

CLASSES = {"malformed", "late", "duplicate", "out_of_order", "spike", "stuck", "dropout", "battery_decline"}


def ledger(run: DemoRun) -> list[dict[str, object]]:
    return [json.loads(line) for line in run.ledger.read_text().splitlines()]


def injected(entries: list[dict[str, object]]) -> Counter[str]:
    """Per class: stuck and dropout per episode (device, first reading), the others per entry."""
    units = {
        (e["kind"], e["device_id"], e["episode"]) if e["kind"] in ("stuck", "dropout") else (e["kind"], i)
        for i, e in enumerate(entries)
    }
    return Counter(str(unit[0]) for unit in units)


def unexplained_alerts(run: DemoRun, lake: Path) -> set[str]:
    """The alert ids no injected fault explains: not on a spike or a stuck reading, not a battery
    alert after its device's decline began, not a silence a dropout of its device began."""
    entries = ledger(run)
    faulty = {e["event_id"] for e in entries if e["kind"] in ("spike", "stuck")}
    declines = {e["device_id"]: str(e["event_time"]) for e in entries if e["kind"] == "battery_decline"}
    dropouts = [(e["device_id"], str(e["event_time"])) for e in entries if e["kind"] == "dropout"]
    silence = timedelta(minutes=run.config.alerts.silent_minutes)
    unexplained = set()
    for a in read_delta(lake / "alerts").itertuples():
        at = a.event_time.to_pydatetime().astimezone(UTC)
        if pd.isna(a.event_id):
            explained = any(
                d == a.device_id and at < datetime.fromisoformat(t) <= at + silence for d, t in dropouts
            )
        elif a.rule == "battery_low":
            explained = a.device_id in declines and datetime.fromisoformat(declines[a.device_id]) <= at
        else:
            explained = a.event_id in faulty
        if not explained:
            unexplained.add(a.alert_id)
    return unexplained


def run_json(module: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = module.main([*args, "--json"])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def tool_args(run: DemoRun, lake: Path | None = None, config: Path | None = None) -> list[str]:
    return [
        "--config", str(config or run.config_file), "--lake", str(lake or run.lake),
        "--checkpoint", str(run.checkpoints),
    ]  # fmt: skip


def raw_records(run: DemoRun) -> list[tuple[int, int, int, bytes]]:
    """The raw topic read back from the broker: (partition, offset, timestamp ms, value)."""
    consumer = KafkaConsumer(**run.config.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(run.topics["raw"], p) for p in consumer.partitions_for_topic(run.topics["raw"])
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        out: list[tuple[int, int, int, bytes]] = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for messages in consumer.poll(timeout_ms=1000).values():
                out += [(m.partition, m.offset, m.timestamp, m.value) for m in messages]
        return out
    finally:
        consumer.close()


def test_scorecard_catches_every_injected_class(
    demo_run: DemoRun, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = ledger(demo_run)
    expected = injected(entries)
    assert set(expected) == CLASSES
    assert len(read_delta(demo_run.lake / "bronze")) == DEMO_READINGS  # a duplicate send is one of them
    code, report = run_json(scorecard, [*tool_args(demo_run), "--ledger", str(demo_run.ledger)], capsys)
    assert {c["kind"]: (c["injected"], c["caught"]) for c in report["classes"]} == {
        kind: (n, n) for kind, n in expected.items()
    }
    assert (code, report["ok"]) == (0, True)
    assert {a["alert_id"] for a in report["false_alarms"]} == unexplained_alerts(demo_run, demo_run.lake)


def test_scorecard_names_what_a_changed_pipeline_missed(
    demo_run: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stuck alerts deleted from a copy of the alerts table, and the battery rule dropped from
    the config: both classes missed, with their event ids, and a non-zero exit. A z-score alert
    added on a reading no fault touched is a false alarm."""
    lake = tmp_path / "lake"
    shutil.copytree(demo_run.lake, lake)
    alerts = DeltaTable(str(lake / "alerts"))
    alerts.delete("rule = 'stuck'")
    touched = {e["event_id"] for e in ledger(demo_run)}
    untouched = next(e for e in read_delta(lake / "silver")["event_id"] if e not in touched)
    added = alerts.to_pyarrow_table().slice(0, 1)
    for column, value in {"alert_id": f"zscore|{untouched}", "rule": "zscore", "event_id": untouched}.items():
        i = added.schema.get_field_index(column)
        added = added.set_column(i, added.schema.field(i), pa.array([value], added.schema.field(i).type))
    write_deltalake(str(lake / "alerts"), added, mode="append")
    config = tmp_path / "arus.toml"
    config.write_text(demo_run.config_file.read_text().replace(BATTERY_RULE, ""))
    entries = ledger(demo_run)
    code, report = run_json(
        scorecard, [*tool_args(demo_run, lake, config), "--ledger", str(demo_run.ledger)], capsys
    )
    missed = {c["kind"]: {eid for m in c["missed"] for eid in m["event_ids"]} for c in report["classes"]}
    assert missed == {
        **{kind: set() for kind in CLASSES},
        "stuck": {str(e["event_id"]) for e in entries if e["kind"] == "stuck"},
        "battery_decline": {str(e["event_id"]) for e in entries if e["kind"] == "battery_decline"},
    }
    assert (code, report["ok"]) == (1, False)
    alarms = {a["alert_id"] for a in report["false_alarms"]}
    assert f"zscore|{untouched}" in alarms
    # Without the battery rule its alerts are no longer explained by a decline.
    battery = set(read_delta(lake / "alerts").query("rule == 'battery_low'")["alert_id"])
    assert battery and alarms == unexplained_alerts(demo_run, lake) | battery


def test_trace_follows_a_malformed_a_late_and_a_normal_event(
    demo_run: DemoRun, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = ledger(demo_run)
    raw = raw_records(demo_run)
    topic = demo_run.topics["raw"]

    def where(matches: Callable[[bytes], bool]) -> dict[str, object]:
        """Where the broker has the one raw record that matches, as trace names it."""
        ((partition, offset, ms),) = [(p, o, t) for p, o, t, v in raw if matches(v)]
        stamp = time_text(datetime.fromtimestamp(ms / 1000, tz=UTC))
        return {"topic": topic, "partition": partition, "offset": offset, "timestamp": stamp}

    def place(record: dict[str, object]) -> dict[str, object]:
        return {k: record[k] for k in ("topic", "partition", "offset", "timestamp")}

    def naming(eid: str) -> Callable[[bytes], bool]:
        return lambda value: f'"{eid}"'.encode() in value

    bad = next(e for e in entries if e["kind"] == "malformed")
    code, steps = run_json(trace, [*tool_args(demo_run), str(bad["event_id"])], capsys)
    (record,) = steps["records"]
    expected = where(lambda value: value.decode("utf-8", "backslashreplace") == bad["payload"])
    assert code == 0 and place(record) == expected
    assert record["dead_letter"] and (steps["silver"], steps["gold"], steps["late"]) == (0, None, [])

    late_ids = set(read_delta(demo_run.lake / "late")["event_id"])
    late = next(e for e in entries if e["kind"] == "late" and e["event_id"] in late_ids)
    code, steps = run_json(trace, [*tool_args(demo_run), str(late["event_id"])], capsys)
    (record,) = steps["records"]
    assert code == 0 and place(record) == where(naming(str(late["event_id"])))
    assert record["dead_letter"] is None and (steps["silver"], steps["gold"]) == (0, None)
    ((stage, behind),) = [(s["stage"], s["event_time"] <= s["watermark"]) for s in steps["late"]]
    assert (stage, behind) == ("clean", True)
    assert record["watermark"] is not None and late["event_time"] <= record["watermark"]

    # A reading in a device-minute the ledger never touched: six readings, all counted.
    touched = {(e["device_id"], str(e["event_time"])[:16]) for e in entries}
    minute = next(
        START + timedelta(minutes=m)
        for m in range(1, DEMO_READINGS // DEMO_DEVICES // 6)
        if ("dev-0000", time_text(START + timedelta(minutes=m))[:16]) not in touched
    )
    normal = event_id("dev-0000", time_text(minute + timedelta(seconds=20)))
    code, steps = run_json(trace, [*tool_args(demo_run), normal], capsys)
    (record,) = steps["records"]
    assert code == 0 and place(record) == where(naming(normal))
    assert (record["dead_letter"], steps["late"], steps["silver"]) == (None, [], 1)
    assert steps["gold"] == {
        "device_id": "dev-0000",
        "window_start": time_text(minute),
        "window_end": time_text(minute + timedelta(minutes=1)),
        "count": 6,
        "counts_it": True,
    }
    assert steps["alerts"] == []


def test_trace_says_so_for_an_unknown_id(demo_run: DemoRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert trace.main([*tool_args(demo_run), "no-such-event"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no record" in captured.err and "no-such-event" in captured.err
