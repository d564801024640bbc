"""Which job writes a table: one writer per table, recorded in the table's folder, checked at start.

Two streaming jobs with their own checkpoints that write one table append each record twice (their
transaction ids differ) and MERGE over each other's rows; a job whose checkpoint is new or was
deleted reads its topic again from [stream] starting_offsets and appends it all again. So a job
records itself in every table it writes, the first time, and the next job refuses to start when:

    - the table records another writer (another checkpoint folder), or
    - the table holds rows, but none of the job's queries that write it has a checkpoint with
      offsets in it (new, or deleted): what it wrote would be written again.

`--take-over TABLE` (both streaming jobs) skips both for that table and records the job as its
writer from then on. The record is a file in the table's folder, not a Delta table property: the
first micro-batch creates the table (Delta cannot create one without its columns), and the record
must be there before it and be read before Spark starts. Delta, VACUUM and deltalake pass over
files whose names start with "_".

    <table>/_arus_writer.json  {"checkpoint": "/abs/data/checkpoints/aggregate", "query": "arus aggregate"}

The alerts table is not recorded: it is written by an insert-only MERGE on the alert id, so two
writers cannot double a row in it.

One running job per checkpoint: a streaming job holds an exclusive lock on a file in its checkpoint
folder while it runs (`running`), and a second job on the same checkpoint is refused before Spark
starts. Spark's own check, that a batch's offset file is created only once, is not atomic with the
checkpoint file manager arus uses (arus.runtime.session), so this lock is what keeps two jobs from
writing one checkpoint. The kernel drops the lock when the process ends, however it ends.

    <checkpoint>/_arus_running.lock   pid 4242
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deltalake import DeltaTable

from arus.core.rules import GuardError
from arus.io.checkpoints import checkpoint_path, is_checkpoint, read_query_status
from arus.io.lake import is_table

OWNER_FILE = "_arus_writer.json"
RUNNING_FILE = "_arus_running.lock"


class TableClaimed(GuardError):
    """A table another writer owns, or one a new checkpoint would write again: the job must not start."""


@dataclass(frozen=True)
class Writer:
    checkpoint: str  # the job's checkpoint folder, absolute: what makes two writers the same
    query: str  # what runs there, for people: "arus aggregate"


@dataclass(frozen=True)
class Writes:
    """The tables a job writes, each with the checkpoints of the job's queries that write it."""

    writer: Writer
    tables: Mapping[str, tuple[str, ...]]
    elsewhere: str  # how this job writes tables of its own instead, for the refusal


def writer(checkpoint: str, query: str) -> Writer:
    return Writer(str(checkpoint_path(checkpoint).resolve()), query)


def recorded_writer(table: str | Path) -> Writer | None:
    path = Path(table) / OWNER_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return Writer(str(record["checkpoint"]), str(record["query"]))


def record_writer(table: str | Path, owner: Writer, replace: bool = False) -> Writer:
    """Record `owner` as the table's writer; without `replace`, only where none is yet. The writer
    recorded after the call: of two jobs starting at once, one creates the file and the other reads it.
    """
    folder = Path(table)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / OWNER_FILE
    staged = folder / f"{OWNER_FILE}.{os.getpid()}"
    staged.write_text(json.dumps({"checkpoint": owner.checkpoint, "query": owner.query}) + "\n")
    try:
        if replace:
            os.replace(staged, final)
        else:
            os.link(staged, final)  # atomic, and fails when the file exists
    except FileExistsError:
        pass
    finally:
        staged.unlink(missing_ok=True)
    recorded = recorded_writer(folder)
    assert recorded is not None
    return recorded


def has_rows(table: str | Path) -> bool:
    return is_table(table) and DeltaTable(str(table)).count() > 0


def has_offsets(checkpoint: str) -> bool:
    """Whether a query ever planned a batch here: a table it wrote to may hold that batch's rows."""
    return is_checkpoint(checkpoint) and read_query_status(checkpoint).planned is not None


def refusal(table: str, checkpoints: tuple[str, ...], owner: Writer) -> str | None:
    """Why `owner` must not write `table` through `checkpoints`, or None."""
    recorded = recorded_writer(table)
    if recorded is not None and recorded.checkpoint != owner.checkpoint:
        return (
            f"{table} is written by {recorded.query} (checkpoint {recorded.checkpoint}); this is "
            f"{owner.query} (checkpoint {owner.checkpoint}): two writers would double its rows"
        )
    if has_rows(table) and not any(has_offsets(c) for c in checkpoints):
        wrote = "holds rows it wrote" if recorded else "holds rows of a writer it does not record"
        return (
            f"{table} {wrote}, but {owner.query}'s checkpoint {owner.checkpoint} has none of its "
            "offsets (new or deleted): it would append them again from [stream] starting_offsets"
        )
    return None


def taken_over(name: str, tables: Collection[str]) -> str | None:
    """The table among `tables` that a --take-over value names: its path, or its folder's name."""
    wanted = Path(name).resolve() if Path(name).is_absolute() else None
    for table in tables:
        if Path(table).resolve() == wanted or Path(table).name == name:
            return table
    return None


def claim_tables(writes: Writes, take_over: Collection[str] = ()) -> None:
    """Record the job as the writer of its tables, or raise TableClaimed naming every table it must
    not write (ValueError for a --take-over that names none of them). Runs before Spark starts."""
    chosen = {name: taken_over(name, writes.tables) for name in take_over}
    unknown = [name for name, table in chosen.items() if table is None]
    if unknown:
        raise ValueError(
            f"--take-over {', '.join(unknown)}: not a table this job writes "
            f"({', '.join(sorted(writes.tables))})"
        )
    owner = writes.writer
    refused = {
        table: reason
        for table, checkpoints in writes.tables.items()
        if table not in chosen.values() and (reason := refusal(table, checkpoints, owner))
    }
    if not refused:
        for table, checkpoints in writes.tables.items():
            recorded = record_writer(table, owner, replace=table in chosen.values())
            if recorded.checkpoint != owner.checkpoint:  # another job recorded itself first
                refused[table] = refusal(table, checkpoints, owner) or ""
    if refused:
        names = " ".join(f"--take-over {Path(t).name}" for t in refused)
        raise TableClaimed(
            "\n".join(refused.values())
            + f"\nnothing was written. For tables of its own: {writes.elsewhere}. "
            f"If the other writer will not run again (or the rows should be appended again): {names}"
        )


class CheckpointBusy(GuardError):
    """Another running job holds the checkpoint."""


@contextmanager
def running(checkpoint: str) -> Iterator[None]:
    """Hold `checkpoint` for this process while the block runs, or raise CheckpointBusy naming the
    process that holds it."""
    folder = checkpoint_path(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / RUNNING_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            raise CheckpointBusy(
                f"checkpoint {folder} is in use by a running job ({holder}): two jobs on one "
                "checkpoint would write its batches twice. Stop that job first, or give this one "
                "its own --checkpoint"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
