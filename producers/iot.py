"""IoT sensor fleet simulator: seeded readings from N devices, sent to Kafka as JSON.

    python -m producers.iot --count 3000            # what `make produce-iot` runs
    python -m producers.iot --rate 200 --duration 60 --devices 100 --seed 7

The generator functions are pure and seeded (same seed and start time, same events); only `main`
talks to Kafka, through producers.core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from arus.config import ConfigError, load_config
from producers.core import ProducerError, Record, SendLoop, add_send_arguments, check_topics, make_producer

SOURCE = "iot-simulator"
SCHEMA_VERSION = "1"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arus/iot")

# kind -> (unit, nominal low, nominal high)
KINDS: dict[str, tuple[str, float, float]] = {
    "temperature": ("C", 15.0, 30.0),
    "humidity": ("%", 30.0, 70.0),
    "pressure": ("hPa", 990.0, 1030.0),
    "power": ("W", 50.0, 500.0),
}
SITES = ("jakarta", "bandung", "surabaya", "medan")


@dataclass(frozen=True)
class Device:
    device_id: str
    kind: str
    site: str
    unit: str
    low: float
    high: float


def fleet(n: int, seed: int) -> list[Device]:
    """N devices with stable metadata: the same seed always gives the same fleet."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    devices = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        unit, low, high = KINDS[kind]
        devices.append(Device(f"dev-{i:04d}", kind, rng.choice(SITES), unit, low, high))
    return devices


def event_id(device_id: str, seq: int) -> str:
    """Deterministic per (device, sequence number), so downstream can drop duplicate sends."""
    return str(uuid.uuid5(NAMESPACE, f"{SOURCE}/{device_id}/{seq}"))


def readings(
    devices: list[Device], start: datetime, interval_s: float, seed: int
) -> Iterator[dict[str, object]]:
    """An endless stream of readings in event-time order, every device once per interval.

    A value is the middle of the device's range, plus a diurnal cycle, a random-walk drift and noise.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    rng = random.Random(seed)
    drift = {d.device_id: 0.0 for d in devices}
    seq = 0
    while True:
        at = start + timedelta(seconds=seq * interval_s)
        hour = at.hour + at.minute / 60
        for device in devices:
            span = device.high - device.low
            drift[device.device_id] += rng.gauss(0, span * 0.005)
            value = (
                (device.low + device.high) / 2
                + span * 0.2 * math.sin(2 * math.pi * (hour - 6) / 24)
                + drift[device.device_id]
                + rng.gauss(0, span * 0.01)
            )
            yield {
                "event_id": event_id(device.device_id, seq),
                "device_id": device.device_id,
                "kind": device.kind,
                "site": device.site,
                "unit": device.unit,
                "value": round(value, 3),
                "seq": seq,
                "event_time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        seq += 1


def to_record(event: dict[str, object], topic: str) -> Record:
    return Record(
        topic=topic,
        key=str(event["device_id"]),
        value=json.dumps(event, separators=(",", ":")).encode(),
        headers=(("source", SOURCE.encode()), ("schema_version", SCHEMA_VERSION.encode())),
    )


def device_record(device: Device, topic: str) -> Record:
    return Record(topic=topic, key=device.device_id, value=json.dumps(asdict(device)).encode())


def parse_time(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return at.astimezone(UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.iot", description=__doc__.split("\n")[0])
    add_send_arguments(parser)
    parser.add_argument("--devices", type=int, help="fleet size (default from conf)")
    parser.add_argument("--seed", type=int, help="random seed (default from conf)")
    parser.add_argument("--start", type=parse_time, help="event time of the first reading (default: now)")
    parser.add_argument("--topic", help="readings topic (default from conf)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        iot = config.iot
        topic = args.topic or iot.topic
        devices = fleet(args.devices or iot.devices, iot.seed if args.seed is None else args.seed)
        start = args.start or datetime.now(UTC).replace(second=0, microsecond=0)
        producer = make_producer(config.kafka, config.producer)
        try:
            check_topics(producer, [topic, iot.devices_topic], config.kafka.bootstrap_servers)
            loop = SendLoop(producer)
            for device in devices:
                loop.send(device_record(device, iot.devices_topic))
            events = readings(devices, start, iot.interval_s, iot.seed if args.seed is None else args.seed)
            summary = loop.run(
                (to_record(e, topic) for e in events),
                rate=args.rate,
                count=args.count,
                duration=args.duration,
            )
        finally:
            producer.close(timeout=10)
    except (ConfigError, ProducerError) as exc:
        print(f"produce-iot: {exc}", file=sys.stderr)
        return 1
    return 0 if summary.failed == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
