"""KRaft cluster ids: made once, and never one that kafka-storage would read as an option."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, load_config
from arus.ops import broker


def test_a_cluster_id_never_starts_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(DEFAULT_CONFIG)
    config = replace(config, broker=replace(config.broker, dir=str(tmp_path / "kafka")))
    nodes = broker.nodes_for(config)
    # 0xf8 encodes to "-" in url-safe base64: the first draw must be refused.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    cluster_id = broker._cluster_id(nodes)
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert broker._cluster_id(nodes) == cluster_id  # stored, not drawn again
