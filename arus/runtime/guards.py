"""Guards that make a Spark job fail fast and loudly instead of losing data in silence.

    check_lost_records(kafka, topic, checkpoints)   # records deleted past a checkpoint: stop or warn
    kill_point("after-delta", batch_id)             # fault injection for the tests (see below)

Each check raises a GuardError whose message names the cause and the fix. The checks the
kafka-python engine shares live below this layer: the circuit breaker (check_deadletter_ratio) in
arus.core.rules, the broker and topic check (check_kafka) in arus.io.kafka. `docs/reliability.md`
lists the faults the tests inject and what they prove.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from arus.config import KafkaConfig
from arus.core.rules import GuardError
from arus.io.checkpoints import resume_offsets
from arus.io.kafka import earliest_offsets

FAULT_ENV = "ARUS_FAULT_KILL_AFTER"


def lost_ranges(resume_at: dict[int, int], earliest: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [first, end) a query would skip: deleted before it read them."""
    return {p: (offset, earliest[p]) for p, offset in resume_at.items() if earliest.get(p, 0) > offset}


def check_lost_records(
    kafka: KafkaConfig, topic: str, checkpoints: Sequence[Path], fail: bool = True
) -> list[str]:
    """Records of `topic` deleted (retention, delete_records) before these queries read them.

    Fails when `fail`; otherwise returns one warning per gap, for the job to log and go on.
    """
    resume = {cp: {p: o for (t, p), o in resume_offsets(cp).items() if t == topic} for cp in checkpoints}
    if not any(resume.values()):
        return []
    earliest = earliest_offsets(kafka, topic)
    gaps = [
        f"offsets {first}-{end - 1} of {topic} partition {p} were deleted before query "
        f"{cp.name!r} read them ({end - first} records)"
        for cp, offsets in resume.items()
        for p, (first, end) in sorted(lost_ranges(offsets, earliest).items())
    ]
    if gaps and fail:
        raise GuardError(
            "data loss upstream: " + "; ".join(gaps) + ". The job stops rather than skip them; to go on "
            "without them set [stream.guards] fail_on_data_loss = false"
        )
    return gaps


def kill_point(name: str, batch_id: int) -> None:
    """Die like a power cut here when ARUS_FAULT_KILL_AFTER is `name` or `name:<batch_id>`.

    SIGKILL goes to the whole process group (Python driver and JVM alike, no shutdown hooks), so
    run a job with this variable set in its own session, as tests/faults does.
    """
    wanted = os.environ.get(FAULT_ENV, "")
    point, _, batch = wanted.partition(":")
    if point == name and (not batch or int(batch) == batch_id):
        print(f"fault injection: SIGKILL at {name}, batch {batch_id}", file=sys.stderr, flush=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)
