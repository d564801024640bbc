"""The ops tools (`arus topics`, `tail`, `send`, `lag`) on the 3-broker cluster and the SASL broker.

They are run as users run them: `arus <tool>` in its own process, told where the broker is only by
a config file (the cluster) or by KAFKA_* variables (the SASL broker: credentials never in a file).
Every expected figure comes from the broker's own answers (the offsets `send` printed, a consumer
group's commits), not from the tool under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import HEAP, Secured, clean_env, make_topics, read_topic, write_config
from kafka import KafkaConsumer

from arus.config import REPO_ROOT, Config, KafkaConfig
from arus.ops import broker

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]


def arus(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`arus ARGS` in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "arus.cli", *args],
        cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def sent_offsets(stdout: str) -> list[tuple[int, int]]:
    """(partition, offset) of each record `arus send` printed: '--value 1: partition 2 offset 0'."""
    return [(int(line.split()[-3]), int(line.split()[-1])) for line in stdout.splitlines()]


def commit_all(kafka: KafkaConfig, topic: str, group: str, expected: int) -> None:
    """Consumer group `group` reads `expected` records of `topic` and commits them."""
    consumer = KafkaConsumer(
        topic, **kafka.client_kwargs(), group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=10_000,
    )  # fmt: skip
    try:
        read = 0
        for _ in consumer:
            read += 1
            if read == expected:
                break
        assert read == expected
        consumer.commit()
    finally:
        consumer.close()


def partition_rows(describe_out: str) -> dict[int, list[str]]:
    """`arus topics describe`'s partition table: {partition: its cells}."""
    lines = describe_out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PARTITION"))
    rows = {}
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[int(cells[0])] = cells
    return rows


def test_tools_on_the_three_broker_cluster(
    cluster: tuple[Config, list[broker.Node]], tmp_path: Path, figures: dict[str, object]
) -> None:
    config, nodes = cluster
    env = clean_env()
    conf = str(write_config(tmp_path / "arus.toml", config))
    topic = f"ops.cluster.{tmp_path.name[-8:]}"

    created = ok(arus("topics", "--config", conf, "create", topic, "--partitions", "3",
                      "--replication-factor", "3", env=env))  # fmt: skip
    assert "3 partitions, replication factor 3" in created
    values = [json.dumps({"device_id": f"dev-{i % 4}", "n": i}) for i in range(12)]
    sent = arus(
        "send", "--config", conf, topic, "--key", "dev-k", "--header", "trace=t1", "--header", "source=ops",
        env=env, stdin="\n".join(values) + "\n",
    )  # fmt: skip
    offsets = sent_offsets(ok(sent))
    assert len(offsets) == 12 and "sent 12 records" in sent.stderr
    per_partition = {p: sum(1 for q, _ in offsets if q == p) for p in range(3)}

    described = ok(arus("topics", "--config", conf, "describe", topic, env=env))
    rows = partition_rows(described)
    node_ids = {str(n.node_id) for n in nodes}
    assert sorted(rows) == [0, 1, 2]
    for partition, (_, leader, replicas, isr, earliest, latest, messages, *_) in rows.items():
        assert set(replicas.split(",")) == node_ids and set(isr.split(",")) == node_ids, described
        assert leader in node_ids
        count = per_partition[partition]
        assert (int(earliest), int(latest), int(messages)) == (0, count, count)

    tailed = ok(arus("tail", "--config", conf, topic, "--from-beginning", "--json", env=env))
    records = [json.loads(line) for line in tailed.splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in records) == sorted(offsets)
    assert sorted(json.dumps(r["value"]) for r in records) == sorted(values)
    assert {r["key"] for r in records} == {"dev-k"}
    assert all(r["headers"] == [["trace", "t1"], ["source", "ops"]] for r in records)
    # send's records read back by a client of another library than the one that sent them.
    assert sorted(v.decode() for _, v, _ in read_topic(config.kafka, topic)) == sorted(values)

    group = f"ops-group-{tmp_path.name[-8:]}"
    commit_all(config.kafka, topic, group, 12)
    more = ok(arus("send", "--config", conf, topic, *(f"--value={v}" for v in values[:5]), env=env))
    behind = {p: sum(1 for q, _ in sent_offsets(more) if q == p) for p in range(3)}
    lag = json.loads(ok(arus("lag", "--config", conf, "--group", group, "--json", env=env)))
    [shown] = lag["groups"]
    assert shown["lag"] == 5
    assert {p["partition"]: p["lag"] for p in shown["partitions"]} == behind
    assert {p["partition"]: p["offset"] for p in shown["partitions"]} == per_partition
    figures.update(
        brokers=len(nodes), records_sent=17, tail_records=len(records), group_lag=shown["lag"],
        partitions={p: rows[p][1:4] for p in rows},
        describe_output=described,  # for docs/operations.md
    )  # fmt: skip


