"""Typed, immutable configuration loaded from conf/*.toml with environment overrides.

Every mistake fails fast with a ConfigError naming the key and the file: an unknown key, a missing
key, or a value of the wrong type. Deployment values (where Kafka is, where tables live) can be
overridden from the environment; secrets (SASL user and password) only ever come from it.

Which file: `--config`, else $ARUS_CONFIG, else conf/arus.toml in the project folder, else the
defaults shipped inside the package. The project folder is $ARUS_HOME, else the current directory;
relative paths in the config (data/, .run/, .jars/) are taken from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import math
import os
import re
import sys
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

from arus.grammar import DDL_TYPES, duration_us, parse_schema, window_us

# The defaults shipped in the package (conf/ is installed as arus.conf). A Traversable, not a Path:
# on a cluster the package is imported from a wheel on --py-files, and the file is inside that zip.
DEFAULT_CONFIG: Traversable = importlib.resources.files("arus.conf") / "arus.toml"
# The checkout, for the tests and benchmarks that read its files (README, samples/, docs/). arus
# itself never uses it: an installed package has no checkout; it uses project_root().
REPO_ROOT = Path(__file__).resolve().parent.parent


def project_root(env: Mapping[str, str] | None = None) -> Path:
    """The project folder: relative paths in the config and `.jars/` are found here.

    $ARUS_HOME, else the current directory (where `make setup` ran, in a checkout).
    """
    env = os.environ if env is None else env
    return Path(env.get("ARUS_HOME") or Path.cwd())


def find_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Traversable:
    """The config file: `path` (--config), $ARUS_CONFIG, <project>/conf/arus.toml, the shipped defaults."""
    env = os.environ if env is None else env
    chosen = path or env.get("ARUS_CONFIG")
    if chosen:
        return Path(chosen)
    local = project_root(env) / "conf" / "arus.toml"
    return local if local.is_file() else DEFAULT_CONFIG


def doc_examples(prog: str, doc: str) -> tuple[str, ...]:
    """The docstring's example commands: its indented lines that start with `prog`, each with the
    lines it continues onto (a trailing backslash)."""
    examples: list[str] = []
    for line in doc.splitlines():
        text = line.strip()
        if examples and examples[-1].endswith("\\"):
            examples[-1] += f"\n      {text}"
        elif line.startswith("    ") and (text == prog or text.startswith(f"{prog} ")):
            examples.append(text)
    return tuple(examples)


def job_parser(prog: str, doc: str, *examples: str, metrics: bool = False) -> argparse.ArgumentParser:
    """The parser every arus command starts from: its name, the first line of its docstring `doc`,
    its examples, and --config (found as find_config says), so each command takes the file alike.
    Without `examples`, the docstring's own indented `prog ...` lines are shown, so they are written
    once. `metrics`: a long-running command, which also takes --metrics-port."""
    examples = examples or doc_examples(prog, doc)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n")[0],
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help="config file (default: $ARUS_CONFIG, else conf/arus.toml, else the shipped defaults)"
    )
    if metrics:
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve Prometheus metrics on 127.0.0.1:PORT (they always go to [paths] metrics/<app>.jsonl)",
        )
    return parser


class ConfigError(ValueError):
    """A configuration mistake, with the file and the key it concerns."""


# How long the broker may hold a Spark consumer's fetch that finds no record (KafkaConfig.spark_read_options).
SPARK_FETCH_MAX_WAIT_MS = 10

# Each KafkaConfig security field as the two Python clients name it: (kafka-python, librdkafka).
SECURITY_NAMES = {
    "security_protocol": ("security_protocol", "security.protocol"),
    "sasl_mechanism": ("sasl_mechanism", "sasl.mechanism"),
    "sasl_username": ("sasl_plain_username", "sasl.username"),
    "sasl_password": ("sasl_plain_password", "sasl.password"),
    "ssl_cafile": ("ssl_cafile", "ssl.ca.location"),
}


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = dataclasses.field(default="", repr=False)
    ssl_cafile: str = ""  # PEM of the CA that signed the broker's certificate (SSL, SASL_SSL)

    def security_settings(self, client: typing.Literal["kafka-python", "librdkafka"]) -> dict[str, str]:
        """The security settings in use, under the names `client` gives them: the protocol always,
        the SASL ones with a mechanism, the CA file when one is set."""
        used = ["security_protocol"]
        if self.sasl_mechanism:
            used += ["sasl_mechanism", "sasl_username", "sasl_password"]
        if self.ssl_cafile:
            used.append("ssl_cafile")
        column = 0 if client == "kafka-python" else 1
        return {SECURITY_NAMES[field][column]: getattr(self, field) for field in used}

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients."""
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            **self.security_settings("kafka-python"),
        }

    def spark_options(self) -> dict[str, str]:
        """Connection settings for Spark's Kafka source and sink."""
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{module} required username="{self.sasl_username}" password="{self.sasl_password}";'
            )
        if self.ssl_cafile:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.ssl_cafile
        return options

    def spark_read_options(self) -> dict[str, str]:
        """Connection settings for Spark's Kafka source, batch or streaming.

        A Spark task's consumer ends its offset range with a fetch at the end of the log, which the
        broker holds for fetch.max.wait.ms (500 by default) before answering that there is nothing:
        half a second on every read of every micro-batch. Only an empty fetch waits, so a short
        wait costs nothing where there is data (docs/benchmarks.md has the figures).
        """
        return {**self.spark_options(), "kafka.fetch.max.wait.ms": str(SPARK_FETCH_MAX_WAIT_MS)}


