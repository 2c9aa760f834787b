"""The policy: every number and table the rules use (design §5), from a TOML file.

The default policy ships as ``handlers/default_policy.toml``; ``GARDA_POLICY`` replaces it.
Durations in the file are strings such as "90s", "15m", "1h", "7d".

Shape (implementation: load/validate functions below are being written):
- ``Policy.dedup_window``: timedelta (default 72 h)
- ``Policy.category_severity``: dict category -> severity
- ``Policy.posts``: dict post_id -> Post
- ``Policy.headquarters``: post id of headquarters (e.g. "HQ")
- ``Policy.sla``: dict severity -> Sla (ack, level2, resolve)
- ``Policy.non_procedural``: NonProcedural (revoked_licenses, moratoria, critical_reasons)
- ``Policy.coverage``: Coverage (pre_placement, post_placement, gap_categories, ...)
- ``Policy.claims``: ClaimsPolicy (stall)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class Post:
    post_id: str  # e.g. "KJRI-JOHOR-BAHRU"
    name: str  # "KJRI Johor Bahru"
    country: str | None  # ISO alpha-2; None for headquarters
    mission_kind: str  # "embassy" | "consulate" | "economic_office" | "headquarters"
    labour_post: str  # "attache" | "technical_staff" | "labour_section" | "none"
    regions: tuple[str, ...] = ()  # ISO 3166-2 codes this post covers (regional consulates)
    head_of_mission: str | None = None  # post id of the mission head for the escalation ladder
    protection_desk: bool = False  # True when cases go to the mission's protection desk


@dataclass(frozen=True)
class Sla:
    ack: timedelta  # ack_due = opened_at + ack; missed -> escalation level 1
    level2: timedelta | None  # opened_at + level2 unacknowledged -> level 2 (None: no level 2)
    resolve: timedelta  # resolve_due = opened_at + resolve; missed -> one level up


@dataclass(frozen=True)
class Moratorium:
    country: str
    effective_from: date
    effective_until: date | None = None  # None: still active
    employer_types: tuple[str, ...] = ("household",)


@dataclass(frozen=True)
class NonProcedural:
    revoked_licenses: frozenset[str] = frozenset()
    moratoria: tuple[Moratorium, ...] = ()
    critical_reasons: frozenset[str] = frozenset({"moratorium_destination", "non_work_visa"})
    licensed_schemes: frozenset[str] = frozenset({"p2p"})  # schemes that need a P3MI licence


@dataclass(frozen=True)
class Coverage:
    pre_placement: timedelta = timedelta(days=150)  # up to 5 months before departure
    post_placement: timedelta = timedelta(days=30)  # 1 month after return
    default_contract: timedelta = timedelta(days=730)  # when a departure has no contract_end
    gap_categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ClaimsPolicy:
    stall: timedelta = timedelta(days=14)


@dataclass(frozen=True)
class Policy:
    dedup_window: timedelta
    category_severity: dict[str, str]
    posts: dict[str, Post]
    headquarters: str
    sla: dict[str, Sla]
    non_procedural: NonProcedural = field(default_factory=NonProcedural)
    coverage: Coverage = field(default_factory=Coverage)
    claims: ClaimsPolicy = field(default_factory=ClaimsPolicy)
