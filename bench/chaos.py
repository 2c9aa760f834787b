"""``python -m bench.chaos``: crashes, outages and replays, with nothing lost or doubled.

Seeds N mixed events (the simulator's departures, arrivals, incidents and claims, then
responders' case actions on the cases they opened; about 1 % invalid on purpose), runs two
``garda worker`` processes against an embedded broker and PostgreSQL with deadlines of
seconds, and while they process injects faults:

- ``kill -9`` of a random worker at random moments (3 by default), restarted a second later;
- PostgreSQL stopped for ``--db-outage`` seconds (30 by default) and started again;
- the broker restarted: the embedded broker keeps nothing (memory storage), so a new one
  starts on the same port, the topics are created again and the producers republish
  everything they sent (a production Kafka cluster keeps its log and committed offsets
  through a broker restart: nothing is republished there, consumers resume from their
  committed offsets).

Afterwards it compares the read model with a reference computed from the same input by the
same pure handlers (``bench.chaos_plan``): every valid event processed exactly once, every
invalid one dead-lettered, per-worker state and every case equal (escalation fields aside),
each escalation level fired at most once per case and none missed, each worker's events of
one topic applied in offset order. It prints N, the faults, losses and duplicates, and the
time each fault took to recover from, and writes ``bench/results/chaos-<time>.json``.

Minutes, not part of the test suite: ``--quick`` (4,000 events, a 5 s outage) for a smoke
run; the default is 20,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from standardwebhooks.webhooks import Webhook

from bench.chaos_plan import (
    TIME_DEPENDENT_CASE_KEYS,
    TIME_DEPENDENT_WORKER_KEYS,
    Phase,
    Record,
    Reference,
    compare,
    journey_phases,
)
from handlers.model import Case, Worker
from handlers.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from infra.broker import EmbeddedBroker
from infra.db import Database, migrate
from infra.kafka_admin import ensure_topics
from infra.postgres import EmbeddedPostgres
from infra.processes import free_port, spawn, tail, terminate
from infra.settings import Settings
from infra.worker_process import worker_env

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FAST_SLA = {
    "critical": ("4s", "8s", "120s"),
    "high": ("6s", "12s", "180s"),
    "medium": ("8s", "16s", "240s"),
    "low": ("10s", None, "300s"),
}


def say(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def chaos_policy(path: Path) -> Path:
    """The default policy with the SLA clocks shortened to seconds."""
    lines = DEFAULT_POLICY_PATH.read_text().splitlines()
    out, current = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[sla."):
            current = stripped[5:-1]
            ack, level2, resolve = FAST_SLA[current]
            out += [line, f'ack = "{ack}"']
            if level2:
                out.append(f'level2 = "{level2}"')
            out.append(f'resolve = "{resolve}"')
            continue
        if current and stripped.split("=")[0].strip() in ("ack", "level2", "resolve"):
            continue
        if stripped.startswith("["):
            current = None
        out.append(line)
    out += [
        "",
        "[hooks]  # chaos: retries in seconds, so a receiver that was down catches up in the run",
        'retry_schedule = ["1s", "2s", "4s", "8s", "8s", "8s", "8s", "8s"]',
        'horizon = "30m"',
        'timeout = "5s"',
    ]
    path.write_text("\n".join(out) + "\n")
    load_policy(path)  # fail here, not in the workers
    return path


SECRET = "whsec_" + base64.b64encode(b"garda-chaos-receiver-secret-32by").decode()


class Receiver:
    """A webhook receiver that verifies every POST and counts it by ``webhook-id``; while
    ``down`` it answers 503 (and counts nothing)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, int] = {}
        self.refused = 0
        self.forged = 0
        self.down = False
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.down:
            self.refused += 1
            return web.Response(status=503)
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - any failure to verify is a forged delivery
            self.forged += 1
            return web.Response(status=400)
        wid = request.headers["webhook-id"]
        self.received[wid] = self.received.get(wid, 0) + 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def receivers_file(self, path: Path) -> Path:
        path.write_text(
            "[[receivers]]\n"
            'name = "chaos"\n'
            'type = "webhook"\n'
            f'url = "http://127.0.0.1:{self.port}/hook"\n'
            f'secret = "{SECRET}"\n'
        )
        return path


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the run started
    duration: float = 0.0  # how long the fault lasted (outage, restart)
    recovered_after: float | None = None  # fault over -> processing seen again (s)
    wall: float = field(default_factory=time.time)  # when it started (epoch seconds)
    # The longest time without any batch committed, from the fault to 30 s after it (s):
    # for a rebalance, the rejoin window.
    longest_stall: float | None = None


