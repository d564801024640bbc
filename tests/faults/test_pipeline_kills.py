"""The multi-topic pipeline SIGKILLed after every write of every stage, restarted on its checkpoints.

Each stage runs as its own process (`arus pipeline --stages <stage>`) with ARUS_FAULT_KILL_AFTER set
to one kill point and the batch it kills; the next run, on the same checkpoints, replays that batch
and is killed at the next point. Micro-batches of PER_BATCH records make three batches, the late
events arriving in the last. After a recovery run every Delta table must equal an oracle computed
here from the records sent, each row once; every topic must hold every record, once where the
code promises it (the clean and alerts topics, write_kafka_once), otherwise with at most exact
repeats (at-least-once: same key, value and headers).
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import faultkit as kit
import pandas as pd
import pytest
from arus.jobs import pipeline
from support import gold_frame, gold_oracle

from arus.config import Config
from arus.runtime.guards import FAULT_ENV
from arus.sources.send import Record

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(2400)]

PER_BATCH = 40  # records per micro-batch: the 108 records sent make batches 0, 1 and 2
READINGS = 100  # 4 devices, one reading every 10 s each: 250 s of event time
MALFORMED = {5: b"{broken 0", 50: b"\xff\xfe", 90: b'{"event_id": "no-time"}'}  # one per batch
REPEATS = {52: 45, 95: 85}  # position in the topic -> the reading sent again there
LATE_AT = (85, 97, 105)  # batch 2: ten minutes behind a watermark already past START
ALERT_ABOVE = 28.0  # the config's first bound, on every kind: about one reading in five
# (stage, kill point, batch): run in this order, each on the checkpoints the previous run left.
# The main job's after-kafka (the same writer as the aggregate stage's) is in test_job_kills.
KILLS = [
    ("clean", "clean-after-delta", 1),  # silver appended, clean topic not yet published
    ("clean", "clean-after-kafka", 1),  # clean topic published, the batch not committed
    ("clean", "late-after-delta", 2),  # late events in Delta, not yet published
    ("alerts", "alerts-after-delta", 1),  # alerts inserted, not yet published
    ("alerts", "alerts-after-kafka", 1),  # alerts published, the batch not committed
    ("aggregate", "after-delta", 1),  # gold merged, aggregates not yet published
    ("bronze", "bronze-after-delta", 1),  # bronze appended, dead letters not yet written
    ("bronze", "deadletter-after-delta", 1),  # dead letters in Delta, not yet published
]
TOPICS = ("raw", "devices", "clean", "deadletter", "late", "aggregates", "alerts")


def sent(topic: str) -> tuple[list[Record], list[dict[str, object]], list[dict[str, object]]]:
    """The raw topic's records; the on-time readings (once each); the late ones."""
    on_time = [kit.reading(i) for i in range(READINGS)]
    behind = kit.START - timedelta(minutes=10)
    late = [
        kit.reading(k, event_id=f"late-{k}", event_time=f"{behind + timedelta(seconds=k):%Y-%m-%dT%H:%M:%SZ}")
        for k in range(len(LATE_AT))
    ]
    records = [kit.json_record(topic, e) for e in on_time]
    extra = {p: Record(topic, "bad", v) for p, v in MALFORMED.items()}
    extra |= {p: kit.json_record(topic, on_time[i]) for p, i in REPEATS.items()}
    extra |= {p: kit.json_record(topic, e) for p, e in zip(LATE_AT, late, strict=True)}
    for position in sorted(extra):
        records.insert(position, extra[position])
    return records, on_time, late


def repeats(records: list[tuple[bytes | None, bytes, dict]]) -> int:
    """How many records of a topic repeat an earlier one exactly (key, value and headers)."""
    counts = Counter((k, v, tuple(sorted(h.items()))) for k, v, h in records)
    return sum(n - 1 for n in counts.values())


def assert_at_least_once(records: list[tuple[bytes | None, bytes, dict]], expected: list[bytes]) -> int:
    """Every expected value present; any record beyond them an exact repeat. The repeats."""
    distinct = {(k, v, tuple(sorted(h.items()))) for k, v, h in records}
    assert sorted(v for _, v, _ in distinct) == sorted(expected)
    return repeats(records)


