"""Spark against the kafka-python consumer, as a user runs them: `arus aggregate --trigger
available-now` and `arus consume --until-idle` as fresh processes catching up from the start of the
same pre-filled topic, with the same [stream] and [aggregate] settings (windows, keys, watermark).

    job = run_spark_job(config, topic, out, work, max_per_trigger)   # wall from exec to exit
    consumer = run_consumer(config, topic, out)

Wall time runs from the process's start to its exit, so Spark's start-up (JVM, session, planning)
is part of it; the consumer's idle wait before it stops is taken off its wall time. CPU: the
consumer's from wait4, the job's (Python and its JVM, which it never waits for) sampled from /proc.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path
from typing import Any

from arus.bench.common import TreeCpu, run_measured

from arus.config import Config

IDLE_S = 3.0
CONSUMER_LINE = re.compile(r"consumer: (\d+) records")


def arus_command(*args: str) -> list[str]:
    """The installed `arus` command of this interpreter's environment."""
    return [str(Path(sys.executable).parent / "arus"), *args]


def run_spark_job(
    config: Config, topic: str, out: str, work: Path, max_per_trigger: int | None, timeout: float
) -> dict[str, Any]:
    """`arus aggregate` from a fresh checkpoint and lake in `work`, to the end of the topic."""
    args = ["aggregate", *_topics(topic, out), "--trigger", "available-now"]
    if max_per_trigger:
        args += ["--max-offsets-per-trigger", str(max_per_trigger)]
    tree = TreeCpu()
    measured = run_measured(arus_command(*args), timeout, _env(config, work), on_start=tree.start)
    cpu = tree.stop()
    if measured.returncode != 0:
        raise RuntimeError(f"arus aggregate exited with {measured.returncode}:\n{measured.stderr[-3000:]}")
    return {
        "wall_s": round(measured.wall_s, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb_python": round(measured.peak_rss_mb, 1),
    }


def run_consumer(config: Config, topic: str, out: str, work: Path, timeout: float) -> dict[str, Any]:
    """`arus consume` in a new group from the earliest offsets until idle; the records it read."""
    args = [
        "consume",
        *_topics(topic, out),
        "--group-id",
        f"bench-versus-{uuid.uuid4().hex[:8]}",
        "--starting-offsets",
        "earliest",
        "--until-idle",
        str(IDLE_S),
        "--no-view",
    ]
    measured = run_measured(arus_command(*args), timeout, _env(config, work))
    if measured.returncode != 0:
        raise RuntimeError(f"arus consume exited with {measured.returncode}:\n{measured.stderr[-3000:]}")
    found = CONSUMER_LINE.search(measured.stdout)
    if not found:
        raise RuntimeError(f"arus consume printed no summary:\n{measured.stdout[-2000:]}")
    return {
        "events": int(found.group(1)),
        "wall_s": round(measured.wall_s - IDLE_S, 2),
        "cpu_s": round(measured.cpu_s, 2),
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
        "summary": found.string[found.start() :].splitlines()[0],
    }


def _topics(topic: str, out: str) -> list[str]:
    """Input `topic`; aggregates, dead letters and late events all to `out`."""
    return ["--input-topic", topic, "--output-topic", out, "--deadletter-topic", out, "--late-topic", out]


def _env(config: Config, work: Path) -> dict[str, str]:
    """The bench's broker, and a lake, checkpoints and metrics of the run's own."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "ARUS_LAKE_DIR": str(work / "lake"),
        "ARUS_CHECKPOINT_DIR": str(work / "checkpoints"),
        "ARUS_METRICS_DIR": str(work / "metrics"),
    }
