"""Pure rules and transforms: no reading, no writing, no query started.

`arus.core.rules` holds what both engines must agree on (durations, record limits, key format,
header names, dead-letter reasons) and imports nothing but the standard library. The other modules
are typed `DataFrame -> DataFrame` and `Column -> Column` functions. May import: arus.config.
"""
