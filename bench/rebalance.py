"""``python -m bench.rebalance``: escalations stay on time while workers join and leave.

Steady traffic (``--rate`` critical incidents per second, each a new worker: acknowledge in
4 s, level 2 at 8 s under the chaos policy) runs for ``--duration`` seconds against two
``garda worker`` processes; every ``--every`` seconds the group changes: two more workers
join, then leave again (SIGTERM), so the partitions move four times or more under load.

Afterwards: each escalation level fired at most once per case and none missed (no deadline
scan skipped or doubled for a partition in motion), how late escalations fired after their
deadline, overall and for deadlines outside a rejoin window, and each rejoin window's length
(the longest time without any batch committed after a membership change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.chaos import RESULTS, Record, Run, publish, say, spread, stack
from infra.processes import terminate
from schemas import topics


def incident(i: int) -> Record:
    wid = f"PMI-RB-{i:06d}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "chaos/hotline",
            "type": "pmi.incident.reported",
            "subject": wid,
            "time": now,
            "datacontenttype": "application/json",
            "data": {
                "incident_id": f"INC-RB-{i}",
                "worker_id": wid,
                "category": "trafficking",
                "occurred_at": now,
                "country": "MY",
                "region": "MY-01",
                "reporter_type": "hotline",
            },
        }
    ).encode()
    return Record(topics.INCIDENTS, wid, value, True, f"chaos/hotline|{i}")


async def traffic(run: Run, rate: float, duration: float) -> int:
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < duration:
        due = int((time.monotonic() - t0) * rate)
        if due > sent:
            await publish(run.settings, [incident(i) for i in range(sent, due)])
            sent = due
        await asyncio.sleep(0.1)
    return sent


async def membership(run: Run, every: float, duration: float, extra: int) -> list[float]:
    """Two more workers join, then leave, every ``every`` s; returns the change times."""
    changes: list[float] = []
    t0 = time.monotonic()
    base = len(run.workers)
    while time.monotonic() - t0 + every < duration:
        await asyncio.sleep(every)
        changes.append(time.time())
        if len(run.workers) == base:
            say(f"{extra} workers join")
            for i in range(base, base + extra):
                run.start_worker(i)
        else:
            say(f"{extra} workers leave")
            for proc in run.workers[base:]:
                if proc is not None:
                    await terminate(proc, 15)
            del run.workers[base:]
    return changes


def deadline_sends(workdir: Path) -> dict[tuple[str, int], list[float]]:
    """(case_id, level) -> epoch times a deadline command was sent for it (worker logs)."""
    out: dict[tuple[str, int], list[float]] = {}
    for path in sorted(workdir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"deadline command sent"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            parts = rec.get("command_id", "").split(":")
            if len(parts) < 4 or parts[0] != "deadline":
                continue
            at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            out.setdefault((parts[1], int(parts[3])), []).append(at)
    for times in out.values():
        times.sort()
    return out


def widest_gap(times: list[float], start: float, end: float) -> tuple[float, float] | None:
    """The widest (a, b) between consecutive commit times around [start, end]."""
    before = [t for t in times if t < start][-1:]
    after = [t for t in times if t > end][:1]
    points = before + [t for t in times if start <= t <= end] + after
    if len(points) < 2:
        return None
    return max(zip(points, points[1:], strict=False), key=lambda ab: ab[1] - ab[0])


async def rebalance(args: argparse.Namespace) -> dict[str, Any]:
    async with stack("garda-rebalance-") as (run, _policy):
        for i in range(args.workers):
            run.start_worker(i)
        await asyncio.sleep(12.0)  # the group forms before the clock starts
        sent_task = asyncio.create_task(traffic(run, args.rate, args.duration))
        changes = await membership(run, args.every, args.duration, args.extra)
        sent = await sent_task
        deadline = time.monotonic() + 90
        conn = await asyncpg.connect(run.url)
        try:
            while time.monotonic() < deadline:
                # Every case climbs to level 2 within 8 s of opening (nobody acknowledges).
                climbing = await conn.fetchval(
                    "SELECT count(*) FROM cases WHERE escalation_level < 2"
                )
                opened = await conn.fetchval("SELECT count(*) FROM cases")
                if not climbing and opened >= sent:
                    break
                await asyncio.sleep(1.0)
            rows = await conn.fetch(
                """SELECT e.case_id, (e.detail->>'level')::int AS level, e.at,
                          (SELECT partition FROM cases c WHERE c.case_id = e.case_id) AS partition,
                          (e.detail->>'missed_deadline')::timestamptz AS deadline,
                          (SELECT min(recorded_at) FROM case_timeline o
                            WHERE o.case_id = e.case_id) AS known
                   FROM case_timeline e WHERE e.type = 'garda.case.escalated'"""
            )
            opened = await conn.fetchval("SELECT count(*) FROM cases")
            missed = await conn.fetchval(
                "SELECT count(*) FROM cases WHERE next_due < now() - interval '5 seconds'"
            )
            commits: dict[int, list[float]] = {}
            for r in await conn.fetch(
                "SELECT DISTINCT partition, extract(epoch FROM processed_at)::float8 AS t"
                " FROM processed_events WHERE partition IS NOT NULL ORDER BY 2"
            ):
                commits.setdefault(r["partition"], []).append(r["t"])
        finally:
            await conn.close()
        workdir = run.workdir
    sends = deadline_sends(workdir)
    # A partition's rejoin window after a change: its longest gap between batch commits
    # from the change to 30 s after it (traffic keeps every partition busy, so a gap longer
    # than a fraction of a second means nobody processed it).
    windows: dict[int, list[tuple[float, float]]] = {}
    lengths = []
    for at in changes:
        longest = 0.0
        for partition, times in commits.items():
            gap = widest_gap(times, at - 1.0, at + 30.0)
            if gap is not None:
                windows.setdefault(partition, []).append(gap)
                longest = max(longest, gap[1] - gap[0])
        lengths.append(round(longest, 2))
    per_level: dict[tuple[str, int], int] = {}
    late_all, late_calm = [], []
    scan_calm: list[float] = []  # outside the window: deadline -> first command sent
    trip_calm: list[float] = []  # outside the window: last command sent -> escalated
    since_change: dict[str, int] = {}  # late (> 1 s) escalations by seconds since a change
    for r in rows:
        per_level[(r["case_id"], r["level"])] = per_level.get((r["case_id"], r["level"]), 0) + 1
        due = max(r["deadline"], r["known"])
        late = (r["at"] - due).total_seconds()
        late_all.append(late)
        # Outside the rejoin window: the deadline falls neither in a window of no commits
        # after a change (measured) nor within a second of its start.
        t = due.timestamp()
        if not any(a - 0.5 <= t <= b + 0.5 for a, b in windows.get(r["partition"], [])):
            late_calm.append(late)
            times = sends.get((r["case_id"], r["level"]), [])
            fired = r["at"].timestamp()
            before_fired = [s for s in times if s <= fired]
            if before_fired:
                scan_calm.append(before_fired[0] - t)
                trip_calm.append(fired - before_fired[-1])
        if late > 1.0:
            before = [at for at in changes if at <= t]
            key = (
                f"{int(t - before[-1]) // 5 * 5}-{int(t - before[-1]) // 5 * 5 + 5}s"
                if before
                else "before any change"
            )
            since_change[key] = since_change.get(key, 0) + 1
    return {
        "rate": args.rate,
        "duration": args.duration,
        "incidents": sent,
        "cases": opened,
        "membership_changes": len(changes),
        "rejoin_windows_s": lengths,
        "escalations": len(rows),
        "expected_escalations": 2 * opened,
        "doubled": sum(1 for n in per_level.values() if n > 1),
        "missed": missed,
        "lateness_s": spread(late_all),
        "lateness_outside_rejoin_s": spread(late_calm),
        "late_by_time_since_change": dict(sorted(since_change.items())),
        "outside_scan_delay_s": spread(scan_calm),
        "outside_command_round_trip_s": spread(trip_calm),
        "commands_per_escalation": dict(sorted(Counter(len(v) for v in sends.values()).items())),
        "stalls_over_1s_per_change": [
            sum(
                1
                for times in commits.values()
                for a, b in zip(times, times[1:], strict=False)
                if b - a > 1.0 and at - 1.0 <= b and a <= at + 30.0
            )
            for at in changes
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.rebalance", description=__doc__.split("\n")[0]
    )
    p.add_argument("--rate", type=float, default=20.0, help="critical incidents per second")
    p.add_argument("--duration", type=float, default=90.0)
    p.add_argument("--every", type=float, default=15.0, help="seconds between group changes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--extra", type=int, default=2, help="workers that join and leave")
    args = p.parse_args(argv)
    report = asyncio.run(rebalance(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"rebalance-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for k, v in report.items():
        print(f"{k}: {v}")
    print(f"report: {out}")
    return 1 if report["doubled"] or report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
