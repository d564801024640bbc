"""Stopping background daemons by PID: politely first, SIGKILL for one that will not go."""

from __future__ import annotations

import subprocess
import sys
import time

from arus.ops.processes import alive, stop


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
