"""Routing (design §5): which Atnaker post a case goes to, and the escalation ladder. Pure.

- ``route(policy, country, region) -> RouteDecision(post_id, note)``:
  1. the regional post whose ``regions`` contain the region (e.g. MY-01 -> KJRI Johor Bahru);
  2. else the country's embassy, or the country's only post when it has no embassy
     (HK -> KJRI Hong Kong, TW -> KDEI Taipei);
  3. else headquarters, with a note saying no Indonesian labour post covers the country.
  A post without a labour attaché/staff (``protection_desk = true``, e.g. Japan) still gets the
  case: the note says it goes to the mission's protection desk.
- ``escalation_target(policy, case_post_id, level)``: 0 the post, 1 its head of mission,
  2 headquarters.

Rules decided where the design is silent:
- Codes are compared trimmed and upper-cased ("my-01" == "MY-01"). A region given without
  its country prefix ("01") is read as "<country>-01". A region of another country than
  ``country`` is ignored (the note says so): the country decides.
- No country (None or blank) routes to headquarters ("country unknown").
- A post no region names and that is not its country's embassy (KJRI Tawau, see the policy
  file) is never chosen automatically; cases reach it by referral.
- A case post the policy no longer knows escalates to headquarters at level 1.
- The note is always set, so the case says why it went where it went.
"""

from __future__ import annotations

from typing import NamedTuple

from errors import Unacceptable
from handlers.policy import Policy, Post


class RouteDecision(NamedTuple):
    post_id: str
    note: str


def normalize_country(country: str | None) -> str | None:
    if country is None:
        return None
    c = country.strip().upper()
    return c or None


def normalize_region(country: str | None, region: str | None) -> str | None:
    """Upper-case a region code; "01" with country MY -> "MY-01"; blank -> None."""
    if region is None:
        return None
    r = region.strip().upper()
    if not r:
        return None
    if "-" not in r and country:
        r = f"{country}-{r}"
    return r


def _desk(post: Post) -> str:
    return " (protection desk: no labour attaché posted)" if post.protection_desk else ""


# (id(policy), country, region) -> (policy, decision): a decision depends on these alone
# (the policy is not changed once loaded; a new policy is another object, and the entry
# keeps its policy alive so that its id is not reused). Bounded: cleared when full.
_ROUTES: dict[tuple[int, str | None, str | None], tuple[Policy, RouteDecision]] = {}
_ROUTES_MAX = 4096
_TEXT = (str, type(None))


def route(policy: Policy, country: str | None, region: str | None = None) -> RouteDecision:
    """The post a case in ``country``/``region`` goes to (remembered per policy and input)."""
    if type(country) not in _TEXT or type(region) not in _TEXT:
        return _route(policy, country, region)  # as before, whatever it raises
    key = (id(policy), country, region)
    hit = _ROUTES.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    decision = _route(policy, country, region)
    if len(_ROUTES) >= _ROUTES_MAX:
        _ROUTES.clear()
    _ROUTES[key] = (policy, decision)
    return decision


def _route(policy: Policy, country: str | None, region: str | None) -> RouteDecision:
    c = normalize_country(country)
    r = normalize_region(c, region)
    hq = policy.headquarters
    if c is None:
        return RouteDecision(hq, "country unknown; routed to headquarters")
    mismatch = ""
    if r is not None:
        if r.startswith(f"{c}-"):
            for post in policy.posts.values():
                if r in post.regions:
                    return RouteDecision(
                        post.post_id, f"{r} is covered by {post.name}{_desk(post)}"
                    )
        else:
            mismatch = f"region {r} is not in {c}, ignored; "
    in_country = [p for p in policy.posts.values() if p.country == c]
    main = [p for p in in_country if p.mission_kind == "embassy"] or (
        in_country if len(in_country) == 1 else []
    )
    if main:
        post = main[0]
        if post.protection_desk:
            note = f"no labour attaché in {c}; routed to the protection desk of {post.name}"
        else:
            note = f"{c} is covered by {post.name}"
        return RouteDecision(post.post_id, mismatch + note)
    return RouteDecision(
        hq, f"{mismatch}no Indonesian labour post covers {c}; routed to headquarters"
    )


def escalation_target(policy: Policy, case_post_id: str, level: int) -> str:
    """The post responsible for a case at an escalation level (0, 1 or 2; above 2 is 2)."""
    if level < 0:
        raise Unacceptable(f"escalation level must be 0, 1 or 2, got {level}")
    if level == 0:
        return case_post_id
    if level == 1:
        post = policy.posts.get(case_post_id)
        if post is None:
            return policy.headquarters
        return post.head_of_mission or post.post_id
    return policy.headquarters
