"""The IoT simulator's pure generators: determinism, the signal, injected faults and delivery problems."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from arus.config import DEFAULT_CONFIG, ConfigError, IotDeliveryConfig, IotFaultsConfig, load_config
from arus.core.rules import time_text
from arus.sources.iot import (
    DELIVERY_RATES,
    FAULT_RATES,
    KINDS,
    NAMESPACE,
    Device,
    Message,
    default_start,
    device_record,
    event_id,
    fleet,
    message_record,
    readings,
    signal_with_faults,
    signal_with_values,
    simulate,
    to_record,
    unpaced_messages,
    with_rates,
)
from arus.sources.send import SendLimits

START = datetime(2024, 3, 1, tzinfo=UTC)
INTERVAL = 10.0


def first(n: int, messages: object) -> list[Message]:
    return list(itertools.islice(messages, n))  # type: ignore[call-overload]


def binomial_ok(observed: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """Within `sigmas` standard deviations of n*p."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_fleet_is_stable_and_covers_every_kind() -> None:
    devices = fleet(12, seed=1)
    assert devices == fleet(12, seed=1)
    assert [d.device_id for d in devices] == [f"dev-{i:04d}" for i in range(12)]
    assert Counter(d.kind for d in devices) == dict.fromkeys(KINDS, 3)
    for d in devices:
        assert (d.unit, d.low, d.high) == KINDS[d.kind]
    assert fleet(12, seed=1) != fleet(12, seed=2)
    assert json.loads(device_record(devices[0], "t").value)["site"] == devices[0].site


def test_same_seed_and_start_give_the_same_events() -> None:
    devices = fleet(8, seed=3)
    faults = IotFaultsConfig(0.05, 0.05, 0.05, 0.01)
    delivery = IotDeliveryConfig(
        late_rate=0.05, out_of_order_rate=0.05, duplicate_rate=0.05, malformed_rate=0.05
    )
    a = first(1000, simulate(devices, START, INTERVAL, 3, faults, delivery))
    b = first(1000, simulate(devices, START, INTERVAL, 3, faults, delivery))
    assert a == b
    assert {e["kind"] for m in a for e in m.truth} == {*FAULT_RATES, *DELIVERY_RATES}
    c = first(1000, simulate(devices, START, INTERVAL, 4, faults, delivery))
    assert [m.value for m in a] != [m.value for m in c]
    later = first(1000, simulate(devices, START + timedelta(hours=1), INTERVAL, 3, faults, delivery))
    assert [m.value for m in a] != [m.value for m in later]


def test_readings_are_in_event_time_order_every_device_each_interval() -> None:
    devices = fleet(5, seed=1)
    events = list(itertools.islice(readings(devices, START, INTERVAL, seed=1), 50))
    assert [e["device_id"] for e in events] == [d.device_id for d in devices] * 10
    assert [e["seq"] for e in events] == [s for s in range(10) for _ in devices]
    for e in events:
        at = datetime.fromisoformat(str(e["event_time"]))
        assert at == START + timedelta(seconds=INTERVAL * int(e["seq"]))  # type: ignore[call-overload]
        assert e["event_id"] == event_id(str(e["device_id"]), str(e["event_time"]))
    assert len({e["event_id"] for e in events}) == 50


def test_start_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next(readings(fleet(1, 1), datetime(2024, 1, 1), INTERVAL, 1))  # noqa: DTZ001


def test_signal_follows_the_day_and_stays_plausible() -> None:
    """A day of temperature readings: warmest in the afternoon, coolest at night, near the range."""
    devices = [d for d in fleet(4, seed=9) if d.kind == "temperature"]
    day = list(itertools.islice(readings(devices, START, 600.0, seed=9), 144))
    by_hour: dict[int, list[float]] = defaultdict(list)
    for e in day:
        by_hour[datetime.fromisoformat(str(e["event_time"])).hour].append(float(e["value"]))  # type: ignore[arg-type]
    mean = {h: sum(v) / len(v) for h, v in by_hour.items()}
    assert mean[14] - mean[2] > 5.0
    low, high = KINDS["temperature"][1:]
    span = high - low
    assert all(low - span * 0.5 < float(e["value"]) < high + span * 0.5 for e in day)  # type: ignore[arg-type]
    # Noise and drift: consecutive readings differ, but not by much.
    steps = [abs(float(b["value"]) - float(a["value"])) for a, b in itertools.pairwise(day)]  # type: ignore[arg-type]
    assert 0 < sum(steps) / len(steps) < span * 0.1


