"""The benchmark suite's pure parts: tool-output parsers, statistics, latency and goal arithmetic,
and the producer fast paths the benchmarks led to (which must not change a single byte)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arus.bench.common import SPARK_CONF
from arus.bench.e2e import percentile, window_latencies
from arus.bench.java import parse_consumer_output, parse_producer_output
from arus.bench.payloads import padded_value, read_payload_file, write_payload_file
from arus.bench.report import render
from arus.bench.run import PROFILES, goals, summarise_runs
from arus.bench.soak import state_fill_seconds

from arus.config import KafkaConfig, ProducerConfig, load_config
from arus.grammar import duration_us
from arus.io.producer import Delivery, DeliveryError, confluent_settings
from arus.sources import iot

PRODUCER_OUTPUT = """\
Reading payloads from: /tmp/p.txt
77312 records sent, 15354.9 records/sec (2.72 MB/sec), 610.0 ms avg latency, 2881.0 ms max latency.
500000 records sent, 51834.957495 records/sec (9.17 MB/sec), 141.93 ms avg latency, 2881.00 ms max \
latency, 50 ms 50th, 966 ms 95th, 1136 ms 99th, 1281 ms 99.9th.
"""

CONSUMER_OUTPUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2025-01-01 10:00:00:000, 2025-01-01 10:00:02:270, 19.2963, 8.5006, 100000, 44052.8634, 1043, 1227, \
15.7264, 81499.5925
"""


@pytest.mark.parametrize(
    ("parse", "output", "figures"),
    [
        pytest.param(
            parse_producer_output,
            PRODUCER_OUTPUT,
            {
                "events": 500000,
                "events_per_s": 51834.957495,
                "mb_per_s": 9.17,
                "latency_avg_ms": 141.93,
                "latency_p99_ms": 1136.0,
            },
            id="producer-takes-the-final-summary",
        ),
        pytest.param(
            parse_consumer_output,
            CONSUMER_OUTPUT,
            {
                "events": 100000,
                "events_per_s": 81499.5925,
                "events_per_s_with_rebalance": 44052.8634,
                "fetch_time_ms": 1227.0,
                "rebalance_time_ms": 1043.0,
            },
            id="consumer-uses-the-fetch-rate",
        ),
    ],
)
def test_parse_perf_tool_output(
    parse: Callable[[str], dict[str, float]], output: str, figures: dict[str, float]
) -> None:
    assert parse(output) == figures


def test_parse_producer_output_without_summary_fails() -> None:
    with pytest.raises(ValueError, match="no ProducerPerformance summary"):
        parse_producer_output("77312 records sent, 15354.9 records/sec (2.72 MB/sec), 610.0 ms avg latency")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_window_latency_is_first_commit_with_the_final_count_minus_window_end() -> None:
    w1 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    w2 = w1 + 10
    end1, end2 = w1 + 10, w2 + 10
    base = end1
    versions = [
        (base - 3, [("d1", w1, end1, 4)]),
        (base + 1.5, [("d1", w1, end1, 10), ("d1", w2, end2, 2)]),
        (base + 12.0, [("d1", w1, end1, 10), ("d1", w2, end2, 9)]),
    ]
    # w1 final (10) first seen at base + 1.5; w2 final (9) at base + 12 = its end + 2.
    assert sorted(window_latencies(versions, produced_until=base + 100)) == [1.5, 2.0]
    # w2 ends after production stopped: left out.
    assert window_latencies(versions, produced_until=base + 5) == [1.5]


def test_summarise_runs_medians_and_keeps_failures_out() -> None:
    runs = [
        {"events_per_s": 10.0, "cpu_us_per_event": 3.0},
        {"events_per_s": 30.0, "cpu_us_per_event": 1.0},
        {"events_per_s": 20.0, "cpu_us_per_event": 2.0},
        {"error": "boom"},
    ]
    summary = summarise_runs(runs)
    assert summary["events_per_s"] == {"median": 20.0, "min": 10.0, "max": 30.0, "runs": [10.0, 30.0, 20.0]}
    assert summary["cpu_us_per_event"]["median"] == 2.0
    assert summary["runs_ok"] == 3
    assert summary["raw"] == runs


def _case(rate: float) -> dict[str, object]:
    return summarise_runs([{"events_per_s": rate}])


