"""IoT sensor fleet simulator: seeded readings from N devices of four kinds, sent to Kafka as JSON
(the entry point, with its flags: producers/iot.py, `arus produce iot`).

Every device has stable metadata (kind, site, unit, nominal range), published keyed by device id
to the compacted devices topic. A reading is the middle of the device's range plus a diurnal
cycle, a random-walk drift and noise. Sensor faults (spikes, stuck values, dropouts, battery
decline) and delivery problems (late, out of order, duplicated, malformed) are injected at the
rates in [iot.faults] and [iot.delivery]; a ledger file gets the ground truth of every one (JSONL).

The generators are pure and seeded: the same seed and start time give the same records, byte for
byte. Faults and delivery problems draw from their own random streams, so a reading that is not
touched by one has the same value whatever the rates. Only IotSimulator, a Source, talks to Kafka.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import itertools
import json
import math
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

from arus.config import Config, ConfigError, IotDeliveryConfig, IotFaultsConfig
from arus.core.rules import time_text
from arus.sources.base import Source
from arus.sources.send import ChildFeed, Record, SendLimits, SendLoop, can_fork, origin_headers

SOURCE = "iot-simulator"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arus/iot")
_NAMESPACE_BYTES = NAMESPACE.bytes
# One compact encoder for every record: json.dumps with separators builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

# kind -> (unit, nominal low, nominal high)
KINDS: dict[str, tuple[str, float, float]] = {
    "temperature": ("C", 15.0, 30.0),
    "humidity": ("%", 30.0, 70.0),
    "pressure": ("hPa", 990.0, 1030.0),
    "power": ("W", 50.0, 500.0),
}
# kind -> (diurnal amplitude as a share of the nominal span, hour of the daily peak, UTC)
DIURNAL: dict[str, tuple[float, float]] = {
    "temperature": (0.25, 14.0),
    "humidity": (0.20, 5.0),
    "pressure": (0.05, 10.0),
    "power": (0.30, 19.0),
}
SITES = ("jakarta", "bandung", "surabaya", "medan")

DRIFT_STEP = 0.005  # random-walk step, share of the span
DRIFT_PULL = 0.01  # how strongly drift is pulled back to 0 each reading, so it stays plausible
NOISE = 0.01  # share of the span
BATTERY_DRAIN = 0.002  # percentage points per reading
BATTERY_DRAIN_FAULTY = 0.5
STUCK_READINGS = (3, 12)
DROPOUT_READINGS = (1, 6)
MALFORMED_MODES = ("truncated", "not_utf8", "missing_value", "wrong_type", "bad_time")

HEADERS = origin_headers(SOURCE)
NO_FAULTS = IotFaultsConfig()
NO_DELIVERY_PROBLEMS = IotDeliveryConfig()

# Ledger kind -> the config field holding its rate, for `--inject KIND=RATE`.
FAULT_RATES = {
    "spike": "spike_rate",
    "stuck": "stuck_rate",
    "dropout": "dropout_rate",
    "battery_decline": "battery_decline_rate",
}
DELIVERY_RATES = {
    "late": "late_rate",
    "out_of_order": "out_of_order_rate",
    "duplicate": "duplicate_rate",
    "malformed": "malformed_rate",
}


@dataclass(frozen=True)
class Device:
    device_id: str
    kind: str
    site: str
    unit: str
    low: float
    high: float


class Message(NamedTuple):
    """One send, in send order. `value` None is a dropout: nothing is sent, the truth is recorded.

    `truth` holds a ledger entry for every fault or delivery problem injected into this message.
    A named tuple, not a frozen dataclass: one is made per reading, and it builds four times faster.
    """

    due: datetime
    key: str
    value: bytes | None
    event_id: str
    truth: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)
class _DeviceState:
    battery: float
    drift: float = 0.0
    draining: bool = False
    last_value: float | None = None
    stuck_value: float = 0.0
    stuck_left: int = 0
    dropout_left: int = 0
    episode: int = 0


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


def event_id(device_id: str, event_time: str) -> str:
    """Deterministic per (device, event time), so downstream can drop duplicate sends.

    A device reads once per interval, so this names one reading: the same run repeated (same
    seed and --start) sends the same ids again, a run that starts at another time sends new ones.
    Exactly uuid.uuid5(NAMESPACE, f"{SOURCE}/{device_id}/{event_time}"), event_time as the
    reading carries it (unit-tested against it).
    """
    return _event_id(_id_hasher(device_id), event_time.encode())


def _id_hasher(device_id: str) -> Any:
    """SHA-1 over the namespace and the name up to the event time: a device's readings copy it."""
    return hashlib.sha1(_NAMESPACE_BYTES + f"{SOURCE}/{device_id}/".encode())


