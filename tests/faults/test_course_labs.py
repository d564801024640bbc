"""The course labs (docs/course/) walked with their own commands, then `arus check labN`.

Each lab's check must pass after the lab's commands ran, and must fail, naming the item, when one
thing the lab asks for is broken: a topic of replication factor 1 (lab 1), a producer topic without
keys (lab 2), a consumer group that never commits (lab 3), a pipeline table missing (lab 4). Lab 1
runs on the session's 3-broker cluster; labs 2 and 3 on the private broker, with the course's
minimal samples run as the scripts students run; lab 4 on the session's demo pipeline run.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from arus.jobs import consumer
from arus.producers import api_poller, csv_replay, iot
from faultkit import clean_env
from kafka import KafkaConsumer, KafkaProducer

from arus.config import REPO_ROOT, Config
from arus.ops import broker, labs, topics

if TYPE_CHECKING:
    from conftest import DemoRun

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

EARTHQUAKES = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": f"course{i}", "properties": {"mag": 1.5 + i, "time": 1796168520000 + i}}
        for i in range(3)
    ],
}


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    """`arus check ... --json`: its exit code and its items (name, ok, seen, hint)."""
    capsys.readouterr()
    code = labs.main([*argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == (code == 0)
    return code, report["items"]


def missing_items(items: list[dict[str, object]]) -> list[object]:
    return [item["name"] for item in items if not item["ok"]]


def run_sample(script: str, kafka: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "samples" / script), *args],
        env=clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_lab1_cluster_check(
    cluster: tuple[Config, list[broker.Node]],
    isolated_env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = cluster
    isolated_env(KAFKA_BOOTSTRAP_SERVERS=config.kafka.bootstrap_servers)
    create = ["create", "course.cluster", "--partitions", "3", "--replication-factor", "3"]
    assert topics.main([*create, "--config", "min.insync.replicas=2"]) == 0
    code, items = check(capsys, "lab1", "--bootstrap-servers", config.kafka.bootstrap_servers)
    assert missing_items(items) == [] and code == 0
    assert len(items) == 7  # brokers answer, 3 registered, topic, RF, min ISR, ISR full, round trip

    # The lab's topic made the quick way: one partition, one replica (min ISR 2 is the cluster's default).
    assert (
        topics.main(["create", "course.cluster.thin", "--partitions", "1", "--replication-factor", "1"]) == 0
    )
    code, items = check(capsys, "lab1", "--topic", "course.cluster.thin")
    assert code == 1
    assert missing_items(items) == ["course.cluster.thin: replication factor 3"]


@pytest.fixture(scope="module")
def lab2_done(private_broker: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """Lab 2's commands on the private broker: the minimal samples, then the IoT, CSV and API producers."""
    folder = tmp_path_factory.mktemp("lab2")
    kafka = private_broker.kafka.bootstrap_servers
    (folder / "all_hour.geojson").write_text(json.dumps(EARTHQUAKES))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/all_hour.geojson"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka)
        for topic, partitions in [
            ("course.samples", 1), ("course.readings", 3), ("course.devices", 1), ("course.csv", 3),
            ("course.csv.deadletter", 1), ("course.api", 1), ("course.consumer.aggregates", 3),
            ("course.consumer.deadletter", 1), ("course.consumer.late", 1),
        ]:  # fmt: skip
            assert topics.main(["create", topic, "--partitions", str(partitions)]) == 0
        assert (
            run_sample("producer_minimal.py", kafka, "course.samples") == "sent 1 record to course.samples\n"
        )
        printed = run_sample("consumer_minimal.py", kafka, "course.samples", "3")
        assert printed == "{'sensor_id': 1, 'temperature': 30.5, 'humidity': 70}\n"
        iot_args = ["--topic", "course.readings", "--devices-topic", "course.devices", "--count", "600"]
        assert iot.main([*iot_args, "--seed", "7", "--in-process"]) == 0
        csv_args = ["--topic", "course.csv", "--deadletter-topic", "course.csv.deadletter", "--count", "12"]
        sample_csv = str(REPO_ROOT / "samples" / "weather_stations.csv")
        assert csv_replay.main([sample_csv, *csv_args, "--cursor", str(folder / "csv.cursor")]) == 0
        api_args = ["--url", url, "--topic", "course.api", "--polls", "1"]
        assert api_poller.main([*api_args, "--state-file", str(folder / "api.state")]) == 0
        yield private_broker
    server.shutdown()


def test_lab2_producers_check(
    lab2_done: Config, isolated_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    isolated_env(KAFKA_BOOTSTRAP_SERVERS=lab2_done.kafka.bootstrap_servers)
    code, items = check(capsys, "lab2")
    assert missing_items(items) == [] and code == 0
    assert "group course-samples committed on course.samples" in [item["name"] for item in items]

    # The course's minimal producer sends without a key: as a CSV producer it fails the keys item.
    assert topics.main(["create", "course.csv.nokeys", "--partitions", "3"]) == 0
    producer = KafkaProducer(bootstrap_servers=lab2_done.kafka.bootstrap_servers)
    row = {"time": "2024-03-01T00:00:00Z", "station": "jakarta-01", "event_id": "e1"}
    producer.send("course.csv.nokeys", json.dumps(row).encode())
    producer.close()
    code, items = check(capsys, "lab2", "--csv-topic", "course.csv.nokeys")
    assert code == 1
    assert missing_items(items) == ["csv: records have keys"]


def test_lab3_consumer_check(
    lab2_done: Config, isolated_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = lab2_done.kafka.bootstrap_servers
    isolated_env(KAFKA_BOOTSTRAP_SERVERS=kafka)
    consume = [
        "--input-topic", "course.readings", "--output-topic", "course.consumer.aggregates",
        "--deadletter-topic", "course.consumer.deadletter", "--late-topic", "course.consumer.late",
        "--group-id", "course-lab3", "--until-idle", "3",
    ]  # fmt: skip
    assert consumer.main(consume) == 0
    code, items = check(capsys, "lab3")
    assert missing_items(items) == [] and code == 0

    # A consumer that reads but never commits leaves its group nothing to show.
    reader = KafkaConsumer(
        "course.readings",
        bootstrap_servers=kafka,
        group_id="course-lab3-nocommit",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    assert sum(1 for _ in reader) > 0
    reader.close(autocommit=False)
    code, items = check(capsys, "lab3", "--group", "course-lab3-nocommit")
    assert code == 1
    assert missing_items(items) == ["group course-lab3-nocommit committed on course.readings"]


# The session's demo run (producer + pipeline) is built by whichever test asks for it first.
@pytest.mark.timeout(900)
def test_lab4_pipeline_check(
    demo_run: DemoRun, tmp_path: Path, isolated_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    isolated_env()
    code, items = check(capsys, "lab4", *demo_run.pipeline_args())
    assert missing_items(items) == [] and code == 0
    names = [item["name"] for item in items]
    assert names[-3:] == [
        f"bronze rows = {demo_run.topics['raw']} records",
        "bronze = silver + dead letters + late + duplicates",
        "gold counts = silver rows in each closed window",
    ]

    # The same run with its silver table gone: a copy of the lake, so the shared run stays whole.
    lake = tmp_path / "lake"
    shutil.copytree(demo_run.lake, lake, ignore=shutil.ignore_patterns("silver"))
    code, items = check(capsys, "lab4", *demo_run.pipeline_args(), "--lake", str(lake))
    assert code == 1
    assert missing_items(items) == [
        "table silver (silver)",
        "bronze = silver + dead letters + late + duplicates",
        "gold counts = silver rows in each closed window",
    ]
