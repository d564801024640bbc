"""Poll a JSON HTTP API on an interval and publish each new record once, keyed by its id (the
entry point, with its flags: producers/api_poller.py, `arus produce api`).

The default [api] config reads the USGS feed of all earthquakes of the past hour (GeoJSON; each
feature has a stable `id` and `properties.time` in epoch milliseconds). Each record is published
as it came, plus `event_id` (UUIDv5 of the source name and record id) and `event_time` (ISO-8601
UTC, null if the time field is missing), with headers source and schema_version.

Ids already published are remembered in a state file, so a record is published once across polls
and restarts: ids are written there after Kafka acknowledges them (a crash between the two can
re-send a record, with the same event_id). Pagination follows a `Link: rel="next"` header, a
next-URL field (`next_path`) or offset/limit parameters. ETag and Last-Modified are sent back as
If-None-Match / If-Modified-Since. 5xx responses and timeouts are retried with exponential backoff
and full jitter; 429 waits for Retry-After. Set API_BEARER_TOKEN in the environment to send
`Authorization: Bearer ...`. Only the standard library's urllib is used.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import os
import random
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from arus.config import ApiConfig, Config
from arus.core.rules import time_text
from arus.io.producer import ProducerError
from arus.sources.base import Source, write_state
from arus.sources.send import (
    Record,
    SendLimits,
    SendLoop,
    Summary,
    origin_headers,
    parse_time,
    stable_id,
)

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "arus/api")
USER_AGENT = "arus-api-poller/0.1 (+https://github.com/arus)"
LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)
TOKEN_ENV = "API_BEARER_TOKEN"


class PollError(RuntimeError):
    """A poll failed for good: a non-retryable status, bad JSON, or retries used up."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM came while waiting to retry."""


class TransientError(Exception):
    """A timeout or a connection failure: worth retrying."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


Fetch = Callable[[str, dict[str, str], float], Response]
Sleep = Callable[[float], bool]


def http_get(url: str, headers: dict[str, str], timeout: float) -> Response:
    """GET with urllib; every HTTP status is returned, transport failures raise TransientError."""
    request = urllib.request.Request(url, headers={**headers, "Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw_headers, body = reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw_headers = exc.code, exc.headers
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientError(f"{type(reason).__name__}: {reason}") from None
    names = {k.lower(): v for k, v in (raw_headers or {}).items()}
    if names.get("content-encoding") == "gzip" and body:
        body = gzip.decompress(body)
    return Response(status, names, body)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 1.0
    max_s: float = 60.0


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2**attempt)]."""
    return rng.uniform(0, min(policy.max_s, policy.base_s * 2**attempt))


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds from `now`; None if absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        at = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - now).total_seconds())


def get_with_retries(
    fetch: Fetch,
    url: str,
    headers: dict[str, str],
    timeout: float,
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Sleep,
    on_retry: Callable[[str, float], None] = lambda _problem, _wait: None,
) -> Response:
    """The first response that is not a 5xx or 429, retrying those and transport failures.

    `sleep(seconds)` returns True if the wait was cut short by a request to stop.
    """
    for attempt in range(policy.max_retries + 1):
        try:
            response = fetch(url, headers, timeout)
        except TransientError as exc:
            problem, wait = str(exc), backoff_delay(attempt, policy, rng)
        else:
            if response.status == 429:
                problem = "HTTP 429 Too Many Requests"
                given = retry_after_s(response.headers.get("retry-after"), datetime.now(UTC))
                wait = backoff_delay(attempt, policy, rng) if given is None else given
            elif response.status >= 500:
                problem, wait = f"HTTP {response.status}", backoff_delay(attempt, policy, rng)
            else:
                return response
        if attempt == policy.max_retries:
            raise PollError(f"{url}: {problem}; gave up after {attempt + 1} attempts")
        on_retry(problem, wait)
        if sleep(wait):
            raise Stopped
    raise AssertionError("unreachable")


def get_path(value: Any, path: str) -> Any:
    """A dotted path into JSON ("properties.time", "items.0.id"); "" is the value itself; None if absent."""
    for part in filter(None, path.split(".")):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)) | params
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def next_page_url(url: str, response: Response, document: Any, n_records: int, api: ApiConfig) -> str | None:
    """The next page's URL: a Link rel="next" header, the next-URL field, or the next offset."""
    link = LINK_NEXT.search(response.headers.get("link", ""))
    if link:
        return urllib.parse.urljoin(url, link.group(1))
    if api.next_path:
        target = get_path(document, api.next_path)
        return urllib.parse.urljoin(url, target) if isinstance(target, str) and target else None
    if api.offset_param and api.page_size and n_records >= api.page_size:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        offset = int(query.get(api.offset_param, "0")) + n_records
        return with_query(url, {api.offset_param: str(offset)})
    return None


