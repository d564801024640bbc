"""Bad input is contained: every class of bad record is dead-lettered with its reason or accepted
as it should be, valid + dead-lettered = input, and a flood of bad records trips the breaker.

The main job runs for real (Kafka -> Spark -> Delta and Kafka) on a private broker; the expected
outcome of every record is written down here, independently of the code under test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import aggregate
from faultkit import MainJob, json_record, produce, read_delta, read_topic, reading, write_config
from support import job_args

from arus.sources.send import Record

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MAX_BYTES = 2048


def raw(topic: str, value: bytes | None, key: str = "bad") -> Record:
    return Record(topic, key, value)  # type: ignore[arg-type]


def bad_input(topic: str) -> tuple[list[Record], list[dict[str, object]], dict[str, tuple[int, list[str]]]]:
    """(records in send order, the valid events among them, per class: (records sent, dead reasons))."""
    valid = [reading(i) for i in range(40)]
    extra = [reading(i, extra={"nested": [1, 2]}, colour="red") for i in range(40, 44)]
    # Producer v2 adds an optional field (accepted); v3 changes types (dead-lettered).
    v2 = [reading(i, firmware="2.1") for i in range(44, 48)]
    v3 = [reading(48, value={"v": 1.5}), reading(49, seq="twelve")]
    j = json.dumps
    classes: dict[str, tuple[list[Record], list[str]]] = {
        "malformed JSON": (
            [raw(topic, b'{"event_id": "m1", "device_id": "dev-0",'), raw(topic, b"not json at all")],
            ["not a JSON object"] * 2,
        ),
        "wrong types": (
            [
                raw(topic, j(reading(900, value="hot")).encode()),
                raw(topic, j(reading(901, event_time="yesterday")).encode()),
            ],
            [
                "wrong type for field value: expected double",
                "wrong type for field event_time: expected timestamp",
            ],
        ),
        "missing required fields": (
            [raw(topic, j({k: v for k, v in reading(902).items() if k != "device_id"}).encode())],
            ["missing required field device_id"],
        ),
        "unknown extra fields": ([json_record(topic, e) for e in extra], []),
        "nulls and empty values": (
            [
                raw(topic, j(reading(903, value=None)).encode()),
                raw(topic, j(reading(904, device_id="")).encode()),
                raw(topic, b""),
                raw(topic, None),
                raw(topic, b"null"),
            ],
            [
                "missing required field value",
                "empty required field device_id",
                "empty value",
                "empty value",
                "not a JSON object",
            ],
        ),
        "non-UTF-8 bytes": ([raw(topic, b'{"event_id": "\xff\xfe", "value": 1}')], ["not UTF-8"]),
        "oversize payload": (
            [raw(topic, j(reading(905, note="x" * 3 * MAX_BYTES)).encode())],
            [f"larger than {MAX_BYTES} bytes"],
        ),
        "event time far in the future or past": (
            [
                raw(topic, j(reading(906, event_time="2999-01-01T00:00:00Z")).encode()),
                raw(topic, j(reading(907, event_time="1970-01-01T00:00:00Z")).encode()),
            ],
            [
                "event time more than 60 s ahead of the Kafka timestamp",
                "event time before 2000-01-01T00:00:00+00:00",
            ],
        ),
        "duplicate event ids": ([json_record(topic, e) for e in valid[:5]], []),
        "schema change: new optional field": ([json_record(topic, e) for e in v2], []),
        "schema change: changed type": (
            [json_record(topic, e) for e in v3],
            ["wrong type for field value: expected double", "wrong type for field seq: expected bigint"],
        ),
    }
    records = [json_record(topic, e) for e in valid[:20]]
    for sent, _ in classes.values():
        records += sent
    records += [json_record(topic, e) for e in valid[20:]]
    events = valid + extra + v2
    return records, events, {name: (len(sent), reasons) for name, (sent, reasons) in classes.items()}


def oracle(events: list[dict[str, object]]) -> pd.DataFrame:
    df = pd.DataFrame(events).drop_duplicates("event_id")
    df["window_start"] = pd.to_datetime(df["event_time"], utc=True).dt.floor("1min")
    out = df.groupby(["device_id", "window_start"])["value"].agg(count="count", value_mean="mean")
    return out.reset_index().sort_values(["device_id", "window_start"]).reset_index(drop=True)


@pytest.mark.usefixtures("spark")  # the job, run in this process, takes the tests' session
def test_every_class_of_bad_input_is_contained(
    main_job: MainJob, tmp_path: Path, figures: dict[str, object]
) -> None:
    config, topics = main_job.config, main_job.topics
    records, events, classes = bad_input(topics["in"])
    produce(config.kafka, config, records)
    conf = write_config(tmp_path / "arus.toml", config, **{"stream.guards.max_record_bytes": str(MAX_BYTES)})

    assert aggregate.main(["--config", str(conf), *job_args(topics, tmp_path)]) == 0

    dead = read_delta(tmp_path / "deadletter")
    expected_reasons = [reason for _, reasons in classes.values() for reason in reasons]
    assert Counter(dead["error"]) == Counter(expected_reasons)
    gold = read_delta(tmp_path / "gold")
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    expected = oracle(events)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)

    repeated = classes["duplicate event ids"][0]
    assert int(got["count"].sum()) + repeated + len(dead) == len(records)  # valid + dead-lettered = input
    dead_topic = read_topic(config.kafka, topics["dead"])
    assert Counter(h["error"].decode() for _, _, h in dead_topic) == Counter(expected_reasons)

    figures.update(
        input_records=len(records),
        valid_events=len(events) + repeated,
        dead_lettered=len(dead),
        duplicates_dropped=repeated,
        classes={
            name: {"sent": sent, "dead_lettered": len(reasons), "accepted": sent - len(reasons)}
            for name, (sent, reasons) in classes.items()
        },
    )


@pytest.mark.usefixtures("spark")
def test_a_flood_of_bad_records_trips_the_circuit_breaker(
    main_job: MainJob, tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    config, topics = main_job.config, main_job.topics
    good = [json_record(topics["in"], reading(i)) for i in range(15)]
    broken = [raw(topics["in"], f"<html>502 Bad Gateway {i}</html>".encode()) for i in range(45)]
    produce(config.kafka, config, good[:5] + broken + good[5:])
    breaker = {"stream.guards.max_deadletter_ratio": "0.5", "stream.guards.breaker_min_records": "20"}
    args = job_args(topics, tmp_path)

    tight = write_config(tmp_path / "tight.toml", config, **breaker)
    assert aggregate.main(["--config", str(tight), *args]) == 3  # stopped by a guard (arus.runtime.job)
    err = capsys.readouterr().err
    assert "circuit breaker: 45 of 60 records in micro-batch 0 are bad (75%" in err
    assert "Traceback" not in err
    # No Delta table: the folder itself may hold the writer record the preflight left (arus.io.owners).
    assert not (tmp_path / "deadletter" / "_delta_log").exists()
    assert read_topic(config.kafka, topics["dead"], idle_ms=500) == []

    # Once someone has looked, a looser limit lets the same checkpoint go on: nothing was lost.
    loose = write_config(
        tmp_path / "loose.toml", config, **{**breaker, "stream.guards.max_deadletter_ratio": "1.0"}
    )
    assert aggregate.main(["--config", str(loose), *args]) == 0
    dead = read_delta(tmp_path / "deadletter")
    assert sorted(bytes(v) for v in dead["value"]) == sorted(r.value for r in broken)
    gold = read_delta(tmp_path / "gold")
    assert int(gold["count"].sum()) == len(good)

    figures.update(records=60, bad=45, breaker_tripped_at="75% > 50%", after_restart_dead_lettered=len(dead))