@dataclass(frozen=True)
class ProducerConfig:
    acks: str
    idempotence: bool
    compression: str
    linger_ms: int
    batch_size: int
    max_block_ms: int
    request_timeout_ms: int
    client: str = "kafka-python"  # or "confluent-kafka" (optional, faster; producers/confluent.py)


@dataclass(frozen=True)
class IotFaultsConfig:
    """Per-reading chances that a sensor fault starts (0 turns a fault off)."""

    spike_rate: float = 0.0
    stuck_rate: float = 0.0
    dropout_rate: float = 0.0
    battery_decline_rate: float = 0.0


@dataclass(frozen=True)
class IotDeliveryConfig:
    """Per-reading chances of a delivery problem (0 turns it off); at most one per reading."""

    late_rate: float = 0.0
    late_min_s: float = 30.0
    late_max_s: float = 300.0
    out_of_order_rate: float = 0.0
    duplicate_rate: float = 0.0
    duplicate_max_delay_s: float = 60.0
    malformed_rate: float = 0.0


@dataclass(frozen=True)
class IotConfig:
    """The device simulator; it writes [stream] topic and devices_topic."""

    devices: int
    seed: int
    interval_s: float
    speed: float
    demo_count: int
    ledger: str = ""
    faults: IotFaultsConfig = dataclasses.field(default_factory=IotFaultsConfig)
    delivery: IotDeliveryConfig = dataclasses.field(default_factory=IotDeliveryConfig)


@dataclass(frozen=True)
class CsvConfig:
    topic: str
    deadletter_topic: str
    time_column: str
    key_column: str
    time_format: str = "iso"
    timezone: str = "UTC"
    infer_rows: int = 1000
    null_values: tuple[str, ...] = ("", "NA", "N/A", "NaN", "null", "NULL", "None", "#N/A")
    cursor_dir: str = "data/producers/csv"


