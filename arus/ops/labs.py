"""Self-checks for the course labs (docs/course/): what is done and what is missing, item by item.

    arus check lab1 --bootstrap-servers 127.0.0.1:19091      the 3-broker cluster and course.cluster
    arus check lab2                                          the producers' topics: keys and fields
    arus check lab3 --group course-lab3                      the consumer group and its windows
    arus check lab4 --lake /tmp/course/lake --raw-topic course.readings ...
    arus check lab2 --json                                   the items for a machine

Each item is looked up on the real broker and in the real tables, never taken from a file the lab
wrote. A missing item comes with a hint: what to run or change. Exit codes: 0 every item passes,
1 an item is missing (or the broker does not answer), 2 a usage or config mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from kafka import KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError

from arus.config import Config, job_parser, load_config_or_say, say
from arus.grammar import parse_schema
from arus.io.kafka import KafkaUnavailable
from arus.ops.lab_items import Item, missing, passed, plural
from arus.ops.lab_pipeline import lab4
from arus.ops.lag import UnknownReader, end_offsets, group_positions
from arus.ops.topics import admin_client, reader

EXIT_CODES = "exit codes: 0 every item passes, 1 an item is missing (or no broker answers), 2 a usage mistake"
# How many of a topic's newest records a check reads: enough to see keys and fields, cheap on any topic.
SAMPLE = 500
# The IoT simulator malforms a few readings on purpose (lab 2, exercise 3); most must carry the fields.
FIELDS_SHARE = 0.9


Check = Callable[[Config, argparse.Namespace], list[Item]]


# --- what the checks read -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampled:
    """The newest records of a topic (at most SAMPLE per partition) and how many it holds in all."""

    total: int
    records: list[tuple[bytes | None, bytes | None]]  # key, value


def sample(config: Config, topic: str) -> Sampled | None:
    """None when the topic does not exist."""
    with reader(config.kafka) as consumer:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(ids)]
        first, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(first[tp], ends[tp] - SAMPLE))
        records: list[tuple[bytes | None, bytes | None]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            polled = consumer.poll(timeout_ms=2000)
            if not polled:
                break  # the rest was compacted or is transaction markers
            records += [(r.key, r.value) for batch in polled.values() for r in batch]
    return Sampled(sum(ends[tp] - first[tp] for tp in tps), records)


def as_object(value: bytes | None) -> dict[str, object] | None:
    try:
        parsed = json.loads(value or b"")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def has_path(record: dict[str, object], path: str) -> bool:
    value: object = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def topic_items(
    config: Config, what: str, topic: str, fields: Sequence[str], hint: str, keyed: bool = True
) -> list[Item]:
    """A producer's topic: it exists and holds records, keyed, JSON objects with `fields`."""
    found = sample(config, topic)
    if found is None:
        return [missing(f"{what}: topic {topic} exists", "no such topic", hint)]
    if not found.records:
        return [missing(f"{what}: {topic} holds records", "the topic is empty", hint)]
    items = [passed(f"{what}: {topic} holds records", plural(found.total, "record"))]
    read = len(found.records)
    if keyed:
        unkeyed = sum(1 for key, _ in found.records if not key)
        name = f"{what}: records have keys"
        items.append(
            passed(name, f"all {read:,} read are keyed")
            if not unkeyed
            else missing(
                name,
                f"{unkeyed:,} of the {read:,} read have no key",
                "a record without a key goes to any partition, so one device's records lose their "
                "order: send with a key (the arus producers key by device, station or record id)",
            )
        )
    objects = [as_object(value) for _, value in found.records]
    complete = sum(1 for o in objects if o is not None and all(has_path(o, f) for f in fields))
    name = f"{what}: records are JSON with {', '.join(fields)}"
    seen = f"{complete:,} of the {read:,} read"
    if complete and complete >= FIELDS_SHARE * read:
        items.append(passed(name, seen))
    else:
        example = next((o for o in objects if o is not None), None)
        has = f"; one has {', '.join(sorted(example))}" if example else "; none is a JSON object"
        items.append(missing(name, seen + has, hint))
    return items


