"""Scenario 5: records deleted upstream (admin delete_records) past the job's checkpoint.

By default the job refuses to start, naming the partition and the offsets it would skip. With
`fail_on_data_loss = false` it starts, logs a warning, and aggregates exactly what is left.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from arus.jobs import aggregate
from faultkit import MainJob, json_record, produce, read_delta, reading, write_config
from kafka import KafkaAdminClient, TopicPartition
from support import job_args

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.usefixtures("spark")  # the job, run in this process, takes the tests' session
def test_records_deleted_past_the_checkpoint(
    main_job: MainJob, tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: dict[str, object]
) -> None:
    config, topics = main_job.config, main_job.topics
    first = [reading(i) for i in range(40)]
    second = [reading(i) for i in range(40, 80)]
    produce(config.kafka, config, [json_record(topics["in"], e) for e in first])
    strict = write_config(tmp_path / "strict.toml", config)
    args = job_args(topics, tmp_path)
    assert aggregate.main(["--config", str(strict), *args]) == 0
    capsys.readouterr()

    produce(config.kafka, config, [json_record(topics["in"], e) for e in second])
    admin = KafkaAdminClient(**config.kafka.client_kwargs(), request_timeout_ms=10000)
    try:
        admin.delete_records({TopicPartition(topics["in"], 0): 60})  # offsets 40-59: never read
    finally:
        admin.close()

    started = time.monotonic()
    assert aggregate.main(["--config", str(strict), *args]) == 2  # refused before Spark starts
    refused_in = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"data loss upstream: offsets 40-59 of {topics['in']} partition 0 were deleted" in err
    assert "fail_on_data_loss = false" in err
    assert refused_in < 10

    tolerant = write_config(
        tmp_path / "tolerant.toml", config, **{"stream.guards.fail_on_data_loss": "false"}
    )
    assert aggregate.main(["--config", str(tolerant), *args]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: skipping lost records: offsets 40-59 of {topics['in']} partition 0" in err

    kept = pd.DataFrame(first + second[20:])
    kept["window_start"] = pd.to_datetime(kept["event_time"], utc=True).dt.floor("1min")
    expected = kept.groupby(["device_id", "window_start"]).size().rename("count").reset_index()
    gold = read_delta(tmp_path / "gold")
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    got = gold.sort_values(["device_id", "window_start"]).reset_index(drop=True)[expected.columns]
    pd.testing.assert_frame_equal(
        got, expected.sort_values(["device_id", "window_start"]).reset_index(drop=True), check_dtype=False
    )
    figures.update(
        deleted_unread=20,
        default="refused to start",
        refused_in_s=round(refused_in, 1),
        tolerant="warned, aggregated the rest",
        aggregated=int(got["count"].sum()),
    )
