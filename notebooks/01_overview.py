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
# # The lake at a glance
#
# Which Delta tables exist, how many rows and files they hold, their latest versions and how fresh
# they are; then a table's history and a read of it as of an older version and time.
#
# Tables are read with the `deltalake` package into pandas: no Spark, no JVM. The lake is
# `[paths] lake` in `conf/arus.toml`, or the `ARUS_LAKE_DIR` environment variable.

# %%
from datetime import UTC, datetime

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from arus.config import load_config
from arus.io import lake

config = load_config()
LAKE = lake.lake_dir(config)
NOW = datetime.now(UTC)
print(f"lake: {LAKE}")

# %% [markdown]
# ## Tables, sizes, versions and freshness
# `age_s` is the time since the table's last commit.

# %%
tables = lake.overview(LAKE, NOW)
if tables.empty:
    print("No Delta tables in the lake yet: run `make demo` (or the pipeline) first.")
display(tables)

# %% [markdown]
# The tables the pipeline is expected to write, and which of them are there:

# %%
expected = {
    "bronze (Kafka records as received)": config.batch.bronze_table,
    "silver (valid, deduplicated events)": config.batch.silver_table,
    "gold (window aggregates)": config.aggregate.table,
    "dead letters": config.stream.deadletter_table,
    "late events": config.stream.late_table,
    "alerts": config.batch.alerts_table,
}
presence = pd.DataFrame(
    {
        "role": list(expected),
        "table": list(expected.values()),
        "present": [lake.is_table(lake.table_path(name, LAKE)) for name in expected.values()],
    }
)
display(presence)
for row in presence.itertuples():
    if not row.present:
        print(f"not found: {row.table} ({row.role}); its plots below are skipped")

# %% [markdown]
# ## Commits over time
# Every commit of every table: when it happened, what it did, and how many rows it wrote.

# %% tags=["readme-figure"]
histories = []
for path in lake.find_tables(LAKE):
    h = lake.history(path)
    h["table"] = str(path.relative_to(LAKE))
    histories.append(h)
if histories:
    commits = pd.concat(histories, ignore_index=True)
    names = sorted(commits["table"].unique())
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(names) + 1.8), dpi=90)
    for operation, group in commits.groupby("operation"):
        rows = group["rows_out"].fillna(0).astype(float)
        ax.scatter(
            group["timestamp"],
            group["table"].map(names.index),
            s=20 + 180 * (rows / max(float(commits["rows_out"].fillna(0).max()), 1.0)),
            alpha=0.7,
            label=operation,
        )
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("commit time (UTC)")
    ax.set_title("Delta commits per table (marker area: rows written)")
    ax.legend(title="operation", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.show()
else:
    print("No tables, so no commits to plot.")

# %% [markdown]
# ## Time travel
# The gold table's history, then the table as of its first readable version and as of a time
# between its first and its latest commit (the same as `python -m jobs.history TABLE --version N`
# or `--timestamp T`). Versions whose files VACUUM removed can no longer be read.

# %%
gold_path = lake.table_path(config.aggregate.table, LAKE)
if not lake.is_table(gold_path):
    print(f"not found: gold table {gold_path}; nothing to travel through")
else:
    history = lake.history(gold_path)
    display(history.head(10))
    oldest, latest = int(history["version"].min()), int(history["version"].max())
    current = lake.read_table(gold_path)
    assert current is not None
    try:
        first = lake.read_table(gold_path, version=oldest)
        assert first is not None
        print(f"version {oldest}: {len(first)} rows; version {latest} (current): {len(current)} rows")
    except Exception as exc:
        print(f"version {oldest} can no longer be read (vacuumed?): {exc}")
    # Halfway between two commits: a read as of a time sees the last commit written before it.
    stamps = history["timestamp"].sort_values().reset_index(drop=True)
    if len(stamps) < 2:
        print("only one commit: nothing older to read as of a time")
    else:
        later = stamps[len(stamps) // 2]
        earlier = stamps[len(stamps) // 2 - 1]
        middle = earlier + (later - earlier) / 2
        as_of = lake.read_table(gold_path, as_of=middle.to_pydatetime())
        assert as_of is not None
        print(f"as of {middle:%Y-%m-%d %H:%M:%S} UTC: {len(as_of)} rows")
