"""Stopping background daemons by PID: politely first, SIGKILL for one that will not go, and never
a process that only happens to hold a PID a stale PID file names."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from arus.config import DEFAULT_CONFIG, Config, SparkClusterConfig, load_config
from arus.ops import broker
from arus.ops.processes import alive, owned, stop
from arus.ops.standalone import Cluster, down


def spawn(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.3)  # let the child install its signal handlers
    return proc


def test_a_daemon_stops_on_sigterm_and_is_reaped() -> None:
    proc = spawn("import time; time.sleep(60)")
    assert alive(proc.pid)
    started = time.monotonic()
    stop(proc.pid, timeout=10)
    assert not alive(proc.pid)
    assert time.monotonic() - started < 5


def test_a_daemon_ignoring_sigterm_is_killed_at_the_timeout() -> None:
    proc = spawn("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    started = time.monotonic()
    stop(proc.pid, timeout=1)
    assert not alive(proc.pid)
    assert 1 <= time.monotonic() - started < 5


def test_a_process_group_stops_with_its_children() -> None:
    proc = spawn(
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    others = [int(pid) for pid in children if int(pid) != proc.pid]
    assert len(others) == 1
    stop(proc.pid, timeout=10, group=True)
    time.sleep(0.3)
    assert not alive(proc.pid)
    assert not alive(others[0])


def test_stopping_a_process_that_is_gone_is_harmless() -> None:
    proc = spawn("pass")
    proc.wait()
    stop(proc.pid, timeout=1)
    assert not alive(proc.pid)


def node_config(tmp_path: Path) -> Config:
    config = load_config(DEFAULT_CONFIG, env={})
    return replace(config, broker=replace(config.broker, dir=str(tmp_path / "kafka")))


def sleeper(*args: str) -> subprocess.Popen[bytes]:
    """A process that is not a broker; `args` are appended to its command line."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def test_a_stale_broker_pid_naming_an_unrelated_process_is_never_signalled(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    node = broker.nodes_for(config)[0]
    node.home.mkdir(parents=True)
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        node.pid_file.write_text(str(unrelated.pid))
        assert owned(node.pid_file, broker.MAIN_CLASS) is None
        broker.down(config)
        time.sleep(0.3)
        assert unrelated.poll() is None  # still running
        assert not node.pid_file.exists()  # the stale record is gone
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_broker_pid_is_trusted_only_with_its_own_config_file(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    node = broker.nodes_for(config)[0]
    node.home.mkdir(parents=True)
    other_node = sleeper(broker.MAIN_CLASS, str(tmp_path / "elsewhere" / "server.properties"))
    ours = sleeper(broker.MAIN_CLASS, str(node.properties_file))
    try:
        node.pid_file.write_text(str(other_node.pid))
        assert owned(node.pid_file, broker.MAIN_CLASS, str(node.properties_file)) is None
        broker.down(config)
        assert other_node.poll() is None
        node.pid_file.write_text(str(ours.pid))
        assert owned(node.pid_file, broker.MAIN_CLASS, str(node.properties_file)) == ours.pid
        broker.down(config)
        assert not alive(ours.pid)  # stopped (and reaped by alive())
    finally:
        for proc in (other_node, ours):
            proc.kill()
            proc.wait()


def test_a_stale_cluster_pid_naming_an_unrelated_process_is_never_signalled(tmp_path: Path) -> None:
    settings = SparkClusterConfig("127.0.0.1", 7077, 8080, 1, 1, "512m", "256m", "cluster")
    cluster = Cluster(settings, tmp_path / "cluster")
    cluster.home.mkdir()
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        for pid_file in cluster.pid_files():
            pid_file.write_text(str(unrelated.pid))
        down(cluster, timeout=2)
        time.sleep(0.3)
        assert unrelated.poll() is None
        assert not any(p.exists() for p in cluster.pid_files())
    finally:
        unrelated.kill()
        unrelated.wait()


def test_an_unreadable_pid_file_names_no_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    assert owned(pid_file) is None
    pid_file.write_text("not a pid\n")
    assert owned(pid_file) is None
