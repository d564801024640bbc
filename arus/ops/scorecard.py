"""Grade a pipeline run against the IoT simulator's ledger: per injected class, injected and caught.

    arus produce iot --count 3000 --ledger data/iot-ledger.jsonl
    arus pipeline --available-now
    arus scorecard --ledger data/iot-ledger.jsonl
    arus scorecard --ledger run/ledger.jsonl --lake run/lake --checkpoint run/checkpoints --json

The ledger (`arus produce iot --ledger`) has the ground truth of every fault and delivery problem
injected; the pipeline's tables (bronze, dead letters, late, silver, gold, alerts, read without
Spark) and its clean stage's checkpoint say what became of each. What "caught" means per class:

    malformed       a dead letter with the same bytes and a reason
    late            where the clean stage's own watermark sent it: the late table when its event
                    time was at or behind the watermark its micro-batch judged by (from the
                    checkpoint), else once in silver (it came within the allowed lateness)
    duplicate       the event once in silver, however often it was sent
    out_of_order    once in silver (or late, as above), and its gold window counts it
    spike           an alert on that reading, by any rule
    stuck           per episode (a device's run of frozen readings): a stuck alert on one of them
    dropout         per episode: none of its readings in bronze or silver (nothing was invented)
    battery_decline an alert from a rule on the battery field for that device, at or after the start

What the rules as configured cannot see is reported missed: for instance a stuck episode shorter
than [alerts] stuck_readings, or a decline with no battery rule in [alerts].

A false alarm is an alert the ledger explains by no injected fault: an alert on a reading that is
neither a spike nor one of a stuck episode's readings (a battery rule's alert after the device's
decline began is explained), or a silent alert with no dropout of the device within
[alerts] silent_minutes after the reading it names. They are counted and listed; they do not
change the exit code, since a rule may rightly see what the simulator did not inject.

Exit codes: 0 every class caught = injected; 1 some injected fault was missed (listed with its
event ids); 2 a usage or config error, an unreadable ledger, or no bronze table under the lake.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from arus.config import Config, job_parser, load_config_or_say, say
from arus.core.rules import time_text
from arus.io.checkpoints import StreamBatch, read_stream_batches
from arus.io.lake import read_table
from arus.ops.lag import find_checkpoints

CLASSES = (
    "malformed",
    "late",
    "duplicate",
    "out_of_order",
    "spike",
    "stuck",
    "dropout",
    "battery_decline",
)
EPISODES = ("stuck", "dropout")  # counted per episode, the others per ledger entry
CAUGHT, MISSED, USAGE = 0, 1, 2


class RunMissing(LookupError):
    """A table or checkpoint the grading needs is not there."""


@dataclass
class RunTables:
    """What one pipeline run wrote, in pandas, with each bronze record's event id where it has one."""

    config: Config
    bronze: pd.DataFrame  # topic, partition, offset, timestamp, key, value, event_id
    deadletter: pd.DataFrame  # topic, partition, offset, timestamp, key, value, error
    late: pd.DataFrame  # topic, partition, offset, ..., event_id, event_time, watermark, stage, batch_id
    silver: pd.DataFrame  # event_id, device_id, ..., event_time
    gold: pd.DataFrame  # <keys>, window_start, window_end, count, ...
    alerts: pd.DataFrame  # alert_id, rule, <key>, event_id, event_time, value, detail
    clean_batches: list[StreamBatch]  # the clean stage's committed micro-batches ([] if unknown)

    def silver_count(self, event_id: str) -> int:
        return int((self.silver["event_id"] == event_id).sum())

    def late_rows(self, event_id: str) -> pd.DataFrame:
        return self.late[self.late["event_id"] == event_id]

    def raw_records(self, event_id: str) -> pd.DataFrame:
        """The bronze records whose value names this event id (a malformed one's bytes too)."""
        needle = f'"{event_id}"'.encode()
        return self.bronze[self.bronze["value"].map(lambda v: v is not None and needle in v)]

    def clean_batch(self, topic: str, partition: int, offset: int) -> StreamBatch | None:
        """The clean stage's micro-batch that read this record, if the checkpoint still knows it."""
        for batch in self.clean_batches:
            end = batch.end.get((topic, partition))
            if end is not None and batch.start and batch.start.get((topic, partition), 0) <= offset < end:
                return batch
        return None

    def judged_late(self, event_id: str, event_time: datetime) -> bool | None:
        """Whether the clean stage's watermark was at or past the event when it read it (None: unknown)."""
        for record in self.raw_records(event_id).itertuples():
            batch = self.clean_batch(str(record.topic), int(record.partition), int(record.offset))
            if batch is not None and batch.late_watermark_ms is not None:
                return event_time.timestamp() * 1000 <= batch.late_watermark_ms
        return None

    def window_of(self, device: str, event_time: datetime) -> pd.Series | None:
        """The gold row of `device` whose window holds `event_time`."""
        key = self.config.alerts.key
        at = pd.Timestamp(event_time)
        rows = self.gold[
            (self.gold[key] == device) & (self.gold["window_start"] <= at) & (at < self.gold["window_end"])
        ]
        return None if rows.empty else rows.iloc[0]

    def window_counts_it(self, device: str, event_time: datetime) -> bool:
        """Whether the gold window of the event's time counts exactly the silver readings in it."""
        row = self.window_of(device, event_time)
        if row is None:
            return False
        key = self.config.alerts.key
        times = self.silver.loc[self.silver[key] == device, "event_time"]
        inside = int(((times >= row["window_start"]) & (times < row["window_end"])).sum())
        return int(row["count"]) == inside


