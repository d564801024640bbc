"""The shipped [alerts] settings against the IoT simulator's fault model, in plain Python (no Spark).

The range rule and stuck_readings are chosen for what the simulator injects (docs/pipeline.md):
a spike is outside its device's nominal range and a healthy reading inside it; every stuck episode
shows stuck_readings equal values in a row and a healthy sensor never does, after [clean] rounding.
Measured here on the demo's fleet (seed, devices, faults as shipped) at four times of day, so a
change to either side that breaks the match fails here, before make demo's scorecard does.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from functools import cache

import pytest

from arus.config import load_config
from arus.sources.iot import STUCK_READINGS, fleet, signal_with_faults

CONFIG = load_config("conf/arus.toml", env={})
ROUNDS = 150  # readings per device: two and a half times make demo's


@cache
def demo_readings(hour: int) -> list[tuple[str, float, float, float, set[str], str]]:
    """The demo fleet's readings as silver has them, started at `hour`: (device, value rounded as
    [clean] rounds it, its range, the faults in it, its episode), in event-time order per device."""
    iot = CONFIG.iot
    start = datetime(2026, 12, 2, hour, tzinfo=UTC)
    out = []
    for _, device, reading, truth in signal_with_faults(
        fleet(iot.devices, iot.seed), start, iot.interval_s, iot.seed, iot.faults
    ):
        if int(reading["seq"] if reading is not None else truth[0]["seq"]) >= ROUNDS:
            break
        if reading is not None:
            kinds = {str(t["kind"]) for t in truth}
            episode = next((f"{device.device_id}/{t['episode']}" for t in truth if "episode" in t), "")
            value = round(float(reading["value"]), CONFIG.clean.decimals)
            out.append((device.device_id, value, device.low, device.high, kinds, episode))
    return out


@pytest.mark.parametrize("hour", [0, 6, 12, 18])
def test_spikes_leave_the_range_healthy_readings_stay_in_it(hour: int) -> None:
    readings = demo_readings(hour)
    spikes = [(v, lo, hi) for _, v, lo, hi, kinds, _ in readings if "spike" in kinds]
    healthy = [(v, lo, hi) for _, v, lo, hi, kinds, _ in readings if not kinds & {"spike", "stuck"}]
    assert spikes and all(v < lo or v > hi for v, lo, hi in spikes)
    assert all(lo <= v <= hi for v, lo, hi in healthy)


@pytest.mark.parametrize("hour", [0, 6, 12, 18])
def test_every_stuck_episode_and_no_healthy_sensor_repeats_stuck_readings_times(hour: int) -> None:
    n = CONFIG.alerts.stuck_readings
    # The shortest episode freezes STUCK_READINGS[0] readings (the one before it already has the value).
    assert n <= STUCK_READINGS[0]
    by_device: dict[str, list[tuple[float, set[str], str]]] = defaultdict(list)
    for device, value, _, _, kinds, episode in demo_readings(hour):
        by_device[device].append((value, kinds, episode))
    episodes, seen = set(), set()
    for series in by_device.values():
        for _, kinds, episode in series:
            if "stuck" in kinds:
                episodes.add(episode)
        for i in range(n - 1, len(series)):
            run = series[i - n + 1 : i + 1]
            if len({value for value, _, _ in run}) == 1:
                stuck = [episode for _, kinds, episode in run if "stuck" in kinds]
                assert stuck, f"healthy readings repeat a value {n} times: {run}"
                seen.add(stuck[-1])
    assert episodes and seen == episodes
