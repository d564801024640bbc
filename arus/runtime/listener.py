"""Spark's side of the metrics (arus.io.metrics): a StreamingQueryListener that turns each executed
micro-batch's StreamingQueryProgress, with the counts its foreachBatch writer put in the Tally,
into one metrics line. Spark calls it as batches complete, so nothing polls; run_timed registers it
on every job's session.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import QueryProgressEvent, QueryStartedEvent, QueryTerminatedEvent

from arus.io.metrics import Metrics, lag_key, record
from arus.runtime.progress import Tally, dropped_by_watermark, executed

DRAIN_TIMEOUT_MS = 30_000


def spark_line(app: str, progress: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """The metrics line of one micro-batch, from its progress (as JSON) and the writer's counts.

    Late: the events the writer routed to the late outputs, else what Spark's stateful operators
    dropped behind the watermark (a query without a late output); None for a stateless query.
    """
    operators = progress.get("stateOperators") or []
    # a stateless query has no state to measure: None, not 0
    state = {
        "state_rows": sum(int(op.get("numRowsTotal") or 0) for op in operators),
        "state_memory_bytes": sum(int(op.get("memoryUsedBytes") or 0) for op in operators),
    }
    late = counts.get("late")
    if late is None and operators:
        late = dropped_by_watermark(progress)
    return record(
        "spark",
        app,
        progress.get("name") or str(progress.get("id")),
        time=progress["timestamp"],
        batch_id=int(progress["batchId"]),
        rows=int(progress.get("numInputRows") or 0),
        input_rows_per_s=progress.get("inputRowsPerSecond"),
        processed_rows_per_s=progress.get("processedRowsPerSecond"),
        batch_duration_ms=progress.get("durationMs", {}).get("triggerExecution"),
        watermark=progress.get("eventTime", {}).get("watermark"),
        state_rows=state["state_rows"] if operators else None,
        state_memory_bytes=state["state_memory_bytes"] if operators else None,
        late=late,
        dead_letters=counts.get("dead"),
        lag=source_lag(progress),
    )


def source_lag(progress: Mapping[str, Any]) -> dict[str, int]:
    """Per Kafka partition, the broker's latest offset when the batch was planned minus the
    batch's end offset: what the query had still to read. Sources without offsets give none."""
    lag: dict[str, int] = {}
    for source in progress.get("sources") or []:
        end, latest = _offsets(source.get("endOffset")), _offsets(source.get("latestOffset"))
        for topic, partitions in end.items():
            for partition, offset in partitions.items():
                newest = latest.get(topic, {}).get(partition)
                if newest is not None:
                    lag[lag_key(topic, int(partition))] = max(int(newest) - int(offset), 0)
    return lag


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """Kafka offsets as {topic: {partition: offset}}; Spark gives them parsed, or as JSON text
    when they do not parse as JSON objects of that shape (a Delta source's)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        return {}
    return value


class MetricsListener(StreamingQueryListener):
    """Writes a metrics line per executed micro-batch of every query of the session."""

    def __init__(self, app: str, metrics: Metrics, tally: Tally) -> None:
        self.app = app
        self.metrics = metrics
        self.tally = tally

    def onQueryStarted(self, event: QueryStartedEvent) -> None:
        pass  # nothing to measure before a batch ran

    def onQueryProgress(self, event: QueryProgressEvent) -> None:
        progress = json.loads(event.progress.json)
        # Spark also reports progress while a live query waits for data: no batch ran, no line.
        if executed(progress):
            counts = self.tally.batch(progress.get("name") or "", int(progress["batchId"]))
            self.metrics.write(spark_line(self.app, progress, counts))

    def onQueryTerminated(self, event: QueryTerminatedEvent) -> None:
        pass  # the last batch's progress came before this


def drain(spark: SparkSession) -> None:
    """Wait until Spark has delivered the events already posted (the listener runs on Spark's
    listener bus thread, after the query has moved on), so a job's last batch is written before it ends."""
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(DRAIN_TIMEOUT_MS)
