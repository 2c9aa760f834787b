"""The employer watchlist's cross-worker state in PostgreSQL (``handlers.employers`` has the
rules).

The processor is per worker; employers are not. In each batch's transaction, after the
handlers ran, :func:`sync` writes what the batch's aggregates say about employers:

1. ``employers``: every employer a touched worker is placed with (name, country, latest
   region), upserted.
2. ``employer_cases``: every case linked to an employer (``case.detail["employer"]``), with
   its category, status, substantiated flag and dates, upserted by case id (a replay writes
   the same row); the processor passes only the cases whose rows the batch changes (an
   unchanged case's row was written with it). Both upserts are one statement.
3. For the employers whose cases changed, under per-employer advisory locks (7303, taken in
   ascending key order, in one statement, after the partition and worker locks, so
   processors never deadlock): the rule is recomputed from *all* each one's
   ``employer_cases`` rows that can count (``watchlist_decision``; the rows of all of them
   read at once);
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
from handlers.model import Case, OutputEvent, Worker
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
    conn: asyncpg.Connection, workers: Iterable[Worker], cases: Iterable[Case], policy: Policy
) -> list[OutputEvent]:
    """Write the employer facts of the batch's touched workers and of its cases (the
    processor passes those whose rows changed: an unchanged case's row was written with
    it); return the watchlist change events."""
    employers: dict[str, dict[str, Any]] = {}
    rows: list[tuple[Any, ...]] = []
    for w in workers:
        emp = w.employer
        if emp and emp.get("key"):
            employers[emp["key"]] = emp
    for case in cases:
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
    if not employers and not rows:
        return []
    items = sorted(employers.items())
    # Both upserts in one statement (one round trip); the case rows' RETURNING gives the
    # employers whose cases changed.
    changed = await conn.fetch(
        """WITH e AS (
               INSERT INTO employers (employer_key, name, country, region)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               ON CONFLICT (employer_key) DO UPDATE
                   SET region = coalesce(EXCLUDED.region, employers.region), updated_at = now()
                   WHERE employers.region IS DISTINCT FROM coalesce(EXCLUDED.region, employers.region))
           INSERT INTO employer_cases (case_id, employer_key, worker_id, category, severity,
               status, substantiated, opened_at, resolved_at)
           SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
               $10::text[], $11::bool[], $12::timestamptz[], $13::timestamptz[])
           ON CONFLICT (case_id) DO UPDATE SET category = EXCLUDED.category,
               severity = EXCLUDED.severity, status = EXCLUDED.status,
               substantiated = EXCLUDED.substantiated, resolved_at = EXCLUDED.resolved_at
           WHERE (employer_cases.category, employer_cases.severity, employer_cases.status,
                  employer_cases.substantiated, employer_cases.resolved_at)
                 IS DISTINCT FROM (EXCLUDED.category, EXCLUDED.severity, EXCLUDED.status,
                  EXCLUDED.substantiated, EXCLUDED.resolved_at)
           RETURNING employer_key""",
        [k for k, _ in items],
        [e.get("name") or "" for _, e in items],
        [e.get("country") or "" for _, e in items],
        [e.get("region") for _, e in items],
        *(_columns(rows, 9)),
    )
    keys = sorted({r["employer_key"] for r in changed})
    if not keys:
        return []
    # The employers' locks in one statement, in ascending key order; then their stored rows
    # and cases, read once for all of them.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(7303, hashtext(k)) FROM unnest($1::text[]) AS k", keys
    )
    stored_rows = {
        r["employer_key"]: r
        for r in await conn.fetch(
            "SELECT employer_key, name, country, region, watchlisted, cases FROM employers"
            " WHERE employer_key = ANY($1::text[])",
            keys,
        )
    }
    by_key: dict[str, list[EmployerCase]] = {k: [] for k in keys}
    # Only the rows that can count (``handlers.employers.counting``: substantiated, resolved,
    # a listed category): the others never change the decision, and they grow with the log.
    for r in await conn.fetch(
        "SELECT employer_key, case_id, category, substantiated, opened_at, status"
        " FROM employer_cases WHERE employer_key = ANY($1::text[])"
        " AND substantiated AND status = 'resolved' AND category = ANY($2::text[])",
        keys,
        sorted(policy.prevention.employers.categories),
    ):
        by_key[r["employer_key"]].append(
            EmployerCase(
                r["case_id"], r["category"], r["substantiated"], r["opened_at"], r["status"]
            )
        )
    events: list[OutputEvent] = []
    for key in keys:
        stored = stored_rows.get(key)
        if stored is None:  # a case linked to an employer no worker row named (old data)
            continue
        listed, behind = watchlist_decision(by_key[key], policy)
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


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as column arrays for ``unnest`` (empty columns for no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]