def _event_id(hasher: Any, event_time: bytes) -> str:
    """The UUIDv5 text from a device's hasher, without a UUID object or int arithmetic (a third of
    the cost): the version nibble becomes 5, the variant nibble's top bits 10 (RFC 4122)."""
    h = hasher.copy()
    h.update(event_time)
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_VARIANT = dict(zip("0123456789abcdef", "89ab" * 4, strict=True))


def signal_with_faults(
    devices: list[Device], start: datetime, interval_s: float, seed: int, faults: IotFaultsConfig = NO_FAULTS
) -> Iterator[tuple[datetime, Device, dict[str, Any] | None, list[dict[str, Any]]]]:
    """Every device once per interval, in event-time order: (event time, device, reading, truth).

    The reading is None when it dropped out; `truth` has a ledger entry per fault injected into it.
    """
    for at, device, reading, truth, _ in signal_with_values(devices, start, interval_s, seed, faults):
        yield at, device, reading, truth


def signal_with_values(
    devices: list[Device], start: datetime, interval_s: float, seed: int, faults: IotFaultsConfig
) -> Iterator[tuple[datetime, Device, dict[str, Any] | None, list[dict[str, Any]], bytes | None]]:
    """signal_with_faults, plus each reading's JSON value (None for a dropout).

    The value is formatted from per-device constant fragments rather than by json: byte for byte
    what `encode(reading)` gives (unit-tested), at a third of the cost. What does not change within
    a tick (event time, diurnal term, the JSON tail) is computed once per tick.
    """
    return _signal(devices, start, interval_s, seed, faults, lean=False)


