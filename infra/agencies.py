"""The agency (P3MI) scorecard's state in PostgreSQL (``handlers.agencies`` has the rules).

In each batch's transaction (:func:`sync`, called by the processor after the handlers and
before ``write_batch``): the placements (``agency_placements``: one row per journey with a
licence) and the attributed cases (``agency_cases``) of the batch's workers and cases whose
rows changed are upserted (an unchanged row's facts were written with it); for each licence
whose rows changed, under a per-licence advisory lock (7304, ascending, after the partition,
worker and employer locks) the counts are taken before and after the upsert (three
statements in all: the locks, the upserts with the counts before them, the counts after),
and a licence that crosses the alert rule (``handlers.agencies.crosses``) gets
``garda.alert.agency-threshold`` to headquarters. Upserts make a replayed batch change
no row, so it crosses nothing; the alert's id is derived from the licence and the counts that
crossed, so a re-publication is dropped by the outbox.

:func:`scorecards` is the read side (``GET /api/agencies``, ``garda report agencies``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from handlers.agencies import LICENSE, CaseRow, Scorecard, crosses, scorecard
from handlers.model import Case, OutputEvent, Worker, stable_id
from handlers.policy import Policy
from schemas import topics

_CASE_SQL = (
    "SELECT kind, category, severity, opened_at, resolved_at FROM agency_cases"
    " WHERE license = $1 AND opened_at >= $2"
)


async def _card(conn: asyncpg.Connection, license: str, since: datetime) -> Scorecard:
    placed = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE non_procedural) AS np"
        " FROM agency_placements WHERE license = $1 AND departed_at >= $2",
        license,
        since,
    )
    cases = [
        CaseRow(r["kind"], r["category"], r["severity"], r["opened_at"], r["resolved_at"])
        for r in await conn.fetch(_CASE_SQL, license, since)
    ]
    rejected = await conn.fetchval(
        "SELECT count(DISTINCT c.claim_id) FROM claims c"
        " JOIN agency_placements p ON p.worker_id = c.worker_id"
        " WHERE p.license = $1 AND p.departed_at >= $2 AND c.status = 'rejected'",
        license,
        since,
    )
    return scorecard(
        license,
        placements=placed["n"],
        non_procedural=placed["np"],
        cases=cases,
        claims_rejected=rejected or 0,
    )


async def sync(
    conn: asyncpg.Connection,
    workers: Iterable[Worker],
    cases: Iterable[Case],
    policy: Policy,
    now: datetime,
) -> list[OutputEvent]:
    """Write the placements and attributed cases of the batch's workers and cases whose rows
    changed (the processor passes those: an unchanged row's facts were written with it);
    return the crossing alerts."""
    placements: list[tuple[Any, ...]] = []
    attributed: list[tuple[Any, ...]] = []
    for w in workers:
        if w.p3mi_license and w.departed_at is not None:
            placements.append(
                (w.worker_id, w.departed_at, w.p3mi_license, w.country, w.non_procedural)
            )
    for c in cases:
        lic = c.detail.get(LICENSE)
        if isinstance(lic, str):
            attributed.append(
                (
                    c.case_id,
                    lic,
                    c.worker_id,
                    c.kind,
                    c.category,
                    c.severity,
                    c.status,
                    c.opened_at,
                    c.resolved_at,
                )
            )
    touched = sorted({p[2] for p in placements} | {c[1] for c in attributed})
    if not touched:
        return []
    since = now - policy.prevention.agencies.window
    # One lock per licence, in ascending order, in one statement.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(7304, hashtext(l)) FROM unnest($1::text[]) AS l", touched
    )
    # Both upserts in one statement; its snapshot is taken before they run, so the counts it
    # returns for the licences whose rows changed are those before the batch.
    before = {
        r["license"]: (r["placements"], r["cases"])
        for r in await conn.fetch(
            _UPSERT_SQL, *_columns(placements, 5), *_columns(attributed, 9), since
        )
    }
    alerts: list[OutputEvent] = []
    if not before:
        return alerts
    after = await _counts(conn, sorted(before), since)
    for lic in sorted(before):
        card = _card_of(lic, after[lic])
        if crosses(card, policy) and not crosses(_card_of(lic, before[lic]), policy):
            alerts.append(_alert(card, policy))
    return alerts


def _card_of(license: str, counts: tuple[int, int]) -> Scorecard:
    """The part of a scorecard the alert rule reads: placements and protection cases."""
    return Scorecard(license=license, placements=counts[0], cases=counts[1])


# Per licence in $1, the placements and protection cases in the window ($2): what the alert
# rule needs, for many licences in one statement.
_COUNTS = """(SELECT count(*) FROM agency_placements p
               WHERE p.license = l.license AND p.departed_at >= {since}) AS placements,
           (SELECT count(*) FROM agency_cases c
               WHERE c.license = l.license AND c.opened_at >= {since}
                 AND c.kind = 'protection') AS cases"""

_UPSERT_SQL = f"""WITH p AS (
       INSERT INTO agency_placements (worker_id, departed_at, license, country, non_procedural)
       SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bool[])
       ON CONFLICT (worker_id, departed_at) DO UPDATE SET license = EXCLUDED.license,
           country = EXCLUDED.country, non_procedural = EXCLUDED.non_procedural
       WHERE (agency_placements.license, agency_placements.country,
              agency_placements.non_procedural)
             IS DISTINCT FROM (EXCLUDED.license, EXCLUDED.country, EXCLUDED.non_procedural)
       RETURNING license),
   c AS (
       INSERT INTO agency_cases (case_id, license, worker_id, kind, category, severity, status,
           opened_at, resolved_at)
       SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
           $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[])
       ON CONFLICT (case_id) DO UPDATE SET severity = EXCLUDED.severity,
           category = EXCLUDED.category, status = EXCLUDED.status,
           resolved_at = EXCLUDED.resolved_at
       WHERE (agency_cases.severity, agency_cases.category, agency_cases.status,
              agency_cases.resolved_at)
             IS DISTINCT FROM (EXCLUDED.severity, EXCLUDED.category, EXCLUDED.status,
              EXCLUDED.resolved_at)
       RETURNING license)
   SELECT l.license, {_COUNTS.format(since="$15")}
   FROM (SELECT license FROM p UNION SELECT license FROM c) AS l"""


async def _counts(
    conn: asyncpg.Connection, licenses: list[str], since: datetime
) -> dict[str, tuple[int, int]]:
    """(placements, protection cases) per licence in the window (what the alert rule needs),
    for many licences in one statement."""
    return {
        r["license"]: (r["placements"], r["cases"])
        for r in await conn.fetch(
            f"SELECT l.license, {_COUNTS.format(since='$2')} FROM unnest($1::text[]) AS l(license)",
            licenses,
            since,
        )
    }


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as column arrays for ``unnest`` (empty columns for no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def _alert(card: Scorecard, policy: Policy) -> OutputEvent:
    rule = policy.prevention.agencies
    data = {
        "alert": "agency-threshold",
        "worker_id": None,
        "post_id": policy.headquarters,
        "severity": "medium",
        "license": card.license,
        "placements": card.placements,
        "cases": card.cases,
        "cases_per_100": card.cases_per_100,
        "alert_rate_per_100": rule.alert_rate_per_100,
        "alert_min_placements": rule.alert_min_placements,
        "window_days": rule.window.days,
    }
    return OutputEvent(
        topic=topics.ALERTS,
        type="garda.alert.agency-threshold",
        key=card.license,
        data=data,
        id=stable_id(card.license, str(card.placements), str(card.cases), prefix="agency-"),
        subject=card.license,
    )


async def scorecards(
    conn: asyncpg.Connection, since: datetime, licenses: list[str] | None = None
) -> list[Scorecard]:
    """Every licence's scorecard over [since, now] (or the given licences'), worst first."""
    if licenses is None:
        rows = await conn.fetch(
            "SELECT DISTINCT license FROM agency_placements WHERE departed_at >= $1"
            " UNION SELECT DISTINCT license FROM agency_cases WHERE opened_at >= $1",
            since,
        )
        licenses = sorted(r["license"] for r in rows)
    cards = [await _card(conn, lic, since) for lic in licenses]
    cards.sort(key=lambda c: (-(c.cases_per_100 or 0.0), -c.placements, c.license))
    return cards
