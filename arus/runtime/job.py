"""What every job's `main` does before and around its own work: settle its settings or refuse in one
line, then run and turn how it ended into the exit code.

Exit codes, the same for every arus command (README, docs/reliability.md):

    0  done
    1  failed while running (or, for reconcile, found a difference nothing explains)
    2  usage or config error, or refused before starting (a preflight check of the broker, topics,
       tables or data loss failed): nothing was read or written; argparse exits 2 on a bad flag too
    3  stopped by a guard while running: the dead-letter circuit breaker, or records lost upstream;
       or refused at start by the writer guards (arus.io.owners): a table another job writes, a
       new checkpoint whose tables hold rows it would write again, or a checkpoint a running job
       holds

Expected failures are one line on stderr, never a traceback. No Spark here: the kafka-python
consumer uses it too.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

from arus.config import Config, ConfigError, load_config, say
from arus.core.rules import GuardError

FAILED = 1
REFUSED = 2
GUARD_STOPPED = 3

# How a guard's stop reads once it has crossed the JVM inside a query's exception: the breaker's
# GuardError by its class name, Spark's own failOnDataLoss by its message.
_GUARD_MARKS = ("GuardError: ", "Some data may have been lost")

S = TypeVar("S")

# A run's log level (e.g. ARUS_LOG_LEVEL=DEBUG arus aggregate): Spark's driver log and kafka-python's.
LOG_LEVEL_ENV = "ARUS_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
DEFAULT_LOG_LEVEL = "WARN"


def log_level() -> str:
    """ARUS_LOG_LEVEL, checked; WARN when unset."""
    level = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL).strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{LOG_LEVEL_ENV}={level!r}: must be one of {', '.join(LOG_LEVELS)}")
    return level


class _HidePasswords(logging.Filter):
    """kafka-python logs each client's whole configuration at DEBUG, its SASL password with it."""

    PASSWORD = re.compile(r"""('sasl_plain_password': )(?:'[^']*'|"[^"]*")""")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sasl_plain_password" in message:
            record.msg, record.args = self.PASSWORD.sub(r"\1'[hidden]'", message), ()
        return True


def apply_log_level(level: str) -> None:
    """kafka-python's and arus's Python loggers at `level`, on stderr. The root logger stays at
    WARNING: py4j at DEBUG writes out every call into the JVM with its arguments, the Kafka
    options' JAAS line (and its password) among them."""
    if level == DEFAULT_LOG_LEVEL:
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HidePasswords())
    for name in ("kafka", "arus"):
        logging.getLogger(name).setLevel("WARNING" if level == "WARN" else level)


def refuse(name: str, reason: object) -> int:
    """Said (arus.config.say) and REFUSED: what a user fixes in config, flags or broker."""
    say(name, reason)
    return REFUSED


def add_take_over(parser: argparse.ArgumentParser) -> None:
    """--take-over, the way past the table-writer guard (arus.io.owners) for a job that writes tables."""
    parser.add_argument(
        "--take-over",
        action="append",
        default=[],
        metavar="TABLE",
        help="write TABLE (a name under the lake, or a path) although another checkpoint's job is "
        "recorded as its writer, or although this checkpoint is new and the table holds rows it "
        "would append again; this job is its writer from then on (repeat for several tables)",
    )


def prepare(
    name: str,
    args: argparse.Namespace,
    settings_from: Callable[[argparse.Namespace, Config], S],
    check: Callable[[Config, S], object] | None = None,
) -> tuple[Config, S] | None:
    """The config (`--config`), the job's settings from its flags, then its preflight `check`.

    None when any of them refuses, after `refuse` said why; a config value that does not parse
    raises ValueError, so that is a refusal too.
    """
    try:
        apply_log_level(log_level())
        config = load_config(args.config)
        settings = settings_from(args, config)
        if check is not None:
            check(config, settings)
    except (ConfigError, GuardError, ValueError) as exc:
        refuse(name, exc)
        return None
    return config, settings


def prepared_main(
    name: str,
    args: argparse.Namespace,
    settings_from: Callable[[argparse.Namespace, Config], S],
    check: Callable[[Config, S], object] | None,
    body: Callable[[argparse.Namespace, Config, S], int],
) -> int:
    """A job's `main` once its flags are parsed: settle its settings (prepare) or refuse (REFUSED),
    else the exit code of `body` given the flags, the config and the settings."""
    prepared = prepare(name, args, settings_from, check)
    return REFUSED if prepared is None else body(args, *prepared)


def run(name: str, work: Callable[[], object]) -> int:
    """The exit code of `work` (the job's queries): 0, GUARD_STOPPED when a guard stopped it, else
    FAILED for a query that failed; either said in one line."""
    try:
        work()
    except GuardError as exc:
        print(f"{name}: stopped by a guard: {exc}", file=sys.stderr)
        return GUARD_STOPPED
    except RuntimeError as exc:  # a query failed (arus.runtime.progress.await_queries)
        lines = str(exc).splitlines()
        guard = next((line for line in lines for mark in _GUARD_MARKS if mark in line), None)
        if guard is not None:
            print(f"{name}: stopped by a guard: {guard.split('GuardError: ')[-1].strip()}", file=sys.stderr)
            return GUARD_STOPPED
        print(f"{name}: failed: {lines[0] if lines else exc!r}", file=sys.stderr)
        return FAILED
    return 0
