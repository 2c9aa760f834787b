"""Policy tables of prevention and aftercare: referral clocks, reintegration
referrals, the employer watchlist and the agency (P3MI) scorecard.

Kept apart from ``handlers.policy`` so that these tables grow without touching the core
loader; ``handlers.policy.policy_from_dict`` calls :func:`parse_prevention` with the whole
document and keeps the result in ``Policy.prevention``. Every section is optional: a policy
file without it gets the defaults below (the same as ``handlers/default_policy.toml``).
Each table's shape is a ``PolicyTable`` model (``handlers.policy_shape``), checked with the
same messages as the core tables.

Shape:
- ``[referrals.answer_within]``: severity -> duration an organisation has to accept or
  decline a referral (``Referrals.answer_within``).
- ``[reintegration]``: which returns open a ``reintegration`` case, its severity, its own SLA
  ladder (``[reintegration.sla]``: ack, level2, resolve), the JKM reminder period and the
  service units (``[[reintegration.units]]``: unit_id, name, kind, province, regency,
  village).
- ``[employers]``: watchlist categories, threshold, window, preventive-visit severity.
- ``[agencies]``: scorecard window and the alert threshold (rate per 100 placements AND
  minimum placements).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from errors import ConfigError
from handlers.policy_shape import (
    WORDS,
    Categories,
    Duration,
    PolicyTable,
    SlaTable,
    Str,
    fail,
    int_at_least,
    one_of,
    parse,
    set_keys,
    tables,
)
from schemas.types import RETURN_REASONS

SEVERITY_ORDER = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Referrals:
    answer_within: dict[str, timedelta] = field(
        default_factory=lambda: {
            "critical": timedelta(hours=24),
            "high": timedelta(hours=72),
            "medium": timedelta(days=7),
            "low": timedelta(days=7),
        }
    )

    def window(self, severity: str) -> timedelta:
        return self.answer_within.get(severity) or self.answer_within["medium"]


@dataclass(frozen=True)
class ServiceUnit:
    """Who receives a returnee's reintegration case: a regency's manpower office, a village's
    Desmigratif programme or a province's office. The most specific match wins."""

    unit_id: str
    name: str
    kind: str  # "desmigratif" | "regency_office" | "province_office"
    province: str
    regency: str | None = None
    village: str | None = None


@dataclass(frozen=True)
class KindSla:
    ack: timedelta
    level2: timedelta | None
    resolve: timedelta


UNIT_KINDS = ("desmigratif", "regency_office", "province_office")


@dataclass(frozen=True)
class Reintegration:
    reasons: frozenset[str] = frozenset({"repatriated", "deported", "medical", "deceased"})
    protection_lookback: timedelta = timedelta(days=90)
    severity: str = "medium"
    deceased_severity: str = "high"
    jkm_reminder: timedelta = timedelta(days=30)
    sla: KindSla = field(
        default_factory=lambda: KindSla(timedelta(days=3), timedelta(days=7), timedelta(days=90))
    )
    units: tuple[ServiceUnit, ...] = ()


@dataclass(frozen=True)
class Employers:
    categories: frozenset[str] = frozenset(
        {"employer_violence", "sexual_violence", "unpaid_wages", "document_withheld", "trafficking"}
    )
    threshold: int = 3
    window: timedelta = timedelta(days=365)
    visit_severity: str = "medium"


@dataclass(frozen=True)
class Agencies:
    window: timedelta = timedelta(days=365)
    alert_rate_per_100: float = 5.0
    alert_min_placements: int = 20


@dataclass(frozen=True)
class Prevention:
    referrals: Referrals = field(default_factory=Referrals)
    reintegration: Reintegration = field(default_factory=Reintegration)
    employers: Employers = field(default_factory=Employers)
    agencies: Agencies = field(default_factory=Agencies)

    def kind_sla(self, kind: str) -> KindSla | None:
        """The SLA ladder of a case kind that has its own (None: the severity's)."""
        if kind == "reintegration":
            return self.reintegration.sla
        return None


SECTIONS = ("referrals", "reintegration", "employers", "agencies")

# -- the tables (their shape: handlers.policy_shape) ----------------------------------------

SeverityWord = Annotated[str, BeforeValidator(one_of(SEVERITY_ORDER))]
AtLeastOne = Annotated[int, BeforeValidator(int_at_least(1))]


class _AnswerWithin(PolicyTable):  # the order of SEVERITY_ORDER
    low: Duration | None = None
    medium: Duration | None = None
    high: Duration | None = None
    critical: Duration | None = None


