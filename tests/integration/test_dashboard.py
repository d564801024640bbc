"""`arus dashboard` in a real headless browser (Debian's chromium driven by playwright): after the main
job ran and more records arrived, the page shows by itself the broker's end offsets and the lag, the
newest metrics line, and the gold table's row count and newest windows."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition
from playwright.sync_api import Page, expect, sync_playwright
from support import aggregated_readings, produce

from arus.config import Config
from arus.core.rules import time_text
from arus.io.checkpoints import read_query_status
from arus.io.lake import read_table
from arus.ops import dashboard, lag
from arus.sources.iot import to_record

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)",
    ),
]

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The page redraws every 3 s; a refresh on a busy machine may take a few more.
WAIT_MS = 30_000


def end_offsets(config: Config, topic: str) -> dict[str, int]:
    """{"topic:partition": end offset}, from a plain consumer rather than arus's own code."""
    reader = KafkaConsumer(**config.kafka.client_kwargs())
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        return {f"{tp.topic}:{tp.partition}": end for tp, end in reader.end_offsets(partitions).items()}
    finally:
        reader.close()


def cells(page: Page, row: str, *names: str) -> list[str]:
    return [page.locator(f"{row} td.{name}").inner_text() for name in names]


@pytest.mark.usefixtures("spark")
def test_the_page_shows_the_brokers_offsets_the_metrics_and_the_newest_gold_windows(
    config: Config, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topics, events, first = aggregated_readings(config, new_topic, tmp_path, 4, 7, START)
    checkpointed = end_offsets(config, topics["in"])

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    newest_line = {
        "time": "2026-12-01T10:00:05.000Z", "source": "spark", "app": "arus-aggregate", "query": "aggregates",
        "batch_id": 1, "input_rows_per_s": 812.5, "processed_rows_per_s": 950.1, "batch_duration_ms": 1263,
        "rows": 60, "watermark": "2026-03-01T12:00:00.000Z", "state_rows": 24, "state_memory_bytes": 91832,
        "late": 3, "dead_letters": 1, "lag": {f"{topics['in']}:0": 4, f"{topics['in']}:1": 5},
    }  # fmt: skip
    lines = [
        {**newest_line, "time": "2026-12-01T10:00:00.000Z", "batch_id": 0, "late": 0},
        newest_line,
        # A producer's line has no query state: those figures are absent, so n/a.
        {
            "time": "2026-12-01T10:00:06.000Z",
            "source": "producer",
            "app": "arus-iot",
            "query": "send",
            "rows": 60,
        },
    ]
    (metrics / "arus-aggregate.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines[:2]))
    (metrics / "arus-iot.jsonl").write_text(json.dumps(lines[2]) + "\n")

    # The config a user of this run would have: its lake, checkpoints and gold table.
    site = replace(
        config,
        paths=replace(config.paths, lake=str(tmp_path), checkpoints=str(tmp_path / "checkpoint")),
        aggregate=replace(config.aggregate, table="gold"),
    )
    admin = lag.connect(site.kafka)
    web = dashboard.server(site, admin, "127.0.0.1", 0, metrics)
    serving = threading.Thread(target=web.serve_forever, daemon=True)
    serving.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{web.server_port}/")
            query = 'tr.reader[data-query="aggregates"]'
            expect(page.locator(f"{query} td.lag")).to_have_text("0", timeout=WAIT_MS)

            # More records after the page loaded: its own refresh shows them as lag.
            more = [next(events) for _ in range(13)]
            produce(config, [to_record(e, topics["in"]) for e in more])
            ends = end_offsets(config, topics["in"])
            expect(page.locator(f"{query} td.lag")).to_have_text("13", timeout=WAIT_MS)
            shown = page_partitions(page)
            browser_state = page_state(page)
            browser.close()
    finally:
        web.shutdown()
        admin.close()

    assert shown == {
        tp: [str(ends[tp]), str(checkpointed[tp]), str(ends[tp] - checkpointed[tp])] for tp in ends
    }
    newest_event = max(datetime.fromisoformat(str(e["event_time"])) for e in first)
    last_batch = read_query_status(tmp_path / "checkpoint" / "aggregates").committed
    assert browser_state["query"] == [str(last_batch), time_text(newest_event - timedelta(minutes=2)), "n/a"]

    # The newest line of each (app, query), as written; absent figures as n/a.
    assert browser_state["metrics"] == [
        ["arus-aggregate", "aggregates", "spark", "2026-12-01T10:00:05.000Z", "1", "812.5", "950.1", "1263",
         "60", "2026-03-01T12:00:00.000Z", "24", "91832", "3", "1", "9"],
        ["arus-iot", "send", "producer", "2026-12-01T10:00:06.000Z", "n/a", "n/a", "n/a", "n/a",
         "60", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"],
    ]  # fmt: skip

    table = read_table(tmp_path / "gold")
    assert table is not None
    table["window_start"] = [time_text(t) for t in pd.to_datetime(table["window_start"], utc=True)]
    assert browser_state["rows"] == str(len(table))
    newest = table[table["window_start"] == table["window_start"].max()].sort_values("device_id")
    assert browser_state["newest"] == [
        [row.device_id, row.window_start, str(row.count), row.value_mean] for row in newest.itertuples()
    ]
    # The plot: one line per device, each point a window's mean as the table holds it.
    means = {(r.device_id, r.window_start): r.value_mean for r in table.itertuples()}
    plotted = {(t["name"], x): y for t in browser_state["plot"] for x, y in zip(t["x"], t["y"], strict=True)}
    assert plotted == means  # fewer windows than the page's NEWEST_WINDOWS: every one is drawn


def page_partitions(page: Page) -> dict[str, list[str]]:
    rows = page.locator('tr[data-query="aggregates"][data-partition]')
    return {
        str(rows.nth(i).get_attribute("data-partition")): [
            rows.nth(i).locator(f"td.{name}").inner_text() for name in ("end", "offset", "lag")
        ]
        for i in range(rows.count())
    }


def page_state(page: Page) -> dict[str, Any]:
    """What the page shows besides the partitions, read from its cells and its chart."""
    newest = page.locator("#newest tbody tr")
    metrics = page.locator("#metrics tbody tr")
    return {
        "query": cells(
            page, 'tr.reader[data-query="aggregates"]', "last_batch", "watermark", "in_flight_batch"
        ),
        "metrics": [
            [cell.inner_text() for cell in metrics.nth(i).locator("td").all()] for i in range(metrics.count())
        ],
        "rows": page.locator("#gold-rows").inner_text(),
        "newest": [
            [
                *(
                    newest.nth(i).locator(f"td.{c}").inner_text()
                    for c in ("device_id", "window_start", "count")
                ),
                float(newest.nth(i).locator("td.value_mean").inner_text()),
            ]
            for i in range(newest.count())
        ],
        "plot": page.evaluate(
            "Array.from(document.getElementById('plot').data, t => ({name: t.name, x: t.x, y: t.y}))"
        ),
    }
