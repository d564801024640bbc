"""Producers: pure, seeded event generators and the send loop that puts them on Kafka.

May import: arus.config, arus.core.rules, arus.io.
"""
