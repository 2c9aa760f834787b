"""Pure decisions of the alerting hooks: no I/O, so they are tested exhaustively and fast.

Rules decided where the design is silent:
- An alert's *facts* come from its CloudEvent: ``type``; ``posts`` = the case's ``post_id``
  and, for an escalation, ``escalated_to`` (a receiver of headquarters matches level-2
  escalations of every post); ``severity``, ``kind``, ``case_id``, ``worker_id``; ``level`` =
  ``data.level`` of an escalation, else the case's ``escalation_level``.
- A matcher is a set of fields (``posts``, ``severities``, ``kinds``, ``types``, ``levels``,
  ``cases``, ``workers``, ``receivers``); every field given must match (AND), one of its
  values is enough (OR). ``types`` are shell-style patterns (``garda.alert.*``). A field given
  for a fact the alert does not have does not match. An empty matcher matches everything.
- Order of the decision for one alert and one receiver: never-muted alerts (policy) are
  always sent; else an active silence matching the alert (and the receiver, when the
  silence names receivers) silences it; else a lower-severity alert of a worker with an
  open critical case (another case, one this receiver follows) is held by that case.
- Retries: attempt 1 is immediate; after the n-th failure the next attempt waits
  ``schedule[n-1]`` (or longer if the receiver's ``Retry-After`` asks), with up to 10 %
  jitter; the last attempt happens at the horizon at the latest; past it the delivery fails.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from errors import ConfigError

MATCHER_FIELDS = (
    "posts",
    "severities",
    "kinds",
    "types",
    "levels",
    "cases",
    "workers",
    "receivers",
)
# singular spellings accepted on the command line (``--matcher severity=high``)
SINGULAR = {
    "post": "posts",
    "severity": "severities",
    "kind": "kinds",
    "type": "types",
    "level": "levels",
    "case": "cases",
    "case_id": "cases",
    "worker": "workers",
    "worker_id": "workers",
    "receiver": "receivers",
}
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass(frozen=True)
class Facts:
    """What matchers look at in one alert."""

    type: str
    posts: frozenset[str] = frozenset()
    severity: str | None = None
    kind: str | None = None
    level: int | None = None
    case_id: str | None = None
    worker_id: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Facts:
        data = event.get("data") or {}
        posts = {p for p in (data.get("post_id"), data.get("escalated_to")) if isinstance(p, str)}
        level = data.get("level") if "level" in data else data.get("escalation_level")
        return cls(
            type=str(event.get("type", "")),
            posts=frozenset(posts),
            severity=data.get("severity"),
            kind=data.get("kind"),
            level=level if isinstance(level, int) and not isinstance(level, bool) else None,
            case_id=data.get("case_id"),
            worker_id=data.get("worker_id") or event.get("subject"),
        )


@dataclass(frozen=True)
class Matcher:
    posts: frozenset[str] | None = None
    severities: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    types: tuple[str, ...] | None = None
    levels: frozenset[int] | None = None
    cases: frozenset[str] | None = None
    workers: frozenset[str] | None = None
    receivers: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in MATCHER_FIELDS)

    def matches(
        self, facts: Facts, receiver: str | None = None, *, ignore_type: bool = False
    ) -> bool:
        if self.posts is not None and not (self.posts & facts.posts):
            return False
        if self.severities is not None and facts.severity not in self.severities:
            return False
        if self.kinds is not None and facts.kind not in self.kinds:
            return False
        if not ignore_type:
            if self.types is not None and not any(
                fnmatch.fnmatchcase(facts.type, t) for t in self.types
            ):
                return False
            if self.levels is not None and facts.level not in self.levels:
                return False
        if self.cases is not None and facts.case_id not in self.cases:
            return False
        if self.workers is not None and facts.worker_id not in self.workers:
            return False
        if self.receivers is not None and receiver is not None and receiver not in self.receivers:
            return False
        return True

    def to_doc(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for f in MATCHER_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[f] = sorted(v)
        return out

    def describe(self) -> str:
        return " ".join(f"{k}={','.join(map(str, v))}" for k, v in self.to_doc().items()) or "*"


def matcher_from_doc(doc: Mapping[str, Any], where: str) -> Matcher:
    """A Matcher from a TOML/JSON table (strict: unknown fields and bad values are errors)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: expected a table of matchers, got {type(doc).__name__}")
    kwargs: dict[str, Any] = {}
    for key, raw in doc.items():
        name = SINGULAR.get(key, key)
        if name not in MATCHER_FIELDS:
            raise ConfigError(
                f"{where}: unknown matcher {key!r} (allowed: {', '.join(MATCHER_FIELDS)})"
            )
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise ConfigError(f"{where}.{key}: give at least one value or leave it out")
        if name == "levels":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"{where}.{key}: levels are integers (0, 1, 2), got {raw!r}")
            kwargs[name] = frozenset(values)
            continue
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"{where}.{key}: expected strings, got {raw!r}")
        if name == "severities":
            bad = [v for v in values if v not in SEVERITY_RANK]
            if bad:
                raise ConfigError(
                    f"{where}.{key}: unknown severity {bad[0]!r} (critical, high, medium, low)"
                )
        kwargs[name] = tuple(values) if name == "types" else frozenset(values)
    return Matcher(**kwargs)