@pytest.mark.usefixtures("spark")  # the recovery run's session, warm already
def test_every_stage_killed_after_every_write_restarts_exactly_once(
    private_broker: Config, tmp_path: Path, isolated_env, figures: dict[str, object]
) -> None:
    config, kafka = private_broker, private_broker.kafka
    topics = dict(zip(TOPICS, kit.make_topics(kafka, *[(t, 1) for t in TOPICS]), strict=True))
    conf = kit.write_config(
        tmp_path / "arus.toml",
        config,
        **{"alerts.bounds.kind": '""', "alerts.bounds.limit": str(ALERT_ABOVE)},
    )
    lake = tmp_path / "lake"
    args = [
        "--config", str(conf),
        "--available-now",
        "--max-offsets-per-trigger", str(PER_BATCH),
        "--lake", str(lake),
        "--checkpoint", str(tmp_path / "checkpoints"),
        *[arg for name, topic in topics.items() for arg in (f"--{name}-topic", topic)],
    ]  # fmt: skip
    records, on_time, late = sent(topics["raw"])
    kit.produce(kafka, config, records)

    for stage, point, batch in KILLS:
        env = kit.clean_env(**{FAULT_ENV: f"{point}:{batch}"})
        crashed = kit.run_job_process(["--stages", stage, *args], env, job="jobs.pipeline")
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        assert f"fault injection: SIGKILL at {point}, batch {batch}" in crashed.stderr

    # Recovery: every stage in this process.
    isolated_env()
    assert pipeline.main(args) == 0

    bronze = kit.read_delta(lake / "bronze")
    assert sorted(bronze["offset"]) == list(range(len(records)))
    assert [bytes(v) for v in bronze.sort_values("offset")["value"]] == [r.value for r in records]

    dead = kit.read_delta(lake / "deadletter")
    assert sorted(bytes(v) for v in dead["value"]) == sorted(MALFORMED.values())
    dead_repeats = assert_at_least_once(kit.read_topic(kafka, topics["deadletter"]), list(MALFORMED.values()))

    # event_id, device_id, value, event_time: the readings once each, the late ones left out
    silver = kit.read_delta(lake / "silver").sort_values("event_id").reset_index(drop=True)
    expected = pd.DataFrame(on_time)
    assert list(silver["event_id"]) == list(expected["event_id"])
    assert list(silver["value"]) == list(expected["value"])
    assert list(pd.to_datetime(silver["event_time"], utc=True)) == list(
        pd.to_datetime(expected["event_time"], utc=True)
    )
    published = Counter(json.loads(v)["event_id"] for _, v, _ in kit.read_topic(kafka, topics["clean"]))
    assert published == Counter(expected["event_id"]), "the clean topic is published once"

    late_rows = kit.read_delta(lake / "late")
    assert sorted(late_rows["event_id"]) == [e["event_id"] for e in late]
    assert set(late_rows["stage"]) == {"clean"} and set(late_rows["batch_id"]) == {2}
    late_values = [json.dumps(e).encode() for e in late]
    late_repeats = assert_at_least_once(kit.read_topic(kafka, topics["late"]), late_values)

    gold_expected = gold_oracle(on_time)
    gold = kit.read_delta(lake / "gold_aggregates")
    assert not gold.duplicated(["device_id", "window_start"]).any()
    pd.testing.assert_frame_equal(
        gold_frame(gold, gold_expected), gold_expected, check_dtype=False, rtol=1e-9
    )
    # At-least-once, and a window is published again each batch that updates it: a consumer
    # keeping the latest record per key sees gold.
    aggregates = kit.read_topic(kafka, topics["aggregates"])
    latest = {k.decode(): json.loads(v)["count"] for k, v, _ in aggregates if k}
    assert latest == {
        f"{r.device_id}|{r.window_start:%Y-%m-%dT%H:%M:%SZ}": r.count for r in gold_expected.itertuples()
    }

    alerts_expected = sorted(f"temperature_high|{e['event_id']}" for e in on_time if e["value"] > ALERT_ABOVE)
    alerts = kit.read_delta(lake / "alerts")
    assert sorted(alerts["alert_id"]) == alerts_expected
    alert_records = kit.read_topic(kafka, topics["alerts"])
    alert_keys = Counter(k.decode() for k, _, _ in alert_records if k)
    assert alert_keys == Counter(alerts_expected), "the alerts topic is published once"

    figures.update(
        kill_points=[f"{point}:{batch}" for _, point, batch in KILLS],
        kills_survived=len(KILLS),
        records_sent=len(records),
        rows_compared={
            "bronze": len(bronze),
            "deadletter": len(dead),
            "silver": len(silver),
            "late": len(late_rows),
            "gold": len(gold),
            "alerts": len(alerts),
        },
        clean_topic_records=sum(published.values()),
        alerts_topic_records=len(alert_records),
        repeats_seen={
            "deadletter": dead_repeats,
            "late": late_repeats,
            "aggregates": repeats(aggregates),
            "clean": sum(n - 1 for n in published.values()),
            "alerts": sum(n - 1 for n in alert_keys.values()),
        },
        aggregates_topic_records=len(aggregates),
    )
