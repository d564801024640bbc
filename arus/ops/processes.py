"""Background daemons by PID: is one alive, and stop it (gently, then for sure).

The local Kafka brokers and the Spark standalone daemons are started detached and recorded in PID
files, so `make kafka-down` or `make spark-cluster-down` from another shell can stop them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether `pid` runs; a child of ours that exited is reaped, a zombie counts as gone."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie whose parent is gone still answers kill(0); /proc tells the truth.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def stop(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0, group: bool = False) -> None:
    """Send `sig` to `pid` (or its process group) and wait; SIGKILL what is still there at `timeout`."""
    send = os.killpg if group else os.kill
    try:
        send(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        send(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.1)
