"""The benchmarks' input data, made from the IoT generator so every client sends the same bytes.

Pure functions plus small file writers; nothing here talks to Kafka.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from arus.sources.iot import fleet, readings

# A fixed event-time origin: the same seed and start give the same bytes in every run.
START = datetime(2024, 1, 1, tzinfo=UTC)
SEED = 42
INTERVAL_S = 10.0


def iot_events(
    n: int, devices: int, start: datetime = START, interval_s: float = INTERVAL_S
) -> Iterator[dict]:
    """The first n readings of a seeded fleet, as the IoT producer makes them."""
    return itertools.islice(readings(fleet(devices, SEED), start, interval_s, SEED), n)


def iot_value(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))


def padded_value(event: dict, size: int, rng: random.Random) -> str:
    """An IoT reading padded with a `pad` field of hex text to exactly `size` bytes (if it fits)."""
    base = iot_value({**event, "pad": ""})
    missing = max(0, size - len(base))
    return iot_value({**event, "pad": "".join(rng.choices("0123456789abcdef", k=missing))})


def write_payload_file(path: Path, n: int, devices: int, size: int | None = None) -> dict[str, float]:
    """One JSON value per line (Kafka's perf tool picks lines at random); returns size figures."""
    rng = random.Random(SEED)
    lengths = []
    with open(path, "w") as fh:
        for event in iot_events(n, devices):
            value = iot_value(event) if size is None else padded_value(event, size, rng)
            lengths.append(len(value))
            fh.write(value + "\n")
    return {"lines": n, "mean_bytes": sum(lengths) / len(lengths)}


def read_payload_file(path: Path) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: the device id as key, as the IoT producer keys its records."""
    pairs = []
    with open(path, "rb") as fh:
        for line in fh:
            value = line.rstrip(b"\n")
            pairs.append((json.loads(value)["device_id"].encode(), value))
    return pairs


def write_csv(path: Path, n: int, devices: int) -> None:
    """The same readings as a CSV file, for the CSV replay producer (which makes its own event_id)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        columns: list[str] = []
        for event in iot_events(n, devices):
            if not columns:
                columns = [c for c in event if c != "event_id"]
                writer.writerow(columns)
            writer.writerow([event.get(c) for c in columns])
