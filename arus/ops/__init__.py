"""Operations: the local Kafka brokers, the standalone Spark cluster, daemon processes, topics, notebooks.

May import: arus.config, arus.io.
"""
