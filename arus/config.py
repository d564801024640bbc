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
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

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


def job_parser(prog: str, doc: str, *examples: str, metrics: bool = False) -> argparse.ArgumentParser:
    """The parser every arus command starts from: its name, the first line of its docstring `doc`,
    its examples, and --config (found as find_config says), so each command takes the file alike.
    `metrics`: a long-running command, which also takes --metrics-port."""
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


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = dataclasses.field(default="", repr=False)
    ssl_cafile: str = ""  # PEM of the CA that signed the broker's certificate (SSL, SASL_SSL)

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        return kwargs

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
    stuck_readings: int = 6
    silent_minutes: float = 5.0
    bounds: tuple[BoundRule, ...] = ()


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
    """Load the config file (see find_config) and apply env overrides."""
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
    for var, section, key in ENV_OVERRIDES:
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]

    config = build(Config, raw, "", file)
    check_topics_declared(config, file)
    return dataclasses.replace(config, source=str(file))


def check_topics_declared(config: Config, file: Traversable) -> None:
    """Every topic a section names (a key `topic` or `*_topic`; "" names none) is one of [[topics]],
    so a topic is declared once and a misspelt reference fails here rather than at the broker."""
    declared = {topic.name for topic in config.topics}
    undeclared = [
        f"{file}: {key!r} names topic {name!r}, which no [[topics]] entry declares"
        for key, name in _topic_keys(config, "")
        if name and name not in declared
    ]
    if undeclared:
        raise ConfigError("\n".join(undeclared))


def _topic_keys(section: Any, where: str) -> list[tuple[str, str]]:
    found = []
    for field in dataclasses.fields(section):
        value, key = getattr(section, field.name), _join(where, field.name)
        if dataclasses.is_dataclass(value):
            found += _topic_keys(value, key)
        elif field.name == "topic" or field.name.endswith("_topic"):
            found.append((key, value))
    return found


def build(cls: type[T], data: Any, where: str, file: Traversable) -> T:
    """Build the dataclass cls from parsed TOML, checking keys and types strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {where or 'top level'} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {name for name in fields if name != "source"}
    for key in data:
        if key not in known:
            moved = MOVED.get(_join(where, key))
            hint = f" (now {moved!r})" if moved else ""
            raise ConfigError(f"{file}: unknown key {_join(where, key)!r}{hint}")
    values: dict[str, Any] = {}
    for name in known:
        field = fields[name]
        key = _join(where, name)
        if name not in data:
            has_default = (
                field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise ConfigError(f"{file}: missing key {key!r}")
        values[name] = _convert(hints[name], data[name], key, file)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, file: Traversable) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, file)  # type: ignore[arg-type]
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{file}: {key!r} must be a list, got {value!r}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]", file) for i, v in enumerate(value))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {key!r} must be a table, got {value!r}")
        return {
            _convert(key_tp, k, key, file): _convert(value_tp, v, _join(key, k), file)
            for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{file}: {key!r} has an unsupported type")
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: {key!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{file}: {key!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{file}: {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{file}: {key!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{file}: {key!r} has an unsupported type {tp!r}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
