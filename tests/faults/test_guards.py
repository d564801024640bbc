"""The pure parts of the guards and of the secured broker's configuration, without any process."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, ConfigError, KafkaConfig, load_config
from arus.core.rules import GuardError, check_deadletter_ratio
from arus.io.kafka import connection_problem
from arus.ops import broker
from arus.runtime.guards import lost_ranges

pytestmark = pytest.mark.faults


def test_cluster_nodes_use_ports_19091_to_19096_by_default() -> None:
    nodes = broker.nodes_for(load_config(DEFAULT_CONFIG, env={}), cluster=3)
    assert sorted(p for n in nodes for p in (n.port, n.controller_port)) == list(range(19091, 19097))
    props = broker.server_properties(nodes[0], nodes)
    assert "default.replication.factor=3\n" in props and "min.insync.replicas=2\n" in props


def test_secured_broker_has_no_unauthenticated_listener(tmp_path: Path) -> None:
    security = broker.Security(admin_password=secrets.token_hex(8), tls_keystore=tmp_path / "keystore.pem")
    node = broker.Node(1, "127.0.0.1", 9500, 9501, tmp_path, ssl_port=9502, security=security)
    props = dict(line.split("=", 1) for line in broker.server_properties(node, [node]).splitlines())
    assert props["listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:9500,SASL_SSL://127.0.0.1:9502,CONTROLLER://127.0.0.1:9501"
    )
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"]


def test_scram_credentials_carry_the_salted_password_only() -> None:
    arg = broker.scram_credential("alice", "correct-horse")
    assert "correct-horse" not in arg
    fields = dict(re.findall(r'(\w+)="?([^",\]]+)"?', arg.split("=", 1)[1]))
    salt = base64.b64decode(fields["salt"])
    expected = hashlib.pbkdf2_hmac("sha512", b"correct-horse", salt, int(fields["iterations"]))
    assert base64.b64decode(fields["saltedpassword"]) == expected
    assert fields["name"] == "alice"
    with pytest.raises(ConfigError):
        broker.scram_credential("alice", 'pass"word')


def test_lost_ranges_are_offsets_deleted_before_they_were_read() -> None:
    assert lost_ranges({0: 40, 1: 10, 2: 5}, {0: 60, 1: 10, 2: 0}) == {0: (40, 60)}


def test_circuit_breaker_trips_only_past_the_share_and_the_minimum() -> None:
    check_deadletter_ratio(bad=50, total=100, max_ratio=0.5, min_records=100, batch_id=0)
    check_deadletter_ratio(bad=9, total=10, max_ratio=0.5, min_records=100, batch_id=0)
    with pytest.raises(GuardError, match="51 of 100 records in micro-batch 3 are bad"):
        check_deadletter_ratio(bad=51, total=100, max_ratio=0.5, min_records=100, batch_id=3)


@pytest.mark.parametrize(
    ("logged", "meaning"),
    [
        (["Connection failed: KafkaConnectionError: 111 ECONNREFUSED"], "no Kafka broker answers"),
        (
            ["Connection lost: [Error 58] SaslAuthenticationFailedError: ..."],
            "rejected the login of user 'u'",
        ),
        (
            ["<KafkaConnection broker_version=(4, 3) (disconnected)>: socket disconnected"],
            "rejected the login",
        ),
        (
            ["Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"],
            "not signed by a CA",
        ),
    ],
)
def test_connection_problems_are_named(logged: list[str], meaning: str) -> None:
    kafka = KafkaConfig("h:1", "SASL_SSL", "SCRAM-SHA-512", "u", "p", ssl_cafile="/ca.pem")
    assert meaning in connection_problem(kafka, logged)
    plaintext = KafkaConfig("h:1")
    assert "another security protocol than PLAINTEXT" in connection_problem(
        plaintext, ["<KafkaConnection broker_version=(4, 3) (disconnected)>: socket disconnected"]
    )
