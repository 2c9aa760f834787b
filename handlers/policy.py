"""The policy: every number and table the rules use (design §5), from a TOML file.

The default policy ships as ``handlers/default_policy.toml``; ``GARDA_POLICY`` replaces it.
Durations in the file are strings such as "90s", "15m", "1h", "7d".

Shape (``load_policy``/``parse_duration`` below):
- ``Policy.dedup_window``: timedelta (default 72 h)
- ``Policy.category_severity``: dict category -> severity
- ``Policy.posts``: dict post_id -> Post
- ``Policy.headquarters``: post id of headquarters (e.g. "HQ")
- ``Policy.sla``: dict severity -> Sla (ack, level2, resolve)
- ``Policy.non_procedural``: NonProcedural (revoked_licenses, moratoria, critical_reasons)
- ``Policy.coverage``: Coverage (pre_placement, post_placement, gap_categories, ...)
- ``Policy.claims``: ClaimsPolicy (stall)
- ``Policy.sources``: tuple of ExpectedSource (producers that must not fall silent)
- ``Policy.retention``: Retention (how long operational rows are kept; ``garda prune``)
- ``Policy.intake``: IntakePolicy (max_event_age, max_action_age): how far in the past an
  input event or a case action may be dated, measured from when Garda received it

Rules decided where the design is silent (retention):
- ``retention.processed_events`` is the *event* dedup window: a (source, id) processed longer
  ago than this is forgotten, so the same event arriving again after it would be handled
  again. It counts from when Garda processed the event (not the event's ``time``), because
  redelivery is a matter of processing time. It must be at least ``PROCESSED_EVENTS_FLOOR``
  (7 days: Kafka's default ``offsets.retention.minutes``, the longest a stopped consumer group
  keeps its place) so that a crash, a rebalance, a restart after a long stop or a producer's
  retry can never redeliver an event whose id was already pruned. Full replays of the input
  topics go through ``garda rebuild`` (an empty read model), never through the live group.
- Only *published* outbox rows are pruned; an unpublished row is kept however old it is.
- The case dedup window (``dedup.window``, incidents attached to an open case) is unrelated.
- ``Policy.hooks``: the raw ``[hooks]`` table (validated by ``infra.hooks.policy``)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from errors import ConfigError
from handlers.model import SEVERITIES
from handlers.prevention_policy import SECTIONS as _PREVENTION_SECTIONS
from handlers.prevention_policy import Prevention, parse_prevention
from schemas.fields import COUNTRY_PATTERN, REGION_PATTERN
from schemas.types import CATEGORIES as _CATEGORIES
from schemas.types import EMPLOYER_TYPES, SCHEMES


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
    timezone: str | None = None  # IANA zone, e.g. "Asia/Kuala_Lumpur" (the desk shows it)


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
    gap_categories: frozenset[str] = frozenset(
        {"accident", "death", "employer_violence", "sexual_violence", "illness"}
    )


@dataclass(frozen=True)
class ClaimsPolicy:
    stall: timedelta = timedelta(days=14)


PROCESSED_EVENTS_FLOOR = timedelta(days=7)


@dataclass(frozen=True)
class Retention:
    """How long operational rows are kept (``garda prune`` and every worker's prune task)."""

    outbox: timedelta = timedelta(days=7)  # published outbox rows only
    deadletters: timedelta = timedelta(days=90)
    audit_log: timedelta = timedelta(days=365)
    processed_events: timedelta = timedelta(days=30)  # the event dedup window (>= 7 d)
    hooks: timedelta = timedelta(days=30)  # finished deliveries, used/expired ack links
    interval: timedelta = timedelta(hours=1)  # how often a worker prunes
    batch: int = 5000  # rows per DELETE: short transactions, short locks


@dataclass(frozen=True)
class ExpectedSource:
    """A producer Garda expects to hear from (``[[sources]]``): its CloudEvents ``source``,
    a display name, the longest silence allowed, and the severity of its silence alert."""

    source: str
    name: str
    max_silence: timedelta
    severity: str = "high"


@dataclass(frozen=True)
class IntakePolicy:
    # An event whose ``time`` is older than this when Garda receives it is a late report:
    # its clocks start at the receipt time (handlers.context.Ctx.event_time).
    max_event_age: timedelta = timedelta(days=30)
    # A case action whose ``at`` is older than this when Garda receives it is refused.
    max_action_age: timedelta = timedelta(days=1)


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
    retention: Retention = field(default_factory=Retention)
    sources: tuple[ExpectedSource, ...] = ()
    # The [hooks] table as written (retry schedule, horizon, never-silenced alerts...);
    # alerting hooks are not rules, so ``infra.hooks.policy`` validates it at start.
    hooks: dict[str, Any] = field(default_factory=dict)
    intake: IntakePolicy = field(default_factory=IntakePolicy)
    # Prevention and aftercare: handlers.prevention_policy.
    prevention: Prevention = field(default_factory=Prevention)


# ---------------------------------------------------------------------------------------
# Loading and validation. Everything is checked at start: a bad policy is a ConfigError
# naming the file, the key and what is wrong, never a surprise in the middle of a stream.
# ---------------------------------------------------------------------------------------

# Incident categories: the event contract's (design §4).
CATEGORIES: tuple[str, ...] = _CATEGORIES
MISSION_KINDS = ("embassy", "consulate", "economic_office", "headquarters")
LABOUR_POSTS = ("attache", "technical_staff", "labour_section", "none")
NON_PROCEDURAL_REASONS = (
    "unlicensed_agency",
    "revoked_agency",
    "no_worker_card",
    "non_work_visa",
    "no_social_security",
    "moratorium_destination",
)

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_COUNTRY = re.compile(COUNTRY_PATTERN)
_REGION = re.compile(REGION_PATTERN)


def parse_duration(value: object, where: str = "duration") -> timedelta:
    """Parse "90s", "15m", "1h", "7d" into a positive timedelta (ConfigError otherwise)."""
    if not isinstance(value, str):
        raise ConfigError(f'{where}: expected a duration string like "1h" or "7d", got {value!r}')
    m = _DURATION.match(value.strip())
    if not m:
        raise ConfigError(
            f'{where}: bad duration {value!r} (use an integer and one of s, m, h, d: "90s", "7d")'
        )
    n = int(m.group(1))
    if n <= 0:
        raise ConfigError(f"{where}: duration {value!r} must be positive")
    return timedelta(**{_UNITS[m.group(2)]: n})


def format_duration(value: timedelta) -> str:
    """The policy file's notation for a duration: "90s", "15m", "1h", "7d"."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def load_policy(path: Path | str | None = None) -> Policy:
    """Load and validate a policy file; ``None`` loads the default shipped with the code."""
    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"policy {p}: cannot read ({exc.strerror or exc})") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy {p}: not valid TOML: {exc}") from exc
    try:
        return policy_from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"policy {p}: {exc}") from exc


def policy_from_dict(doc: dict[str, Any]) -> Policy:
    """Build a Policy from the parsed TOML document (strict: unknown keys are errors)."""
    _keys(
        doc,
        "policy",
        required=("dedup", "severity", "headquarters", "posts", "sla"),
        optional=(
            "non_procedural",
            "coverage",
            "claims",
            "retention",
            "sources",
            "hooks",
            "intake",
            *_PREVENTION_SECTIONS,
        ),
    )
    dedup = _table(doc["dedup"], "dedup")
    _keys(dedup, "dedup", required=("window",))
    category_severity = _severity(_table(doc["severity"], "severity"))
    posts = _posts(doc["posts"])
    hq = doc["headquarters"]
    if not isinstance(hq, str) or hq not in posts:
        raise ConfigError(f"headquarters: {hq!r} is not a post_id of [[posts]]")
    if posts[hq].mission_kind != "headquarters":
        raise ConfigError(f'headquarters: post {hq!r} must have mission_kind = "headquarters"')
    return Policy(
        dedup_window=parse_duration(dedup["window"], "dedup.window"),
        category_severity=category_severity,
        posts=posts,
        headquarters=hq,
        sla=_sla(_table(doc["sla"], "sla")),
        non_procedural=_non_procedural(_table(doc.get("non_procedural", {}), "non_procedural")),
        coverage=_coverage(_table(doc.get("coverage", {}), "coverage")),
        claims=_claims(_table(doc.get("claims", {}), "claims")),
        retention=_retention(_table(doc.get("retention", {}), "retention")),
        sources=_sources(doc.get("sources", [])),
        hooks=_table(doc.get("hooks", {}), "hooks"),
        intake=_intake(_table(doc.get("intake", {}), "intake")),
        prevention=parse_prevention(doc, CATEGORIES),
    )


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _keys(
    table: dict[str, Any],
    where: str,
    *,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    unknown = sorted(set(table) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(sorted((*required, *optional)))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")


def _str(value: object, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _str_list(value: object, where: str, choices: tuple[str, ...] | None = None) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    out = [_str(v, f"{where}[{i}]", choices) for i, v in enumerate(value)]
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise ConfigError(f"{where}: listed twice: {', '.join(dupes)}")
    return out


def _severity(table: dict[str, Any]) -> dict[str, str]:
    _keys(table, "severity", optional=SEVERITIES)
    out: dict[str, str] = {}
    for sev in SEVERITIES:
        for cat in _str_list(table.get(sev, []), f"severity.{sev}"):
            if cat not in CATEGORIES:
                raise ConfigError(f"severity.{sev}: unknown category {cat!r}")
            if cat in out:
                raise ConfigError(
                    f"severity: category {cat!r} is assigned to both {out[cat]} and {sev}"
                )
            out[cat] = sev
    missing = [c for c in CATEGORIES if c not in out]
    if missing:
        raise ConfigError(f"severity: categories without a severity: {', '.join(missing)}")
    return out


_POST_KEYS = ("post_id", "name", "mission_kind", "labour_post")
_POST_OPTIONAL = ("country", "regions", "head_of_mission", "protection_desk", "timezone")


def _timezone(value: object, where: str) -> str:
    """An IANA time zone name the system's zone database knows."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f'{where}: expected an IANA time zone like "Asia/Jakarta", got {value!r}')
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown time zone {value!r}") from exc
    return value


def _posts(value: object) -> dict[str, Post]:
    if not isinstance(value, list) or not value:
        raise ConfigError("posts: expected one or more [[posts]] tables")
    raw: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        t = _table(item, f"posts[{i}]")
        where = f"posts[{i}]" + (f" ({t['post_id']})" if isinstance(t.get("post_id"), str) else "")
        _keys(t, where, required=_POST_KEYS, optional=_POST_OPTIONAL)
        raw.append(t)
    ids = [_str(t["post_id"], f"posts[{i}].post_id") for i, t in enumerate(raw)]
    posts: dict[str, Post] = {}
    region_owner: dict[str, str] = {}
    for t in raw:
        pid = t["post_id"]
        where = f"posts ({pid})"
        if pid in posts:
            raise ConfigError(f"{where}: post_id listed twice")
        kind = _str(t["mission_kind"], f"{where}.mission_kind", MISSION_KINDS)
        country = t.get("country")
        if kind == "headquarters":
            if country is not None:
                raise ConfigError(f"{where}.country: headquarters has no country")
        else:
            if not isinstance(country, str) or not _COUNTRY.match(country):
                raise ConfigError(
                    f'{where}.country: expected an ISO 3166-1 alpha-2 code like "MY", got {country!r}'
                )
        regions = _str_list(t.get("regions", []), f"{where}.regions")
        for r in regions:
            if not _REGION.match(r) or country is None or not r.startswith(f"{country}-"):
                raise ConfigError(
                    f"{where}.regions: {r!r} is not an ISO 3166-2 code of {country or 'a country'}"
                )
            if r in region_owner:
                raise ConfigError(
                    f"{where}.regions: region {r} is already covered by {region_owner[r]}"
                    " (a region belongs to one post)"
                )
            region_owner[r] = pid
        hom = t.get("head_of_mission", pid)
        if not isinstance(hom, str) or hom not in ids:
            raise ConfigError(f"{where}.head_of_mission: {hom!r} is not a post_id of [[posts]]")
        desk = t.get("protection_desk", False)
        if not isinstance(desk, bool):
            raise ConfigError(f"{where}.protection_desk: expected true or false, got {desk!r}")
        tz = t.get("timezone")
        if tz is not None:
            _timezone(tz, f"{where}.timezone")
        posts[pid] = Post(
            post_id=pid,
            name=_str(t["name"], f"{where}.name"),
            country=country,
            mission_kind=kind,
            labour_post=_str(t["labour_post"], f"{where}.labour_post", LABOUR_POSTS),
            regions=tuple(regions),
            head_of_mission=hom,
            protection_desk=desk,
            timezone=tz,
        )
    # Each country needs one post for everything its regional posts do not cover.
    by_country: dict[str, list[Post]] = {}
    for post in posts.values():
        if post.country is not None:
            by_country.setdefault(post.country, []).append(post)
    for country, group in sorted(by_country.items()):
        embassies = [p.post_id for p in group if p.mission_kind == "embassy"]
        if len(embassies) > 1:
            raise ConfigError(
                f"posts: country {country} has more than one embassy: {', '.join(embassies)}"
            )
        if not embassies and len(group) > 1:
            raise ConfigError(
                f"posts: country {country} has several posts ({', '.join(p.post_id for p in group)})"
                " but no embassy to route unmatched regions to"
            )
    for post in posts.values():
        head = posts[post.head_of_mission or post.post_id]
        if head.country not in (post.country, None):
            raise ConfigError(
                f"posts ({post.post_id}).head_of_mission: {head.post_id} is in another country"
            )
    return posts


def _sla(table: dict[str, Any]) -> dict[str, Sla]:
    _keys(table, "sla", required=SEVERITIES)
    out: dict[str, Sla] = {}
    for sev in SEVERITIES:
        where = f"sla.{sev}"
        t = _table(table[sev], where)
        _keys(t, where, required=("ack", "resolve"), optional=("level2",))
        ack = parse_duration(t["ack"], f"{where}.ack")
        level2 = parse_duration(t["level2"], f"{where}.level2") if "level2" in t else None
        if level2 is not None and level2 <= ack:
            raise ConfigError(
                f"{where}.level2: must be later than ack ({t['level2']} <= {t['ack']})"
            )
        out[sev] = Sla(
            ack=ack, level2=level2, resolve=parse_duration(t["resolve"], f"{where}.resolve")
        )
    return out


def _date(value: object, where: str) -> date:
    if isinstance(value, datetime):
        raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got {value!r}")


def _non_procedural(table: dict[str, Any]) -> NonProcedural:
    _keys(
        table,
        "non_procedural",
        optional=("revoked_licenses", "moratorium", "critical_reasons", "licensed_schemes"),
    )
    default = NonProcedural()
    moratoria: list[Moratorium] = []
    raw = table.get("moratorium", [])
    if not isinstance(raw, list):
        raise ConfigError(
            "non_procedural.moratorium: expected [[non_procedural.moratorium]] tables"
        )
    for i, item in enumerate(raw):
        where = f"non_procedural.moratorium[{i}]"
        t = _table(item, where)
        _keys(
            t,
            where,
            required=("country", "effective_from"),
            optional=("effective_until", "employer_types"),
        )
        country = _str(t["country"], f"{where}.country")
        if not _COUNTRY.match(country):
            raise ConfigError(
                f"{where}.country: expected an ISO 3166-1 alpha-2 code, got {country!r}"
            )
        start = _date(t["effective_from"], f"{where}.effective_from")
        until = (
            _date(t["effective_until"], f"{where}.effective_until")
            if "effective_until" in t
            else None
        )
        if until is not None and until <= start:
            raise ConfigError(f"{where}.effective_until: must be after effective_from")
        types = _str_list(
            t.get("employer_types", ["household"]), f"{where}.employer_types", EMPLOYER_TYPES
        )
        moratoria.append(Moratorium(country, start, until, tuple(types)))
    reasons = table.get("critical_reasons")
    schemes = table.get("licensed_schemes")
    return NonProcedural(
        revoked_licenses=frozenset(
            _str_list(table.get("revoked_licenses", []), "non_procedural.revoked_licenses")
        ),
        moratoria=tuple(moratoria),
        critical_reasons=(
            frozenset(_str_list(reasons, "non_procedural.critical_reasons", NON_PROCEDURAL_REASONS))
            if reasons is not None
            else default.critical_reasons
        ),
        licensed_schemes=(
            frozenset(_str_list(schemes, "non_procedural.licensed_schemes", SCHEMES))
            if schemes is not None
            else default.licensed_schemes
        ),
    )


def _coverage(table: dict[str, Any]) -> Coverage:
    keys = ("pre_placement", "post_placement", "default_contract")
    _keys(table, "coverage", optional=(*keys, "gap_categories"))
    default = Coverage()
    durations: dict[str, Any] = {
        k: parse_duration(table[k], f"coverage.{k}") if k in table else getattr(default, k)
        for k in keys
    }
    if "gap_categories" not in table:
        return replace(default, **durations)
    gaps = _str_list(table["gap_categories"], "coverage.gap_categories", CATEGORIES)
    return replace(default, **durations, gap_categories=frozenset(gaps))


def _claims(table: dict[str, Any]) -> ClaimsPolicy:
    _keys(table, "claims", optional=("stall",))
    stall = (
        parse_duration(table["stall"], "claims.stall") if "stall" in table else ClaimsPolicy().stall
    )
    return ClaimsPolicy(stall=stall)


_RETENTION_DURATIONS = (
    "outbox",
    "deadletters",
    "audit_log",
    "processed_events",
    "hooks",
    "interval",
)


def _retention(table: dict[str, Any]) -> Retention:
    _keys(table, "retention", optional=(*_RETENTION_DURATIONS, "batch"))
    default = Retention()
    durations: dict[str, Any] = {
        k: parse_duration(table[k], f"retention.{k}") if k in table else getattr(default, k)
        for k in _RETENTION_DURATIONS
    }
    if durations["processed_events"] < PROCESSED_EVENTS_FLOOR:
        raise ConfigError(
            f"retention.processed_events: {table['processed_events']!r} is shorter than the "
            f"{PROCESSED_EVENTS_FLOOR.days}d minimum (the dedup window must outlive any "
            "redelivery: a consumer group keeps its offsets 7 days by default)"
        )
    batch = table.get("batch", default.batch)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
        raise ConfigError(f"retention.batch: expected an integer from 1 to 100000, got {batch!r}")
    return Retention(**durations, batch=batch)


def _sources(value: object) -> tuple[ExpectedSource, ...]:
    """``[[sources]]``: source (the CloudEvents ``source``, exact), name, max_silence,
    severity (default "high")."""
    if not isinstance(value, list):
        raise ConfigError("sources: expected [[sources]] tables")
    out: list[ExpectedSource] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        t = _table(item, f"sources[{i}]")
        where = f"sources[{i}]" + (f" ({t['source']})" if isinstance(t.get("source"), str) else "")
        _keys(t, where, required=("source", "name", "max_silence"), optional=("severity",))
        source = _str(t["source"], f"{where}.source")
        if source in seen:
            raise ConfigError(f"{where}.source: listed twice")
        seen.add(source)
        out.append(
            ExpectedSource(
                source=source,
                name=_str(t["name"], f"{where}.name"),
                max_silence=parse_duration(t["max_silence"], f"{where}.max_silence"),
                severity=_str(t.get("severity", "high"), f"{where}.severity", SEVERITIES),
            )
        )
    return tuple(out)


def _intake(table: dict[str, Any]) -> IntakePolicy:
    keys = ("max_event_age", "max_action_age")
    _keys(table, "intake", optional=keys)
    default = IntakePolicy()
    return IntakePolicy(
        **{
            k: parse_duration(table[k], f"intake.{k}") if k in table else getattr(default, k)
            for k in keys
        }
    )
