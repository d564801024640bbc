"""Kafka connections that fail fast and say why: the checks every Kafka client runs before it starts.

    check_kafka(kafka, topics)                  # broker reachable, login accepted, topics there
    with explained_connection_errors(kafka):    # "Unable to bootstrap" -> KafkaUnavailable(cause)
        client = KafkaConsumer(...)
    with logged_warnings() as seen:             # why a client retried: it says so only in its log
        ...
    earliest_offsets(kafka, topic)              # where each partition now begins

The producers (arus.sources), the kafka-python consumer (arus.pyengine) and the Spark jobs' guards
(arus.runtime.guards) all use these, so they live below all three.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from arus.config import KafkaConfig
from arus.core.rules import GuardError


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
def logged_warnings() -> Iterator[list[str]]:
    """The warnings and errors kafka-python logs within the block: its clients say why they retried
    or gave up only there (their exceptions are often a bare timeout)."""
    recorder = _Recorder()
    logger = logging.getLogger("kafka")
    logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        logger.removeHandler(recorder)


@contextmanager
def explained_connection_errors(kafka: KafkaConfig) -> Iterator[None]:
    """Within the block, a client that cannot bootstrap raises KafkaUnavailable naming the cause."""
    with logged_warnings() as seen:
        try:
            yield
        except KafkaTimeoutError:
            raise KafkaUnavailable(connection_problem(kafka, seen)) from None


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


def earliest_offsets(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    """The first offset each partition of `topic` still holds (retention deletes from the front)."""
    with explained_connection_errors(kafka):
        consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, bootstrap_timeout_ms=8000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.beginning_offsets(partitions).items()}
    finally:
        consumer.close()
