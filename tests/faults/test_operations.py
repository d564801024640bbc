"""Operations: `arus broker up` beside a broker arus did not start.

The README's Docker recipe runs `docker compose up -d`, then `make aggregate`, whose `kafka-up`
calls `arus broker up`. Here the broker arus did not start is the suite's private broker, seen
from a config whose own [broker] is on other, free ports in the test's folder: `up` must use the
broker KAFKA_BOOTSTRAP_SERVERS names, create the declared topics there and start nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from faultkit import clean_env, free_ports, write_config
from kafka import KafkaAdminClient

from arus.config import REPO_ROOT, Config
from arus.ops import broker

pytestmark = pytest.mark.faults


def test_broker_up_uses_a_running_broker_it_did_not_start(
    private_broker: Config, tmp_path: Path, figures: dict[str, object]
) -> None:
    port, controller = free_ports(2)
    topic = f"faults.ops.{uuid.uuid4().hex[:8]}"
    conf = write_config(
        tmp_path / "arus.toml",
        private_broker,
        **{
            "broker.port": str(port),
            "broker.controller_port": str(controller),
            "broker.dir": json.dumps(str(tmp_path / "kafka")),
        },
    )
    # A topic only this config declares, so creating it is visible on the private broker.
    conf.write_text(
        conf.read_text()
        + f'\n[[topics]]\nname = "{topic}"\npartitions = 2\nretention_ms = -1\ncleanup_policy = "delete"\n'
    )
    bootstrap = private_broker.kafka.bootstrap_servers
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "arus.cli", "broker", "up", "--config", str(conf)],
        cwd=REPO_ROOT,
        env=clean_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap),
        capture_output=True,
        text=True,
        timeout=120,
    )
    figures["broker_up_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stderr
    assert f"using the broker at {bootstrap}, which arus did not start" in result.stdout
    assert f"created topics {topic}" in result.stdout
    admin = KafkaAdminClient(**private_broker.kafka.client_kwargs(), request_timeout_ms=15000)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described["partitions"]) == 2
    # No second broker: nothing on the config's own ports, no PID file, no data folder.
    assert not broker.answers(f"127.0.0.1:{port}") and not broker.answers(f"127.0.0.1:{controller}")
    assert not (tmp_path / "kafka").exists()
    figures["brokers_started"] = 0
