"""The fault-injection suite's own brokers; the shared broker on 9092 is never used.

Every broker here runs on free loopback ports with its data under the run's temporary folder and
a 384m heap, and is stopped at the end. The suite is slow, so it runs only when asked for by its
marker: `make test-faults` (`pytest tests/faults -m faults`); a plain `pytest` skips it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultkit import (
    ARUS_ENV,
    FIGURES_FILE,
    HEAP,
    QUICK_JVM,
    START,
    MainJob,
    Secured,
    free_port_block,
    free_ports,
    make_ca,
    make_topics,
    server_keystore,
    write_config,
)

from arus.config import DEFAULT_CONFIG, BrokerConfig, Config, KafkaConfig, load_config
from arus.ops import broker


def pytest_configure(config: pytest.Config) -> None:
    if "faults" in (config.getoption("markexpr") or ""):
        # Before the session's Spark driver starts: the suite's jobs are short (see QUICK_JVM).
        os.environ.setdefault("SPARK_SUBMIT_OPTS", QUICK_JVM)
        os.environ.setdefault("ARUS_BROKER_JVM_OPTS", "-XX:TieredStopAtLevel=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "faults" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fault-injection suite: run `make test-faults`")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_query_outlives_its_test() -> Iterator[None]:
    """A test that fails with a live job running must not leave its query to the next test, whose
    job would then refuse to start a query of the same name in the shared session."""
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        for query in session.streams.active:
            query.stop()


@pytest.fixture(scope="session")
def _figures() -> Iterator[dict[str, dict[str, object]]]:
    figures: dict[str, dict[str, object]] = {}
    yield figures
    if figures:
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        FIGURES_FILE.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, _figures: dict[str, dict[str, object]]
) -> Iterator[dict[str, object]]:
    """What this test measured (kills survived, events lost, ...), saved in .run/faults/last-run.json."""
    started = time.monotonic()
    mine: dict[str, object] = {}
    yield mine
    mine["wall_s"] = round(time.monotonic() - started, 1)
    _figures[request.node.name] = mine


@pytest.fixture(scope="session")
def fault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def plain_config(fault_root: Path) -> Config:
    """The project config pointing at a private single broker; tables under the run's tmp folder."""
    base = load_config(DEFAULT_CONFIG, env={})
    port, controller = free_ports(2)
    node = BrokerConfig("127.0.0.1", port, controller, HEAP, str(fault_root / "kafka"))
    return dataclasses.replace(
        base,
        broker=node,
        kafka=KafkaConfig(f"127.0.0.1:{port}"),
        paths=dataclasses.replace(
            base.paths, lake=str(fault_root / "lake"), checkpoints=str(fault_root / "checkpoints")
        ),
    )


@pytest.fixture(scope="session")
def private_broker(plain_config: Config) -> Iterator[Config]:
    """A single real broker of our own; tests that kill it restart it before they end."""
    nodes = broker.nodes_for(plain_config)
    try:
        broker.up(plain_config)
        yield plain_config
    finally:
        for node in nodes:
            broker.stop_node(node, timeout=10)


@pytest.fixture(scope="session")
def cluster(plain_config: Config, fault_root: Path) -> Iterator[tuple[Config, list[broker.Node]]]:
    """Three brokers on six consecutive free ports: replication factor 3, min ISR 2. Shared by the
    session: a test that stops a node starts it again before it ends."""
    first = free_port_block(6)
    node_config = BrokerConfig(
        "127.0.0.1", first, first + 1, HEAP, str(fault_root / "cluster" / "kafka"), first
    )
    config = dataclasses.replace(plain_config, broker=node_config)
    nodes = broker.nodes_for(config, cluster=3)
    try:
        broker.up(config, cluster=3)  # what `make kafka-cluster-up` runs, on our own ports
        yield dataclasses.replace(config, kafka=KafkaConfig(",".join(n.address for n in nodes))), nodes
    finally:
        for node in nodes:
            broker.stop_node(node, signal.SIGKILL)  # a throwaway cluster needs no controlled shutdown


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """For jobs run in this process: drop arus's variables from the environment, then set these."""

    def apply(**values: str) -> None:
        for var in ARUS_ENV:
            monkeypatch.delenv(var, raising=False)
        for var, value in values.items():
            monkeypatch.setenv(var, value)

    return apply


@pytest.fixture
def main_job(private_broker: Config, isolated_env: Callable[..., None]) -> MainJob:
    """The main job on the private broker, run in this process: new topics of one partition each
    (no test reads another's records), and none of arus's variables from the outer environment."""
    isolated_env()
    names = make_topics(private_broker.kafka, ("in", 1), ("out", 1), ("dead", 1))
    return MainJob(private_broker, dict(zip(["in", "out", "dead"], names, strict=True)))


# --- the secured broker: test_security and test_ops_secured share it ---------------------------


