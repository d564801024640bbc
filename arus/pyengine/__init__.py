"""The kafka-python engine: parsing, windows and the consumer loop in plain Python, no Spark.

    records     record values parsed as Spark's JSON reader parses them, with the same reasons
    windowing   windows, watermark, dedup, statistics and commit positions (no Kafka)
    consumer    the consumer group: poll, window, produce, commit (`arus consume`)

It computes what the Spark jobs compute, from the rules in arus.core.rules, byte for byte where
the tests compare them. May import: arus.config, arus.signals, arus.core.rules, and arus.io's
Spark-free Kafka modules (arus.io.kafka, arus.io.producer); so it sits above arus.io.
"""
