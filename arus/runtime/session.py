"""The one SparkSession factory, used by jobs (under spark-submit or plain python), tests and notebooks.

It wires in Delta's SQL extension and catalog and the Kafka connector from the local jars that
`make setup` fetched into .jars/spark of the project folder (arus.config.project_root), so no run
needs the network. When the JVM is already up (spark-submit), jars must be on the command line or
in spark-defaults.conf instead: scripts/fetch-jars.sh writes the latter, and on a real cluster
`--packages` does it (see the README).
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyspark.sql import SparkSession

from arus.config import Config, ConfigError, SparkConfig, project_root, say
from arus.io.metrics import Metrics
from arus.io.owners import CheckpointBusy, TableClaimed, Writes, claim_tables, running
from arus.runtime.job import DEFAULT_LOG_LEVEL, GUARD_STOPPED, REFUSED, log_level, prepare, refuse, run
from arus.runtime.listener import MetricsListener, drain
from arus.runtime.progress import Tally

LOG4J_CONFIG = importlib.resources.files("arus.conf") / "spark" / "log4j2.properties"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

S = TypeVar("S")


def local_jars(jars_dir: str | Path) -> list[str]:
    """The connector jars in `jars_dir` (relative: in the project folder); an error names a missing one."""
    path = project_root() / jars_dir
    jars = sorted(str(p) for p in path.glob("*.jar"))
    if not jars:
        raise ConfigError(
            f"no Spark connector jars in {path}: run arus in the project folder where `make setup` "
            "fetched them, set ARUS_HOME to that folder, or set [spark] jars_dir"
        )
    return jars


def spark_conf(config: SparkConfig, jars: list[str]) -> dict[str, str]:
    conf = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.default.parallelism": str(config.shuffle_partitions),
        "spark.driver.memory": config.driver_memory,
        "spark.ui.enabled": str(config.ui_enabled).lower(),
        # the console progress bar redraws over the jobs' progress lines and costs a thread
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.host": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "spark.log.structuredLogging.enabled": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG}",
        "spark.sql.adaptive.enabled": "true",
        # A micro-batch of the main job uses a few hundred generated classes; Spark's default cache of
        # 100 evicted them every batch, so each batch compiled about 60 again (docs/benchmarks.md).
        "spark.sql.codegen.cache.maxEntries": "1000",
        # Spark's default (FileContext) renames every checkpoint file through Hadoop's local file
        # system, which starts a `readlink` process per path: about 70 processes a micro-batch, 0.15
        # s of it (docs/benchmarks.md). This one renames in Java; its create-once check is not
        # atomic, so a job holds its checkpoint while it runs (arus.io.owners.running).
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if jars:
        conf["spark.jars"] = ",".join(jars)
    return conf


def build_session(app_name: str, config: SparkConfig, extra: dict[str, str] | None = None) -> SparkSession:
    """Build (or reuse) the session: master and conf from config, local connector jars wired in."""
    # The JVM spark-submit started already has its jars: ours would be ignored, and a driver run
    # from a package in some other folder has no .jars/ beside it.
    jars = [] if _under_spark_submit() else local_jars(config.jars_dir)
    builder = SparkSession.builder.appName(app_name)
    if "SPARK_SUBMIT_ARGS" not in os.environ and not _under_spark_submit():
        builder = builder.master(config.master)
    for key, value in {**spark_conf(config, jars), **(extra or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    level = log_level()
    if level == DEFAULT_LOG_LEVEL:
        session.sparkContext.setLogLevel(level)
    else:
        # Every logger, not only the root (which is all setLogLevel sets): the Kafka clients' too,
        # which conf/spark/log4j2.properties keeps at ERROR.
        jvm = session.sparkContext._jvm
        log4j = jvm.org.apache.logging.log4j  # type: ignore[union-attr]
        log4j.core.config.Configurator.setAllLevels(
            log4j.LogManager.ROOT_LOGGER_NAME, log4j.Level.getLevel(level)
        )
    return session


def _under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def run_timed(
    name: str,
    config: Config,
    run: Callable[[SparkSession, Tally], object],
    metrics_port: int | None = None,
) -> SparkSession:
    """Build the session (app `arus-<name>`), run the job's queries on it, then say how long they took.

    Every micro-batch of every query goes to the metrics file (and to the Prometheus endpoint on
    `metrics_port`) through one listener, registered here so no job can forget it.
    """
    app = f"arus-{name}"
    spark = build_session(app, config.spark)
    tally = Tally()
    started = time.monotonic()
    with Metrics.open(config, app, metrics_port) as metrics:
        listener = MetricsListener(app, metrics, tally)
        spark.streams.addListener(listener)
        try:
            run(spark, tally)
        finally:
            drain(spark)
            spark.streams.removeListener(listener)
    print(f"{name}: done in {time.monotonic() - started:.1f}s")
    return spark


def streaming_main(
    name: str,
    args: argparse.Namespace,
    settings_from: Callable[[argparse.Namespace, Config], S],
    check: Callable[[Config, S], object],
    start: Callable[[SparkSession, Config, S, Tally], object],
    show: Callable[[SparkSession, Config, S], None],
    writes: Callable[[Config, S], Writes],
) -> int:
    """A streaming job's `main` once its flags are parsed: settle its settings or refuse (2), hold
    its checkpoint and record it as the writer of the tables it `writes`, or refuse (3,
    arus.io.owners), run `start` on one timed session, print `show` under --show, and return the
    exit code."""
    prepared = prepare(name, args, settings_from, check)
    if prepared is None:
        return REFUSED
    config, settings = prepared
    try:
        job_writes = writes(config, settings)
    except ValueError as exc:
        return refuse(name, exc)

    def work() -> None:
        spark = run_timed(
            name, config, lambda spark, tally: start(spark, config, settings, tally), args.metrics_port
        )
        if args.show:
            show(spark, config, settings)

    try:
        with running(job_writes.writer.checkpoint):
            try:
                claim_tables(job_writes, getattr(args, "take_over", ()))
            except ValueError as exc:
                return refuse(name, exc)
            return run(name, work)
    except (CheckpointBusy, TableClaimed) as exc:
        say(name, exc)
        return GUARD_STOPPED
