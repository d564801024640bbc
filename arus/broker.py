"""The local Apache Kafka broker: real Kafka 4.x in KRaft mode from the jars in .jars/kafka.

    python -m arus.broker up       # format once, start, wait until it answers, create topics
    python -m arus.broker down     # stop it by its recorded PID
    python -m arus.broker reset    # stop it and wipe its data
    python -m arus.broker status
    python -m arus.broker up --cluster 3   # three brokers (replication factor 3, min ISR 2)

`up` is idempotent: a broker that already answers is left running and only topics are ensured.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from arus.config import REPO_ROOT, Config, ConfigError, load_config
from arus.topics import ensure_topics

KAFKA_JARS = REPO_ROOT / ".jars" / "kafka"
LOG4J_CONFIG = REPO_ROOT / "conf" / "broker" / "log4j2.properties"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Node:
    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"


def nodes_for(config: Config, cluster: int = 1) -> list[Node]:
    """The single local broker, or a cluster of `cluster` brokers on consecutive port pairs."""
    base = config.resolve(config.broker.dir)
    if cluster == 1:
        return [Node(1, config.broker.host, config.broker.port, config.broker.controller_port, base)]
    # Cluster ports start at 19092 so a cluster can run beside the single broker.
    return [
        Node(i, config.broker.host, 19090 + 2 * i, 19091 + 2 * i, base.parent / f"kafka-cluster/{i}")
        for i in range(1, cluster + 1)
    ]


def server_properties(node: Node, nodes: list[Node]) -> str:
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
    replicas = min(3, len(nodes))
    lines = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": node.data_dir,
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": max(1, replicas - 1),
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": max(1, replicas - 1),
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": max(1, replicas - 1),
        # A consumer group may start consuming at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "log.retention.check.interval.ms": 60000,
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def _java(main_class: str, *args: str, heap: str = "256m") -> list[str]:
    if not any(KAFKA_JARS.glob("kafka_2.13-*.jar")):
        raise ConfigError(f"no Kafka jars in {KAFKA_JARS}: run `make setup` first")
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{KAFKA_JARS}/*",
        main_class,
        *args,
    ]


def answers(address: str, timeout: float = 1.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _pid(node: Node) -> int | None:
    try:
        pid = int(node.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _format(node: Node, nodes: list[Node], cluster_id: str) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    node.properties_file.write_text(server_properties(node, nodes))
    if (node.data_dir / "meta.properties").exists():
        return
    cmd = _java(
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(node.properties_file),
        "--ignore-formatted",
    )
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"formatting {node.data_dir} failed:\n{result.stdout}{result.stderr}")


def _cluster_id(nodes: list[Node]) -> str:
    """The id stored beside the first node, created once; KRaft wants 16 bytes in url-safe base64."""
    id_file = nodes[0].home.parent / f"cluster-id-{len(nodes)}"
    if id_file.exists():
        return id_file.read_text().strip()
    id_file.parent.mkdir(parents=True, exist_ok=True)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    id_file.write_text(cluster_id)
    return cluster_id


def start_node(node: Node, heap: str) -> None:
    """Start one node in the background, its output in broker.log, its PID recorded."""
    if _pid(node) is not None:
        return
    # The child keeps its own copy of the log's file descriptor, so ours can close at once.
    with open(node.log_file, "ab") as log:
        proc = subprocess.Popen(
            _java("kafka.Kafka", str(node.properties_file), heap=heap),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the make target that started it
            env={**os.environ, "LOG_DIR": str(node.home)},
        )
    node.pid_file.write_text(str(proc.pid))


def wait_until_ready(nodes: list[Node], config: Config, timeout: float = START_TIMEOUT_S) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for node in nodes:
            if _pid(node) is None:
                tail = node.log_file.read_text(errors="replace")[-3000:] if node.log_file.exists() else ""
                raise RuntimeError(f"broker {node.node_id} exited during start-up; log tail:\n{tail}")
        if all(answers(n.address) for n in nodes):
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=[n.address for n in nodes], request_timeout_ms=5000
                )
                try:
                    brokers = admin.describe_cluster()["brokers"]
                finally:
                    admin.close()
                if len(brokers) == len(nodes):
                    return
            except KafkaError as exc:
                last_error = exc
        time.sleep(0.5)
    raise TimeoutError(f"brokers {[n.address for n in nodes]} did not answer in {timeout:.0f}s: {last_error}")


def up(config: Config, cluster: int = 1) -> list[Node]:
    nodes = nodes_for(config, cluster)
    if all(_pid(n) is not None for n in nodes) and all(answers(n.address) for n in nodes):
        print(f"kafka: already running on {', '.join(n.address for n in nodes)}")
    else:
        for node in nodes:
            if _pid(node) is None and answers(node.address):
                raise RuntimeError(
                    f"{node.address} is taken by a process that is not arus's broker; "
                    "stop it or change [broker] port in conf/arus.toml"
                )
        cluster_id = _cluster_id(nodes)
        for node in nodes:
            _format(node, nodes, cluster_id)
        for node in nodes:
            start_node(node, config.broker.heap)
        wait_until_ready(nodes, config)
        print(f"kafka: up on {', '.join(n.address for n in nodes)} (logs in {nodes[0].home})")
    bootstrap = ",".join(n.address for n in nodes)
    created = ensure_topics(config, bootstrap, replication_factor=min(3, len(nodes)))
    if created:
        print(f"kafka: created topics {', '.join(created)}")
    return nodes


def stop_node(node: Node, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    pid = _pid(node)
    if pid is None:
        node.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    node.pid_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie whose parent is gone still answers kill(0); /proc tells the truth.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def down(config: Config, cluster: int = 1) -> None:
    nodes = nodes_for(config, cluster)
    stopped = [n.address for n in nodes if stop_node(n)]
    print(f"kafka: stopped {', '.join(stopped)}" if stopped else "kafka: not running")


def reset(config: Config, cluster: int = 1) -> None:
    down(config, cluster)
    nodes = nodes_for(config, cluster)
    for node in nodes:
        shutil.rmtree(node.home, ignore_errors=True)
    (nodes[0].home.parent / f"cluster-id-{len(nodes)}").unlink(missing_ok=True)
    print("kafka: data wiped")


def status(config: Config, cluster: int = 1) -> int:
    code = 0
    for node in nodes_for(config, cluster):
        pid = _pid(node)
        state = "answering" if answers(node.address) else "not answering"
        print(f"kafka node {node.node_id}: pid {pid or '-'}, {node.address} {state}")
        code |= pid is None
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arus.broker", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "reset", "status"])
    parser.add_argument("--cluster", type=int, default=1, help="number of brokers (1 or 3)")
    parser.add_argument("--config", help="config file (default conf/arus.toml)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.action == "up":
            up(config, args.cluster)
        elif args.action == "down":
            down(config, args.cluster)
        elif args.action == "reset":
            reset(config, args.cluster)
        else:
            return status(config, args.cluster)
    except (ConfigError, RuntimeError, TimeoutError) as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