# --- lab 1: the cluster ---------------------------------------------------------------------------


def topic_min_isr(admin: object, topic: str) -> str | None:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": None})
    found = admin.describe_configs([resource], config_filter="all")["topic"]  # type: ignore[attr-defined]
    entry = found.get(topic, {}).get("min.insync.replicas")
    return None if entry is None else str(entry["value"])


def cluster_topic_items(admin: object, topic: str, replication: int, min_isr: int) -> list[Item]:
    [described] = admin.describe_topics([topic])  # type: ignore[attr-defined]
    create = (
        f"arus topics create {topic} --partitions 3 --replication-factor {replication} "
        f"--config min.insync.replicas={min_isr}"
    )
    if described["error_code"]:
        return [missing(f"topic {topic} exists", "no such topic", create)]
    partitions = described["partitions"]
    factor = min(len(p["replica_nodes"]) for p in partitions)
    items = [passed(f"topic {topic} exists", plural(len(partitions), "partition"))]
    name = f"{topic}: replication factor {replication}"
    recreate = f"replication is fixed at creation: delete the topic and `{create}`"
    items.append(
        passed(name, f"replication factor {factor}")
        if factor >= replication
        else missing(name, f"replication factor {factor}", recreate)
    )
    isr_setting = topic_min_isr(admin, topic)
    name = f"{topic}: min.insync.replicas {min_isr}"
    items.append(
        passed(name, f"min.insync.replicas={isr_setting}")
        if isr_setting == str(min_isr)
        else missing(
            name,
            f"min.insync.replicas={isr_setting}",
            f"create it with --config min.insync.replicas={min_isr} (`{create}`)",
        )
    )
    short = [p["partition_index"] for p in partitions if set(p["isr_nodes"]) != set(p["replica_nodes"])]
    name = f"{topic}: every replica in sync (ISR = replicas)"
    items.append(
        passed(name, f"{plural(len(partitions), 'partition')}, full ISR")
        if not short
        else missing(
            name,
            f"partition(s) {', '.join(map(str, short))} have replicas out of the ISR",
            "a broker is down or catching up: `arus broker status --cluster 3`, start the missing "
            "node (`arus broker up --cluster 3`) and wait for `arus topics describe` to show full ISRs",
        )
    )
    return items


def round_trip(config: Config, admin: object, brokers: int, min_isr: int) -> Item:
    """A record written with acks=all to a new topic like the lab's is read back; the topic is removed."""
    name = "a record produced with acks=all is consumed back"
    topic = f"course.check.{uuid.uuid4().hex[:8]}"
    factor = min(brokers, 3)
    settings = {"min.insync.replicas": str(min(min_isr, factor))}
    admin.create_topics([NewTopic(topic, 1, factor, topic_configs=settings)])  # type: ignore[attr-defined]
    try:
        admin.wait_for_topics([topic])  # type: ignore[attr-defined]
        producer = KafkaProducer(**config.kafka.client_kwargs(), acks="all", max_block_ms=10000)
        try:
            sent = producer.send(topic, key=b"check", value=b'{"check": 1}').get(timeout=20)
        finally:
            producer.close()
        with reader(config.kafka) as consumer:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, sent.offset)
            got = [r.value for batch in consumer.poll(timeout_ms=10000).values() for r in batch]
        if got[:1] == [b'{"check": 1}']:
            return passed(
                name, f"offset {sent.offset} of a topic with replication factor {factor}, read back"
            )
        return missing(name, "the record did not come back", "look at the brokers' logs (.run/kafka*/)")
    except KafkaError as exc:
        return missing(
            name,
            f"{type(exc).__name__}: {exc}",
            "with acks=all, min.insync.replicas brokers must be in sync: `arus broker status --cluster 3`",
        )
    finally:
        admin.delete_topics([topic])  # type: ignore[attr-defined]


