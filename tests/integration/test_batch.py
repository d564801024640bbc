"""Backfill and reconciliation against a real streaming run: real broker, real Spark, real Delta.

One streaming run of the main job (no late data) feeds every test here; bronze is the topic's own
Kafka rows landed in Delta. Each backfill writes tables of its own under tmp paths.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arus.jobs import backfill, reconcile
from batch_support import (
    BAD_RECORDS,
    StreamRun,
    create_topic,
    delta,
    encode,
    events,
    land_bronze,
    send,
    send_events,
    stream_run,
    version,
)
from chispa import assert_approx_df_equality, assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from arus.batch.sources import csv_rows_as_values
from arus.config import Config
from arus.core.transforms import schema_from_ddl
from arus.io.delta import Span, data_files_on_disk, upsert_changes

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Streamed:
    run: StreamRun
    bronze: Path
    events: list[dict[str, object]]
    root: Path


@pytest.fixture(scope="module")
def streamed(
    spark: SparkSession, config: Config, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Streamed]:
    """4 devices, 5 minutes of readings every 15 s, a few sent twice, two malformed records."""
    sent = events(devices=4, start=START, count=20, interval_s=15.0, seed=11)
    root = tmp_path_factory.mktemp("batch")
    topic = create_topic(config, "batch", partitions=2)
    send_events(config, topic, sent + sent[:3])
    send(config, topic, [("bad", value) for value in BAD_RECORDS])
    run = stream_run(config, topic, root)
    bronze = root / "bronze"
    land_bronze(spark, config, topic, bronze)
    yield Streamed(run, bronze, sent, root)


def expected_silver(spark: SparkSession, config: Config, sent: list[dict[str, object]]):
    """The oracle: every distinct event sent, typed by the configured schema."""
    ddl = schema_from_ddl(config.schema(config.stream.schema))
    schema = T.StructType([T.StructField(f.name, f.dataType, True) for f in ddl.fields])
    unique = {e["event_id"]: e for e in sent}.values()
    rows = [
        {**e, "event_time": datetime.fromisoformat(str(e["event_time"]).replace("Z", "+00:00"))}
        for e in unique
    ]
    return spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows], schema)


def test_backfill_from_bronze_reproduces_the_streaming_gold_table(
    spark: SparkSession, config: Config, streamed: Streamed, tmp_path: Path
) -> None:
    gold, silver = tmp_path / "gold", tmp_path / "silver"
    code = backfill.main(
        ["--bronze-table", str(streamed.bronze), "--gold-table", str(gold), "--silver-table", str(silver)]
    )
    assert code == 0

    stream_gold = delta(spark, streamed.run.gold)
    # Same windows, keys and counts; sums may differ in the last bit (the stream adds per micro-batch).
    assert_approx_df_equality(
        delta(spark, gold), stream_gold, 1e-9, ignore_nullable=True, ignore_row_order=True
    )
    assert stream_gold.count() == 4 * 5
    assert_df_equality(
        delta(spark, silver),
        expected_silver(spark, config, streamed.events),
        ignore_nullable=True,
        ignore_row_order=True,
    )

    report = tmp_path / "report.json"
    code = reconcile.main(
        [
            "--bronze-table", str(streamed.bronze),
            "--gold-table", str(streamed.run.gold),
            "--checkpoint", str(streamed.run.checkpoint),
            "--late-table", str(streamed.root / "lake" / "late"),
            "--json", str(report),
        ]
    )  # fmt: skip
    counts = json.loads(report.read_text())["counts"]
    assert code == 0
    assert counts == {
        "windows_compared": 20,
        "missing": 0,
        "extra": 0,
        "mismatch": 0,
        "explained_late": 0,
        "explained_unread": 0,
        "unexplained": 0,
        "late_events": 0,
        "unread_events": 0,
    }


def test_rerunning_a_backfill_range_leaves_the_table_unchanged(
    spark: SparkSession, streamed: Streamed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bounded Kafka range: both partitions from their start to the current end (exclusive).
    ends = delta(spark, streamed.bronze).groupBy("partition").agg(F.max("offset").alias("last")).collect()
    topic = streamed.run.topic
    starting = json.dumps({topic: {str(r["partition"]): 0 for r in ends}})
    ending = json.dumps({topic: {str(r["partition"]): r["last"] + 1 for r in ends}})
    gold = tmp_path / "gold"
    args = ["--source", "kafka", "--topic", topic, "--starting-offsets", starting, "--ending-offsets", ending]
    args += ["--gold-table", str(gold), "--no-silver"]
    assert backfill.main(args) == 0
    first = spark.createDataFrame(delta(spark, gold).collect(), delta(spark, gold).schema)
    v, files = version(spark, gold), data_files_on_disk(str(gold))
    capsys.readouterr()

    assert backfill.main(args) == 0
    assert "gold -> " in (out := capsys.readouterr().out) and "unchanged" in out
    assert (version(spark, gold), data_files_on_disk(str(gold))) == (v, files)
    assert_df_equality(delta(spark, gold), first, ignore_row_order=True)


def test_backfill_from_json_lines_and_csv_files_matches_the_stream(
    spark: SparkSession, streamed: Streamed, tmp_path: Path
) -> None:
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join([encode(e) for e in streamed.events] + [b"{not json"]) + b"\n")
    table = tmp_path / "events.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(streamed.events[0]))
        writer.writeheader()
        writer.writerows(streamed.events)
        writer.writerow({**streamed.events[0], "event_id": "bad-csv", "value": "hot"})

    for path in (jsonl, table):
        gold = tmp_path / f"gold_{path.suffix[1:]}"
        args = ["--source", "file", "--path", str(path), "--gold-table", str(gold), "--no-silver"]
        args += ["--deadletter-table", str(tmp_path / f"dead_{path.suffix[1:]}")]
        assert backfill.main(args) == 0
        assert_approx_df_equality(
            delta(spark, gold),
            delta(spark, streamed.run.gold),
            1e-9,
            ignore_nullable=True,
            ignore_row_order=True,
        )
    dead_json = [r["error"] for r in delta(spark, tmp_path / "dead_jsonl").collect()]
    dead_csv = [r["error"] for r in delta(spark, tmp_path / "dead_csv").collect()]
    assert dead_json == ["not a JSON object"]
    assert dead_csv == ["wrong type for field value: expected double"]


def test_csv_rows_become_json_records_that_keep_bad_values(spark: SparkSession) -> None:
    schema = schema_from_ddl("id STRING NOT NULL, value DOUBLE, ok BOOLEAN, note STRING")
    rows = spark.createDataFrame(
        [("a", "1.5", "TRUE", 'say "hi"'), ("b", "hot", "", None), ("c", "", "yes", "")],
        "id STRING, value STRING, ok STRING, note STRING",
    )
    got = csv_rows_as_values(rows, schema).select(F.col("value").cast("string").alias("value"))
    expected = spark.createDataFrame(
        [
            ('{"id":"a","value":1.5,"ok":true,"note":"say \\"hi\\""}',),
            ('{"id":"b","value":"hot"}',),
            ('{"id":"c","ok":"yes"}',),
        ],
        "value STRING",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_upsert_changes_writes_only_differences_and_replaces_its_span(
    spark: SparkSession, tmp_path: Path
) -> None:
    schema = "k STRING, t TIMESTAMP, v DOUBLE"
    t = [datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in range(5)]
    path = str(tmp_path / "table")
    upsert_changes(
        spark.createDataFrame(
            [("a", t[0], 1.0), ("b", t[1], 2.0), ("c", t[2], 3.0), ("z", t[4], 9.0)], schema
        ),
        path,
        ["k"],
    )
    v0 = version(spark, path)

    # b changes, d is new, c is gone from the source: inside the span [t0, t4) it is deleted; z is outside.
    source = spark.createDataFrame([("a", t[0], 1.0), ("b", t[1], 2.5), ("d", t[3], 4.0)], schema)
    span = Span("t", F.lit(t[0]), F.lit(t[4]))
    result = upsert_changes(source, path, ["k"], span)
    assert (result.upserted, result.deleted, result.version) == (2, 1, v0 + 1)
    expected = spark.createDataFrame(
        [("a", t[0], 1.0), ("b", t[1], 2.5), ("d", t[3], 4.0), ("z", t[4], 9.0)], schema
    )
    assert_df_equality(delta(spark, path), expected, ignore_row_order=True, ignore_nullable=True)

    again = upsert_changes(source, path, ["k"], span)
    assert (again.upserted, again.deleted, again.version) == (0, 0, None)
    # A recompute's float sums may differ in the last bits (shuffle order): not a change either.
    nudged = upsert_changes(source.withColumn("v", F.col("v") * (1 + 1e-13)), path, ["k"], span)
    assert nudged.version is None
    assert version(spark, path) == v0 + 1
    operations = [r["operation"] for r in DeltaTable.forPath(spark, path).history().collect()]
    assert operations == ["MERGE", "WRITE"]
