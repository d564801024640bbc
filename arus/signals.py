"""Stopping gracefully: Ctrl-C and SIGTERM (what service managers send) ask, they do not kill.

Every long-running command (producers, the kafka-python consumer, Spark jobs) wraps its run loop
in `stop_on_signals`, so both signals finish the unit of work in hand, print the summary and exit 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call `stop(signal name)` instead of ending the process.

    Only the main thread may install handlers; elsewhere (a test's worker thread) the block runs
    with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