def lab1(config: Config, args: argparse.Namespace) -> list[Item]:
    with admin_client(config.kafka) as admin:
        brokers = admin.describe_cluster()["brokers"]
        items = [passed("the brokers answer", f"at {config.kafka.bootstrap_servers}")]
        name = f"{plural(args.brokers, 'broker')} registered"
        items.append(
            passed(name, ", ".join(f"{b['host']}:{b['port']}" for b in brokers))
            if len(brokers) >= args.brokers
            else missing(
                name,
                plural(len(brokers), "broker"),
                "start the cluster (`arus broker up --cluster 3`) and point the check at it "
                "(--bootstrap-servers 127.0.0.1:19091)",
            )
        )
        for topic in args.topic or ["course.cluster"]:
            items += cluster_topic_items(admin, topic, args.replication, args.min_isr)
        items.append(round_trip(config, admin, len(brokers), args.min_isr))
    return items


# --- lab 2: the producers -------------------------------------------------------------------------


def schema_fields(config: Config, name: str) -> list[str]:
    return [f.name for f in parse_schema(config.schema(name)) if f.required]


def committed_item(config: Config, group: str, topic: str, hint: str) -> Item:
    """The group has committed offsets on `topic`; how far behind its end they are."""
    name = f"group {group} committed on {topic}"
    with admin_client(config.kafka) as admin:
        try:
            [(_, offsets)] = group_positions(admin, [group]).values()
        except UnknownReader:
            return missing(name, f"no consumer group {group}", hint)
        ends = end_offsets(admin, {topic})
    mine = {tp: offset for tp, offset in offsets.items() if tp[0] == topic}
    if not mine:
        return missing(name, f"group {group} has no offsets on {topic}", hint)
    lag = sum(end - mine.get(tp, 0) for tp, end in ends.items())
    behind = "no lag left" if not lag else f"lag {lag:,} (per partition: `arus lag --group {group}`)"
    return passed(name, f"{len(mine)} of {len(ends)} partitions committed, {behind}")


def lab2(config: Config, args: argparse.Namespace) -> list[Item]:
    iot = "arus produce iot --topic course.readings --devices-topic course.devices --count 1200"
    csv = (
        "arus produce csv samples/weather_stations.csv --time-column time --key-column station "
        "--topic course.csv --deadletter-topic course.csv.deadletter"
    )
    api = "arus produce api --topic course.api --polls 1 (with --url when offline)"
    sample_hint = "arus topics create course.samples; python samples/producer_minimal.py course.samples"
    items = topic_items(
        config,
        "samples",
        args.sample_topic,
        ["sensor_id", "temperature", "humidity"],
        sample_hint,
        keyed=False,
    )
    items.append(
        committed_item(
            config,
            "course-samples",
            args.sample_topic,
            f"python samples/consumer_minimal.py {args.sample_topic} 5 (its group commits when it stops)",
        )
    )
    items += topic_items(config, "iot", args.iot_topic, schema_fields(config, config.stream.schema), iot)
    devices = schema_fields(config, config.pipeline.device_schema)
    items += topic_items(config, "iot devices", args.devices_topic or "course.devices", devices, iot)
    csv_fields = [config.csv.time_column, config.csv.key_column, "event_id"]
    items += topic_items(config, "csv", args.csv_topic, csv_fields, csv)
    items += topic_items(config, "api", args.api_topic, [config.api.id_field, "event_id", "event_time"], api)
    return items


# --- lab 3: the consumer -------------------------------------------------------------------------


def lab3(config: Config, args: argparse.Namespace) -> list[Item]:
    run = (
        f"arus consume --input-topic {args.input_topic} --output-topic {args.output_topic} "
        f"--group-id {args.group} --until-idle 10"
    )
    items = [committed_item(config, args.group, args.input_topic, run)]
    value_fields = config.aggregate.value_fields
    fields = [
        *config.aggregate.keys,
        "window_start",
        "window_end",
        "count",
        *(f"{f}_mean" for f in value_fields),
    ]
    items += topic_items(config, "windows", args.output_topic, fields, run)
    return items