class _Referrals(PolicyTable):
    answer_within: _AnswerWithin | None = None


class _Unit(PolicyTable):
    unit_id: Str
    name: Str
    kind: Annotated[str, BeforeValidator(one_of(UNIT_KINDS))]
    province: Any  # codes: any value, read as text (a TOML integer code is fine)
    regency: Any = None
    village: Any = None


class _Reintegration(PolicyTable):
    reasons: (
        Annotated[list[Annotated[str, BeforeValidator(one_of(RETURN_REASONS))]], *WORDS] | None
    ) = None
    protection_lookback: Duration | None = None
    severity: SeverityWord | None = None
    deceased_severity: SeverityWord | None = None
    jkm_reminder: Duration | None = None
    sla: SlaTable | None = None
    units: Annotated[
        list[_Unit], BeforeValidator(tables("expected [[reintegration.units]] tables"))
    ] = []


class _Employers(PolicyTable):
    categories: Categories | None = None
    threshold: AtLeastOne | None = None
    window: Duration | None = None
    visit_severity: SeverityWord | None = None


def _a_rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise fail(f"expected a positive number, got {value!r}")
    return float(value)


class _Agencies(PolicyTable):
    window: Duration | None = None
    alert_rate_per_100: Annotated[float, BeforeValidator(_a_rate)] | None = None
    alert_min_placements: AtLeastOne | None = None


def parse_prevention(doc: dict[str, Any]) -> Prevention:
    """The prevention sections of a policy document (strict: unknown keys are errors)."""
    default = Prevention()
    referrals = default.referrals
    if "referrals" in doc:
        within = parse(_Referrals, doc["referrals"], "referrals").answer_within
        if within is not None:
            given = set_keys(within, *SEVERITY_ORDER)
            referrals = Referrals(answer_within={**referrals.answer_within, **given})
    reint = default.reintegration
    if "reintegration" in doc:
        reint = _reintegration(parse(_Reintegration, doc["reintegration"], "reintegration"))
    employers = default.employers
    if "employers" in doc:
        t = parse(_Employers, doc["employers"], "employers")
        employers = replace(employers, **set_keys(t, "threshold", "window", "visit_severity"))
        if t.categories is not None:
            employers = replace(employers, categories=frozenset(t.categories))
    agencies = default.agencies
    if "agencies" in doc:
        t2 = parse(_Agencies, doc["agencies"], "agencies")
        agencies = replace(
            agencies, **set_keys(t2, "window", "alert_rate_per_100", "alert_min_placements")
        )
    return Prevention(referrals, reint, employers, agencies)


_CODE_KEYS = ("province", "regency", "village")
_CODES_OF = {"province_office": 1, "regency_office": 2, "desmigratif": 3}


def _reintegration(t: _Reintegration) -> Reintegration:
    default = Reintegration()
    sla = default.sla
    if t.sla is not None:
        if t.sla.level2 is not None and t.sla.level2 <= t.sla.ack:
            raise ConfigError("reintegration.sla.level2: must be later than ack")
        sla = KindSla(t.sla.ack, t.sla.level2, t.sla.resolve)
    units: list[ServiceUnit] = []
    seen_ids: set[str] = set()
    seen_codes: dict[tuple[str | None, ...], str] = {}
    for i, u in enumerate(t.units):
        where = f"reintegration.units[{i}]"
        if u.unit_id in seen_ids:
            raise ConfigError(f"{where}.unit_id: {u.unit_id!r} listed twice")
        seen_ids.add(u.unit_id)
        codes: dict[str, str | None] = {}
        for k in _CODE_KEYS:
            value = getattr(u, k)
            codes[k] = None if value is None else str(value)
            if codes[k] == "":
                raise ConfigError(f"{where}.{k}: expected a non-empty string, got ''")
        expected = _CODE_KEYS[: _CODES_OF[u.kind]]
        if [k for k in _CODE_KEYS if codes[k] is not None] != list(expected):
            raise ConfigError(f"{where}: a {u.kind} needs exactly {', '.join(expected)}")
        key = tuple(codes[k] for k in _CODE_KEYS)
        if key in seen_codes:
            raise ConfigError(f"{where}: the same codes as {seen_codes[key]}")
        seen_codes[key] = u.unit_id
        units.append(ServiceUnit(u.unit_id, u.name, u.kind, codes["province"] or "", *key[1:]))
    given = set_keys(t, "protection_lookback", "severity", "deceased_severity", "jkm_reminder")
    if t.reasons is not None:
        given["reasons"] = frozenset(t.reasons)
    return replace(default, **given, sla=sla, units=tuple(units))