@dataclass(frozen=True)
class ApiConfig:
    url: str
    topic: str
    source_name: str
    records_path: str
    id_field: str
    time_field: str
    time_format: str = "iso"
    interval_s: float = 60.0
    timeout_s: float = 10.0
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    next_path: str = ""
    offset_param: str = ""
    limit_param: str = ""
    page_size: int = 0
    max_pages: int = 20
    state_file: str = "data/producers/api-state.json"
    remember: int = 100000


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int
    controller_port: int
    heap: str
    dir: str
    cluster_port: int = 19091  # `--cluster N`: node i on cluster_port + 2(i-1), its controller next
    ssl_port: int = 0  # a secured broker's SASL_SSL listener; 0 for none


def _secure_broker_default() -> BrokerConfig:
    return BrokerConfig("127.0.0.1", 9094, 9095, "384m", ".run/kafka-sasl")


@dataclass(frozen=True)
class SparkConfig:
    master: str
    shuffle_partitions: int
    driver_memory: str
    ui_enabled: bool
    jars_dir: str


@dataclass(frozen=True)
class SparkClusterConfig:
    """`make spark-cluster-up`: a standalone master and workers from the installed pyspark."""

    host: str
    port: int
    webui_port: int
    workers: int
    worker_cores: int
    worker_memory: str
    daemon_memory: str
    dir: str


@dataclass(frozen=True)
class PathsConfig:
    lake: str
    checkpoints: str
    metrics: str = "data/metrics"  # <app>.jsonl per job, consumer and producer (arus.io.metrics)


@dataclass(frozen=True)
class StreamGuards:
    """[stream.guards] (docs/reliability.md): records past these limits are dead-lettered with the
    reason, and a micro-batch with too many bad records stops the job."""

    max_record_bytes: int  # 0: no limit
    min_event_time: str  # ISO-8601 with a zone; "": no limit
    max_event_ahead_s: int  # of the record's Kafka timestamp; 0: no limit
    max_deadletter_ratio: float  # a micro-batch with a larger bad share stops the job; 1: never
    breaker_min_records: int  # smaller micro-batches never trip it
    fail_on_data_loss: bool  # false: skip records deleted before the job read them, with a warning


@dataclass(frozen=True)
class StreamConfig:
    """[stream]: the raw stream as every stage and both engines read it, and where what they cannot
    process goes. Tables are folders under [paths] lake."""

    topic: str
    devices_topic: str  # compacted device metadata, joined into silver by device_key
    device_key: str
    schema: str  # a name in [schemas]
    event_time_field: str
    id_field: str  # drops repeated sends of one event; "": keep all (main job only)
    watermark: str
    starting_offsets: str
    deadletter_topic: str
    deadletter_table: str
    late_topic: str  # events behind the watermark, as received
    late_table: str
    guards: StreamGuards


@dataclass(frozen=True)
class AggregateConfig:
    """[aggregate]: the main job's windows over [stream] (its topic, schema, event time, watermark)."""

    keys: tuple[str, ...]
    value_fields: tuple[str, ...]
    window: str
    output_topic: str
    table: str
    # update: a window is written each batch it changes in; append: once, when the watermark passes it
    output_mode: str = "update"
    percentile_accuracy: int = 10000  # percentile_approx's: exact below half this many values a window


@dataclass(frozen=True)
class ConsumerConfig:
    """The kafka-python consumer (jobs/consumer.py); what it aggregates: [stream] and [aggregate]."""

    group_id: str
    output_topic: str
    deadletter_topic: str
    late_topic: str
    max_poll_records: int
    view_refresh_s: float
    view_rows: int


@dataclass(frozen=True)
class CleanConfig:
    """How readings are normalised before deduplication (arus/clean.py); absent fields are skipped."""

    name_fields: tuple[str, ...] = ("kind", "site")
    unit_field: str = "unit"
    value_fields: tuple[str, ...] = ("value",)
    decimals: int = 3


