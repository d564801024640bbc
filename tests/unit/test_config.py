import argparse
from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, ConfigError, checked, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "arus.toml"
    path.write_text(text)
    return path


def base_text() -> str:
    return DEFAULT_CONFIG.read_text()


def test_default_config_loads_with_every_section() -> None:
    config = load_config(DEFAULT_CONFIG, env={})
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.aggregate.keys == ("device_id",)
    assert config.stream.topic == "iot.readings"
    assert config.stream.guards.max_deadletter_ratio == 0.5
    assert config.topic("iot.readings").partitions == 3
    assert "event_id STRING NOT NULL" in config.schema("iot_reading")


def test_environment_overrides_deployment_values() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
        "ARUS_LAKE_DIR": "/lake",
        "KAFKA_SASL_PASSWORD": "s3cret",
    }
    config = load_config(DEFAULT_CONFIG, env=env)
    assert config.kafka.bootstrap_servers == "b1:9092,b2:9092"
    assert config.kafka.client_kwargs()["bootstrap_servers"] == ["b1:9092", "b2:9092"]
    assert config.paths.lake == "/lake"
    assert config.kafka.sasl_password == "s3cret"
    assert "s3cret" not in repr(config.kafka)


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace("[spark]\n", "[spark]\nmastr = 'x'\n"))
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'spark.mastr'"):
        load_config(path, env={})


def test_missing_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace('driver_memory = "2g"\n', ""))
    with pytest.raises(ConfigError, match=rf"{path}: missing key 'spark.driver_memory'"):
        load_config(path, env={})


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace("shuffle_partitions = 2", 'shuffle_partitions = "two"'))
    with pytest.raises(ConfigError, match=r"spark.shuffle_partitions = 'two': an integer"):
        load_config(path, env={})


def test_wrong_type_inside_a_topic_list(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace("partitions = 3", "partitions = 3.5", 1))
    with pytest.raises(ConfigError, match=r"topics\[0\].partitions = 3.5: an integer"):
        load_config(path, env={})


def test_missing_config_file_named_by_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"/nonexistent/arus.toml: config file not found"):
        load_config(env={"ARUS_CONFIG": "/nonexistent/arus.toml"})


def test_secrets_are_refused_in_files(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace("[kafka]\n", "[kafka]\nsasl_password = 'x'\n"))
    with pytest.raises(ConfigError, match="must come from the environment"):
        load_config(path, env={})


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_every_topic_a_section_names_is_declared(tmp_path: Path) -> None:
    text = base_text().replace('output_topic = "iot.aggregates"', 'output_topic = "iot.agregates"')
    text = text.replace('late_topic = "iot.late"', 'late_topic = "iot.lat"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).splitlines() == [
        f"{path}: stream.late_topic = 'iot.lat': a topic declared in [[topics]]",
        f"{path}: aggregate.output_topic = 'iot.agregates': a topic declared in [[topics]]",
    ]


def test_a_moved_key_names_its_new_place(tmp_path: Path) -> None:
    path = write(
        tmp_path, base_text().replace("[aggregate]\n", '[aggregate]\ninput_topic = "iot.readings"\n')
    )
    with pytest.raises(ConfigError, match=r"unknown key 'aggregate.input_topic' \(now 'stream.topic'\)"):
        load_config(path, env={})


