"""Where one event went through the pipeline: raw record, bronze, dead letter or silver, late or its
gold window, alerts, with the clean stage's watermark when it read the event.

    arus trace 0b7c5e8e-...-5d1f                         # the tables under [paths] lake
    arus trace EVENT_ID --lake run/lake --checkpoint run/checkpoints --json

The raw record (topic, partition, offset, Kafka timestamp) comes from bronze, which keeps every
record as received, a malformed one too (found by its id in the bytes); the watermark from the
clean stage's checkpoint (the micro-batch that read the record, and the watermark it judged late
events by); the aggregate and alerts stages' watermarks from their last commits.

Exit codes: 0 the event was found; 1 no record names that id; 2 a usage or config error, or no
bronze table under the lake.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from arus.config import say
from arus.core.rules import time_text
from arus.io.checkpoints import read_query_status
from arus.ops.lag import find_checkpoints
from arus.ops.scorecard import RunTables, open_run, run_parser

FOUND, UNKNOWN, USAGE = 0, 1, 2


def _ms_text(ms: int | None) -> str | None:
    return None if ms is None else time_text(datetime.fromtimestamp(ms / 1000, tz=UTC))


def _text(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return time_text(value.to_pydatetime())
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value.item() if hasattr(value, "item") else value


def stage_watermarks(checkpoints: Path) -> dict[str, str | None]:
    """Each stage's watermark as its last commit left it (what its next batch runs with)."""
    marks: dict[str, str | None] = {}
    for stage in ("aggregate", "alerts"):
        found = find_checkpoints(checkpoints / stage)
        if found:
            marks[stage] = _ms_text(read_query_status(found[0]).watermark_ms)
    return marks


def trace(run: RunTables, event_id: str, checkpoints: Path) -> dict[str, Any] | None:
    """Every step the event took, as plain values; None when no record names it."""
    raw = run.raw_records(event_id)
    silver = run.silver[run.silver["event_id"] == event_id]
    if raw.empty and silver.empty:
        return None
    steps: dict[str, Any] = {"event_id": event_id, "records": []}
    for record in raw.sort_values("offset").itertuples():
        topic, partition, offset = str(record.topic), int(record.partition), int(record.offset)
        batch = run.clean_batch(topic, partition, offset)
        dead = run.deadletter[
            (run.deadletter["topic"] == topic)
            & (run.deadletter["partition"] == partition)
            & (run.deadletter["offset"] == offset)
        ]
        steps["records"].append(
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "timestamp": _text(record.timestamp),
                "bronze": True,
                "dead_letter": str(dead["error"].iloc[0]) if len(dead) else None,
                "clean_batch": None if batch is None else batch.batch_id,
                "watermark": None if batch is None else _ms_text(batch.late_watermark_ms),
            }
        )
    late = run.late_rows(event_id)
    steps["late"] = [
        {"stage": str(r.stage), "event_time": _text(r.event_time), "watermark": _text(r.watermark)}
        for r in late.itertuples()
    ]
    steps["silver"] = len(silver)
    steps["gold"] = None
    if len(silver):
        row = silver.iloc[0]
        key = run.config.alerts.key
        steps["event_time"] = _text(row["event_time"])
        window = run.window_of(str(row[key]), row["event_time"])
        if window is not None:
            steps["gold"] = {
                key: str(row[key]),
                "window_start": _text(window["window_start"]),
                "window_end": _text(window["window_end"]),
                "count": int(window["count"]),
                "counts_it": run.window_counts_it(str(row[key]), row["event_time"]),
            }
    steps["alerts"] = sorted(str(a) for a in run.alerts.loc[run.alerts["event_id"] == event_id, "alert_id"])
    steps["watermarks"] = stage_watermarks(checkpoints)
    return steps


def print_trace(steps: dict[str, Any]) -> None:
    print(f"event {steps['event_id']}")
    for r in steps["records"]:
        print(f"  raw      {r['topic']} partition {r['partition']} offset {r['offset']} at {r['timestamp']}")
        print("  bronze   yes")
        if r["clean_batch"] is not None:
            print(f"  clean    micro-batch {r['clean_batch']}, watermark {r['watermark']}")
        if r["dead_letter"]:
            print(f"  dead     {r['dead_letter']}")
    for late in steps["late"]:
        print(f"  late     {late['stage']} stage: {late['event_time']} <= watermark {late['watermark']}")
    print(
        f"  silver   {steps['silver']} row(s)"
        + (f", event time {steps['event_time']}" if steps["silver"] else "")
    )
    gold = steps["gold"]
    if gold:
        counted = "counts it" if gold["counts_it"] else "does NOT count it"
        print(f"  gold     {gold['window_start']} .. {gold['window_end']}: count {gold['count']}, {counted}")
    print(f"  alerts   {', '.join(steps['alerts']) or 'none'}")
    for stage, mark in steps["watermarks"].items():
        print(f"  {stage} stage: watermark now {mark or 'none yet'}")


def main(argv: list[str] | None = None) -> int:
    parser = run_parser("arus trace", __doc__ or "")
    parser.add_argument(
        "event_id", help="the event's id ([stream] id_field), as the ledger or silver names it"
    )
    args = parser.parse_args(argv)
    opened = open_run("trace", args)
    if opened is None:
        return USAGE
    run, checkpoints = opened
    steps = trace(run, args.event_id, checkpoints)
    if steps is None:
        say("trace", f"no record in the lake names event {args.event_id!r} (not sent, or another lake?)")
        return UNKNOWN
    if args.json:
        print(json.dumps(steps, indent=2))
    else:
        print_trace(steps)
    return FOUND


if __name__ == "__main__":
    sys.exit(main())
