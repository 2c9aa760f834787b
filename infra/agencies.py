"""The agency (P3MI) scorecard's state in PostgreSQL (``handlers.agencies`` has the rules).

In each batch's transaction (:func:`sync`, called by the processor after the handlers and
before ``write_batch``): the placements (``agency_placements``: one row per journey with a
licence) and the attributed cases (``agency_cases``) of the batch's touched workers are
upserted; for each licence whose rows changed, under a per-licence advisory lock (7304,
ascending, after the partition, worker and employer locks) the scorecard is computed before
and after the upsert, and a licence that crosses the alert rule (``handlers.agencies.crosses``)
gets ``garda.alert.agency-threshold`` to headquarters. Upserts make a replayed batch change
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
from handlers.model import Aggregate, OutputEvent, stable_id
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
    conn: asyncpg.Connection, aggregates: Iterable[Aggregate], policy: Policy, now: datetime
) -> list[OutputEvent]:
    """Write the batch's placements and attributed cases; return the crossing alerts."""
    placements: list[tuple[Any, ...]] = []
    cases: list[tuple[Any, ...]] = []
    for agg in aggregates:
        w = agg.worker
        if w.p3mi_license and w.departed_at is not None:
            placements.append(
                (w.worker_id, w.departed_at, w.p3mi_license, w.country, w.non_procedural)
            )
        for c in agg.cases.values():
            lic = c.detail.get(LICENSE)
            if isinstance(lic, str):
                cases.append(
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
    touched = sorted({p[2] for p in placements} | {c[1] for c in cases})
    if not touched:
        return []
    since = now - policy.prevention.agencies.window
    # One lock per licence, in ascending order, in one statement.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(7304, hashtext(l)) FROM unnest($1::text[]) AS l", touched
    )
    before = await _counts(conn, touched, since)
    changed: set[str] = set()
    if placements:
        rows = await conn.fetch(
            """INSERT INTO agency_placements (worker_id, departed_at, license, country,
                   non_procedural)
               SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[],
                   $5::bool[])
               ON CONFLICT (worker_id, departed_at) DO UPDATE SET license = EXCLUDED.license,
                   country = EXCLUDED.country, non_procedural = EXCLUDED.non_procedural
               WHERE (agency_placements.license, agency_placements.country,
                      agency_placements.non_procedural)
                     IS DISTINCT FROM (EXCLUDED.license, EXCLUDED.country,
                      EXCLUDED.non_procedural)
               RETURNING license""",
            *[list(col) for col in zip(*placements, strict=True)],
        )
        changed |= {r["license"] for r in rows}
    if cases:
        rows = await conn.fetch(
            """INSERT INTO agency_cases (case_id, license, worker_id, kind, category, severity,
                   status, opened_at, resolved_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                   $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
               ON CONFLICT (case_id) DO UPDATE SET severity = EXCLUDED.severity,
                   category = EXCLUDED.category, status = EXCLUDED.status,
                   resolved_at = EXCLUDED.resolved_at
               WHERE (agency_cases.severity, agency_cases.category, agency_cases.status,
                      agency_cases.resolved_at)
                     IS DISTINCT FROM (EXCLUDED.severity, EXCLUDED.category, EXCLUDED.status,
                      EXCLUDED.resolved_at)
               RETURNING license""",
            *[list(col) for col in zip(*cases, strict=True)],
        )
        changed |= {r["license"] for r in rows}
    alerts: list[OutputEvent] = []
    crossed = sorted(changed)
    if not crossed:
        return alerts
    after = await _counts(conn, crossed, since)
    for lic in crossed:
        if crosses(after[lic], policy) and not crosses(before[lic], policy):
            alerts.append(_alert(after[lic], policy))
    return alerts


async def _counts(
    conn: asyncpg.Connection, licenses: list[str], since: datetime
) -> dict[str, Scorecard]:
    """Placements and protection cases per licence in the window (what the alert rule needs),
    for many licences in two statements."""
    out = {lic: Scorecard(license=lic) for lic in licenses}
    for r in await conn.fetch(
        "SELECT license, count(*) AS n FROM agency_placements"
        " WHERE license = ANY($1::text[]) AND departed_at >= $2 GROUP BY license",
        licenses,
        since,
    ):
        out[r["license"]].placements = r["n"]
    for r in await conn.fetch(
        "SELECT license, count(*) AS n FROM agency_cases WHERE license = ANY($1::text[])"
        " AND opened_at >= $2 AND kind = 'protection' GROUP BY license",
        licenses,
        since,
    ):
        out[r["license"]].cases = r["n"]
    return out


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