@dataclass(frozen=True)
class BoundRule:
    """An alert when `field` is above or below `limit`, for readings of `kind` ("" = every kind)."""

    name: str
    field: str
    op: str
    limit: float
    kind: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    """The alert rules (arus/alerts.py) that jobs/alerts.py and the pipeline's last stage apply."""

    topic: str = "iot.alerts"
    key: str = "device_id"
    value_field: str = "value"
    lookback: str = "30 minutes"
    zscore_readings: int = 20
    zscore_threshold: float = 4.0
    stuck_readings: int = 3
    silent_minutes: float = 5.0
    bounds: tuple[BoundRule, ...] = ()
    # The reading's own nominal range: clean-schema fields the pipeline fills from its device ("": none).
    range_low_field: str = "device_low"
    range_high_field: str = "device_high"


@dataclass(frozen=True)
class PipelineConfig:
    """The multi-topic pipeline (jobs/pipeline.py) over [stream]. Its tables are [batch]'s, [stream]'s
    and [aggregate]'s."""

    clean_topic: str
    device_table: str  # a Delta device dimension; "": the [stream] devices_topic
    clean_schema: str
    device_schema: str
    trigger: str
    max_offsets_per_trigger: int  # 0: none


@dataclass(frozen=True)
class BatchConfig:
    """The batch side (jobs/backfill.py, reconcile.py, maintain.py, history.py, notebooks/).

    Table names are folders under [paths] lake, like [aggregate] table.
    """

    bronze_table: str = "bronze"
    silver_table: str = "silver"
    alerts_table: str = "alerts"
    tolerance: float = 1e-9
    vacuum_retain_hours: float = 168.0
    conflict_retries: int = 5


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int
    retention_ms: int
    cleanup_policy: str
    replication_factor: int = 1


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig
    producer: ProducerConfig
    iot: IotConfig
    csv: CsvConfig
    api: ApiConfig
    broker: BrokerConfig
    spark: SparkConfig
    spark_cluster: SparkClusterConfig
    paths: PathsConfig
    stream: StreamConfig
    aggregate: AggregateConfig
    pipeline: PipelineConfig
    consumer: ConsumerConfig
    topics: tuple[TopicConfig, ...]
    schemas: dict[str, str]
    secure_broker: BrokerConfig = dataclasses.field(default_factory=_secure_broker_default)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    clean: CleanConfig = dataclasses.field(default_factory=CleanConfig)
    alerts: AlertsConfig = dataclasses.field(default_factory=AlertsConfig)
    source: str = ""

    def schema(self, name: str) -> str:
        """A named event schema (a Spark DDL string; NOT NULL marks required fields)."""
        try:
            return self.schemas[name]
        except KeyError:
            raise ConfigError(f"{self.source}: no schema named {name!r} in [schemas]") from None

    def topic(self, name: str) -> TopicConfig:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise ConfigError(f"{self.source}: no [[topics]] entry named {name!r}")

    def resolve(self, path: str) -> Path:
        """A configured path, relative paths taken from the project folder (project_root())."""
        p = Path(path)
        return p if p.is_absolute() else project_root() / p


# (environment variable, section, key). Secrets appear only here, never in conf/.
ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka", "bootstrap_servers"),
    ("KAFKA_SECURITY_PROTOCOL", "kafka", "security_protocol"),
    ("KAFKA_SASL_MECHANISM", "kafka", "sasl_mechanism"),
    ("KAFKA_SASL_USERNAME", "kafka", "sasl_username"),
    ("KAFKA_SASL_PASSWORD", "kafka", "sasl_password"),
    ("KAFKA_SSL_CAFILE", "kafka", "ssl_cafile"),
    ("ARUS_PRODUCER_CLIENT", "producer", "client"),
    ("SPARK_MASTER", "spark", "master"),
    ("ARUS_LAKE_DIR", "paths", "lake"),
    ("ARUS_CHECKPOINT_DIR", "paths", "checkpoints"),
    ("ARUS_METRICS_DIR", "paths", "metrics"),
)
# Keys that moved when [stream] took what every stage reads, so an older file's error says where.
MOVED = {
    **{
        f"aggregate.{k}": f"stream.{k}"
        for k in ("schema", "event_time_field", "watermark", "starting_offsets")
    },
    **{f"aggregate.{k}": f"stream.{k}" for k in ("deadletter_topic", "deadletter_table", "late_topic")},
    **{f"aggregate.{k}": f"stream.guards.{k}" for k in StreamGuards.__dataclass_fields__},
    "aggregate.input_topic": "stream.topic",
    "aggregate.dedup_field": "stream.id_field",
    "pipeline.raw_topic": "stream.topic",
    "pipeline.raw_schema": "stream.schema",
    "pipeline.devices_topic": "stream.devices_topic",
    "iot.topic": "stream.topic",
    "iot.devices_topic": "stream.devices_topic",
    "batch.late_table": "stream.late_table",
}
SECRET_KEYS = frozenset({("kafka", "sasl_username"), ("kafka", "sasl_password")})

