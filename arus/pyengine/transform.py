"""What the Spark job does to an event between deduplication and windows, in plain Python.

    clean = cleaner(config.clean)            # [clean]: arus.core.clean.clean_events on one event
    keep = predicate(parse_filter(text, types))   # --where: arus.core.clean.filter_column
    if keep(clean(event)): ...

Both read their rules from arus.core.rules (UNITS, the filter grammar), as the Spark side does, and
give the values Spark gives: names trimmed of spaces (Spark's trim) and lower-cased, known units
converted to doubles, values rounded half-up on their shortest decimal text (Spark's round of a
double goes through java.math.BigDecimal.valueOf). A field the event does not have is skipped, as
the Spark transforms skip a column the DataFrame does not have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from arus.config import CleanConfig
from arus.core.rules import COMPARISONS, NUMERIC_TYPES, UNITS, AllOf, AnyOf, Filter
from arus.pyengine.records import spark_string

# --- [clean] ----------------------------------------------------------------------------------------


def normalised_name(value: Any) -> Any:
    """lower(trim(value)): Spark's trim removes spaces only, and casts a non-string to its text."""
    if value is None:
        return None
    return (value if type(value) is str else spark_string(value)).strip(" ").lower()


def rounded(value: Any, decimals: int) -> Any:
    """round(value, decimals) as Spark rounds: half-up on a double's shortest decimal text (so 2.675
    gives 2.68, where Python's round gives 2.67); NaN and infinities unchanged; an integer is
    already round (decimals is never negative: arus.config checks it)."""
    if type(value) is not float or not math.isfinite(value):
        return value
    text = repr(value)
    if "e" not in text and len(text) - text.index(".") - 1 <= decimals:
        return value  # the common case, a reading already as precise as the sensor: cheap
    exact = Decimal(text)
    if exact.as_tuple().exponent >= -decimals:  # type: ignore[operator]
        return value
    # Enough precision for every digit kept; Decimal's default 28 would refuse 1e300.
    context = Context(prec=max(exact.adjusted() + decimals + 2, 1))
    # + 0.0: BigDecimal has no negative zero, so -0.0001 rounds to 0.0, not -0.0.
    return float(exact.quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP, context)) + 0.0


def cleaner(clean: CleanConfig) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """An event -> a copy cleaned as arus.core.clean.clean_events cleans a row: names, units, rounding.

    With a unit field, every value field becomes a double (Spark's when/otherwise takes the
    converted branch's type), converted where the unit is known; the unit becomes the canonical one,
    or stays as sent, trimmed.
    """

    def clean_event(event: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(event)
        for name in clean.name_fields:
            if name in out:
                out[name] = normalised_name(out[name])
        values = [f for f in clean.value_fields if f in out]
        if clean.unit_field and clean.unit_field in out:
            unit = out[clean.unit_field]
            known = UNITS.get(unit.strip(" ").lower()) if type(unit) is str else None
            for name in values:
                value = out[name]
                if isinstance(value, int | float):
                    out[name] = (value + known[1]) * known[2] if known else float(value)
            if unit is not None:
                out[clean.unit_field] = known[0] if known else unit.strip(" ")
        for name in values:
            out[name] = rounded(out[name], clean.decimals)
        return out

    return clean_event


def cleaned_types(types: Mapping[str, str], clean: CleanConfig) -> dict[str, str]:
    """The schema's types after cleaning: what a filter on cleaned events compares with."""
    out = dict(types)
    for name in clean.name_fields:
        if name in out:
            out[name] = "string"
    if clean.unit_field in out:
        for name in clean.value_fields:
            if name in out and out[name] in NUMERIC_TYPES:
                out[name] = "double"
    return out


# --- --where --------------------------------------------------------------------------------------


def _ordered(value: Any) -> tuple[bool, Any]:
    """Spark's order: NaN equals NaN and is above every number; everything else as it compares."""
    if type(value) is float and math.isnan(value):
        return (True, 0.0)
    return (False, value)


def predicate(where: Filter) -> Callable[[Mapping[str, Any]], bool]:
    """A parsed --where filter (arus.core.rules.parse_filter) as a test of one event: what
    arus.core.clean.filter_column keeps. A null or absent field fails its condition."""
    if isinstance(where, AllOf | AnyOf):
        parts = [predicate(part) for part in where.parts]
        if isinstance(where, AllOf):
            return lambda event: all(part(event) for part in parts)
        return lambda event: any(part(event) for part in parts)
    name = where.field
    values = [_ordered(v) for v in where.values]
    if where.op in ("in", "not in"):
        wanted = where.op == "in"
        return lambda event: (value := event.get(name)) is not None and (_ordered(value) in values) == wanted
    compare, limit = COMPARISONS[where.op], values[0]
    return lambda event: (value := event.get(name)) is not None and compare(_ordered(value), limit)
