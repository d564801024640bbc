"""What `arus check` reports: one item of a lab, done or missing, with a hint for the missing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One thing a lab asks for: whether it is there, what was seen, and what to do if not."""

    name: str
    ok: bool
    seen: str
    hint: str = ""


def passed(name: str, seen: str) -> Item:
    return Item(name, True, seen)


def missing(name: str, seen: str, hint: str) -> Item:
    return Item(name, False, seen, hint)


def judged(name: str, ok: bool, seen: str, hint: str) -> Item:
    """An item whose hint is shown only when it is missing."""
    return Item(name, ok, seen, "" if ok else hint)


def plural(count: int, word: str) -> str:
    """A count as a person says it: 1 record, 1,200 records."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"
