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
# # Data quality: dead letters and late events
#
# Records the pipeline could not use, by reason and over time: dead letters (bad records, kept
# with their original bytes and the reason) and late events (behind the watermark). Reads Delta
# with `deltalake` (no Spark) from `[paths] lake`, or `ARUS_LAKE_DIR`.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from arus.config import load_config
from arus.io import lake

config = load_config()
LAKE = lake.lake_dir(config)
BINS = ("10s", "1min", "5min", "15min", "1h", "6h", "1D")


def load(name: str, role: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    table = lake.read_table(lake.table_path(name, LAKE), columns=columns)
    if table is None:
        print(f"not found: {role} table {name!r} in {LAKE}")
    else:
        print(f"{role}: {name}, {len(table)} rows")
    return table


def bin_width(times: pd.Series) -> str:
    """The finest bin that keeps the chart under ~120 bars."""
    span = times.max() - times.min()
    return next((b for b in BINS if span / pd.Timedelta(b) <= 120), BINS[-1])


def per_bin(times: pd.Series, reasons: pd.Series, width: str) -> pd.DataFrame:
    frame = pd.DataFrame({"bin": times.dt.floor(width), "reason": reasons})
    return frame.groupby(["bin", "reason"]).size().unstack("reason", fill_value=0).sort_index()


dead = load(config.stream.deadletter_table, "dead letters", ["timestamp", "topic", "error"])
late = load(config.stream.late_table, "late events")
bronze = load(config.batch.bronze_table, "bronze", ["timestamp"])

# %% [markdown]
# ## Dead letters by reason

# %%
if dead is not None and not dead.empty:
    display(dead.groupby("error").size().rename("records").sort_values(ascending=False).to_frame())

# %% tags=["readme-figure"]
if lake.has_rows(dead, "dead letters", "dead-letter"):
    width = bin_width(dead["timestamp"])
    counts = per_bin(dead["timestamp"], dead["error"], width)
    panels = 2 if bronze is not None and not bronze.empty else 1
    fig, axes = plt.subplots(panels, 1, figsize=(11, 3.2 * panels + 0.8), dpi=90, sharex=True, squeeze=False)
    ax = axes[0, 0]
    bottom = pd.Series(0, index=counts.index)
    bar_width = pd.Timedelta(width) * 0.8
    for reason in counts.columns:
        ax.bar(counts.index, counts[reason], width=bar_width, bottom=bottom, align="edge", label=reason)
        bottom = bottom + counts[reason]
    ax.set_title(f"Dead letters by reason, per {width} of Kafka record time")
    ax.set_ylabel(f"records per {width}")
    ax.legend(title="reason", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    if panels == 2:
        assert bronze is not None
        total = bronze["timestamp"].dt.floor(width).value_counts().sort_index()
        share = (counts.sum(axis=1).reindex(total.index, fill_value=0) / total * 100).fillna(0)
        axes[1, 0].plot(share.index, share.to_numpy(), marker="o", ms=3, label="dead-letter share")
        axes[1, 0].set_title(f"Share of all records dead-lettered, per {width}")
        axes[1, 0].set_ylabel("% of records")
        axes[1, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("Kafka record time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Late events by reason
# Events that arrived behind the watermark, so the stream left them out of its windows
# (`jobs/reconcile.py` accounts for them when it compares the stream with a batch recompute).

# %%
if lake.has_rows(late, "late events", "late-events"):
    at = next(c for c in ("timestamp", config.stream.event_time_field, "window_start") if c in late)
    why = next((c for c in ("reason", "error") if c in late), None)
    if why:
        reasons = late[why]
    elif "stage" in late:  # the pipeline records which stage's watermark dropped the event
        reasons = "behind the watermark of the " + late["stage"].astype(str) + " stage"
    else:
        reasons = pd.Series("behind the watermark", index=late.index)
    width = bin_width(late[at])
    counts = per_bin(late[at], reasons, width)
    fig, ax = plt.subplots(figsize=(11, 3.5), dpi=90)
    counts.plot(kind="bar", stacked=True, ax=ax, width=0.8)
    ax.set_title(f"Late events by reason, per {width} of {at}")
    ax.set_xlabel(f"{at} (UTC)")
    ax.set_ylabel(f"events per {width}")
    ax.set_xticks(ax.get_xticks(), [f"{t:%H:%M}" for t in counts.index], rotation=45)
    ax.legend(title="reason", fontsize="small")
    fig.tight_layout()
    plt.show()
