"""How far behind each reader of the broker is: consumer groups AND Spark streaming queries.

    arus lag                                        # every group, every checkpoint under [paths] checkpoints
    arus lag --group iot-consumer                   # one group (repeatable)
    arus lag --checkpoint data/checkpoints/aggregate  # a query's checkpoint, or a folder holding some
    arus lag --watch 5                              # refresh every 5 s until Ctrl-C
    arus lag --json                                 # one JSON object per refresh

A consumer group's position is the offset it committed. A Structured Streaming query commits no
group offsets: its position lives in its checkpoint, so `kafka-consumer-groups` and the Kafka web
UIs cannot see it. Here it is the offset the query's next micro-batch reads from: the end offsets of
its last committed batch (offsets/N, once commits/N exists). A batch planned but not committed is in
flight and is named as such. Lag per partition is the broker's end offset minus that position.

With no --group and no --checkpoint, every consumer group on the broker and every checkpoint under
[paths] checkpoints (the main job's aggregate/aggregates, the pipeline's pipeline/<stage>, the
alerts job's alerts) is shown; naming either shows only what is named. `--watch` redraws the screen
on a terminal and prints one table after another otherwise (a pipe, a log file).

Late and dead-letter counts of the last batch come from the metrics files under [paths] metrics
(arus.io.metrics: the newest line of that query and batch); n/a when no file has that batch.

Exit codes: 0; 1 when the broker cannot be reached (one line saying why); 2 for a --checkpoint that
is not a Spark streaming checkpoint or a --group the broker does not know.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError

from arus.config import KafkaConfig, job_parser, load_config_or_say
from arus.core.rules import time_text
from arus.io.checkpoints import Offsets, QueryStatus, checkpoint_path, is_checkpoint, read_query_status
from arus.io.kafka import KafkaUnavailable, explained_connection_errors
from arus.io.metrics import batch_line
from arus.signals import stop_on_signals

# <checkpoints>/pipeline/aggregate/aggregates, the deepest checkpoint arus writes, is 3 folders down.
SEARCH_DEPTH = 4
TIMEOUT_S = 5.0
NO_METRICS = "late and dead letters: n/a where no metrics file holds the query's last batch"


class UnknownReader(LookupError):
    """A --group the broker does not know."""


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end: int | None  # None: the broker has no such partition any more (topic deleted)
    position: int | None  # None: the reader holds no offset for it (a partition added later)

    @property
    def lag(self) -> int | None:
        return None if self.end is None or self.position is None else self.end - self.position


def total_lag(partitions: Sequence[PartitionLag]) -> int:
    return sum(p.lag for p in partitions if p.lag is not None)


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str  # the coordinator's word: Stable, Empty, PreparingRebalance, ...
    partitions: tuple[PartitionLag, ...]


@dataclass(frozen=True)
class QueryLag:
    name: str  # its folder below the searched one, e.g. pipeline/clean
    checkpoint: Path
    status: QueryStatus
    partitions: tuple[PartitionLag, ...]
    late: int | None = None  # of the last committed batch, from its metrics line
    dead_letters: int | None = None


@dataclass(frozen=True)
class Report:
    at: datetime
    bootstrap_servers: str
    groups: tuple[GroupLag, ...]
    queries: tuple[QueryLag, ...]


def find_checkpoints(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """`root` if it is a streaming query's checkpoint, else the checkpoints in the folders below it."""
    if is_checkpoint(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    return [
        found for sub in sorted(root.iterdir()) if sub.is_dir() for found in find_checkpoints(sub, depth - 1)
    ]


def connect(kafka: KafkaConfig) -> KafkaAdminClient:
    """An admin client, or KafkaUnavailable saying why there is none within TIMEOUT_S."""
    with explained_connection_errors(kafka):
        return KafkaAdminClient(
            **kafka.client_kwargs(),
            bootstrap_timeout_ms=int(TIMEOUT_S * 1000),
            request_timeout_ms=int(TIMEOUT_S * 1000),
        )


def group_positions(admin: KafkaAdminClient, names: Sequence[str] | None) -> dict[str, tuple[str, Offsets]]:
    """{group: (state, committed offsets)} for the named groups, or every group when `names` is None."""
    states = {g["group_id"]: g.get("group_state", "") for g in admin.list_groups()}
    wanted = sorted(states) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in states]
    if unknown:
        raise UnknownReader(f"no consumer group {', '.join(map(repr, unknown))} on the broker")
    committed = admin.list_group_offsets({name: None for name in wanted}) if wanted else {}
    return {
        name: (
            states[name],
            # -1 is Kafka's "no offset committed" for a partition the group once had
            {
                (tp.topic, tp.partition): o.offset
                for tp, o in committed.get(name, {}).items()
                if o.offset >= 0
            },
        )
        for name in wanted
    }


