"""The `arus` command: one entry for every action, each forwarded to its module's `main(argv)`.

    arus --help                 the commands, with examples
    arus <command> --help       that command's own options
    arus broker up && arus produce iot --count 3000 && arus aggregate --show

Each command's module is imported only when it runs, so `arus --help` and `arus broker status`
never import pyspark. Exit codes are the module's; Ctrl-C exits with 130, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # its main(argv) -> int gets the arguments after the command's name
    summary: str
    args: str = ""  # shown after the name in `arus --help`, for commands that take an action


COMMANDS: dict[str, Command] = {
    "broker": Command(
        "arus.ops.broker", "the local Kafka broker (--cluster 3, --sasl)", "up|down|reset|status"
    ),
    "produce iot": Command("arus.producers.iot", "simulate the IoT fleet into Kafka"),
    "produce csv": Command("arus.producers.csv_replay", "replay a CSV file into Kafka, paced by its times"),
    "produce api": Command(
        "arus.producers.api_poller", "poll an HTTP JSON API (USGS earthquakes) into Kafka"
    ),
    "aggregate": Command("arus.jobs.aggregate", "the main job: windowed aggregates to Delta and Kafka"),
    "pipeline": Command("arus.jobs.pipeline", "the multi-topic pipeline: bronze, silver, gold, alerts"),
    "consume": Command("arus.jobs.consumer", "the main job's aggregates without Spark (kafka-python)"),
    "alerts": Command("arus.jobs.alerts", "apply the alert rules to the clean topic"),
    "backfill": Command("arus.jobs.backfill", "recompute silver and gold from bronze, idempotently"),
    "reconcile": Command("arus.jobs.reconcile", "compare the streaming gold table with a batch recompute"),
    "maintain": Command("arus.jobs.maintain", "OPTIMIZE and VACUUM every table in the lake"),
    "history": Command("arus.jobs.history", "a Delta table's history, or the table as it was"),
    "cluster": Command(
        "arus.ops.standalone", "the Spark standalone cluster on this machine", "up|down|status"
    ),
    "notebooks": Command("arus.ops.notebooks", "run the notebooks headless against the lake"),
    "topics": Command(
        "arus.ops.topics", "topics, their partitions and offsets; create, alter", "[describe|create|alter]"
    ),
    "tail": Command("arus.ops.tail", "print a topic's records (--from-beginning, -n, --follow, --json)"),
    "send": Command("arus.ops.send", "send JSON records to a topic, each acknowledged (stdin or --value)"),
    "lag": Command("arus.ops.lag", "lag per partition of every consumer group and Spark checkpoint"),
    "check": Command("arus.ops.labs", "self-check a course lab, item by item", "lab1|lab2|lab3|lab4"),
    "scorecard": Command("arus.ops.scorecard", "grade a run against the IoT ledger: injected vs caught"),
    "trace": Command("arus.ops.trace", "where one event went: raw, bronze, silver or late, gold, alerts"),
    "dashboard": Command("arus.ops.dashboard", "a live local web page: lag, rates, late, dead letters, gold"),
    "bench run": Command("arus.bench.run", "run the benchmarks (own broker on 29092)"),
    "bench report": Command("arus.bench.report", "render docs/benchmarks.md from the newest results"),
    "bench profile": Command("arus.bench.batch_profile", "time each step of one micro-batch of the main job"),
}
# Commands of two words: the first word alone names the group.
GROUPS = sorted({name.split()[0] for name in COMMANDS if " " in name})

EXAMPLES = """\
examples:
  arus broker up                      start the local broker, create the topics in conf/
  arus produce iot --count 3000       send 3000 simulated readings
  arus aggregate --show               run the main job to the end of its input, show its output
  arus pipeline --available-now --show
  arus history gold_aggregates --version 3
  arus aggregate --help               a command's own options

The config is --config, else $ARUS_CONFIG, else conf/arus.toml in the project folder, else the
defaults shipped with arus. The project folder ($ARUS_HOME, else the current directory) holds the
relative paths in the config (data/, .run/) and the jars `make setup` fetched (.jars/).
"""


def listing(names: list[str]) -> str:
    rows = [(f"{name} {COMMANDS[name].args}".rstrip(), COMMANDS[name].summary) for name in names]
    width = max(len(left) for left, _ in rows)
    return "\n".join(f"  {left:<{width}}  {summary}" for left, summary in rows)


def parser() -> argparse.ArgumentParser:
    """Only for `arus --help` and usage errors: each command parses its own arguments."""
    return argparse.ArgumentParser(
        prog="arus",
        usage="arus <command> [<args>]   (arus <command> --help: its options)",
        description=(
            "arus: a batch-and-stream data pipeline kit (Kafka, PySpark Structured Streaming, Delta)."
            f"\n\ncommands:\n{listing(list(COMMANDS))}"
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def group_help(group: str) -> str:
    names = [name for name in COMMANDS if name.split()[0] == group]
    return f"usage: arus {group} <{'|'.join(n.split()[1] for n in names)}> [<args>]\n\n{listing(names)}"


# Packages only some commands need: `pip install arus` leaves them out (pyproject's extras).
EXTRAS = {"nbclient": "notebooks", "nbformat": "notebooks", "jupytext": "notebooks", "quixstreams": "bench"}


def run(command: Command, argv: list[str]) -> int:
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRAS:
            raise
        print(
            f"arus: this command needs {exc.name}: pip install 'arus[{EXTRAS[exc.name]}]' (make setup does)",
            file=sys.stderr,
        )
        return 2
    try:
        code: int = module.main(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line the terminal echoed ^C on
        return 130
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    top = parser()
    if not args or args[0] in ("-h", "--help"):
        top.print_help()
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name in GROUPS:
        if not rest or rest[0] in ("-h", "--help"):
            print(group_help(name), file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        name, rest = f"{name} {rest[0]}", rest[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; the commands are listed by `arus --help`")
    return run(COMMANDS[name], rest)


if __name__ == "__main__":
    sys.exit(main())