@pytest.fixture(scope="session")
def secured(plain_config: Config, fault_root: Path) -> Iterator[Secured]:
    home = fault_root / "secure"
    ca = make_ca(home / "ca", "arus-test-ca")
    other_ca = make_ca(home / "other-ca", "someone-elses-ca")
    port, controller, ssl_port = free_ports(3)
    config = dataclasses.replace(
        plain_config,
        secure_broker=BrokerConfig(
            "127.0.0.1", port, controller, HEAP, str(home / "kafka"), ssl_port=ssl_port
        ),
    )
    passwords = {user: secrets.token_urlsafe(18) for user in ("producer-a", "job")}
    security = broker.Security(
        admin_password=secrets.token_urlsafe(18),
        users=tuple(passwords.items()),
        tls_keystore=server_keystore(ca, home / "ca"),
    )
    (node,) = broker.nodes_for(config, security=security)
    try:
        broker.up(config, security=security)
        admin = security.client(node.address)
        names = make_topics(admin, ("a.readings", 1), ("b.private", 1), ("job.out", 1), ("job.dead", 1))
        # make_topics names them faults.<prefix>.<random>: ACLs by prefix.
        topics = dict(zip(["a", "b", "out", "dead"], names, strict=True))
        broker.grant(admin, "producer-a", ["faults.a."], ["WRITE", "DESCRIBE"], prefixed=True)
        broker.grant(admin, "job", ["faults.a."], ["READ", "DESCRIBE"], prefixed=True)
        broker.grant(admin, "job", ["faults.job."], ["WRITE", "DESCRIBE"], prefixed=True)
        broker.grant(admin, "job", ["*"], ["READ"], resource="GROUP")
        yield Secured(config, node, {**passwords, "admin": security.admin_password}, ca, other_ca, topics)
    finally:
        broker.stop_node(node, timeout=10)


# The demo's fault rates ([iot.faults] and [iot.delivery] as shipped) on a small fleet: this seed is
# one whose first DEMO_READINGS readings inject every class at least once, with late sends behind
# the clean stage's watermark among them. test_scorecard expects caught = injected for every class.
DEMO_SEED = 7337
DEMO_DEVICES = 5
DEMO_READINGS = 400
# The clean stage reads this many records per micro-batch (six batches): its watermark moves
# between batches, so a late send behind it goes to the late table (one batch would take them all).
DEMO_BATCH = 67
# The shipped [alerts] rule that catches a draining battery, as conf/arus.toml writes it:
# test_scorecard drops it from a run's config to see the scorecard report the class missed.
BATTERY_RULE = """
[[alerts.bounds]]
# A healthy battery starts at 60-100% and loses 0.002 points a reading: below 55 it is draining.
name = "battery_low"
kind = ""
field = "battery"
op = "below"
limit = 55.0
"""


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """An IoT demo run: the simulator's ledger and the pipeline's lake, checkpoints and topics."""

    config: Config
    config_file: Path
    ledger: Path
    lake: Path
    checkpoints: Path
    topics: dict[str, str]  # raw, devices, clean, deadletter, late, aggregates, alerts
    seconds: float

    def pipeline_args(self) -> list[str]:
        """The flags that point `arus pipeline` (and the tools that read its output) at this run."""
        topics = [arg for name, topic in self.topics.items() for arg in (f"--{name}-topic", topic)]
        return [
            "--config",
            str(self.config_file),
            "--lake",
            str(self.lake),
            "--checkpoint",
            str(self.checkpoints),
            *topics,
        ]


@pytest.fixture(scope="session")
def demo_run(
    private_broker: Config, fault_root: Path, _figures: dict[str, dict[str, object]]
) -> Iterator[DemoRun]:
    """`arus produce iot` with a ledger, then `arus pipeline --available-now`, on new topics of the
    private broker; shared by the session (scorecard, trace, the course's lab 4)."""
    from arus.jobs import pipeline
    from arus.producers import iot

    folder = fault_root / "demo"
    folder.mkdir()
    conf = write_config(folder / "arus.toml", private_broker)
    assert BATTERY_RULE in conf.read_text(), "conf/arus.toml's battery_low rule changed: update BATTERY_RULE"
    names = ("raw", "devices", "clean", "deadletter", "late", "aggregates", "alerts")
    topics = dict(zip(names, make_topics(private_broker.kafka, *((n, 1) for n in names)), strict=True))
    run = DemoRun(
        load_config(conf, env={}),
        conf,
        folder / "ledger.jsonl",
        folder / "lake",
        folder / "checkpoints",
        topics,
        0.0,
    )
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as env:
        for var in ARUS_ENV:
            env.delenv(var, raising=False)
        produced = iot.main(
            [
                "--config", str(conf), "--topic", topics["raw"], "--devices-topic", topics["devices"],
                "--devices", str(DEMO_DEVICES), "--seed", str(DEMO_SEED), "--start", START.isoformat(),
                "--count", str(DEMO_READINGS), "--ledger", str(run.ledger), "--in-process",
            ]
        )  # fmt: skip
        assert produced == 0
        args = ["--available-now", *run.pipeline_args()]
        # Stage by stage as in tests/integration/test_pipeline.py: only the clean stage, where the
        # watermark needs several batches to judge anything late, pays for small micro-batches.
        batched = ["--max-offsets-per-trigger", str(DEMO_BATCH)]
        assert pipeline.main(["--stages", "bronze,clean", *batched, *args]) == 0
        assert pipeline.main(["--stages", "aggregate,alerts", *args]) == 0
    run = dataclasses.replace(run, seconds=round(time.monotonic() - started, 1))
    _figures["demo_run"] = {"wall_s": run.seconds, "readings": DEMO_READINGS, "devices": DEMO_DEVICES}
    yield run
