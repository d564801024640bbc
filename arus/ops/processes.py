"""Background daemons by PID: which one is ours, is it alive, and stop it (gently, then for sure).

The local Kafka brokers and the Spark standalone daemons are started detached and recorded in PID
files, so `arus broker down` or `arus cluster down` from another shell can stop them. A PID file
outlives its process (a reboot, a kill -9), and the system may since have given that PID to some
unrelated process: `owned` trusts a PID only while its command line is still the one arus started.
Everything goes through psutil, so it behaves the same on Linux and macOS.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil


def alive(pid: int) -> bool:
    """Whether `pid` runs; a child of ours that exited is reaped, a zombie counts as gone."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def owned(pid_file: Path, *marks: str) -> int | None:
    """The PID recorded in `pid_file` if that process runs and its command line has every mark.

    A mark is one whole argument, e.g. the Java main class and the node's own config file, so a
    reused PID (or another checkout's daemon of the same kind) is never taken for ours.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not alive(pid):
        return None
    try:
        args = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # another user's process (macOS refuses to show it) is not one arus started
        return None
    return pid if all(mark in args for mark in marks) else None


def stop(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0, group: bool = False) -> None:
    """Send `sig` to `pid` (or its process group) and wait; SIGKILL what is still there at `timeout`.

    Callers pass a PID they checked with `owned` (or a child they started themselves).
    """
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
