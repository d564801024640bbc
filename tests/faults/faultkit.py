"""Helpers of the fault-injection suite: free ports, topics, events, configs, job runs, a test CA.

Nothing here is a fake: topics live on real brokers, jobs run as real processes, certificates
come from the machine's `openssl`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from arus.config import DEFAULT_CONFIG, ENV_OVERRIDES, REPO_ROOT, Config, KafkaConfig, load_config
from arus.io.producer import make_producer
from arus.ops import broker
from arus.runtime.guards import FAULT_ENV
from arus.sources.send import Record, SendLoop

HEAP = "384m"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The environment variables arus reads; the suite sets them itself so an outer shell cannot leak in.
ARUS_ENV = {var for var, _, _ in ENV_OVERRIDES} | {"ARUS_CONFIG", FAULT_ENV}
# Spark drivers of the suite's short jobs: the quick JIT and a simple collector halve their CPU time
# (measured: ~100 -> ~52 CPU-seconds for one job run), which is most of the suite's wall time.
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# Each test's measured figures, for docs/reliability.md (git-ignored, rewritten every run).
FIGURES_FILE = REPO_ROOT / ".run" / "faults" / "last-run.json"


def free_ports(n: int) -> list[int]:
    """n loopback ports nobody listens on now (the OS hands out each once)."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_port_block(n: int, start: int = 29100) -> int:
    """The first port of n consecutive free loopback ports (a cluster needs consecutive ones)."""
    for first in range(start, 32000, 10):
        if not any(broker.answers(f"127.0.0.1:{p}", 0.05) for p in range(first, first + n)):
            try:
                held = []
                for p in range(first, first + n):
                    s = socket.socket()
                    s.bind(("127.0.0.1", p))
                    held.append(s)
            except OSError:
                continue
            finally:
                for s in held:
                    s.close()
            return first
    raise RuntimeError("no block of free ports")


def make_topics(kafka: KafkaConfig, *specs: tuple[str, int], replication: int = 1) -> list[str]:
    """Topics with unique names: make_topics(kafka, ("in", 2), ("out", 1))."""
    names = [f"faults.{prefix}.{uuid.uuid4().hex[:8]}" for prefix, _ in specs]
    admin = KafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=15000)
    try:
        admin.create_topics(
            [NewTopic(n, p, replication) for n, (_, p) in zip(names, specs, strict=True)],
            timeout_ms=15000,
        )
        # The controller has them once create_topics returns; brokers learn of them a moment later.
        wait_for(lambda: set(names) <= set(admin.list_topics()), 15, f"topics {names}")
    finally:
        admin.close()
    return names


@dataclass(frozen=True)
class MainJob:
    """Where a test runs the main job: the private broker's config and the job's own topics."""

    config: Config
    topics: dict[str, str]  # "in", "out", "dead"


