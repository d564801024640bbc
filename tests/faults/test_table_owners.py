"""No doubled tables: one streaming job writes a table (arus.io.owners), on a real broker and Delta.

The main job runs once with the shipped config's tables and checkpoint (under the test's folder);
then, on that lake, the pipeline with its defaults, the main job with another checkpoint and the
main job with its checkpoint deleted are each refused before Spark starts (exit 3, the message
naming the table, the recorded writer and this one), and no table gets a new version. So is the
main job on its own checkpoint while a live run of it holds that checkpoint. With --take-over the
second checkpoint's job runs, and gold is row for row what it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import aggregate, pipeline
from deltalake import DeltaTable
from faultkit import ARUS_ENV, json_record, make_topics, produce, read_delta, reading, write_config

from arus.config import Config, load_config
from arus.io.lake import is_table
from arus.io.owners import RUNNING_FILE, recorded_writer, writer
from arus.runtime.job import GUARD_STOPPED
from arus.sources.send import Record

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Lake:
    conf: Path
    tables: dict[str, Path]  # the main job's, by their [aggregate] / [stream] names
    checkpoint: Path  # the main job's default: [paths] checkpoints/aggregate
    topics: dict[str, str]

    def job_args(self, *extra: str) -> list[str]:
        t = self.topics
        topics = ["--input-topic", t["in"], "--output-topic", t["out"], "--deadletter-topic", t["dead"]]
        return ["--config", str(self.conf), *topics, *extra]

    def versions(self) -> dict[str, int | None]:
        """Each table's version; None for one not written yet (late: nothing was late)."""
        return {
            name: DeltaTable(str(path)).version() if is_table(path) else None
            for name, path in self.tables.items()
        }

    def rows(self, name: str) -> pd.DataFrame:
        frame = read_delta(self.tables[name])
        return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def checkpoint(path: Path) -> str:
    """A checkpoint folder as the guard names it."""
    return writer(str(path), "").checkpoint


