"""Security: SASL/SCRAM-SHA-512 logins, ACLs with the StandardAuthorizer, TLS with a test CA.

One secured broker (arus.ops.broker's `--sasl` mode on free ports) with users created at format time:
`producer-a` may write only topics starting with `a.`; `job` may read `a.` topics and write
`job.` topics. Passwords are random per run and reach clients only through the environment.
"""

from __future__ import annotations

import io
import secrets
import time
from pathlib import Path

import pytest
from arus.jobs import aggregate
from deltalake import DeltaTable
from faultkit import (
    Secured,
    clean_env,
    failures_at_once,
    json_record,
    read_topic,
    reading,
    run_job_process,
    write_config,
)
from kafka import KafkaConsumer
from support import job_args

from arus.config import KafkaConfig
from arus.io.kafka import explained_connection_errors
from arus.io.producer import ProducerError, make_producer
from arus.sources.send import SendLoop

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(900)]

LIMIT_S = 10.0


def test_clients_log_in_with_credentials_from_the_environment(
    secured: Secured, tmp_path: Path, figures: dict[str, object]
) -> None:
    producer_config = secured.client("producer-a")
    assert producer_config.kafka.sasl_password == secured.passwords["producer-a"]
    events = [reading(i) for i in range(30)]
    progress = io.StringIO()
    producer = make_producer(producer_config.kafka, producer_config.producer)
    try:
        summary = SendLoop(producer, progress=progress, progress_every=0.0).run(
            [json_record(secured.topics["a"], e) for e in events]
        )
    finally:
        producer.close(timeout=10)
    assert (summary.acked, summary.failed) == (30, 0)
    job = secured.client("job")
    assert len(read_topic(job.kafka, secured.topics["a"])) == 30

    # The Spark job, in its own process, over TLS, with nothing but KAFKA_* variables to go on, and
    # at DEBUG: Spark's loggers (the Kafka clients' among them) and kafka-python's say everything.
    topics = {"in": secured.topics["a"], "out": secured.topics["out"], "dead": secured.topics["dead"]}
    conf = write_config(tmp_path / "arus.toml", secured.config)
    result = run_job_process(
        ["--config", str(conf), *job_args(topics, tmp_path)],
        clean_env(**secured.env("job", tls=True), ARUS_LOG_LEVEL="DEBUG"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gold = DeltaTable(str(tmp_path / "gold")).to_pandas()
    assert int(gold["count"].sum()) == len(events)
    assert len({key for key, _, _ in read_topic(secured.admin, secured.topics["out"])}) == len(gold)

    # The DEBUG run did log at DEBUG, the Kafka clients inside Spark and kafka-python both.
    assert " DEBUG org.apache.kafka.clients" in result.stderr or " DEBUG NetworkClient" in result.stderr
    assert " DEBUG kafka." in result.stderr
    output = progress.getvalue() + result.stdout + result.stderr + secured.node.log_file.read_text()
    assert leaked_passwords(output + secured.passwords["job"], secured.passwords) == ["job"]  # it can fail
    leaked = leaked_passwords(output, secured.passwords)
    where = [
        output[max(0, at - 300) : at + 100].replace(secured.passwords[user], "<PASSWORD>")
        for user in leaked
        for at in [output.index(secured.passwords[user])]
    ]
    assert not leaked, f"passwords of {leaked} in logs or progress output: {where}"
    assert all(p not in repr(secured.client(u)) for u, p in secured.passwords.items() if u != "admin")
    figures.update(
        users=sorted(secured.passwords),
        producer_acked=summary.acked,
        consumer_read=30,
        spark_job_over="SASL_SSL + SCRAM-SHA-512",
        debug_output_scanned_mb=round(len(output) / 1e6, 1),
        passwords_in_output=0,
    )


def leaked_passwords(output: str, passwords: dict[str, str]) -> list[str]:
    """The users whose password appears in `output`."""
    return [user for user, password in passwords.items() if password in output]


def test_wrong_credentials_are_rejected_within_seconds(
    secured: Secured,
    tmp_path: Path,
    isolated_env,
    capsys: pytest.CaptureFixture[str],
    figures: dict[str, object],
) -> None:
    wrong_password = secured.client("producer-a", "not-" + secured.passwords["producer-a"])
    unknown_user = secured.client("mallory", secrets.token_urlsafe(12))
    wrong_job = secured.client("job", "wrong-password")
    topics = {"in": secured.topics["a"], "out": secured.topics["out"], "dead": secured.topics["dead"]}
    conf = write_config(tmp_path / "arus.toml", secured.config)
    isolated_env(**secured.env("job", "wrong-password"))

    def consumer() -> None:
        with explained_connection_errors(wrong_job.kafka):
            KafkaConsumer(**wrong_job.kafka.client_kwargs(), bootstrap_timeout_ms=5000)

    def spark_job() -> None:
        if aggregate.main(["--config", str(conf), *job_args(topics, tmp_path)]) != 0:
            raise RuntimeError(capsys.readouterr().err)

    outcomes = failures_at_once(
        {
            "producer (wrong password)": lambda: make_producer(wrong_password.kafka, wrong_password.producer),
            "producer (unknown user)": lambda: make_producer(unknown_user.kafka, unknown_user.producer),
            "kafka-python consumer": consumer,
            "spark job": spark_job,
        }
    )
    expected_user = {"producer (wrong password)": "producer-a", "producer (unknown user)": "mallory"}
    for name, (error, _) in outcomes.items():
        assert f"rejected the login of user '{expected_user.get(name, 'job')}'" in error, (name, error)
    rejected = {name: round(seconds, 1) for name, (_, seconds) in outcomes.items()}
    assert all(seconds < LIMIT_S for seconds in rejected.values()), rejected
    figures.update(credentials_rejected=len(rejected), seconds_to_reject=rejected)


def test_acls_let_a_producer_write_only_its_own_topics(secured: Secured, figures: dict[str, object]) -> None:
    config = secured.client("producer-a")
    producer = make_producer(config.kafka, config.producer)
    errors: list[Exception] = []
    try:
        loop = SendLoop(producer, progress=None, on_error=lambda _r, exc: errors.append(exc))
        summary = loop.run([json_record(secured.topics["b"], reading(i)) for i in range(5)])
    finally:
        producer.close(timeout=10)
    assert (summary.acked, summary.failed) == (0, 5)
    assert {type(e).__name__ for e in errors} == {"TopicAuthorizationFailedError"}
    assert read_topic(secured.admin, secured.topics["b"], idle_ms=500) == []
    figures.update(writes_elsewhere_refused=summary.failed, error=sorted({type(e).__name__ for e in errors}))


def test_tls_listener_rejects_a_client_trusting_another_ca(
    secured: Secured, figures: dict[str, object]
) -> None:
    good = secured.client("producer-a", tls=True)
    producer = make_producer(good.kafka, good.producer)
    try:
        summary = SendLoop(producer, progress=None).run(
            [json_record(secured.topics["a"], reading(i)) for i in range(5)]
        )
    finally:
        producer.close(timeout=10)
    assert (summary.acked, summary.failed) == (5, 0)

    wrong_ca = secured.client("producer-a", tls=True, ca=secured.other_ca)
    started = time.monotonic()
    with pytest.raises(ProducerError, match="is not signed by a CA this client trusts"):
        make_producer(wrong_ca.kafka, wrong_ca.producer)
    rejected_in = time.monotonic() - started
    assert rejected_in < LIMIT_S
    plaintext = KafkaConfig(secured.node.address)
    with pytest.raises(ProducerError, match="does it expect another security protocol than PLAINTEXT"):
        make_producer(plaintext, good.producer)
    figures.update(
        tls_acked=summary.acked, wrong_ca_rejected_in_s=round(rejected_in, 1), plaintext_rejected=True
    )


def test_sparks_own_kafka_client_refuses_a_wrong_password(
    secured: Secured,
    tmp_path: Path,
    isolated_env,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figures: dict[str, object],
) -> None:
    """What it proves: Spark's Kafka source (the Java client inside Spark, not kafka-python) is
    refused by the broker when the password is wrong, and the job then fails (exit 1) in one line
    that names the authentication failure, writes nothing and prints no password. The preflight
    (kafka-python) would refuse first, so it is switched off here: nothing else differs from a run
    of `arus aggregate` (flags, config, KAFKA_* variables)."""
    topics = {"in": secured.topics["a"], "out": secured.topics["out"], "dead": secured.topics["dead"]}
    conf = write_config(tmp_path / "arus.toml", secured.config)
    wrong = "not-" + secured.passwords["job"]
    isolated_env(**secured.env("job", wrong))
    monkeypatch.setattr(aggregate, "preflight_aggregate", lambda kafka, query: None)
    before = read_topic(secured.admin, secured.topics["out"], idle_ms=500)
    started = time.monotonic()
    code = aggregate.main(["--config", str(conf), *job_args(topics, tmp_path)])
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1, err[-3000:]
    failure = [line for line in err.splitlines() if line.startswith("aggregate: failed:")]
    assert len(failure) == 1 and "Authentication failed" in failure[0], err[-3000:]
    assert not list((tmp_path / "gold").rglob("*.parquet")), "gold rows written"
    assert read_topic(secured.admin, secured.topics["out"], idle_ms=500) == before
    assert wrong not in out + err and secured.passwords["job"] not in out + err
    figures.update(spark_client_refused_in_s=round(seconds, 1), said=failure[0][:200])
