"""The local Apache Kafka broker: real Kafka 4.x in KRaft mode from the jars in .jars/kafka.

    arus broker up       # format once, start, wait until it answers, create topics
    arus broker down     # stop it by its recorded PID
    arus broker reset    # stop it and wipe its data
    arus broker status
    arus broker up --cluster 3   # three brokers (replication factor 3, min ISR 2)
    arus broker up --sasl        # a second broker that lets clients in only with SCRAM

The jars and the broker's data (`[broker] dir`) are in the project folder: $ARUS_HOME, else the
current directory (arus.config.project_root).

`up` is idempotent: a broker that already answers is left running and only topics are ensured.
When a broker arus did not start answers at `[kafka] bootstrap_servers` (or KAFKA_BOOTSTRAP_SERVERS),
e.g. `docker compose up -d`'s, `up` uses it: it creates the topics there and starts none of its own.

`--sasl` starts the broker of `[secure_broker]` in conf/arus.toml: a SASL_PLAINTEXT listener with
SCRAM-SHA-512 (and a SASL_SSL listener when given a key and certificate), users created at format
time, and the StandardAuthorizer checking ACLs. Passwords come only from the environment:
ARUS_BROKER_ADMIN_PASSWORD for the super user `admin`, KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD for
the client user, who may read and write the topics in conf/ and nothing else. With
ARUS_BROKER_TLS_KEYSTORE (a PEM file: private key, then certificate chain) it also listens for
SASL_SSL on `[secure_broker] ssl_port`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arus.config import Config, ConfigError, KafkaConfig, job_parser, load_config, project_root
from arus.io.kafka import KafkaUnavailable, check_kafka
from arus.ops.processes import owned, stop
from arus.ops.topics import ensure_topics

LOG4J_CONFIG = importlib.resources.files("arus.conf") / "broker" / "log4j2.properties"
MAIN_CLASS = "kafka.Kafka"
START_TIMEOUT_S = 60.0
EXEC_TIMEOUT_S = 10.0  # fork to exec of the broker's JVM; seconds only on a heavily loaded box
SCRAM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
ADMIN_USER = "admin"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass(frozen=True)
class Security:
    """Who may connect to a secured broker.

    `admin` is the super user; the broker itself logs in as it. `users` are more SCRAM users, all
    created at format time. With `tls_keystore` (PEM: private key, then the certificate chain) the
    broker also listens for SASL_SSL on the node's `ssl_port`.
    """

    admin_password: str = dataclasses.field(repr=False)
    users: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    tls_keystore: Path | None = None
    admin: str = ADMIN_USER

    def client(self, bootstrap_servers: str) -> KafkaConfig:
        """The super user's connection settings, for creating topics and ACLs."""
        return KafkaConfig(bootstrap_servers, "SASL_PLAINTEXT", SCRAM, self.admin, self.admin_password)


@dataclass(frozen=True)
class Node:
    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path
    ssl_port: int = 0
    security: Security | None = None

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


def nodes_for(config: Config, cluster: int = 1, security: Security | None = None) -> list[Node]:
    """The single local broker, or a cluster of `cluster` brokers on consecutive port pairs.

    With `security`, the single broker of `[secure_broker]` instead: its own ports and data.
    """
    if security is not None:
        if cluster != 1:
            raise ConfigError("a secured broker runs as a single node (--sasl takes no --cluster)")
        sb = config.secure_broker
        home = config.resolve(sb.dir)
        return [Node(1, sb.host, sb.port, sb.controller_port, home, sb.ssl_port, security)]
    base = config.resolve(config.broker.dir)
    if cluster == 1:
        return [Node(1, config.broker.host, config.broker.port, config.broker.controller_port, base)]
    # Node i listens on cluster_port + 2(i-1) and its controller on the port after it: 19091-19096
    # for three nodes by default, beside the single broker.
    first = config.broker.cluster_port
    return [
        Node(
            i, config.broker.host, first + 2 * (i - 1), first + 2 * i - 1, base.parent / f"kafka-cluster/{i}"
        )
        for i in range(1, cluster + 1)
    ]


