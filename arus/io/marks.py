"""Which micro-batches a Delta table already holds, read from its transaction log without Spark.

    append_to_delta(df, path, app_id, batch_id)   # arus.io.sinks: skips a batch last_batch covers
    mark(app_id, batch_id)                        # the commit's userMetadata
    last_batch(path, app_id)                      # newest batch of app_id in the table, or -1

A streaming query's appends carry their (app id, batch id) in the commit's userMetadata rather than
as Delta's own transaction id (txnAppId, txnVersion). Both are written atomically with the data, but
open-source Delta looks a transaction id up by rebuilding the table's whole state, a few Spark jobs
costing about 0.5-0.7 s per append on a 2-core box, though every checksum file holds the ids
(docs/benchmarks.md, change table). Reading the newest commits' JSON instead costs a few file reads.

A query writes its batches in order and is a table's only writer under its app id, so the newest
commit carrying that app id names the last batch it wrote: a replayed batch at or below it is in the
table already. Delta's own transaction ids count too, so tables written before the marks (and the
MERGEs, which still use them) are read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

MARK = "arus_batch"


def mark(app_id: str, batch_id: int) -> str:
    return json.dumps({MARK: {"app": app_id, "batch": batch_id}}, separators=(",", ":"))


def last_batch(path: str | Path, app_id: str) -> int:
    """The newest batch of `app_id` the Delta table at `path` holds; -1 if none (or no table).

    The search goes from the newest commit back and stops at the first that carries `app_id`, so
    it reads the commits other writers made since this app's last write. A commit file gone (log
    cleanup keeps 30 days by default) ends it: a replayed batch was written just before its query
    stopped, so only a query down for longer than the log's retention would miss its own mark.
    """
    log = Path(path) / "_delta_log"
    version = newest_version(log)
    while version >= 0:
        try:
            lines = (log / f"{version:020d}.json").read_text().splitlines()
        except FileNotFoundError:
            return -1
        for line in lines:
            # Most actions are file adds; only a line naming the app can be its mark.
            if app_id in line:
                found = batch_in_action(json.loads(line), app_id)
                if found is not None:
                    return found
        version -= 1
    return -1


def newest_version(log: Path) -> int:
    """The table's newest commit version, counted up from its last checkpoint; -1 without a table."""
    try:
        version = int(json.loads((log / "_last_checkpoint").read_text())["version"])
    except FileNotFoundError:
        version = -1
    while (log / f"{version + 1:020d}.json").exists():
        version += 1
    return version


def batch_in_action(action: dict[str, object], app_id: str) -> int | None:
    """The batch id an action records for `app_id`: Delta's own transaction id, or arus's mark."""
    txn = action.get("txn")
    if isinstance(txn, dict) and txn.get("appId") == app_id:
        return int(txn["version"])
    info = action.get("commitInfo")
    if isinstance(info, dict) and isinstance(info.get("userMetadata"), str):
        try:
            marked = json.loads(info["userMetadata"]).get(MARK)
        except (ValueError, AttributeError):
            return None  # another writer's metadata
        if isinstance(marked, dict) and marked.get("app") == app_id:
            return int(marked["batch"])
    return None
