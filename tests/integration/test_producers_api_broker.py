"""The API poller against a real HTTP server on 127.0.0.1 and the real broker, never the internet.

The server plays fixture responses in the shape of the USGS GeoJSON feed (tests/fixtures/usgs),
with a timeout, a 503, a 429 with Retry-After, two pages, a 304 and, after a restart, a page of
mostly already-published records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from arus.producers.api_poller import main as produce_api
from producers_readback import read_topic

from arus.config import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "usgs"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arus/api")


@dataclass
class Step:
    """One scripted answer: the path it expects, then status, headers, body, and a delay first."""

    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]


class FixtureServer:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append(Seen(time.monotonic(), self.path, dict(self.headers.items())))
                step = server.steps.pop(0) if server.steps else Step(self.path, 599, body=b"script exhausted")
                if step.path != self.path:
                    step = Step(self.path, 598, body=f"expected {step.path}".encode())
                time.sleep(step.delay_s)
                try:
                    self.send_response(step.status)
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(step.body)))
                    self.end_headers()
                    self.wfile.write(step.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as it should

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http() -> Iterator[FixtureServer]:
    with FixtureServer() as server:
        yield server


def page(name: str) -> bytes:
    return (FIXTURES / f"{name}.geojson").read_bytes()


def ids(name: str) -> list[str]:
    return [f["id"] for f in json.loads(page(name))["features"] if "id" in f]


def test_each_record_is_published_once_across_retries_pages_polls_and_a_restart(
    kafka: str, new_topic: Callable[..., str], http: FixtureServer, tmp_path: Path
) -> None:
    topic = new_topic("api")
    state = tmp_path / "api-state.json"
    json_headers = {"Content-Type": "application/geo+json"}
    http.steps = [
        # Poll 1: a response too slow for the timeout, a 503, a 429, then two pages.
        Step("/feed", 200, json_headers, page("page1"), delay_s=1.5),
        Step("/feed", 503, body=b"busy"),
        Step("/feed", 429, {"Retry-After": "1"}),
        Step(
            "/feed",
            200,
            {**json_headers, "ETag": '"v1"', "Link": '</feed?page=2>; rel="next"'},
            page("page1"),
        ),
        Step("/feed?page=2", 200, json_headers, page("page2")),
        # Poll 2: nothing changed.
        Step("/feed", 304, {"ETag": '"v1"'}),
    ]
    argv = [
        "--url",
        f"{http.url}/feed",
        "--topic",
        topic,
        "--state-file",
        str(state),
        "--bootstrap-servers",
        kafka,
    ]
    argv += [
        "--interval",
        "0.2",
        "--timeout",
        "0.5",
        "--backoff-base",
        "0.05",
        "--backoff-max",
        "0.2",
        "--seed",
        "1",
    ]
    assert produce_api([*argv, "--polls", "2"]) == 0
    assert http.steps == []
    assert [s.path for s in http.seen] == ["/feed"] * 4 + ["/feed?page=2", "/feed"]
    assert http.seen[3].at - http.seen[2].at >= 1.0  # the 429's Retry-After: 1 was honoured
    assert http.seen[5].headers.get("If-None-Match") == '"v1"'
    assert "If-None-Match" not in http.seen[4].headers
    saved = json.loads(state.read_text())
    assert saved["seen"] == ids("page1") + ids("page2") and saved["etag"] == '"v1"'

    # A restart, in a new process: the state file is all it knows.
    http.steps = [Step("/feed", 200, {**json_headers, "ETag": '"v2"'}, page("page3"))]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "producers.api_poller", *argv, "--polls", "1"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert http.seen[6].headers.get("If-None-Match") == '"v1"'
    assert "1 new, 2 already published" in done.stderr

    got = read_topic(kafka, topic)
    expected = ids("page1") + ids("page2") + ["nc73955599"]
    assert [r.key for r in got] == expected  # each once, in the order polled (one partition)
    features = {
        f["id"]: f
        for name in ("page1", "page2", "page3")
        for f in json.loads(page(name))["features"]
        if "id" in f
    }
    for r in got:
        assert r.headers == {"source": "usgs-earthquakes", "schema_version": "1"}
        payload = json.loads(r.value)
        assert payload.pop("event_id") == str(uuid.uuid5(NAMESPACE, f"usgs-earthquakes/{r.key}"))
        event_time = payload.pop("event_time")
        assert payload == features[r.key]
        assert event_time == time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(features[r.key]["properties"]["time"] / 1000)
        )
    assert json.loads(state.read_text())["etag"] == '"v2"'


def test_a_client_error_is_not_retried_and_fails_the_run(
    kafka: str,
    new_topic: Callable[..., str],
    http: FixtureServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("api")
    http.steps = [Step("/missing", 404, body=b"not found")]
    argv = ["--url", f"{http.url}/missing", "--topic", topic, "--state-file", str(tmp_path / "s.json")]
    assert produce_api([*argv, "--bootstrap-servers", kafka, "--polls", "1"]) == 1
    assert len(http.seen) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert read_topic(kafka, topic) == []
