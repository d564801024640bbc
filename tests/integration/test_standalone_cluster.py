"""Scale-out: the main job, unchanged, on a Spark standalone cluster (a master and two workers
started from the installed pyspark), submitted once with spark-submit --master spark://...; its
Delta table is checked against a pandas oracle computed from what was sent.

The job runs from the package `make package` builds, as on a real cluster: the wheel goes to
--py-files, the driver file is the one inside the wheel, and the working folder is not the checkout
(so the default config is the one shipped in the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from support import gold_frame, gold_oracle, job_args, produce

from arus.config import REPO_ROOT, Config, SparkClusterConfig
from arus.ops.standalone import Cluster, down, free_port, master_state, up
from arus.sources.iot import fleet, readings, to_record
from arus.sources.send import Record

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KAFKA_CONNECTOR = "spark-sql-kafka-0-10_2.13-4.2.0.jar"
SMALL_JVM = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
LOG4J = f"-Dlog4j2.configurationFile=file:{REPO_ROOT}/conf/spark/log4j2.properties"


def package(dist: Path) -> Path:
    """The wheel `make package` builds, with every module a driver and its executors import."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("arus-*.whl")
    return wheel


@pytest.mark.timeout(900)
def test_aggregate_job_runs_unchanged_on_a_standalone_cluster(
    config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics = {"in": new_topic("in", 3), "out": new_topic("out", 3), "dead": new_topic("dead")}
    gen = readings(fleet(8, seed=21), START, 10.0, seed=21)
    events = [next(gen) for _ in range(8 * 30)]  # 5 minutes of event time
    records = [to_record(e, topics["in"]) for e in events + events[:5]]  # five sent twice
    records.append(Record(topics["in"], "bad", b"{not json"))
    wheel = package(tmp_path / "dist")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    driver = run_dir / "aggregate.py"
    driver.write_bytes(zipfile.ZipFile(wheel).read("arus/jobs/aggregate.py"))
    produce(config, records)

    cluster = Cluster(
        SparkClusterConfig(
            host="127.0.0.1",
            port=free_port(),
            webui_port=free_port(),
            workers=2,
            worker_cores=1,
            worker_memory="640m",
            daemon_memory="256m",
            dir="cluster",
        ),
        home=tmp_path / "cluster",
    )
    started = time.monotonic()
    try:
        up(cluster)
        cluster_s = time.monotonic() - started
        submit = subprocess.run(
            [
                str(Path(sys.executable).parent / "spark-submit"),
                "--master", cluster.url,
                "--driver-memory", "768m",
                "--conf", "spark.executor.memory=512m",
                "--conf", "spark.executor.cores=1",
                "--conf", "spark.cores.max=2",
                # Small, short JVMs start and finish sooner on 2 shared cores; the job is unchanged.
                "--driver-java-options", f"{LOG4J} {SMALL_JVM}",
                "--conf", f"spark.executor.extraJavaOptions={SMALL_JVM}",
                "--py-files", str(wheel),
                str(driver),
                *job_args(topics, tmp_path),
            ],
            cwd=run_dir,
            env={**os.environ, "SPARK_LOCAL_IP": cluster.settings.host, "PYSPARK_PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=840,  # measured 200 s with the 2 cores shared at load ~20; generous on purpose
        )  # fmt: skip
        assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-4000:]
        state = master_state(cluster)
        assert state is not None
        apps = state["completedapps"] + state["activeapps"]
        assert [app["name"] for app in apps] == ["arus-aggregate"]
        # Each worker ran an executor, and each executor fetched the Kafka connector and the
        # package from the driver.
        for i in (1, 2):
            executor_dirs = list((cluster.home / f"work-{i}").glob("app-*/*/"))
            assert executor_dirs, f"worker {i} ran no executor"
            assert any((d / KAFKA_CONNECTOR).exists() for d in executor_dirs), f"worker {i}: no connector jar"
            assert any((d / wheel.name).exists() for d in executor_dirs), f"worker {i}: no arus wheel"
    finally:
        down(cluster)
    print(f"\nstandalone: cluster up in {cluster_s:.1f}s, job and teardown {time.monotonic() - started:.1f}s")
    assert not any(p.exists() for p in cluster.pid_files())

    gold = DeltaTable(str(tmp_path / "gold")).to_pandas()
    expected = gold_oracle(events)
    got = gold_frame(gold, expected)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)
    assert int(got["count"].sum()) == len(events)