def test_without_faults_readings_are_the_clean_signal() -> None:
    devices = fleet(6, seed=2)
    clean = list(itertools.islice(readings(devices, START, INTERVAL, seed=2), 600))
    messages = first(600, simulate(devices, START, INTERVAL, 2))
    assert [m.truth for m in messages] == [()] * 600
    assert [json.loads(m.value or b"") for m in messages] == clean


def test_faults_change_exactly_the_readings_in_the_ledger() -> None:
    devices = fleet(10, seed=5)
    faults = IotFaultsConfig(spike_rate=0.02, stuck_rate=0.01, dropout_rate=0.01, battery_decline_rate=0.0)
    ticks = 300
    clean = {
        e["event_id"]: e for e in itertools.islice(readings(devices, START, INTERVAL, seed=5), 10 * ticks)
    }
    truth: dict[str, list[dict[str, object]]] = defaultdict(list)
    faulty: dict[str, dict[str, object]] = {}
    for _, _, reading, found in itertools.islice(
        signal_with_faults(devices, START, INTERVAL, 5, faults), 10 * ticks
    ):
        for entry in found:
            truth[str(entry["event_id"])].append(entry)
        if reading is not None:
            faulty[str(reading["event_id"])] = reading
    for eid, reading in clean.items():
        kinds = [e["kind"] for e in truth.get(eid, [])]
        if not kinds:
            assert faulty[eid] == reading
        elif kinds == ["dropout"]:
            assert eid not in faulty
        elif kinds == ["spike"]:
            entry = truth[eid][0]
            assert faulty[eid]["value"] == entry["value"] != reading["value"]
            assert entry["clean"] == reading["value"]
            device = next(d for d in devices if d.device_id == reading["device_id"])
            assert abs(float(faulty[eid]["value"]) - float(reading["value"])) >= device.high - device.low  # type: ignore[arg-type]
        else:
            assert kinds == ["stuck"]
            assert faulty[eid]["value"] == truth[eid][0]["value"]
    # A stuck episode repeats one value on consecutive readings of one device.
    episodes: dict[tuple[object, object], set[object]] = defaultdict(set)
    for entries in truth.values():
        for e in entries:
            if e["kind"] == "stuck":
                episodes[(e["device_id"], e["episode"])].add(e["value"])
    assert episodes and all(len(values) == 1 for values in episodes.values())


@pytest.mark.parametrize("kind", ["spike", "stuck", "dropout"])
def test_fault_rates_within_tolerance(kind: str) -> None:
    rate = 0.02
    devices = fleet(20, seed=11)
    faults = IotFaultsConfig(**{f"{kind}_rate": rate})
    n = 20 * 600
    entries = [
        e
        for _, _, _, found in itertools.islice(signal_with_faults(devices, START, INTERVAL, 11, faults), n)
        for e in found
    ]
    assert {e["kind"] for e in entries} == {kind}
    if kind == "spike":
        assert binomial_ok(len(entries), n, rate)
    else:
        # Episodes start at the rate among the readings that are not already in an episode.
        starts = sum(1 for e in entries if e["episode"] == e["seq"])
        continuing = len(entries) - starts
        assert binomial_ok(starts, n - continuing, rate)
        lengths = Counter((e["device_id"], e["episode"]) for e in entries)
        low, high = (3, 12) if kind == "stuck" else (1, 6)
        # The last episodes may still be running when the sample ends.
        assert sum(1 for length in lengths.values() if not low <= length <= high) <= 20


