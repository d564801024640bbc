"""The producers' shared pieces that need no broker: pacing, event times, ids, flags."""

from __future__ import annotations

import argparse
import itertools
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future
from kafka.partitioner.default import DefaultPartitioner, murmur2

from arus.config import DEFAULT_CONFIG, load_config
from arus.core.rules import time_text
from arus.io.producer import KeyHashPartitioner, ProducerError
from arus.sources.base import Source, add_send_arguments, launch, with_send_arguments
from arus.sources.send import (
    ChildFeed,
    Pacer,
    Record,
    SendLimits,
    SendLoop,
    origin_headers,
    parse_time,
    stable_id,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_pacer(pacer: Pacer, clock: FakeClock, dues: list[datetime | None]) -> list[float]:
    """The send times a loop would get: it waits what the pacer says, then sends."""
    sent = []
    for due in dues:
        clock.now += pacer.delay(due)
        sent.append(round(clock.now - 100.0, 6))
    return sent


def test_rate_spaces_sends_evenly() -> None:
    clock = FakeClock()
    assert run_pacer(Pacer(rate=4, clock=clock), clock, [None] * 5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_rate_catches_up_at_most_one_second_after_a_stall() -> None:
    clock = FakeClock()
    pacer = Pacer(rate=10, clock=clock)
    pacer.delay()
    clock.now += 5.0  # the loop was stuck for 5 s
    waits = [pacer.delay() for _ in range(12)]
    # The record due now and one second's worth more (10) go at once, then the rate holds again.
    assert waits[:11] == pytest.approx([0.0] * 11)
    assert waits[11] == pytest.approx(0.1)


def test_speed_keeps_event_time_gaps_scaled() -> None:
    clock = FakeClock()
    dues = [T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=90), T0 + timedelta(seconds=90)]
    assert run_pacer(Pacer(speed=60, clock=clock), clock, dues) == [0.0, 1.0, 1.5, 1.5]


def test_speed_and_rate_together_take_the_slower() -> None:
    clock = FakeClock()
    dues = [T0, T0, T0 + timedelta(seconds=600)]
    assert run_pacer(Pacer(rate=2, speed=600, clock=clock), clock, dues) == [0.0, 0.5, 1.0]


def test_speed_sends_earlier_event_times_at_once() -> None:
    clock = FakeClock()
    dues = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)]
    assert run_pacer(Pacer(speed=10, clock=clock), clock, dues) == [0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2024-03-01T12:00:00Z", "iso", T0),
        ("2024-03-01T19:00:00+07:00", "iso", T0),
        ("2024-03-01 12:00:00", "iso", T0),
        ("2024-03-01T12:00:00.250Z", "iso", T0 + timedelta(milliseconds=250)),
        ("1709294400", "epoch_s", T0),
        (1709294400000, "epoch_ms", T0),
        ("1709294400000.5", "epoch_ms", T0 + timedelta(microseconds=500)),
        ("01/03/2024 12:00", "%d/%m/%Y %H:%M", T0),
    ],
)
def test_parse_time_gives_aware_utc(value: object, fmt: str, expected: datetime) -> None:
    parsed = parse_time(value, fmt)
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_parse_time_takes_naive_times_in_the_given_zone() -> None:
    jakarta = timezone(timedelta(hours=7))
    assert parse_time("2024-03-01 19:00", "iso", jakarta) == T0
    assert parse_time("01/03/2024 19:00", "%d/%m/%Y %H:%M", jakarta) == T0


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        ("", "iso"),
        (None, "iso"),
        ("yesterday", "iso"),
        ("2024-02-30", "iso"),
        ("12abc", "epoch_s"),
        ("nan", "epoch_s"),
        (True, "epoch_ms"),
        ("2024-03-01", "%d/%m/%Y"),
    ],
)
def test_parse_time_refuses_what_it_cannot_read(value: object, fmt: str) -> None:
    with pytest.raises(ValueError):
        parse_time(value, fmt)


def test_time_text_is_utc_with_milliseconds_and_z() -> None:
    assert time_text(datetime(2024, 3, 1, 19, 0, 0, 123456, tzinfo=timezone(timedelta(hours=7)))) == (
        "2024-03-01T12:00:00.123Z"
    )
    with pytest.raises(ValueError):
        time_text(datetime(2024, 3, 1))  # noqa: DTZ001 - a naive time is the point


