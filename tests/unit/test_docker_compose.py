"""docker-compose.yml cannot run here (no Docker daemon), so check it agrees with conf/arus.toml."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from arus.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from arus.ops.broker import nodes_for, server_properties


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_compose_parses_with_a_broker_and_an_init_service() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "kafka-init"}
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_broker_image_matches_the_kafka_version_fetched_for_the_local_broker() -> None:
    pom = (REPO_ROOT / "jvm" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version
    for service in compose()["services"].values():
        assert service["image"] == f"apache/kafka:{version.group(1)}"


def test_broker_port_and_kraft_settings_match_the_local_broker() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert f"{config.broker.port}:{config.broker.port}" in kafka["ports"]
    assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(
        f"PLAINTEXT://{config.broker.host}:{config.broker.port}"
    )
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    nodes = nodes_for(config)
    local = dict(line.split("=", 1) for line in server_properties(nodes[0], nodes).splitlines())
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == local["auto.create.topics.enable"]
    assert str(env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"]) == local["group.initial.rebalance.delay.ms"]


def test_init_service_creates_exactly_the_topics_in_conf() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    script = compose()["services"]["kafka-init"]["command"][0]
    created = {
        tuple(shlex.split(line)[1:]) for line in script.splitlines() if line.strip().startswith("create ")
    }
    expected = {(t.name, str(t.partitions), str(t.retention_ms), t.cleanup_policy) for t in config.topics}
    assert created == expected


def test_broker_writes_its_logs_to_the_mounted_volume_so_down_keeps_the_topics() -> None:
    kafka = compose()["services"]["kafka"]
    mounts = {volume.split(":", 1)[1]: volume.split(":", 1)[0] for volume in kafka["volumes"]}
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert log_dir in mounts, f"KAFKA_LOG_DIRS={log_dir} is not a mounted volume: {kafka['volumes']}"
    assert mounts[log_dir] in compose()["volumes"], "a named volume, which `docker compose down` keeps"
