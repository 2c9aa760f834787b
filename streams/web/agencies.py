"""``GET /api/agencies``: the agency (P3MI) scorecard (``handlers.agencies``), for
headquarters (the supervision unit); a post's token gets 403.

Query: ``since`` (a date, an ISO time or a duration back from now such as ``90d``; default
the policy's ``agencies.window``), ``license`` (one licence).
"""

from __future__ import annotations

from datetime import UTC, datetime

from faust.web import Request, Response

from errors import ConfigError
from handlers.agencies import crosses
from infra.agencies import scorecards
from infra.reports import parse_since
from infra.tokens import Scope
from streams.web.common import ApiView, token_required


class AgencyList(ApiView):
    @token_required
    async def get(self, request: Request, scope: Scope) -> Response:
        if not scope.hq:
            return self.fail(403, "the agency scorecard is for headquarters tokens")
        q = request.query
        unknown = set(q) - {"since", "license"}
        if unknown:
            return self.fail(400, f"unknown filter(s): {', '.join(sorted(unknown))}")
        policy = self.runtime.policy
        now = datetime.now(UTC)
        try:
            since = parse_since(q.get("since"), policy, now)
        except ConfigError as exc:
            return self.fail(400, str(exc))
        async with self.runtime.db.pool.acquire() as conn:
            cards = await scorecards(conn, since, [q["license"]] if q.get("license") else None)
        rule = policy.prevention.agencies
        return self.reply(
            {
                "since": since.isoformat().replace("+00:00", "Z"),
                "alert_rate_per_100": rule.alert_rate_per_100,
                "alert_min_placements": rule.alert_min_placements,
                "agencies": [{**c.public(), "over_threshold": crosses(c, policy)} for c in cards],
            }
        )


ROUTES = {"/api/agencies": AgencyList}
