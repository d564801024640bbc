"""The kafka-python engine: parsing, windows and the consumer loop in plain Python, no Spark.

It computes what the Spark jobs compute, from the rules in arus.core.rules, byte for byte where
the tests compare them. May import: arus.config, arus.core.rules, arus.io (Kafka clients).
"""