# --- the command ----------------------------------------------------------------------------------


def mark(item: Item) -> str:
    return "✓" if item.ok else "✗"


def render(lab: str, where: str, items: Sequence[Item]) -> str:
    lines = [f"arus check {lab} on {where}"]
    for item in items:
        lines.append(f"  {mark(item)} {item.name}: {item.seen}")
        if not item.ok:
            lines.append(f"      hint: {item.hint}")
    left = [item for item in items if not item.ok]
    lines.append(
        f"{lab}: all {len(items)} items done"
        if not left
        else f"{lab}: {len(items) - len(left)} of {len(items)} items done, {len(left)} missing"
    )
    return "\n".join(lines)


def add_topic_flags(parser: argparse._ActionsContainer, flags: Iterable[tuple[str, str, str]]) -> None:
    for name, what, default in flags:
        parser.add_argument(f"--{name}-topic", default=default, help=f"{what} (default {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("arus check", __doc__)
    parser.epilog = f"{parser.epilog}\n\n{EXIT_CODES}"
    parser.add_argument("lab", choices=sorted(LABS), help="which lab to check")
    parser.add_argument("--bootstrap-servers", help="the broker(s) to look at (default: [kafka])")
    parser.add_argument("--json", action="store_true", help="the items as one JSON object")
    one = parser.add_argument_group("lab1")
    one.add_argument("--topic", action="append", help="the lab's topic (repeatable; default course.cluster)")
    one.add_argument("--brokers", type=int, default=3, help="brokers expected (default 3)")
    one.add_argument("--replication", type=int, default=3, help="replication factor expected (default 3)")
    one.add_argument("--min-isr", type=int, default=2, help="min.insync.replicas expected (default 2)")
    two = parser.add_argument_group("lab2")
    add_topic_flags(
        two,
        [
            ("sample", "the minimal samples' topic", "course.samples"),
            ("iot", "the IoT readings", "course.readings"),
            ("csv", "the CSV replay's topic", "course.csv"),
            ("api", "the API poller's topic", "course.api"),
        ],
    )
    three = parser.add_argument_group("lab3")
    three.add_argument("--group", default="course-lab3", help="the consumer group (default course-lab3)")
    add_topic_flags(
        three,
        [
            ("input", "the topic it reads", "course.readings"),
            ("output", "its windows' topic", "course.consumer.aggregates"),
        ],
    )
    four = parser.add_argument_group("lab4 (the flags of `arus pipeline`; defaults from the config)")
    four.add_argument("--lake", help="folder of the tables (default: [paths] lake)")
    four.add_argument("--checkpoint", help="folder of the stages' checkpoints (default: under [paths])")
    for name in ("raw", "clean", "deadletter", "late", "aggregates", "alerts"):
        four.add_argument(f"--{name}-topic", help=f"the {name} topic (default from conf)")
    parser.add_argument(
        "--devices-topic", help="the devices topic (lab2: default course.devices; lab4: from conf)"
    )
    return parser


LABS: dict[str, Check] = {"lab1": lab1, "lab2": lab2, "lab3": lab3, "lab4": lab4}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config_or_say("check", args.config)
    if config is None:
        return 2
    if args.bootstrap_servers:
        config = replace(config, kafka=replace(config.kafka, bootstrap_servers=args.bootstrap_servers))
    try:
        items = LABS[args.lab](config, args)
    except KafkaUnavailable as exc:
        items = [missing("the brokers answer", str(exc), "start it: `arus broker up` (lab 1: --cluster 3)")]
    except KafkaError as exc:
        say("check", f"the broker at {config.kafka.bootstrap_servers} failed: {type(exc).__name__}: {exc}")
        return 1
    if args.json:
        print(
            json.dumps({"lab": args.lab, "ok": all(i.ok for i in items), "items": [asdict(i) for i in items]})
        )
    else:
        print(render(args.lab, config.kafka.bootstrap_servers, items))
    return 0 if all(item.ok for item in items) else 1


if __name__ == "__main__":
    sys.exit(main())
