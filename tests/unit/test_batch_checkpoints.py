"""Reading a streaming checkpoint's offset and commit logs back (arus.io.checkpoints), on files laid
out as Spark writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arus.io.checkpoints import StreamBatch, query_id, read_stream_batch, read_stream_batches, resume_offsets


def write_checkpoint(root: Path, batches: dict[int, tuple[int, dict[str, int]]], committed: set[int]) -> Path:
    (root / "offsets").mkdir(parents=True)
    (root / "commits").mkdir()
    (root / "sources" / "0").mkdir(parents=True)
    (root / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"t":{"0":5,"1":0}}')
    for batch_id, (watermark, ends) in batches.items():
        metadata = {"batchWatermarkMs": watermark, "batchTimestampMs": 1, "conf": {}}
        (root / "offsets" / str(batch_id)).write_text(
            f"v1\n{json.dumps(metadata)}\n{json.dumps({'t': ends})}"
        )
        (root / "offsets" / f".{batch_id}.crc").write_bytes(b"\x00")
        if batch_id in committed:
            (root / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}')
    return root


def test_each_committed_batch_has_its_range_and_the_watermark_it_judged_lateness_by(tmp_path: Path) -> None:
    root = write_checkpoint(
        tmp_path,
        {
            0: (0, {"0": 9, "1": 4}),
            1: (1000, {"0": 9, "1": 4}),
            2: (1000, {"0": 12, "1": 6}),
            3: (5000, {"0": 15, "1": 6}),
        },
        committed={0, 1, 2},
    )
    assert read_stream_batches(root) == [
        StreamBatch(0, 0, 0, {("t", 0): 5, ("t", 1): 0}, {("t", 0): 9, ("t", 1): 4}),
        StreamBatch(1, 1000, 0, {("t", 0): 9, ("t", 1): 4}, {("t", 0): 9, ("t", 1): 4}),
        StreamBatch(2, 1000, 1000, {("t", 0): 9, ("t", 1): 4}, {("t", 0): 12, ("t", 1): 6}),
    ]  # batch 3 is planned but not committed: its records count as unread


def test_a_batch_whose_predecessor_log_was_purged_has_no_known_start_or_late_watermark(
    tmp_path: Path,
) -> None:
    root = write_checkpoint(tmp_path, {7: (3000, {"0": 40}), 8: (4000, {"0": 44})}, committed={7, 8})
    assert read_stream_batches(root) == [
        StreamBatch(7, 3000, None, {}, {("t", 0): 40}),
        StreamBatch(8, 4000, 3000, {("t", 0): 40}, {("t", 0): 44}),
    ]


def test_a_folder_without_an_offset_log_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a streaming query checkpoint"):
        read_stream_batches(tmp_path)


def test_one_batch_is_read_committed_or_not_as_foreach_batch_sees_it(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path, {0: (0, {"0": 9}), 1: (1000, {"0": 12})}, committed={0})
    assert read_stream_batch(root, 0) == StreamBatch(0, 0, 0, {("t", 0): 5, ("t", 1): 0}, {("t", 0): 9})
    second = read_stream_batch(f"file:{root}", 1)
    assert second == StreamBatch(1, 1000, 0, {("t", 0): 9}, {("t", 0): 12})
    assert not second.empty and StreamBatch(2, 1000, 1000, {("t", 0): 12}, {("t", 0): 12}).empty


def test_one_batch_whose_predecessor_log_was_purged_is_refused(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path, {7: (3000, {"0": 40}), 8: (4000, {"0": 44})}, committed={7, 8})
    assert read_stream_batch(root, 8).start == {("t", 0): 40}
    with pytest.raises(FileNotFoundError, match="cannot tell what batch 7 read"):
        read_stream_batch(root, 7)


def test_a_restart_resumes_after_the_last_committed_batch(tmp_path: Path) -> None:
    root = write_checkpoint(
        tmp_path, {0: (0, {"0": 10}), 1: (0, {"0": 25}), 2: (0, {"0": 40})}, committed={0, 1}
    )  # batch 2 was planned but never committed: it will be replayed
    assert resume_offsets(root) == {("t", 0): 25}
    assert resume_offsets(tmp_path / "nothing-yet") == {}


def test_sources_without_kafka_offsets_yet_are_skipped(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path, {0: (0, {"0": 3})}, committed={0})
    (root / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n-\n{"t":{"0":3}}')
    assert resume_offsets(root) == {("t", 0): 3}


def test_the_query_id_is_the_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "metadata").write_text('{"id":"5f1c"}')
    assert query_id(f"file://{tmp_path}") == "5f1c"
