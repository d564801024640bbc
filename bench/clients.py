"""One client measurement per process: a producer or consumer case, its result as one JSON line.

    python -m bench.clients kp-bare --topic T --count 100000 --payload bench/payload.txt
    python -m bench.clients arus-iot --topic T --count 100000 --devices 50 [--client confluent]
    python -m bench.clients kp-consumer --topic T --count 100000
    python -m bench.clients arus-iot --topic T --count 20000 --profile profile.txt

Run by bench.run in a fresh interpreter each time, so one case's memory and JIT-free warm-up never
leak into the next. The timed span starts at the first send (or the first record received) and
ends when the last record is acknowledged (or consumed); imports, configuration, connecting and
the first metadata fetch are outside it for every producer case, bare or arus.
Connection settings come from conf/arus.toml and the environment (KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from arus.bench.common import proc_cpu_seconds, proc_peak_rss_mb
from arus.bench.payloads import INTERVAL_S, SEED, START, read_payload_file

from arus.config import Config, load_config

HEADERS = [("source", b"iot-simulator"), ("schema_version", b"1")]


class Timer:
    """Wall and process CPU time (all threads: the clients' I/O threads count too) of a span, plus
    that of child processes within it (the IoT producer's generator process)."""

    def __init__(self) -> None:
        self.wall0 = self.cpu0 = 0.0
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, _cpu() - self.cpu0

    def result(self, events: int, **extra: Any) -> dict[str, Any]:
        return {
            "events": events,
            "wall_s": round(self.wall, 4),
            "cpu_s": round(self.cpu, 4),
            "events_per_s": events / self.wall if self.wall else None,
            "cpu_us_per_event": self.cpu / events * 1e6 if events else None,
            **extra,
        }


def _cpu() -> float:
    """This process's CPU time and that of its children: those that have ended (and been waited
    for) from the kernel's tally, those still running from /proc."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system + _running_children_cpu()


def _running_children_cpu() -> float:
    pid = os.getpid()
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            for child in (task / "children").read_text().split():
                with suppress(OSError, ValueError, IndexError):
                    total += proc_cpu_seconds(int(child))
    return total


def send_span(timer: Timer) -> AbstractContextManager[Any]:
    """Within the block, a SendLoop starts `timer` when it is made (just before the first send:
    configuration, connecting and the topic check are done) and stops it when its flush returns
    (every record acknowledged), as the bare loops are timed. Closing the client and ending the
    generator process come after the span, as they do for the bare loops."""
    from arus.sources.send import SendLoop

    made, flush = SendLoop.__init__, SendLoop.flush

    def timed_init(loop: SendLoop, *args: Any, **kwargs: Any) -> None:
        made(loop, *args, **kwargs)
        timer.start()

    def timed_flush(loop: SendLoop, timeout: float = 60.0) -> None:
        try:
            flush(loop, timeout)
        finally:
            timer.stop()

    # On the class, so the loop is timed wherever the source makes it.
    span = ExitStack()
    span.enter_context(patch.object(SendLoop, "__init__", timed_init))
    span.enter_context(patch.object(SendLoop, "flush", timed_flush))
    return span


def profiled(path: str | None) -> AbstractContextManager[Any]:
    """pyinstrument around the timed span when --profile is given (its text report goes to path)."""
    if not path:
        return nullcontext()
    from pyinstrument import Profiler

    target = path

    class _Profile:
        def __enter__(self) -> None:
            self.profiler = Profiler(interval=0.0005)
            self.profiler.start()

        def __exit__(self, *_exc: object) -> None:
            self.profiler.stop()
            Path(target).write_text(self.profiler.output_text(unicode=False, color=False, show_all=False))

    return _Profile()


# --- producers -------------------------------------------------------------------------------------


def kp_bare(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """kafka-python with nothing around it: pre-made (key, value) pairs, the same headers as arus."""
    from kafka import KafkaProducer

    from arus.io.producer import make_producer

    pairs = read_payload_file(Path(args.payload))
    producer: KafkaProducer = make_producer(config.kafka, config.producer)
    # The topic's metadata before the span, as the arus producers check their topics before it.
    producer.partitions_for(args.topic)
    send, topic, n = producer.send, args.topic, len(pairs)
    timer = Timer()
    with profiled(args.profile):
        timer.start()
        for i in range(args.count):
            key, value = pairs[i % n]
            send(topic, key=key, value=value, headers=HEADERS)
        producer.flush(timeout=120)
        timer.stop()
    producer.close(timeout=10)
    return timer.result(args.count)


def ck_bare(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """confluent-kafka (librdkafka) with nothing around it, for reference."""
    from confluent_kafka import Producer

    pairs = read_payload_file(Path(args.payload))
    producer = Producer(confluent_settings(config))
    produce, poll, topic, n = producer.produce, producer.poll, args.topic, len(pairs)
    timer = Timer()
    with profiled(args.profile):
        timer.start()
        for i in range(args.count):
            key, value = pairs[i % n]
            while True:
                try:
                    produce(topic, value=value, key=key, headers=HEADERS)
                    break
                except BufferError:
                    poll(0.005)
            if not i % 1000:
                poll(0)
        left = producer.flush(120)
        timer.stop()
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return timer.result(args.count)


def confluent_settings(config: Config) -> dict[str, Any]:
    p = config.producer
    return {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "acks": p.acks,
        "enable.idempotence": p.idempotence,
        "compression.type": p.compression or "none",
        "linger.ms": p.linger_ms,
        "batch.size": p.batch_size,
    }


def arus_iot(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The arus IoT producer (arus.sources.iot.IotSimulator) as `arus produce iot` runs it, without
    injected problems so it sends the same readings as the bare loops. The span is its SendLoop's
    (send_span): from the fleet's metadata records (a few milliseconds) to the end of the flush."""
    from arus.sources.iot import IotSimulator, SimulatorOptions
    from arus.sources.send import SendLimits

    start = datetime.now(UTC).replace(microsecond=0) if args.live else START
    source = IotSimulator(
        dataclasses.replace(config, producer=dataclasses.replace(config.producer, client=args.client)),
        SendLimits(rate=args.rate or None, count=args.count),
        SimulatorOptions(
            topic=args.topic,
            devices=args.devices,
            seed=SEED,
            start=start,
            interval=args.interval or INTERVAL_S,
            clean=True,
            in_process=args.in_process,
        ),
    )
    timer = Timer()
    with profiled(args.profile), send_span(timer):
        code = source.start()
    if code != 0:
        raise RuntimeError(f"the arus IoT producer exited with {code}")
    return timer.result(args.count, started=_iso(start))


def arus_csv(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The CSV replay producer (arus.sources.csv_replay.CsvReplay) on a CSV of the same readings,
    timed over its SendLoop's span (send_span)."""
    from arus.sources.csv_replay import CsvReplay, ReplayOptions
    from arus.sources.send import SendLimits

    options = ReplayOptions(
        time_column="event_time",
        key_column="device_id",
        topic=args.topic,
        reject_file=args.reject_file,
        cursor=args.cursor,
    )
    source = CsvReplay(config, SendLimits(count=args.count), Path(args.csv), options)
    timer = Timer()
    with profiled(args.profile), send_span(timer):
        code = source.start()
    if code != 0:
        raise RuntimeError(f"the arus CSV replay exited with {code}")
    return timer.result(args.count)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# --- consumers -------------------------------------------------------------------------------------


def kp_consumer(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """kafka-python KafkaConsumer counting records, nothing decoded (like Kafka's perf tool); timed
    from the group assignment, as the perf tool's fetch time is."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    timer = Timer()

    class StartOnAssign(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            timer.start()

    consumer = KafkaConsumer(
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config.kafka.client_kwargs(),
    )
    consumer.subscribe([args.topic], listener=StartOnAssign())
    seen = 0
    deadline = time.monotonic() + args.timeout
    with profiled(args.profile):
        while seen < args.count and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            seen += sum(len(records) for records in batches.values())
        timer.stop()
    consumer.close()
    return timer.result(seen)


def arus_consumer(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The arus aggregating consumer (jobs.consumer): parse, dedup, 1-minute windows, publish each
    window change and commit after every poll. Its own counters time it, from the first poll with
    records to the last commit."""
    import io

    from arus.jobs import consumer

    argv = [
        "--input-topic",
        args.topic,
        "--output-topic",
        args.out_topic,
        "--deadletter-topic",
        args.out_topic,
        "--late-topic",
        "",
        "--group-id",
        f"bench-arus-{uuid.uuid4().hex[:8]}",
        "--starting-offsets",
        "earliest",
        "--max-records",
        str(args.count),
        "--until-idle",
        "60",
        "--no-view",
    ]
    settings = consumer.settings_from(consumer.parse_args(argv), config)
    cpu0 = time.process_time()
    with profiled(args.profile):
        counters = consumer.run(config, settings, out=io.StringIO())
    cpu = time.process_time() - cpu0
    wall = (counters.last_at or 0.0) - (counters.first_at or 0.0)
    events = counters.records
    return {
        "events": events,
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "events_per_s": events / wall if wall > 0 else None,
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        "records_out": counters.produced,
        "duplicates": counters.duplicates,
        "late": counters.late,
    }


def quix_aggregate(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Quix Streams doing the arus aggregation: per device (the record key), 1-minute tumbling
    windows on event time with [stream] watermark as grace; count, mean, min and max of value;
    each closed window published to a topic. No changelog topics (the arus consumer has none)."""
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Mean, Min

    job = config.aggregate
    state_dir = tempfile.mkdtemp(prefix="bench-quix-")
    app = Application(
        broker_address=config.kafka.bootstrap_servers,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=_event_time_ms)
    timer = Timer()
    seen = 0
    windows = 0

    def count(value: dict[str, Any]) -> None:
        nonlocal seen
        if not seen:
            timer.start()
        seen += 1
        if seen >= args.count:
            timer.stop()
            app.stop()

    def closed(_value: dict[str, Any]) -> None:
        nonlocal windows
        windows += 1

    sdf = app.dataframe(topic)
    sdf = sdf.update(count)
    sdf = (
        sdf.tumbling_window(_duration(job.window), grace_ms=_duration(config.stream.watermark))
        .agg(count=Count(), mean=Mean("value"), min=Min("value"), max=Max("value"))
        .final()
    )
    sdf = sdf.update(closed)
    sdf.to_topic(app.topic(args.out_topic, value_serializer="json"))
    with profiled(args.profile):
        app.run(timeout=args.timeout)
    if seen < args.count:
        timer.stop()
    return timer.result(seen, windows_closed=windows)


def _event_time_ms(value: Any, _headers: Any, _timestamp: int, _kind: Any) -> int:
    at = datetime.fromisoformat(value["event_time"].replace("Z", "+00:00"))
    return int(at.timestamp() * 1000)


def _duration(text: str) -> timedelta:
    amount, unit = text.split()
    seconds = {"second": 1, "minute": 60, "hour": 3600}[unit.rstrip("s")]
    return timedelta(seconds=float(amount) * seconds)


CASES: dict[str, Callable[[Config, argparse.Namespace], dict[str, Any]]] = {
    "kp-bare": kp_bare,
    "ck-bare": ck_bare,
    "arus-iot": arus_iot,
    "arus-csv": arus_csv,
    "kp-consumer": kp_consumer,
    "arus-consumer": arus_consumer,
    "quix": quix_aggregate,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out-topic", help="output topic for the aggregating consumers")
    parser.add_argument("--payload", help="payload file (one JSON value a line) for the bare loops")
    parser.add_argument("--csv", help="CSV file for arus-csv")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, help="event-time seconds between a device's readings")
    parser.add_argument("--live", action="store_true", help="event times start now (end-to-end runs)")
    parser.add_argument("--rate", type=float, help="offered load, events/s (default: unlimited)")
    parser.add_argument("--client", default="kafka-python", help="producer client for arus-iot")
    parser.add_argument("--in-process", action="store_true", help="arus-iot generates in the sending process")
    parser.add_argument("--cursor", type=Path, help="cursor file for arus-csv")
    parser.add_argument("--reject-file", type=Path, help="arus-csv writes bad rows here, not to a topic")
    parser.add_argument("--timeout", type=float, default=300.0, help="consumers give up after this")
    parser.add_argument("--profile", help="write a pyinstrument text profile of the timed span here")
    args = parser.parse_args(argv)
    result = CASES[args.case](load_config(), args)
    # VmHWM belongs to this program's memory map; wait4's ru_maxrss would also count the parent's
    # pages this process had between fork and exec.
    result["peak_rss_mb"] = round(proc_peak_rss_mb(os.getpid()), 1)
    print(json.dumps({"case": args.case, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
