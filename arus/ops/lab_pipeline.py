"""`arus check lab4`: the multi-topic pipeline's topics and Delta tables exist and agree.

What agrees, each from the topics and tables themselves (no Spark: delta-rs and pandas):

    bronze rows          = the raw topic's records
    silver event ids     = the ids of the bronze records that are neither dead letters nor late
    bronze               = silver + dead letters + late + duplicates (repeated ids)
    each gold window     = the silver rows in it, for every window the aggregate stage has closed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from arus.config import Config
from arus.grammar import duration_us, window_us
from arus.io.checkpoints import is_checkpoint, read_query_status
from arus.io.lake import read_table
from arus.ops.lab_items import Item, judged, missing, passed, plural
from arus.ops.topics import summaries

# Tables a stage creates with its first row, which a good run may never have: the stage that writes each.
WHEN_ANY = {"deadletter": "bronze", "late": "clean", "alerts": "alerts"}
RUN = "arus pipeline --available-now (with the same --lake and --*-topic flags as this check)"


def topic_names(config: Config, args: argparse.Namespace) -> dict[str, str]:
    """The pipeline's topics as `arus pipeline` names them: its flags, else the config."""
    stream, pipeline = config.stream, config.pipeline
    return {
        "raw": args.raw_topic or stream.topic,
        "devices": args.devices_topic or stream.devices_topic,
        "clean": args.clean_topic or pipeline.clean_topic,
        "deadletter": args.deadletter_topic or stream.deadletter_topic,
        "late": args.late_topic or stream.late_topic,
        "aggregates": args.aggregates_topic or config.aggregate.output_topic,
        "alerts": args.alerts_topic or config.alerts.topic,
    }


def table_names(config: Config) -> dict[str, str]:
    batch, stream = config.batch, config.stream
    return {
        "bronze": batch.bronze_table,
        "silver": batch.silver_table,
        "deadletter": stream.deadletter_table,
        "late": stream.late_table,
        "gold": config.aggregate.table,
        "alerts": batch.alerts_table,
    }


def event_ids(values: pd.Series, id_field: str) -> pd.Series:
    """The id field of each raw value (None where the value is not a JSON object with one)."""

    def one(value: bytes | None) -> object:
        try:
            parsed = json.loads(value or b"")
        except ValueError:
            return None
        return parsed.get(id_field) if isinstance(parsed, dict) else None

    return values.map(one)