def test_battery_declines_slowly_then_fast_after_the_fault() -> None:
    devices = fleet(50, seed=13)
    faults = IotFaultsConfig(battery_decline_rate=0.003)
    ticks = 200
    history: dict[str, list[tuple[int, float]]] = defaultdict(list)
    started: dict[str, int] = {}
    for _, device, reading, found in itertools.islice(
        signal_with_faults(devices, START, INTERVAL, 13, faults), 50 * ticks
    ):
        assert reading is not None
        history[device.device_id].append((int(reading["seq"]), float(reading["battery"])))
        for e in found:
            assert e["kind"] == "battery_decline" and device.device_id not in started
            started[device.device_id] = int(e["seq"])  # type: ignore[call-overload]
    expected_devices = 50 * (1 - (1 - 0.003) ** ticks)
    assert abs(len(started) - expected_devices) <= 4 * math.sqrt(expected_devices)
    for device_id, points in history.items():
        drops = [a[1] - b[1] for a, b in itertools.pairwise(points)]
        begin = started.get(device_id)
        for (seq, level), drop in zip(points[1:], drops, strict=True):
            if level == 0.0:
                continue
            assert drop == pytest.approx(0.5 if begin is not None and seq >= begin else 0.002, abs=0.011)


def delivery_run(rates: IotDeliveryConfig, n: int = 10000) -> tuple[list[Message], list[Message]]:
    devices = fleet(20, seed=21)
    sent = first(n, simulate(devices, START, INTERVAL, 21, delivery=rates))
    clean = first(n + 2000, simulate(devices, START, INTERVAL, 21))
    return sent, clean


def test_delivery_problems_at_their_rates_and_as_described() -> None:
    rates = IotDeliveryConfig(
        late_rate=0.03,
        late_min_s=30,
        late_max_s=120,
        out_of_order_rate=0.03,
        duplicate_rate=0.03,
        duplicate_max_delay_s=40,
        malformed_rate=0.03,
    )
    sent, clean = delivery_run(rates)
    entries = [(i, e) for i, m in enumerate(sent) for e in m.truth]
    counts = Counter(e["kind"] for _, e in entries)
    # The number of readings behind these messages: one per message, minus the extra copies.
    n = len(sent) - counts["duplicate"]
    for kind in ("late", "out_of_order", "duplicate", "malformed"):
        assert binomial_ok(counts[kind], n, 0.03), (kind, counts[kind])

    # Messages go out in the order they are due; a message is due at its event time plus its delay.
    assert all(a.due <= b.due for a, b in itertools.pairwise(sent))
    original = {m.event_id: m.value for m in clean}
    position = {}
    for i, m in enumerate(sent):
        position.setdefault(m.event_id, i)
    delayed = {e["event_id"] for _, e in entries if e["kind"] in ("late", "out_of_order")}
    for i, e in entries:
        message = sent[i]
        at = datetime.fromisoformat(str(e["event_time"]))
        if e["kind"] == "late":
            assert 30 <= float(e["delay_s"]) <= 120  # type: ignore[arg-type]
            assert message.due - at == timedelta(seconds=float(e["delay_s"]))  # type: ignore[arg-type]
            assert message.value == original[message.event_id]
        elif e["kind"] == "out_of_order":
            # Sent after the device's next reading (unless that one was held back too).
            following = event_id(str(e["device_id"]), time_text(at + timedelta(seconds=INTERVAL)))
            assert following in delayed or position[following] < i
        elif e["kind"] == "duplicate":
            assert position[message.event_id] < i and sent[position[message.event_id]].value == message.value
            assert 0 <= float(e["delay_s"]) <= 40  # type: ignore[arg-type]
        else:
            assert e["kind"] == "malformed"
            assert message.value != original[message.event_id]
            assert_unusable(message.value or b"", str(e["mode"]))


def assert_unusable(value: bytes, mode: str) -> None:
    """The payload fails the way its mode says: a downstream parser must reject it."""
    if mode == "not_utf8":
        with pytest.raises(UnicodeDecodeError):
            value.decode()
        return
    if mode == "truncated":
        with pytest.raises(json.JSONDecodeError):
            json.loads(value)
        return
    event = json.loads(value)
    if mode == "missing_value":
        assert "value" not in event
    elif mode == "wrong_type":
        assert isinstance(event["value"], str)
    else:
        assert mode == "bad_time"
        with pytest.raises(ValueError):
            datetime.fromisoformat(event["event_time"])


