"""A live page of the running system: lag, rates, watermark, late and dead letters, newest gold windows.

    arus dashboard                      # http://127.0.0.1:8050/, this machine only
    arus dashboard --port 9000
    arus dashboard --host 0.0.0.0       # every network this machine is on can read it: no login

The page (dashboard.html and dashboard.js beside this module, no build step) fetches /api/state
every few seconds and redraws itself. One state holds:

- `lag`: every Spark checkpoint under [paths] checkpoints and every consumer group on the broker,
  per partition the end offset, the reader's offset and the lag, with each query's last batch and
  watermark: what `arus lag --json` prints, from the same functions.
- `metrics`: the newest line per (app, query) of the metrics files <metrics folder>/<app>.jsonl that
  the jobs, the consumer and the producers append: rows/s in and processed, batch duration, state,
  late and dead letters of the last batch. A figure a line lacks shows as n/a.
- `gold`: the newest windows of the [aggregate] table under [paths] lake (read with deltalake, no
  Spark), the mean of its first value field per key, drawn with plotly.js. The chart's script is
  served from the installed plotly package, so the page needs no network.

Exit codes: 0 after Ctrl-C or SIGTERM; 1 when the config is wrong, the broker cannot be reached or
the port cannot be had.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Flask, jsonify, send_file
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from werkzeug.serving import BaseWSGIServer, make_server

from arus.config import Config, job_parser, load_config_or_say
from arus.core.rules import time_text
from arus.io.kafka import KafkaUnavailable
from arus.io.lake import read_table, table_path
from arus.ops import lag
from arus.signals import stop_on_signals

HERE = Path(__file__).parent
PLOTLY_JS = files("plotly") / "package_data" / "plotly.min.js"
NEWEST_WINDOWS = 20  # distinct window starts on the chart


def metrics_dir(config: Config) -> Path:
    return config.resolve(config.paths.metrics)


def newest_metrics(folder: Path) -> list[dict[str, Any]]:
    """The last line per (app, query) of every <app>.jsonl in `folder`, sorted by app and query."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a writer is appending right now
            if isinstance(entry, dict):
                newest[(str(entry.get("app")), str(entry.get("query")))] = entry
    return [newest[key] for key in sorted(newest)]


def gold_windows(
    path: Path, keys: list[str], field: str, count: int = NEWEST_WINDOWS
) -> dict[str, Any] | None:
    """The table's row count and its rows in the `count` newest window starts; None without a table."""
    table = read_table(path)
    if table is None:
        return None
    starts = pd.to_datetime(table["window_start"], utc=True)
    newest = sorted(starts.unique())[-count:]
    # *keys, window_start, count, <field>: oldest window first, then by key
    shown = table.assign(window_start=starts)[starts.isin(newest)].sort_values(["window_start", *keys])
    return {
        "table": str(path),
        "rows": len(table),
        "keys": keys,
        "field": field,
        "windows": [
            {
                **{key: str(row[key]) for key in keys},
                "window_start": time_text(row["window_start"].to_pydatetime()),
                "count": int(row["count"]),
                field: float(row[field]),
            }
            for _, row in shown.iterrows()
        ],
    }


def state(config: Config, admin: KafkaAdminClient, metrics: Path) -> dict[str, Any]:
    """What the page shows, as JSON values; a broker lost meanwhile is named in `lag_error`."""
    checkpoints = config.resolve(config.paths.checkpoints)
    try:
        readers: dict[str, Any] | None = lag.as_json(
            lag.collect(admin, config.kafka, None, [checkpoints], metrics)
        )
        error = None
    except (KafkaError, OSError, ValueError) as exc:
        readers, error = None, f"{type(exc).__name__}: {exc}"
    gold = table_path(config.aggregate.table, config.resolve(config.paths.lake))
    return {
        "at": time_text(datetime.now(UTC)),
        "lag": readers,
        "lag_error": error,
        "metrics_dir": str(metrics),
        "metrics": newest_metrics(metrics),
        "gold_table": str(gold),
        "gold": gold_windows(gold, list(config.aggregate.keys), f"{config.aggregate.value_fields[0]}_mean"),
    }


def create_app(look: Callable[[], dict[str, Any]]) -> Flask:
    app = Flask(__name__, static_folder=None)
    # kafka-python's admin client is not meant for several threads at once; the server has one per request.
    one_at_a_time = threading.Lock()

    @app.get("/")
    def page() -> Any:
        return send_file(HERE / "dashboard.html")

    @app.get("/dashboard.js")
    def script() -> Any:
        return send_file(HERE / "dashboard.js")

    @app.get("/plotly.min.js")
    def plotly() -> Any:
        return send_file(str(PLOTLY_JS))

    @app.get("/api/state")
    def api_state() -> Any:
        with one_at_a_time:
            return jsonify(look())

    return app


def server(config: Config, admin: KafkaAdminClient, host: str, port: int, metrics: Path) -> BaseWSGIServer:
    """The page's server, bound and ready for serve_forever(); port 0 takes a free one."""
    return make_server(host, port, create_app(lambda: state(config, admin, metrics)), threaded=True)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("arus dashboard", __doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=8050, help="port to listen on (default 8050; 0: any free one)"
    )
    args = parser.parse_args(argv)
    config = load_config_or_say("dashboard", args.config)
    if config is None:
        return 1
    try:
        admin = lag.connect(config.kafka)
    except KafkaUnavailable as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1
    try:
        web = server(config, admin, args.host, args.port, metrics_dir(config))
    except OSError as exc:
        admin.close()
        print(f"dashboard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"arus dashboard on http://{args.host}:{web.server_port}/ (Ctrl-C stops)", flush=True)
    serving = threading.Thread(target=web.serve_forever, name="dashboard")
    serving.start()
    stop = threading.Event()
    with stop_on_signals(lambda _signal: stop.set()):
        stop.wait()
    web.shutdown()
    serving.join()
    admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
