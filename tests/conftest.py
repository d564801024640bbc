"""Shared fixtures: one real Kafka broker and one Spark session for the whole test run.

The broker is arus's own local broker (`make kafka-up`): reused if it is already up, started
(and stopped at the end) otherwise. Tests use unique topic names so they never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from arus.config import Config, TopicConfig, load_config
from arus.ops import broker
from arus.ops.topics import ensure_topics
from arus.runtime.session import build_session


@pytest.fixture(scope="session")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The project config, with tables and checkpoints in a temporary folder for this run."""
    base = load_config()
    data = tmp_path_factory.mktemp("data")
    return replace(
        base, paths=replace(base.paths, lake=str(data / "lake"), checkpoints=str(data / "checkpoints"))
    )


@pytest.fixture(scope="session", autouse=True)
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where every job, consumer and producer a test runs (in process or not) appends its metrics,
    instead of the checkout's data/metrics."""
    path = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARUS_METRICS_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def kafka(config: Config) -> Iterator[str]:
    """The bootstrap address of a running real broker.

    A broker that already answers there (this checkout's, another checkout's, docker compose's) is
    reused; otherwise this checkout's local broker is started for the run and stopped after it.
    """
    node = broker.nodes_for(config)[0]
    started = not broker.answers(node.address)
    if started:
        broker.up(config)
    else:
        ensure_topics(config)
    yield config.kafka.bootstrap_servers
    if started and not os.environ.get("ARUS_KEEP_BROKER"):
        broker.down(config)


@pytest.fixture(scope="session")
def spark(config: Config) -> Iterator[SparkSession]:
    session = build_session(
        "arus-tests", config.spark, {"spark.sql.streaming.forceDeleteTempCheckpointLocation": "true"}
    )
    yield session
    session.stop()


@pytest.fixture
def new_topic(kafka: str, config: Config) -> Callable[..., str]:
    """Create a fresh topic with a unique name: new_topic("readings", partitions=3)."""

    def create(prefix: str = "t", partitions: int = 1, cleanup_policy: str = "delete") -> str:
        name = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
        topic = TopicConfig(name=name, partitions=partitions, retention_ms=-1, cleanup_policy=cleanup_policy)
        ensure_topics(config, kafka, topics=(topic,))
        return name

    return create


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path
