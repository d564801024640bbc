"""arus: a batch-and-stream hybrid data pipeline kit (Kafka, PySpark Structured Streaming, Delta).

The layers, lowest first; a module imports only from its own layer and the ones above it in this
list (docs/architecture.md draws them):

    arus.config     typed, validated settings: the base every layer reads
    arus.signals    graceful stop on Ctrl-C and SIGTERM, for every long-running command
    arus.core       the rules both engines share, and pure Spark transforms and stages (no I/O)
    arus.pyengine   the same semantics in plain Python, for the kafka-python engine
    arus.io         Kafka and Delta readers and writers, checkpoint files, the lake
    arus.runtime    Spark session, progress, guards, the per-micro-batch writers and queries
    arus.sources    producers: IoT simulator, CSV replay, API poller, and the send loop they share
    arus.batch      batch recomputes over the lake: backfill, reconcile, maintain, history
    arus.ops        operations: local brokers, the standalone Spark cluster, processes, topics
    arus.jobs, arus.producers, arus.bench   thin entry points (the checkout's jobs/, producers/, bench/)
    arus.cli        the `arus` command
"""