@dataclass
class Run:
    settings: Settings
    workdir: Path
    broker: EmbeddedBroker
    pg: EmbeddedPostgres
    workers: list[subprocess.Popen | None] = field(default_factory=list)
    receiver: Receiver | None = None
    faults: list[Fault] = field(default_factory=list)
    sent: list[Record] = field(default_factory=list)  # everything published, in order
    started: float = field(default_factory=time.monotonic)
    # Held while records are published or the broker is restarted and refilled, so that the
    # republished log keeps every topic's order.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, records: list[Record]) -> None:
        async with self.lock:
            self.sent += records
            await publish(self.settings, records)

    def env(self, name: str) -> dict[str, str]:
        env = worker_env(
            self.settings, free_port(), GARDA_DATA_DIR=str(self.workdir / f"data-{name}")
        )
        if self.receiver is not None:
            env["GARDA_RECEIVERS"] = str(self.receiver.receivers_file(self.workdir / "hooks.toml"))
        return env

    def start_worker(self, i: int) -> None:
        cmd = [sys.executable, "-m", "garda", "worker", "--wait", "120"]
        proc = spawn(cmd, self.workdir / f"worker-{i}.log", cwd=REPO, env=self.env(f"w{i}"))
        if i < len(self.workers):
            self.workers[i] = proc
        else:
            self.workers.append(proc)

    def check_alive(self) -> None:
        """Every worker exited on its own (not one we killed and restart): stop the run."""
        if self.workers and all(p is not None and p.poll() is not None for p in self.workers):
            logs = "\n".join(
                tail(self.workdir / f"worker-{i}.log", 15) for i in range(len(self.workers))
            )
            raise RuntimeError(f"every worker exited:\n{logs}")

    @property
    def url(self) -> str:
        url = self.settings.database_url
        if not url:
            raise ValueError("the chaos run needs a database URL")
        return url

    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def processed_count(url: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return -1
    try:
        return await conn.fetchval("SELECT count(*) FROM processed_events")
    finally:
        await conn.close()


async def publish(settings: Settings, records: list[Record], timeout: float = 120.0) -> None:
    """Publish in order; while the broker is away, retry as a real producer would."""
    deadline = time.monotonic() + timeout
    while True:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5
        )
        try:
            await producer.start()
            futures = [
                await producer.send(settings.topic(r.topic), value=r.value, key=r.key.encode())
                for r in records
            ]
            await asyncio.gather(*futures)
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            say(f"publish failed ({type(exc).__name__}); retrying")
            await asyncio.sleep(1.0)
        finally:
            await producer.stop()


async def wait_processed(run: Run, phase: Phase, timeout: float) -> None:
    """Until every valid record of the phase is processed and every invalid one dead-lettered."""
    idents = [r.ident.split("|", 1) for r in phase.valid]
    markers = [r.ident for r in phase.invalid]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        run.check_alive()
        try:
            conn = await asyncpg.connect(run.url, timeout=3)
            try:
                done = await conn.fetchval(
                    "SELECT count(*) FROM processed_events p JOIN unnest($1::text[], $2::text[])"
                    " AS x(source, id) ON p.source = x.source AND p.id = x.id",
                    [s for s, _ in idents],
                    [i for _, i in idents],
                )
                dead = await conn.fetchval(
                    "SELECT count(DISTINCT m) FROM deadletters d, unnest($1::text[]) AS m"
                    " WHERE position(m::bytea IN d.value) > 0",
                    markers,
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            done, dead = None, None
        if done is not None and done >= len(idents) and dead >= len(markers):
            return
        if (done, dead) != last:
            say(
                f"{phase.name}: {done}/{len(idents)} processed, {dead}/{len(markers)} dead-lettered"
            )
            last = (done, dead)
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{phase.name} not fully processed in {timeout:.0f} s")


async def recovery_time(run: Run, timeout: float = 180.0) -> float | None:
    """Seconds until the processed count grows again (None: nothing left to process)."""
    t0 = time.monotonic()
    before = await processed_count(run.url)
    while time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.25)
        now = await processed_count(run.url)
        if before < 0:
            before = now
            continue
        if now > before:
            return time.monotonic() - t0
    return None


