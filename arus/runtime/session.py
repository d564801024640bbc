"""The one SparkSession factory, used by jobs (under spark-submit or plain python), tests and notebooks.

It wires in Delta's SQL extension and catalog and the Kafka connector from the local jars that
`make setup` fetched into .jars/spark, so no run needs the network. When the JVM is already up
(spark-submit), jars must be on the command line instead: `bin/arus-submit` does that, and on a
real cluster `--packages` does (see the README).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

from arus.config import REPO_ROOT, SparkConfig

LOG4J_CONFIG = REPO_ROOT / "conf" / "spark" / "log4j2.properties"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def local_jars(jars_dir: str | Path) -> list[str]:
    path = Path(jars_dir)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return sorted(str(p) for p in path.glob("*.jar"))


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
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if jars:
        conf["spark.jars"] = ",".join(jars)
    return conf


def build_session(app_name: str, config: SparkConfig, extra: dict[str, str] | None = None) -> SparkSession:
    """Build (or reuse) the session: master and conf from config, local connector jars wired in."""
    jars = local_jars(config.jars_dir)
    builder = SparkSession.builder.appName(app_name)
    if "SPARK_SUBMIT_ARGS" not in os.environ and not _under_spark_submit():
        builder = builder.master(config.master)
    for key, value in {**spark_conf(config, jars), **(extra or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
