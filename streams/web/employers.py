"""``GET /api/employers``: the employer watchlist (``handlers.employers``, ``infra.employers``).

Query: ``watchlisted=true|false`` (absent: every employer known), ``country`` (ISO alpha-2).
A headquarters token sees every employer with the cases behind each entry (case id, worker,
category, severity, status, substantiated, opened/resolved). A post's token sees only the
employers in its posts' countries, with the number of cases behind a listing, not the
cases (they belong to other posts' workers too).
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response

from infra.tokens import Scope
from streams.web.common import ApiView, token_required

BOOLEANS = {"true": True, "false": False}


def visible_countries(scope: Scope, policy: Any) -> frozenset[str] | None:
    """The countries a token sees employers of (None: all, headquarters)."""
    if scope.hq:
        return None
    return frozenset(
        p.country for pid, p in policy.posts.items() if pid in scope.posts and p.country
    )


class EmployerList(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        q = request.query
        unknown = set(q) - {"watchlisted", "country"}
        if unknown:
            return self.fail(400, f"unknown filter(s): {', '.join(sorted(unknown))}")
        flag = q.get("watchlisted")
        if flag is not None and flag not in BOOLEANS:
            return self.fail(400, "watchlisted must be true or false")
        countries = visible_countries(scope, self.runtime.policy)
        where: list[str] = ["true"]
        args: list[Any] = []
        if flag is not None:
            args.append(BOOLEANS[flag])
            where.append(f"watchlisted = ${len(args)}")
        if q.get("country"):
            args.append(q["country"].strip().upper())
            where.append(f"country = ${len(args)}")
        if countries is not None:
            args.append(sorted(countries))
            where.append(f"country = ANY(${len(args)}::text[])")
        async with self.runtime.db.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT employer_key, name, country, region, watchlisted, watchlisted_at, cases"
                f" FROM employers WHERE {' AND '.join(where)}"
                " ORDER BY watchlisted DESC, country, name LIMIT 1000",
                *args,
            )
            behind: dict[str, list[dict[str, Any]]] = {}
            if scope.hq and rows:
                ids = sorted({c for r in rows for c in r["cases"]})
                for c in await conn.fetch(
                    "SELECT case_id, employer_key, worker_id, category, severity, status,"
                    " substantiated, opened_at, resolved_at FROM employer_cases"
                    " WHERE case_id = ANY($1::text[]) ORDER BY opened_at",
                    ids,
                ):
                    behind.setdefault(c["employer_key"], []).append(
                        {k: c[k] for k in c.keys() if k != "employer_key"}
                    )
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "employer_key": r["employer_key"],
                "name": r["name"],
                "country": r["country"],
                "region": r["region"],
                "watchlisted": r["watchlisted"],
                "watchlisted_at": r["watchlisted_at"],
                "case_count": len(r["cases"]),
            }
            if scope.hq:
                item["cases"] = behind.get(r["employer_key"], [])
            out.append(item)
        return self.reply({"employers": out})


ROUTES = {"/api/employers": EmployerList}
