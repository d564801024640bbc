"""arus: a batch-and-stream hybrid data pipeline kit (Kafka, PySpark Structured Streaming, Delta).

The layers, lowest first. A module imports only from its own layer and from layers listed before
it (tests/unit/test_layers.py says exactly which; docs/architecture.md draws them):

    arus.config     typed, validated settings: the base every layer reads
    arus.grammar    Spark durations and flat DDL schemas, parsed once for the config and both engines
    arus.signals    graceful stop on Ctrl-C and SIGTERM, for every long-running command
    arus.core       the rules both engines share, and pure Spark transforms and stages (no I/O)
    arus.io         Kafka and Delta readers and writers, checkpoint files, the lake
    arus.pyengine   the same semantics in plain Python, for the kafka-python engine
    arus.runtime    Spark session, progress, guards, the per-micro-batch writers and queries
    arus.sources    producers: IoT simulator, CSV replay, API poller, and the send loop they share
    arus.batch      batch work over the lake: backfill, reconcile, maintain
    arus.ops        operations: local brokers, the standalone Spark cluster, processes, topics
    arus.jobs, arus.producers, arus.bench   thin entry points (the checkout's jobs/, producers/, bench/)
    arus.cli        the `arus` command
"""