T = TypeVar("T")


def load_config(
    path: str | os.PathLike[str] | Traversable | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (see find_config) and apply env overrides.

    Every value is checked (its type, then CHECKS, then what it names: topics, schemas, fields);
    all the mistakes are raised at once in one ConfigError, a line each."""
    env = os.environ if env is None else env
    file = path if isinstance(path, Traversable) else find_config(path, env)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None

    for section, key in SECRET_KEYS:
        if key in raw.get(section, {}):
            raise ConfigError(f"{file}: [{section}] {key} must come from the environment, not from a file")
    mistakes = _Mistakes(file)
    for var, section, key in ENV_OVERRIDES:
        if env.get(var):
            # An environment variable is text by nature: read it as its key's type here, so the
            # file's own values can be held to their TOML types.
            raw.setdefault(section, {})[key] = _from_text(env[var], key_type(f"{section}.{key}"))
            mistakes.from_env[f"{section}.{key}"] = var

    config = build(Config, raw, "", mistakes)
    for key, pattern, value in _leaves(config, "", ""):
        _check_leaf(config, key, pattern, value, mistakes)
    if mistakes.lines:
        raise ConfigError("\n".join(mistakes.lines))
    return dataclasses.replace(config, source=str(file))


def say(prog: str, reason: object) -> None:
    """An expected failure on stderr, a line per mistake each after `prog:`, never a traceback."""
    for line in str(reason).splitlines():
        print(f"{prog}: {line}", file=sys.stderr)


def load_config_or_say(prog: str, path: str | None) -> Config | None:
    """load_config for a command's main: None after `say` gave the mistakes, so a config mistake
    ends the command with its exit code instead of a traceback."""
    try:
        return load_config(path)
    except ConfigError as exc:
        say(prog, exc)
        return None


# --- what each value may be -----------------------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """What a value may be: `holds` tells a good value of the key's type; `says` is the error's
    "what is allowed"."""

    holds: Callable[[Any], bool]
    says: str


def _parses(parse: Callable[[str], object]) -> Callable[[Any], bool]:
    def holds(value: Any) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return holds


def _zoned_time(text: str) -> None:
    if text and datetime.fromisoformat(text).tzinfo is None:
        raise ValueError(text)


def _starting_offsets(text: str) -> None:
    """earliest, latest, or Spark's JSON: {"topic": {"0": 23, "1": -2}} (-2 earliest, -1 latest)."""
    if text in ("earliest", "latest"):
        return
    spec = json.loads(text)  # a JSONDecodeError is a ValueError
    if not isinstance(spec, dict) or not spec:
        raise ValueError(text)
    for partitions in spec.values():
        if not isinstance(partitions, dict) or not all(
            p.isdigit() and type(offset) is int and offset >= -2 for p, offset in partitions.items()
        ):
            raise ValueError(text)


def one_of(*choices: str) -> Allowed:
    return Allowed(lambda value: value in choices, "one of " + ", ".join(repr(c) for c in choices))


def _at_least(low: int, says: str) -> Allowed:
    return Allowed(lambda value: value >= low, says)


COUNT = _at_least(1, "at least 1")
NOT_NEGATIVE = _at_least(0, "0 or more")
RATIO = Allowed(lambda value: 0 <= value <= 1, "a number from 0 to 1")
PORT = Allowed(lambda value: 1 <= value <= 65535, "a port from 1 to 65535")
DURATION = Allowed(
    _parses(duration_us), "a duration such as '2 minutes', '90 seconds' or '1 hour 30 minutes'"
)
WINDOW = Allowed(_parses(window_us), "a duration longer than zero, such as '1 minute' or '90 seconds'")

# Every key whose type alone does not say what it may be ("[]": any item of a list, "*": any key of
# a table). Keys not here take any value of their type.
CHECKS: dict[str, Allowed] = {
    "kafka.security_protocol": one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "kafka.sasl_mechanism": one_of("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    "producer.acks": one_of("0", "1", "all"),
    "producer.compression": one_of("", "gzip", "snappy", "lz4", "zstd"),
    "producer.linger_ms": NOT_NEGATIVE,
    "producer.batch_size": NOT_NEGATIVE,
    "producer.max_block_ms": NOT_NEGATIVE,
    "producer.request_timeout_ms": COUNT,
    "producer.client": one_of("kafka-python", "confluent-kafka"),
    "iot.devices": COUNT,
    "iot.interval_s": Allowed(lambda value: value > 0, "more than 0"),
    "iot.speed": NOT_NEGATIVE,
    "iot.demo_count": COUNT,
    **{f"iot.faults.{name}": RATIO for name in IotFaultsConfig.__dataclass_fields__},
    **{
        f"iot.delivery.{name}": RATIO
        for name in IotDeliveryConfig.__dataclass_fields__
        if name.endswith("_rate")
    },
    **{
        f"iot.delivery.{name}": NOT_NEGATIVE for name in ("late_min_s", "late_max_s", "duplicate_max_delay_s")
    },
    "csv.infer_rows": COUNT,
    **{f"api.{name}": NOT_NEGATIVE for name in ("interval_s", "timeout_s", "max_retries", "backoff_base_s")},
    **{f"api.{name}": NOT_NEGATIVE for name in ("backoff_max_s", "page_size")},
    "api.max_pages": COUNT,
    "api.remember": COUNT,
    **{
        f"{broker}.{port}": PORT
        for broker in ("broker", "secure_broker")
        for port in ("port", "controller_port")
    },
    **{f"{broker}.cluster_port": PORT for broker in ("broker", "secure_broker")},
    **{
        f"{broker}.ssl_port": Allowed(lambda v: 0 <= v <= 65535, "a port from 1 to 65535, or 0 for none")
        for broker in ("broker", "secure_broker")
    },
    "spark.shuffle_partitions": COUNT,
    "spark_cluster.port": PORT,
    "spark_cluster.webui_port": PORT,
    "spark_cluster.workers": COUNT,
    "spark_cluster.worker_cores": COUNT,
    "stream.watermark": DURATION,
    "stream.starting_offsets": Allowed(
        _parses(_starting_offsets), "'earliest', 'latest' or Spark's JSON such as '{\"topic\": {\"0\": 23}}'"
    ),
    "stream.guards.max_record_bytes": NOT_NEGATIVE,
    "stream.guards.min_event_time": Allowed(
        _parses(_zoned_time), "an ISO-8601 time with a zone such as '2000-01-01T00:00:00Z', or '' for none"
    ),
    "stream.guards.max_event_ahead_s": NOT_NEGATIVE,
    "stream.guards.max_deadletter_ratio": RATIO,
    "stream.guards.breaker_min_records": NOT_NEGATIVE,
    "aggregate.window": WINDOW,
    "aggregate.output_mode": one_of("update", "append"),
    "aggregate.percentile_accuracy": COUNT,
    "consumer.max_poll_records": COUNT,
    "consumer.view_refresh_s": Allowed(lambda value: value > 0, "more than 0"),
    "consumer.view_rows": COUNT,
    "clean.decimals": NOT_NEGATIVE,
    "alerts.lookback": DURATION,
    "alerts.zscore_readings": COUNT,
    "alerts.zscore_threshold": NOT_NEGATIVE,
    "alerts.stuck_readings": COUNT,
    "alerts.silent_minutes": NOT_NEGATIVE,
    "alerts.bounds[].op": one_of("above", "below"),
    "pipeline.trigger": DURATION,
    "pipeline.max_offsets_per_trigger": NOT_NEGATIVE,
    "batch.tolerance": NOT_NEGATIVE,
    "batch.vacuum_retain_hours": NOT_NEGATIVE,
    "batch.conflict_retries": COUNT,
    "topics[].partitions": COUNT,
    "topics[].replication_factor": COUNT,
    "topics[].retention_ms": _at_least(-1, "-1 (forever) or more"),
    "topics[].cleanup_policy": one_of("delete", "compact", "compact,delete"),
    "schemas.*": Allowed(
        _parses(parse_schema),
        "flat Spark DDL: 'name TYPE [NOT NULL], ...' with types " + ", ".join(sorted(set(DDL_TYPES))),
    ),
}
# Keys that name a [schemas] entry.
SCHEMA_KEYS = ("stream.schema", "pipeline.clean_schema", "pipeline.device_schema")
# Keys that name a field, and the key of the schema that must have it ("" names none).
FIELD_KEYS = {
    "stream.event_time_field": "stream.schema",
    "stream.id_field": "stream.schema",
    "aggregate.keys[]": "stream.schema",
    "aggregate.value_fields[]": "stream.schema",
    "alerts.bounds[].field": "pipeline.clean_schema",
    "alerts.range_low_field": "pipeline.clean_schema",
    "alerts.range_high_field": "pipeline.clean_schema",
}


class _Mistakes:
    """The mistakes found so far, a line each: file (or environment variable), key, value, what is allowed."""

    def __init__(self, file: Traversable) -> None:
        self.file = file
        self.from_env: dict[str, str] = {}  # key -> the environment variable that set it
        self.lines: list[str] = []

    def add(self, key: str, value: Any, allowed: str) -> None:
        var = self.from_env.get(key)
        origin = f"{self.file}: {key} (from ${var})" if var else f"{self.file}: {key}"
        self.lines.append(f"{origin} = {value!r}: {allowed}")


def check_value(key: str, value: Any) -> str | None:
    """What `key` (or its CHECKS pattern) may be when `value` is not allowed, else None."""
    allowed = CHECKS.get(re.sub(r"\[\d+\]", "[]", key))
    return None if allowed is None or allowed.holds(value) else allowed.says


def checked(key: str) -> Callable[[str], Any]:
    """argparse's `type=` for a flag that overrides `key`: the text read as the key's type and held
    to its CHECKS, so a flag is refused before anything starts exactly as the file's value would be."""
    tp = key_type(key)

    def parse(text: str) -> Any:
        value = _from_text(text, tp)
        if not isinstance(value, tp) or (tp is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: {_TYPE_NAMES[tp]}")
        says = check_value(key, value)
        if says:
            raise argparse.ArgumentTypeError(f"{text!r}: {says}")
        return value

    return parse


def key_type(key: str) -> Any:
    """The type of a dotted key's value: key_type("iot.devices") is int."""
    tp: Any = Config
    for name in key.split("."):
        tp = typing.get_type_hints(tp)[name]
    return tp


def _from_text(text: str, tp: Any) -> Any:
    """Text as a value of type tp when it reads as one, else the text (whose type error then says so)."""
    if tp is bool:
        return {"true": True, "false": False}.get(text.lower(), text)
    try:
        return tp(text) if tp in (int, float) else text
    except ValueError:
        return text


def _leaves(value: Any, key: str, pattern: str) -> Iterator[tuple[str, str, Any]]:
    """(key, pattern, value) of every value in the config, "[]" and "*" in the pattern for items
    and table keys; a value that did not build (None) is left out, its mistake already said."""
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            if field.name != "source":
                name = field.name
                yield from _leaves(getattr(value, name), _join(key, name), _join(pattern, name))
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{key}[{i}]", f"{pattern}[]")
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, _join(key, name), _join(pattern, "*"))
    elif value is not None:
        yield key, pattern, value


def _check_leaf(config: Config, key: str, pattern: str, value: Any, mistakes: _Mistakes) -> None:
    says = check_value(pattern, value)
    if says:
        mistakes.add(key, value, says)
    name = key.rsplit(".", 1)[-1]
    if (name == "topic" or name.endswith("_topic")) and value and value not in _names(config.topics):
        mistakes.add(key, value, "a topic declared in [[topics]]")
    if pattern in SCHEMA_KEYS and value not in (config.schemas or {}):
        mistakes.add(key, value, f"a schema in [schemas]: {', '.join(config.schemas or {})}")
    schema_key = FIELD_KEYS.get(pattern)
    if schema_key and value:
        section, schema_name = schema_key.split(".")
        ddl = (config.schemas or {}).get(getattr(getattr(config, section), schema_name, None) or "")
        if ddl is not None and check_value("schemas.*", ddl) is None:
            fields = [f.name for f in parse_schema(ddl)]
            if value not in fields:
                mistakes.add(key, value, f"a field of the {schema_key} schema: {', '.join(fields)}")


def _names(topics: tuple[TopicConfig, ...] | None) -> set[str]:
    return {topic.name for topic in topics or () if topic is not None}


# --- building the dataclasses -----------------------------------------------------------------------

# What a value of each type is written as: TOML's own types, so a quoted "0.5" or "false" is a string.
_TYPE_NAMES = {
    bool: "true or false (unquoted)",
    int: "an integer (unquoted)",
    float: "a number (unquoted; not nan or inf)",
    str: "a string",
}


def build(cls: type[T], data: Any, where: str, mistakes: _Mistakes) -> T:
    """Build the dataclass cls from parsed TOML, checking keys and types strictly. A mistake is
    added to `mistakes` and its value left None, so the rest is still checked."""
    if not isinstance(data, dict):
        mistakes.lines.append(f"{mistakes.file}: {where or 'top level'} must be a table")
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {name for name in fields if name != "source"}
    for key in data:
        if key not in known:
            moved = MOVED.get(_join(where, key))
            hint = f" (now {moved!r})" if moved else ""
            mistakes.lines.append(f"{mistakes.file}: unknown key {_join(where, key)!r}{hint}")
    values: dict[str, Any] = {}
    for name in known:
        field = fields[name]
        key = _join(where, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], key, mistakes)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            mistakes.lines.append(f"{mistakes.file}: missing key {key!r}")
            values[name] = None
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, mistakes: _Mistakes) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, mistakes)  # type: ignore[arg-type]
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            mistakes.add(key, value, "a list")
            return None
        return tuple(_convert(item_tp, v, f"{key}[{i}]", mistakes) for i, v in enumerate(value))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            mistakes.add(key, value, "a table")
            return None
        return {
            _convert(key_tp, k, key, mistakes): _convert(value_tp, v, _join(key, k), mistakes)
            for k, v in value.items()
        }
    # A bool is no number, and nan never compares: a ratio of nan would never trip the breaker.
    good = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(tp)
    if good is None:
        mistakes.add(key, value, f"a supported type, not {tp!r}")
        return None
    if not good:
        mistakes.add(key, value, _TYPE_NAMES[tp])
        return None
    return float(value) if tp is float else value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