def _utc(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        if column in df.columns:
            df[column] = pd.to_datetime(df[column], utc=True)
    return df


def _event_id(value: bytes | None, id_field: str) -> str | None:
    try:
        parsed = json.loads(value) if value is not None else None
    except ValueError:
        return None
    return str(parsed.get(id_field)) if isinstance(parsed, dict) and parsed.get(id_field) else None


def read_run(config: Config, lake: Path, checkpoints: Path) -> RunTables:
    """The run's tables under `lake` and its clean stage's batches under `checkpoints`."""
    names = {
        "bronze": config.batch.bronze_table,
        "deadletter": config.stream.deadletter_table,
        "late": config.stream.late_table,
        "silver": config.batch.silver_table,
        "gold": config.aggregate.table,
        "alerts": config.batch.alerts_table,
    }
    frames: dict[str, pd.DataFrame] = {}
    for role, name in names.items():
        table = read_table(lake / name)
        if table is None and role == "bronze":
            raise RunMissing(f"no bronze table at {lake / name}: is --lake the pipeline's lake?")
        frames[role] = table if table is not None else pd.DataFrame(columns=["event_id", "event_time"])
    bronze = frames["bronze"]
    bronze["value"] = bronze["value"].map(lambda v: bytes(v) if v is not None else None)
    bronze["event_id"] = bronze["value"].map(lambda v: _event_id(v, config.stream.id_field or "event_id"))
    if "value" in frames["deadletter"]:
        frames["deadletter"]["value"] = frames["deadletter"]["value"].map(
            lambda v: bytes(v) if v is not None else None
        )
    for role in ("late", "silver", "alerts"):
        _utc(frames[role], "event_time", "watermark")
    _utc(frames["gold"], "window_start", "window_end")
    _utc(bronze, "timestamp")
    found = find_checkpoints(checkpoints / "clean")
    return RunTables(
        config=config,
        bronze=bronze,
        deadletter=frames["deadletter"],
        late=frames["late"],
        silver=frames["silver"],
        gold=frames["gold"],
        alerts=frames["alerts"],
        clean_batches=read_stream_batches(found[0]) if found else [],
    )


@dataclass
class Verdict:
    """One injected fault (or episode) and what the pipeline did with it."""

    kind: str
    event_ids: list[str]
    device_id: str
    event_time: str
    caught: bool
    where: str  # where it was caught, or why it counts as missed


@dataclass
class ClassScore:
    kind: str
    unit: str  # "send" or "episode"
    injected: int = 0
    caught: int = 0
    missed: list[Verdict] = field(default_factory=list)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _time(entry: dict[str, Any]) -> datetime:
    return pd.Timestamp(entry["event_time"]).to_pydatetime()


def _placed(run: RunTables, entry: dict[str, Any]) -> tuple[bool, str]:
    """A late or out-of-order send: in the late table if the watermark judged it late, else silver."""
    eid = str(entry["event_id"])
    late = run.late_rows(eid)
    verdict = run.judged_late(eid, _time(entry))
    if verdict is None and not run.clean_batches:
        verdict = None if late.empty else True
    if verdict:
        behind = not late.empty and bool((late["event_time"] <= late["watermark"]).all())
        return behind, "late table (behind the watermark)" if behind else "behind the watermark, not in late"
    silver = run.silver_count(eid)
    if silver == 1:
        return True, "silver (within the watermark)"
    return False, f"{silver} times in silver, {len(late)} in late, within the watermark"


def _judge(run: RunTables, kind: str, entries: list[dict[str, Any]]) -> tuple[bool, str]:
    first = entries[0]
    eid, device = str(first["event_id"]), str(first["device_id"])
    key = run.config.alerts.key
    if kind == "malformed":
        values = run.deadletter["value"].map(lambda v: (v or b"").decode("utf-8", "backslashreplace"))
        rows = run.deadletter[values == first["payload"]]
        reasons = [str(r) for r in rows.get("error", pd.Series(dtype=str)) if r]
        return (True, f"dead letter: {reasons[0]}") if reasons else (False, "no dead letter with its bytes")
    if kind == "late":
        return _placed(run, first)
    if kind == "duplicate":
        n = run.silver_count(eid)
        return n == 1, f"{n} times in silver"
    if kind == "out_of_order":
        ok, where = _placed(run, first)
        if ok and where.startswith("silver") and not run.window_counts_it(device, _time(first)):
            return False, "in silver, but its gold window does not count it"
        return ok, where + (", counted in its gold window" if where.startswith("silver") else "")
    if kind == "spike":
        rules = run.alerts.loc[run.alerts["event_id"] == eid, "rule"]
        return (True, f"alert {rules.iloc[0]}") if len(rules) else (False, "no alert on the reading")
    if kind == "stuck":
        ids = {str(e["event_id"]) for e in entries}
        hit = run.alerts[(run.alerts["rule"] == "stuck") & run.alerts["event_id"].isin(ids)]
        if len(hit):
            return True, f"stuck alert on reading {hit['event_id'].iloc[0]}"
        need = run.config.alerts.stuck_readings
        return False, f"no stuck alert in {len(ids)} frozen readings ([alerts] stuck_readings = {need})"
    if kind == "dropout":
        ids = {str(e["event_id"]) for e in entries}
        seen = ids & (set(run.bronze["event_id"].dropna()) | set(run.silver["event_id"]))
        return (False, f"{len(seen)} readings present") if seen else (True, "absent from bronze and silver")
    # battery_decline
    rules = [b.name for b in run.config.alerts.bounds if b.field == "battery"]
    if not rules:
        return False, "no [[alerts.bounds]] rule on the battery field"
    hit = run.alerts[
        run.alerts["rule"].isin(rules)
        & (run.alerts[key] == device)
        & (run.alerts["event_time"] >= pd.Timestamp(_time(first)))
    ]
    if len(hit):
        return True, f"alert {hit['rule'].iloc[0]} at {time_text(hit['event_time'].min().to_pydatetime())}"
    return False, f"no {'/'.join(rules)} alert for {device} after the decline began"


@dataclass
class FalseAlarm:
    """An alert no injected fault explains."""

    alert_id: str
    rule: str
    device_id: str
    event_time: str
    detail: str


def false_alarms(run: RunTables, ledger: list[dict[str, Any]]) -> list[FalseAlarm]:
    """The alerts the ledger explains by no injected fault, in alert-time order."""
    rules = run.config.alerts
    faulty = {str(e["event_id"]) for e in ledger if e["kind"] in ("spike", "stuck")}
    declines = {str(e["device_id"]): _time(e) for e in ledger if e["kind"] == "battery_decline"}
    dropouts: dict[str, list[datetime]] = defaultdict(list)
    for e in ledger:
        if e["kind"] == "dropout":
            dropouts[str(e["device_id"])].append(_time(e))
    battery = {b.name for b in rules.bounds if b.field == "battery"}
    silence = pd.Timedelta(minutes=rules.silent_minutes)
    found: list[FalseAlarm] = []
    if run.alerts.empty:
        return found
    for alert in run.alerts.sort_values(["event_time", "alert_id"]).itertuples():
        device, at, rule = str(getattr(alert, rules.key)), pd.Timestamp(alert.event_time), str(alert.rule)
        if pd.isna(alert.event_id):
            explained = any(at < t <= at + silence for t in dropouts[device])
        elif rule in battery:
            explained = device in declines and declines[device] <= at
        else:
            explained = str(alert.event_id) in faulty
        if not explained:
            found.append(
                FalseAlarm(
                    str(alert.alert_id), rule, device, time_text(at.to_pydatetime()), str(alert.detail)
                )
            )
    return found


def score(run: RunTables, ledger: list[dict[str, Any]]) -> list[ClassScore]:
    """Every class of CLASSES, in that order, with its missed faults."""
    groups: dict[str, dict[tuple[str, ...], list[dict[str, Any]]]] = defaultdict(dict)
    for entry in ledger:
        kind = str(entry["kind"])
        unit = (
            (str(entry["device_id"]), str(entry["episode"]))
            if kind in EPISODES
            else (str(entry["event_id"]), str(len(groups[kind])))
        )
        groups[kind].setdefault(unit, []).append(entry)
    scores = []
    for kind in CLASSES:
        result = ClassScore(kind, "episode" if kind in EPISODES else "send")
        for entries in groups.get(kind, {}).values():
            caught, where = _judge(run, kind, entries)
            result.injected += 1
            if caught:
                result.caught += 1
            else:
                first = entries[0]
                result.missed.append(
                    Verdict(
                        kind,
                        [str(e["event_id"]) for e in entries],
                        str(first["device_id"]),
                        str(first["event_time"]),
                        caught,
                        where,
                    )
                )
        scores.append(result)
    return scores


def print_scores(scores: Sequence[ClassScore], alarms: Sequence[FalseAlarm], out: Any = sys.stdout) -> None:
    print(f"{'class':<16} {'unit':<8} {'injected':>8} {'caught':>7} {'missed':>7}", file=out)
    for s in scores:
        print(f"{s.kind:<16} {s.unit:<8} {s.injected:>8} {s.caught:>7} {len(s.missed):>7}", file=out)
    missed = [v for s in scores for v in s.missed]
    for v in missed:
        print(
            f"missed {v.kind}: {v.device_id} at {v.event_time}: {v.where}; event ids {' '.join(v.event_ids)}",
            file=out,
        )
    total = sum(s.injected for s in scores)
    print(
        f"{total - len(missed)} of {total} caught" + ("" if missed else ": every class caught = injected"),
        file=out,
    )
    for a in alarms:
        print(f"false alarm {a.rule}: {a.device_id} at {a.event_time}: {a.detail}", file=out)
    print(f"{len(alarms)} false alarm(s): alerts no injected fault explains", file=out)


def run_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The flags scorecard and trace share: where the run's tables and checkpoints are, --json."""
    parser = job_parser(prog, doc)
    parser.add_argument("--lake", type=Path, help="folder of the pipeline's tables (default: [paths] lake)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="folder of the pipeline's checkpoints, as `arus pipeline --checkpoint` (default: under [paths])",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    return parser


def open_run(prog: str, args: argparse.Namespace) -> tuple[RunTables, Path] | None:
    """The run the flags name and its checkpoints folder; None once `say` told why there is none."""
    config = load_config_or_say(prog, args.config)
    if config is None:
        return None
    lake = args.lake or config.resolve(config.paths.lake)
    checkpoints = args.checkpoint or config.resolve(config.paths.checkpoints) / "pipeline"
    try:
        return read_run(config, lake, checkpoints), checkpoints
    except (OSError, ValueError, RunMissing) as exc:
        say(prog, str(exc))
        return None


def main(argv: list[str] | None = None) -> int:
    parser = run_parser("arus scorecard", __doc__ or "")
    parser.add_argument("--ledger", type=Path, required=True, help="the simulator's ledger (JSONL)")
    args = parser.parse_args(argv)
    try:
        ledger = read_ledger(args.ledger)
    except (OSError, ValueError) as exc:
        say("scorecard", f"cannot read the ledger: {exc}")
        return USAGE
    opened = open_run("scorecard", args)
    if opened is None:
        return USAGE
    run = opened[0]
    scores = score(run, ledger)
    alarms = false_alarms(run, ledger)
    ok = all(not s.missed for s in scores)
    if args.json:
        body = {
            "ledger": str(args.ledger),
            "lake": str(args.lake or run.config.resolve(run.config.paths.lake)),
            "ok": ok,
            "classes": [asdict(s) for s in scores],
            "false_alarms": [asdict(a) for a in alarms],
        }
        print(json.dumps(body, indent=2))
    else:
        print_scores(scores, alarms)
    return CAUGHT if ok else MISSED


if __name__ == "__main__":
    sys.exit(main())