def _signal(
    devices: list[Device],
    start: datetime,
    interval_s: float,
    seed: int,
    faults: IotFaultsConfig,
    lean: bool,
) -> Iterator[tuple[Any, ...]]:
    """signal_with_values, or with `lean` the unpaced messages (None, device id, value, "",
    truth) without the reading dicts nobody reads then: one loop, so both give the same values."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    signal_rng = random.Random(f"{seed}/signal")
    gauss = signal_rng.gauss
    fault_rng = random.Random(f"{seed}/faults")
    inject = any(dataclasses.astuple(faults))
    # Devices of one kind and range share the diurnal term: index of each device's profile.
    profiles: dict[tuple[str, float, float], int] = {}
    fleet_state = [
        _Fleet(
            device,
            _DeviceState(random.Random(f"{seed}/{device.device_id}").uniform(60, 100)),
            profiles.setdefault((device.kind, device.low, device.high), len(profiles)),
            (device.high - device.low) * DRIFT_STEP,
            (device.high - device.low) * NOISE,
            _id_hasher(device.device_id),
            _value_prefix(device),
        )
        for device in devices
    ]
    dumps = json.dumps
    for seq in itertools.count():
        at = start + timedelta(seconds=seq * interval_s)
        event_time = time_text(at)
        hour = at.hour + at.minute / 60 + at.second / 3600
        # The same expression, in the same order, as per device: identical floats.
        base = [
            (low + high) / 2
            + (high - low) * DIURNAL[kind][0] * math.cos(2 * math.pi * (hour - DIURNAL[kind][1]) / 24)
            for kind, low, high in profiles
        ]
        time_bytes = event_time.encode()
        tail = f',"seq":{seq},"event_time":{dumps(event_time)}}}'
        for f in fleet_state:
            device, state = f.device, f.state
            state.drift += -DRIFT_PULL * state.drift + gauss(0, f.drift_sigma)
            clean = base[f.profile] + state.drift + gauss(0, f.noise_sigma)
            value: float | None = clean
            found: list[tuple[str, dict[str, Any]]] = []
            if inject:
                value, found = _inject_faults(state, device, seq, clean, faults, fault_rng)
            state.battery = max(
                0.0, state.battery - (BATTERY_DRAIN_FAULTY if state.draining else BATTERY_DRAIN)
            )
            eid = _event_id(f.hasher, time_bytes)
            truth = (
                [
                    {
                        "kind": kind,
                        "event_id": eid,
                        "device_id": device.device_id,
                        "seq": seq,
                        "event_time": event_time,
                    }
                    | detail
                    for kind, detail in found
                ]
                if found
                else []
            )
            if value is None:
                yield (
                    (None, device.device_id, None, "", tuple(truth))
                    if lean
                    else (at, device, None, truth, None)
                )
                continue
            state.last_value = value
            rounded, battery = round(value, 3), round(state.battery, 2)
            # Finite floats (sums of finite draws) print as json prints them: float.__repr__.
            data = f'{{"event_id":"{eid}",{f.prefix}{rounded!r},"battery":{battery!r}{tail}'.encode()
            if lean:
                yield None, device.device_id, data, "", tuple(truth)
                continue
            reading = {
                "event_id": eid,
                "device_id": device.device_id,
                "kind": device.kind,
                "site": device.site,
                "unit": device.unit,
                "value": rounded,
                "battery": battery,
                "seq": seq,
                "event_time": event_time,
            }
            yield at, device, reading, truth, data


class _Fleet(NamedTuple):
    """What the signal loop keeps per device."""

    device: Device
    state: _DeviceState
    profile: int
    drift_sigma: float
    noise_sigma: float
    hasher: Any
    prefix: str


def _value_prefix(device: Device) -> str:
    """A reading's JSON from the device id up to the value, with json's escaping of the strings."""
    fields = {"device_id": device.device_id, "kind": device.kind, "site": device.site, "unit": device.unit}
    return "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in fields.items()) + '"value":'


def _inject_faults(
    state: _DeviceState, device: Device, seq: int, clean: float, faults: IotFaultsConfig, rng: random.Random
) -> tuple[float | None, list[tuple[str, dict[str, Any]]]]:
    """Continue the device's fault episode or perhaps start one: (value, or None if dropped; faults).

    Draws two numbers per reading (more only when a fault starts), so episodes never shift the
    draws of the readings after them by more than their own length.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    if rng.random() < faults.battery_decline_rate and not state.draining:
        state.draining = True
        found.append(("battery_decline", {"battery": round(state.battery, 2)}))
    r = rng.random()
    if state.stuck_left:
        state.stuck_left -= 1
        found.append(("stuck", {"episode": state.episode, "value": round(state.stuck_value, 3)}))
        return state.stuck_value, found
    if state.dropout_left:
        state.dropout_left -= 1
        found.append(("dropout", {"episode": state.episode}))
        return None, found
    if r < faults.spike_rate:
        span = device.high - device.low
        value = clean + rng.choice((-1, 1)) * span * rng.uniform(1.0, 2.0)
        found.append(("spike", {"value": round(value, 3), "clean": round(clean, 3)}))
        return value, found
    r -= faults.spike_rate
    if r < faults.stuck_rate:
        state.stuck_left = rng.randint(*STUCK_READINGS) - 1
        state.stuck_value = clean if state.last_value is None else state.last_value
        state.episode = seq
        found.append(("stuck", {"episode": seq, "value": round(state.stuck_value, 3)}))
        return state.stuck_value, found
    r -= faults.stuck_rate
    if r < faults.dropout_rate:
        state.dropout_left = rng.randint(*DROPOUT_READINGS) - 1
        state.episode = seq
        found.append(("dropout", {"episode": seq}))
        return None, found
    return clean, found


def readings(
    devices: list[Device], start: datetime, interval_s: float, seed: int, faults: IotFaultsConfig = NO_FAULTS
) -> Iterator[dict[str, Any]]:
    """An endless stream of readings in event-time order, every device once per interval.

    A value is the middle of the device's range, plus a diurnal cycle, a random-walk drift and
    noise; with `faults`, some are spikes or stuck and some never come (dropouts).
    # event_id, device_id, kind, site, unit, value, battery, seq, event_time
    """
    for _, _, reading, _ in signal_with_faults(devices, start, interval_s, seed, faults):
        if reading is not None:
            yield reading


