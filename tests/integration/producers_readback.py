"""Read a whole topic back, for the producer tests: every record with its key, value and headers."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int


def read_topic(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Sent]:
    """Every record in the topic now, partition by partition in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, f"no topic {topic}"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Sent] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        polls = int(timeout_s / 0.5)
        while remaining and polls:
            polls -= 1
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for m in batch:
                    if m.offset < end[tp]:
                        records.append(
                            Sent(
                                m.partition,
                                m.offset,
                                m.key.decode() if m.key is not None else None,
                                m.value,
                                {k: v.decode() for k, v in m.headers},
                                m.timestamp,
                            )
                        )
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        assert not remaining, f"could not read {topic} to its end within {timeout_s}s"
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()
