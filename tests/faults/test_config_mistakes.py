"""Config mistakes fail within seconds, with a message naming the cause, before Spark even starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from arus.jobs import aggregate
from faultkit import MainJob, failures_at_once, free_ports, write_config
from kafka import KafkaConsumer
from support import job_args

from arus.config import KafkaConfig
from arus.io.kafka import explained_connection_errors
from arus.io.producer import make_producer

pytestmark = [pytest.mark.faults, pytest.mark.integration]

LIMIT_S = 10.0


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    code = aggregate.main(args)
    return code, capsys.readouterr().err, time.monotonic() - started


def run_or_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """`run`, with argparse's exit on a bad flag taken as the code it exits with."""
    started = time.monotonic()
    try:
        return run(args, capsys)
    except SystemExit as exit:
        return int(exit.code or 0), capsys.readouterr().err, time.monotonic() - started


def test_config_mistakes_fail_fast_naming_the_cause(
    main_job: MainJob, tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    config, topics = main_job.config, main_job.topics
    good = write_config(tmp_path / "good.toml", config)
    text = good.read_text()
    (dead_port,) = free_ports(1)
    mistakes = {
        "unknown key": (
            text.replace("[stream.guards]\n", "[stream.guards]\nmax_deadleter_ratio = 0.2\n"),
            [],
            "unknown key 'stream.guards.max_deadleter_ratio'",
        ),
        "wrong type": (
            text.replace("max_deadletter_ratio = 0.5", 'max_deadletter_ratio = "half"'),
            [],
            "stream.guards.max_deadletter_ratio = 'half': a number (unquoted",
        ),
        "bad time bound": (
            text.replace('min_event_time = "2000-01-01T00:00:00Z"', 'min_event_time = "last year"'),
            [],
            "stream.guards.min_event_time = 'last year': an ISO-8601 time with a zone",
        ),
        "several at once, before Spark": (
            text.replace('window = "1 minute"', 'window = "1 minuet"').replace(
                "partitions = 3", "partitions = 0"
            ),
            [],
            "aggregate.window = '1 minuet': a duration longer than zero",
        ),
        "bad window flag": (text, ["--window", "1 minuet"], ""),
        "missing topic": (
            text,
            ["--input-topic", "faults.no-such-topic"],
            "'faults.no-such-topic' do not exist",
        ),
        "unreachable broker": (
            text.replace(config.kafka.bootstrap_servers, f"127.0.0.1:{dead_port}"),
            [],
            f"no Kafka broker answers at 127.0.0.1:{dead_port}",
        ),
    }
    seen = {}
    for name, (toml, extra, message) in mistakes.items():
        path = tmp_path / f"{name.replace(' ', '-')}.toml"
        path.write_text(toml)
        code, err, elapsed = run_or_usage(
            ["--config", str(path), *job_args(topics, tmp_path), *extra], capsys
        )
        assert code == 2, name  # refused to start (arus.runtime.job)
        assert message in err, f"{name}: {err}"
        assert "Traceback" not in err, f"{name}: {err}"
        assert elapsed < LIMIT_S, f"{name} took {elapsed:.1f}s"
        seen[name] = round(elapsed, 1)

    # The producers and the kafka-python consumer say the same within seconds.
    unreachable = KafkaConfig(f"127.0.0.1:{dead_port}")

    def consumer() -> None:
        with explained_connection_errors(unreachable):
            KafkaConsumer(**unreachable.client_kwargs(), bootstrap_timeout_ms=5000)

    outcomes = failures_at_once(
        {
            "unreachable broker (producer)": lambda: make_producer(unreachable, config.producer),
            "unreachable broker (consumer)": consumer,
        }
    )
    for name, (error, seconds) in outcomes.items():
        assert f"no Kafka broker answers at 127.0.0.1:{dead_port}" in error, (name, error)
        assert seconds < LIMIT_S, (name, seconds)
        seen[name] = round(seconds, 1)
    figures.update(seconds_to_fail=seen)
