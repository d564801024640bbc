"""The multi-topic pipeline: raw readings -> bronze, silver, gold and alerts, in Kafka and in Delta.

    arus pipeline --available-now --show    # catch up in two phases, print gold and alerts
    arus pipeline                           # live: every stage at once, [pipeline] trigger
    arus pipeline --stages clean,aggregate  # some stages only
    arus pipeline --lake data/lake-pipeline # tables of its own, beside the main job's

Four stages, each one streaming query with its own checkpoint (arus.runtime.pipeline): bronze
(records as received, dead letters), clean (silver and the clean topic, late events), aggregate
(gold) and alerts. Delta is written exactly once across restarts (appends marked with their batch
id and skipped when replayed, MERGE by key for gold and alerts); Kafka at least once with deterministic
keys, except that a replayed clean batch does not publish its readings twice. `--available-now`
runs bronze and clean together to the end of the raw topic, then aggregate and alerts together on
the complete clean topic and silver table; live runs start them all together (docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arus.config import Config, ConfigError, job_parser
from arus.runtime.job import add_take_over
from arus.runtime.pipeline import (
    STAGES,
    PipelinePlan,
    Topics,
    pipeline_writes,
    preflight_pipeline,
    run_pipeline,
    tables_under,
)
from arus.runtime.queries import reading_id
from arus.runtime.session import streaming_main
from arus.runtime.show import show_pipeline


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = job_parser("arus pipeline", __doc__, metrics=True)
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="catch up (bronze + clean, then aggregate + alerts), then stop",
    )
    parser.add_argument("--trigger", help="live micro-batch interval (default: [pipeline] trigger)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument("--max-offsets-per-trigger", type=int, help="cap on records per micro-batch")
    parser.add_argument("--lake", help="folder of the tables (default: [paths] lake)")
    parser.add_argument("--checkpoint", help="folder of the stages' checkpoints (default: under [paths])")
    for name in ("raw", "clean", "devices", "deadletter", "late", "aggregates", "alerts"):
        parser.add_argument(f"--{name}-topic", help=f"the {name} topic (default from conf)")
    parser.add_argument("--show", action="store_true", help="print the gold aggregates and alerts at the end")
    add_take_over(parser)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, config: Config) -> PipelinePlan:
    pipeline, stream = config.pipeline, config.stream
    topics = Topics(
        raw=args.raw_topic or stream.topic,
        clean=args.clean_topic or pipeline.clean_topic,
        devices=args.devices_topic or stream.devices_topic,
        deadletter=args.deadletter_topic or stream.deadletter_topic,
        late=args.late_topic or stream.late_topic,
        aggregates=args.aggregates_topic or config.aggregate.output_topic,
        alerts=args.alerts_topic or config.alerts.topic,
    )
    lake = Path(args.lake) if args.lake else config.resolve(config.paths.lake)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    return PipelinePlan(
        topics=topics,
        tables=tables_under(lake, config),
        checkpoints=args.checkpoint or str(config.resolve(config.paths.checkpoints) / "pipeline"),
        stages=stages,
        trigger="available-now" if args.available_now else (args.trigger or pipeline.trigger),
        max_offsets_per_trigger=args.max_offsets_per_trigger or pipeline.max_offsets_per_trigger or None,
        starting_offsets=stream.starting_offsets,
        id_field=reading_id(config),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return streaming_main(
        "pipeline",
        parse_args(list(argv) if argv is not None else None),
        settings_from,
        check=preflight_pipeline,
        start=run_pipeline,
        show=lambda spark, config, plan: show_pipeline(
            spark, config.kafka, plan.topics, plan.tables, config.aggregate.keys
        ),
        writes=pipeline_writes,
    )


if __name__ == "__main__":
    sys.exit(main())
