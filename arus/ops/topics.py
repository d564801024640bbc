"""Topics declared in conf/ (name, partitions, retention, cleanup policy), created if missing."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from arus.config import Config, TopicConfig


def topic_configs(topic: TopicConfig) -> dict[str, str]:
    return {
        "retention.ms": str(topic.retention_ms),
        "cleanup.policy": topic.cleanup_policy,
    }


def ensure_topics(
    config: Config,
    bootstrap_servers: str | None = None,
    replication_factor: int | None = None,
    topics: tuple[TopicConfig, ...] | None = None,
) -> list[str]:
    """Create the configured topics that do not exist yet; returns the names it created."""
    kwargs = config.kafka.client_kwargs()
    if bootstrap_servers:
        kwargs["bootstrap_servers"] = bootstrap_servers.split(",")
    admin = KafkaAdminClient(request_timeout_ms=15000, **kwargs)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in (topics or config.topics) if t.name not in existing]
        created = []
        for topic in wanted:
            new = NewTopic(
                name=topic.name,
                num_partitions=topic.partitions,
                replication_factor=replication_factor or topic.replication_factor,
                topic_configs=topic_configs(topic),
            )
            try:
                admin.create_topics([new])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
