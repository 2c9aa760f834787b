"""Drive a real ``garda worker`` process against the test broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.settings import Settings
from infra.worker_process import REPO, WorkerProcess, worker_env  # noqa: F401 - re-exported

T = TypeVar("T")


def cloudevent(
    type_: str,
    data: dict[str, Any],
    *,
    source: str = "test/desk",
    id: str | None = None,
    subject: str | None = None,
    time_: str | None = None,
) -> dict[str, Any]:
    ev = {
        "specversion": "1.0",
        "id": id or uuid.uuid4().hex,
        "source": source,
        "type": type_,
        "subject": subject if subject is not None else data.get("worker_id"),
        "datacontenttype": "application/json",
        "data": data,
    }
    if time_:
        ev["time"] = time_
    return ev


async def publish(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | dict, list | None]],
) -> None:
    """Publish (key, value, headers) records; dict values are JSON-encoded."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            raw = json.dumps(value).encode() if isinstance(value, dict) else value
            await producer.send(settings.topic(topic), value=raw, key=key, headers=headers or [])
        await producer.flush()
    finally:
        await producer.stop()


async def publish_events(settings: Settings, topic: str, events: Iterable[dict[str, Any]]) -> None:
    await publish(settings, topic, [(e["subject"].encode(), e, None) for e in events])