async def kill9(run: Run, rnd: random.Random) -> Fault:
    i = rnd.randrange(len(run.workers))
    proc = run.workers[i]
    fault = Fault("kill -9 worker", run.elapsed())
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    say(f"kill -9 worker {i}")
    await asyncio.sleep(1.0)
    run.start_worker(i)
    fault.duration = 1.0
    fault.recovered_after = await recovery_time(run)
    return fault


async def db_outage(run: Run, seconds: float) -> Fault:
    fault = Fault("PostgreSQL stopped", run.elapsed(), seconds)
    say(f"stopping PostgreSQL for {seconds:g} s")
    await run.pg.stop()
    await asyncio.sleep(seconds)
    await run.pg.start()
    say("PostgreSQL started again")
    fault.recovered_after = await recovery_time(run)
    return fault


async def broker_restart(run: Run) -> Fault:
    fault = Fault("broker restarted (memory: republished)", run.elapsed())
    t0 = time.monotonic()
    say("restarting the broker (memory storage: it comes back empty)")
    async with run.lock:
        await run.broker.stop()
        await run.broker.start()
        await ensure_topics(run.settings.kafka_bootstrap, run.settings)
        await publish(run.settings, list(run.sent))
        fault.duration = time.monotonic() - t0
    say(f"broker back, {len(run.sent)} records republished in {fault.duration:.1f} s")
    fault.recovered_after = await recovery_time(run)
    return fault


async def rebalance(run: Run, extra: int) -> list[Fault]:
    """``extra`` more workers join the group, then leave again (SIGTERM): two rebalances."""
    base = len(run.workers)
    join = Fault(f"{extra} workers join ({base} -> {base + extra})", run.elapsed())
    say(join.kind)
    for i in range(base, base + extra):
        run.start_worker(i)
    join.recovered_after = await recovery_time(run)
    await asyncio.sleep(3.0)
    leave = Fault(f"{extra} workers leave ({base + extra} -> {base})", run.elapsed())
    say(leave.kind)
    for proc in run.workers[base:]:
        if proc is not None:
            await terminate(proc, 15)
    del run.workers[base:]
    leave.recovered_after = await recovery_time(run)
    return [join, leave]


async def receiver_outage(run: Run, seconds: float) -> Fault:
    fault = Fault("webhook receiver down (503)", run.elapsed(), seconds)
    assert run.receiver is not None
    say(f"webhook receiver answers 503 for {seconds:g} s")
    run.receiver.down = True
    await asyncio.sleep(seconds)
    run.receiver.down = False
    say("webhook receiver back")
    t0 = time.monotonic()
    before = sum(run.receiver.received.values())
    while time.monotonic() - t0 < 60 and sum(run.receiver.received.values()) == before:
        await asyncio.sleep(0.25)
    fault.recovered_after = time.monotonic() - t0
    return fault


async def inject(run: Run, args: argparse.Namespace, rnd: random.Random) -> None:
    """The fault schedule, spread over the run while the phases are processed."""
    await asyncio.sleep(3.0)
    for _ in range(args.kills):
        run.faults.append(await kill9(run, rnd))
        await asyncio.sleep(rnd.uniform(2.0, 6.0))
    if args.rebalance:
        run.faults += await rebalance(run, args.rebalance)
        await asyncio.sleep(2.0)
    if run.receiver is not None:
        run.faults.append(await receiver_outage(run, args.receiver_outage))
    run.faults.append(await db_outage(run, args.db_outage))
    await asyncio.sleep(3.0)
    if not args.no_broker_restart:
        run.faults.append(await broker_restart(run))