def accounting(config: Config, raw: str, tables: dict[str, pd.DataFrame]) -> Item:
    """Every bronze record is in silver, a dead letter, late, or a repeat of an id already counted."""
    name = "bronze = silver + dead letters + late + duplicates"
    bronze, silver = tables["bronze"], tables["silver"]
    place = ["partition", "offset"]
    dead = tables["deadletter"][place]
    late = tables["late"].loc[tables["late"]["topic"] == raw, place]
    out = pd.concat([dead, late]).drop_duplicates()
    kept = bronze.merge(out, on=place, how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"]
    ids = event_ids(kept["value"], config.stream.id_field)
    expected, found = set(ids.dropna()), set(silver[config.stream.id_field])
    duplicates = len(kept) - len(expected)
    seen = (
        f"{len(bronze):,} = {len(silver):,} silver + {plural(len(dead), 'dead letter')} + {len(late):,} late "
        f"+ {plural(duplicates, 'duplicate')}"
    )
    if expected == found and len(silver) == len(found):
        return passed(name, seen)
    lost, extra = len(expected - found), len(found - expected)
    return missing(
        name,
        f"{seen}; {lost:,} ids of bronze are not in silver, {extra:,} silver ids not in bronze, "
        f"{len(silver) - len(found):,} repeated in silver",
        f"run the pipeline to the end of its input ({RUN}); if it still differs, a stage loses or "
        "repeats records: `arus lag --checkpoint` shows where each stage stands",
    )


def closed_windows(config: Config, checkpoint: Path, gold: pd.DataFrame, silver: pd.DataFrame) -> Item:
    """Each window the aggregate stage closed holds the silver rows in it, as many as gold counts."""
    name = "gold counts = silver rows in each closed window"
    keys = list(config.aggregate.keys)
    size = pd.Timedelta(microseconds=window_us(config.aggregate.window))
    time = pd.to_datetime(silver[config.stream.event_time_field], utc=True)
    oracle = silver.assign(window_start=time.dt.floor(size)).groupby([*keys, "window_start"]).size()
    if is_checkpoint(checkpoint) and read_query_status(checkpoint).watermark_ms:
        watermark = pd.Timestamp(read_query_status(checkpoint).watermark_ms, unit="ms", tz="UTC")
    else:
        # No watermark recorded: the stream's own rule, its newest event minus the allowed delay.
        watermark = time.max() - pd.Timedelta(microseconds=duration_us(config.stream.watermark))
    starts = oracle.index.get_level_values("window_start")
    oracle = oracle[starts + size <= watermark]
    counted = gold.assign(window_start=pd.to_datetime(gold["window_start"], utc=True))
    counted = counted.set_index([*keys, "window_start"])["count"]
    both = pd.concat([oracle.rename("silver"), counted.rename("gold")], axis=1, join="outer")
    both = both[both.index.get_level_values("window_start") + size <= watermark]
    wrong = both[both["silver"].fillna(0) != both["gold"].fillna(0)]
    seen = f"{len(both):,} closed windows (watermark {watermark:%Y-%m-%d %H:%M:%S}), {len(wrong):,} differ"
    if len(both) and wrong.empty:
        return passed(name, seen)
    if not wrong.empty:
        seen += f"; e.g. {wrong.index[0]}: silver {wrong.iloc[0, 0]}, gold {wrong.iloc[0, 1]}"
    return missing(name, seen, f"run the aggregate stage to the end of the clean topic ({RUN})")


def stage_committed(checkpoints: Path, stage: str) -> bool:
    path = checkpoints / stage
    return is_checkpoint(path) and read_query_status(path).committed is not None


def lab4(config: Config, args: argparse.Namespace) -> list[Item]:
    """The pipeline's topics and tables, and whether they agree."""
    topics = topic_names(config, args)
    counts = {t.name: t.messages for t in summaries(config)}
    items = [
        passed(f"topic {topic} ({role})", plural(counts[topic], "record"))
        if topic in counts
        else missing(f"topic {topic} ({role})", "no such topic", f"`arus broker up` creates it; {RUN}")
        for role, topic in topics.items()
    ]
    lake = Path(args.lake) if args.lake else config.resolve(config.paths.lake)
    default = config.resolve(config.paths.checkpoints) / "pipeline"
    checkpoints = Path(args.checkpoint) if args.checkpoint else default
    tables: dict[str, pd.DataFrame] = {}
    for role, table in table_names(config).items():
        df = read_table(lake / table)
        name = f"table {table} ({role})"
        if df is not None:
            tables[role] = df
            items.append(passed(name, plural(len(df), "row")))
        elif role in WHEN_ANY and stage_committed(checkpoints, WHEN_ANY[role]):
            tables[role] = pd.DataFrame(columns=["topic", "partition", "offset"])
            items.append(passed(name, f"none yet: the {WHEN_ANY[role]} stage ran and wrote no row"))
        else:
            items.append(missing(name, f"no Delta table at {lake / table}", RUN))
    agreements = [
        (f"bronze rows = {topics['raw']} records", ["bronze"]),
        ("bronze = silver + dead letters + late + duplicates", ["bronze", "silver", "deadletter", "late"]),
        ("gold counts = silver rows in each closed window", ["silver", "gold"]),
    ]
    for name, needs in agreements:
        absent = [table_names(config)[role] for role in needs if role not in tables]
        if absent or topics["raw"] not in counts:
            why = f"table {', '.join(absent)} missing" if absent else f"topic {topics['raw']} missing"
            items.append(missing(name, f"not checked: {why}", RUN))
        elif needs == ["bronze"]:
            records, rows = counts[topics["raw"]], len(tables["bronze"])
            seen = f"{plural(rows, 'row')}, {plural(records, 'record')}"
            items.append(judged(name, rows == records, seen, f"run it to the end of the raw topic: {RUN}"))
        elif "late" in needs:
            items.append(accounting(config, topics["raw"], tables))
        else:
            items.append(closed_windows(config, checkpoints / "aggregate", tables["gold"], tables["silver"]))
    return items
