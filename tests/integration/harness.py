"""Drive a real ``garda worker`` process against the test broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
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
from infra.stack import free_port

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def worker_env(settings: Settings, web_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDA_")}
    env.update(
        GARDA_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        GARDA_DATABASE_URL=settings.database_url or "",
        GARDA_TOPIC_PREFIX=settings.topic_prefix,
        GARDA_PARTITIONS=str(settings.partitions),
        GARDA_GROUP_ID=settings.group_id,
        GARDA_SESSION_TIMEOUT=str(settings.session_timeout),
        GARDA_WEB_PORT=str(web_port),
        GARDA_LOG_FORMAT="json",
        GARDA_TIMER_INTERVAL=str(settings.timer_interval),
        GARDA_DATA_DIR=str(Path(os.environ.get("TMPDIR", "/tmp")) / f"garda-{uuid.uuid4().hex[:8]}"),
    )
    if settings.policy is not None:
        env["GARDA_POLICY"] = str(settings.policy)
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m infra.cli worker`` as a child process, its log in a file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str = "w1", **env: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = worker_env(settings, self.port, **env)
        self.proc: subprocess.Popen | None = None

    async def start(self, ready_timeout: float = 40.0) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "worker"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    async with http.get(self.url + "/health") as r:
                        if r.status == 200 and (await r.json()).get("assigned"):
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"worker not ready in {ready_timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def cloudevent(
    type_: str, data: dict[str, Any], *, source: str = "test/desk", id: str | None = None,
    subject: str | None = None, time_: str | None = None,
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
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | dict, list | None]]
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


async def read_topic(settings: Settings, topic: str, *, min_count: int = 0, timeout: float = 10.0) -> list[Any]:
    """Everything on a topic (from the start), waiting for at least ``min_count`` records."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
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


async def eventually(fn: Callable[[], Awaitable[T]], check: Callable[[T], bool], *,
                     timeout: float = 20.0, interval: float = 0.2) -> T:
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
