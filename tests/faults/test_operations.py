"""Operations: `arus broker up` beside a broker arus did not start; stopping a live job by signal.

The README's Docker recipe runs `docker compose up -d`, then `make aggregate`, whose `kafka-up`
calls `arus broker up`. Here the broker arus did not start is the suite's private broker, seen
from a config whose own [broker] is on other, free ports in the test's folder: `up` must use the
broker KAFKA_BOOTSTRAP_SERVERS names, create the declared topics there and start nothing.

Service managers stop a job with SIGTERM (systemd's KillMode=mixed and `docker stop` send it to
the main process), a terminal's Ctrl-C sends SIGINT to the whole process group: either must let a
live `arus aggregate` commit the micro-batch in hand, print its summary and exit 0, without a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from faultkit import (
    clean_env,
    free_ports,
    json_record,
    make_topics,
    produce,
    read_delta,
    reading,
    write_config,
)
from kafka import KafkaAdminClient
from support import gold_frame, gold_oracle, job_args

from arus.config import DEFAULT_CONFIG, REPO_ROOT, Config, load_config
from arus.io.checkpoints import read_offset_entry
from arus.ops import broker

pytestmark = pytest.mark.faults


def broker_up(conf: Path, bootstrap: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`arus broker up --config conf` as a user runs it, with KAFKA_BOOTSTRAP_SERVERS=`bootstrap`."""
    return subprocess.run(
        [sys.executable, "-m", "arus.cli", "broker", "up", "--config", str(conf)],
        cwd=REPO_ROOT,
        env=clean_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
    result = broker_up(conf, bootstrap, timeout=120)
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


def test_broker_up_refuses_a_bootstrap_address_held_by_something_that_is_not_kafka(
    tmp_path: Path, figures: dict[str, object]
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    def refuse_everything() -> None:  # what a web server does with bytes it cannot read
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=refuse_everything, daemon=True).start()
    port, controller = free_ports(2)
    settings = {"broker.port": str(port), "broker.controller_port": str(controller)}
    conf = write_config(tmp_path / "arus.toml", load_config(DEFAULT_CONFIG, env={}), **settings)
    started = time.monotonic()
    try:
        result = broker_up(conf, address, timeout=60)
    finally:
        listener.close()
    figures["refused_in_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 1
    assert (
        f"kafka: {address} (KAFKA_BOOTSTRAP_SERVERS or [kafka] bootstrap_servers) answers but not as a "
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr
    assert not broker.answers(f"127.0.0.1:{port}")


STOP_BOUND_S = 60  # the job's STOP_GRACE_S (30 s) for the batch in hand, plus stopping Spark


def wait_for(found: Callable[[], int | None], proc: subprocess.Popen[str], timeout: float, what: str) -> int:
    deadline = time.monotonic() + timeout
    while (value := found()) is None:
        assert proc.poll() is None, f"the job ended early with {proc.returncode}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.1)
    return value


def planned(checkpoint: Path, topic: str, end: int) -> int | None:
    """The batch whose offsets (logged before it runs) read `topic` up to `end`, once one is planned."""
    for path in sorted((checkpoint / "offsets").glob("[0-9]*")):
        try:
            if read_offset_entry(checkpoint, int(path.name))[1].get((topic, 0)) == end:
                return int(path.name)
        except ValueError:  # an entry Spark is still writing
            continue
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_commits_the_batch_in_hand_prints_the_summary_and_exits_0(
    private_broker: Config, tmp_path: Path, sig: signal.Signals, figures: dict[str, object]
) -> None:
    kafka = private_broker.kafka
    topics = dict(
        zip(["in", "out", "dead"], make_topics(kafka, ("in", 1), ("out", 1), ("dead", 1)), strict=True)
    )
    first, second = [reading(i) for i in range(40)], [reading(i) for i in range(40, 80)]
    produce(kafka, private_broker, [json_record(topics["in"], e) for e in first])
    conf = write_config(tmp_path / "arus.toml", private_broker)
    command = [sys.executable, "-m", "arus.cli", "aggregate", "--config", str(conf)]
    command += job_args(topics, tmp_path, "--trigger", "2 seconds")
    # Files, not pipes: nobody reads a pipe while the job runs, and a full one would stall it.
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=clean_env(), stdout=out, stderr=err, text=True, start_new_session=True
        )
    try:
        checkpoint = tmp_path / "checkpoint" / "aggregates"  # the query's own, under --checkpoint
        commits = checkpoint / "commits"
        wait_for(lambda: 0 if (commits / "0").exists() else None, proc, 300, "first commit")
        produce(kafka, private_broker, [json_record(topics["in"], e) for e in second])
        # A batch's offsets are logged before it runs: the signal lands while it is in hand.
        batch = wait_for(
            lambda: planned(checkpoint, topics["in"], len(first) + len(second)), proc, 60, "batch"
        )
        signalled = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # what a terminal does: the JVM gets it too (and ignores it)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=STOP_BOUND_S)
        figures["stopped_after_s"] = round(time.monotonic() - signalled, 1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert f"{sig.name}: stopping once the micro-batch in hand is committed" in stderr
    figures["batch_in_hand_committed"] = (commits / str(batch)).exists()
    assert figures["batch_in_hand_committed"], f"batch {batch}, in hand at {sig.name}, was not committed"
    assert re.search(r"^aggregates: \d+ batches, 80 rows", stdout, re.MULTILINE), stdout

    expected = gold_oracle([*first, *second])
    gold = read_delta(tmp_path / "gold")
    assert not gold.duplicated(["device_id", "window_start"]).any()
    pd.testing.assert_frame_equal(gold_frame(gold, expected), expected, check_dtype=False, rtol=1e-9)
    figures["gold_rows"] = len(gold)
