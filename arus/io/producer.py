"""The Kafka producer client every writer uses: the producers (arus.sources) and the kafka-python
consumer's dead-letter and output topics (arus.pyengine).

`make_producer` builds a kafka-python KafkaProducer with the configured durability and batching
([kafka], [producer]) and fails fast, with the cause, when no broker answers; `connect` also checks
the topics exist. An optional faster client, confluent-kafka (librdkafka), sits behind the same
surface (send / flush / partitions_for / close, futures with add_callback / add_errback):

    [producer] client = "confluent-kafka"          # in conf/arus.toml, or
    ARUS_PRODUCER_CLIENT=confluent-kafka python -m producers.iot --count 100000

kafka-python stays the default. The other client sends the same records with the same [producer]
settings (acks, idempotence, compression, linger, batch size) and reports every delivery through
the same callbacks, so a send loop counts acks and failures alike. Its delivery callbacks run on the
sending thread (from `poll`/`flush`), not on an I/O thread. Needs `pip install confluent-kafka`
(Quix Streams, a benchmark dependency, brings it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner, murmur2

from arus.config import Config, KafkaConfig, ProducerConfig
from arus.io.kafka import KafkaUnavailable, explained_connection_errors


class ProducerError(RuntimeError):
    """A producer cannot start or continue (broker down, topic missing, ...)."""


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioning (the Java client's: murmur2 of the key bytes modulo the
    partitions), with each key's hash computed once. The pure-Python murmur2 costs about 5 us a
    record, a tenth of a send, and producers send the same few keys (devices) over and over."""

    MAX_KEYS = 1 << 16  # beyond this many distinct keys (ids as keys), start the memo afresh

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


def make_producer(kafka: KafkaConfig, settings: ProducerConfig, **overrides: Any) -> KafkaProducer:
    """A KafkaProducer with the configured durability and batching; fails fast if no broker answers."""
    # Overrides are kafka-python options, so a call with overrides always gets kafka-python.
    if settings.client == "confluent-kafka" and not overrides:
        try:
            return make_confluent_producer(kafka, settings)
        except KafkaTimeoutError as exc:
            raise ProducerError(f"{exc} (gave up after {settings.max_block_ms} ms)") from None
    if settings.client not in ("kafka-python", "confluent-kafka"):
        raise ProducerError(
            f"[producer] client must be kafka-python or confluent-kafka, got {settings.client!r}"
        )
    kwargs: dict[str, Any] = {
        **kafka.client_kwargs(),
        "acks": "all" if settings.acks == "all" else int(settings.acks),
        "enable_idempotence": settings.idempotence,
        "compression_type": settings.compression or None,
        "linger_ms": settings.linger_ms,
        "batch_size": settings.batch_size,
        "max_block_ms": settings.max_block_ms,
        "bootstrap_timeout_ms": settings.max_block_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "partitioner": KeyHashPartitioner(),
        **overrides,
    }
    try:
        # Names the cause (nothing listening, credentials rejected, untrusted TLS) instead of a bare timeout.
        with explained_connection_errors(kafka):
            return KafkaProducer(**kwargs)
    except KafkaUnavailable as exc:
        raise ProducerError(f"{exc} (gave up after {settings.max_block_ms} ms)") from None
    except KafkaError as exc:
        raise ProducerError(f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}") from None


def check_topics(producer: KafkaProducer, topics: Iterable[str], bootstrap: str) -> None:
    """Fail within max_block_ms, with the topic's name, when a topic does not exist."""
    names = sorted(set(topics))
    # kafka-python refreshes metadata at most every retry_backoff_ms (100 ms) and one topic at a
    # time when asked in turn; asked at once, the topics share one refresh.
    with ThreadPoolExecutor(max(len(names), 1), thread_name_prefix="check-topic") as pool:
        found = dict(zip(names, pool.map(partial(_partitions, producer), names), strict=True))
    for topic in names:
        if not found[topic]:
            raise ProducerError(
                f"topic {topic!r} does not exist on {bootstrap} (create it: `make kafka-up` creates "
                "the topics in conf/arus.toml)"
            )


def _partitions(producer: KafkaProducer, topic: str) -> set[int] | None:
    try:
        partitions: set[int] | None = producer.partitions_for(topic)
    except KafkaTimeoutError:
        return None
    return partitions


