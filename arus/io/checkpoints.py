"""What a Kafka-reading streaming query did, read back from its checkpoint's offset and commit logs.

Each committed micro-batch records the Kafka offsets it read up to and the watermark in force. That
is enough to say, for any Kafka record, which batch read it and whether the stream dropped it as
late: Spark judges an event late when its event time is at or before the watermark of the
*previous* batch (IncrementalExecution: watermarkForPrevBatch drives late-event filtering, the
current batch's watermark drives state eviction).

    offsets/<batch>: v1 / {"batchWatermarkMs": ..., ...} / {"<topic>": {"<partition>": <next offset>}}
    commits/<batch>: present once the batch's output is committed
    sources/<i>/0:   the offsets the query started from
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

Position = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class StreamBatch:
    batch_id: int
    watermark_ms: int  # in force in this batch (evicts state)
    late_watermark_ms: int | None  # what this batch judged late events by; None when unknown
    start: dict[Position, int]  # first offset read, inclusive; missing when unknown
    end: dict[Position, int]  # next offset to read, exclusive


def read_stream_batches(checkpoint: Path) -> list[StreamBatch]:
    """The committed micro-batches of the query checkpointed at `checkpoint`, oldest first.

    Offset logs older than Spark's retention (spark.sql.streaming.minBatchesToRetain) are gone;
    the oldest retained batch then has no known start and no known late watermark.
    """
    offsets_dir = checkpoint / "offsets"
    if not offsets_dir.is_dir():
        raise FileNotFoundError(f"{checkpoint} has no offsets/ log: not a streaming query checkpoint")
    committed = {int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()}
    logged = sorted(int(p.name) for p in offsets_dir.glob("[0-9]*") if p.name.isdigit())
    initial = _initial_offsets(checkpoint)
    batches: list[StreamBatch] = []
    previous: tuple[int, int, dict[Position, int]] | None = None  # (batch id, watermark, end)
    for batch_id in logged:
        watermark, end = _parse_offsets(offsets_dir / str(batch_id))
        if previous is not None and previous[0] == batch_id - 1:
            late, start = previous[1], previous[2]
        elif batch_id == 0:
            late, start = 0, initial
        else:
            late, start = None, {}
        if batch_id in committed:
            batches.append(StreamBatch(batch_id, watermark, late, start, end))
        previous = (batch_id, watermark, end)
    return batches


def _parse_offsets(path: Path) -> tuple[int, dict[Position, int]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0] != "v1":
        raise ValueError(f"{path}: not a v1 offset log entry")
    metadata = json.loads(lines[1])
    end: dict[Position, int] = {}
    for line in lines[2:]:
        if line.startswith("{"):
            end.update(_positions(json.loads(line)))
    return int(metadata.get("batchWatermarkMs", 0)), end


def _initial_offsets(checkpoint: Path) -> dict[Position, int]:
    start: dict[Position, int] = {}
    for path in sorted(checkpoint.glob("sources/*/0")):
        # The file opens with a NUL byte and a version line, then Spark's offsets JSON.
        text = path.read_bytes().lstrip(b"\x00").decode()
        for line in text.splitlines():
            if line.startswith("{"):
                start.update(_positions(json.loads(line)))
    return start


def _positions(offsets: dict[str, dict[str, int]]) -> dict[Position, int]:
    return {(topic, int(p)): int(o) for topic, parts in offsets.items() for p, o in parts.items()}
