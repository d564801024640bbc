"""Guards that make a job fail fast and loudly instead of hanging or losing data in silence.

    check_kafka(kafka, topics)                      # broker reachable, login accepted, topics there
    check_lost_records(kafka, topic, checkpoints)   # records deleted past a checkpoint: stop or warn
    check_deadletter_ratio(bad, total, ...)         # the circuit breaker, once per micro-batch
    kill_point("after-delta", batch_id)             # fault injection for the tests (see below)

Each check raises a GuardError whose message names the cause and the fix. `docs/reliability.md`
lists the faults the tests inject and what they prove.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from arus.config import KafkaConfig

FAULT_ENV = "ARUS_FAULT_KILL_AFTER"


class GuardError(RuntimeError):
    """A job must not start or go on; the message says why and what to do."""


class KafkaUnavailable(GuardError):
    """No usable connection to Kafka: not listening, credentials rejected, or TLS not trusted."""


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def connection_problem(kafka: KafkaConfig, seen: Sequence[str]) -> str:
    """What kafka-python's bare "Unable to bootstrap" meant, from the errors it logged meanwhile."""
    where = kafka.bootstrap_servers
    text = "\n".join(seen)
    # A broker often drops a failed SASL login without an answer the client gets to read; the
    # telltale is a connection lost after the version handshake (`broker_version=(4, 3)`).
    dropped_after_handshake = "broker_version=(" in text and "disconnected" in text
    sasl = kafka.security_protocol.startswith("SASL")
    if "SaslAuthenticationFailed" in text or (sasl and dropped_after_handshake):
        return (
            f"Kafka at {where} rejected the login of user {kafka.sasl_username!r} "
            f"({kafka.sasl_mechanism}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            f"the TLS certificate of Kafka at {where} is not signed by a CA this client trusts "
            f"(KAFKA_SSL_CAFILE={kafka.ssl_cafile or '<system CAs>'})"
        )
    if "ECONNREFUSED" in text or "Connection refused" in text:
        return f"no Kafka broker answers at {where} (is it up? `make kafka-up`)"
    if "socket disconnected" in text or "Handshake failed" in text:
        return (
            f"Kafka at {where} closed the connection during the handshake: does it expect another "
            f"security protocol than {kafka.security_protocol} (KAFKA_SECURITY_PROTOCOL)?"
        )
    last = seen[-1] if seen else "no error logged"
    return f"could not connect to Kafka at {where}: {last}"


@contextmanager
def explained_connection_errors(kafka: KafkaConfig) -> Iterator[None]:
    """Within the block, a client that cannot bootstrap raises KafkaUnavailable naming the cause."""
    recorder = _Recorder()
    logger = logging.getLogger("kafka")
    logger.addHandler(recorder)
    try:
        yield
    except KafkaTimeoutError:
        raise KafkaUnavailable(connection_problem(kafka, recorder.messages)) from None
    finally:
        logger.removeHandler(recorder)


def check_kafka(kafka: KafkaConfig, topics: Sequence[str], timeout_s: float = 5.0) -> None:
    """Fail within `timeout_s` unless the broker accepts our login and every topic exists."""
    with explained_connection_errors(kafka):
        admin = KafkaAdminClient(
            **kafka.client_kwargs(),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        )
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if missing:
        who = f" or user {kafka.sasl_username!r} may not describe them" if kafka.sasl_username else ""
        raise GuardError(
            f"topic(s) {', '.join(map(repr, missing))} do not exist on {kafka.bootstrap_servers}{who} "
            "(`make kafka-up` creates the topics in conf/arus.toml)"
        )


def checkpointed_offsets(checkpoint: Path) -> dict[str, dict[int, int]]:
    """Where a streaming query resumes reading Kafka: the end offsets of its last committed batch.

    Spark's offset log: `offsets/<batch>` holds a version line, a metadata line, then one JSON
    line per source ({"topic": {"partition": offset}}); `commits/<batch>` marks the batch done.
    """
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return {}
    offsets: dict[str, dict[int, int]] = {}
    for line in (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()[2:]:
        try:
            source = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(source, dict):
            for topic, partitions in source.items():
                offsets[topic] = {int(p): int(o) for p, o in partitions.items()}
    return offsets


def lost_ranges(resume_at: dict[int, int], earliest: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [first, end) a query would skip: deleted before it read them."""
    return {p: (offset, earliest[p]) for p, offset in resume_at.items() if earliest.get(p, 0) > offset}


def earliest_offsets(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    with explained_connection_errors(kafka):
        consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, bootstrap_timeout_ms=8000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.beginning_offsets(partitions).items()}
    finally:
        consumer.close()


def check_lost_records(
    kafka: KafkaConfig, topic: str, checkpoints: Sequence[Path], fail: bool = True
) -> list[str]:
    """Records of `topic` deleted (retention, delete_records) before these queries read them.

    Fails when `fail`; otherwise returns one warning per gap, for the job to log and go on.
    """
    resume = {cp: checkpointed_offsets(cp).get(topic) for cp in checkpoints}
    if not any(resume.values()):
        return []
    earliest = earliest_offsets(kafka, topic)
    gaps = [
        f"offsets {first}-{end - 1} of {topic} partition {p} were deleted before query "
        f"{cp.name!r} read them ({end - first} records)"
        for cp, offsets in resume.items()
        for p, (first, end) in sorted(lost_ranges(offsets or {}, earliest).items())
    ]
    if gaps and fail:
        raise GuardError(
            "data loss upstream: " + "; ".join(gaps) + ". The job stops rather than skip them; to go on "
            "without them set [aggregate] fail_on_data_loss = false"
        )
    return gaps


def check_deadletter_ratio(bad: int, total: int, max_ratio: float, min_records: int, batch_id: int) -> None:
    """The circuit breaker: a micro-batch with too large a share of bad records stops the job."""
    if total >= max(min_records, 1) and bad / total > max_ratio:
        raise GuardError(
            f"circuit breaker: {bad} of {total} records in micro-batch {batch_id} are bad "
            f"({bad / total:.0%} > max_deadletter_ratio {max_ratio:.0%}); is the upstream broken? "
            "Nothing of this batch was written; fix the source or raise [aggregate] max_deadletter_ratio, "
            "then restart on the same checkpoint"
        )


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