def reading(i: int, devices: int = 4, **changes: object) -> dict[str, object]:
    """Reading i of a small fleet: device i % devices, one every 10 s of event time per device."""
    at = START + timedelta(seconds=10 * (i // devices))
    event: dict[str, object] = {
        "event_id": f"ev-{i:05d}",
        "device_id": f"dev-{i % devices}",
        "value": round(20 + (i * 7919 % 1000) / 100, 2),
        "event_time": at.isoformat().replace("+00:00", "Z"),
    }
    event.update(changes)
    return event


def produce(kafka: KafkaConfig, config: Config, records: Sequence[Record]) -> None:
    producer = make_producer(kafka, config.producer)
    try:
        summary = SendLoop(producer, progress=None).run(records)
    finally:
        producer.close(timeout=10)
    assert (summary.acked, summary.failed) == (len(records), 0), summary.line()


def json_record(topic: str, event: dict[str, object]) -> Record:
    return Record(topic, str(event.get("device_id")), json.dumps(event).encode())


def read_topic(kafka: KafkaConfig, topic: str, idle_ms: int = 2000) -> list[tuple[bytes | None, bytes, dict]]:
    """Every record of `topic` from the start: (key, value, headers)."""
    consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, consumer_timeout_ms=idle_ms)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        out = []
        for message in consumer:
            out.append((message.key, message.value, dict(message.headers)))
            if all(consumer.position(tp) >= end[tp] for tp in partitions):
                break
        return out
    finally:
        consumer.close()


def write_config(path: Path, config: Config, **settings: str) -> Path:
    """conf/arus.toml with [kafka] pointing at `config`'s broker and `section.key` values replaced.

    write_config(p, cfg, **{"stream.guards.max_deadletter_ratio": "0.2"}) — values are TOML literals.
    """
    wanted = {
        "kafka.bootstrap_servers": json.dumps(config.kafka.bootstrap_servers),
        # Anything a job writes by default lands in the test's folders, never in the repository's.
        "paths.lake": json.dumps(str(path.parent / "lake")),
        "paths.checkpoints": json.dumps(str(path.parent / "checkpoints")),
        # A handful of records per batch: one shuffle partition is plenty, and much quicker.
        "spark.shuffle_partitions": "1",
        **settings,
    }
    section = ""
    lines = []
    for line in DEFAULT_CONFIG.read_text().splitlines():
        header = re.match(r"^\[+([\w.]+)\]+\s*$", line)
        if header:
            section = header.group(1)
        key = re.match(r"^(\w+)\s*=", line)
        if key and f"{section}.{key.group(1)}" in wanted:
            line = f"{key.group(1)} = {wanted.pop(f'{section}.{key.group(1)}')}"
        lines.append(line)
    assert not wanted, f"not in conf/arus.toml: {wanted}"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_delta(path: Path) -> pd.DataFrame:
    """A Delta table read by delta-rs: independent of the Spark that wrote it, and no JVM needed."""
    return DeltaTable(str(path)).to_pandas()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without arus's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ARUS_ENV}
    return {"SPARK_SUBMIT_OPTS": QUICK_JVM, **env, **extra}


def run_job_process(
    args: Sequence[str], env: dict[str, str], timeout: float = 480, job: str = "jobs.aggregate"
) -> subprocess.CompletedProcess[str]:
    """The job (a module) as its own process (and process group, which a kill point SIGKILLs whole)."""
    cmd = [sys.executable, "-m", job, *args]
    with subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the JVM too, not only the Python driver
            out, err = proc.communicate()
            raise AssertionError(
                f"job still running after {timeout:.0f}s; stderr tail:\n{err[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def failures_at_once(attempts: dict[str, Callable[[], object]]) -> dict[str, tuple[str, float]]:
    """Run the attempts side by side, each in a thread: {name: (the error it raised, seconds)}.

    Only for attempts that fail the same way: while a client bootstraps, kafka-python's log (which
    arus.runtime.guards reads to name the cause) is shared by every client in the process.
    """

    def attempt(fn: Callable[[], object]) -> tuple[str, float]:
        started = time.monotonic()
        try:
            fn()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}", time.monotonic() - started
        return "no error", time.monotonic() - started

    with ThreadPoolExecutor(len(attempts)) as pool:
        futures = {name: pool.submit(attempt, fn) for name, fn in attempts.items()}
        return {name: future.result() for name, future in futures.items()}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Ca:
    cert: Path  # PEM, what clients trust
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> Ca:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    return Ca(folder / f"{name}.pem", folder / f"{name}.key")


def server_keystore(ca: Ca, folder: Path, host: str = "127.0.0.1") -> Path:
    """A PEM file Kafka reads as its keystore: the server's private key, then its certificate chain."""
    (folder / "san.ext").write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc",
        "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
        cwd=folder,
    )  # fmt: skip
    keystore = folder / "keystore.pem"
    parts = [(folder / "server.key").read_text(), (folder / "server.pem").read_text(), ca.cert.read_text()]
    keystore.write_text("".join(parts))
    keystore.chmod(0o600)
    return keystore


# --- the secured (SASL/SCRAM + ACL + TLS) broker's clients: test_security, test_ops_secured ---------

SCRAM = "SCRAM-SHA-512"


@dataclasses.dataclass(frozen=True)
class Secured:
    """conftest's `secured` broker: its config, node, users' passwords, CAs and topics (a, b, out, dead)."""

    config: Config
    node: broker.Node
    passwords: dict[str, str]
    ca: Ca
    other_ca: Ca
    topics: dict[str, str]

    def env(
        self, user: str, password: str | None = None, tls: bool = False, ca: Ca | None = None
    ) -> dict[str, str]:
        """The environment a client of `user` gets: KAFKA_* variables only, as in production."""
        port = self.node.ssl_port if tls else self.node.port
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"{self.node.host}:{port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": SCRAM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user] if password is None else password,
        }
        if tls:
            env["KAFKA_SSL_CAFILE"] = str((ca or self.ca).cert)
        return env

    def client(
        self, user: str, password: str | None = None, tls: bool = False, ca: Ca | None = None
    ) -> Config:
        return load_config(DEFAULT_CONFIG, env=self.env(user, password, tls, ca))

    @property
    def admin(self) -> KafkaConfig:
        """The super user's connection, to look at what clients may not."""
        return self.client("admin").kafka
