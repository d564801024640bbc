"""arus.io.marks on hand-written Delta logs: which commits count as a batch of an app."""

from __future__ import annotations

import json
from pathlib import Path

from arus.io.marks import last_batch, mark


def commit(log: Path, version: int, *actions: dict[str, object]) -> None:
    log.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(a) for a in actions] + [json.dumps({"add": {"path": f"part-{version}.parquet"}})]
    (log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")


def info(user_metadata: str | None) -> dict[str, object]:
    body: dict[str, object] = {"operation": "WRITE"}
    if user_metadata is not None:
        body["userMetadata"] = user_metadata
    return {"commitInfo": body}


def test_the_newest_commit_of_the_app_names_its_last_batch(tmp_path: Path) -> None:
    log = tmp_path / "t" / "_delta_log"
    commit(log, 0, info(mark("app-a", 0)))
    commit(log, 1, info(mark("app-a", 1)))
    commit(log, 2, info(mark("app-b", 5)))  # another query
    commit(log, 3, info("nightly load"))  # another tool's metadata, not JSON
    commit(log, 4, info(json.dumps({"owner": "app-a"})))  # JSON naming the app, but no mark
    commit(log, 5, info(None))
    assert last_batch(tmp_path / "t", "app-a") == 1
    assert last_batch(tmp_path / "t", "app-b") == 5
    assert last_batch(tmp_path / "t", "app-c") == -1


def test_deltas_own_transaction_ids_count(tmp_path: Path) -> None:
    log = tmp_path / "t" / "_delta_log"
    commit(log, 0, {"txn": {"appId": "app-a", "version": 4}}, info(None))
    commit(log, 1, {"txn": {"appId": "app-ab", "version": 9}}, info(None))
    assert last_batch(tmp_path / "t", "app-a") == 4


def test_the_search_counts_up_from_the_last_checkpoint_and_stops_at_a_cleaned_commit(
    tmp_path: Path,
) -> None:
    log = tmp_path / "t" / "_delta_log"
    commit(log, 0, info(mark("app-a", 0)))
    # Versions 1-9 cleaned up after the checkpoint at 10; 11 and 12 written after it.
    for version in (10, 11, 12):
        commit(log, version, info(mark("app-b", version)))
    (log / "_last_checkpoint").write_text(json.dumps({"version": 10, "size": 3}))
    assert last_batch(tmp_path / "t", "app-b") == 12
    # app-a's mark at version 0 is behind the gap: nothing that old is a batch still to replay.
    assert last_batch(tmp_path / "t", "app-a") == -1
