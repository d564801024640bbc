"""The Spark-free view of the lake (arus.io.lake) on Delta tables written with `deltalake` itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from deltalake import write_deltalake

from arus.io import lake


def readings(first: int, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": [f"d{i}" for i in range(first, first + n)],
            "value": [float(i) for i in range(first, first + n)],
        }
    )


def test_overview_lists_every_table_with_rows_files_and_versions(tmp_path: Path) -> None:
    write_deltalake(tmp_path / "gold", readings(0, 3))
    write_deltalake(tmp_path / "gold", readings(3, 2), mode="append")
    write_deltalake(tmp_path / "nested" / "silver", readings(0, 4))
    (tmp_path / "checkpoints").mkdir()  # not a table

    now = datetime(2030, 1, 1, tzinfo=UTC)
    tables = lake.overview(tmp_path, now)
    assert list(tables["table"]) == ["gold", "nested/silver"]
    assert list(tables["version"]) == [1, 0]
    assert list(tables["rows"]) == [5, 4]
    assert list(tables["files"]) == [2, 1]
    assert (tables["age_s"] > 0).all()
    assert lake.overview(tmp_path / "missing").empty


def test_read_table_as_of_a_version_and_history_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "gold"
    write_deltalake(path, readings(0, 3))
    write_deltalake(path, readings(3, 2), mode="append")

    log = lake.history(path)
    assert list(log["version"]) == [1, 0]
    assert list(log["operation"]) == ["WRITE", "WRITE"]
    assert list(log["rows_out"]) == [2, 3]
    assert list(log["files_added"]) == [1, 1]
    first = lake.read_table(path, version=0)
    assert first is not None
    pd.testing.assert_frame_equal(first.sort_values("device_id").reset_index(drop=True), readings(0, 3))
    current = lake.read_table(path, columns=["value"])
    assert current is not None and sorted(current["value"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert lake.read_table(tmp_path / "nothing") is None


def test_has_rows_says_why_a_chart_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert lake.has_rows(readings(0, 1), "readings", "silver")
    assert capsys.readouterr().out == ""
    for missing_or_empty in (None, readings(0, 0)):
        assert not lake.has_rows(missing_or_empty, "readings", "silver")
        assert capsys.readouterr().out == "No readings to plot (the silver table is missing or empty).\n"