# (what the file says, what it is changed to, the error line after the file name). One per class of
# mistake: quoted numbers and booleans, nan and inf, ranges, ports, choices, durations, times,
# starting offsets, schemas, and names of fields a schema must have.
MISTAKES = [
    (
        "max_deadletter_ratio = 0.5",
        'max_deadletter_ratio = "0.5"',
        "stream.guards.max_deadletter_ratio = '0.5': a number (unquoted",
    ),
    ("ui_enabled = false", 'ui_enabled = "false"', "spark.ui_enabled = 'false': true or false (unquoted)"),
    (
        "max_deadletter_ratio = 0.5",
        "max_deadletter_ratio = nan",
        "stream.guards.max_deadletter_ratio = nan: a number (unquoted; not nan or inf)",
    ),
    (
        "zscore_threshold = 4.0",
        "zscore_threshold = inf",
        "alerts.zscore_threshold = inf: a number (unquoted; not nan or inf)",
    ),
    (
        "max_deadletter_ratio = 0.5",
        "max_deadletter_ratio = -0.1",
        "stream.guards.max_deadletter_ratio = -0.1: a number from 0 to 1",
    ),
    ("late_rate = 0.005", "late_rate = 5.0", "iot.delivery.late_rate = 5.0: a number from 0 to 1"),
    ("spike_rate = 0.002", "spike_rate = 1.5", "iot.faults.spike_rate = 1.5: a number from 0 to 1"),
    ("partitions = 3", "partitions = 0", "topics[0].partitions = 0: at least 1"),
    ("devices = 50", "devices = -3", "iot.devices = -3: at least 1"),
    ("workers = 2", "workers = 0", "spark_cluster.workers = 0: at least 1"),
    ("port = 9092", "port = -5", "broker.port = -5: a port from 1 to 65535"),
    ("max_record_bytes = 1048576", "max_record_bytes = -1", "stream.guards.max_record_bytes = -1: 0 or more"),
    ('acks = "all"', 'acks = "2"', "producer.acks = '2': one of '0', '1', 'all'"),
    (
        'security_protocol = "PLAINTEXT"',
        'security_protocol = "PLAIN"',
        "kafka.security_protocol = 'PLAIN': one of",
    ),
    ('sasl_mechanism = ""', 'sasl_mechanism = "SCRAM"', "kafka.sasl_mechanism = 'SCRAM': one of '', 'PLAIN'"),
    (
        'client = "kafka-python"',
        'client = "kafka"',
        "producer.client = 'kafka': one of 'kafka-python', 'confluent-kafka'",
    ),
    (
        'cleanup_policy = "delete"',
        'cleanup_policy = "del"',
        "topics[0].cleanup_policy = 'del': one of 'delete'",
    ),
    ('op = "above"', 'op = "abvoe"', "alerts.bounds[0].op = 'abvoe': one of 'above', 'below'"),
    (
        'window = "1 minute"',
        'window = "1 minuet"',
        "aggregate.window = '1 minuet': a duration longer than zero",
    ),
    (
        'window = "1 minute"',
        'window = "0 seconds"',
        "aggregate.window = '0 seconds': a duration longer than zero",
    ),
    ('watermark = "2 minutes"', 'watermark = "2 mins"', "stream.watermark = '2 mins': a duration"),
    ('lookback = "30 minutes"', 'lookback = "half an hour"', "alerts.lookback = 'half an hour': a duration"),
    ('trigger = "10 seconds"', 'trigger = "10s"', "pipeline.trigger = '10s': a duration"),
    (
        'min_event_time = "2000-01-01T00:00:00Z"',
        'min_event_time = "2000-01-01T00:00:00"',
        "stream.guards.min_event_time = '2000-01-01T00:00:00': an ISO-8601 time with a zone",
    ),
    (
        'starting_offsets = "earliest"',
        'starting_offsets = "first"',
        "stream.starting_offsets = 'first': 'earliest', 'latest' or Spark's JSON",
    ),
    (
        'iot_device = "device_id STRING NOT NULL,',
        'iot_device = "device_id STRIN NOT NULL,',
        "schemas.iot_device = 'device_id STRIN NOT NULL, kind STRING, site STRING, unit STRING, low DOUBLE, "
        "high DOUBLE': flat Spark DDL",
    ),
    (
        'keys = ["device_id"]',
        'keys = ["devise_id"]',
        "aggregate.keys[0] = 'devise_id': a field of the stream.schema schema: event_id, device_id",
    ),
    (
        'value_fields = ["value"]\nwindow',
        'value_fields = ["valu"]\nwindow',
        "aggregate.value_fields[0] = 'valu': a field of the stream.schema schema",
    ),
    (
        'event_time_field = "event_time"',
        'event_time_field = "ts"',
        "stream.event_time_field = 'ts': a field of the stream.schema schema",
    ),
    (
        'id_field = "event_id"    ',
        'id_field = "id"    ',
        "stream.id_field = 'id': a field of the stream.schema schema",
    ),
    (
        'field = "value"\nop',
        'field = "valeu"\nop',
        "alerts.bounds[0].field = 'valeu': a field of the pipeline.clean_schema schema",
    ),
    (
        'schema = "iot_reading"',
        'schema = "iot_readings"',
        "stream.schema = 'iot_readings': a schema in [schemas]",
    ),
]


@pytest.mark.parametrize(("before", "after", "line"), MISTAKES, ids=[m[2].split(" =")[0] for m in MISTAKES])
def test_each_mistake_is_refused_naming_file_key_value_and_what_is_allowed(
    tmp_path: Path, before: str, after: str, line: str
) -> None:
    text = base_text()
    assert before in text
    path = write(tmp_path, text.replace(before, after, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {line}"), lines[0]


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    text = base_text()
    for before, after, _ in MISTAKES[:8] + MISTAKES[10:14] + MISTAKES[17:19]:
        text = text.replace(before, after, 1)
    path = write(tmp_path, text.replace("[spark]\n", "[spark]\nmastr = 'x'\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    lines = str(caught.value).splitlines()
    # Each line names the file; the unknown key, the quoted values, nan and every range and choice.
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("unknown key 'spark.mastr'" in line for line in lines)
    assert len(lines) == 13, lines  # two of the first eight change one key twice: one line each


def test_environment_values_are_read_as_their_key_type_and_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DEFAULT_CONFIG, env={"ARUS_PRODUCER_CLIENT": "kafka", "KAFKA_SECURITY_PROTOCOL": "TLS"})
    assert str(caught.value).splitlines() == [
        f"{DEFAULT_CONFIG}: kafka.security_protocol (from $KAFKA_SECURITY_PROTOCOL) = 'TLS': "
        "one of 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'",
        f"{DEFAULT_CONFIG}: producer.client (from $ARUS_PRODUCER_CLIENT) = 'kafka': "
        "one of 'kafka-python', 'confluent-kafka'",
    ]


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("iot.devices", "0", None),
        ("iot.devices", "three", None),
        ("iot.devices", "7", 7),
        ("aggregate.window", "1 minuet", None),
        ("aggregate.window", "5 minutes", "5 minutes"),
        ("stream.guards.max_deadletter_ratio", "nan", None),
        ("stream.guards.max_deadletter_ratio", "0.2", 0.2),
    ],
)
def test_a_flag_is_held_to_its_keys_checks(key: str, text: str, value: object) -> None:
    if value is None:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
            checked(key)(text)
    else:
        assert checked(key)(text) == value
