"""The driver JVM every arus session starts: its options reach both ways of starting it."""

from __future__ import annotations

import os
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

from arus.runtime.session import driver_java_options


def test_the_session_jvm_runs_the_throughput_collector(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    beans = jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()  # type: ignore[union-attr]
    assert sorted(bean.getName() for bean in beans) == ["PS MarkSweep", "PS Scavenge"]


def test_spark_submit_defaults_carry_the_same_driver_options() -> None:
    """spark-submit starts the JVM before any session is built: make setup's spark-defaults.conf
    must give it what build_session gives a JVM it starts itself."""
    defaults = Path(os.path.dirname(pyspark.__file__)) / "conf" / "spark-defaults.conf"
    lines = dict(line.split(" ", 1) for line in defaults.read_text().splitlines() if not line.startswith("#"))
    assert lines["spark.driver.extraJavaOptions"] == driver_java_options()
