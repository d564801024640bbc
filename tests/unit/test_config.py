from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, ConfigError, load_config


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
    with pytest.raises(ConfigError, match=r"'spark.shuffle_partitions' must be an integer, got 'two'"):
        load_config(path, env={})


def test_wrong_type_inside_a_topic_list(tmp_path: Path) -> None:
    path = write(tmp_path, base_text().replace("partitions = 3", "partitions = 3.5", 1))
    with pytest.raises(ConfigError, match=r"'topics\[0\].partitions' must be an integer"):
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
        f"{path}: 'stream.late_topic' names topic 'iot.lat', which no [[topics]] entry declares",
        f"{path}: 'aggregate.output_topic' names topic 'iot.agregates', which no [[topics]] entry declares",
    ]


def test_a_moved_key_names_its_new_place(tmp_path: Path) -> None:
    path = write(
        tmp_path, base_text().replace("[aggregate]\n", '[aggregate]\ninput_topic = "iot.readings"\n')
    )
    with pytest.raises(ConfigError, match=r"unknown key 'aggregate.input_topic' \(now 'stream.topic'\)"):
        load_config(path, env={})
