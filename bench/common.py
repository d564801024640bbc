"""What every benchmark shares: the broker it runs against, topics, CPU and memory readings,
child processes measured with wait4, statistics, and the versions of what was measured.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from arus.config import REPO_ROOT, Config, ProducerConfig, TopicConfig
from arus.ops import broker
from arus.ops.topics import ensure_topics

RESULTS_DIR = REPO_ROOT / "bench" / "results"
KAFKA_JARS = REPO_ROOT / ".jars" / "kafka"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The benchmarks' own broker: other ports and another data folder than the shared one on 9092, so
# other people's traffic does not land on the broker being measured.
OWN_BROKER_PORT = 29092
OWN_CONTROLLER_PORT = 29093
OWN_BROKER_DIR = ".run/bench-kafka"
# Spark keeps a query's last 100 progress reports by default, and the bench sums every batch's:
# the full profile's 10^7-reading rung (100 batches and its no-data ones) lost its first two.
SPARK_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.streaming.numRecentProgressUpdates": "10000",
}


def bench_config(base: Config, bootstrap: str | None = None) -> Config:
    """The config the benchmarks use: an existing broker at `bootstrap`, or their own broker."""
    if bootstrap:
        return replace(base, kafka=replace(base.kafka, bootstrap_servers=bootstrap))
    own = replace(base.broker, port=OWN_BROKER_PORT, controller_port=OWN_CONTROLLER_PORT, dir=OWN_BROKER_DIR)
    return replace(base, broker=own, kafka=replace(base.kafka, bootstrap_servers=f"{own.host}:{own.port}"))


@contextmanager
def running_broker(config: Config, own: bool) -> Iterator[int | None]:
    """Start (and afterwards stop) the benchmarks' own broker; yields the broker's PID if known."""
    if not own:
        yield _shared_broker_pid(config)
        return
    node = broker.nodes_for(config)[0]
    started = not broker.answers(node.address)
    broker.up(config)
    try:
        yield _read_pid(node.pid_file)
    finally:
        if started:
            broker.stop_node(node)


def _shared_broker_pid(config: Config) -> int | None:
    """The PID of the shared broker when it runs from this repository (read only, never signalled)."""
    node = broker.nodes_for(config)[0]
    bootstrap = config.kafka.bootstrap_servers.split(",")[0]
    return _read_pid(node.pid_file) if bootstrap == node.address else None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def unique_topic(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:8]}"


def create_topic(config: Config, name: str, partitions: int) -> str:
    topic = TopicConfig(name=name, partitions=partitions, retention_ms=-1, cleanup_policy="delete")
    ensure_topics(config, config.kafka.bootstrap_servers, topics=(topic,))
    return name


def delete_topics(config: Config, names: Sequence[str]) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    if not names:
        return
    admin = KafkaAdminClient(request_timeout_ms=30000, **config.kafka.client_kwargs())
    try:
        admin.delete_topics(list(names))
    except KafkaError as exc:
        print(f"bench: could not delete topics {list(names)}: {exc}", file=sys.stderr)
    finally:
        admin.close()


@contextmanager
def topics(config: Config) -> Iterator[list[str]]:
    """Collects topic names created inside the block and deletes them at its end."""
    created: list[str] = []
    try:
        yield created
    finally:
        delete_topics(config, created)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a running process (VmHWM), in MiB."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def producer_properties(settings: ProducerConfig) -> dict[str, str]:
    """The [producer] settings as Java client properties, so every client gets the same ones."""
    return {
        "acks": settings.acks,
        "enable.idempotence": str(settings.idempotence).lower(),
        "compression.type": settings.compression or "none",
        "linger.ms": str(settings.linger_ms),
        "batch.size": str(settings.batch_size),
    }


@dataclass(frozen=True)
class Measured:
    """A finished child process: its output, exit code, wall time, CPU time and peak memory."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float

    def last_json(self) -> dict[str, Any]:
        """The child's result: the last stdout line that is a JSON object."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"no JSON result in the output:\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}")


class TreeCpu:
    """User + system CPU of a process and every descendant, sampled every `every_s` seconds from
    /proc (psutil): what wait4 misses of children the process never waits for (PySpark's JVM). A
    descendant's last moments before it exits, up to one interval, are not counted."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.last: dict[int, float] = {}
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self.thread = threading.Thread(target=self._sample, args=(pid,), daemon=True)
        self.thread.start()

    def _sample(self, pid: int) -> None:
        import psutil

        with suppress(psutil.Error):
            root = psutil.Process(pid)
            while not self.done.is_set():
                for proc in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        times = proc.cpu_times()
                        self.last[proc.pid] = times.user + times.system
                self.done.wait(self.every_s)

    def stop(self) -> float:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        return sum(self.last.values())


def run_measured(
    cmd: Sequence[str],
    timeout: float,
    env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Measured:
    """Run a command to its end and read its own resource usage with wait4 (not the whole tree's);
    `on_start` is given the child's PID as soon as it runs."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        if on_start is not None:
            on_start(proc.pid)
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            stdout=out.read(),
            stderr=err.read(),
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
        )


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_client(case: str, args: Sequence[str], config: Config, timeout: float = 600) -> dict[str, Any]:
    """Run one Python client measurement (bench.clients) in a fresh interpreter; its JSON result."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers}
    measured = run_measured([sys.executable, "-m", "bench.clients", case, *args], timeout, env)
    if measured.returncode != 0:
        raise RuntimeError(
            f"bench.clients {case} exited with {measured.returncode}:\n{measured.stderr[-3000:]}"
        )
    result = measured.last_json()
    result.setdefault("peak_rss_mb", round(measured.peak_rss_mb, 1))
    return result


def java_command(main_class: str, *args: str, heap: str = "512m") -> list[str]:
    return ["java", f"-Xmx{heap}", "-cp", f"{KAFKA_JARS}/*", main_class, *args]


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated runs (and the runs themselves)."""
    clean = [v for v in values if v == v]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": list(values)}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": list(values),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict[str, str]:
    """Versions of everything measured and of the machine, for the report."""
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("kafka-python", "confluent-kafka", "quixstreams", "pyspark", "delta-spark", "lz4"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    jar = next(iter(sorted(KAFKA_JARS.glob("kafka-clients-*.jar"))), None)
    found["kafka (broker, Java tools and client)"] = jar.stem.removeprefix("kafka-clients-") if jar else "?"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    found["java"] = (java.stderr.splitlines() or ["?"])[0]
    found["cpu"] = _cpu_model()
    found["cores"] = str(os.cpu_count())
    found["memory"] = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    found["kernel"] = platform.release()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    found["arus commit"] = commit.stdout.strip() or "?"
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return platform.processor() or "?"
