"""What every job's `main` does before its own work: settle its settings, or refuse in one line.

Exit codes, the same for every job: 0 done; 1 failed while running (or, for reconcile, found a
difference nothing explains); 2 refused to start: a usage or config error, or a preflight check
(broker, topics, tables) that failed, so nothing was read or written. argparse exits 2 on a bad
flag, so a refusal before any work is always 2. No Spark here: the kafka-python consumer uses it too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from arus.config import Config, ConfigError, load_config
from arus.core.rules import GuardError

FAILED = 1
REFUSED = 2

S = TypeVar("S")


def refuse(name: str, reason: object) -> int:
    """One line on stderr, no traceback: what a user fixes in the config, the flags or the broker."""
    print(f"{name}: {reason}", file=sys.stderr)
    return REFUSED


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
        config = load_config(args.config)
        settings = settings_from(args, config)
        if check is not None:
            check(config, settings)
    except (ConfigError, GuardError, ValueError) as exc:
        refuse(name, exc)
        return None
    return config, settings
