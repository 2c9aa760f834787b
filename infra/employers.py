"""The employer watchlist's cross-worker state in PostgreSQL (``handlers.employers`` has the
rules).

The processor is per worker; employers are not. In each batch's transaction, after the
handlers ran, :func:`sync` writes what the batch's aggregates say about employers:

1. ``employers``: every employer a touched worker is placed with (name, country, latest
   region), upserted.
2. ``employer_cases``: every case linked to an employer (``case.detail["employer"]``), with
   its category, status, substantiated flag and dates, upserted by case id (a replay writes
   the same row).
3. For each employer whose cases changed, under a per-employer advisory lock (7303, taken in
   ascending key order after the partition and worker locks, so processors never deadlock):
   the rule is recomputed from *all* its ``employer_cases`` rows (``watchlist_decision``);
   when the result differs from the stored one, the row is updated and a
   ``garda.employer.watchlisted``/``delisted`` event joins the batch's outbox.

Order and replays: the decision is a function of the set of case rows, which upserts make
idempotent, so the order in which workers' batches commit, a redelivered batch or
``garda rebuild`` reach the same listing. The lock serialises two processors touching one
employer, so a change is published once; the event id is derived from the employer, the
change and the cases behind it, so the outbox drops a re-publication.

:func:`load_watchlisted` gives the processor the watchlisted keys among the employers a
batch's departures and arrivals name, before the handlers run (a listing made by the same
batch is seen from the next batch on).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from handlers.employers import (
    EMPLOYER,
    EmployerCase,
    employer_key,
    watchlist_decision,
    watchlist_event,
)
from handlers.model import Aggregate, OutputEvent
from handlers.policy import Policy
from schemas.envelope import Envelope

JOURNEY_TYPES = {
    "pmi.departure.recorded": "destination_country",
    "pmi.arrival.reported": "country",
}


def batch_employer_keys(envelopes: Iterable[Envelope]) -> list[str]:
    """The employer keys the batch's departures and arrivals name."""
    keys: set[str] = set()
    for env in envelopes:
        field = JOURNEY_TYPES.get(env.type)
        if field is None:
            continue
        key = employer_key(env.data.get("employer_name"), env.data.get(field))
        if key is not None:
            keys.add(key)
    return sorted(keys)


async def load_watchlisted(conn: asyncpg.Connection, keys: Sequence[str]) -> frozenset[str]:
    if not keys:
        return frozenset()
    rows = await conn.fetch(
        "SELECT employer_key FROM employers WHERE watchlisted AND employer_key = ANY($1::text[])",
        list(keys),
    )
    return frozenset(r["employer_key"] for r in rows)


async def sync(
    conn: asyncpg.Connection, aggregates: Iterable[Aggregate], policy: Policy
) -> list[OutputEvent]:
    """Write the batch's employer facts; return the watchlist change events."""
    employers: dict[str, dict[str, Any]] = {}
    rows: list[tuple[Any, ...]] = []
    for agg in aggregates:
        emp = agg.worker.employer
        if emp and emp.get("key"):
            employers[emp["key"]] = emp
        for case in agg.cases.values():
            key = case.detail.get(EMPLOYER)
            if not isinstance(key, str):
                continue
            sub = case.detail.get("substantiated")
            rows.append(
                (
                    case.case_id,
                    key,
                    case.worker_id,
                    case.category,
                    case.severity,
                    case.status,
                    sub if isinstance(sub, bool) else None,
                    case.opened_at,
                    case.resolved_at,
                )
            )
    if employers:
        items = sorted(employers.items())
        await conn.execute(
            """INSERT INTO employers (employer_key, name, country, region)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               ON CONFLICT (employer_key) DO UPDATE
                   SET region = coalesce(EXCLUDED.region, employers.region), updated_at = now()
                   WHERE employers.region IS DISTINCT FROM coalesce(EXCLUDED.region, employers.region)""",
            [k for k, _ in items],
            [e.get("name") or "" for _, e in items],
            [e.get("country") or "" for _, e in items],
            [e.get("region") for _, e in items],
        )
    if not rows:
        return []
    changed = await conn.fetch(
        """INSERT INTO employer_cases (case_id, employer_key, worker_id, category, severity,
               status, substantiated, opened_at, resolved_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
               $6::text[], $7::bool[], $8::timestamptz[], $9::timestamptz[])
           ON CONFLICT (case_id) DO UPDATE SET category = EXCLUDED.category,
               severity = EXCLUDED.severity, status = EXCLUDED.status,
               substantiated = EXCLUDED.substantiated, resolved_at = EXCLUDED.resolved_at
           WHERE (employer_cases.category, employer_cases.severity, employer_cases.status,
                  employer_cases.substantiated, employer_cases.resolved_at)
                 IS DISTINCT FROM (EXCLUDED.category, EXCLUDED.severity, EXCLUDED.status,
                  EXCLUDED.substantiated, EXCLUDED.resolved_at)
           RETURNING employer_key""",
        *[list(col) for col in zip(*rows, strict=True)],
    )
    keys = sorted({r["employer_key"] for r in changed})
    events: list[OutputEvent] = []
    for key in keys:
        await conn.execute("SELECT pg_advisory_xact_lock(7303, hashtext($1))", key)
        stored = await conn.fetchrow(
            "SELECT employer_key, name, country, region, watchlisted, cases FROM employers"
            " WHERE employer_key = $1",
            key,
        )
        if stored is None:  # a case linked to an employer no worker row named (old data)
            continue
        cases = [
            EmployerCase(
                r["case_id"], r["category"], r["substantiated"], r["opened_at"], r["status"]
            )
            for r in await conn.fetch(
                "SELECT case_id, category, substantiated, opened_at, status FROM employer_cases"
                " WHERE employer_key = $1",
                key,
            )
        ]
        listed, behind = watchlist_decision(cases, policy)
        if listed == stored["watchlisted"] and (
            not listed or sorted(behind) == sorted(stored["cases"])
        ):
            continue
        await conn.execute(
            """UPDATE employers SET watchlisted = $2, cases = $3,
                   watchlisted_at = CASE WHEN $2 THEN coalesce(watchlisted_at, now()) END,
                   updated_at = now()
               WHERE employer_key = $1""",
            key,
            listed,
            behind,
        )
        if listed != stored["watchlisted"]:
            employer = {k: stored[k] for k in ("name", "country", "region")} | {"key": key}
            events.append(
                watchlist_event(
                    employer, listed, behind if listed else list(stored["cases"]), policy
                )
            )
    return events
