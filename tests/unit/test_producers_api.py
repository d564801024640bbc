"""The API poller's logic without a network: backoff, Retry-After, retries, de-duplication, state, paging.

The HTTP transport here is a scripted function; tests/integration/test_producers_api_broker.py runs the
real urllib client against a real HTTP server.
"""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arus.config import DEFAULT_CONFIG, load_config
from arus.sources.api_poller import (
    PollError,
    PollState,
    Response,
    RetryPolicy,
    Stopped,
    TransientError,
    backoff_delay,
    first_page_url,
    get_path,
    get_with_retries,
    new_records,
    next_page_url,
    poll,
    retry_after_s,
    to_payload,
)

API = load_config(DEFAULT_CONFIG, env={}).api
POLICY = RetryPolicy(max_retries=4, base_s=0.5, max_s=3.0)


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(3.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, POLICY, rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in delays)
        assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.1)
    # The jitter is seeded: the same seed gives the same schedule.
    schedule = [backoff_delay(a, POLICY, random.Random(7)) for a in range(5)]
    assert schedule == [backoff_delay(a, POLICY, random.Random(7)) for a in range(5)]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s("Fri, 01 Mar 2024 12:00:30 GMT", now) == 30.0
    assert retry_after_s("Fri, 01 Mar 2024 11:00:00 GMT", now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


class Script:
    """A fetch function that plays back responses (or raises) in order and records the calls."""

    def __init__(self, *steps: Response | Exception) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str], timeout: float) -> Response:
        self.calls.append((url, headers))
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def ok(body: object, **headers: str) -> Response:
    return Response(200, {k.replace("_", "-"): v for k, v in headers.items()}, json.dumps(body).encode())


def test_retries_5xx_timeouts_and_429_then_returns_the_answer() -> None:
    fetch = Script(
        TransientError("TimeoutError: timed out"),
        Response(503, {}, b""),
        Response(429, {"retry-after": "7"}, b""),
        Response(500, {}, b""),
        ok([]),
    )
    sleeps: list[float] = []
    retries: list[str] = []

    def sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        return False  # not asked to stop

    response = get_with_retries(
        fetch,
        "http://x/",
        {},
        1.0,
        POLICY,
        random.Random(3),
        sleep,
        lambda problem, _wait: retries.append(problem),
    )
    assert response.status == 200
    expected_rng = random.Random(3)
    expected = [backoff_delay(0, POLICY, expected_rng), backoff_delay(1, POLICY, expected_rng), 7.0]
    expected.append(backoff_delay(3, POLICY, expected_rng))
    assert sleeps == expected
    assert retries == ["TimeoutError: timed out", "HTTP 503", "HTTP 429 Too Many Requests", "HTTP 500"]


def test_gives_up_after_max_retries() -> None:
    fetch = Script(*[Response(502, {}, b"")] * 5)
    with pytest.raises(PollError, match="HTTP 502; gave up after 5 attempts"):
        get_with_retries(fetch, "http://x/", {}, 1.0, POLICY, random.Random(1), lambda _s: False)
    assert len(fetch.calls) == 5


def test_4xx_is_not_retried() -> None:
    fetch = Script(Response(404, {}, b"no"))
    assert (
        get_with_retries(fetch, "http://x/", {}, 1.0, POLICY, random.Random(1), lambda _s: False).status
        == 404
    )
    assert len(fetch.calls) == 1


def test_a_stop_request_while_waiting_ends_the_retries() -> None:
    fetch = Script(Response(503, {}, b""), ok([]))
    with pytest.raises(Stopped):
        get_with_retries(fetch, "http://x/", {}, 1.0, POLICY, random.Random(1), lambda _s: True)


def test_new_records_drops_known_ids_repeats_and_records_without_id() -> None:
    records = [{"id": "a"}, {"id": "b"}, {"id": "a"}, {"x": 1}, {"id": ""}, {"id": 7}, {"id": "c"}]
    fresh, old, missing = new_records(records, "id", lambda rid: rid == "b")
    assert [rid for rid, _ in fresh] == ["a", "7", "c"]
    assert (old, missing) == (2, 2)


def test_get_path() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert get_path(doc, "a.b.1.c") == 2
    assert get_path(doc, "a.b.-1.c") == 2
    assert get_path(doc, "a.x.c") is None
    assert get_path(doc, "a.b.5") is None
    assert get_path(doc, "") == doc


