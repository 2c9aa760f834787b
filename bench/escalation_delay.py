"""How late escalations fire: deadline -> ``garda.case.escalated`` on pmi.cases.v1.

    .venv/bin/python -m bench.escalation_delay                 # 20 cases, timer 0.5 s and 1 s
    .venv/bin/python -m bench.escalation_delay --cases 40 --timer-interval 0.2

One real ``garda worker`` process per timer interval (``tests.integration.harness``), on an
EmbeddedBroker and a temporary EmbeddedPostgres, with the test policy
``tests/integration/policies/fast_sla.toml`` (critical: ack 3 s -> level 1, 6 s -> level 2).
``--cases`` critical incidents are published spread over ``--spread`` seconds (so their
deadlines fall at every phase of the timer), and every escalation (two per case) is timed
from its missed deadline (``event.missed_deadline`` in the event):

- ``detected``: the timer sent the ``garda.deadline.due`` command (the worker's log line
  "deadline command sent", its timestamp);
- ``handled``: the processor applied it (the escalated event's CloudEvents ``time`` = the
  processor's clock in the batch that applied the command);
- ``published``: the escalated record's Kafka timestamp (outbox relay -> broker);
- ``observed``: a consumer (fetch_max_wait_ms=10) received it.

What sets the delay: the timer interval (a deadline waits for the next tick: 0..interval,
mean interval/2), then one hop through garda.commands.v1 (produce + the worker consumer's
fetch, fetch_max_wait_ms=100 on Tansu, + the batch window ``batch_within``, 0.01 s), the batch
transaction, then the outbox publish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from infra.broker import EmbeddedBroker
from infra.kafka_admin import ensure_topics
from infra.postgres import EmbeddedPostgres
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import WorkerProcess, cloudevent, policy_file, publish_events

POLICY = policy_file("fast_sla.toml")


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _incident(wid: str) -> dict:
    data = {
        "incident_id": f"INC-{uuid.uuid4().hex[:8]}",
        "worker_id": wid,
        "category": "trafficking",
        "occurred_at": "2026-11-28T10:00:00Z",
        "country": "MY",
        "region": "MY-01",
        "reporter_type": "hotline",
    }
    return cloudevent("pmi.incident.reported", data, source="bench/hotline")


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p90": round(values[min(len(values) - 1, int(0.9 * len(values)))], 3),
        "max": round(values[-1], 3),
        "min": round(values[0], 3),
    }


async def run_one(
    broker: EmbeddedBroker,
    pg: EmbeddedPostgres,
    tmp: Path,
    *,
    cases: int,
    spread: float,
    interval: float,
) -> dict:
    prefix = f"b{uuid.uuid4().hex[:6]}."
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        partitions=3,
        group_id=f"{prefix}garda",
        session_timeout=6.0,
        timer_interval=interval,
        policy=POLICY,
    )
    await ensure_topics(settings.kafka_bootstrap, settings)
    url = await pg.create_database(f"esc_{uuid.uuid4().hex[:8]}")
    settings = Settings(**{**settings.__dict__, "database_url": url})
    worker = WorkerProcess(settings, tmp, f"worker-{interval}")
    await worker.start(ready_timeout=60)
    consumer = AIOKafkaConsumer(
        settings.topic(topics.CASES),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    rows: list[dict] = []
    try:
        wids = [f"W-BENCH-{i:03d}" for i in range(cases)]
        for wid in wids:
            await publish_events(settings, topics.INCIDENTS, [_incident(wid)])
            await asyncio.sleep(spread / cases)
        want = 2 * cases
        deadline = time.monotonic() + 30 + spread
        while len(rows) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            seen = datetime.now(UTC)
            for msgs in batch.values():
                for m in msgs:
                    ev = json.loads(m.value)
                    if ev["type"] != "garda.case.escalated":
                        continue
                    step = ev["data"]["event"]
                    missed = _parse(step["missed_deadline"])
                    rows.append(
                        {
                            "case_id": ev["data"]["case_id"],
                            "level": step["level"],
                            "missed": missed,
                            "handled": (_parse(ev["time"]) - missed).total_seconds(),
                            "published": (
                                datetime.fromtimestamp(m.timestamp / 1000, UTC) - missed
                            ).total_seconds(),
                            "observed": (seen - missed).total_seconds(),
                        }
                    )
    finally:
        await consumer.stop()
        await worker.stop()
        await pg.drop_database(url.rsplit("/", 1)[1])
    sent: dict[tuple[str, str], float] = {}
    for line in worker.log_text().splitlines():
        if '"deadline command sent"' not in line:
            continue
        rec = json.loads(line)
        cid = rec["command_id"].split(":")[1]
        key = (cid, rec["due_at"])
        sent.setdefault(key, (_parse(rec["timestamp"]) - _parse(rec["due_at"])).total_seconds())
    detected = [
        sent[k]
        for k in ((r["case_id"], r["missed"].isoformat().replace("+00:00", "Z")) for r in rows)
        if k in sent
    ]
    per_level = {lv: sum(1 for r in rows if r["level"] == lv) for lv in (1, 2)}
    return {
        "timer_interval": interval,
        "cases": cases,
        "escalations": len(rows),
        "per_level": per_level,
        "detected": _stats(detected),
        "handled": _stats([r["handled"] for r in rows]),
        "published": _stats([r["published"] for r in rows]),
        "observed": _stats([r["observed"] for r in rows]),
    }


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--spread", type=float, default=2.0, help="seconds to spread the cases over")
    p.add_argument(
        "--timer-interval",
        type=float,
        action="append",
        help="repeatable; default 0.5 and 1.0 (the production default)",
    )
    args = p.parse_args(argv)
    intervals = args.timer_interval or [0.5, 1.0]
    with tempfile.TemporaryDirectory(prefix="garda-escbench-") as d:
        tmp = Path(d)
        async with (
            EmbeddedBroker(tmp / "broker") as broker,
            EmbeddedPostgres(temporary=True, durable=False) as pg,
        ):
            results = [
                await run_one(broker, pg, tmp, cases=args.cases, spread=args.spread, interval=i)
                for i in intervals
            ]
    print(f"{'timer':>6} {'stage':<10} {'n':>4} {'p50':>7} {'p90':>7} {'max':>7} {'min':>7}")
    for r in results:
        for stage in ("detected", "handled", "published", "observed"):
            s = r[stage]
            if s:
                print(
                    f"{r['timer_interval']:>6} {stage:<10} {s['n']:>4} {s['p50']:>7} "
                    f"{s['p90']:>7} {s['max']:>7} {s['min']:>7}"
                )
        print(
            f"{'':>6} escalations {r['escalations']} of {2 * r['cases']} expected, "
            f"per level {r['per_level']}"
        )
    return 0 if all(r["escalations"] == 2 * r["cases"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