def test_send_says_why_when_min_insync_replicas_cannot_be_met(
    cluster: tuple[Config, list[broker.Node]], tmp_path: Path, figures: dict[str, object]
) -> None:
    """acks=all needs min.insync.replicas (3 here) in sync: with one broker stopped the broker answers
    NOT_ENOUGH_REPLICAS; `arus send` says so in a line and exits 1, without kafka-python's traceback."""
    config, nodes = cluster
    env = clean_env()
    conf = str(write_config(tmp_path / "arus.toml", config))
    topic = f"ops.minisr.{tmp_path.name[-8:]}"
    ok(arus("topics", "--config", conf, "create", topic, "--partitions", "1", "--replication-factor", "3",
            "--config", "min.insync.replicas=3", env=env))  # fmt: skip
    victim = nodes[-1]
    broker.stop_node(victim)  # a controlled shutdown: the controller takes it out of the ISR at once
    try:
        result = arus("send", "--config", conf, topic, "--value", '{"a": 1}', "--timeout", "3", env=env)
    finally:
        broker.start_node(victim, HEAP)
        broker.wait_until_ready(nodes, config)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr, result.stderr
    assert "NotEnoughReplicas" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    figures.update(exit_code=result.returncode, said=result.stderr.strip())


def test_tools_on_the_sasl_broker_with_credentials_from_the_environment(
    secured: Secured, tmp_path: Path, figures: dict[str, object]
) -> None:
    """Each tool gets only KAFKA_* variables (no config file holds a credential); `producer-a` may write
    the a. topics, `job` may read them: send, tail, topics describe and lag each work as that user."""
    # A topic of its own (the session's other secured tests count the shared ones), under the a. ACLs.
    [topic] = make_topics(secured.admin, ("a.ops", 1))
    writer, reader = clean_env(**secured.env("producer-a")), clean_env(**secured.env("job"))
    values = [json.dumps({"device_id": "dev-1", "n": i}) for i in range(4)]
    before = len(read_topic(secured.admin, topic, idle_ms=500))
    sent = sent_offsets(ok(arus("send", topic, "--key", "dev-1", "--header", "trace=s1",
                                *(f"--value={v}" for v in values), env=writer)))  # fmt: skip
    assert [offset for _, offset in sent] == list(range(before, before + 4))

    tailed = ok(arus("tail", topic, "-n", "4", "--json", env=reader))
    records = [json.loads(line) for line in tailed.splitlines()]
    assert [(r["offset"], json.dumps(r["value"]), r["key"], r["headers"]) for r in records] == [
        (offset, value, "dev-1", [["trace", "s1"]]) for (_, offset), value in zip(sent, values, strict=True)
    ]
    described = ok(arus("topics", "describe", topic, env=reader))
    rows = partition_rows(described)
    assert rows[0][4:7] == ["0", str(before + 4), str(before + 4)]

    group = f"ops-sasl-{tmp_path.name[-8:]}"
    commit_all(secured.client("job").kafka, topic, group, before + 4)
    ok(arus("send", topic, "--value", values[0], "--value", values[1], env=writer))
    lag = json.loads(ok(arus("lag", "--group", group, "--json", env=reader)))
    assert [g["lag"] for g in lag["groups"]] == [2]
    shown = ok(arus("lag", "--group", group, env=reader))
    assert "total lag 2" in shown
    figures.update(
        user_tools=["send", "tail", "topics describe", "lag"],
        group_lag=2,
        describe_output=described,  # for docs/operations.md
        lag_output=shown,
    )


def test_acl_limited_users_are_told_what_they_may_not_do(
    secured: Secured, tmp_path: Path, figures: dict[str, object]
) -> None:
    """A user without READ on a topic (ACL) who tails it or runs the kafka-python consumer job on it,
    or without DESCRIBE who tails, describes or sends to it, is refused: one line naming the topic
    (and the user, where the broker hides the topic), exit 1, no traceback."""
    # job may write its job. topics (this one its own): a record there is what `tail` would fetch.
    [out] = make_topics(secured.admin, ("job.ops", 1))
    ok(arus("send", out, "--value", "{}", env=clean_env(**secured.env("job"))))
    said = {}
    cases = {
        # job may WRITE and DESCRIBE job. topics, not READ them
        "tail, no READ": (["tail", out, "--from-beginning"], "job"),
        # producer-a may not even see b. topics
        "tail, no DESCRIBE": (["tail", secured.topics["b"], "--from-beginning"], "producer-a"),
        "describe, no DESCRIBE": (["topics", "describe", secured.topics["b"]], "producer-a"),
        "send, no WRITE or DESCRIBE": (["send", out, "--value", "{}"], "producer-a"),
        # the kafka-python consumer job, its outputs job. topics it may write
        "consume, no READ": (
            [
                "consume",
                "--input-topic",
                out,
                "--output-topic",
                out,
                "--deadletter-topic",
                out,
                "--late-topic",
                "",
                "--starting-offsets",
                "earliest",
                "--until-idle",
                "5",
                "--no-view",
            ],
            "job",
        ),
    }
    for name, (args, user) in cases.items():
        result = arus(*args, env=clean_env(**secured.env(user)))
        said[name] = result.stderr.strip()
        topic = out if out in args else secured.topics["b"]
        assert result.returncode == 1 and "Traceback" not in result.stderr, (name, result)
        assert said[name].count("\n") == 0 and topic in said[name], (name, said[name])
        # The consumer job names the broker's error (arus.pyengine), the ops tools say ACLs.
        assert ("TopicAuthorizationFailedError" if args[0] == "consume" else "ACLs") in said[name], said
        if "no DESCRIBE" in name:
            assert f"user {user!r} may not describe it" in said[name], (name, said[name])
    assert said["tail, no READ"] == (f"tail: the broker's ACLs do not let this user do that on topic {out!r}")
    figures.update(refused=said)