def server_properties(node: Node, nodes: list[Node]) -> str:
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
    replicas = min(3, len(nodes))
    lines: dict[str, object] = {
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
    if node.security is not None:
        lines.update(secure_properties(node, node.security))
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def secure_properties(node: Node, security: Security) -> dict[str, object]:
    """Listeners that demand SCRAM logins, and the authorizer that checks ACLs."""
    admin, password = security.admin, security.admin_password
    listeners = {"SASL_PLAINTEXT": node.port}
    if security.tls_keystore is not None:
        if not node.ssl_port:
            raise ConfigError("a TLS keystore needs [secure_broker] ssl_port")
        listeners["SASL_SSL"] = node.ssl_port
    public = ",".join(f"{name}://{node.host}:{port}" for name, port in listeners.items())
    lines: dict[str, object] = {
        "listeners": f"{public},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": public,
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["CONTROLLER:SASL_PLAINTEXT", *(f"{name}:{name}" for name in listeners)]
        ),
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        # SCRAM credentials live in the metadata log the controller serves, so the controller
        # listener cannot use them: it takes PLAIN with the admin password written here.
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{PLAIN_MODULE} required username="{admin}" password="{password}" user_{admin}="{password}";'
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{admin}",
        "allow.everyone.if.no.acl.found": "false",
    }
    for name in listeners:
        lines[f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"] = (
            f'{SCRAM_MODULE} required username="{admin}" password="{password}";'
        )
    if security.tls_keystore is not None:
        lines["listener.name.sasl_ssl.ssl.keystore.type"] = "PEM"
        lines["listener.name.sasl_ssl.ssl.keystore.location"] = security.tls_keystore
    return lines


