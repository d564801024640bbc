"""Input and output at the edges: Kafka readers and writers, Delta writers, checkpoint files, the lake.

May import: arus.config, arus.core.
"""
