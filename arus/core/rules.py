"""The rules both engines share: one definition, imported by the Spark path and the kafka-python path.

Standard library only, so the kafka-python engine and the producers never import Spark for them.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def aware_time(text: str) -> datetime:
    """An ISO-8601 time with a zone, as UTC: argparse's `type=` for --since, --until, --start.

    A time without a zone is refused rather than guessed, since event time is always UTC-aware.
    """
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return at.astimezone(UTC)