def scram_credential(user: str, password: str) -> str:
    """A --add-scram argument with the salted password, so the plain one never shows in `ps`."""
    for text in (user, password):
        if not text or any(c in text for c in '"\\,=[] '):
            raise ConfigError(
                "SCRAM user names and passwords must be non-empty, without quotes, commas or spaces"
            )
    salt = os.urandom(32)
    # SCRAM's Hi() is PBKDF2 with the hash's own output length.
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{SCRAM}=[name={user},iterations={SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def kafka_jars() -> Path:
    """The broker's jars, which `make setup` fetched into the project folder."""
    jars = project_root() / ".jars" / "kafka"
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise ConfigError(
            f"no Kafka jars in {jars}: run arus in the project folder where `make setup` fetched them, "
            "or set ARUS_HOME to that folder"
        )
    return jars


def _java(main_class: str, *args: str, heap: str = "256m") -> list[str]:
    jars = kafka_jars()
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        # More JVM options for short-lived test brokers, e.g. a quicker JIT (tests/faults sets it).
        *os.environ.get("ARUS_BROKER_JVM_OPTS", "").split(),
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{jars}/*",
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
    """The node's broker, if it runs: Kafka's main class started with this node's own properties."""
    return owned(node.pid_file, MAIN_CLASS, str(node.properties_file))


def _format(node: Node, nodes: list[Node], cluster_id: str) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    # A secured node's properties hold the admin password: readable by its owner only.
    fd = os.open(node.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(server_properties(node, nodes))
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
    if node.security is not None:
        users = ((node.security.admin, node.security.admin_password), *node.security.users)
        for user, password in users:
            cmd += ["--add-scram", scram_credential(user, password)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"formatting {node.data_dir} failed:\n{result.stdout}{result.stderr}")


def _cluster_id_file(nodes: list[Node]) -> Path:
    if nodes[0].security is not None:
        return nodes[0].home / "cluster-id"
    return nodes[0].home.parent / f"cluster-id-{len(nodes)}"


def _cluster_id(nodes: list[Node]) -> str:
    """The id stored beside the first node, created once; KRaft wants 16 bytes in url-safe base64."""
    id_file = _cluster_id_file(nodes)
    if id_file.exists():
        return id_file.read_text().strip()
    id_file.parent.mkdir(parents=True, exist_ok=True)
    cluster_id = "-"
    # An id starting with "-" reads as an option to kafka-storage (Kafka's own Uuid avoids them too).
    while cluster_id.startswith("-"):
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
            _java(MAIN_CLASS, str(node.properties_file), heap=heap),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the make target that started it
            env={**os.environ, "LOG_DIR": str(node.home)},
        )
    node.pid_file.write_text(str(proc.pid))
    # Until the forked child has exec'd java its command line is still ours, and the start-up
    # check (which trusts only a command line with the broker's main class) would call it dead.
    deadline = time.monotonic() + EXEC_TIMEOUT_S
    while _pid(node) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


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
                admin = KafkaAdminClient(**_admin_kwargs(nodes), request_timeout_ms=5000)
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


def _admin_kwargs(nodes: list[Node]) -> dict[str, object]:
    bootstrap = ",".join(n.address for n in nodes)
    security = nodes[0].security
    if security is None:
        return {"bootstrap_servers": bootstrap.split(",")}
    return security.client(bootstrap).client_kwargs()


def foreign_broker(config: Config, node: Node) -> str | None:
    """The configured bootstrap servers when a broker answers there that arus did not start.

    That broker (docker compose's, a cluster's given by KAFKA_BOOTSTRAP_SERVERS) is what every job
    will connect to, so starting arus's own beside it would only hold a port nobody reads.
    """
    bootstrap = config.kafka.bootstrap_servers
    if bootstrap == node.address and _pid(node) is not None:
        return None
    if not any(answers(address) for address in bootstrap.split(",")):
        return None
    try:
        check_kafka(config.kafka, [])
    except KafkaUnavailable as exc:
        raise RuntimeError(
            f"{bootstrap} (KAFKA_BOOTSTRAP_SERVERS or [kafka] bootstrap_servers) answers but not as a "
            f"Kafka broker arus can use: {exc}"
        ) from exc
    return bootstrap


def up(config: Config, cluster: int = 1, security: Security | None = None) -> list[Node]:
    """Start the nodes and create the topics; the returned nodes are arus's own (none when a
    broker arus did not start already answers at the configured bootstrap servers)."""
    nodes = nodes_for(config, cluster, security)
    # A cluster or a secured broker is asked for by name, so only the plain `up` defers.
    elsewhere = foreign_broker(config, nodes[0]) if cluster == 1 and security is None else None
    if elsewhere is not None:
        print(f"kafka: using the broker at {elsewhere}, which arus did not start (none started)")
        created = ensure_topics(config)
        if created:
            print(f"kafka: created topics {', '.join(created)}")
        return []
    heap = config.secure_broker.heap if security else config.broker.heap
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
            start_node(node, heap)
        wait_until_ready(nodes, config)
        print(f"kafka: up on {', '.join(n.address for n in nodes)} (logs in {nodes[0].home})")
    bootstrap = ",".join(n.address for n in nodes)
    if security is not None:
        config = dataclasses.replace(config, kafka=security.client(bootstrap))
    created = ensure_topics(config, bootstrap, replication_factor=min(3, len(nodes)))
    if created:
        print(f"kafka: created topics {', '.join(created)}")
    return nodes


def grant(
    admin: KafkaConfig,
    user: str,
    names: Sequence[str],
    operations: Sequence[str],
    resource: str = "TOPIC",
    prefixed: bool = False,
) -> None:
    """Allow `user` the operations (READ, WRITE, DESCRIBE, ...) on the named topics or groups."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    pattern = ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL
    acls = [
        ACL(
            principal=f"User:{user}",
            host="*",
            operation=ACLOperation[op],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(ResourceType[resource], name, pattern),
        )
        for name in names
        for op in operations
    ]
    client = KafkaAdminClient(**admin.client_kwargs(), request_timeout_ms=10000)
    try:
        failed = client.create_acls(acls)["failed"]
    finally:
        client.close()
    if failed:
        raise RuntimeError(f"creating ACLs for {user} failed: {failed}")


def security_from_env(env: Mapping[str, str]) -> Security:
    """The `--sasl` broker's users: the super user and the client user, passwords from the environment."""
    names = ("ARUS_BROKER_ADMIN_PASSWORD", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(
            f"--sasl needs {', '.join(missing)} in the environment (passwords never live in files)"
        )
    if env["KAFKA_SASL_USERNAME"] == ADMIN_USER:
        raise ConfigError(f"KAFKA_SASL_USERNAME must not be {ADMIN_USER!r}, the broker's super user")
    keystore = env.get("ARUS_BROKER_TLS_KEYSTORE")
    if keystore and not Path(keystore).is_file():
        raise ConfigError(
            f"ARUS_BROKER_TLS_KEYSTORE={keystore}: no such file (PEM: private key, then certificates)"
        )
    return Security(
        admin_password=env["ARUS_BROKER_ADMIN_PASSWORD"],
        users=((env["KAFKA_SASL_USERNAME"], env["KAFKA_SASL_PASSWORD"]),),
        tls_keystore=Path(keystore) if keystore else None,
    )


def up_sasl(config: Config, env: Mapping[str, str]) -> list[Node]:
    """The secured broker, its topics, and the client user allowed to use them (and nothing else)."""
    security = security_from_env(env)
    nodes = up(config, security=security)
    admin = security.client(",".join(n.address for n in nodes))
    user = security.users[0][0]
    topics = [t.name for t in config.topics]
    grant(admin, user, topics, ["READ", "WRITE", "DESCRIBE"])
    # Spark and kafka-python consumers name their own groups.
    grant(admin, user, ["*"], ["READ"], resource="GROUP")
    print(f"kafka: SASL/{SCRAM} user {user!r} may read and write {', '.join(topics)}")
    return nodes


def stop_node(node: Node, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    pid = _pid(node)
    if pid is not None:
        stop(pid, sig, timeout)
    node.pid_file.unlink(missing_ok=True)
    return pid is not None


def down(config: Config, cluster: int = 1, security: Security | None = None) -> None:
    nodes = nodes_for(config, cluster, security)
    stopped = [n.address for n in nodes if stop_node(n)]
    print(f"kafka: stopped {', '.join(stopped)}" if stopped else "kafka: not running")


def reset(config: Config, cluster: int = 1, security: Security | None = None) -> None:
    down(config, cluster, security)
    nodes = nodes_for(config, cluster, security)
    for node in nodes:
        shutil.rmtree(node.home, ignore_errors=True)
    _cluster_id_file(nodes).unlink(missing_ok=True)
    print("kafka: data wiped")


def status(config: Config, cluster: int = 1, security: Security | None = None) -> int:
    """1 when a node neither runs here nor answers; a broker started elsewhere still counts as up."""
    code = 0
    for node in nodes_for(config, cluster, security):
        pid = _pid(node)
        answering = answers(node.address)
        state = "answering" if answering else "not answering"
        owner = f"pid {pid}" if pid else f"not started from {project_root()}"
        print(f"kafka node {node.node_id}: {node.address} {state}, {owner}")
        code |= pid is None and not answering
    return code


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(
        "arus broker", __doc__, "arus broker up", "arus broker status", "arus broker up --cluster 3"
    )
    parser.add_argument("action", choices=["up", "down", "reset", "status"])
    parser.add_argument("--cluster", type=int, default=1, help="number of brokers (1 or 3)")
    parser.add_argument("--sasl", action="store_true", help="the SASL/SCRAM broker of [secure_broker]")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        # down, reset and status need only the secured broker's ports and folder, not its passwords.
        secured = Security(admin_password="") if args.sasl else None
        if args.action == "up":
            up_sasl(config, os.environ) if args.sasl else up(config, args.cluster)
        elif args.action == "down":
            down(config, args.cluster, secured)
        elif args.action == "reset":
            reset(config, args.cluster, secured)
        else:
            return status(config, args.cluster, secured)
    except (ConfigError, RuntimeError, TimeoutError) as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