def end_offsets(admin: KafkaAdminClient, topics: set[str]) -> Offsets:
    """The next offset each partition of `topics` will write; a topic the broker lacks has none."""
    described = admin.describe_topics(sorted(topics)) if topics else []
    partitions = [
        TopicPartition(t["name"], p["partition_index"])
        for t in described
        if t["error_code"] == 0
        for p in t["partitions"]
    ]
    if not partitions:
        return {}
    found = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
    return {(tp.topic, tp.partition): o.offset for tp, o in found.items()}


def partition_lags(positions: Offsets, ends: Offsets) -> tuple[PartitionLag, ...]:
    """Every partition the reader holds an offset for, and the other partitions of its topics."""
    topics = {topic for topic, _ in positions}
    keys = sorted(set(positions) | {tp for tp in ends if tp[0] in topics})
    return tuple(PartitionLag(t, p, ends.get((t, p)), positions.get((t, p))) for t, p in keys)


def collect(
    admin: KafkaAdminClient,
    kafka: KafkaConfig,
    groups: Sequence[str] | None,
    roots: Sequence[Path],
    metrics: Path | None = None,
) -> Report:
    """One look at the broker and the checkpoints: every reader's position against the end offsets."""
    at = datetime.now(UTC)
    positions = group_positions(admin, groups)
    checkpoints = [(root, path) for root in roots for path in find_checkpoints(root)]
    statuses = [(root, path, read_query_status(path)) for root, path in checkpoints]
    # Read the end offsets last: a reader that moved meanwhile then shows lag >= 0, never below.
    topics = {t for _, offsets in positions.values() for t, _ in offsets}
    topics |= {t for _, _, status in statuses for t, _ in status.next_offsets}
    ends = end_offsets(admin, topics)
    return Report(
        at=at,
        bootstrap_servers=kafka.bootstrap_servers,
        groups=tuple(
            GroupLag(name, state, partition_lags(offsets, ends))
            for name, (state, offsets) in positions.items()
        ),
        queries=tuple(
            QueryLag(
                str(path.relative_to(root)) if path != root else path.name,
                path,
                status,
                partition_lags(status.next_offsets, ends),
                *_batch_counts(metrics, path.name, status.committed),
            )
            for root, path, status in statuses
        ),
    )


def _batch_counts(metrics: Path | None, query: str, batch_id: int | None) -> tuple[int | None, int | None]:
    """Late and dead letters of a query's batch; a query is named after its checkpoint folder."""
    line = None if metrics is None or batch_id is None else batch_line(metrics, query, batch_id)
    return (None, None) if line is None else (line["late"], line["dead_letters"])


