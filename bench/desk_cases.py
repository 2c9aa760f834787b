"""Many cases at once, straight into the ``cases`` table with ``COPY``: for the desk's paging
test and its query benchmark (``bench.desk_paging``), where going through Kafka would take
minutes for what the queue query needs in a second.

Rules decided here:
- The mix is the one a busy season could give: posts weighted (Malaysia, Taiwan, Hong Kong
  and the Gulf heavier), most cases open, a share acknowledged, reopened or resolved, a few
  escalated to level 1 or 2 (``escalated_to`` set as the processor sets it), every
  severity. Deadlines come from the policy's SLA, so the rows are what the rules write.
- ``opened_at`` falls on whole ten minutes, so many cases share a deadline and the keyset's
  tie-break on ``case_id`` is exercised.
- Seeded: the same ``(n, seed)`` gives the same cases.
- The rows carry no ``partition``: a running worker's timer never escalates them, so a test
  paging through them sees them hold still.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import asyncpg

from handlers.model import Case
from handlers.policy import Policy
from handlers.routing import escalation_target
from infra.store import CASE_COLUMNS, case_row

COLUMNS = (*CASE_COLUMNS, "updated_at")
HEAVY = {"KJRI-JOHOR-BAHRU": 6, "KBRI-KUALA-LUMPUR": 6, "KDEI-TAIPEI": 8, "KJRI-HONG-KONG": 8}
CATEGORIES = {
    "critical": ["detention", "trafficking", "sexual_violence"],
    "high": ["employer_violence", "lost_contact", "accident"],
    "medium": ["unpaid_wages", "document_withheld", "illness"],
    "low": ["wants_to_go_home", "other"],
}
STATUSES = (("open", 55), ("acknowledged", 15), ("reopened", 5), ("resolved", 25))


def synthetic_cases(
    n: int, policy: Policy, *, seed: int = 7, now: datetime | None = None
) -> list[Case]:
    """``n`` cases over the policy's posts, opened within the last 30 days."""
    rnd = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    posts = sorted(policy.posts)
    weights = [HEAVY.get(p, 1) for p in posts]
    statuses = [s for s, _ in STATUSES]
    status_w = [w for _, w in STATUSES]
    out: list[Case] = []
    for i in range(n):
        post = rnd.choices(posts, weights)[0]
        severity = rnd.choices(["critical", "high", "medium", "low"], [5, 20, 50, 25])[0]
        sla = policy.sla[severity]
        opened = now - timedelta(minutes=10 * rnd.randrange(0, 30 * 24 * 6))
        status = rnd.choices(statuses, status_w)[0]
        level = rnd.choices([0, 1, 2], [85, 10, 5])[0] if status != "resolved" else 0
        escalated_to = escalation_target(policy, post, level) if level else None
        acked = opened + timedelta(minutes=rnd.randrange(5, 600)) if status != "open" else None
        out.append(
            Case(
                case_id=f"CASE-B{i:07d}",
                worker_id=f"PMI-B{rnd.randrange(10**8):08d}",
                kind="protection",
                category=rnd.choice(CATEGORIES[severity]),
                severity=severity,
                post_id=post,
                opened_at=opened,
                status=status,
                escalation_level=level,
                ack_due=opened + sla.ack,
                resolve_due=opened + sla.resolve,
                country=policy.posts[post].country,
                acknowledged_at=acked,
                resolved_at=acked + timedelta(hours=2) if status == "resolved" and acked else None,
                updated_at=now,
                escalated_to=escalated_to,
            )
        )
    return out


def _next_due(c: Case) -> datetime | None:
    if c.status == "resolved":
        return None
    return c.resolve_due if c.status == "acknowledged" else c.ack_due


async def copy_cases(conn: asyncpg.Connection, cases: list[Case]) -> int:
    """``COPY`` the cases into ``cases``; returns how many. ``conn`` is a plain asyncpg
    connection (its default jsonb codec takes text). ``ANALYZE`` after, so the planner knows
    the table as it is."""
    records = [
        # no partition: no worker's timer picks these rows up
        (*case_row(c, _next_due(c), None, json.dumps(c.to_doc())), c.updated_at)
        for c in cases
    ]
    await conn.copy_records_to_table(
        "cases", records=records, columns=list(COLUMNS), schema_name="public"
    )
    await conn.execute("ANALYZE cases")
    return len(records)
