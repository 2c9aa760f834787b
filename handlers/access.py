"""Who may see, act on and publish what: every access decision of Garda, in one place. Pure.

A caller is a :class:`Scope` (what an API bearer token grants, see ``infra.tokens``):

- ``posts``: the posts it works for (a consulate, an embassy...);
- ``hq``: headquarters: sees every case and acts on any;
- ``sources``: the CloudEvents ``source`` values it may publish as (producer bindings,
  ``garda tokens create --producer SOURCE``).

A token may combine them (``--post KJRI-JOHOR-BAHRU --producer kjri-johor-bahru/case-desk``
is the usual consulate case desk); a token with only ``sources`` is a pure producer (the
insurer, the embarkation registry): it can publish, it can read no case.

Seeing a case (:func:`case_posts`, :func:`can_see_case`, :func:`case_filter`)
    A case is visible to, and may be acted on by, every post of the ladder it has reached:
    its assigned post (level 0), its head of mission once at level 1 **and still at level 2**
    (a level passed through keeps its access), the post it was last escalated to
    (``case.escalated_to``, which also covers a ladder the policy has changed since), and
    headquarters. Any other post's token gets 404 for it (ids do not leak). The Kafka case
    actions check the acting ``post_id`` with the same rule (:func:`may_act`).

Seeing a worker (:func:`worker_view`)
    A post token sees a worker only if it sees one of the worker's cases; it then sees only
    what those cases justify: ``open_cases`` and ``in_crisis`` from its visible cases only,
    the claims linked to a visible case (or whose dispute case it sees), and the worker's
    ``country``/``region`` only when that location routes to one of its posts or to the post
    of a case it sees (else both null: where a worker now is belongs to the post that covers
    it). Facts about the person (state, journey dates, flags, insurance window) are shown.

Publishing (:func:`publish_refusal`), rules decided where the design is silent
    1. Every token, headquarters included, publishes only as a source bound to it. An HQ
       token is not a producer: it reads and acts on everything but cannot publish as the
       insurer or a consulate unless that source is bound to it. So no token can pre-claim
       another producer's (source, id) over HTTP. Garda's own sources (``garda`` and
       ``garda-*``) can be bound to no token.
    2. A post token's event is run through the rules against the worker's current state (a
       dry run, as for case actions) and accepted only if everything it would change is its
       own: every case it opens, changes or adds a timeline row to must be visible to the
       token afterwards, and if it changes the worker (state, journey, flags) or a claim, the
       worker must then have a case visible to the token. So a consulate may report a new
       incident that routes to it (even for a worker other posts also serve), but cannot
       change another post's case, write into its timeline, or declare a worker it cannot
       see deceased. An event the rules refuse in the dry run is refused with that reason.
       The check holds for the state at the time the event is received.
    3. A token without posts (HQ, a pure producer) is bound by rule 1 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.escalation import MAX_LEVEL
from handlers.model import Aggregate, Case, Result
from handlers.policy import Policy
from handlers.routing import escalation_target, route

RESERVED_SOURCE = "garda"  # Garda's own output and commands; also every "garda-..." source


@dataclass(frozen=True)
class Scope:
    token_id: str
    posts: frozenset[str]
    hq: bool
    sources: frozenset[str] = frozenset()

    @property
    def post_filter(self) -> frozenset[str] | None:
        """None for headquarters (sees everything), else the posts."""
        return None if self.hq else self.posts


def is_reserved_source(source: str) -> bool:
    return source == RESERVED_SOURCE or source.startswith(RESERVED_SOURCE + "-")


# -- cases -------------------------------------------------------------------------------
def _ladder_posts(post_id: str, level: int, escalated: object, policy: Policy) -> set[str]:
    posts = {post_id, policy.headquarters}
    for step in range(1, min(level, MAX_LEVEL) + 1):
        posts.add(escalation_target(policy, post_id, step))
    if isinstance(escalated, str) and escalated:
        posts.add(escalated)
    return posts


def case_posts(case: Case, policy: Policy) -> set[str]:
    """Every post that may see and act on ``case`` (see the module docstring)."""
    return _ladder_posts(case.post_id, case.escalation_level, case.escalated_to, policy)


def can_see_case(scope: Scope, case: Case, policy: Policy) -> bool:
    return scope.hq or bool(scope.posts & case_posts(case, policy))


def can_see_case_json(scope: Scope, case: Mapping[str, Any], policy: Policy) -> bool:
    """:func:`can_see_case` for a case's public JSON (``post_id``, ``escalation_level``,
    ``detail``), as the live stream has it."""
    if scope.hq:
        return True
    level = case.get("escalation_level") or 0
    escalated = (case.get("detail") or {}).get("escalated_to")
    posts = _ladder_posts(case["post_id"], level, escalated, policy)
    return bool(scope.posts & posts)


def may_act(case: Case, post_id: str | None, policy: Policy) -> bool:
    """Whether a case action taken as ``post_id`` may change ``case`` (Kafka or API)."""
    return bool(post_id) and post_id in case_posts(case, policy)


@dataclass(frozen=True)
class CaseFilter:
    """What a post token may list, as data a query can use: a case is visible when its
    ``post_id`` is in ``by_level[L]`` and its ``escalation_level >= L`` for some L, or its
    ``escalated_to`` is one of ``posts``."""

    posts: frozenset[str]
    by_level: tuple[frozenset[str], ...]  # index = minimum escalation level


def case_filter(scope: Scope, policy: Policy) -> CaseFilter | None:
    """None for headquarters (every case), else the token's :class:`CaseFilter`."""
    if scope.hq:
        return None
    levels = [frozenset(scope.posts)]
    for level in range(1, MAX_LEVEL + 1):
        levels.append(
            frozenset(p for p in policy.posts if escalation_target(policy, p, level) in scope.posts)
        )
    return CaseFilter(posts=frozenset(scope.posts), by_level=tuple(levels))


