"""Policy tables of prevention and aftercare: referral clocks, reintegration
referrals, the employer watchlist and the agency (P3MI) scorecard.

Kept apart from ``handlers.policy`` so that these tables grow without touching the core
loader; ``handlers.policy.policy_from_dict`` calls :func:`parse_prevention` with the whole
document and keeps the result in ``Policy.prevention``. Every section is optional: a policy
file without it gets the defaults below (the same as ``handlers/default_policy.toml``).

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

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from errors import ConfigError

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


def parse_prevention(doc: dict[str, Any], categories: tuple[str, ...]) -> Prevention:
    """The prevention sections of a policy document (strict: unknown keys are errors)."""
    from handlers import policy as p  # the shared validators; imported late (no cycle)

    default = Prevention()
    referrals = default.referrals
    if "referrals" in doc:
        t = p._table(doc["referrals"], "referrals")
        p._keys(t, "referrals", optional=("answer_within",))
        within = dict(referrals.answer_within)
        if "answer_within" in t:
            w = p._table(t["answer_within"], "referrals.answer_within")
            p._keys(w, "referrals.answer_within", optional=SEVERITY_ORDER)
            for sev, value in w.items():
                within[sev] = p.parse_duration(value, f"referrals.answer_within.{sev}")
        referrals = Referrals(answer_within=within)
    reint = default.reintegration
    if "reintegration" in doc:
        reint = _reintegration(p, p._table(doc["reintegration"], "reintegration"), reint)
    employers = default.employers
    if "employers" in doc:
        t = p._table(doc["employers"], "employers")
        p._keys(t, "employers", optional=("categories", "threshold", "window", "visit_severity"))
        employers = Employers(
            categories=frozenset(
                p._str_list(t["categories"], "employers.categories", categories)
                if "categories" in t
                else employers.categories
            ),
            threshold=_int(t.get("threshold", employers.threshold), "employers.threshold", 1),
            window=p.parse_duration(t["window"], "employers.window")
            if "window" in t
            else employers.window,
            visit_severity=p._str(
                t.get("visit_severity", employers.visit_severity),
                "employers.visit_severity",
                SEVERITY_ORDER,
            ),
        )
    agencies = default.agencies
    if "agencies" in doc:
        t = p._table(doc["agencies"], "agencies")
        p._keys(t, "agencies", optional=("window", "alert_rate_per_100", "alert_min_placements"))
        rate = t.get("alert_rate_per_100", agencies.alert_rate_per_100)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise ConfigError(
                f"agencies.alert_rate_per_100: expected a positive number, got {rate!r}"
            )
        agencies = Agencies(
            window=p.parse_duration(t["window"], "agencies.window")
            if "window" in t
            else agencies.window,
            alert_rate_per_100=float(rate),
            alert_min_placements=_int(
                t.get("alert_min_placements", agencies.alert_min_placements),
                "agencies.alert_min_placements",
                1,
            ),
        )
    return Prevention(referrals, reint, employers, agencies)


def _int(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


_CODE_KEYS = ("province", "regency", "village")


def _reintegration(p: Any, t: dict[str, Any], default: Reintegration) -> Reintegration:
    p._keys(
        t,
        "reintegration",
        optional=(
            "reasons",
            "protection_lookback",
            "severity",
            "deceased_severity",
            "jkm_reminder",
            "sla",
            "units",
        ),
    )
    reasons = default.reasons
    if "reasons" in t:
        from schemas.types import RETURN_REASONS

        reasons = frozenset(p._str_list(t["reasons"], "reintegration.reasons", RETURN_REASONS))
    sla = default.sla
    if "sla" in t:
        s = p._table(t["sla"], "reintegration.sla")
        p._keys(s, "reintegration.sla", required=("ack", "resolve"), optional=("level2",))
        ack = p.parse_duration(s["ack"], "reintegration.sla.ack")
        level2 = (
            p.parse_duration(s["level2"], "reintegration.sla.level2") if "level2" in s else None
        )
        if level2 is not None and level2 <= ack:
            raise ConfigError("reintegration.sla.level2: must be later than ack")
        sla = KindSla(ack, level2, p.parse_duration(s["resolve"], "reintegration.sla.resolve"))
    units: list[ServiceUnit] = []
    raw = t.get("units", [])
    if not isinstance(raw, list):
        raise ConfigError("reintegration.units: expected [[reintegration.units]] tables")
    seen_ids: set[str] = set()
    seen_codes: dict[tuple[str | None, ...], str] = {}
    for i, item in enumerate(raw):
        where = f"reintegration.units[{i}]"
        u = p._table(item, where)
        p._keys(u, where, required=("unit_id", "name", "kind", "province"), optional=_CODE_KEYS[1:])
        unit_id = p._str(u["unit_id"], f"{where}.unit_id")
        if unit_id in seen_ids:
            raise ConfigError(f"{where}.unit_id: {unit_id!r} listed twice")
        seen_ids.add(unit_id)
        kind = p._str(u["kind"], f"{where}.kind", UNIT_KINDS)
        codes = {k: p._str(str(u[k]), f"{where}.{k}") if k in u else None for k in _CODE_KEYS}
        expected = {"province_office": 1, "regency_office": 2, "desmigratif": 3}[kind]
        given = [k for k in _CODE_KEYS if codes[k] is not None]
        if given != list(_CODE_KEYS[:expected]):
            raise ConfigError(f"{where}: a {kind} needs exactly {', '.join(_CODE_KEYS[:expected])}")
        key = tuple(codes[k] for k in _CODE_KEYS)
        if key in seen_codes:
            raise ConfigError(f"{where}: the same codes as {seen_codes[key]}")
        seen_codes[key] = unit_id
        units.append(
            ServiceUnit(
                unit_id,
                p._str(u["name"], f"{where}.name"),
                kind,
                *key,  # type: ignore[arg-type]
            )
        )
    return Reintegration(
        reasons=reasons,
        protection_lookback=p.parse_duration(
            t["protection_lookback"], "reintegration.protection_lookback"
        )
        if "protection_lookback" in t
        else default.protection_lookback,
        severity=p._str(
            t.get("severity", default.severity), "reintegration.severity", SEVERITY_ORDER
        ),
        deceased_severity=p._str(
            t.get("deceased_severity", default.deceased_severity),
            "reintegration.deceased_severity",
            SEVERITY_ORDER,
        ),
        jkm_reminder=p.parse_duration(t["jkm_reminder"], "reintegration.jkm_reminder")
        if "jkm_reminder" in t
        else default.jkm_reminder,
        sla=sla,
        units=tuple(units),
    )