def simulate(
    devices: list[Device],
    start: datetime,
    interval_s: float,
    seed: int,
    faults: IotFaultsConfig = NO_FAULTS,
    delivery: IotDeliveryConfig = NO_DELIVERY_PROBLEMS,
) -> Iterator[Message]:
    """The messages to send, in send order: the readings, with delivery problems injected.

    A message is due at its event time; a late one at its event time plus a delay; an out-of-order
    one just after the device's next reading; a duplicate (same bytes, same event_id) up to
    `duplicate_max_delay_s` after the original. At most one problem per reading.
    """
    rng = random.Random(f"{seed}/delivery")
    late = delivery.late_rate
    out_of_order = late + delivery.out_of_order_rate
    duplicate = out_of_order + delivery.duplicate_rate
    malformed = duplicate + delivery.malformed_rate
    after_next = timedelta(seconds=interval_s, microseconds=1)
    pending: list[tuple[datetime, int, Message]] = []
    order = itertools.count()

    def push(due: datetime, key: str, value: bytes | None, eid: str, truth: list[dict[str, Any]]) -> None:
        heapq.heappush(pending, (due, next(order), Message(due, key, value, eid, tuple(truth))))

    signal = signal_with_values(devices, start, interval_s, seed, faults)
    if not delivery_problems(delivery):
        # Nothing is delayed, so every message is due when it is made: the heap would only
        # hand them back in the same order.
        for at, device, reading, truth, value in signal:
            eid = truth[0]["event_id"] if reading is None else reading["event_id"]
            yield Message(at, device.device_id, value, eid, tuple(truth))
        return
    for at, device, reading, truth, value in signal:
        key = device.device_id
        if reading is None or value is None:
            push(at, key, None, truth[0]["event_id"], truth)
        else:
            eid = reading["event_id"]
            r = rng.random()
            if r < late:
                delay = round(rng.uniform(delivery.late_min_s, delivery.late_max_s), 3)
                push(
                    at + timedelta(seconds=delay),
                    key,
                    value,
                    eid,
                    [*truth, _problem("late", reading, delay_s=delay)],
                )
            elif r < out_of_order:
                push(at + after_next, key, value, eid, [*truth, _problem("out_of_order", reading)])
            elif r < duplicate:
                push(at, key, value, eid, truth)
                delay = round(rng.uniform(0, delivery.duplicate_max_delay_s), 3)
                push(
                    at + timedelta(seconds=delay),
                    key,
                    value,
                    eid,
                    [_problem("duplicate", reading, delay_s=delay)],
                )
            elif r < malformed:
                mode = rng.choice(MALFORMED_MODES)
                bad = corrupt(reading, mode)
                detail = {"mode": mode, "payload": bad.decode("utf-8", "backslashreplace")}
                push(at, key, bad, eid, [*truth, _problem("malformed", reading, **detail)])
            else:
                push(at, key, value, eid, truth)
        while pending and pending[0][0] <= at:
            yield heapq.heappop(pending)[2]


def _problem(kind: str, reading: dict[str, Any], **detail: Any) -> dict[str, Any]:
    keys = ("event_id", "device_id", "seq", "event_time")
    return {"kind": kind, **{k: reading[k] for k in keys}, **detail}


def encode(event: dict[str, Any]) -> bytes:
    return _ENCODER.encode(event).encode()


