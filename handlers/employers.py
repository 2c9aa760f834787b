"""The employer watchlist: who employs the workers whose cases are substantiated. Pure, no I/O.

Identity. An employer is its normalised name plus its country (:func:`employer_key`):
Unicode NFKC, case-folded, punctuation (``.,;:'"()[]/\\-_``) read as spaces, runs of
whitespace collapsed, trimmed. "PT.  Maju  Jaya" and "pt maju jaya" in MY are one employer.
The region (ISO 3166-2) is recorded when a departure or arrival gives one, but it is not
part of the identity: departures and arrivals often disagree on it, and an employer is one
party whatever the state it is reported in.

Per worker (in the handlers):
- :func:`record_employer` (after a departure or an arrival with ``employer_name``): the
  worker's current employer (``worker.employer``: key, name, country, region). When the
  employer is on the watchlist (``ctx.watchlisted``, the keys the processor loaded for the
  batch), the worker is flagged ``watchlisted_employer`` (``worker.flags``), a
  ``preventive_visit`` case opens at the destination post (``employers.visit_severity``,
  medium), and ``garda.alert.watchlisted-employer`` tells the post. One case per journey
  step: the cause is the employer key and the departure (or arrival) time.
- :func:`tag_new_cases`: a protection case that opens while the worker is placed with a
  known employer is linked to it (``case.detail["employer"]``), once: it stays linked to the
  employer of the time it opened. A departure or arrival applied *after* an incident it
  precedes (another topic, another lane) links the unlinked protection cases opened since
  its time, so the order in which the two topics are read does not change the watchlist.

Across workers (the watchlist rule, :func:`watchlist_decision`): an employer is watchlisted
when at least ``employers.threshold`` of its linked cases are *substantiated* (resolved
with ``substantiated: true`` on ``pmi.case.resolved``), of a category in
``employers.categories``, and opened within one ``employers.window`` of each other (a
sliding window over the cases' ``opened_at``; cases exactly ``window`` apart are within it).
A reopened case counts again only once resolved again; a case resolved with
``substantiated: false`` or without the field never counts. The rule is a function of the
*set* of the employer's cases, so the order in which cases arrive, replays and redeliveries
cannot change it; the decision changes only when that set changes (a listing does not lapse
with time; it goes when cases are re-resolved as not substantiated).

Where the state lives: ``infra.employers`` keeps ``employers`` and ``employer_cases`` in
PostgreSQL, written in the batch's transaction under a per-employer advisory lock, and
publishes a ``garda.employer.watchlisted`` / ``garda.employer.delisted`` event on
``pmi.employers.v1`` (keyed by the employer key) when the decision changes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.cases import PROTECTION, open_case
from handlers.context import Ctx
from handlers.model import Aggregate, OutputEvent, iso, stable_id
from handlers.policy import Policy
from handlers.routing import normalize_country, normalize_region
from schemas import topics

FLAG = "watchlisted_employer"
VISIT_KIND = "preventive_visit"
EMPLOYER = "employer"  # key in case.detail
WATCHLISTED = "garda.employer.watchlisted"
DELISTED = "garda.employer.delisted"
_PUNCT = re.compile(r"[.,;:'\"()\[\]/\\\-_]+")
_SPACE = re.compile(r"\s+")


def normalize_name(name: object) -> str | None:
    """The comparable form of an employer name (None: no usable name)."""
    if not isinstance(name, str):
        return None
    text = unicodedata.normalize("NFKC", name).casefold()
    text = _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()
    return text or None


def employer_key(name: object, country: str | None) -> str | None:
    """``EMP-<16 hex>`` from the normalised name and the country (None: no name/country);
    remembered as ``_employer_of``'s employers (the processor keys every departure and
    arrival of a batch to load the watchlist)."""
    if type(name) is str and type(country) in _TEXT:
        found = _remembered(name, country, None)
        return None if found is None else found[0]
    return _key(normalize_name(name), normalize_country(country))


def _key(norm: str | None, country: str | None) -> str | None:
    """:func:`employer_key` of a name and a country already normalised."""
    if norm is None or country is None:
        return None
    return stable_id(country, norm, prefix="EMP-")


_Employer = tuple[str, str, str, str | None]  # key, normalised name, country, region
# (name, country, region) as given -> the employer they name (None: none): a function of
# these texts alone (NFKC, two expressions and a hash, ~4 µs), and the pool of employers is
# small. Bounded: cleared when full.
_EMPLOYERS: dict[tuple[str, str | None, str | None], _Employer | None] = {}
_EMPLOYERS_MAX = 4096
_TEXT = (str, type(None))


def _employer_from(name: object, country: Any, region: Any) -> _Employer | None:
    norm = normalize_name(name)
    c = normalize_country(country)
    key = _key(norm, c)
    if key is None or norm is None or c is None:
        return None
    return key, norm, c, normalize_region(c, region)


def _remembered(name: str, country: str | None, region: str | None) -> _Employer | None:
    """``_employer_from`` of these texts, through ``_EMPLOYERS``."""
    memo = (name, country, region)
    if memo in _EMPLOYERS:
        return _EMPLOYERS[memo]
    found = _employer_from(name, country, region)
    if len(_EMPLOYERS) >= _EMPLOYERS_MAX:
        _EMPLOYERS.clear()
    _EMPLOYERS[memo] = found
    return found


def _employer_of(data: dict[str, Any], ctx: Ctx) -> dict[str, Any] | None:
    departure = ctx.envelope.type == "pmi.departure.recorded"
    country = data.get("destination_country" if departure else "country")
    region = data.get("destination_region" if departure else "region")
    name = data.get("employer_name")
    if type(name) is str and type(country) in _TEXT and type(region) in _TEXT:
        found = _remembered(name, country, region)
    else:
        found = _employer_from(name, country, region)  # as before, whatever it raises
    if found is None:
        return None
    key, norm, c, r = found
    return {"key": key, "name": norm, "country": c, "region": r}


def record_employer(agg: Aggregate, ctx: Ctx) -> None:
    """After a departure or an arrival: the worker's employer; a watchlisted one is visited."""
    if ctx.envelope.type not in ("pmi.departure.recorded", "pmi.arrival.reported"):
        return
    if ctx.outcome == "stale":
        return
    employer = _employer_of(ctx.envelope.data, ctx)
    if employer is None:
        return
    w = agg.worker
    known = w.employer or {}
    if known.get("key") == employer["key"] and employer["region"] is None:
        employer["region"] = known.get("region")  # an arrival without region keeps it
    w.employer = employer
    _link_cases_opened_since(agg, employer["key"], ctx.event_time)
    if employer["key"] not in ctx.watchlisted:
        return
    if FLAG not in w.flags:
        w.flags.append(FLAG)
    when = w.state_at or ctx.event_time
    known_cases = set(agg.cases)
    case = open_case(
        agg,
        ctx,
        kind=VISIT_KIND,
        category=None,
        severity=ctx.policy.prevention.employers.visit_severity,
        cause=f"{employer['key']}:{iso(when)}",
        country=employer["country"],
        region=employer["region"] or w.region,
        detail={EMPLOYER: employer["key"], "employer_name": employer["name"]},
    )
    if case.case_id in known_cases:
        return
    ctx.alert(
        "watchlisted-employer",
        w.worker_id,
        {"employer": employer["key"], "employer_name": employer["name"]},
        case=case,
    )


