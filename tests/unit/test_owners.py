"""The table-writer guard (arus.io.owners) on real Delta tables written by deltalake: no Spark, no Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from arus.io.owners import (
    OWNER_FILE,
    RUNNING_FILE,
    CheckpointBusy,
    TableClaimed,
    Writes,
    claim_tables,
    recorded_writer,
    running,
    writer,
)


def writes(root: Path, job: str, *tables: str) -> Writes:
    """Job `job`'s checkpoint folder under `root`; each table written by its query `q`."""
    checkpoint = root / "checkpoints" / job
    return Writes(
        writer(str(checkpoint), f"arus {job}"),
        {str(root / "lake" / t): (str(checkpoint / "q"),) for t in tables},
        "--lake <another folder>",
    )


def ran(w: Writes, table: str) -> None:
    """What a run leaves: its query planned a batch, and the table holds a row."""
    (Path(w.writer.checkpoint) / "q" / "offsets").mkdir(parents=True)
    (Path(w.writer.checkpoint) / "q" / "offsets" / "0").write_text("v1\n{}\n")
    write_deltalake(str(Path(next(iter(w.tables))).parent / table), pa.table({"x": [1]}), mode="append")


def test_the_first_writer_is_recorded_and_a_second_is_refused_naming_both(tmp_path: Path) -> None:
    first, second = writes(tmp_path, "aggregate", "gold", "late"), writes(tmp_path, "pipeline", "gold")
    claim_tables(first)
    gold = str(tmp_path / "lake" / "gold")
    assert recorded_writer(gold) == first.writer
    with pytest.raises(TableClaimed) as refused:
        claim_tables(second)
    message = str(refused.value)
    assert f"{gold} is written by arus aggregate (checkpoint {first.writer.checkpoint})" in message
    assert f"this is arus pipeline (checkpoint {second.writer.checkpoint})" in message
    assert "--lake <another folder>" in message and "--take-over gold" in message
    assert recorded_writer(gold) == first.writer


def test_the_same_writer_again_passes(tmp_path: Path) -> None:
    job = writes(tmp_path, "aggregate", "gold")
    claim_tables(job)
    ran(job, "gold")
    claim_tables(job)
    assert recorded_writer(tmp_path / "lake" / "gold") == job.writer


def test_take_over_records_the_new_writer(tmp_path: Path) -> None:
    first, second = (
        writes(tmp_path, "aggregate", "gold", "late"),
        writes(tmp_path, "pipeline", "gold", "late"),
    )
    claim_tables(first)
    with pytest.raises(TableClaimed) as refused:
        claim_tables(second, ["gold"])  # late is still the first job's
    assert "late is written by arus aggregate" in str(refused.value)
    assert "gold is written" not in str(refused.value)
    claim_tables(second, ["gold", str(tmp_path / "lake" / "late")])  # a name or a path
    assert recorded_writer(tmp_path / "lake" / "late") == second.writer
    claim_tables(second)


def test_take_over_of_a_table_the_job_does_not_write_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--take-over silver: not a table this job writes"):
        claim_tables(writes(tmp_path, "aggregate", "gold"), ["silver"])


def test_a_deleted_checkpoint_is_refused_while_its_table_holds_rows(tmp_path: Path) -> None:
    job = writes(tmp_path, "aggregate", "gold")
    claim_tables(job)
    ran(job, "gold")
    (Path(job.writer.checkpoint) / "q" / "offsets" / "0").unlink()
    with pytest.raises(TableClaimed, match="has none of its offsets \\(new or deleted\\)"):
        claim_tables(job)
    claim_tables(job, ["gold"])


def test_a_new_checkpoint_on_an_empty_table_or_a_table_of_rows_nobody_recorded(tmp_path: Path) -> None:
    job = writes(tmp_path, "aggregate", "gold")
    write_deltalake(str(tmp_path / "lake" / "gold"), pa.table({"x": pa.array([], pa.int64())}))
    claim_tables(job)  # empty: nothing to write twice
    (tmp_path / "lake" / "gold" / OWNER_FILE).unlink()
    write_deltalake(str(tmp_path / "lake" / "gold"), pa.table({"x": [1]}), mode="append")
    with pytest.raises(TableClaimed, match="holds rows of a writer it does not record"):
        claim_tables(job)


HOLD = """
import sys, time
from arus.io.owners import running
with running(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def holder(checkpoint: Path) -> subprocess.Popen[str]:
    """Another process holding `checkpoint` as a running job does, once it says so."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(checkpoint)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_job_on_a_held_checkpoint_is_refused_naming_the_holder(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "aggregate"
    proc = holder(checkpoint)
    try:
        with pytest.raises(CheckpointBusy) as refused, running(str(checkpoint)):
            pass
        assert f"checkpoint {checkpoint} is in use by a running job (pid {proc.pid})" in str(refused.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_the_checkpoint_free(tmp_path: Path) -> None:
    checkpoint = tmp_path / "aggregate"
    proc = holder(checkpoint)
    proc.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
    proc.wait()
    entered = []
    with running(str(checkpoint)):
        entered.append((checkpoint / RUNNING_FILE).read_text())
    assert entered == [f"pid {os.getpid()}\n"]


def test_the_checkpoint_is_free_again_after_the_job_and_held_within_it(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "aggregate")
    with running(checkpoint), pytest.raises(CheckpointBusy), running(checkpoint):
        pass
    with running(checkpoint):
        pass