@pytest.fixture(scope="module")
def lake(private_broker: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """The main job run once on the shipped config: its gold, dead-letter and late tables written."""
    folder = tmp_path_factory.mktemp("owners")
    conf = write_config(folder / "arus.toml", private_broker)
    config = load_config(conf, env={})
    names = make_topics(private_broker.kafka, ("in", 1), ("out", 1), ("dead", 1))
    topics = dict(zip(["in", "out", "dead"], names, strict=True))
    events = [reading(i) for i in range(8)]
    malformed = Record(topics["in"], "dev-0", b"{not json")
    produce(private_broker.kafka, config, [json_record(topics["in"], e) for e in events] + [malformed])
    lake_dir = config.resolve(config.paths.lake)
    tables = {
        name: lake_dir / name
        for name in (config.aggregate.table, config.stream.deadletter_table, config.stream.late_table)
    }
    found = Lake(conf, tables, config.resolve(config.paths.checkpoints) / "aggregate", topics)
    with pytest.MonkeyPatch.context() as env:
        for var in ARUS_ENV:
            env.delenv(var, raising=False)
        assert aggregate.main(found.job_args()) == 0
        yield found


def test_the_main_job_is_recorded_as_the_writer_of_its_tables(lake: Lake) -> None:
    owner = writer(str(lake.checkpoint), "arus aggregate")
    assert {name: recorded_writer(path) for name, path in lake.tables.items()} == dict.fromkeys(
        lake.tables, owner
    )
    # An append table with a row, which a deleted checkpoint would write again; nothing was late.
    assert (len(lake.rows("deadletter")), lake.versions()["late"]) == (1, None)


def refused(
    lake: Lake, main: Callable[[list[str]], int], args: list[str], figures: dict[str, object]
) -> None:
    """`main(args)` exits 3 and no table has a new version; how fast, in the suite's figures."""
    before = lake.versions()
    started = time.monotonic()
    code = main(args)
    figures.update(exit=code, refused_in_s=round(time.monotonic() - started, 2))
    figures["new_versions"] = sum(lake.versions()[t] != v for t, v in before.items())
    assert (code, figures["new_versions"]) == (GUARD_STOPPED, 0)


def test_the_pipeline_on_the_same_lake_is_refused_and_writes_nothing(
    lake: Lake, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    """`make aggregate` then `make demo`: the pipeline's defaults are the main job's tables."""
    t = lake.topics
    args = ["--config", str(lake.conf), "--available-now", "--raw-topic", t["in"]]
    args += ["--deadletter-topic", t["dead"], "--aggregates-topic", t["out"]]
    refused(lake, pipeline.main, args, figures)
    err = capsys.readouterr().err
    job, other = checkpoint(lake.checkpoint), checkpoint(lake.checkpoint.parent / "pipeline")
    for path in lake.tables.values():
        assert f"pipeline: {path} is written by arus aggregate (checkpoint {job}); " in err
    assert f"this is arus pipeline (checkpoint {other})" in err
    assert "--lake <another folder>" in err and "--take-over gold_aggregates" in err
    assert not (lake.conf.parent / "lake" / "bronze").exists()  # refused as a whole: bronze too


def test_the_main_job_with_another_checkpoint_is_refused(
    lake: Lake, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    other = lake.conf.parent / "other-checkpoint"
    refused(lake, aggregate.main, lake.job_args("--checkpoint", str(other)), figures)
    err = capsys.readouterr().err
    assert f"is written by arus aggregate (checkpoint {checkpoint(lake.checkpoint)}); this is arus " in err
    assert f"aggregate (checkpoint {checkpoint(other)})" in err


def test_a_deleted_checkpoint_is_refused(
    lake: Lake, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    kept = lake.conf.parent / "kept-checkpoint"
    shutil.move(lake.checkpoint, kept)
    try:
        refused(lake, aggregate.main, lake.job_args(), figures)
    finally:
        shutil.rmtree(lake.checkpoint, ignore_errors=True)
        shutil.move(kept, lake.checkpoint)
    err = capsys.readouterr().err
    job = checkpoint(lake.checkpoint)
    for name in ("gold_aggregates", "deadletter"):  # late holds nothing: nothing to write again
        assert f"{lake.tables[name]} holds rows it wrote, but arus aggregate's checkpoint {job} " in err
    assert "late holds" not in err


def test_a_second_run_on_a_running_jobs_checkpoint_is_refused(
    lake: Lake, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    """A live `arus aggregate` holds its checkpoint; the same command again must not start."""
    env = {k: v for k, v in os.environ.items() if k not in ARUS_ENV}
    live = subprocess.Popen(
        [sys.executable, "-m", "arus.jobs.aggregate", *lake.job_args("--trigger", "5 seconds")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lock = lake.checkpoint / RUNNING_FILE
    try:
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text() == f"pid {live.pid}\n"):
            assert live.poll() is None and time.monotonic() < deadline, "the live job never held it"
            time.sleep(0.1)
        refused(lake, aggregate.main, lake.job_args(), figures)
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()
    err = capsys.readouterr().err
    assert f"checkpoint {checkpoint(lake.checkpoint)} is in use by a running job (pid {live.pid})" in err


def test_take_over_lets_another_checkpoint_write(lake: Lake) -> None:
    gold = lake.rows("gold_aggregates")
    other = lake.conf.parent / "taking-over"
    take_over = [arg for name in lake.tables for arg in ("--take-over", name)]
    assert aggregate.main(lake.job_args("--checkpoint", str(other), *take_over)) == 0
    owner = writer(str(other), "arus aggregate")
    assert {name: recorded_writer(path) for name, path in lake.tables.items()} == dict.fromkeys(
        lake.tables, owner
    )
    pd.testing.assert_frame_equal(lake.rows("gold_aggregates"), gold)  # MERGE by key: the same rows