def _link_cases_opened_since(agg: Aggregate, key: str, since: datetime) -> None:
    """A departure applied after an incident about the same journey (they travel on
    different topics and lanes): the protection cases opened since the departure, not yet
    linked, join its employer as if it had come first."""
    for case in agg.cases.values():
        if case.kind == PROTECTION and EMPLOYER not in case.detail and case.opened_at >= since:
            case.detail[EMPLOYER] = key


def tag_new_cases(before: Aggregate, after: Aggregate) -> None:
    """Link the protection cases the event opened to the worker's current employer."""
    employer = after.worker.employer
    if not employer:
        return
    for case_id, case in after.cases.items():
        if case_id in before.cases or case.kind != PROTECTION or EMPLOYER in case.detail:
            continue
        case.detail[EMPLOYER] = employer["key"]


# --- the watchlist rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class EmployerCase:
    case_id: str
    category: str | None
    substantiated: bool | None
    opened_at: datetime
    status: str = "resolved"


def counting(cases: Iterable[EmployerCase], policy: Policy) -> list[EmployerCase]:
    """The cases that count toward a listing: substantiated, resolved, listed category."""
    cats = policy.prevention.employers.categories
    return sorted(
        (
            c
            for c in cases
            if c.substantiated is True and c.status == "resolved" and c.category in cats
        ),
        key=lambda c: (c.opened_at, c.case_id),
    )


def watchlist_decision(cases: Iterable[EmployerCase], policy: Policy) -> tuple[bool, list[str]]:
    """(watchlisted, the case ids behind it): the latest run of ``threshold`` counting cases
    opened within one ``window`` (all counting cases in that window), else (False, [])."""
    rule = policy.prevention.employers
    counted = counting(cases, policy)
    best: list[EmployerCase] = []
    start = 0
    for end, case in enumerate(counted):
        while case.opened_at - counted[start].opened_at > rule.window:
            start += 1
        if end - start + 1 >= rule.threshold:
            best = counted[start : end + 1]
    return (bool(best), [c.case_id for c in best])


def watchlist_event(
    employer: dict[str, Any], listed: bool, case_ids: list[str], policy: Policy
) -> OutputEvent:
    """The ``garda.employer.*`` event of a watchlist change (id derived from its content)."""
    type_ = WATCHLISTED if listed else DELISTED
    rule = policy.prevention.employers
    data = {
        "employer_key": employer["key"],
        "name": employer.get("name"),
        "country": employer.get("country"),
        "region": employer.get("region"),
        "watchlisted": listed,
        "cases": sorted(case_ids),
        "threshold": rule.threshold,
        "window_days": rule.window.days,
        "categories": sorted(rule.categories),
    }
    return OutputEvent(
        topic=topics.EMPLOYERS,
        type=type_,
        key=employer["key"],
        data=data,
        id=stable_id(employer["key"], type_, *sorted(case_ids), prefix="employer-"),
        subject=employer["key"],
    )
