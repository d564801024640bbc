"""Kafka topics: list them, describe their partitions, create them, add partitions.

`ensure_topics` creates what [[topics]] in conf/ declares (`arus broker up` calls it); `arus topics`
looks at and changes any topic on the broker:

    arus topics                              every topic: partitions, replication, retention, messages
    arus topics --match 'iot.*'              only the topics whose name matches the pattern
    arus topics describe iot.readings        per partition: leader, replicas, ISR, offsets, size on disk
    arus topics create scratch --partitions 3 --config retention.ms=3600000
    arus topics alter scratch --partitions 6 more partitions (Kafka never takes any away)

`create` of a topic that [[topics]] declares takes its partitions, replication and settings from
there; flags override them. The config file goes before the action (`arus topics --config FILE
create ...`): after `create`, `--config k=v` is a topic setting, as in kafka-topics.

Messages are the latest offset minus the earliest: exact for a topic that only appends, an upper
bound where compaction has removed records or transactions left commit markers.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code

from arus.config import Config, ConfigError, KafkaConfig, TopicConfig, job_parser, load_config
from arus.io.kafka import explained_connection_errors

# A command a person waits on should say "no broker" within seconds, not after the clients' 30 s.
BOOTSTRAP_TIMEOUT_MS = 5000
REQUEST_TIMEOUT_MS = 15000
# _client opens either kind and hands it back typed as the kind asked for.
C = TypeVar("C", KafkaAdminClient, KafkaConsumer)
SHOWN_SETTINGS = ("cleanup.policy", "retention.ms")


class TopicError(RuntimeError):
    """The broker refused or cannot serve a topic request; the message says why."""


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


def failed(prog: str, exc: Exception) -> int:
    """A tool's one line on stderr for a config mistake, a RuntimeError (TopicError,
    KafkaUnavailable) or the broker's error answer; the exit code, 1."""
    if isinstance(exc, TopicAuthorizationFailedError):
        topics = ", ".join(sorted(map(repr, exc.args[0]))) if exc.args else "the topic"
        print(f"{prog}: the broker's ACLs do not let this user do that on topic {topics}", file=sys.stderr)
    elif isinstance(exc, KafkaError):
        print(f"{prog}: the broker answered with an error: {exc}", file=sys.stderr)
    else:
        print(f"{prog}: {exc}", file=sys.stderr)
    return 1


# --- clients that fail fast and say why -----------------------------------------------------------


@contextmanager
def _client(kafka: KafkaConfig, client: Callable[..., C], **options: Any) -> Iterator[C]:
    """`client` (an admin client or a consumer) bootstrapped within BOOTSTRAP_TIMEOUT_MS, closed after."""
    with explained_connection_errors(kafka):
        opened = client(**kafka.client_kwargs(), bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, **options)
    try:
        yield opened
    finally:
        opened.close()


def admin_client(kafka: KafkaConfig) -> AbstractContextManager[KafkaAdminClient]:
    return _client(kafka, KafkaAdminClient, request_timeout_ms=REQUEST_TIMEOUT_MS)


def reader(kafka: KafkaConfig) -> AbstractContextManager[KafkaConsumer]:
    """A consumer in no group: it reads and looks up offsets, and commits nothing."""
    return _client(kafka, KafkaConsumer, group_id=None, enable_auto_commit=False)


def missing(topic: str, kafka: KafkaConfig) -> TopicError:
    # A broker hides a topic from a user without DESCRIBE on it: it looks like no topic at all.
    who = f", or user {kafka.sasl_username!r} may not describe it (ACLs)" if kafka.sasl_username else ""
    return TopicError(
        f"topic {topic!r} does not exist on {kafka.bootstrap_servers}{who} "
        "(`arus topics` lists the topics, `arus topics create` makes one)"
    )


