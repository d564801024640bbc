# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # IoT fleet: readings, window aggregates, alerts
#
# Per-device readings over event time (silver) with the streaming job's window aggregates (gold)
# drawn over them: the window mean as a step line and the min-max range as a band; alerts as
# markers; then a heatmap of every device by time. Reads Delta with `deltalake` (no Spark) from
# `[paths] lake`, or `ARUS_LAKE_DIR`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from arus.config import load_config
from arus.io import lake

config = load_config()
LAKE = lake.lake_dir(config)
KEY = config.aggregate.keys[0]
FIELD = config.aggregate.value_fields[0]
TIME = config.stream.event_time_field
MAX_DEVICES = 4


def load(name: str, role: str) -> pd.DataFrame | None:
    table = lake.read_table(lake.table_path(name, LAKE))
    if table is None:
        print(f"not found: {role} table {name!r} in {LAKE}")
    else:
        print(f"{role}: {name}, {len(table)} rows")
    return table


silver = load(config.batch.silver_table, "readings (silver)")
gold = load(config.aggregate.table, "window aggregates (gold)")
alerts = load(config.batch.alerts_table, "alerts")

# %% [markdown]
# ## Readings with their window aggregates
# One kind of sensor (one unit) at a time: the kind with the most devices, a few of its devices.

# %% tags=["readme-figure"]
if lake.has_rows(silver, "readings", "silver"):
    kind = silver["kind"].mode().iloc[0] if "kind" in silver else None
    readings = silver if kind is None else silver[silver["kind"] == kind]
    unit = readings["unit"].mode().iloc[0] if "unit" in readings and readings["unit"].notna().any() else "?"
    devices = sorted(readings[KEY].unique())[:MAX_DEVICES]
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=90)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, device in zip(colors, devices, strict=False):
        mine = readings[readings[KEY] == device].sort_values(TIME)
        ax.plot(mine[TIME], mine[FIELD], ".", ms=3, color=color, alpha=0.6, label=f"{device} readings")
        if gold is not None:
            windows = gold[gold[KEY] == device].sort_values("window_start")
            edges = pd.concat([windows["window_start"], windows["window_end"].tail(1)], ignore_index=True)
            means = np.append(windows[f"{FIELD}_mean"].to_numpy(), np.nan)
            lows = np.append(windows[f"{FIELD}_min"].to_numpy(), np.nan)
            highs = np.append(windows[f"{FIELD}_max"].to_numpy(), np.nan)
            ax.step(edges, means, where="post", color=color, lw=1.6, label=f"{device} window mean")
            ax.fill_between(edges, lows, highs, step="post", color=color, alpha=0.12)
    if alerts is not None and not alerts.empty and KEY in alerts:
        at = next((c for c in (TIME, "window_start", "timestamp") if c in alerts), None)
        mine = alerts[alerts[KEY].isin(devices)] if at else alerts.iloc[0:0]
        if at and not mine.empty:
            y = mine[FIELD] if FIELD in mine else pd.Series(readings[FIELD].max(), index=mine.index)
            ax.scatter(mine[at], y, marker="v", s=60, color="red", zorder=5, label="alert")
    elif alerts is None:
        ax.text(0.01, 0.97, "no alerts table yet", transform=ax.transAxes, va="top", fontsize="small")
    ax.set_title(
        f"{kind or FIELD} readings per device, {config.aggregate.window} window mean and min-max band"
    )
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel(f"{FIELD} ({unit})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Every device by time
# Window means, standardized per device (each row's mean 0, standard deviation 1) so devices of
# different kinds and units share one colour scale.

# %%
if lake.has_rows(gold, "window aggregates", "gold"):
    grid = gold.pivot_table(index=KEY, columns="window_start", values=f"{FIELD}_mean")
    if silver is not None and "kind" in silver:
        kinds = silver.drop_duplicates(KEY).set_index(KEY)["kind"]
        grid = grid.loc[sorted(grid.index, key=lambda d: (str(kinds.get(d, "")), d))]
    spread = grid.std(axis=1).replace(0, np.nan)
    z = grid.sub(grid.mean(axis=1), axis=0).div(spread, axis=0)
    fig, ax = plt.subplots(figsize=(11, 0.18 * len(z) + 2.2), dpi=90)
    image = ax.imshow(z.to_numpy(), aspect="auto", cmap="coolwarm", vmin=-3, vmax=3, interpolation="nearest")
    step = max(1, len(z) // 25)
    ax.set_yticks(range(0, len(z), step), z.index[::step], fontsize="small")
    ticks = np.linspace(0, len(z.columns) - 1, min(8, len(z.columns))).astype(int)
    ax.set_xticks(ticks, [f"{z.columns[i]:%H:%M}" for i in ticks])
    ax.set_xlabel(f"window start (UTC, {z.columns[0]:%Y-%m-%d})")
    ax.set_ylabel(KEY)
    ax.set_title(f"{FIELD} window mean by device and time (z-score within each device)")
    fig.colorbar(image, ax=ax, label="z-score (standard deviations from the device's mean)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## The latest windows

# %%
if gold is not None and not gold.empty:
    display(gold.sort_values(["window_start", KEY]).tail(10))
