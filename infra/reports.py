"""``garda report agencies [--since DATE|DURATION] [--csv]``: the agency (P3MI) scorecard
for the supervision unit, from the read model (``infra.agencies.scorecards``)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from errors import ConfigError
from handlers.agencies import Scorecard
from handlers.policy import Policy, parse_duration

COLUMNS = (
    "license",
    "placements",
    "cases",
    "cases_per_100",
    "non_procedural",
    "median_days_to_resolve",
    "claims_rejected",
    "by_category",
    "by_severity",
)


def parse_since(value: str | None, policy: Policy, now: datetime) -> datetime:
    """``--since``: a date (YYYY-MM-DD, midnight UTC), an ISO time, or a duration back from
    now ("90d"); absent: the policy's ``agencies.window``."""
    if not value:
        return now - policy.prevention.agencies.window
    text = value.strip()
    try:
        if len(text) == 10:
            d = datetime.fromisoformat(text)
            return d.replace(tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        return now - parse_duration(text, "--since")
    except ConfigError as exc:
        raise ConfigError(
            f"--since: expected a date (2026-01-01), an ISO time or a duration (90d), got {value!r}"
        ) from exc


def _breakdown(card: Scorecard, which: str) -> str:
    parts = card.public()[which]
    return " ".join(f"{k}={v['cases']}" for k, v in parts.items())


def render(cards: list[Scorecard], *, as_csv: bool) -> str:
    rows = [
        [
            c.license,
            c.placements,
            c.cases,
            "" if c.cases_per_100 is None else c.cases_per_100,
            c.non_procedural,
            "" if c.median_days_to_resolve is None else c.median_days_to_resolve,
            c.claims_rejected,
            _breakdown(c, "by_category"),
            _breakdown(c, "by_severity"),
        ]
        for c in cards
    ]
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return out.getvalue()
    table = [list(COLUMNS[:7]), *[[str(v) for v in r[:7]] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(7)]
    return (
        "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in table)
        + "\n"
    )
