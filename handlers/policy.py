"""The policy: every number and table the rules use (design §5), from a TOML file.

The default policy ships as ``handlers/default_policy.toml``; ``GARDA_POLICY`` replaces it.
Durations in the file are strings such as "90s", "15m", "1h", "7d".

Shape (``load_policy``/``parse_duration`` below; each table's keys and value types are
declared as a ``handlers.policy_shape.PolicyTable`` model, the checks between values are
the ``_build_*`` functions):
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from errors import ConfigError
from handlers.model import SEVERITIES
from handlers.policy_shape import (
    WORDS,
    Bool,
    Categories,
    Country,
    Date,
    Duration,
    Loc,
    PolicyTable,
    Severity,
    SlaTable,
    Str,
    StrList,
    Table,
    Timezone,
    duration_or_problem,
    fail,
    one_of,
    parse,
    path,
    set_keys,
    tables,
)
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
#
# The shape of each table (its keys, which are required, the type of each value) is
# declared once, as a model below (``handlers.policy_shape.PolicyTable``, pydantic); the
# checks that relate several values (a region owned by two posts, a level2 before its
# ack...) are plain code in the ``_build_*`` functions. ``policy_shape.parse`` turns the
# first problem into the ConfigError text "<where>: <what>" (where: the key's path).
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

_COUNTRY = re.compile(COUNTRY_PATTERN)
_REGION = re.compile(REGION_PATTERN)


def parse_duration(value: object, where: str = "duration") -> timedelta:
    """Parse "90s", "15m", "1h", "7d" into a positive timedelta (ConfigError otherwise)."""
    got = duration_or_problem(value)
    if isinstance(got, str):
        raise ConfigError(f"{where}: {got}")
    return got


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


# -- the tables ---------------------------------------------------------------------------


def _a_batch(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise fail(f"expected an integer from 1 to 100000, got {value!r}")
    return value


Reasons = Annotated[list[Annotated[str, BeforeValidator(one_of(NON_PROCEDURAL_REASONS))]], *WORDS]
Schemes = Annotated[list[Annotated[str, BeforeValidator(one_of(SCHEMES))]], *WORDS]
EmployerTypes = Annotated[list[Annotated[str, BeforeValidator(one_of(EMPLOYER_TYPES))]], *WORDS]


class _Document(PolicyTable):
    """The top level: which tables there are (each is checked on its own, in this order)."""

    dedup: Any
    severity: Any
    headquarters: Any
    posts: Any
    sla: Any
    non_procedural: Any = None
    coverage: Any = None
    claims: Any = None
    retention: Any = None
    sources: Any = None
    hooks: Any = None
    intake: Any = None
    # the prevention sections (handlers.prevention_policy checks them)
    referrals: Any = None
    reintegration: Any = None
    employers: Any = None
    agencies: Any = None


class _Dedup(PolicyTable):
    window: Duration


class _Severity(PolicyTable):  # the order of SEVERITIES (also the order of the checks)
    low: StrList = []
    medium: StrList = []
    high: StrList = []
    critical: StrList = []


class _Post(PolicyTable):
    post_id: Str
    name: Str
    mission_kind: Annotated[str, BeforeValidator(one_of(MISSION_KINDS))]
    labour_post: Annotated[str, BeforeValidator(one_of(LABOUR_POSTS))]
    country: Any = None  # checked with mission_kind (headquarters has none)
    regions: StrList = []
    head_of_mission: Any = None  # a post_id of [[posts]] (checked against them)
    protection_desk: Bool = False
    timezone: Timezone | None = None


class _Posts(PolicyTable):
    posts: Annotated[
        list[_Post],
        BeforeValidator(tables("expected one or more [[posts]] tables", nonempty=True)),
    ]


class _Sla(PolicyTable):  # the order of SEVERITIES
    low: SlaTable
    medium: SlaTable
    high: SlaTable
    critical: SlaTable


class _Moratorium(PolicyTable):
    country: Country
    effective_from: Date
    effective_until: Date | None = None
    employer_types: EmployerTypes | None = None


class _NonProcedural(PolicyTable):
    revoked_licenses: StrList = []
    moratorium: Annotated[
        list[_Moratorium],
        BeforeValidator(tables("expected [[non_procedural.moratorium]] tables")),
    ] = []
    critical_reasons: Reasons | None = None
    licensed_schemes: Schemes | None = None


class _Coverage(PolicyTable):
    pre_placement: Duration | None = None
    post_placement: Duration | None = None
    default_contract: Duration | None = None
    gap_categories: Categories | None = None


class _Claims(PolicyTable):
    stall: Duration | None = None


class _Retention(PolicyTable):
    outbox: Duration | None = None
    deadletters: Duration | None = None
    audit_log: Duration | None = None
    processed_events: Duration | None = None
    hooks: Duration | None = None
    interval: Duration | None = None
    batch: Annotated[int, BeforeValidator(_a_batch)] | None = None


class _Source(PolicyTable):
    source: Str
    name: Str
    max_silence: Duration
    severity: Severity = "high"


class _Sources(PolicyTable):
    sources: Annotated[list[_Source], BeforeValidator(tables("expected [[sources]] tables"))]


class _Intake(PolicyTable):
    max_event_age: Duration | None = None
    max_action_age: Duration | None = None


class _Hooks(PolicyTable):
    hooks: Table  # what it holds is checked by infra.hooks.policy


def _where_in_posts(posts: object) -> Callable[[Loc], str]:
    """Where a problem of ``[[posts]]`` is: ``posts[3] (KBRI-SEOUL)`` for the whole table,
    ``posts (KBRI-SEOUL).country`` for one of its keys, ``posts[3].post_id``."""

    def where(loc: Loc) -> str:
        loc = loc[1:]  # the wrapper's "posts"
        if not loc or not isinstance(loc[0], int):
            return "posts" + path(loc)
        i, rest = loc[0], path(loc[1:])
        item = posts[i] if isinstance(posts, list) and i < len(posts) else None
        pid = item.get("post_id") if isinstance(item, dict) else None
        if not isinstance(pid, str):
            return f"posts[{i}]{rest}"
        if not rest:
            return f"posts[{i}] ({pid})"
        return f"posts[{i}]{rest}" if rest == ".post_id" else f"posts ({pid}){rest}"

    return where


def _where_in_sources(sources: object) -> Callable[[Loc], str]:
    """``sources[0] (bpjs-tk/claims).name``."""

    def where(loc: Loc) -> str:
        loc = loc[1:]  # the wrapper's "sources"
        if not loc or not isinstance(loc[0], int):
            return "sources" + path(loc)
        i = loc[0]
        item = sources[i] if isinstance(sources, list) and i < len(sources) else None
        src = item.get("source") if isinstance(item, dict) else None
        return f"sources[{i}]" + (f" ({src})" if isinstance(src, str) else "") + path(loc[1:])

    return where


# -- the policy ---------------------------------------------------------------------------


def policy_from_dict(doc: dict[str, Any]) -> Policy:
    """Build a Policy from the parsed TOML document (strict: unknown keys are errors)."""
    parse(_Document, doc, "policy")
    dedup = parse(_Dedup, doc["dedup"], "dedup")
    category_severity = _build_severity(parse(_Severity, doc["severity"], "severity"))
    in_posts = _where_in_posts(doc["posts"])
    posts = _build_posts(parse(_Posts, {"posts": doc["posts"]}, "", where_of=in_posts).posts)
    hq = doc["headquarters"]
    if not isinstance(hq, str) or hq not in posts:
        raise ConfigError(f"headquarters: {hq!r} is not a post_id of [[posts]]")
    if posts[hq].mission_kind != "headquarters":
        raise ConfigError(f'headquarters: post {hq!r} must have mission_kind = "headquarters"')
    sources = doc.get("sources", [])
    return Policy(
        dedup_window=dedup.window,
        category_severity=category_severity,
        posts=posts,
        headquarters=hq,
        sla=_build_sla(parse(_Sla, doc["sla"], "sla"), doc["sla"]),
        non_procedural=_build_non_procedural(
            parse(_NonProcedural, doc.get("non_procedural", {}), "non_procedural")
        ),
        coverage=_build_coverage(parse(_Coverage, doc.get("coverage", {}), "coverage")),
        claims=_build_claims(parse(_Claims, doc.get("claims", {}), "claims")),
        retention=_build_retention(
            parse(_Retention, doc.get("retention", {}), "retention"), doc.get("retention", {})
        ),
        sources=_build_sources(
            parse(_Sources, {"sources": sources}, "", where_of=_where_in_sources(sources)).sources
        ),
        hooks=parse(_Hooks, {"hooks": doc.get("hooks", {})}, "").hooks,
        intake=_build_intake(parse(_Intake, doc.get("intake", {}), "intake")),
        prevention=parse_prevention(doc),
    )


def _build_severity(table: _Severity) -> dict[str, str]:
    out: dict[str, str] = {}
    for sev in SEVERITIES:
        for cat in getattr(table, sev):
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


def _build_posts(raw: list[_Post]) -> dict[str, Post]:
    ids = [t.post_id for t in raw]
    posts: dict[str, Post] = {}
    region_owner: dict[str, str] = {}
    for t in raw:
        pid = t.post_id
        where = f"posts ({pid})"
        if pid in posts:
            raise ConfigError(f"{where}: post_id listed twice")
        country = t.country
        if t.mission_kind == "headquarters":
            if country is not None:
                raise ConfigError(f"{where}.country: headquarters has no country")
        elif not isinstance(country, str) or not _COUNTRY.match(country):
            raise ConfigError(
                f'{where}.country: expected an ISO 3166-1 alpha-2 code like "MY", got {country!r}'
            )
        for r in t.regions:
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
        hom = pid if t.head_of_mission is None else t.head_of_mission
        if not isinstance(hom, str) or hom not in ids:
            raise ConfigError(f"{where}.head_of_mission: {hom!r} is not a post_id of [[posts]]")
        posts[pid] = Post(
            post_id=pid,
            name=t.name,
            country=country,
            mission_kind=t.mission_kind,
            labour_post=t.labour_post,
            regions=tuple(t.regions),
            head_of_mission=hom,
            protection_desk=t.protection_desk,
            timezone=t.timezone,
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


def _build_sla(table: _Sla, raw: dict[str, Any]) -> dict[str, Sla]:
    out: dict[str, Sla] = {}
    for sev in SEVERITIES:
        t: SlaTable = getattr(table, sev)
        if t.level2 is not None and t.level2 <= t.ack:
            given = raw[sev]  # as written in the file
            raise ConfigError(
                f"sla.{sev}.level2: must be later than ack ({given['level2']} <= {given['ack']})"
            )
        out[sev] = Sla(ack=t.ack, level2=t.level2, resolve=t.resolve)
    return out


def _build_non_procedural(table: _NonProcedural) -> NonProcedural:
    default = NonProcedural()
    moratoria: list[Moratorium] = []
    for i, m in enumerate(table.moratorium):
        if m.effective_until is not None and m.effective_until <= m.effective_from:
            raise ConfigError(
                f"non_procedural.moratorium[{i}].effective_until: must be after effective_from"
            )
        types = Moratorium.employer_types if m.employer_types is None else tuple(m.employer_types)
        moratoria.append(Moratorium(m.country, m.effective_from, m.effective_until, types))
    return NonProcedural(
        revoked_licenses=frozenset(table.revoked_licenses),
        moratoria=tuple(moratoria),
        critical_reasons=default.critical_reasons
        if table.critical_reasons is None
        else frozenset(table.critical_reasons),
        licensed_schemes=default.licensed_schemes
        if table.licensed_schemes is None
        else frozenset(table.licensed_schemes),
    )


def _build_coverage(table: _Coverage) -> Coverage:
    given = set_keys(table, "pre_placement", "post_placement", "default_contract")
    if table.gap_categories is not None:
        given["gap_categories"] = frozenset(table.gap_categories)
    return replace(Coverage(), **given)


def _build_claims(table: _Claims) -> ClaimsPolicy:
    return replace(ClaimsPolicy(), **set_keys(table, "stall"))


_RETENTION_KEYS = ("outbox", "deadletters", "audit_log", "processed_events", "hooks", "interval")


def _build_retention(table: _Retention, raw: dict[str, Any]) -> Retention:
    retention = replace(Retention(), **set_keys(table, *_RETENTION_KEYS, "batch"))
    if retention.processed_events < PROCESSED_EVENTS_FLOOR:
        raise ConfigError(
            f"retention.processed_events: {raw['processed_events']!r} is shorter than the "
            f"{PROCESSED_EVENTS_FLOOR.days}d minimum (the dedup window must outlive any "
            "redelivery: a consumer group keeps its offsets 7 days by default)"
        )
    return retention


def _build_sources(raw: list[_Source]) -> tuple[ExpectedSource, ...]:
    """``[[sources]]``: source (the CloudEvents ``source``, exact), name, max_silence,
    severity (default "high")."""
    seen: set[str] = set()
    for i, t in enumerate(raw):
        if t.source in seen:
            raise ConfigError(f"sources[{i}] ({t.source}).source: listed twice")
        seen.add(t.source)
    return tuple(ExpectedSource(t.source, t.name, t.max_silence, t.severity) for t in raw)


def _build_intake(table: _Intake) -> IntakePolicy:
    return replace(IntakePolicy(), **set_keys(table, "max_event_age", "max_action_age"))
