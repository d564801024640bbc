"""Lake upkeep: compact small files (OPTIMIZE), drop unused ones (VACUUM), turn on auto compaction.

For each table it counts the data files before and after: those in the current version (what
OPTIMIZE lowers) and those on disk (what VACUUM lowers). On first sight of a table it sets Delta's
optimized-write and auto-compaction properties, so later writes make fewer small files.

Safe while the streaming jobs write: OPTIMIZE and property changes are retried when a concurrent
commit wins (the streaming writers retry their upserts likewise), and VACUUM keeps every file
younger than the retention ([batch] vacuum_retain_hours, 7 days), which outlives any reader or
writer in flight. A shorter retention breaks time travel past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from arus.config import Config
from arus.io.delta import AUTO_COMPACTION, FileCounts, file_counts, retry_on_conflict, table_properties
from arus.io.lake import find_tables, lake_dir, table_location
from arus.io.sinks import session_settings

SAFE_RETENTION_HOURS = 168.0  # Delta's own minimum unless its retention check is turned off
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@dataclass(frozen=True)
class Outcome:
    path: str
    before: FileCounts
    after: FileCounts
    compacted: tuple[int, int]  # (files removed, files added) by OPTIMIZE
    vacuumed: bool
    properties_set: bool
    retries: int


def table_paths(config: Config, names: list[str]) -> list[str]:
    """The named tables (names under the lake, or paths), or every table in the lake."""
    if names:
        return [table_location(config, name) for name in names]
    return [str(p) for p in find_tables(lake_dir(config))]


class RetryCounter:
    """Counts (and says) each retry after a lost commit race."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, attempt: int, exc: Exception) -> None:
        self.count += 1
        print(f"  retrying after a concurrent commit (attempt {attempt}): {type(exc).__name__}", flush=True)


def set_auto_compaction(spark: SparkSession, path: str, attempts: int, on_retry: RetryCounter) -> bool:
    """Turn on optimized writes and auto compaction, once: returns whether it changed anything."""
    current = table_properties(spark, path)
    missing = {k: v for k, v in AUTO_COMPACTION.items() if current.get(k) != v}
    if not missing:
        return False
    settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
    escaped = path.replace("`", "``")
    retry_on_conflict(
        lambda: spark.sql(f"ALTER TABLE delta.`{escaped}` SET TBLPROPERTIES ({settings})"),
        attempts,
        on_retry=on_retry,
    )
    return True


def optimize(spark: SparkSession, path: str, attempts: int, on_retry: RetryCounter) -> tuple[int, int]:
    """Compact the table's small files; (files removed, files added)."""
    metrics = retry_on_conflict(
        lambda: DeltaTable.forPath(spark, path).optimize().executeCompaction().collect()[0]["metrics"],
        attempts,
        on_retry=on_retry,
    )
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def vacuum(spark: SparkSession, path: str, retain_hours: float) -> None:
    # VACUUM lists the table's folders in as many tasks as this says (10,000 by default): minutes
    # of scheduling on a small machine for a table of a few folders.
    conf = {LISTING_PARALLELISM: str(max(2, spark.sparkContext.defaultParallelism))}
    if retain_hours < SAFE_RETENTION_HOURS:
        conf[RETENTION_CHECK] = "false"
    with session_settings(spark, conf):
        DeltaTable.forPath(spark, path).vacuum(retain_hours)


def maintain(
    spark: SparkSession,
    path: str,
    retain_hours: float,
    attempts: int,
    compact: bool = True,
    clean: bool = True,
    properties: bool = True,
) -> Outcome:
    retries = RetryCounter()
    before = file_counts(spark, path)
    properties_set = set_auto_compaction(spark, path, attempts, retries) if properties else False
    compacted = optimize(spark, path, attempts, retries) if compact else (0, 0)
    if clean:
        vacuum(spark, path, retain_hours)
    return Outcome(path, before, file_counts(spark, path), compacted, clean, properties_set, retries.count)


def print_outcome(outcome: Outcome, lake: Path) -> None:
    path = Path(outcome.path)
    name = str(path.relative_to(lake)) if path.is_relative_to(lake) else outcome.path
    b, a = outcome.before, outcome.after
    notes = []
    if outcome.properties_set:
        notes.append("auto compaction turned on")
    if outcome.retries:
        notes.append(f"{outcome.retries} retries")
    print(
        f"  {name:28} files in version {b.active:4} -> {a.active:<4}  on disk {b.on_disk:4} -> {a.on_disk:<4}"
        f"  {b.bytes_active / 1024:8.1f} KB -> {a.bytes_active / 1024:.1f} KB"
        + (f"  ({'; '.join(notes)})" if notes else "")
    )