def corrupt(reading: dict[str, Any], mode: str) -> bytes:
    """A malformed payload of the kind a downstream parser must reject, never crash on."""
    if mode == "truncated":
        text = encode(reading)
        return text[: len(text) // 2]
    if mode == "not_utf8":
        return b"\xff\xfe" + encode(reading)
    if mode == "missing_value":
        return encode({k: v for k, v in reading.items() if k != "value"})
    if mode == "wrong_type":
        return encode({**reading, "value": "n/a"})
    if mode == "bad_time":
        return encode({**reading, "event_time": "not a time"})
    raise ValueError(f"unknown malformed mode {mode!r}")


def to_record(event: dict[str, Any], topic: str) -> Record:
    """A clean reading as a Kafka record, keyed by device."""
    return Record(
        topic=topic,
        key=str(event["device_id"]),
        value=encode(event),
        headers=HEADERS,
        due=datetime.fromisoformat(str(event["event_time"])),
    )


def message_record(message: Message, topic: str) -> Record | None:
    """A message as a Kafka record, keyed by device; None for a dropout."""
    if message.value is None:
        return None
    return Record(topic, message.key, message.value, HEADERS, due=message.due)


def device_record(device: Device, topic: str) -> Record:
    """A device's metadata, keyed by device id, for the compacted devices topic."""
    return Record(topic, device.device_id, encode(asdict(device)), HEADERS)


def with_rates(
    faults: IotFaultsConfig, delivery: IotDeliveryConfig, rates: dict[str, float]
) -> tuple[IotFaultsConfig, IotDeliveryConfig]:
    """The rates with `--inject KIND=RATE` overrides applied."""
    for kind in rates:
        if kind not in FAULT_RATES and kind not in DELIVERY_RATES:
            known = ", ".join([*FAULT_RATES, *DELIVERY_RATES])
            raise ConfigError(f"--inject: unknown kind {kind!r} (one of {known})")
    faults = dataclasses.replace(faults, **{FAULT_RATES[k]: v for k, v in rates.items() if k in FAULT_RATES})
    delivery = dataclasses.replace(
        delivery, **{DELIVERY_RATES[k]: v for k, v in rates.items() if k in DELIVERY_RATES}
    )
    return faults, delivery


def parse_inject(text: str) -> tuple[str, float]:
    """`--inject KIND=RATE`, RATE in [0, 1]; the kind is checked by with_rates."""
    kind, sep, rate = text.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not sep or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with RATE in [0, 1], got {text!r}")
    return kind.strip(), value


def write_ledger(ledger: IO[str] | None, truth: tuple[dict[str, Any], ...]) -> None:
    if ledger is not None:
        for entry in truth:
            ledger.write(json.dumps(entry, separators=(",", ":")) + "\n")


def unpaced_messages(
    devices: list[Device],
    start: datetime,
    interval_s: float,
    seed: int,
    faults: IotFaultsConfig,
    delivery: IotDeliveryConfig,
    count: int | None = None,
) -> Iterator[tuple[None, str, bytes | None, str, tuple[dict[str, Any], ...]]]:
    """simulate() as plain tuples without the due time and event id, which nothing needs when
    nothing paces: what the generator process pipes to the sender (a datetime costs more to pickle
    than the rest). Without delivery problems the messages are the signal's readings as they come.

    With `count`, none after the count-th message with a value, the last the sender takes with
    --count (dropouts carry no value and are not sent), so the generator stops where the sender will.
    """
    messages: Iterator[tuple[None, str, bytes | None, str, tuple[dict[str, Any], ...]]]
    if delivery_problems(delivery):
        messages = (
            (None, m.key, m.value, "", m.truth)
            for m in simulate(devices, start, interval_s, seed, faults, delivery)
        )
    else:
        messages = _signal(devices, start, interval_s, seed, faults, lean=True)
    if count is not None and count <= 0:
        return
    left = count
    for message in messages:
        yield message
        if left is not None and message[2] is not None:
            left -= 1
            if not left:
                return


def delivery_problems(delivery: IotDeliveryConfig) -> bool:
    """Whether any delivery problem is injected (otherwise every message goes out when it is due)."""
    return bool(
        delivery.late_rate or delivery.out_of_order_rate or delivery.duplicate_rate or delivery.malformed_rate
    )


def default_start(devices: int, interval_s: float, limits: SendLimits, now: datetime) -> datetime:
    """The first reading's minute when --start is not given: this one, or for a bounded run whose
    event time outruns the clock (unpaced, or --speed above 1), early enough that its last reading
    is not ahead of `now`. Readings ahead of their Kafka timestamp by more than [stream.guards]
    max_event_ahead_s are dead letters, and an unbounded fast run still runs ahead: docs/producers.md.
    """
    if limits.count:
        event_s = math.ceil(limits.count / devices) * interval_s
        clock_s = max(
            event_s / limits.speed if limits.speed else 0.0, limits.count / (limits.rate or math.inf)
        )
    elif limits.duration and limits.speed:
        event_s, clock_s = limits.duration * limits.speed, limits.duration
    else:
        event_s = clock_s = 0.0
    return (now - timedelta(seconds=max(0.0, event_s - clock_s))).replace(second=0, microsecond=0)


@dataclass(frozen=True)
class SimulatorOptions:
    """What one run overrides, each the flag of the same name: None takes the [iot] setting (the
    topics: [stream]'s; `start`: default_start)."""

    topic: str | None = None
    devices_topic: str | None = None
    devices: int | None = None
    seed: int | None = None
    start: datetime | None = None
    interval: float | None = None  # event-time seconds between a device's readings
    ledger: Path | None = None
    clean: bool = False  # no faults and no delivery problems
    inject: Sequence[tuple[str, float]] = ()  # (KIND, RATE) overrides of single rates, the last one wins
    in_process: bool = False  # generate here even when nothing paces (by default a forked process does)


class IotSimulator(Source):
    """The fleet's readings, with the configured faults and delivery problems, after the devices'
    metadata; with a ledger file, the ground truth of every problem injected."""

    name = "produce-iot"

    def __init__(self, config: Config, limits: SendLimits, options: SimulatorOptions) -> None:
        iot = config.iot
        if limits.speed is None and iot.speed:
            limits = dataclasses.replace(limits, speed=iot.speed)
        super().__init__(config, limits)
        self.topic = options.topic or config.stream.topic
        self.devices_topic = options.devices_topic or config.stream.devices_topic
        self.seed = iot.seed if options.seed is None else options.seed
        self.devices = fleet(options.devices or iot.devices, self.seed)
        self.interval_s = options.interval or iot.interval_s
        self.first_time = options.start or default_start(
            len(self.devices), self.interval_s, limits, datetime.now(UTC)
        )
        faults, delivery = (NO_FAULTS, NO_DELIVERY_PROBLEMS) if options.clean else (iot.faults, iot.delivery)
        self.faults, self.delivery = with_rates(faults, delivery, dict(options.inject))
        # A path given by the caller is taken from the working directory, one in conf/ from the project.
        self.ledger_path = options.ledger or (config.resolve(iot.ledger) if iot.ledger else None)
        self.in_process = options.in_process
        self.ledger: IO[str] | None = None
        self.messages: Iterable[
            tuple[datetime | None, str, bytes | None, str, tuple[dict[str, Any], ...]]
        ] = ()

    def topics(self) -> list[str]:
        return [self.topic, self.devices_topic]

    def open(self, resources: ExitStack) -> None:
        simulation = (self.devices, self.first_time, self.interval_s, self.seed, self.faults, self.delivery)
        if self.limits.rate is None and self.limits.speed is None and not self.in_process and can_fork():
            # As fast as possible: another process generates while this one sends (see ChildFeed),
            # forked now, before the Kafka client starts its I/O thread.
            feed = ChildFeed(partial(unpaced_messages, *simulation, self.limits.count))
            self.messages = resources.enter_context(feed)
        else:
            self.messages = simulate(*simulation)
        if self.ledger_path:
            self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
            self.ledger = resources.enter_context(open(self.ledger_path, "w"))  # noqa: SIM115 - ExitStack

    def preamble(self) -> Iterator[Record]:
        for device in self.devices:
            yield device_record(device, self.devices_topic)

    def run(self, loop: SendLoop) -> Iterator[Record]:
        count, topic, ledger = loop.summary.count, self.topic, self.ledger
        # Record's fields in order, without its constructor's Python frame (half the cost).
        new = tuple.__new__
        for due, key, value, _, truth in self.messages:
            if truth:
                write_ledger(ledger, truth)
                for entry in truth:
                    count(entry["kind"])
            if value is not None:
                yield new(Record, (topic, key, value, HEADERS, None, due))
