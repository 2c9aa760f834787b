"""The state the rules work on: a worker with their cases and claims (one aggregate per worker).

Plain dataclasses, no I/O. ``to_doc``/``from_doc`` give the JSON form the database keeps
(``doc_json`` writes it as JSON text straight from the dataclass; ``from_doc`` also reads a
case document of the layout before migration 015, when the escalation and claim facts were
``detail`` keys); ``Case.public`` is the published case
JSON. Datetimes are timezone-aware UTC everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from schemas.fields import iso as iso
from schemas.fields import parse_dt as parse_dt
from schemas.types import SEVERITIES as SEVERITIES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")

CASE_KINDS = (
    "protection",
    "non_procedural_departure",
    "coverage_gap",
    "claim_dispute",
    # prevention and aftercare (handlers.reintegration, handlers.employers)
    "reintegration",
    "preventive_visit",
)
CASE_STATUSES = ("open", "acknowledged", "resolved", "reopened")
OPEN_STATUSES = ("open", "acknowledged", "reopened")
WORKER_STATES = (
    "departed",
    "placed",
    "returned",
    "failed_departure",
    "deceased",
    "unregistered_abroad",
)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def max_severity(a: str, b: str) -> str:
    return a if severity_rank(a) >= severity_rank(b) else b


ID_SEPARATOR = "\x1f"
ID_ESCAPE = "\x1e"


def _id_part(part: str) -> str:
    """``part`` with the separator and the escape character escaped (unchanged without them)."""
    if ID_SEPARATOR not in part and ID_ESCAPE not in part:
        return part
    return part.replace(ID_ESCAPE, ID_ESCAPE * 2).replace(ID_SEPARATOR, ID_ESCAPE + "s")


def stable_id(*parts: str, prefix: str = "", length: int = 16) -> str:
    """A deterministic id from its cause, so that a replay derives the same id.

    The parts are joined injectively: the separator (U+001F) and the escape (U+001E) are
    escaped inside a part, so ``("a\x1fb", "c")`` and ``("a", "b\x1fc")`` hash different
    texts. Parts without either character hash exactly as before (ids already derived stay
    valid); inputs cannot hold control characters anyway (``schemas`` refuses them).
    Surrogates are written with ``surrogatepass`` so that no text can make this raise.
    """
    text = ID_SEPARATOR.join(parts)
    if ID_ESCAPE in text or text.count(ID_SEPARATOR) != len(parts) - 1:
        text = ID_SEPARATOR.join(_id_part(p) for p in parts)  # a part holds one of them
    return f"{prefix}{id_digest(text, length)}"


def id_digest(text: str, length: int = 16) -> str:
    """The id of an injectively joined text (``stable_id``'s last step; ``Ctx.derive_id``
    joins its own)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _to_json(value: Any) -> Any:
    """``value`` as JSON-ready data: datetimes as ``iso`` text, tuples as lists, new
    containers. Exact types take the fast path (one type lookup per leaf, UTC datetimes
    written by ``iso``, which remembers them); anything else (subclasses) the ``isinstance`` one."""
    t = type(value)
    if t in _SCALARS:
        return value
    if t is datetime:
        return iso(value)  # a UTC one from iso's cache
    if t is dict:
        return {k: v if type(v) in _SCALARS else _to_json(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [v if type(v) in _SCALARS else _to_json(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _doc(obj: Any) -> dict[str, Any]:
    """The JSON form of a dataclass instance (a fresh structure; datetimes as ISO text).

    A plain walk over the fields: ``dataclasses.asdict`` deep-copies every value first and
    was the processor's single largest cost.
    """
    values = obj.__dict__
    return {
        name: v if type(v := values[name]) in _SCALARS else _to_json(v)
        for name in _NAMES[type(obj)]
    }


# ``doc_json``: orjson writes a datetime whose offset is zero as ``iso`` does (``Z``, the
# microseconds only when not 0); one with another offset (or none) it writes with that
# offset (or none), where ``iso`` converts to UTC. Such a time, and only such text, is
# followed by ``+``, ``-`` or the closing quote; a document where the pattern matches (a
# string that merely looks like one included) is written from ``to_doc`` instead.
_DOC_OPTIONS = orjson.OPT_UTC_Z
_NOT_UTC_TIME = re.compile(rb'T\d\d:\d\d:\d\d(?:\.\d+)?[+\-"]')


def doc_json(obj: Case | Claim | Worker) -> bytes:
    """The stored document of ``obj`` as JSON (UTF-8): the JSON of ``obj.to_doc()``.

    orjson writes the dataclass directly (no dict built first: about a fifth of the cost)
    when that gives the same JSON: every attribute a field, every datetime in UTC, nothing
    orjson refuses. Otherwise the dict ``to_doc`` builds, written by ``json_bytes``.
    One function for the live upserts (``infra.store``) and the rebuild's COPY
    (``infra.bulk``).
    """
    if len(obj.__dict__) == _WIDTH.get(type(obj)):  # an extra attribute would be written
        try:
            text = orjson.dumps(obj, option=_DOC_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a non-str key
            pass
        else:
            if _NOT_UTC_TIME.search(text) is None:
                return text
    return json_bytes(obj.to_doc())


def json_bytes(value: Any) -> bytes:
    """JSON of a document (``to_doc()``, a timeline row's detail): orjson; what it refuses
    (an integer beyond 64 bits, a non-string key) the json module writes (PostgreSQL refuses
    what is not valid JSON text, e.g. a lone surrogate, as before)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def _from_json(cls: type[_T], doc: dict[str, Any]) -> _T:
    kwargs: dict[str, Any] = {}
    for name, is_datetime in _FROM_JSON[cls]:
        if name not in doc:
            continue
        value = doc[name]
        if is_datetime and isinstance(value, str):
            value = parse_dt(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass
class Case:
    case_id: str
    worker_id: str
    kind: str
    category: str | None
    severity: str
    post_id: str
    opened_at: datetime
    status: str = "open"
    escalation_level: int = 0
    ack_due: datetime | None = None
    resolve_due: datetime | None = None
    reports: int = 1
    country: str | None = None
    region: str | None = None
    routing_note: str | None = None  # e.g. "no labour post in XX; routed to headquarters"
    incident_ids: list[str] = field(default_factory=list)
    last_report_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    updated_at: datetime | None = None
    cause: str | None = None  # what opened it (incident id, departure event id, claim id)
    # Escalation (handlers.escalation): the post the latest escalation went to; the
    # resolve_due whose escalation has fired (a missed resolve deadline fires once); the
    # start of the clocks after a reopen (None: opened_at).
    escalated_to: str | None = None
    resolve_deadline_missed: datetime | None = None
    clock_started_at: datetime | None = None
    # Claims: the claim the case is about (a claim_dispute case's claim, or the family's JKM
    # claim linked to a deceased worker's reintegration case); the JKM reminder of such a
    # case (handlers.reintegration: due, sent); the benefit suggested for a death
    # (handlers.coverage: program, when), raised once.
    claim_id: str | None = None
    jkm_due: datetime | None = None
    jkm_reminded_at: datetime | None = None
    claim_suggested: str | None = None
    claim_suggested_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # other kind-specific facts (reasons)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_doc(self) -> dict[str, Any]:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Case:
        detail = doc.get("detail")
        if detail and not _LEGACY_DETAIL.isdisjoint(detail):
            doc = _lift_legacy(doc)
        return _from_json(cls, doc)

    def public_detail(self) -> dict[str, Any]:
        """``detail`` as published (JSON): the free facts plus the typed escalation and
        claim facts under the keys the case document has always had them
        (``escalated_to``, ``resolve_deadline_missed``, ``clock_started_at``, a dispute's
        ``claim_id``, ``jkm: {claim_id, due, reminded_at}``, ``claim_suggested: {program,
        at}``), each only when set."""
        out: dict[str, Any] = {}
        for k, v in self.detail.items():  # a loop: a comprehension is a call (Python 3.11)
            out[k] = v if type(v) in _SCALARS else _to_json(v)
        if self.escalated_to is not None:
            out["escalated_to"] = self.escalated_to
        if self.resolve_deadline_missed is not None:
            out["resolve_deadline_missed"] = iso(self.resolve_deadline_missed)
        if self.clock_started_at is not None:
            out["clock_started_at"] = iso(self.clock_started_at)
        if self.jkm_due is not None:
            out["jkm"] = {
                "claim_id": self.claim_id,
                "due": iso(self.jkm_due),
                "reminded_at": iso(self.jkm_reminded_at),
            }
        elif self.claim_id is not None:
            out["claim_id"] = self.claim_id
        if self.claim_suggested is not None:
            out["claim_suggested"] = {
                "program": self.claim_suggested,
                "at": iso(self.claim_suggested_at),
            }
        return out

    def public(self) -> dict[str, Any]:
        """The JSON keys of design §6 (without ``timeline``), plus routing facts."""
        return {
            "case_id": self.case_id,
            "worker_id": self.worker_id,
            "kind": self.kind,
            "category": self.category,
            "severity": self.severity,
            "status": self.status,
            "post_id": self.post_id,
            "escalation_level": self.escalation_level,
            "ack_due": iso(self.ack_due),
            "resolve_due": iso(self.resolve_due),
            "opened_at": iso(self.opened_at),
            "reports": self.reports,
            "country": self.country,
            "region": self.region,
            "routing_note": self.routing_note,
            "detail": self.public_detail(),
        }


# The keys a case document kept in ``detail`` before these facts were typed fields of the
# case (migration 015 moves stored rows; ``Case.from_doc`` lifts any it still meets).
_LEGACY_DETAIL = frozenset(
    {"escalated_to", "resolve_deadline_missed", "clock_started_at", "claim_id", "jkm"}
    | {"claim_suggested"}
)


def _lift_legacy(doc: dict[str, Any]) -> dict[str, Any]:
    """A case document of the old layout in the current one (the inverse of public_detail)."""
    detail = dict(doc["detail"])
    out = {**doc, "detail": detail}
    for key in ("escalated_to", "resolve_deadline_missed", "clock_started_at"):
        if key in detail:
            out[key] = detail.pop(key)
    if "claim_id" in detail:
        out["claim_id"] = detail.pop("claim_id")
    jkm = detail.pop("jkm", None)
    if isinstance(jkm, dict):
        out["claim_id"] = jkm.get("claim_id")
        out["jkm_due"] = jkm.get("due")
        out["jkm_reminded_at"] = jkm.get("reminded_at")
    suggested = detail.pop("claim_suggested", None)
    if isinstance(suggested, dict):
        out["claim_suggested"] = suggested.get("program")
        out["claim_suggested_at"] = suggested.get("at")
    return out


@dataclass
class Claim:
    claim_id: str
    worker_id: str
    program: str
    status: str = "filed"
    event_date: str | None = None
    filed_at: datetime | None = None
    last_change_at: datetime | None = None
    incident_id: str | None = None
    case_id: str | None = None
    amount_idr: int | None = None
    amount_paid_idr: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    out_of_order: bool = False
    stall_handled_for: datetime | None = None  # the last change whose stall was handled

    def to_doc(self) -> dict[str, Any]:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Claim:
        return _from_json(cls, doc)


@dataclass
class Worker:
    worker_id: str
    state: str | None = None
    country: str | None = None
    region: str | None = None
    non_procedural: bool = False
    non_procedural_reasons: list[str] = field(default_factory=list)
    insured_until: datetime | None = None
    insured_from: datetime | None = None
    departed_at: datetime | None = None
    arrived_at: datetime | None = None
    returned_at: datetime | None = None
    return_reason: str | None = None
    contract_start: datetime | None = None
    contract_end: datetime | None = None
    scheme: str | None = None
    employer_type: str | None = None
    sector: str | None = None
    has_social_security: bool = False
    first_seen_via: str | None = None  # event type that created the record
    updated_at: datetime | None = None
    # Business time of the latest journey state change (departed_at, failed at, reported_at,
    # returned_at): a journey event older than this does not move the state back
    # (handlers.journey). None for a worker known only through an incident or claim.
    state_at: datetime | None = None
    # Journey irregularities seen so far (e.g. "arrival_without_departure"); no timeline row.
    anomalies: list[str] = field(default_factory=list)
    # Prevention and aftercare: where the worker comes from (departure ``origin``: province,
    # regency, village codes), the employer they are placed with (``handlers.employers``),
    # the placement agency's licence of the current journey (``handlers.agencies``) and
    # prevention flags.
    origin: dict[str, str] | None = None
    employer: dict[str, Any] | None = None  # {key, name, country, region}
    p3mi_license: str | None = None
    flags: list[str] = field(default_factory=list)  # e.g. "watchlisted_employer"

    def to_doc(self) -> dict[str, Any]:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Worker:
        return _from_json(cls, doc)


_OPENED_AT = operator.attrgetter("opened_at")
_CRISIS = ("critical", "high")  # the severities that put a worker in crisis


@dataclass
class Aggregate:
    """Everything the rules need about one worker."""

    worker: Worker
    cases: dict[str, Case] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    exists: bool = False  # a worker row was stored before this batch

    def open_cases(self) -> list[Case]:
        """The open cases, first opened first (a stable sort: equal times in dict order)."""
        found = [c for c in self.cases.values() if c.status in OPEN_STATUSES]
        if len(found) > 1:
            found.sort(key=_OPENED_AT)
        return found

    def in_crisis(self) -> bool:
        return any(c.severity in _CRISIS for c in self.open_cases())

    def worker_public(self) -> dict[str, Any]:
        """The worker JSON keys of design §6 (``in_crisis`` as :meth:`in_crisis`, from the
        one sorted list of open cases)."""
        w = self.worker
        in_crisis = False
        open_ids: list[str] = []
        if self.cases:  # one loop (a generator and a comprehension are calls, Python 3.11)
            for c in self.open_cases():
                open_ids.append(c.case_id)
                if c.severity in _CRISIS:
                    in_crisis = True
        return {
            "worker_id": w.worker_id,
            "state": w.state,
            "in_crisis": in_crisis,
            "non_procedural": w.non_procedural,
            "non_procedural_reasons": list(w.non_procedural_reasons),
            "insured_until": iso(w.insured_until),
            "open_cases": open_ids,
            "country": w.country,
            "region": w.region,
        }


@dataclass
class TimelineEntry:
    """One append-only line of a case's audit trail."""

    entry_id: str  # deterministic: derived from the input event and the position in its effects
    case_id: str
    at: datetime
    type: str  # e.g. garda.case.opened, garda.case.report-attached, pmi.case.note-added
    actor: str | None = None  # officer id, "garda" for automatic steps, reporter for reports
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputEvent:
    """An event Garda publishes (structured CloudEvent) via the outbox."""

    topic: str  # logical topic, e.g. schemas.topics.CASES
    type: str
    key: str  # worker_id
    data: dict[str, Any]
    id: str  # deterministic
    subject: str | None = None


@dataclass
class Effects:
    events: list[OutputEvent] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.events.extend(other.events)
        self.timeline.extend(other.timeline)


@dataclass
class Result:
    aggregate: Aggregate
    effects: Effects
    outcome: str  # short word for the log line: opened, attached, updated, escalated, ignored, ...


_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (Case, Claim, Worker)
}
_WIDTH: dict[type, int] = {cls: len(names) for cls, names in _NAMES.items()}
# (field name, whether it holds a datetime) of each stored class, for ``from_doc``.
_FROM_JSON: dict[type, tuple[tuple[str, bool], ...]] = {
    cls: tuple((f.name, "datetime" in str(f.type)) for f in dataclasses.fields(cls))
    for cls in (Case, Claim, Worker)
}
