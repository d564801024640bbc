"""What a Kafka-reading streaming query did, read back from its checkpoint: the one parser of it.

Each micro-batch records the Kafka offsets it reads up to and the watermark in force, before it
runs; a batch whose output is committed gets a commit file. That is enough to say, for any Kafka
record, which batch read it and whether the stream dropped it as late: Spark judges an event late
when its event time is at or before the watermark of the *previous* batch (IncrementalExecution:
watermarkForPrevBatch drives late-event filtering, the current batch's watermark drives state
eviction).

    offsets/<batch>: v1 / {"batchWatermarkMs": ..., ...} / one line per source:
                     {"<topic>": {"<partition>": <next offset>}} for Kafka ("-" before it has any)
    commits/<batch>: v1 / {"nextBatchWatermarkMs": ...}, written once the batch's output is committed
    sources/<i>/0:   NUL v1 / the offsets a new query started from
    metadata:        {"id": "<query id>"}, kept across restarts

    read_stream_batch(checkpoint, batch_id)   # one batch: its offsets and watermarks (in foreachBatch)
    read_stream_batches(checkpoint)           # every committed batch, oldest first (reconcile)
    resume_offsets(checkpoint)                # where a restart resumes reading (the data-loss guard)
    read_query_status(checkpoint)             # where the query stands now (arus lag)
    query_id(checkpoint)                      # stable across restarts, new with a new checkpoint

Checkpoints must be on a local (or locally mounted) file system; a "file:" URI is accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from arus.core.rules import Partition

Offsets = dict[Partition, int]


@dataclass(frozen=True)
class StreamBatch:
    batch_id: int
    watermark_ms: int  # in force in this batch (evicts state)
    late_watermark_ms: int | None  # what this batch judged late events by; None when unknown
    start: Offsets  # first offset read, inclusive; missing when unknown
    end: Offsets  # next offset to read, exclusive

    @property
    def empty(self) -> bool:
        """Whether the batch read no record (a partition missing from `start` was read from 0)."""
        return all(end <= self.start.get(tp, 0) for tp, end in self.end.items())


def checkpoint_path(checkpoint: str | Path) -> Path:
    """A checkpoint location as Spark takes it (a path or a file: URI) as a local path."""
    return Path(str(checkpoint).removeprefix("file://").removeprefix("file:"))


def read_offset_entry(checkpoint: str | Path, batch_id: int) -> tuple[int, Offsets]:
    """offsets/<batch_id>: the batch's watermark and the offsets it reads up to (exclusive)."""
    path = checkpoint_path(checkpoint) / "offsets" / str(batch_id)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != "v1":
        raise ValueError(f"{path}: not a v1 offset log entry")
    metadata = json.loads(lines[1])
    return int(metadata.get("batchWatermarkMs", 0)), _kafka_offsets(lines[2:])


def read_start_offsets(checkpoint: str | Path) -> Offsets:
    """sources/*/0: the offsets a new query started from (what its batch 0 reads from)."""
    start: Offsets = {}
    for path in sorted(checkpoint_path(checkpoint).glob("sources/*/0")):
        # The file opens with a NUL byte and a version line, then Spark's offsets JSON.
        start.update(_kafka_offsets(path.read_bytes().lstrip(b"\x00").decode().splitlines()))
    return start


def _kafka_offsets(lines: list[str]) -> Offsets:
    """The Kafka sources' offsets among an entry's source lines; "-" (no offset yet) is skipped."""
    offsets: Offsets = {}
    for line in lines:
        if line.startswith("{"):
            for topic, partitions in json.loads(line).items():
                offsets.update({(topic, int(p)): int(o) for p, o in partitions.items()})
    return offsets


def _batch_ids(checkpoint: Path, log: str) -> list[int]:
    return sorted(int(p.name) for p in (checkpoint / log).glob("[0-9]*") if p.name.isdigit())


