"""`arus check` on the shared broker, the cheap part: lab 1's items with one broker's expectations
pass on a topic made for them and fail, item by item, against the course's cluster expectations;
a config mistake exits 2. Every lab walked in full is in tests/faults/test_course_labs.py."""

from __future__ import annotations

import json
import uuid

import pytest

from arus.ops import labs, topics


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, bool]]:
    capsys.readouterr()
    code = labs.main([*argv, "--json"])
    return code, {item["name"]: item["ok"] for item in json.loads(capsys.readouterr().out)["items"]}


def test_lab1_items_on_one_broker(kafka: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"test.lab1.{uuid.uuid4().hex[:8]}"
    assert topics.main(["create", topic, "--partitions", "2", "--config", "min.insync.replicas=1"]) == 0
    one = ["--brokers", "1", "--replication", "1", "--min-isr", "1"]
    code, items = check(capsys, "lab1", "--bootstrap-servers", kafka, "--topic", topic, *one)
    assert code == 0
    assert items == {
        "the brokers answer": True,
        "1 broker registered": True,
        f"topic {topic} exists": True,
        f"{topic}: replication factor 1": True,
        f"{topic}: min.insync.replicas 1": True,
        f"{topic}: every replica in sync (ISR = replicas)": True,
        "a record produced with acks=all is consumed back": True,
    }

    code, items = check(capsys, "lab1", "--bootstrap-servers", kafka, "--topic", topic)
    assert code == 1
    assert [name for name, ok in items.items() if not ok] == [
        "3 brokers registered",
        f"{topic}: replication factor 3",
        f"{topic}: min.insync.replicas 2",
    ]


def test_a_config_mistake_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert labs.main(["lab2", "--config", "/nonexistent/arus.toml"]) == 2
    assert capsys.readouterr().err == "check: /nonexistent/arus.toml: config file not found\n"
