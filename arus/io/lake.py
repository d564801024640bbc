"""The lake without Spark: find, read and time-travel its Delta tables with the `deltalake` package.

Notebooks, `arus history` and every batch job use this module; it never starts a JVM. The lake's
location is the one config value `[paths] lake`, which the environment variable ARUS_LAKE_DIR
overrides. `is_table` is arus's one Delta-table check: Spark jobs use it too, before Spark starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeGuard

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable
from pyarrow.dataset import dataset

from arus.config import Config, load_config


def lake_dir(config: Config | None = None) -> Path:
    config = config or load_config()
    return config.resolve(config.paths.lake)


def table_path(name: str, lake: Path) -> Path:
    """A table name under the lake, or a path as given: what a reader names."""
    path = Path(name)
    return path if path.is_absolute() or path.exists() else lake / name


def table_location(config: Config, name: str) -> str:
    """A table name under the lake, or an absolute path: where a batch job reads or writes.

    Unlike `table_path`, a relative name is always under the lake, even when a folder of that name
    exists here, so a table a job is about to create lands where the next run looks for it.
    """
    path = Path(name)
    return str(path if path.is_absolute() else lake_dir(config) / name)


def is_table(path: str | Path) -> bool:
    """Whether a Delta table is at `path` (a folder, or a URI deltalake reads)."""
    return bool(DeltaTable.is_deltatable(str(path)))


def find_tables(lake: Path) -> list[Path]:
    """Every Delta table under the lake (a folder with a _delta_log), nested ones included."""
    if not lake.is_dir():
        return []
    return sorted(log.parent for log in lake.rglob("_delta_log") if is_table(log.parent))


@dataclass(frozen=True)
class TableInfo:
    name: str
    path: Path
    version: int
    rows: int
    files: int
    size_bytes: int
    last_commit: datetime
    last_operation: str

    def age(self, now: datetime | None = None) -> timedelta:
        """How long ago the table last changed."""
        return (now or datetime.now(UTC)) - self.last_commit


def table_info(path: Path, lake: Path | None = None) -> TableInfo:
    table = DeltaTable(str(path))
    actions = table.get_add_actions(flatten=True)
    sizes = [int(size) for size in actions.column("size_bytes").to_pylist()] if actions.num_rows else []
    last = table.history(1)[0]
    return TableInfo(
        name=str(path.relative_to(lake)) if lake and path.is_relative_to(lake) else path.name,
        path=path,
        version=int(table.version()),
        rows=int(table.count()),
        files=len(sizes),
        size_bytes=int(sum(sizes)),
        last_commit=_from_ms(last["timestamp"]),
        last_operation=str(last.get("operation", "")),
    )


def overview(lake: Path, now: datetime | None = None) -> pd.DataFrame:
    """One row per table: name, version, rows, files, size, last commit, its operation and age."""
    now = now or datetime.now(UTC)
    rows = [table_info(path, lake) for path in find_tables(lake)]
    return pd.DataFrame(
        {
            "table": [t.name for t in rows],
            "version": [t.version for t in rows],
            "rows": [t.rows for t in rows],
            "files": [t.files for t in rows],
            "size_kb": [round(t.size_bytes / 1024, 1) for t in rows],
            "last_commit": pd.to_datetime([t.last_commit for t in rows], utc=True),
            "last_operation": [t.last_operation for t in rows],
            "age_s": [round(t.age(now).total_seconds(), 1) for t in rows],
        }
    )


def read_table(
    path: Path,
    columns: list[str] | None = None,
    version: int | None = None,
    as_of: datetime | None = None,
) -> pd.DataFrame | None:
    """The table (as of a version, or as of a time) into pandas; None when there is no table there."""
    if not is_table(path):
        return None
    table = DeltaTable(str(path))
    if version is not None:
        table.load_as_version(version)
    elif as_of is not None:
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        table.load_as_version(as_of)
    if not _plain_files(table):
        return table.to_pandas(columns=columns)
    # The snapshot's data files, read by pyarrow itself: deltalake's own dataset scan
    # (to_pandas) can abort the interpreter at exit (delta-io/delta-rs#2184).
    schema = pa.schema(table.schema().to_arrow())
    files = dataset(table.file_uris(), schema=schema, format="parquet")
    return files.to_table(columns=columns).to_pandas()


def has_rows(df: pd.DataFrame | None, what: str, table: str) -> TypeGuard[pd.DataFrame]:
    """Whether `df`, a read_table result, has rows to plot; when not, a line saying so, so a
    notebook cell skips its chart instead of failing on a table not written yet."""
    if df is not None and not df.empty:
        return True
    print(f"No {what} to plot (the {table} table is missing or empty).")
    return False


def _plain_files(table: DeltaTable) -> bool:
    """Whether the snapshot is just its Parquet files: no partition values, deletion vectors or
    column mapping to apply on top."""
    features = set(table.protocol().reader_features or [])
    mapped = table.metadata().configuration.get("delta.columnMapping.mode", "none") != "none"
    return not table.metadata().partition_columns and not features and not mapped


def history(path: Path, limit: int | None = None) -> pd.DataFrame:
    """Newest first: version, timestamp (UTC), operation, rows and files it wrote and removed."""
    records = DeltaTable(str(path)).history(limit)
    return pd.DataFrame(
        {
            "version": [int(r["version"]) for r in records],
            "timestamp": pd.to_datetime([_from_ms(r["timestamp"]) for r in records], utc=True),
            "operation": [r.get("operation", "") for r in records],
            # Spark's metric names first, then delta-rs's.
            "rows_out": [_metric(r, "numOutputRows", "num_added_rows") for r in records],
            "rows_updated": [_metric(r, "numTargetRowsUpdated") for r in records],
            "rows_deleted": [_metric(r, "numTargetRowsDeleted", "numDeletedRows") for r in records],
            "files_added": [
                _metric(r, "numFiles", "numAddedFiles", "numTargetFilesAdded", "num_added_files")
                for r in records
            ],
            "files_removed": [
                _metric(r, "numRemovedFiles", "numTargetFilesRemoved", "num_removed_files") for r in records
            ],
        }
    )


def _metric(record: dict[str, object], *names: str) -> int | None:
    metrics = record.get("operationMetrics") or {}
    assert isinstance(metrics, dict)
    for name in names:
        if name in metrics:
            return int(metrics[name])
    return None


def _from_ms(ms: object) -> datetime:
    return datetime.fromtimestamp(int(str(ms)) / 1000, tz=UTC)
