"""A Spark standalone cluster on this machine, from the installed pyspark: a master and workers.

    arus cluster up       # what `make spark-cluster-up` runs; waits for every worker
    arus cluster status
    arus cluster down     # stops exactly what `up` started, by their PIDs
    spark-submit --master spark://127.0.0.1:7077 jobs/aggregate.py

Jobs run on it unchanged: the connector jars reach the driver through the spark-defaults.conf
that scripts/fetch-jars.sh writes (`spark.jars`), and Spark ships them to every executor from the
driver. Settings come from `[spark_cluster]` in conf/arus.toml.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyspark

from arus.config import SparkClusterConfig, job_parser, load_config_or_say
from arus.ops.processes import alive, owned, stop

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Cluster:
    """The cluster `[spark_cluster]` describes, with its folder (`dir`) resolved to `home`."""

    settings: SparkClusterConfig
    home: Path

    @property
    def url(self) -> str:
        return f"spark://{self.settings.host}:{self.settings.port}"

    def pid_files(self) -> list[Path]:
        return [
            self.home / "master.pid",
            *(self.home / f"worker-{i}.pid" for i in range(1, self.settings.workers + 1)),
        ]

    def running(self, pid_file: Path) -> int | None:
        """The daemon recorded in `pid_file` if it still runs as the one `up` started.

        The master is its class on this cluster's port; a worker, its class with its own work dir.
        """
        if pid_file.stem == "master":
            return owned(pid_file, MASTER_CLASS, "--port", str(self.settings.port))
        return owned(
            pid_file, WORKER_CLASS, self.url, str(self.home / f"work-{pid_file.stem.removeprefix('worker-')}")
        )


class ClusterError(RuntimeError):
    """The cluster did not come up (the message names the log to read)."""


def spark_class() -> Path:
    """pyspark's launcher for Spark's JVM classes."""
    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _env(cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOCAL_IP": cluster.settings.host,
        "SPARK_DAEMON_MEMORY": cluster.settings.daemon_memory,
        # The master and workers only coordinate: one GC thread and the quick JIT spare the cores.
        "SPARK_DAEMON_JAVA_OPTS": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
        "SPARK_LOCAL_DIRS": str(cluster.home / "tmp"),
        "PYSPARK_PYTHON": sys.executable,
    }


def _start(cluster: Cluster, name: str, args: list[str]) -> int:
    """Start one daemon in its own process group, logging to <home>/<name>.log; returns its PID."""
    log = (cluster.home / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [str(spark_class()), *args],
        env=_env(cluster),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (cluster.home / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def master_state(cluster: Cluster, timeout: float = 2.0) -> dict[str, Any] | None:
    """The master's JSON status (workers, applications), or None if it does not answer."""
    try:
        with urllib.request.urlopen(
            f"http://{cluster.settings.host}:{cluster.settings.webui_port}/json/", timeout=timeout
        ) as r:
            state: dict[str, Any] = json.load(r)
            return state
    except (OSError, ValueError):
        return None


def alive_workers(cluster: Cluster) -> int:
    state = master_state(cluster)
    return sum(1 for w in (state or {}).get("workers", []) if w.get("state") == "ALIVE")


def up(cluster: Cluster) -> None:
    """Start the master, then the workers; return once every worker has registered."""
    if alive_workers(cluster) >= cluster.settings.workers:
        print(f"spark cluster: already running at {cluster.url}")
        return
    for sub in ("tmp", *(f"work-{i}" for i in range(1, cluster.settings.workers + 1))):
        (cluster.home / sub).mkdir(parents=True, exist_ok=True)
    _start(
        cluster,
        "master",
        [
            MASTER_CLASS,
            "--host",
            cluster.settings.host,
            "--port",
            str(cluster.settings.port),
            "--webui-port",
            str(cluster.settings.webui_port),
        ],
    )
    _wait(cluster, lambda: master_state(cluster) is not None, "the master", "master.log")
    for i in range(1, cluster.settings.workers + 1):
        _start(
            cluster,
            f"worker-{i}",
            [
                WORKER_CLASS,
                cluster.url,
                "--host", cluster.settings.host,
                "--cores", str(cluster.settings.worker_cores),
                "--memory", cluster.settings.worker_memory,
                "--webui-port", "0",
                "--work-dir", str(cluster.home / f"work-{i}"),
            ],
        )  # fmt: skip
    _wait(cluster, lambda: alive_workers(cluster) >= cluster.settings.workers, "the workers", "worker-*.log")
    print(
        f"spark cluster: {cluster.url} with {cluster.settings.workers} workers (UI http://{cluster.settings.host}:{cluster.settings.webui_port})"
    )


def _wait(cluster: Cluster, ready: Callable[[], bool], what: str, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        # Alive, not `running`: `up` recorded these PIDs a moment ago, and matching the command line
        # of a daemon still starting (spark-class execs env, bash, then the JVM) once took the master
        # for dead.
        dead = [p.stem for p in cluster.pid_files() if p.exists() and not alive(int(p.read_text()))]
        if dead or time.monotonic() > deadline:
            down(cluster)
            reason = f"{', '.join(dead)} exited" if dead else f"not ready in {START_TIMEOUT_S:.0f}s"
            raise ClusterError(f"{what} did not start ({reason}); see {cluster.home}/{log}")
        time.sleep(0.5)


def down(cluster: Cluster, timeout: float = 20.0) -> None:
    """Stop the daemons `up` started (their process groups, by recorded PID); workers first."""
    for pid_file in reversed(cluster.pid_files()):
        pid = cluster.running(pid_file)
        if pid is not None:
            stop(pid, timeout=timeout, group=True)
        pid_file.unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(
        "arus cluster", __doc__, "arus cluster up", "arus cluster status", "arus cluster down"
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    config = load_config_or_say("spark cluster", args.config)
    if config is None:
        return 2  # refused to start, as every arus command (arus.runtime.job)
    cluster = Cluster(config.spark_cluster, config.resolve(config.spark_cluster.dir))
    if args.command == "up":
        try:
            up(cluster)
        except ClusterError as exc:
            print(f"spark cluster: {exc}", file=sys.stderr)
            return 1
    elif args.command == "down":
        down(cluster)
        print("spark cluster: stopped")
    else:
        workers = alive_workers(cluster)
        state = "running" if master_state(cluster) is not None else "not running"
        print(f"spark cluster: {state} at {cluster.url}, {workers} alive workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
