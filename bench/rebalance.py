"""``python -m bench.rebalance``: escalations stay on time while workers join and leave.

Steady traffic (``--rate`` critical incidents per second, each a new worker: acknowledge in
4 s, level 2 at 8 s under the chaos policy) runs for ``--duration`` seconds against two
``garda worker`` processes; every ``--every`` seconds the group changes: two more workers
join, then leave again (SIGTERM), so the partitions move four times or more under load.

Afterwards: each escalation level fired at most once per case and none missed (no deadline
scan skipped or doubled for a partition in motion; ``commands_per_escalation`` counts the
deadline commands the workers sent per escalation, from their logs: 1 when no partition was
scanned by two owners), how late escalations fired after their deadline, overall and for
deadlines outside the rejoin windows, and each rejoin window's length.

The rejoin window is measured from the traffic, not assumed: a partition stalls while the
incidents published to it wait more than ``WAIT`` s to be processed; a stall belongs to the
membership change before it; the window of a change lasts until the last of its stalls
ended. A deadline is inside when it falls in a stall of its own partition (from the last
incident processed on time before it, to ``MARGIN`` s after its end); deadlines between two
stalls, and in stalls no change explains, count as outside. Late escalations outside are
split into the scan's delay (deadline -> command sent, from the workers' logs) and the
command's round trip (sent -> applied).

The rebalance window is measured from the workers' own logs ("partitions revoked" /
"released" / "assigned", ``streams.app``): per change, from the first revocation (or a
leaving worker's release) to the last assignment, across every round the change caused.
Lateness outside it is reported next to the traffic-based figure (docs/chaos.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.chaos import RESULTS, Record, Run, publish, say, spread, stack, stop_on_sigterm
from infra.processes import terminate
from schemas import topics


def incident(i: int) -> Record:
    wid = f"PMI-RB-{i:06d}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": f"rb-{i}",
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


async def traffic(run: Run, rate: float, duration: float) -> dict[str, float]:
    """Publish ``rate`` incidents a second; returns each one's id and publish time (epoch)."""
    published: dict[str, float] = {}
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < duration:
        due = int((time.monotonic() - t0) * rate)
        if due > sent:
            # Stamped before the publish, like the incidents' own time (their deadlines count
            # from it): a publish slowed by a loaded machine (a producer starting) is time the
            # incident waited, not time it did not exist.
            at = time.time()
            await publish(run.settings, [incident(i) for i in range(sent, due)])
            published.update((f"rb-{i}", at) for i in range(sent, due))
            sent = due
        await asyncio.sleep(0.1)
    return published


WAIT = 1.0  # an incident not processed this long after it was published: its partition stalled
MARGIN = 0.5  # seconds added at both ends of a stall (the traffic's resolution per partition)
AFTER_CHANGE = 30.0  # a stall that begins this long after a membership change is the change's