def _counted(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _at(seconds: float | None) -> str | None:
    return None if seconds is None else time_text(datetime.fromtimestamp(seconds, UTC))


def watermark_text(status: QueryStatus) -> str | None:
    """Spark's 0 means no watermark yet (or none defined)."""
    return _at(status.watermark_ms / 1000) if status.watermark_ms else None


def table(position: str, partitions: Sequence[PartitionLag]) -> list[str]:
    rows = [["topic", "partition", "end", position, "lag"]]
    rows += [[p.topic, str(p.partition), _text(p.end), _text(p.position), _text(p.lag)] for p in partitions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  "
        + "  ".join(
            [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        )
        for row in rows
    ]
    return [*lines, f"  total lag {total_lag(partitions)}"]


def render(report: Report) -> str:
    """The report as text: one block per consumer group, then one per Spark query."""
    lines = [f"arus lag at {time_text(report.at)} on {report.bootstrap_servers}"]
    for group in report.groups:
        lines += ["", f"consumer group {group.group} ({group.state or 'state unknown'})"]
        lines += table("committed", group.partitions) if group.partitions else ["  no committed offsets"]
    for query in report.queries:
        status = query.status
        lines += ["", f"spark query {query.name} ({query.checkpoint})"]
        if status.committed is None:
            lines.append("  no batch committed yet")
        else:
            lines.append(
                f"  last batch {status.committed} committed {_at(status.committed_at)}, "
                f"watermark {watermark_text(status) or 'none'}, late {_counted(query.late)}, "
                f"dead letters {_counted(query.dead_letters)}"
            )
        if status.in_flight is not None:
            lines.append(
                f"  batch {status.in_flight} in flight (running, or run again when the query restarts)"
            )
        lines += table("checkpointed", query.partitions) if query.partitions else ["  no Kafka offsets yet"]
    if not report.groups and not report.queries:
        lines += ["", "no consumer groups on the broker and no Spark checkpoints found"]
    if any(q.late is None or q.dead_letters is None for q in report.queries):
        lines += ["", NO_METRICS]
    return "\n".join(lines)


def _partitions_json(partitions: Sequence[PartitionLag]) -> list[dict[str, Any]]:
    return [
        {"topic": p.topic, "partition": p.partition, "end": p.end, "offset": p.position, "lag": p.lag}
        for p in partitions
    ]


def as_json(report: Report) -> dict[str, Any]:
    """The report for machines: offsets as numbers, times as Spark writes them, unknowns as null."""
    return {
        "at": time_text(report.at),
        "bootstrap_servers": report.bootstrap_servers,
        "groups": [
            {
                "group": g.group,
                "state": g.state,
                "lag": total_lag(g.partitions),
                "partitions": _partitions_json(g.partitions),
            }
            for g in report.groups
        ],
        "queries": [
            {
                "name": q.name,
                "checkpoint": str(q.checkpoint),
                "last_batch": q.status.committed,
                "last_batch_at": _at(q.status.committed_at),
                "in_flight_batch": q.status.in_flight,
                "watermark": watermark_text(q.status),
                "watermark_ms": q.status.watermark_ms,
                # From the metrics files; null without a line for the last batch.
                "late": q.late,
                "dead_letters": q.dead_letters,
                "lag": total_lag(q.partitions),
                "partitions": _partitions_json(q.partitions),
            }
            for q in report.queries
        ],
    }


def show(look: Callable[[], Report], machine: bool, out: TextIO, every_s: float | None) -> None:
    """Print one report, or with `every_s` one per interval until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    # A terminal gets the tables redrawn in place; a pipe or a log gets each refresh in turn.
    redraw = every_s is not None and not machine and out.isatty()
    with stop_on_signals(lambda _signal: stop.set()):
        while not stop.is_set():
            report = look()
            if redraw:
                out.write("\x1b[H\x1b[2J")
            out.write((json.dumps(as_json(report)) if machine else render(report)) + "\n")
            out.flush()
            if every_s is None:
                return
            if not (redraw or machine):
                out.write("\n")  # a blank line between one refresh and the next
            stop.wait(every_s)


def positive_seconds(text: str) -> float:
    seconds = float(text)
    if seconds <= 0:
        raise ValueError(text)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("arus lag", __doc__)
    parser.add_argument("--group", action="append", metavar="G", help="a consumer group to show (repeatable)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        metavar="DIR",
        help="a query's checkpoint, or a folder with checkpoints below it, to show (repeatable)",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        const=5.0,
        type=positive_seconds,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per refresh")
    args = parser.parse_args(argv)
    config = load_config_or_say("lag", args.config)
    if config is None:
        return 1
    given = [checkpoint_path(c) for c in args.checkpoint or ()]
    for root in given:
        if not find_checkpoints(root):
            print(
                f"lag: {root} is not a Spark streaming checkpoint (no offsets/ log in it or below it)",
                file=sys.stderr,
            )
            return 2
    named = bool(args.group or args.checkpoint)
    groups = (args.group or []) if named else None
    roots = given if named else [config.resolve(config.paths.checkpoints)]
    try:
        admin = connect(config.kafka)
    except KafkaUnavailable as exc:
        print(f"lag: {exc}", file=sys.stderr)
        return 1
    try:
        metrics = config.resolve(config.paths.metrics)
        show(lambda: collect(admin, config.kafka, groups, roots, metrics), args.json, sys.stdout, args.watch)
    except UnknownReader as exc:
        print(f"lag: {exc} at {config.kafka.bootstrap_servers}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        # A checkpoint that vanished or holds a file Spark did not write, named in the message.
        print(f"lag: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"lag: lost the broker at {config.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