def close_producer(producer: KafkaProducer, timeout: float = 10.0) -> None:
    """Close `producer` on every path, dropping what it could not deliver within `timeout`.

    kafka-python's close raises KafkaTimeoutError when its flush times out and leaves the producer
    open, so the producer's __del__ closes it again at exit and prints that traceback over the
    error the user was told. Past the timeout its sender is stopped without waiting (as close does
    once the flush is done), which fails the records still pending, and the producer closes.
    """
    try:
        producer.close(timeout=timeout)
    except KafkaTimeoutError:
        producer._sender.force_close()
        producer._sender.join(timeout)
        producer.close(timeout=0)


def connect(config: Config, topics: Iterable[str]) -> KafkaProducer:
    """A producer for `config`, after checking that every topic exists."""
    producer = make_producer(config.kafka, config.producer)
    try:
        check_topics(producer, topics, config.kafka.bootstrap_servers)
    except BaseException:
        close_producer(producer, timeout=0)
        raise
    return producer


POLL_EVERY = 1024  # serve delivery callbacks every this many sends (and whenever the queue is full)


class DeliveryError(KafkaError):
    """librdkafka could not deliver a record (its error text is the message)."""


class Delivery:
    """What `send` returns: a record's pending delivery, with kafka-python's callback methods."""

    __slots__ = ("callbacks", "done", "errbacks", "error", "metadata")

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.errbacks: list[Callable[[Exception], None]] = []
        self.done = False
        self.metadata: Any = None
        self.error: Exception | None = None

    def get(self, timeout: float | None = None) -> Any:
        """The delivered message; after `flush` every delivery is settled, so this does not wait."""
        if not self.done:
            raise KafkaTimeoutError("delivery not settled yet (flush first)")
        if self.error is not None:
            raise self.error
        return self.metadata

    def add_callback(self, fn: Callable[[Any], None]) -> Delivery:
        self.callbacks.append(fn)
        return self

    def add_errback(self, fn: Callable[[Exception], None]) -> Delivery:
        self.errbacks.append(fn)
        return self

    def __call__(self, err: Any, msg: Any) -> None:
        self.done = True
        if err is None:
            self.metadata = msg
            for fn in self.callbacks:
                fn(msg)
        else:
            self.error = DeliveryError(str(err))
            for fn_err in self.errbacks:
                fn_err(self.error)


class ConfluentProducer:
    """send / flush / partitions_for / close over confluent_kafka.Producer."""

    def __init__(self, conf: dict[str, Any], max_block_ms: int) -> None:
        from confluent_kafka import KafkaException, Producer

        self._exception = KafkaException
        self._producer = Producer(conf)
        self._max_block_s = max_block_ms / 1000
        self._sent = 0
        try:
            self._producer.list_topics(timeout=self._max_block_s)
        except KafkaException as exc:
            raise KafkaTimeoutError(
                f"no Kafka broker answers at {conf['bootstrap.servers']}: {exc}"
            ) from None

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        delivery = Delivery()
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=headers, timestamp=timestamp_ms or 0, on_delivery=delivery
                )
                break
            except BufferError:
                # The local queue is full: serve deliveries until there is room (back-pressure).
                self._producer.poll(0.01)
        self._sent += 1
        if not self._sent % POLL_EVERY:
            self._producer.poll(0)
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise KafkaTimeoutError(f"{left} records not delivered within {timeout}s")

    def partitions_for(self, topic: str) -> set[int] | None:
        try:
            meta = self._producer.list_topics(topic, timeout=self._max_block_s)
        except self._exception:
            return None
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        return set(found.partitions)

    def close(self, timeout: float | None = None) -> None:
        self._producer.flush(10 if timeout is None else timeout)


def confluent_settings(kafka: KafkaConfig, producer: ProducerConfig) -> dict[str, Any]:
    """[kafka] and [producer] as librdkafka properties (the Java client's names)."""
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        **kafka.security_settings("librdkafka"),
        "acks": producer.acks,
        "enable.idempotence": producer.idempotence,
        "compression.type": producer.compression or "none",
        "linger.ms": producer.linger_ms,
        "batch.size": producer.batch_size,
        "request.timeout.ms": producer.request_timeout_ms,
        # The Java client's and kafka-python's partitioning (librdkafka's default hashes with CRC32):
        # a device's records land on the same partition whichever client sends them.
        "partitioner": "murmur2_random",
    }


def make_confluent_producer(kafka: KafkaConfig, producer: ProducerConfig) -> ConfluentProducer:
    return ConfluentProducer(confluent_settings(kafka, producer), producer.max_block_ms)