def first_page_url(api: ApiConfig) -> str:
    if api.offset_param and api.page_size:
        params = {api.offset_param: "0"}
        if api.limit_param:
            params[api.limit_param] = str(api.page_size)
        return with_query(api.url, params)
    return api.url


def new_records(
    records: Iterable[Any], id_field: str, known: Callable[[str], bool]
) -> tuple[list[tuple[str, Any]], int, int]:
    """(new (id, record) pairs in order, count already known, count without an id).

    An id seen twice in one batch counts once.
    """
    fresh: list[tuple[str, Any]] = []
    taken: set[str] = set()
    old = missing = 0
    for record in records:
        raw = get_path(record, id_field)
        if raw is None or raw == "" or isinstance(raw, dict | list):
            missing += 1
            continue
        rid = str(raw)
        if rid in taken or known(rid):
            old += 1
            continue
        taken.add(rid)
        fresh.append((rid, record))
    return fresh, old, missing


def to_payload(record: Any, rid: str, api: ApiConfig) -> dict[str, Any]:
    """The record with `event_id` and `event_time` added (a record that is not an object is wrapped)."""
    payload = dict(record) if isinstance(record, dict) else {"record": record}
    try:
        event_time: str | None = time_text(parse_time(get_path(record, api.time_field), api.time_format))
    except ValueError:
        event_time = None
    return {**payload, "event_id": stable_id(NAMESPACE, api.source_name, rid), "event_time": event_time}


@dataclass
class PollState:
    """What survives a restart: ids already published (oldest first) and the first page's validators."""

    url: str
    seen: dict[str, None] = field(default_factory=dict)
    etag: str = ""
    last_modified: str = ""

    @classmethod
    def load(cls, path: Path, url: str) -> PollState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(url)
        except (OSError, ValueError) as exc:
            raise ProducerError(f"state file {path} cannot be read: {exc}") from None
        state = cls(url, dict.fromkeys(data.get("seen", [])))
        if data.get("url") == url:
            state.etag, state.last_modified = data.get("etag", ""), data.get("last_modified", "")
        return state

    def remember(self, ids: Iterable[str], limit: int) -> None:
        for rid in ids:
            self.seen.pop(rid, None)
            self.seen[rid] = None
        for rid in list(self.seen)[: max(0, len(self.seen) - limit)]:
            del self.seen[rid]

    def save(self, path: Path) -> None:
        state = {
            "url": self.url,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "seen": list(self.seen),
        }
        write_state(path, state)


@dataclass
class Poll:
    """One poll's outcome. # status, pages, records, new, old, missing_id, etag, last_modified"""

    status: str = ""
    pages: int = 0
    records: int = 0
    new: list[tuple[str, Any]] = field(default_factory=list)
    old: int = 0
    missing_id: int = 0
    etag: str = ""
    last_modified: str = ""