def stalls(waits: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (start, end) intervals in which a partition was not processed: merged runs of
    incidents that waited more than ``WAIT`` s (``waits``: (published, processed) each), from
    the publish time of the last incident before the run that did not wait (the partition
    stopped after it was processed: the traffic cannot date the stop more closely) to the
    processing of the run's last incident."""
    out: list[tuple[float, float]] = []
    last_on_time: float | None = None
    for a, b in sorted(waits):
        if b - a <= WAIT:
            last_on_time = a
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            start = last_on_time if last_on_time is not None else a - MARGIN
            out.append((max(start, out[-1][1]) if out else start, b))
    return out


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


def assignment_changes(workdir: Path) -> list[tuple[float, str, str, int]]:
    """(epoch, worker log, "revoked" or "assigned", generation) of every "partitions
    revoked" / "released" (a worker stopping) / "assigned" line in the worker logs
    (``streams.app``), in time order."""
    out: list[tuple[float, str, str, int]] = []
    for path in sorted(workdir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"partitions ' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            event = rec.get("event")
            if event not in ("partitions revoked", "partitions released", "partitions assigned"):
                continue
            # a worker that stops (leaves) releases its partitions: in motion from then on
            kind = "assigned" if event == "partitions assigned" else "revoked"
            out.append((at, path.stem, kind, int(rec.get("generation") or 0)))
    return sorted(out)


def actions_waits(workdir: Path) -> list[float]:
    """How long each deadline-scan wait for case actions that lasted 0.5 s or more held its
    partitions ("deadline scan stops waiting for case actions", ``streams.periodic``)."""
    out: list[float] = []
    for path in sorted(workdir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"deadline scan stops waiting for case actions"' in line:
                try:
                    out.append(float(json.loads(line)["waited_s"]))
                except (ValueError, KeyError):
                    continue
    return out


def rebalance_windows(
    events: list[tuple[float, str, str, int]], changes: list[float]
) -> list[tuple[float, float, int] | None]:
    """Per membership change, its rebalance window (start, end, rounds): from the first
    revocation logged by any worker to the last assignment, across every rebalance round the
    change caused (the workers joining or leaving one after the other: two or more rounds),
    up to the next change; None when no worker logged one. A worker leaving stops scanning
    and processing when it stops ("released"), before the group rebalances: that starts the
    window too."""
    out: list[tuple[float, float, int] | None] = []
    for i, at in enumerate(changes):
        nxt = changes[i + 1] - 1.0 if i + 1 < len(changes) else float("inf")
        mine = [e for e in events if at - 1.0 <= e[0] < nxt]
        revoked = [e[0] for e in mine if e[2] == "revoked"]
        assigned = [e[0] for e in mine if e[2] == "assigned" and revoked and e[0] >= revoked[0]]
        if not revoked or not assigned:
            out.append(None)
            continue
        rounds = len({e[3] for e in mine if e[2] == "assigned"})
        out.append((revoked[0], assigned[-1], rounds))
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
        published = await sent_task
        sent = len(published)
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
            waits: dict[int, list[tuple[float, float]]] = {}
            for r in await conn.fetch(
                "SELECT id, partition, extract(epoch FROM processed_at)::float8 AS t"
                " FROM processed_events WHERE source = 'chaos/hotline'"
            ):
                if r["id"] in published:
                    waits.setdefault(r["partition"], []).append((published[r["id"]], r["t"]))
        finally:
            await conn.close()
        workdir = run.workdir
    sends = deadline_sends(workdir)
    # The rebalance windows, from the workers' own assignment logs (exact, group-wide): the
    # deadline scan does not run from a revocation to the assignment (by design), so every
    # deadline due then waits for the end of the window, on every partition.
    reb = rebalance_windows(assignment_changes(workdir), changes)
    reb_windows = [(w[0], w[1]) for w in reb if w is not None]
    # The rejoin window of a change: from the change until every partition is processed in
    # time again (the end of its last stall, ``stalls``, that began before AFTER_CHANGE s
    # after the change). A deadline is inside the window when it falls in one of the
    # partition's stalls (to MARGIN s after its end: the first scan after it); between two
    # stalls a partition is processed normally, and its deadlines count as outside. Stalls
    # that no change explains are not excused (their escalations count as outside).
    windows: dict[int, list[tuple[float, float]]] = {}
    by_change: dict[int, dict[int, list[tuple[float, float]]]] = {}
    spans: list[float] = []
    per_partition_stalled: list[float] = []
    stall_counts: list[int] = []
    unexplained = 0
    for partition, w in waits.items():
        for a, b in stalls(w):
            # the stall belongs to the latest change before it began (its start, the last
            # on-time incident, may precede a leave by the traffic's spacing)
            owner = [i for i, at in enumerate(changes) if at - 2.0 <= a <= at + AFTER_CHANGE]
            if owner:
                windows.setdefault(partition, []).append((a, b + MARGIN))
                by_change.setdefault(owner[-1], {}).setdefault(partition, []).append((a, b))
            else:
                unexplained += 1
    for i, at in enumerate(changes):
        longest, count = 0.0, 0
        for mine in by_change.get(i, {}).values():
            count += len(mine)
            per_partition_stalled.append(sum(b - a for a, b in mine))
            longest = max(longest, max(b for _, b in mine) - at)
        spans.append(round(longest, 2))
        stall_counts.append(count)
    # The previous definition, kept for comparison: per partition and change, the longest
    # gap between batch commits from 1 s before the change to 30 s after it.
    gap_windows: dict[int, list[tuple[float, float]]] = {}
    for at in changes:
        for partition, times in commits.items():
            gap = widest_gap(times, at - 1.0, at + 30.0)
            if gap is not None:
                gap_windows.setdefault(partition, []).append((gap[0] - 0.5, gap[1] + 0.5))
    per_level: dict[tuple[str, int], int] = {}
    late_all: list[float] = []
    late_calm: list[float] = []
    late_calm_gap: list[float] = []
    late_calm_reb: list[float] = []
    scan_calm_reb: list[float] = []
    trip_calm_reb: list[float] = []
    after_reb: dict[str, int] = {}  # late (> 1 s) outside: seconds since the last window ended
    scan_calm: list[float] = []  # outside the window: deadline -> first command sent
    trip_calm: list[float] = []  # outside the window: last command sent -> escalated
    since_change: dict[str, int] = {}  # late (> 1 s) escalations by seconds since a change
    worst: list[dict[str, Any]] = []
    for r in rows:
        per_level[(r["case_id"], r["level"])] = per_level.get((r["case_id"], r["level"]), 0) + 1
        due = max(r["deadline"], r["known"])
        late = (r["at"] - due).total_seconds()
        late_all.append(late)
        t = due.timestamp()
        if not any(a <= t <= b for a, b in gap_windows.get(r["partition"], [])):
            late_calm_gap.append(late)
        before = [at for at in changes if at <= t]
        times = sends.get((r["case_id"], r["level"]), [])
        fired = r["at"].timestamp()
        before_fired = [x for x in times if x <= fired]
        in_stall = any(a <= t <= b for a, b in windows.get(r["partition"], []))
        if not any(a <= t <= b for a, b in reb_windows):
            late_calm_reb.append(late)
            if before_fired:
                scan_calm_reb.append(before_fired[0] - t)
                trip_calm_reb.append(fired - before_fired[-1])
            if late > 1.0:
                ended = [b for _, b in reb_windows if b < t]
                key = (
                    f"{int(t - ended[-1]) // 5 * 5}-{int(t - ended[-1]) // 5 * 5 + 5}s"
                    if ended
                    else "before any"
                )
                after_reb[key] = after_reb.get(key, 0) + 1
                rw = reb[len(before) - 1] if before else None
                worst.append(
                    {
                        "case": r["case_id"],
                        "level": r["level"],
                        "partition": r["partition"],
                        "late_s": round(late, 2),
                        "due_after_change_s": round(t - before[-1], 2) if before else None,
                        "rebalance_after_change_s": (
                            (round(rw[0] - before[-1], 2), round(rw[1] - before[-1], 2))
                            if rw
                            else None
                        ),
                        "sent_after_due_s": [round(x - t, 2) for x in times],
                        "in_a_stall": in_stall,
                    }
                )
        if not in_stall:
            late_calm.append(late)
            if before_fired:
                scan_calm.append(before_fired[0] - t)
                trip_calm.append(fired - before_fired[-1])
        if late > 1.0:
            key = (
                f"{int(t - before[-1]) // 5 * 5}-{int(t - before[-1]) // 5 * 5 + 5}s"
                if before
                else "before any change"
            )
            since_change[key] = since_change.get(key, 0) + 1
    worst.sort(key=lambda w: -w["late_s"])
    return {
        "rate": args.rate,
        "duration": args.duration,
        "incidents": sent,
        "cases": opened,
        "membership_changes": len(changes),
        "rejoin_windows_s": spans,
        "partition_stalled_per_change_s": spread(per_partition_stalled),
        "stalls_per_change": stall_counts,
        "stalls_without_a_change": unexplained,
        "rebalance_windows_s": [round(w[1] - w[0], 2) if w else None for w in reb],
        "rebalance_start_after_change_s": [
            round(w[0] - at, 2) if w else None for w, at in zip(reb, changes, strict=True)
        ],
        "rebalance_rounds_per_change": [w[2] if w else 0 for w in reb],
        "actions_waits_over_half_a_second_s": spread(actions_waits(workdir)),
        "escalations": len(rows),
        "expected_escalations": 2 * opened,
        "doubled": sum(1 for n in per_level.values() if n > 1),
        "missed": missed,
        "lateness_s": spread(late_all),
        "lateness_outside_rejoin_s": spread(late_calm),
        "late_over_1s_outside_rejoin": sum(1 for x in late_calm if x > 1.0),
        "lateness_outside_widest_commit_gap_s": spread(late_calm_gap),
        "late_by_time_since_change": dict(sorted(since_change.items())),
        "lateness_outside_rebalance_s": spread(late_calm_reb),
        "late_over_1s_outside_rebalance": sum(1 for x in late_calm_reb if x > 1.0),
        "late_outside_rebalance_by_time_since_it_ended": dict(sorted(after_reb.items())),
        "outside_rebalance_scan_delay_s": spread(scan_calm_reb),
        "outside_rebalance_command_round_trip_s": spread(trip_calm_reb),
        "outside_scan_delay_s": spread(scan_calm),
        "outside_command_round_trip_s": spread(trip_calm),
        "commands_per_escalation": dict(sorted(Counter(len(v) for v in sends.values()).items())),
        "worst_outside": worst[:12],
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
    stop_on_sigterm()
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
