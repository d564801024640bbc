"""`arus lag` without a broker: a checkpoint's status read from Spark's layout, and the errors."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arus.io.checkpoints import read_query_status
from arus.ops import lag


def write_checkpoint(root: Path, ends: list[int], committed: int, watermark_ms: int) -> None:
    """A checkpoint as Spark lays it out: batch i read topic t's partition 0 up to ends[i]; the
    batches up to `committed` have commit files, the last one recording `watermark_ms`."""
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "sources" / "0").mkdir(parents=True)
    (root / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"t":{"0":0}}')
    for batch, end in enumerate(ends):
        (root / "offsets" / str(batch)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{{"t":{{"0":{end}}}}}\n')
    for batch in range(committed + 1):
        (root / "commits" / str(batch)).write_text(f'v1\n{{"nextBatchWatermarkMs":{watermark_ms}}}\n')


def test_the_next_batch_reads_from_the_last_commit_and_a_planned_batch_is_in_flight(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "q", ends=[10, 25, 40], committed=1, watermark_ms=1_772_366_400_000)
    os.utime(tmp_path / "q" / "commits" / "1", (1_772_366_460, 1_772_366_460))
    status = read_query_status(tmp_path / "q")
    assert status.next_offsets == {("t", 0): 25}
    assert (status.committed, status.in_flight, status.watermark_ms) == (1, 2, 1_772_366_400_000)
    assert status.committed_at == 1_772_366_460


def test_before_any_commit_the_query_reads_from_where_it_started(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "q", ends=[10], committed=-1, watermark_ms=0)
    status = read_query_status(tmp_path / "q")
    assert (status.next_offsets, status.committed, status.in_flight) == ({("t", 0): 0}, None, 0)


def test_checkpoints_are_found_below_a_folder(tmp_path: Path) -> None:
    for stage in ("pipeline/bronze", "pipeline/aggregate/aggregates", "aggregate/aggregates"):
        write_checkpoint(tmp_path / stage, ends=[1], committed=0, watermark_ms=0)
    (tmp_path / "empty").mkdir()
    found = [str(p.relative_to(tmp_path)) for p in lag.find_checkpoints(tmp_path)]
    assert found == ["aggregate/aggregates", "pipeline/aggregate/aggregates", "pipeline/bronze"]


def test_a_folder_that_is_not_a_checkpoint_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes").mkdir()
    assert lag.main(["--checkpoint", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'} is not a Spark streaming checkpoint" in err


def test_an_unreachable_broker_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens on port 1
    assert lag.main(["--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "lag: no Kafka broker answers at 127.0.0.1:1 (is it up? `make kafka-up`)"
    ]


def test_json_and_text_say_the_same(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "q", ends=[10, 25], committed=1, watermark_ms=1_772_366_400_000)
    status = read_query_status(tmp_path / "q")
    partitions = lag.partition_lags(status.next_offsets, {("t", 0): 32, ("t", 1): 5})
    report = lag.Report(
        at=datetime(2026, 3, 1, tzinfo=UTC),
        bootstrap_servers="b:9092",
        groups=(),
        queries=(lag.QueryLag("q", tmp_path / "q", status, partitions),),
    )
    [query] = json.loads(json.dumps(lag.as_json(report)))["queries"]
    assert query["lag"] == 7
    assert query["partitions"][1] == {"topic": "t", "partition": 1, "end": 5, "offset": None, "lag": None}
    assert query["watermark"] == "2026-03-01T12:00:00.000Z"
    text = lag.render(report)
    assert "last batch 1 committed" in text and "watermark 2026-03-01T12:00:00.000Z" in text
    assert "total lag 7" in text