def poll(
    api: ApiConfig,
    state: PollState,
    known: Callable[[str], bool],
    fetch: Fetch,
    rng: random.Random,
    sleep: Sleep,
    on_retry: Callable[[str, float], None] = lambda _problem, _wait: None,
) -> Poll:
    """Fetch every page once and pick out the records not yet published."""
    policy = RetryPolicy(api.max_retries, api.backoff_base_s, api.backoff_max_s)
    base = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if os.environ.get(TOKEN_ENV):
        base["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
    result = Poll()
    taken: set[str] = set()

    def is_known(rid: str) -> bool:
        return rid in taken or known(rid)

    url: str | None = first_page_url(api)
    while url and result.pages < api.max_pages:
        headers = dict(base)
        if result.pages == 0:
            if state.etag:
                headers["If-None-Match"] = state.etag
            if state.last_modified:
                headers["If-Modified-Since"] = state.last_modified
        response = get_with_retries(fetch, url, headers, api.timeout_s, policy, rng, sleep, on_retry)
        if response.status == 304 and result.pages == 0:
            result.status = "304 not modified"
            return result
        if not 200 <= response.status < 300:
            raise PollError(f"{url}: HTTP {response.status}")
        try:
            document = json.loads(response.body)
        except ValueError as exc:
            raise PollError(f"{url}: not JSON ({exc})") from None
        records = get_path(document, api.records_path)
        if not isinstance(records, list):
            raise PollError(f"{url}: no list of records at {api.records_path!r}")
        if result.pages == 0:
            result.etag = response.headers.get("etag", "")
            result.last_modified = response.headers.get("last-modified", "")
        fresh, old, missing = new_records(records, api.id_field, is_known)
        taken.update(rid for rid, _ in fresh)
        result.new += fresh
        result.old += old
        result.missing_id += missing
        result.records += len(records)
        result.pages += 1
        url = next_page_url(url, response, document, len(records), api)
    result.status = f"{result.pages} page{'s' if result.pages != 1 else ''}"
    return result


class Publisher:
    """Which ids are published: acknowledged ones (to save) and ones in flight (not to send twice)."""

    def __init__(self, state: PollState) -> None:
        self.state = state
        self.in_flight: set[str] = set()
        self.acked: list[str] = []
        self.failures = 0
        self._lock = threading.Lock()

    def known(self, rid: str) -> bool:
        with self._lock:
            return rid in self.state.seen or rid in self.in_flight

    def sending(self, rid: str) -> None:
        with self._lock:
            self.in_flight.add(rid)

    def ack(self, record: Record) -> None:
        with self._lock:
            if record.key is not None:
                self.in_flight.discard(record.key)
                self.acked.append(record.key)

    def fail(self, record: Record, _exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            if record.key is not None:
                self.in_flight.discard(record.key)

    def checkpoint(self, path: Path, remember: int, validators: tuple[str, str] | None) -> None:
        """Save the acknowledged ids; the validators too, if every send since the last save worked."""
        with self._lock:
            self.state.remember(self.acked, remember)
            self.acked.clear()
            if validators is not None and self.failures == 0:
                self.state.etag, self.state.last_modified = validators
            self.failures = 0
        self.state.save(path)


class ApiPoller(Source):
    """Every `api.interval_s`, one poll of every page; the records not yet published are sent,
    and after each poll's flush the acknowledged ids are saved in the state file."""

    name = "produce-api"

    def __init__(
        self,
        config: Config,
        limits: SendLimits,
        api: ApiConfig,
        *,
        polls: int | None = None,
        seed: int | None = None,
    ) -> None:
        """`polls` None polls until stopped; `seed` None seeds the backoff jitter at random."""
        super().__init__(config, limits)
        self.api = api
        self.state_path = config.resolve(api.state_file)
        self.polls = polls
        self.rng = random.Random(seed)
        self.publisher: Publisher  # set by open(), from the state file

    def topics(self) -> list[str]:
        return [self.api.topic]

    def open(self, resources: ExitStack) -> None:
        self.publisher = Publisher(PollState.load(self.state_path, first_page_url(self.api)))
        resources.callback(self.publisher.checkpoint, self.state_path, self.api.remember, None)

    def send_loop(self, producer: KafkaProducer) -> SendLoop:
        return SendLoop(producer, on_ack=self.publisher.ack, on_error=self.publisher.fail)

    def run(self, loop: SendLoop) -> Iterator[Record]:
        api, publisher = self.api, self.publisher
        headers = origin_headers(api.source_name)

        def retrying(problem: str, wait: float) -> None:
            loop.summary.count("retries")
            loop.note(f"{self.name}: {problem}; retrying in {wait:.1f}s")

        for n in range(1, (self.polls or sys.maxsize) + 1):
            validators: tuple[str, str] | None = None
            try:
                result = poll(api, publisher.state, publisher.known, http_get, self.rng, loop.wait, retrying)
            except Stopped:
                return
            except PollError as exc:
                loop.summary.count("failed polls")
                loop.note(f"{self.name}: poll {n} failed: {exc}")
            else:
                loop.summary.count("good polls")
                loop.summary.count("already published", result.old)
                loop.summary.count("without id", result.missing_id)
                loop.note(
                    f"{self.name}: poll {n}: {result.status}, {result.records} records, "
                    f"{len(result.new)} new, {result.old} already published"
                )
                validators = (result.etag, result.last_modified) if result.pages else None
                for rid, record in result.new:
                    publisher.sending(rid)
                    value = json.dumps(to_payload(record, rid, api), separators=(",", ":")).encode()
                    loop.summary.count("published")
                    yield Record(api.topic, rid, value, headers)
            loop.flush()
            publisher.checkpoint(self.state_path, api.remember, validators)
            if n == self.polls or loop.wait(api.interval_s):
                return

    def finish(self, summary: Summary) -> int:
        """1 when no poll succeeded (the API is down or wrongly configured), else by the acknowledgements."""
        if summary.counts.get("failed polls", 0) and not summary.counts.get("good polls", 0):
            return 1
        return super().finish(summary)