def test_every_reading_is_sent_even_when_some_come_late() -> None:
    rates = IotDeliveryConfig(late_rate=0.05, late_max_s=100, out_of_order_rate=0.05, duplicate_rate=0.05)
    sent, clean = delivery_run(rates, n=5000)
    cutoff = max(m.due for m in sent) - timedelta(seconds=100 + INTERVAL)
    expected = {m.event_id for m in clean if m.due <= cutoff}
    assert expected <= {m.event_id for m in sent}
    # Beyond the injected problems every message is byte for byte the clean one.
    by_id = {m.event_id: m.value for m in clean}
    assert all(m.value == by_id[m.event_id] for m in sent)


def test_all_rates_zero_is_allowed_and_clean() -> None:
    devices = fleet(3, seed=1)
    assert all(not m.truth for m in first(3000, simulate(devices, START, INTERVAL, 1)))


def test_records_are_keyed_by_device_with_origin_headers() -> None:
    devices = fleet(2, seed=1)
    event = next(readings(devices, START, INTERVAL, seed=1))
    record = to_record(event, "iot.readings")
    assert (record.topic, record.key, record.due) == ("iot.readings", "dev-0000", START)
    assert json.loads(record.value) == event
    assert dict(record.headers) == {"source": b"iot-simulator", "schema_version": b"1"}
    message = next(simulate(devices, START, INTERVAL, 1))
    assert message_record(message, "iot.readings") == record
    dropout = Message(START, "dev-0000", None, "x")
    assert message_record(dropout, "iot.readings") is None


def test_inject_overrides_rates_by_kind() -> None:
    faults, delivery = with_rates(IotFaultsConfig(), IotDeliveryConfig(), {"spike": 0.1, "late": 0.2})
    assert (faults.spike_rate, delivery.late_rate, delivery.malformed_rate) == (0.1, 0.2, 0.0)
    with pytest.raises(ConfigError, match="unknown kind 'spikes'"):
        with_rates(IotFaultsConfig(), IotDeliveryConfig(), {"spikes": 0.1})


def test_the_default_demo_shows_every_delivery_problem() -> None:
    """`make produce-iot` / `make demo` send 3000 readings with the rates in conf/: all small, none 0."""
    config = load_config(DEFAULT_CONFIG, env={}).iot
    assert all(0 < rate <= 0.01 for rate in dataclasses.astuple(config.faults))
    delivery = dataclasses.asdict(config.delivery)
    assert all(0 < delivery[f] <= 0.01 for f in DELIVERY_RATES.values())
    messages = first(
        config.demo_count,
        simulate(
            fleet(config.devices, config.seed), START, 10.0, config.seed, config.faults, config.delivery
        ),
    )
    kinds = Counter(e["kind"] for m in messages for e in m.truth)
    assert all(kinds[k] > 0 for k in DELIVERY_RATES), kinds


def test_event_id_is_the_uuid5_of_source_device_and_event_time() -> None:
    for device_id, at in [("dev-0000", START), ("dev-0042", START + timedelta(days=400)), ("dév/ü", START)]:
        expected = uuid.uuid5(NAMESPACE, f"iot-simulator/{device_id}/{time_text(at)}")
        assert event_id(device_id, time_text(at)) == str(expected)
    # Every variant nibble (8, 9, a, b) appears, so the nibble mapping is checked for all of them.
    ids = [event_id("dev-0001", time_text(START + timedelta(seconds=s))) for s in range(200)]
    assert {i[19] for i in ids} == set("89ab")
    assert all(uuid.UUID(i).version == 5 for i in ids)


def test_a_run_repeated_sends_the_same_ids_and_a_later_run_new_ones() -> None:
    """Re-running the producer must not look like duplicate sends of the earlier run's readings."""
    devices = fleet(5, seed=1)

    def ids(start: datetime) -> list[str]:
        return [str(e["event_id"]) for e in itertools.islice(readings(devices, start, INTERVAL, seed=1), 100)]

    assert ids(START) == ids(START)
    assert not set(ids(START)) & set(ids(START + timedelta(minutes=5)))


def test_reading_values_are_byte_for_byte_what_json_makes() -> None:
    """The formatted values equal json's compact encoding of the reading, faults included (spikes
    far from the range, stuck values), and strings are escaped as json escapes them."""
    devices = [
        *fleet(12, seed=4),
        Device('odd "quoted" \\ dév', "power", "bandung\n", "W", 50.0, 500.0),
        Device("dev-ü", "pressure", "медан", "hPa", 990.0, 1030.0),
    ]
    faults = IotFaultsConfig(spike_rate=0.05, stuck_rate=0.02, dropout_rate=0.02, battery_decline_rate=0.01)
    compact = json.JSONEncoder(separators=(",", ":"))
    checked = 0
    for _, _, reading, _, value in itertools.islice(
        signal_with_values(devices, START, 0.5, 4, faults), 20000
    ):
        if reading is None:
            assert value is None
            continue
        assert value == compact.encode(reading).encode()
        checked += 1
    assert checked > 18000


