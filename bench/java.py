"""Kafka's own perf tools, the ceilings: ProducerPerformance and ConsumerPerformance from kafka-tools.

Their CPU time is the JVM's (user + system, from wait4) less the CPU time of the same tool on one
record, so the JVM's start-up and JIT warm-up are not charged to the records.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arus.bench.common import java_command, producer_properties, run_measured

from arus.config import Config

PRODUCER = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER = "org.apache.kafka.tools.ConsumerPerformance"

_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
    r"(?:, (?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th)?"
)


def parse_producer_output(text: str) -> dict[str, float]:
    """The final summary line of ProducerPerformance (the one with percentiles)."""
    found = [m for m in _PRODUCER_SUMMARY.finditer(text) if m.group("p50")]
    if not found:
        raise ValueError(f"no ProducerPerformance summary in:\n{text[-2000:]}")
    m = found[-1]
    return {
        "events": int(m.group("records")),
        "events_per_s": float(m.group("rate")),
        "mb_per_s": float(m.group("mb")),
        "latency_avg_ms": float(m.group("avg")),
        "latency_p99_ms": float(m.group("p99")),
    }


def parse_consumer_output(text: str) -> dict[str, float]:
    """ConsumerPerformance's CSV line: data columns after the header that names them."""
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time"):
            names = [n.strip() for n in line.split(",")]
            values = [v.strip() for v in lines[i + 1].split(",")]
            row = dict(zip(names, values, strict=False))
            return {
                "events": int(row["data.consumed.in.nMsg"]),
                "events_per_s": float(row["fetch.nMsg.sec"]),
                "events_per_s_with_rebalance": float(row["nMsg.sec"]),
                "fetch_time_ms": float(row["fetch.time.ms"]),
                "rebalance_time_ms": float(row["rebalance.time.ms"]),
            }
    raise ValueError(f"no ConsumerPerformance result in:\n{text[-2000:]}")


def producer_perf(
    config: Config, topic: str, count: int, payload_file: Path, devices: int, baseline_cpu_s: float = 0.0
) -> dict[str, Any]:
    """ProducerPerformance with the [producer] settings, IoT payloads and `devices` distinct keys."""
    props = [f"{k}={v}" for k, v in producer_properties(config.producer).items()]
    cmd = _perf_command(
        PRODUCER,
        config,
        topic,
        count,
        "--throughput",
        "-1",
        "--payload-file",
        str(payload_file),
        "--key-distribution",
        "range",
        "--record-key-range",
        str(devices),
        "--command-property",
        *props,
    )
    return _measure(cmd, "ProducerPerformance", parse_producer_output, baseline_cpu_s)


def consumer_perf(config: Config, topic: str, count: int, baseline_cpu_s: float = 0.0) -> dict[str, Any]:
    """ConsumerPerformance reading `count` records of `topic` in a new group."""
    cmd = _perf_command(
        CONSUMER,
        config,
        topic,
        count,
        "--group",
        f"bench-perf-{uuid.uuid4().hex[:8]}",
        "--timeout",
        "60000",
    )
    return _measure(cmd, "ConsumerPerformance", parse_consumer_output, baseline_cpu_s)


def _perf_command(main_class: str, config: Config, topic: str, count: int, *args: str) -> list[str]:
    """A perf tool's command line for `count` records of `topic` on the configured brokers."""
    return java_command(
        main_class,
        "--bootstrap-server",
        config.kafka.bootstrap_servers,
        "--topic",
        topic,
        "--num-records",
        str(count),
        *args,
    )


def _measure(
    cmd: list[str], tool: str, parse: Callable[[str], dict[str, float]], baseline_cpu_s: float
) -> dict[str, Any]:
    """The tool's parsed result, with its CPU time less the baseline's and its peak memory."""
    measured = run_measured(cmd, timeout=600)
    if measured.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{measured.stderr[-3000:]}")
    result: dict[str, Any] = dict(parse(measured.stdout))
    result["cpu_s_total"] = round(measured.cpu_s, 3)
    result["cpu_s"] = round(max(measured.cpu_s - baseline_cpu_s, 0.0), 3)
    result["cpu_us_per_event"] = result["cpu_s"] / result["events"] * 1e6 if result["events"] else None
    result["peak_rss_mb"] = round(measured.peak_rss_mb, 1)
    return result