def partitions_of(consumer: KafkaConsumer, topic: str, kafka: KafkaConfig) -> list[TopicPartition]:
    """The partitions of `topic`, or TopicError naming it when the broker does not have it."""
    ids = consumer.partitions_for_topic(topic)
    if not ids:
        raise missing(topic, kafka)
    return [TopicPartition(topic, p) for p in sorted(ids)]


def refused(result: dict[str, Any]) -> str | None:
    """Why the broker refused a topic in a create request's result, or None if it did not."""
    if not result["error_code"]:
        return None
    return str(result.get("error_message") or for_code(result["error_code"]).description)


# --- what the commands show -----------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    replication: int
    # None where the broker did not say: DescribeConfigs needs an ACL a SASL client user may lack.
    cleanup_policy: str | None
    retention_ms: int | None
    messages: int


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    earliest: int
    latest: int
    size: int | None  # bytes of the leader's copy on disk, when the broker says


def settings(admin: KafkaAdminClient, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """cleanup.policy and retention.ms of each topic, in one request; a topic whose settings the
    broker does not show this user (no DESCRIBE_CONFIGS) has none."""
    if not names:
        return {}
    wanted = dict.fromkeys(SHOWN_SETTINGS)
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=wanted) for name in names]
    found = admin.describe_configs(resources, config_filter="all")["topic"]
    return {name: {key: entry["value"] for key, entry in found[name].items()} for name in found}


def summaries(config: Config, pattern: str = "*") -> list[TopicSummary]:
    with admin_client(config.kafka) as admin, reader(config.kafka) as consumer:
        topics = [t for t in admin.describe_topics() if fnmatch.fnmatchcase(t["name"], pattern)]
        topics.sort(key=lambda t: t["name"])
        configs = settings(admin, [t["name"] for t in topics])
        tps = [TopicPartition(t["name"], p["partition_index"]) for t in topics for p in t["partitions"]]
        earliest, latest = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    return [
        TopicSummary(
            name=t["name"],
            partitions=len(t["partitions"]),
            replication=max((len(p["replica_nodes"]) for p in t["partitions"]), default=0),
            cleanup_policy=configs.get(t["name"], {}).get("cleanup.policy"),
            retention_ms=retention(configs.get(t["name"], {})),
            messages=sum(latest[tp] - earliest[tp] for tp in tps if tp.topic == t["name"]),
        )
        for t in topics
    ]


def disk_sizes(admin: KafkaAdminClient, topic: str) -> dict[tuple[int, int], int]:
    """{(broker, partition): bytes} of every copy of `topic` the brokers report."""
    sizes = {}
    for broker in admin.describe_log_dirs([topic]):
        for log_dir in broker["log_dirs"]:
            for found in log_dir["topics"] if not log_dir["error_code"] else ():
                if found["name"] == topic:
                    for p in found["partitions"]:
                        sizes[(broker["broker"], p["partition_index"])] = p["partition_size"]
    return sizes


def describe(config: Config, topic: str) -> tuple[TopicSummary, list[PartitionState], str]:
    """The topic, each partition's state, and a note on where the sizes come from."""
    with admin_client(config.kafka) as admin, reader(config.kafka) as consumer:
        [found] = admin.describe_topics([topic])
        if found["error_code"]:
            raise missing(topic, config.kafka)
        partitions = sorted(found["partitions"], key=lambda p: p["partition_index"])
        tps = [TopicPartition(topic, p["partition_index"]) for p in partitions]
        earliest, latest = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        configs = settings(admin, [topic]).get(topic, {})
        try:
            sizes = disk_sizes(admin, topic)
            # DescribeLogDirs needs DESCRIBE on the cluster: a SASL client user without it gets
            # no log dirs (or, from some brokers, an error).
            note = (
                "size: the leader's copy on disk (DescribeLogDirs)"
                if sizes
                else "size: not available (the broker showed this user no log dirs)"
            )
        except KafkaError as exc:
            sizes, note = {}, f"size: not available (DescribeLogDirs refused: {type(exc).__name__})"
    states = [
        PartitionState(
            partition=p["partition_index"],
            leader=p["leader_id"],
            replicas=p["replica_nodes"],
            isr=p["isr_nodes"],
            earliest=earliest[tp],
            latest=latest[tp],
            size=sizes.get((p["leader_id"], p["partition_index"])),
        )
        for p, tp in zip(partitions, tps, strict=True)
    ]
    summary = TopicSummary(
        name=topic,
        partitions=len(states),
        replication=max((len(s.replicas) for s in states), default=0),
        cleanup_policy=configs.get("cleanup.policy"),
        retention_ms=retention(configs),
        messages=sum(s.latest - s.earliest for s in states),
    )
    return summary, states, note


