"""Batch work over the lake: backfill, reconcile, maintain, history.

The same stages as the stream (arus.core.stages) on `spark.read`. May import: arus.config,
arus.core, arus.io, arus.runtime.
"""