async def read_topic(
    settings: Settings, topic: str, *, min_count: int = 0, timeout: float = 10.0
) -> list[Any]:
    """Everything on a topic (from the start), waiting for at least ``min_count`` records."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                out.extend(msgs)
            if len(out) >= min_count and not batch and out:
                break
            if min_count == 0 and not batch:
                break
    finally:
        await consumer.stop()
    return out


async def eventually(
    fn: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.2,
) -> T:
    """Poll ``fn`` until ``check`` holds; fail with the last value."""
    deadline = time.monotonic() + timeout
    value = await fn()
    while not check(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await fn()
    return value


async def get_json(url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def post_json(url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, **kw) as r:
        return r.status, await r.json(content_type=None)


async def db_fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# --- escalation, case actions and access ------------------------------------------------

POLICIES = Path(__file__).resolve().parent / "policies"


def policy_file(name: str) -> Path:
    """A test policy in ``tests/integration/policies`` (e.g. ``fast_sla.toml``)."""
    path = POLICIES / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(
    settings: Settings,
    *,
    posts: list[str] | None = None,
    hq: bool = False,
    label: str = "test",
    sources: list[str] | None = None,
) -> tuple[str, str]:
    """(token_id, secret) through ``infra.tokens.create_token`` on the test database;
    ``sources``: the producer sources it may publish as."""
    from infra.tokens import create_token

    conn = await asyncpg.connect(settings.database_url)
    try:
        return await create_token(
            conn, posts=posts or [], hq=hq, label=label, sources=sources or []
        )
    finally:
        await conn.close()


def run_cli(settings: Settings, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -m garda ARGS`` against the test database (only GARDA_DATABASE_URL set,
    plus GARDA_POLICY when the settings name one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDA_")}
    env["GARDA_DATABASE_URL"] = settings.database_url or ""
    if settings.policy is not None:
        env["GARDA_POLICY"] = str(settings.policy)
    return subprocess.run(
        [sys.executable, "-m", "garda", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class TopicTail:
    """A consumer reading one topic from the start; ``await tail.wait(pred, n)`` polls until
    ``n`` decoded CloudEvents match. ``records`` keeps (kafka message, decoded JSON or None).

    For waiting only: on Tansu a long-lived tail that was not polled for a while (e.g. across a
    worker restart) was seen to stop returning records (position stuck below the highwater).
    Count with :func:`read_events` (a fresh consumer) when the exact number matters."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            settings.topic(topic),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=100,
        )
        self.records: list[tuple[Any, Any]] = []

    async def __aenter__(self) -> TopicTail:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        for msgs in batch.values():
            for m in msgs:
                try:
                    value = json.loads(m.value)
                except (TypeError, ValueError, RecursionError):
                    value = None
                self.records.append((m, value))

    def matching(self, pred: Callable[[Any], bool]) -> list[tuple[Any, Any]]:
        return [(m, v) for m, v in self.records if v is not None and pred(v)]

    async def wait(
        self, pred: Callable[[Any], bool], count: int = 1, *, timeout: float = 20.0
    ) -> list[tuple[Any, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pred)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)}/{count} matching records in {timeout}s on "
                    f"{self.consumer.subscription()}; types seen: "
                    f"{sorted({str(v.get('type')) for _, v in self.records if isinstance(v, dict)})}"
                )
            await self.poll()

    async def drain(self, seconds: float) -> None:
        """Keep reading for ``seconds`` (to see whatever else arrives)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.poll(timeout_ms=int(max(50, min(300, (deadline - time.monotonic()) * 1000))))


async def read_events(
    settings: Settings, topic: str, *, quiet: float = 1.0, timeout: float = 15.0
) -> list[tuple[Any, Any]]:
    """Every record on ``topic`` from the start, as (message, decoded JSON or None), read by a
    fresh consumer until nothing new arrived for ``quiet`` seconds (for exact counts)."""
    tail = TopicTail(settings, topic)
    async with tail:
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet:
            before = len(tail.records)
            await tail.poll(100)
            if len(tail.records) > before:
                last_new = time.monotonic()
    return tail.records


def assert_subset(doc: Any, actual: Any, path: str = "$") -> None:
    """Every key the doc shows has the shown value (lists: same length, item by item)."""
    if isinstance(doc, dict):
        assert isinstance(actual, dict), (path, actual)
        for k, v in doc.items():
            assert k in actual, f"{path}.{k} missing in {actual!r}"
            assert_subset(v, actual[k], f"{path}.{k}")
    elif isinstance(doc, list):
        assert isinstance(actual, list) and len(actual) == len(doc), (path, actual)
        for i, (d, a) in enumerate(zip(doc, actual, strict=True)):
            assert_subset(d, a, f"{path}[{i}]")
    else:
        assert doc == actual, f"{path}: the doc says {doc!r}, Garda says {actual!r}"


# --- the read API, the docs' examples, derived policies -----------------------------------


class ReadApi:
    """The read side of the HTTP API with one token: workers and cases."""

    def __init__(self, worker: WorkerProcess, headers: dict[str, str]) -> None:
        self.worker, self.headers = worker, headers

    async def worker_json(self, wid: str) -> dict | None:
        status, body = await get_json(f"{self.worker.url}/api/workers/{wid}", headers=self.headers)
        return body if status == 200 else None

    async def cases(self, wid: str, kind: str | None = None) -> list[dict]:
        q = f"worker_id={wid}" + (f"&kind={kind}" if kind else "")
        _, body = await get_json(f"{self.worker.url}/api/cases?{q}", headers=self.headers)
        return body["cases"]

    async def case(self, case_id: str) -> dict:
        _, body = await get_json(f"{self.worker.url}/api/cases/{case_id}", headers=self.headers)
        return body

    async def workers(self, wids: list[str], check=lambda w: w is not None) -> dict[str, dict]:
        async def all_() -> dict[str, Any]:
            return {w: await self.worker_json(w) for w in wids}

        return await eventually(all_, lambda d: all(check(v) for v in d.values()))


async def processed_count(settings: Settings) -> int:
    """How many input events the workers have processed (``processed_events`` rows)."""
    return (await db_fetch(settings.database_url, "SELECT count(*) FROM processed_events"))[0][0]


def doc_examples(*paths: Path) -> dict[str, Any]:
    """The JSON blocks that follow a ``<!-- example: NAME -->`` marker in these documents."""
    out: dict[str, Any] = {}
    for path in paths:
        found = re.findall(
            r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", path.read_text(), re.S
        )
        out.update((name, json.loads(body)) for name, body in found)
    return out


def derived_policy(tmp_path: Path, name: str, **replacements: str) -> Path:
    """The default policy with exact line replacements (``old line`` -> ``new line``)."""
    from handlers.policy import DEFAULT_POLICY_PATH

    text = DEFAULT_POLICY_PATH.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{old!r} not found once in the default policy"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path
