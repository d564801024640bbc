"""Batch work over the lake: the same stages as the stream (arus.core.stages) on `spark.read`.

    sources     what a recompute reads: bronze, a bounded Kafka range, or a file, as bronze rows;
                the input flags `arus backfill` and `arus reconcile` share
    backfill    recompute silver and gold, and upsert only what differs
    reconcile   compare the streaming gold table with a recompute; explain each difference
    maintain    OPTIMIZE, VACUUM and auto-compaction properties, retried on concurrent commits

Time travel (`arus history`) needs no Spark: it reads the lake through arus.io.lake.

May import: arus.config, arus.core, arus.io, arus.runtime.
"""