def create(
    config: Config, topic: str, partitions: int, replication_factor: int, extra: dict[str, str]
) -> dict[str, Any]:
    """Create `topic`; returns the broker's result (its partitions and replication factor)."""
    new = NewTopic(topic, partitions, replication_factor, topic_configs=extra)
    with admin_client(config.kafka) as admin:
        [result] = admin.create_topics([new], raise_errors=False)["topics"]
        why = refused(result)
        if why:
            raise TopicError(f"cannot create {topic!r}: {why}")
        # The create is acknowledged before every broker knows the topic; a command run next expects it.
        admin.wait_for_topics([topic])
    return result


def add_partitions(config: Config, topic: str, count: int) -> int:
    """Grow `topic` to `count` partitions; returns how many it had."""
    with admin_client(config.kafka) as admin:
        [found] = admin.describe_topics([topic])
        if found["error_code"]:
            raise missing(topic, config.kafka)
        before = len(found["partitions"])
        if count < before:
            raise TopicError(
                f"{topic!r} has {before} partitions; Kafka can add partitions but never remove them "
                "(their records would go with them). Create a new topic to have fewer."
            )
        if count > before:
            response = admin.create_partitions({topic: count}, raise_errors=False)
            [result] = response.results
            if result.error_code:
                why = result.error_message or for_code(result.error_code).description
                raise TopicError(f"cannot add partitions to {topic!r}: {why}")
    return before


# --- output ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> str:
    """Columns padded to their widest cell; the columns in `right` (numbers) aligned right."""
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def retention(configs: dict[str, str]) -> int | None:
    found = configs.get("retention.ms")
    return None if found is None else int(found)