def test_goals_ratios_from_one_run() -> None:
    results = {
        "producers": {
            "cases": {
                "kafka-perf-tool (Java)": _case(100_000),
                "bare kafka-python loop": _case(10_000),
                "arus IoT producer (kafka-python)": _case(9_500),
                "arus IoT producer (confluent-kafka)": _case(60_000),
            }
        },
        "consumers": {
            "cases": {"arus aggregating consumer": _case(8_000), "Quix Streams aggregation": _case(10_000)}
        },
        "e2e": {
            "trigger": "2 seconds",
            "loads": [{"fraction": 0.5, "latency_p99_s": 3.0, "batch_ms_median": 1000}],
        },
    }
    by_goal = {g["goal"]: g for g in goals(results)}
    iot_goal = by_goal["arus IoT producer >= 0.9 x bare kafka-python loop"]
    assert iot_goal["ratio"] == pytest.approx(0.95)
    assert iot_goal["met"] is True
    fastest = by_goal["fastest arus producer path >= 0.5 x Java perf tool"]
    assert fastest["ratio"] == pytest.approx(0.6)
    assert "confluent-kafka" in fastest["how"]
    assert by_goal["arus aggregating consumer >= 1.0 x Quix Streams"]["met"] is False
    e2e = by_goal["end-to-end p99 at 50% load <= trigger + 2 x median batch"]
    assert e2e["ratio"] == pytest.approx(0.75)
    assert e2e["met"] is True
    assert "4.00 s" in e2e["how"]


def test_render_shows_goals_and_cases(tmp_path: Path) -> None:
    results = {
        "profile": "smoke",
        "producers": {"cases": {"bare kafka-python loop": _case(10_000)}, "seconds": 3},
        "goals": [{"goal": "g", "target": 0.9, "ratio": 0.5, "met": False, "how": "h"}],
    }
    text = render(results, tmp_path / "r.json")
    assert "| g | 0.50 | 0.90 | not yet | h |" in text
    assert "| bare kafka-python loop | 10,000 |" in text


def test_payload_file_holds_the_generators_readings(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    info = write_payload_file(path, 120, devices=7)
    pairs = read_payload_file(path)
    assert len(pairs) == 120 == info["lines"]
    events = [json.loads(value) for _, value in pairs]
    assert [key.decode() for key, _ in pairs] == [e["device_id"] for e in events]
    assert len({e["device_id"] for e in events}) == 7
    assert len({e["event_id"] for e in events}) == 120


def test_padded_value_has_the_requested_size() -> None:
    import random

    event = next(iter(iot.readings(iot.fleet(1, 1), datetime(2025, 1, 1, tzinfo=UTC), 1.0, 1)))
    assert len(padded_value(event, 1000, random.Random(1))) == 1000


def test_fast_event_id_is_uuid5() -> None:
    for device in ("dev-0000", "dev-0042", "ünï"):
        for event_time in ("2026-03-01T12:00:00.000Z", "1999-12-31T23:59:50.000Z"):
            expected = str(uuid.uuid5(iot.NAMESPACE, f"{iot.SOURCE}/{device}/{event_time}"))
            assert iot.event_id(device, event_time) == expected


def test_fast_encode_is_compact_json_dumps() -> None:
    event = {"a": 1, "b": [1.5, None], "c": 'ü"x', "d": {"e": True}}
    assert iot.encode(event) == json.dumps(event, separators=(",", ":")).encode()


def test_confluent_settings_mirror_the_producer_config() -> None:
    kafka = KafkaConfig(
        bootstrap_servers="h:1", security_protocol="SASL_SSL", sasl_mechanism="PLAIN", ssl_cafile="/ca.pem"
    )
    producer = ProducerConfig(
        acks="all",
        idempotence=True,
        compression="zstd",
        linger_ms=7,
        batch_size=1024,
        max_block_ms=5000,
        request_timeout_ms=9000,
        client="confluent-kafka",
    )
    assert confluent_settings(kafka, producer) == {
        "bootstrap.servers": "h:1",
        "security.protocol": "SASL_SSL",
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "zstd",
        "linger.ms": 7,
        "batch.size": 1024,
        "request.timeout.ms": 9000,
        "partitioner": "murmur2_random",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "",
        "sasl.password": "",
        "ssl.ca.location": "/ca.pem",
    }


def test_delivery_runs_callbacks_and_settles() -> None:
    acked: list[object] = []
    failed: list[Exception] = []
    ok = Delivery().add_callback(acked.append).add_errback(failed.append)
    ok(None, "msg")
    assert ok.get() == "msg"
    bad = Delivery().add_callback(acked.append).add_errback(failed.append)
    bad("broker said no", None)
    assert acked == ["msg"]
    assert [str(e) for e in failed] == ["DeliveryError: broker said no"]
    with pytest.raises(DeliveryError):
        bad.get()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_bench_session_keeps_every_progress_report_of_its_longest_queries(name: str) -> None:
    """The bench sums a query's progress reports, which Spark keeps only the last N of."""
    p = PROFILES[name]
    kept = int(SPARK_CONF["spark.sql.streaming.numRecentProgressUpdates"])
    fill = state_fill_seconds(load_config()) if p.soak_fill else 0
    longest = {
        "scale": math.ceil(max(p.scale_events) / p.scale_max_per_trigger),
        "growth": math.ceil(max(p.growth_events) / p.spark_max_per_trigger),
        "soak": math.ceil((fill + p.soak_seconds) / (duration_us(p.soak_trigger) / 1e6)),
    }
    # A catch-up also runs a batch without data at its end; one more for a trigger that splits.
    assert {k: n + 2 for k, n in longest.items() if n + 2 > kept} == {}