def acting_post(scope: Scope, case: Case, policy: Policy, wanted: str | None) -> str | None:
    """The post an API action is taken as: ``wanted`` (the body's ``post_id``) when the token
    holds it (headquarters for an HQ token), else the case's own post, else the first
    (sorted) of the token's posts that may act on the case, else headquarters for an HQ
    token. None when the token may not act as ``wanted`` or holds no post able to act."""
    if wanted:
        if wanted in scope.posts or (scope.hq and wanted == policy.headquarters):
            return wanted
        return None
    if case.post_id in scope.posts:
        return case.post_id
    mine = sorted(case_posts(case, policy) & scope.posts)
    if mine:
        return mine[0]
    return policy.headquarters if scope.hq else None


# -- workers -----------------------------------------------------------------------------
def visible_cases(scope: Scope, agg: Aggregate, policy: Policy) -> list[Case]:
    return [c for c in agg.cases.values() if can_see_case(scope, c, policy)]


def worker_view(
    scope: Scope, agg: Aggregate, policy: Policy, body: dict[str, Any]
) -> dict[str, Any] | None:
    """``body`` (the full worker JSON) cut down to what ``scope`` may see; None: not visible.

    Expects the keys ``open_cases``, ``in_crisis``, ``country``, ``region``, ``claims``."""
    if scope.hq:
        return body
    cases = visible_cases(scope, agg, policy)
    if not cases:
        return None
    seen = {c.case_id for c in cases}
    out = dict(body)
    out["open_cases"] = [cid for cid in body["open_cases"] if cid in seen]
    out["in_crisis"] = any(c.is_open and c.severity in ("critical", "high") for c in cases)
    disputed = {c.claim_id for c in cases if c.kind == "claim_dispute"}
    out["claims"] = [
        c for c in body["claims"] if c.get("case_id") in seen or c.get("claim_id") in disputed
    ]
    posts = set(scope.posts) | {c.post_id for c in cases}
    w = agg.worker
    if w.country is None or route(policy, w.country, w.region).post_id not in posts:
        out["country"] = None
        out["region"] = None
    return out


# -- publishing --------------------------------------------------------------------------
def source_refusal(scope: Scope, source: str) -> str | None:
    """Why ``scope`` may not publish as ``source`` (rule 1), or None."""
    if source in scope.sources and not is_reserved_source(source):
        return None
    bound = ", ".join(sorted(scope.sources)) or "none"
    return f"source {source!r} is not bound to token {scope.token_id} (bound sources: {bound})"


def _touched_cases(before: Aggregate, result: Result) -> set[str]:
    after = result.aggregate
    touched = {cid for cid, c in after.cases.items() if before.cases.get(cid) != c}
    touched |= {e.case_id for e in result.effects.timeline}
    return touched


def _worker_changed(before: Aggregate, after: Aggregate) -> bool:
    if before.claims != after.claims:
        return True
    a, b = before.worker, after.worker
    return {**a.to_doc(), "updated_at": None} != {**b.to_doc(), "updated_at": None}


def effects_refusal(scope: Scope, before: Aggregate, result: Result, policy: Policy) -> str | None:
    """Why a post token may not cause ``result`` (rule 2), or None. HQ and producer-only
    tokens are never refused here."""
    if scope.hq or not scope.posts:
        return None
    after = result.aggregate
    foreign = sorted(
        cid
        for cid in _touched_cases(before, result)
        if cid not in after.cases or not can_see_case(scope, after.cases[cid], policy)
    )
    if foreign:
        return f"the event would change case(s) outside this token's posts: {', '.join(foreign)}"
    if _worker_changed(before, after) and not visible_cases(scope, after, policy):
        return (
            f"the event would change worker {after.worker.worker_id}, "
            "who has no case at this token's posts"
        )
    return None


def publish_refusal(
    scope: Scope, source: str, before: Aggregate, result: Result | None, policy: Policy
) -> str | None:
    """Why ``scope`` may not publish this event, or None (rules 1-3). ``result`` is the dry
    run of the rules on ``before`` (None when the rules were not run)."""
    reason = source_refusal(scope, source)
    if reason is None and result is not None:
        reason = effects_refusal(scope, before, result, policy)
    return reason