async def final_checks(run: Run, ref: Reference, phases: list[Phase]) -> dict[str, Any]:
    conn = await asyncpg.connect(run.url)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        workers = {
            r["worker_id"]: {
                k: v
                for k, v in Worker.from_doc(r["doc"]).to_doc().items()
                if k not in TIME_DEPENDENT_WORKER_KEYS
            }
            for r in await conn.fetch("SELECT worker_id, doc FROM workers")
        }
        cases = {
            r["case_id"]: {
                k: v
                for k, v in Case.from_doc(r["doc"]).to_doc().items()
                if k not in TIME_DEPENDENT_CASE_KEYS
            }
            for r in await conn.fetch("SELECT case_id, doc FROM cases")
        }
        valid = [r for p in phases for r in p.valid]
        processed = {
            f"{r['source']}|{r['id']}": r
            for r in await conn.fetch(
                'SELECT source, id, worker_id, topic, "offset", processed_at FROM processed_events'
            )
        }
        lost = [r.ident for r in valid if r.ident not in processed]
        invalid = [r for p in phases for r in p.invalid]
        dead = await conn.fetch(
            "SELECT m, count(*) AS n FROM deadletters d, unnest($1::text[]) AS m"
            " WHERE position(m::bytea IN d.value) > 0 GROUP BY m",
            [r.ident for r in invalid],
        )
        dead_n = {r["m"]: r["n"] for r in dead}
        escalations = await conn.fetch(
            "SELECT case_id, (detail->>'level')::int AS level, count(*) AS n FROM case_timeline"
            " WHERE type = 'garda.case.escalated' GROUP BY case_id, level"
        )
        missed = await conn.fetchval(
            "SELECT count(*) FROM cases WHERE next_due < now() - interval '5 seconds'"
        )
        # How late each escalation fired after it could first have fired: its deadline, or
        # the moment the case became known (a case opened from a backlog can be born overdue).
        late_rows = await conn.fetch(
            """SELECT e.at, (e.detail->>'missed_deadline')::timestamptz AS deadline,
                      (SELECT min(recorded_at) FROM case_timeline o WHERE o.case_id = e.case_id)
                        AS known
               FROM case_timeline e WHERE e.type = 'garda.case.escalated'"""
        )
    finally:
        await conn.close()
    windows = [
        (f.wall - 1.0, f.wall + f.duration + (f.recovered_after or 0.0) + 1.0) for f in run.faults
    ]
    conn = await asyncpg.connect(run.url)
    try:
        commits = [
            r["t"]
            for r in await conn.fetch(
                "SELECT DISTINCT extract(epoch FROM processed_at)::float8 AS t"
                " FROM processed_events ORDER BY 1"
            )
        ]
    finally:
        await conn.close()
    for f in run.faults:
        f.longest_stall = longest_stall(commits, f.wall, f.wall + f.duration + 30.0)
    lateness, calm = [], []
    for r in late_rows:
        due = max(r["deadline"], r["known"])
        late = (r["at"] - due).total_seconds()
        lateness.append(late)
        if not any(a <= due.timestamp() <= b for a, b in windows):
            calm.append(late)
    conn = await asyncpg.connect(run.url)
    try:
        position = {r.ident: i for i, r in enumerate(run.sent)}
        runs: dict[tuple[str, str], list[tuple[int, datetime]]] = {}
        for ident, row in processed.items():
            if ident in position:
                runs.setdefault((row["worker_id"], row["topic"]), []).append(
                    (position[ident], row["processed_at"])
                )
        # A worker's events of one topic must be applied in the order they were published:
        # a later one never in an earlier transaction.
        order = sum(
            1
            for seq in runs.values()
            for (_, a), (_, b) in zip(sorted(seq), sorted(seq)[1:], strict=False)
            if b < a
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(run.url)
    try:
        # A delivery created in the last minute (a resolve deadline firing while the checks
        # run) is in flight, not stuck.
        deliveries = {
            r["delivery_id"]: r["status"] if r["status"] != "pending" or r["old"] else "in flight"
            for r in await conn.fetch(
                "SELECT delivery_id, status, created_at < now() - interval '60 seconds' AS old"
                " FROM hook_deliveries"
            )
        }
    finally:
        await conn.close()
    received = run.receiver.received if run.receiver is not None else {}
    delivered = {d for d, st in deliveries.items() if st == "delivered"}
    hooks = {
        "deliveries": len(deliveries),
        "delivered": len(delivered),
        "not_delivered": {
            st: sum(1 for v in deliveries.values() if v == st)
            for st in sorted(set(deliveries.values()) - {"delivered", "in flight"})
        },
        "in_flight": sum(1 for v in deliveries.values() if v == "in flight"),
        "received": len(received),
        "delivered_not_received": len(delivered - set(received)),
        "received_unknown": len(set(received) - set(deliveries)),
        "received_twice": sum(1 for n in received.values() if n > 1),
        "refused_while_down": run.receiver.refused if run.receiver is not None else 0,
        "forged": run.receiver.forged if run.receiver is not None else 0,
    }
    republished = any(f.kind.startswith("broker") for f in run.faults)
    expected_dead = 2 if republished else 1
    return {
        "valid_events": len(valid),
        "invalid_events": len(invalid),
        "lost": len(lost),
        "first_lost": lost[:3],
        "deadletters_missing": sum(1 for r in invalid if r.ident not in dead_n),
        "deadletters_doubled": sum(1 for n in dead_n.values() if n > expected_dead),
        "workers": compare(ref.worker_docs(), workers),
        "cases": compare(ref.case_docs(), cases),
        "escalations": sum(r["n"] for r in escalations),
        "escalations_doubled": sum(1 for r in escalations if r["n"] > 1),
        "escalations_missed": missed,
        "escalation_lateness_s": spread(lateness),
        "escalation_lateness_outside_faults_s": spread(calm),
        "out_of_order": order,
        "hooks": hooks,
    }


def longest_stall(commits: list[float], start: float, end: float) -> float | None:
    """The longest gap between batch commits (epoch seconds, sorted) over [start, end]."""
    before = [t for t in commits if t < start][-1:]
    inside = [t for t in commits if start <= t <= end]
    points = before + inside
    if len(points) < 2:
        return None
    return round(max(b - a for a, b in zip(points, points[1:], strict=False)), 2)


def spread(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


async def _until_none(url: str, timeout: float, count_sql: str, waiting: str) -> None:
    """Poll ``count_sql`` every 2 s until it counts nothing (or the timeout); each nonzero
    count is said with ``waiting`` (``{n}`` is the count). A wait, not a retry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = await asyncpg.connect(url)
        try:
            n = await conn.fetchval(count_sql)
        finally:
            await conn.close()
        if not n:
            return
        say(waiting.format(n=n))
        await asyncio.sleep(2.0)


async def deliveries_done(url: str, timeout: float) -> None:
    """Wait until no webhook delivery is pending (or the timeout)."""
    await _until_none(
        url,
        timeout,
        "SELECT count(*) FROM hook_deliveries WHERE status = 'pending'",
        "{n} webhook deliveries pending",
    )


async def quiet_escalations(url: str, timeout: float) -> None:
    """Wait until no open case has a deadline more than 2 s overdue (or the timeout)."""
    await _until_none(
        url,
        timeout,
        "SELECT count(*) FROM cases WHERE next_due < now() - interval '2 seconds'",
        "{n} cases past a deadline, waiting for their escalations",
    )


@contextlib.asynccontextmanager
async def stack(prefix: str = "garda-chaos-") -> AsyncIterator[tuple[Run, Policy]]:
    """An embedded broker and PostgreSQL, the topics, the schema, and a webhook receiver
    (the workers are started by the caller; everything is stopped on the way out)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o711)  # run as root, PostgreSQL runs as a system user that must enter it
    policy_path = chaos_policy(workdir / "chaos_policy.toml")
    policy = load_policy(policy_path)
    broker = EmbeddedBroker(workdir / "broker", port=free_port())
    pg = EmbeddedPostgres(workdir / "pg", port=free_port(), durable=False)
    await broker.start()
    await pg.start()
    run: Run | None = None
    try:
        url = await pg.create_database("chaos")
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            database_url=url,
            policy=policy_path,
            topic_prefix=f"chaos{uuid.uuid4().hex[:6]}.",
            partitions=6,
            group_id="chaos",
            session_timeout=6.0,
            timer_interval=0.5,
        )
        await ensure_topics(settings.kafka_bootstrap, settings)
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            await migrate(conn)
        run = Run(settings, workdir, broker, pg)
        run.receiver = Receiver()
        await run.receiver.start()
        say(f"work dir {workdir}")
        yield run, policy
    finally:
        if run is not None:
            for proc in run.workers:
                if proc is not None:
                    await terminate(proc, 10)
            if run.receiver is not None:
                await run.receiver.stop()
        await pg.stop()
        await broker.stop()