def test_state_remembers_the_newest_ids_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api.json"
    state = PollState("http://feed/")
    state.remember(["a", "b", "c"], limit=3)
    state.remember(["a", "d"], limit=3)  # "a" seen again is the newest now; "b" is the oldest and goes
    state.etag, state.last_modified = '"v1"', "Fri, 01 Mar 2024 12:00:00 GMT"
    state.save(path)
    again = PollState.load(path, "http://feed/")
    assert list(again.seen) == ["c", "a", "d"]
    assert (again.etag, again.last_modified) == ('"v1"', "Fri, 01 Mar 2024 12:00:00 GMT")
    other = PollState.load(path, "http://another/")
    assert (other.etag, list(other.seen)) == ("", ["c", "a", "d"])
    assert PollState.load(tmp_path / "none.json", "http://feed/").seen == {}


def test_pages_by_link_header_next_field_or_offset() -> None:
    response = Response(200, {"link": '<https://x/a?page=1>; rel="prev", </items?page=3>; rel="next"'}, b"")
    assert next_page_url("https://x/items?page=2", response, {}, 10, API) == "https://x/items?page=3"
    by_field = dataclasses.replace(API, next_path="links.next")
    bare = Response(200, {}, b"")
    assert (
        next_page_url("https://x/i", bare, {"links": {"next": "/i?c=2"}}, 10, by_field) == "https://x/i?c=2"
    )
    assert next_page_url("https://x/i", bare, {"links": {"next": None}}, 10, by_field) is None
    by_offset = dataclasses.replace(
        API, url="https://x/i?q=1", offset_param="offset", limit_param="limit", page_size=10
    )
    assert first_page_url(by_offset) == "https://x/i?q=1&offset=0&limit=10"
    assert next_page_url("https://x/i?q=1&offset=0&limit=10", bare, [], 10, by_offset) == (
        "https://x/i?q=1&offset=10&limit=10"
    )
    assert next_page_url("https://x/i?q=1&offset=10&limit=10", bare, [], 4, by_offset) is None


def test_payload_adds_a_stable_event_id_and_the_event_time() -> None:
    feature = {"id": "us7000abcd", "properties": {"time": 1709294400000, "mag": 4.2}}
    payload = to_payload(feature, "us7000abcd", API)
    assert payload["event_time"] == "2024-03-01T12:00:00.000Z"
    assert payload["event_id"] == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "arus/api"), "usgs-earthquakes/us7000abcd")
    )
    assert payload["properties"] == feature["properties"]
    assert to_payload({"id": "x", "properties": {}}, "x", API)["event_time"] is None


def test_a_poll_follows_pages_and_sends_validators_only_for_the_first() -> None:
    api = dataclasses.replace(API, url="http://feed/", records_path="features", id_field="id")
    state = PollState("http://feed/", etag='"v0"')
    fetch = Script(
        ok({"features": [{"id": "a"}, {"id": "b"}]}, etag='"v1"', link="</page2>; rel=next"),
        ok({"features": [{"id": "b"}, {"id": "c"}, {"id": "seen"}]}),
    )
    result = poll(api, state, lambda rid: rid == "seen", fetch, random.Random(1), lambda _s: False)
    assert [rid for rid, _ in result.new] == ["a", "b", "c"]
    assert (result.pages, result.records, result.old, result.etag) == (2, 5, 2, '"v1"')
    assert fetch.calls[0][1]["If-None-Match"] == '"v0"'
    assert fetch.calls[1][0] == "http://feed/page2" and "If-None-Match" not in fetch.calls[1][1]


def test_a_poll_answered_304_has_nothing_new() -> None:
    state = PollState(API.url, last_modified="Fri, 01 Mar 2024 12:00:00 GMT")
    fetch = Script(Response(304, {}, b""))
    result = poll(API, state, lambda _rid: False, fetch, random.Random(1), lambda _s: False)
    assert (result.status, result.new, result.pages) == ("304 not modified", [], 0)
    assert fetch.calls[0][1]["If-Modified-Since"] == "Fri, 01 Mar 2024 12:00:00 GMT"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (Response(404, {}, b""), "HTTP 404"),
        (Response(200, {}, b"<html>"), "not JSON"),
        (ok({"data": []}), "no list of records at 'features'"),
    ],
)
def test_a_poll_fails_clearly(response: Response, message: str) -> None:
    with pytest.raises(PollError, match=message):
        poll(
            API, PollState(API.url), lambda _rid: False, Script(response), random.Random(1), lambda _s: False
        )