def read_stream_batch(checkpoint: str | Path, batch_id: int) -> StreamBatch:
    """What micro-batch `batch_id` reads and the watermarks it runs with, committed or not.

    Its offsets are logged before it runs, so this works inside its foreachBatch, and a batch
    Spark runs again after a crash reads the same offsets with the same watermark.
    FileNotFoundError when the previous batch's entry is gone (past Spark's retention).
    """
    root = checkpoint_path(checkpoint)
    watermark, end = read_offset_entry(root, batch_id)
    if batch_id == 0:
        return StreamBatch(0, watermark, 0, read_start_offsets(root), end)
    if not (root / "offsets" / str(batch_id - 1)).exists():
        raise FileNotFoundError(
            f"{root}/offsets/{batch_id - 1} is gone: cannot tell what batch {batch_id} read"
        )
    late_watermark, start = read_offset_entry(root, batch_id - 1)
    return StreamBatch(batch_id, watermark, late_watermark, start, end)


def read_stream_batches(checkpoint: str | Path) -> list[StreamBatch]:
    """The committed micro-batches of the query checkpointed at `checkpoint`, oldest first.

    Offset logs older than Spark's retention (spark.sql.streaming.minBatchesToRetain) are gone;
    the oldest retained batch then has no known start and no known late watermark.
    """
    root = checkpoint_path(checkpoint)
    if not is_checkpoint(root):
        raise FileNotFoundError(f"{root} has no offsets/ log: not a streaming query checkpoint")
    committed = set(_batch_ids(root, "commits"))
    batches: list[StreamBatch] = []
    previous: tuple[int, int, Offsets] | None = None  # (batch id, watermark, end)
    for batch_id in _batch_ids(root, "offsets"):
        watermark, end = read_offset_entry(root, batch_id)
        if previous is not None and previous[0] == batch_id - 1:
            late, start = previous[1], previous[2]
        elif batch_id == 0:
            late, start = 0, read_start_offsets(root)
        else:
            late, start = None, {}
        if batch_id in committed:
            batches.append(StreamBatch(batch_id, watermark, late, start, end))
        previous = (batch_id, watermark, end)
    return batches


def resume_offsets(checkpoint: str | Path) -> Offsets:
    """Where the query resumes reading Kafka: the end offsets of its last committed batch ({} if none)."""
    root = checkpoint_path(checkpoint)
    committed = _batch_ids(root, "commits")
    return read_offset_entry(root, committed[-1])[1] if committed else {}


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` holds a streaming query's checkpoint (its offset log)."""
    return (checkpoint_path(path) / "offsets").is_dir()


@dataclass(frozen=True)
class QueryStatus:
    """Where a streaming query stands, from its checkpoint alone."""

    next_offsets: Offsets  # where its next batch reads from: the last commit's end, else its start
    committed: int | None  # the last committed batch
    committed_at: float | None  # when: the commit file's mtime, in seconds since the epoch
    watermark_ms: int | None  # the one its next batch runs with, as the last commit recorded it
    planned: int | None  # the newest batch in the offset log; past `committed`, it is in flight

    @property
    def in_flight(self) -> int | None:
        """A batch planned but not committed: running now, or run again when the query restarts."""
        if self.planned is not None and (self.committed is None or self.planned > self.committed):
            return self.planned
        return None


def read_query_status(checkpoint: str | Path) -> QueryStatus:
    """The last committed batch, its time and watermark, and where the next batch reads from."""
    root = checkpoint_path(checkpoint)
    if not is_checkpoint(root):
        raise FileNotFoundError(f"{root} has no offsets/ log: not a streaming query checkpoint")
    planned = _batch_ids(root, "offsets")
    committed = _batch_ids(root, "commits")
    newest = planned[-1] if planned else None
    if not committed:
        # Nothing committed yet: a (re)started batch 0 reads from where the query started.
        return QueryStatus(read_start_offsets(root), None, None, None, newest)
    commit = root / "commits" / str(committed[-1])
    lines = [line for line in commit.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != "v1":
        raise ValueError(f"{commit}: not a v1 commit log entry")
    watermark = int(json.loads(lines[1]).get("nextBatchWatermarkMs", 0))
    return QueryStatus(resume_offsets(root), committed[-1], commit.stat().st_mtime, watermark, newest)


def query_id(checkpoint: str | Path) -> str:
    """The query's id from its checkpoint: the same after a restart, new for a new checkpoint.

    Delta transaction ids built on it never collide with those of an earlier, deleted checkpoint
    whose batch numbers started from 0 too.
    """
    metadata = json.loads((checkpoint_path(checkpoint) / "metadata").read_text())
    return str(metadata["id"])