def parse_matcher_args(args: Sequence[str]) -> Matcher:
    """``["severity=high,medium", "post=KBRI-KUALA-LUMPUR"]`` -> Matcher (the CLI syntax)."""
    doc: dict[str, list[Any]] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--matcher {arg!r}: expected NAME=VALUE[,VALUE…]")
        name = SINGULAR.get(key.strip(), key.strip())
        values: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        if name == "levels":
            try:
                values = [int(v) for v in values]
            except ValueError:
                raise ConfigError(f"--matcher {arg!r}: levels are integers") from None
        doc.setdefault(name, []).extend(values)
    return matcher_from_doc(doc, "--matcher")


@dataclass(frozen=True)
class ActiveSilence:
    silence_id: str
    matcher: Matcher
    reason: str
    ends_at: datetime


@dataclass(frozen=True)
class Disposition:
    """What happens to one alert for one receiver."""

    action: str  # "queued" | "held" | "silenced"
    reason: str | None = None
    silence_id: str | None = None
    inhibited_by: str | None = None


@dataclass(frozen=True)
class CriticalCase:
    """An open critical case of a worker (what inhibits that worker's lesser alerts)."""

    case_id: str
    facts: Facts


def decide(
    facts: Facts,
    receiver: str,
    receiver_matcher: Matcher,
    *,
    silences: Iterable[ActiveSilence] = (),
    never_mute: Iterable[Matcher] = (),
    open_critical: Iterable[CriticalCase] = (),
) -> Disposition:
    """Send, hold or silence one alert for one (matching) receiver."""
    if any(m.matches(facts) for m in never_mute):
        return Disposition("queued")
    for s in silences:
        if s.matcher.matches(facts, receiver):
            return Disposition(
                "silenced", f"silence {s.silence_id}: {s.reason}", silence_id=s.silence_id
            )
    rank = SEVERITY_RANK.get(facts.severity or "", None)
    if rank is not None and rank < SEVERITY_RANK["critical"] and facts.worker_id:
        for c in sorted(open_critical, key=lambda c: c.case_id):
            if c.case_id != facts.case_id and receiver_matcher.matches(
                c.facts, receiver, ignore_type=True
            ):
                return Disposition(
                    "held",
                    f"inhibited: {facts.severity} alert while critical case {c.case_id} is open",
                    inhibited_by=c.case_id,
                )
    return Disposition("queued")


def matching_receivers(facts: Facts, receivers: Iterable[tuple[str, Matcher]]) -> list[str]:
    return [name for name, m in receivers if m.matches(facts, name)]


@dataclass(frozen=True)
class RetryPlan:
    schedule: tuple[timedelta, ...]
    horizon: timedelta
    jitter: float = 0.1


@dataclass(frozen=True)
class NextAttempt:
    at: datetime | None  # None: give up
    reason: str = ""


def next_attempt(
    plan: RetryPlan,
    *,
    attempts_done: int,
    created_at: datetime,
    now: datetime,
    retry_after: timedelta | None = None,
    rand: float = 0.0,
) -> NextAttempt:
    """When to try again after ``attempts_done`` failed attempts (``rand`` in [0, 1))."""
    deadline = created_at + plan.horizon
    if attempts_done - 1 >= len(plan.schedule):
        return NextAttempt(None, f"gave up after {attempts_done} attempts (retry schedule done)")
    if now >= deadline:
        return NextAttempt(None, f"gave up after {attempts_done} attempts (horizon {plan.horizon})")
    delay = plan.schedule[attempts_done - 1] * (1 + plan.jitter * rand)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return NextAttempt(min(now + delay, deadline))


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(timedelta(0), when - now)


@dataclass
class GroupSlot:
    """A pending delivery an alert may join (grouping window)."""

    delivery_id: str
    not_before: datetime
    attempts: int = 0
    alerts: list[str] = field(default_factory=list)


def may_join(slot: GroupSlot, now: datetime) -> bool:
    """An alert joins a pending delivery of its case only before that delivery's first try."""
    return slot.attempts == 0 and slot.not_before > now