def duration_text(ms: int | None) -> str:
    """retention.ms as a person reads it: -1 is forever, 604800000 is 7d, unknown is -."""
    if ms is None:
        return "-"
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def size_text(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    amount, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{amount:.1f} {unit}"


def summary_table(topics: Sequence[TopicSummary]) -> str:
    rows = [
        (
            t.name,
            t.partitions,
            t.replication,
            t.cleanup_policy or "-",
            duration_text(t.retention_ms),
            t.messages,
        )
        for t in topics
    ]
    headers = ("TOPIC", "PARTITIONS", "REPLICATION", "CLEANUP", "RETENTION", "MESSAGES")
    return table(headers, rows, right={1, 2, 5})


def partition_table(states: Sequence[PartitionState]) -> str:
    def nodes(ids: Sequence[int]) -> str:
        return ",".join(map(str, ids))

    rows = [
        (s.partition, s.leader, nodes(s.replicas), nodes(s.isr), s.earliest, s.latest,
         s.latest - s.earliest, size_text(s.size))
        for s in states
    ]  # fmt: skip
    headers = ("PARTITION", "LEADER", "REPLICAS", "ISR", "EARLIEST", "LATEST", "MESSAGES", "SIZE")
    return table(headers, rows, right={0, 1, 4, 5, 6, 7})


# --- the command ----------------------------------------------------------------------------------


def setting(text: str) -> tuple[str, str]:
    """argparse's `type=` for a topic setting key=value."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not key=value (after the action, --config is a topic setting such as "
            "retention.ms=3600000; the config file goes before it: arus topics --config FILE create ...)"
        )
    return key, value


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "arus topics",
        __doc__,
        "arus topics                                  list every topic",
        "arus topics --match 'iot.*'",
        "arus topics describe iot.readings",
        "arus topics create scratch --partitions 3 --config retention.ms=3600000",
        "arus topics create iot.readings             as [[topics]] in conf/ declares it",
        "arus topics alter scratch --partitions 6",
    )
    parser.add_argument(
        "--match",
        default="*",
        metavar="GLOB",
        help="without an action, the topics are listed: only these ('iot.*')",
    )
    actions = parser.add_subparsers(dest="action", metavar="[describe|create|alter]")
    describe_ = actions.add_parser(
        "describe",
        help="per partition: leader, replicas, ISR, offsets, size on disk",
        description="The topic's settings, then per partition: leader, replicas, in-sync replicas (ISR), "
        "earliest and latest offsets, messages (their difference) and the leader's size on disk.",
    )
    describe_.add_argument("topic")
    create_ = actions.add_parser(
        "create",
        help="create a topic",
        description="Create a topic. One that [[topics]] in conf/ declares gets its partitions, "
        "replication and settings from there unless flags say otherwise.",
    )
    create_.add_argument("topic")
    create_.add_argument(
        "--partitions", type=positive, metavar="N", help="required unless [[topics]] declares the topic"
    )
    create_.add_argument(
        "--replication-factor",
        type=positive,
        metavar="R",
        help="default: [[topics]]'s, else the broker's default.replication.factor",
    )
    create_.add_argument(
        "--config",
        dest="settings",
        type=setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic setting, repeatable (retention.ms=3600000, cleanup.policy=compact)",
    )
    alter = actions.add_parser(
        "alter",
        help="add partitions (Kafka never removes any)",
        description="Grow a topic to N partitions. Kafka cannot remove partitions: fewer than now is "
        "refused (exit 1), the same number changes nothing.",
    )
    alter.add_argument("topic")
    alter.add_argument(
        "--partitions", type=positive, required=True, metavar="N", help="the new total, more than now"
    )
    return parser


def run_create(config: Config, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    declared = next((t for t in config.topics if t.name == args.topic), None)
    partitions = args.partitions or (declared.partitions if declared else None)
    if partitions is None:
        parser.error(
            f"create {args.topic}: --partitions is required ([[topics]] in conf/ does not declare it)"
        )
    # -1 asks the broker for its default.replication.factor.
    replication = args.replication_factor or (declared.replication_factor if declared else -1)
    extra = {**(topic_configs(declared) if declared else {}), **dict(args.settings)}
    result = create(config, args.topic, partitions, replication, extra)
    shown = "".join(f", {k}={v}" for k, v in extra.items())
    count = result["num_partitions"]
    print(
        f"created {args.topic}: {count} partition{'' if count == 1 else 's'}, "
        f"replication factor {result['replication_factor']}{shown}"
    )


def run_alter(config: Config, topic: str, count: int) -> None:
    before = add_partitions(config, topic, count)
    if before == count:
        print(f"{topic} already has {count} partitions: nothing to do")
        return
    print(f"{topic}: {before} -> {count} partitions")
    # What surprises people: the default partitioner is hash(key) % partitions.
    print(
        "note: keyed records now hash to the new count, so a key's next records may go to another "
        "partition than its earlier ones (order per key holds only from here on)",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.action == "describe":
            summary, states, note = describe(config, args.topic)
            print(summary_table([summary]))
            print()
            print(partition_table(states))
            print(f"\n{note}")
        elif args.action == "create":
            run_create(config, args, parser)
        elif args.action == "alter":
            run_alter(config, args.topic, args.partitions)
        else:
            topics = summaries(config, args.match)
            print(summary_table(topics) if topics else f"no topic matches {args.match!r}")
    except (ConfigError, RuntimeError, KafkaError) as exc:
        return failed("topics", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