async def chaos(args: argparse.Namespace) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    async with stack() as (run, policy):
        url = run.url
        say(f"N={args.events}")
        phases = journey_phases(args.seed, args.events)
        ref = Reference(policy)
        for i in range(args.workers):
            run.start_worker(i)
        faults = asyncio.create_task(inject(run, args, rnd))
        t0 = time.monotonic()
        for phase in phases:
            await run.send(phase.records)
            ref.apply(phase.records)
            await wait_processed(run, phase, args.timeout)
        actions = ref.actions(args.seed)
        await run.send(actions.records)
        ref.apply(actions.records)
        phases.append(actions)
        await wait_processed(run, actions, args.timeout)
        await faults
        # The broker restart republished everything: let the workers drain it again.
        for phase in phases:
            await wait_processed(run, phase, args.timeout)
        await quiet_escalations(url, 300.0)
        await deliveries_done(url, 120.0)
        elapsed = time.monotonic() - t0
        checks = await final_checks(run, ref, phases)
        return {
            "n": sum(len(p.records) for p in phases),
            "seed": args.seed,
            "workers": args.workers,
            "seconds": round(elapsed, 1),
            "faults": [f.__dict__ for f in run.faults],
            "checks": checks,
        }


def verdict(report: dict[str, Any]) -> list[str]:
    """What went wrong (empty: nothing lost, nothing doubled)."""
    c = report["checks"]
    bad = []
    for key in ("lost", "deadletters_missing", "deadletters_doubled", "escalations_doubled"):
        if c[key]:
            bad.append(f"{key}: {c[key]}")
    if c["escalations_missed"]:
        bad.append(f"escalations missed: {c['escalations_missed']}")
    if c["out_of_order"]:
        bad.append(f"events applied out of order: {c['out_of_order']}")
    h = c["hooks"]
    # A POST repeated under the same webhook-id (a worker killed mid-request) is what the
    # receiver dedupes on: reported, not a failure. A delivery never received is one.
    for key in ("delivered_not_received", "received_unknown", "forged"):
        if h[key]:
            bad.append(f"webhooks {key}: {h[key]}")
    if h["not_delivered"]:
        bad.append(f"webhook deliveries not delivered: {h['not_delivered']}")
    for what in ("workers", "cases"):
        d = c[what]
        if d["missing"] or d["extra"] or d["differing"]:
            bad.append(f"{what} differ from the reference: {d}")
    return bad


def stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, a CI runner) ends the run like Ctrl-C: the stack's ``finally``
    stops the workers, PostgreSQL and the broker instead of leaving them behind."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--db-outage", type=float, default=30.0, help="seconds PostgreSQL is down")
    p.add_argument("--no-broker-restart", action="store_true")
    p.add_argument(
        "--receiver-outage", type=float, default=20.0, help="seconds the webhook receiver is down"
    )
    p.add_argument("--rebalance", type=int, default=2, help="workers that join and leave (0: none)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=600.0, help="per phase (s)")
    p.add_argument("--quick", action="store_true", help="4,000 events, a 5 s outage")
    args = p.parse_args(argv)
    if args.quick:
        args = replace_ns(args, events=4_000, db_outage=5.0, receiver_outage=8.0)
    stop_on_sigterm()
    report = asyncio.run(chaos(args))
    problems = verdict(report)
    report["verdict"] = problems or ["nothing lost, nothing doubled"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"chaos-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    c = report["checks"]
    print(f"N = {report['n']} events ({c['valid_events']} valid, {c['invalid_events']} invalid)")
    for f in report["faults"]:
        rec = f["recovered_after"]
        rec_s = f"{rec:.1f} s" if rec is not None else "n/a (nothing left to process)"
        stall = f["longest_stall"]
        print(
            f"  {f['kind']:<42} at {f['at']:6.1f} s, lasted {f['duration']:5.1f} s, "
            f"processing again after {rec_s}, longest stall "
            + (f"{stall:.1f} s" if stall is not None else "n/a")
        )
    print(
        f"lost {c['lost']}, dead letters missing {c['deadletters_missing']}, doubled "
        f"{c['deadletters_doubled']}; escalations {c['escalations']} (doubled "
        f"{c['escalations_doubled']}, missed {c['escalations_missed']}); "
        f"out of order {c['out_of_order']}"
    )
    print(f"escalation lateness (s): {c['escalation_lateness_s']}")
    print(
        f"  with its deadline outside a fault window: {c['escalation_lateness_outside_faults_s']}"
    )
    print(f"webhooks: {c['hooks']}")
    print(f"workers vs reference: {c['workers']}")
    print(f"cases vs reference: {c['cases']}")
    print("verdict: " + "; ".join(report["verdict"]))
    print(f"report: {out}")
    return 1 if problems else 0


def replace_ns(ns: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(ns), **changes})


if __name__ == "__main__":
    sys.exit(main())