def test_the_fast_path_without_delivery_problems_keeps_the_order_and_bytes() -> None:
    """Without delivery problems simulate skips its heap: the messages are the readings, in order."""
    devices = fleet(7, seed=8)
    faults = IotFaultsConfig(spike_rate=0.01, stuck_rate=0.01, dropout_rate=0.01, battery_decline_rate=0.0)
    messages = first(5000, simulate(devices, START, INTERVAL, 8, faults))
    expected = [
        (
            at,
            device.device_id,
            None if reading is None else json.dumps(reading, separators=(",", ":")).encode(),
        )
        for at, device, reading, _ in itertools.islice(
            signal_with_faults(devices, START, INTERVAL, 8, faults), 5000
        )
    ]
    assert [(m.due, m.key, m.value) for m in messages] == expected
    assert any(m.value is None for m in messages)


@pytest.mark.parametrize("late", [0.0, 0.05])
def test_unpaced_messages_are_simulate_without_due_times(late: float) -> None:
    """What the generator process pipes: simulate's keys, values and truth in simulate's order."""
    devices = fleet(9, seed=6)
    faults = IotFaultsConfig(spike_rate=0.02, stuck_rate=0.01, dropout_rate=0.02, battery_decline_rate=0.01)
    delivery = IotDeliveryConfig(late_rate=late, duplicate_rate=late)
    expected = [
        (None, m.key, m.value, "", m.truth)
        for m in first(3000, simulate(devices, START, INTERVAL, 6, faults, delivery))
    ]
    got = list(itertools.islice(unpaced_messages(devices, START, INTERVAL, 6, faults, delivery), 3000))
    assert got == expected
    assert any(truth for *_, truth in got) and any(value is None for _, _, value, _, _ in got)


@pytest.mark.parametrize("count", [0, 1, 7, 250])
def test_unpaced_messages_stop_at_the_last_message_the_sender_takes(count: int) -> None:
    """With a count, the generator process makes unpaced_messages up to the count-th message with a
    value (the count-th record sent), dropouts before it included, and nothing after it."""
    devices = fleet(5, seed=3)
    faults = IotFaultsConfig(dropout_rate=0.1)
    args = (devices, START, INTERVAL, 3, faults, IotDeliveryConfig())
    every = list(itertools.islice(unpaced_messages(*args), 1000))
    with_value = [i for i, m in enumerate(every) if m[2] is not None]
    expected = every[: with_value[count - 1] + 1] if count else []
    got = list(unpaced_messages(*args, count))
    assert got == expected
    assert sum(m[2] is not None for m in got) == count
    assert any(m[2] is None for m in got) or count < 50
    assert list(itertools.islice(unpaced_messages(*args, None), 1000)) == every


@pytest.mark.parametrize(
    ("limits", "ahead_s"),
    [
        (SendLimits(count=3000), 600),  # `make demo`: 60 rounds of 50 devices, 10 minutes at once
        (SendLimits(count=3000, speed=60), 590),  # 10 minutes of event time in 10 s
        (SendLimits(count=3000, rate=500), 594),  # 10 minutes of event time in 6 s
        (SendLimits(speed=60, duration=120), 7080),  # 2 hours of event time in 2 minutes
        (SendLimits(count=3000, speed=1), 0),  # real time: no reading outruns the clock
        (SendLimits(), 0),  # unbounded: nothing to go by
    ],
)
def test_default_start_keeps_the_last_reading_behind_the_clock(limits: SendLimits, ahead_s: float) -> None:
    now = datetime(2026, 3, 1, 12, 30, 25, tzinfo=UTC)
    start = default_start(50, INTERVAL, limits, now)
    assert start == (now - timedelta(seconds=ahead_s)).replace(second=0)
    assert start <= now - timedelta(seconds=ahead_s)