def test_stable_id_is_a_uuid5_of_the_parts() -> None:
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "test")
    a = stable_id(ns, "src", "key", 1)
    assert a == stable_id(ns, "src", "key", 1) == str(uuid.uuid5(ns, "src/key/1"))
    assert uuid.UUID(a).version == 5
    assert len({a, stable_id(ns, "src", "key", 2), stable_id(ns, "other", "key", 1)}) == 3


def test_origin_headers() -> None:
    assert origin_headers("csv-replay", source_file="a.csv", line="7") == (
        ("source", b"csv-replay"),
        ("schema_version", b"1"),
        ("source_file", b"a.csv"),
        ("line", b"7"),
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_send_arguments(parser)
    return parser.parse_args(argv)


def test_send_flags_override_the_config() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    changed = with_send_arguments(
        config,
        parse(
            [
                "--bootstrap-servers",
                "b1:9092,b2:9092",
                "--compression",
                "zstd",
                "--linger-ms",
                "5",
                "--batch-size",
                "1024",
            ]
        ),
    )
    assert changed.kafka.client_kwargs()["bootstrap_servers"] == ["b1:9092", "b2:9092"]
    assert (changed.producer.compression, changed.producer.linger_ms, changed.producer.batch_size) == (
        "zstd",
        5,
        1024,
    )
    assert changed.producer.acks == "all" and changed.producer.idempotence
    assert with_send_arguments(config, parse([])) == config


def test_fewer_acks_turn_idempotence_off() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    changed = with_send_arguments(config, parse(["--acks", "1", "--compression", "none"]))
    assert (changed.producer.acks, changed.producer.idempotence, changed.producer.compression) == (
        "1",
        False,
        "",
    )


def test_rate_flag() -> None:
    assert parse(["--rate", "unlimited"]).rate is None
    assert parse(["--rate", "250"]).rate == 250.0
    with pytest.raises(SystemExit):
        parse(["--rate", "-1"])


def test_security_settings_and_secrets_come_from_the_environment() -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "arus",
        "KAFKA_SASL_PASSWORD": "s3cret",
    }
    config = with_send_arguments(
        load_config(DEFAULT_CONFIG, env=env), parse(["--bootstrap-servers", "h:9094"])
    )
    assert config.kafka.client_kwargs() == {
        "bootstrap_servers": ["h:9094"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "arus",
        "sasl_plain_password": "s3cret",
    }
    # Spark's readers carry the same credentials, and do not let the broker hold an empty fetch.
    jaas = (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="arus" password="s3cret";'
    )
    assert config.kafka.spark_read_options() == {
        "kafka.bootstrap.servers": "h:9094",
        "kafka.security.protocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "SCRAM-SHA-256",
        "kafka.sasl.jaas.config": jaas,
        "kafka.fetch.max.wait.ms": "10",
    }


class SettlingProducer:
    """kafka-python's send surface, settling each record's future (kafka.future.Future, the client's
    own class) at once: ok, or failed with an error. Records whose value starts with b"bad" fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.flushed = 0

    def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int | None,
    ) -> Future:
        self.sent.append((topic, key, value, headers))
        return self.deliver(key, value)

    def deliver(self, key: bytes | None, value: bytes | None) -> Future:
        future = Future()
        if value is not None and value.startswith(b"bad"):
            return future.failure(KafkaTimeoutError("no room"))
        return future.success(len(self.sent))

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1


def numbered(n: int, taken: list[int]) -> Iterator[Record]:
    for i in range(n):
        taken.append(i)
        yield Record("t", f"k{i}", b"bad" if i % 4 == 3 else b"ok", (("source", b"test"),))


def test_send_loop_counts_acks_and_failures_by_type() -> None:
    producer = SettlingProducer()
    acked: list[str | None] = []
    failed: list[tuple[str | None, str]] = []
    loop = SendLoop(
        producer,  # type: ignore[arg-type]
        progress=None,
        on_ack=lambda r: acked.append(r.key),
        on_error=lambda r, e: failed.append((r.key, type(e).__name__)),
    )
    summary = loop.run(numbered(8, []))
    assert (summary.sent, summary.acked, summary.failed) == (8, 6, 2)
    assert summary.errors == {"KafkaTimeoutError": 2}
    assert acked == ["k0", "k1", "k2", "k4", "k5", "k6"]
    assert failed == [("k3", "KafkaTimeoutError"), ("k7", "KafkaTimeoutError")]
    assert producer.sent[0] == ("t", b"k0", b"ok", [("source", b"test")])
    assert (summary.stopped_by, producer.flushed) == ("end of input", 1)


def test_send_loop_without_record_callbacks_counts_alike() -> None:
    loop = SendLoop(SettlingProducer(), progress=None)  # type: ignore[arg-type]
    summary = loop.run(numbered(8, []))
    assert (summary.sent, summary.acked, summary.failed, summary.errors) == (
        8,
        6,
        2,
        {"KafkaTimeoutError": 2},
    )


def test_count_takes_no_record_beyond_the_last_one_sent() -> None:
    taken: list[int] = []
    producer = SettlingProducer()
    summary = SendLoop(producer, progress=None).run(numbered(100, taken), SendLimits(count=5))  # type: ignore[arg-type]
    assert taken == [0, 1, 2, 3, 4] and len(producer.sent) == 5
    assert summary.stopped_by == "count reached"


def test_a_stopped_loop_sends_nothing_more_and_says_why() -> None:
    producer = SettlingProducer()
    loop = SendLoop(producer, progress=None)  # type: ignore[arg-type]
    taken: list[int] = []

    def records() -> Iterator[Record]:
        for record in numbered(100, taken):
            if len(taken) == 3:
                loop.stop("SIGTERM")
            yield record

    summary = loop.run(records())
    assert taken == [0, 1, 2] and len(producer.sent) == 3
    assert (summary.stopped_by, loop.stopped) == ("SIGTERM", True)


class LateProducer(SettlingProducer):
    """SettlingProducer with futures that settle later, out of send order, the way a
    real client's do (batches per partition, acknowledged as responses come): every `every` sends
    the unsettled ones are settled newest first, and flush settles the rest. Records whose value
    starts with b"bad" fail, each with its own error type by its key's last digit."""

    ERRORS = (KafkaTimeoutError, KafkaConnectionError, NotLeaderForPartitionError)

    def __init__(self, every: int = 5, settle_on_flush: bool = True) -> None:
        super().__init__()
        self.every = every
        self.settle_on_flush = settle_on_flush
        self.unsettled: list[tuple[Future, bytes | None, bytes | None]] = []

    def deliver(self, key: bytes | None, value: bytes | None) -> Future:
        future = Future()
        self.unsettled.append((future, key, value))
        if not len(self.sent) % self.every:
            self.settle()
        return future

    def settle(self) -> None:
        for future, key, value in reversed(self.unsettled):
            if value is not None and value.startswith(b"bad"):
                future.failure(self.ERRORS[int((key or b"0")[-1:]) % 3]("no luck"))
            else:
                future.success(key)
        self.unsettled.clear()

    def flush(self, timeout: float | None = None) -> None:
        if not self.settle_on_flush:
            raise KafkaTimeoutError("still waiting")
        self.settle()


def late_records(n: int) -> Iterator[Record]:
    for i in range(n):
        yield Record("t", f"k{i}", b"bad" if i % 7 in (3, 5) else b"ok", (("source", b"test"),))


def test_bulk_settling_counts_every_ack_and_failure_as_the_callbacks_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without on_ack/on_error the loop keeps the futures and settles them in bulk; with them,
    each record gets callbacks. Both count the same acks and the same failures by type."""
    monkeypatch.setattr(SendLoop, "SETTLE_EVERY", 8)
    failed: list[tuple[str | None, str]] = []
    with_callbacks = SendLoop(
        LateProducer(),  # type: ignore[arg-type]
        progress=None,
        on_error=lambda r, e: failed.append((r.key, type(e).__name__)),
    )
    bulk = SendLoop(LateProducer(), progress=None)  # type: ignore[arg-type]
    assert with_callbacks._pending is None and bulk._pending is not None
    expected = with_callbacks.run(late_records(1000))
    got = bulk.run(late_records(1000))
    assert (got.sent, got.acked, got.failed) == (expected.sent, expected.acked, expected.failed)
    assert got.errors == expected.errors
    bad = [i for i in range(1000) if i % 7 in (3, 5)]
    assert (got.acked, got.failed) == (1000 - len(bad), len(bad))
    by_type = Counter(LateProducer.ERRORS[i % 10 % 3].__name__ for i in bad)
    assert got.errors == dict(by_type)
    assert sorted(failed) == sorted((f"k{i}", LateProducer.ERRORS[i % 10 % 3].__name__) for i in bad)
    assert not bulk._pending


def test_bulk_settling_stops_at_the_first_record_in_flight() -> None:
    """Settling counts the head of the queue only up to a record still in flight, so a record is
    never counted before it is acknowledged, and none twice."""
    producer = LateProducer(every=10**9)
    loop = SendLoop(producer, progress=None)  # type: ignore[arg-type]
    for record in late_records(10):
        loop.send(record)
    first, *_ = producer.unsettled[0]
    producer.unsettled[3][0].success(None)  # a later record acknowledged first
    loop.settle()
    assert (loop.summary.acked, loop.summary.failed) == (0, 0)
    first.success(None)
    producer.unsettled[1][0].failure(KafkaTimeoutError("late"))
    loop.settle()
    assert (loop.summary.acked, loop.summary.failed, loop.summary.errors) == (
        1,
        1,
        {"KafkaTimeoutError": 1},
    )
    assert len(loop._pending or ()) == 8


def test_a_flush_that_times_out_names_the_records_still_unacknowledged() -> None:
    producer = LateProducer(every=4, settle_on_flush=False)
    loop = SendLoop(producer, progress=None)  # type: ignore[arg-type]
    with pytest.raises(ProducerError, match=r"^2 records were not acknowledged"):
        loop.run(late_records(10))
    assert (loop.summary.sent, loop.summary.acked + loop.summary.failed) == (10, 8)


class Cluster:
    """The slice of kafka-python's ClusterMetadata a partitioner reads."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions)


def test_key_hash_partitioner_partitions_as_kafka_pythons_default() -> None:
    keys = [f"dev-{i:04d}".encode() for i in range(300)] + [b"", b"x", "dév".encode(), bytes(range(256))]
    for n in (1, 3, 7, 12):
        cluster = Cluster(n)
        memo = KeyHashPartitioner()
        expected = [DefaultPartitioner().partition("t", k, k, None, None, cluster) for k in keys]
        assert [memo.partition("t", k, k, None, None, cluster) for k in keys] == expected
        assert [memo.partition("t", k, k, None, None, cluster) for k in keys] == expected  # memoised
    # A record without a key goes to some partition, as kafka-python's default picks one at random.
    assert KeyHashPartitioner().partition("t", None, None, None, None, Cluster(3)) in {0, 1, 2}


def expected_java(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_key_hash_partitioner_starts_afresh_beyond_its_key_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KeyHashPartitioner, "MAX_KEYS", 10)
    memo, cluster = KeyHashPartitioner(), Cluster(5)
    got = [memo.partition("t", None, str(i).encode(), None, None, cluster) for i in range(95)]
    assert got == [expected_java(str(i).encode(), 5) for i in range(95)]
    assert len(memo._hashes) <= 10


def pids(n: int) -> Iterator[tuple[int, int]]:
    for i in range(n):
        yield i, os.getpid()


def failing() -> Iterator[int]:
    yield 1
    raise RuntimeError("generator broke")


def endless() -> Iterator[int]:
    yield from itertools.count()


def test_child_feed_hands_over_every_item_in_order_from_another_process() -> None:
    with ChildFeed(partial(pids, 1000), batch=64) as feed:
        got = list(feed)
    assert [i for i, _ in got] == list(range(1000))
    assert {pid for _, pid in got} != {os.getpid()} and len({pid for _, pid in got}) == 1


def test_child_feed_says_when_the_generator_process_fails(capfd: pytest.CaptureFixture[str]) -> None:
    with ChildFeed(failing, batch=1) as feed, pytest.raises(ProducerError, match="stopped early"):
        list(feed)
    assert "generator broke" in capfd.readouterr().err  # the child's traceback


def test_closing_a_child_feed_early_ends_the_child() -> None:
    feed = ChildFeed(endless, batch=100)
    assert list(itertools.islice(feed, 250)) == list(range(250))
    feed.close()
    assert not feed._child.is_alive() and feed._child.exitcode is not None


def test_a_producer_with_unacknowledged_records_exits_1_and_a_config_mistake_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exit codes of arus.runtime.job: records not acknowledged are a failure while running (1),
    a config mistake is refused before anything is sent (2), each said in one line."""
    from arus.sources.send import Summary

    unacked = Summary(sent=3, acked=2)
    assert Source.finish(None, unacked) == 1  # type: ignore[arg-type]

    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace('acks = "all"', 'acks = "2"'))
    args = argparse.Namespace(
        config=str(bad), rate=None, speed=None, count=1, duration=None, metrics_port=None
    )
    assert launch("produce-iot", args, lambda config, limits: pytest.fail("started")) == 2
    assert capsys.readouterr().err == f"produce-iot: {bad}: producer.acks = '2': one of '0', '1', 'all'\n"
