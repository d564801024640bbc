"""An optional faster client: confluent-kafka (librdkafka) behind the KafkaProducer surface SendLoop uses.

    [producer] client = "confluent-kafka"          # in conf/arus.toml, or
    ARUS_PRODUCER_CLIENT=confluent-kafka python -m arus.sources.iot --count 100000

kafka-python stays the default. This client sends the same records with the same [producer]
settings (acks, idempotence, compression, linger, batch size) and reports every delivery through
the same callbacks, so SendLoop counts acks and failures alike. Its delivery callbacks run on the
sending thread (from `poll`/`flush`), not on an I/O thread. Needs `pip install confluent-kafka`
(Quix Streams, a benchmark dependency, brings it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from arus.config import KafkaConfig, ProducerConfig

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


def settings(kafka: KafkaConfig, producer: ProducerConfig) -> dict[str, Any]:
    """[kafka] and [producer] as librdkafka properties (the Java client's names)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
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
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username
        conf["sasl.password"] = kafka.sasl_password
    if kafka.ssl_cafile:
        conf["ssl.ca.location"] = kafka.ssl_cafile
    return conf


def make_confluent_producer(kafka: KafkaConfig, producer: ProducerConfig) -> ConfluentProducer:
    return ConfluentProducer(settings(kafka, producer), producer.max_block_ms)
