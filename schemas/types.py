"""The ``data`` of every input event type (design §4) and of Garda's declared alerts, once.

The validator (``validate_data``), the typed view (``parsed_data``) and the published JSON
Schemas (``json_schema``) are all derived from ``SPECS``. Two cross-field rules cannot be
said in JSON Schema and are checked by the validator only (each schema notes them in
``$comment``): a region's country prefix must equal the event's country, and
``contract_end`` may not be before ``contract_start``.

The fast path (``fast_data``, used by ``schemas.envelope.decode``) is compiled from the same
``SPECS``: one table per type (field name -> kind and bounds), one pass over ``data``. It
never raises and never decides a refusal: it returns the normalized ``data`` only when the
precise validator (``validate_data``) would return the same, and ``None`` on any doubt, after
which the caller runs ``validate_data`` for the exact message and field. Rules decided where
the design is silent:
- It is sound only for text parsed from JSON without ``\\u`` escapes (so no NUL and no lone
  surrogate can occur; the caller checks that); identifiers are searched for control
  characters unless the caller knows the text is printable ASCII without escapes.
- Integers must be ``int`` (an integral float such as ``5.0`` takes the precise path, which
  normalizes it); dates and date-times must match the published patterns with ``T``/``Z`` in
  upper case and at most 6 fraction digits and be real calendar instants
  (``datetime.fromisoformat``); the strict-pattern strings are remembered (bounded cache).
- ``contract_end`` against ``contract_start`` is compared as text: both are ``YYYY-MM-DD``
  with four-digit years, so text order is date order.
- It also returns how many ``"`` the data's JSON text holds if no key is repeated: two per
  key and per string value, plus one per ``\\"`` escape (the caller's duplicate-key test).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from errors import InvalidEvent
from schemas.fields import (
    CONTROL_RE,
    COUNTRY_RE,
    FAST_DATES,
    FAST_DATETIMES,
    REGION_RE,
    Boolean,
    Country,
    Date,
    DateTime,
    Enum,
    Field,
    Identifier,
    Integer,
    Object,
    Region,
    Text,
    fast_date,
    fast_datetime,
    parse_date,
    printable_name,
    show,
)

SCHEMES = ("p2p", "g2g", "g2p", "individual", "company_own", "seafarer")
EMPLOYER_TYPES = ("legal_entity", "household", "vessel")
VISA_TYPES = ("work", "visit", "tourist", "umrah", "other")
RETURN_REASONS = ("contract_completed", "repatriated", "deported", "medical", "deceased", "other")
CATEGORIES = (
    "wants_to_go_home",
    "unpaid_wages",
    "deportation",
    "failed_departure",
    "death",
    "job_fraud",
    "illness",
    "accident",
    "social_security",
    "trafficking",
    "contract_mismatch",
    "employer_violence",
    "sexual_violence",
    "mental_health",
    "lost_contact",
    "document_withheld",
    "detention",
    "overstay",
    "other",
)
SEVERITIES = ("low", "medium", "high", "critical")  # ascending: handlers rank by index
REPORTER_TYPES = ("mission", "worker", "family", "ngo", "employer", "hotline", "panic_button")
CLAIM_PROGRAMS = ("JKK", "JKM", "JHT")
CLAIM_STATUSES = (
    "docs_pending",
    "submitted",
    "verified",
    "approved",
    "paid",
    "rejected",
    "expired",
)
DEADLINES = ("ack", "resolve")

LONG_TEXT = 5000
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class TypeSpec:
    """The ``data`` of one event type."""

    name: str
    description: str
    fields: tuple[tuple[str, Field], ...]
    required: tuple[str, ...]
    any_of: tuple[str, ...] = ()  # at least one of these must be present

    @cached_property
    def field_map(self) -> dict[str, Field]:
        """The fields by name (built once per spec; do not change it)."""
        return dict(self.fields)


def _spec(
    name: str,
    description: str,
    required: Mapping[str, Field],
    optional: Mapping[str, Field] | None = None,
    any_of: tuple[str, ...] = (),
) -> TypeSpec:
    fields = {**required, **(optional or {})}
    return TypeSpec(name, description, tuple(fields.items()), tuple(required), any_of)


def _id(what: str) -> Identifier:
    return Identifier(description=what, max_length=200)


WORKER_ID = _id("The worker (PMI) id; equals the event subject and the Kafka key.")

_CASE_BASE: dict[str, Field] = {
    "case_id": _id("The case acted on."),
    "worker_id": WORKER_ID,
    "actor": _id("The officer id of who acted."),
    "post_id": _id("The post (mission/office) the officer acts for."),
}
_AT = {"at": DateTime("When the action happened (defaults to the event time).")}

_SPEC_LIST: tuple[TypeSpec, ...] = (
    _spec(
        "pmi.departure.recorded",
        "A worker left Indonesia for work abroad.",
        {
            "worker_id": WORKER_ID,
            "destination_country": Country("ISO 3166-1 alpha-2 destination country."),
            "departed_at": DateTime("When the worker departed."),
            "scheme": Enum("Placement scheme.", SCHEMES),
            "employer_type": Enum("Kind of employer.", EMPLOYER_TYPES),
            "visa_type": Enum("Visa the worker travels on.", VISA_TYPES),
        },
        {
            "destination_region": Region(
                "ISO 3166-2 region; prefix equals destination_country.", "destination_country"
            ),
            "embarkation_point": Text("Port or airport of embarkation."),
            "p3mi_license": Text("Licence of the placement agency (P3MI)."),
            "employer_name": Text("Employer name."),
            "sector": Text("Work sector."),
            "e_pmi_id": Text("The worker card (e-PMI, ex e-KTKLN)."),
            "bpjs_membership_no": Text("BPJS Ketenagakerjaan membership number."),
            "contract_start": Date("First day of the contract (YYYY-MM-DD)."),
            "contract_end": Date("Last day of the contract (YYYY-MM-DD), not before start."),
            "origin": Object(
                "Where the worker comes from (region codes).",
                (
                    ("province", Text("Province code.")),
                    ("regency", Text("Regency/city code.")),
                    ("village", Text("Village code.")),
                ),
            ),
            "nik": Text("National identity number (personal: never logged raw)."),
            "passport_no": Text("Passport number (personal: never logged raw)."),
            "full_name": Text("Full name (personal: never logged raw)."),
        },
    ),
    _spec(
        "pmi.departure.failed",
        "A planned departure did not happen.",
        {"worker_id": WORKER_ID, "reason": Text("Why it failed.", LONG_TEXT)},
        {"at": DateTime("When it was recorded as failed.")},
    ),
    _spec(
        "pmi.arrival.reported",
        "The worker reported arrival (or was reported) in the destination.",
        {
            "worker_id": WORKER_ID,
            "country": Country("ISO 3166-1 alpha-2 country of arrival."),
            "reported_at": DateTime("When the arrival was reported."),
        },
        {
            "region": Region("ISO 3166-2 region; prefix equals country.", "country"),
            "employer_name": Text("Employer name."),
        },
    ),
    _spec(
        "pmi.contract.extended",
        "The worker's contract was extended.",
        {"worker_id": WORKER_ID, "contract_end": Date("New last day of the contract.")},
    ),
    _spec(
        "pmi.return.recorded",
        "The worker returned to Indonesia.",
        {
            "worker_id": WORKER_ID,
            "returned_at": DateTime("When the worker returned."),
            "reason": Enum("Why the worker returned.", RETURN_REASONS),
        },
    ),
    _spec(
        "pmi.incident.reported",
        "A report about a worker in trouble.",
        {
            "incident_id": _id("The incident id (unique per source)."),
            "worker_id": WORKER_ID,
            "category": Enum("Complaint category.", CATEGORIES),
            "occurred_at": DateTime("When the incident happened."),
            "country": Country("ISO 3166-1 alpha-2 country where it happened."),
            "reporter_type": Enum("Who reported it.", REPORTER_TYPES),
        },
        {
            "severity": Enum("Severity as reported.", SEVERITIES),
            "region": Region("ISO 3166-2 region; prefix equals country.", "country"),
            "description": Text("What happened.", LONG_TEXT),
        },
    ),
    _spec(
        "pmi.incident.updated",
        "New information on a reported incident (at least one of severity, category, note).",
        {"incident_id": _id("The incident updated."), "worker_id": WORKER_ID},
        {
            "severity": Enum("New severity.", SEVERITIES),
            "category": Enum("New category.", CATEGORIES),
            "note": Text("Free-text update.", LONG_TEXT),
        },
        any_of=("severity", "category", "note"),
    ),
    _spec(
        "pmi.claim.filed",
        "A BPJS Ketenagakerjaan claim was filed.",
        {
            "claim_id": _id("The claim id."),
            "worker_id": WORKER_ID,
            "program": Enum("BPJS programme.", CLAIM_PROGRAMS),
            "event_date": Date("Date of the insured event (YYYY-MM-DD)."),
            "filed_at": DateTime("When the claim was filed."),
        },
        {
            "benefit": Text("Benefit claimed."),
            "amount_idr": Integer("Amount claimed in rupiah."),
            "incident_id": _id("The incident the claim relates to."),
        },
    ),
    _spec(
        "pmi.claim.status-changed",
        "A claim moved to a new status.",
        {
            "claim_id": _id("The claim id."),
            "worker_id": WORKER_ID,
            "status": Enum("New claim status.", CLAIM_STATUSES),
            "changed_at": DateTime("When the status changed."),
        },
        {
            "reason": Text("Why (e.g. rejection reason).", LONG_TEXT),
            "amount_paid_idr": Integer("Amount paid in rupiah."),
        },
    ),
    _spec("pmi.case.acknowledged", "A responder acknowledged a case.", _CASE_BASE, _AT),
    _spec(
        "pmi.case.note-added",
        "A responder added a note to a case.",
        {**_CASE_BASE, "note": Text("The note.", LONG_TEXT)},
        _AT,
    ),
    _spec(
        "pmi.case.referred",
        "A responder referred a case to another organisation.",
        {**_CASE_BASE, "to": Text("The organisation referred to.")},
        _AT,
    ),
    _spec(
        "pmi.case.resolved",
        "A responder resolved a case.",
        {**_CASE_BASE, "resolution": Text("How the case was resolved.", LONG_TEXT)},
        {
            **_AT,
            "note": Text("Additional note.", LONG_TEXT),
            "substantiated": Boolean(
                "Whether the complaint was found true (counts toward the employer watchlist)."
            ),
        },
    ),
    _spec("pmi.case.reopened", "A responder reopened a resolved case.", _CASE_BASE, _AT),
    _spec(
        "garda.deadline.due",
        "Internal command: a case deadline is due (Garda sends it to itself).",
        {
            "case_id": _id("The case whose deadline is due."),
            "worker_id": WORKER_ID,
            "due_at": DateTime("When the deadline fell due."),
            "deadline": Enum("Which deadline.", DEADLINES),
            "level": Integer("Escalation level this deadline leads to.", 1, 2),
        },
    ),
    _spec(
        "garda.claim.stalled",
        "Internal command: a claim has had no status change for the policy's stall period.",
        {
            "claim_id": _id("The stalled claim."),
            "worker_id": WORKER_ID,
            "last_change_at": DateTime("The claim's last status change (or filing)."),
        },
    ),
    _spec(
        "garda.deadlines.recompute",
        "Internal command: recompute an open case's deadlines from the current SLA policy"
        " (sent by garda repolicy).",
        {
            "case_id": _id("The case whose deadlines are recomputed."),
            "worker_id": WORKER_ID,
            "sla": Text("Digest of the SLA policy the command was computed with.", 64),
        },
    ),
)

# Prevention and aftercare: referral answers and the commands of their clocks.
_NOTE = {"note": Text("Why, or what was agreed (optional).", LONG_TEXT)}
_PREVENTION_SPECS: tuple[TypeSpec, ...] = (
    _spec(
        "pmi.case.referral-accepted",
        "The organisation a case was referred to (or the post on its behalf) accepted it.",
        _CASE_BASE,
        {**_AT, **_NOTE},
    ),
    _spec(
        "pmi.case.referral-declined",
        "The organisation a case was referred to (or the post on its behalf) declined it.",
        _CASE_BASE,
        {**_AT, **_NOTE},
    ),
    _spec(
        "garda.referral.due",
        "Internal command: a referral has not been answered by its deadline.",
        {
            "case_id": _id("The case whose referral is due."),
            "worker_id": WORKER_ID,
            "due_at": DateTime("When the referral answer fell due."),
        },
    ),
    _spec(
        "garda.reintegration.reminder-due",
        "Internal command: a deceased worker's reintegration case has no JKM claim by its"
        " reminder date.",
        {
            "case_id": _id("The reintegration case."),
            "worker_id": WORKER_ID,
            "due_at": DateTime("When the reminder fell due."),
        },
    ),
)

_SOURCE_ALERT_BASE: dict[str, Field] = {
    "source": Text("The CloudEvents source of the expected producer (policy [[sources]]).", 200),
    "name": Text("Display name of the producer."),
    "post_id": _id("Who is told: headquarters."),
    "severity": Enum("Severity of the alert (policy).", SEVERITIES),
    "episode": Integer("Which silence of this source it is (1, 2, ...).", 1),
    "silent_since": DateTime(
        "When the source last spoke (or, if never, when Garda started"
        " expecting it): the silence is measured from here."
    ),
}

# Garda's own alerts on pmi.alerts.v1 that have a declared ``data`` (the subject and the
# Kafka key are the source).
_ALERT_SPECS: tuple[TypeSpec, ...] = (
    _spec(
        "garda.alert.source-silent",
        "An expected producer has been silent longer than the policy allows.",
        {
            "alert": Enum("The alert kind.", ("source-silent",)),
            **_SOURCE_ALERT_BASE,
            "detected_at": DateTime("When Garda found the silence."),
            "max_silence_seconds": Integer("The longest silence the policy allows.", 1),
        },
        {"last_seen_at": DateTime("When the source last spoke (absent: never).")},
    ),
    _spec(
        "garda.alert.source-recovered",
        "A producer that was reported silent has spoken again.",
        {
            "alert": Enum("The alert kind.", ("source-recovered",)),
            **_SOURCE_ALERT_BASE,
            "recovered_at": DateTime("When the source spoke again."),
            "silent_seconds": Integer("How long the silence lasted.", 0),
        },
    ),
)

SPECS: dict[str, TypeSpec] = {
    spec.name: spec for spec in (*_SPEC_LIST, *_PREVENTION_SPECS, *_ALERT_SPECS)
}

_CROSS_FIELD_COMMENT = {
    "region": "The validator also requires the region's country prefix to equal {country}.",
    "contract": "The validator also requires contract_end not to be before contract_start.",
}


def list_types() -> list[str]:
    """Every event type with a ``data`` spec, in design order."""
    return list(SPECS)


def get_spec(type_: str) -> TypeSpec:
    """The spec of ``type_``; ``InvalidEvent(field="type")`` if unknown."""
    try:
        return SPECS[type_]
    except (KeyError, TypeError):
        raise InvalidEvent(f"unknown event type {show(type_)}", "type") from None


def validate_data(type: str, data: Any) -> dict[str, Any]:
    """Validate the ``data`` of an event of ``type``; return the normalized copy.

    Raises ``InvalidEvent`` for the first problem found, with ``field`` a path starting at
    ``"data."`` (or ``"type"`` for an unknown type, ``"data"`` if it is not an object).
    """
    spec = get_spec(type)
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"must be a JSON object, got {show(data)}", "data")
    fields = spec.field_map
    for name in data:
        if name not in fields:
            raise InvalidEvent(f"unknown field for {spec.name}", f"data.{printable_name(name)}")
    for name in spec.required:
        if name not in data:
            raise InvalidEvent(f"is required for {spec.name}", f"data.{name}")
    out = {name: fields[name].check(value, f"data.{name}") for name, value in data.items()}
    if spec.any_of and not any(name in out for name in spec.any_of):
        raise InvalidEvent(f"{spec.name} needs at least one of {', '.join(spec.any_of)}", "data")
    _check_cross_fields(spec, out)
    return out


def _check_cross_fields(spec: TypeSpec, data: dict[str, Any]) -> None:
    for name, f in spec.fields:
        if isinstance(f, Region) and name in data and f.country_field in data:
            country = data[f.country_field]
            if data[name][:2] != country:
                raise InvalidEvent(
                    f"region {data[name]!r} is not in {f.country_field} {country!r}",
                    f"data.{name}",
                )
    if "contract_start" in data and "contract_end" in data:
        if parse_date(data["contract_end"]) < parse_date(data["contract_start"]):
            raise InvalidEvent(
                f"must not be before contract_start {data['contract_start']!r}",
                "data.contract_end",
            )


# -- the fast path ---------------------------------------------------------------------------
# Field kinds of the compiled tables (small ints: one comparison chain per value).
_TEXT, _ID, _ENUM, _DATETIME, _DATE, _COUNTRY, _REGION, _INT, _BOOL, _OBJECT = range(10)
# A compiled field: (kind, arg, arg2, tally). ``tally`` adds, per member, the ``"`` its JSON
# text holds outside escapes (2 for the key, 2 more for a string value) and, in its high
# part, 1 if the field is required: one addition per member counts both.
_FastField = tuple[int, Any, Any, int]
_REQUIRED = 1 << 24  # no object has 2**22 members: the low part never carries over


@dataclass(frozen=True)
class _FastSpec:
    fields: dict[str, _FastField]
    n_required: int
    any_of: tuple[str, ...]
    regions: tuple[tuple[str, str], ...]  # (region field, its country field)
    contract: bool  # has contract_start and contract_end


def _fast_field(f: Field, required: bool) -> _FastField | None:
    tally = 4 + (_REQUIRED if required else 0)  # most kinds are strings
    # Identifier before Text: it is a subclass.
    if isinstance(f, Identifier):
        return (_ID, f.max_length, None, tally)
    if isinstance(f, Text):
        return (_TEXT, f.max_length, None, tally)
    if isinstance(f, Enum):
        if any('"' in v or "\\" in v for v in f.values):
            return None  # the quote count below assumes enum values need no escape
        return (_ENUM, frozenset(f.values), None, tally)
    if isinstance(f, DateTime):
        return (_DATETIME, None, None, tally)
    if isinstance(f, Date):
        return (_DATE, None, None, tally)
    if isinstance(f, Region):
        return (_REGION, None, None, tally)
    if isinstance(f, Country):
        return (_COUNTRY, None, None, tally)
    if isinstance(f, Integer):
        return (_INT, f.minimum, f.maximum, tally - 2)
    if isinstance(f, Boolean):
        return (_BOOL, None, None, tally - 2)
    if isinstance(f, Object):
        nested = _fast_spec(f.fields, ())
        return None if nested is None else (_OBJECT, nested, None, tally - 2)
    return None  # a kind the fast path does not know: always the precise path


def _fast_spec(
    fields: tuple[tuple[str, Field], ...], required: tuple[str, ...], any_of: tuple[str, ...] = ()
) -> _FastSpec | None:
    table: dict[str, _FastField] = {}
    for name, f in fields:
        compiled = _fast_field(f, name in required)
        if compiled is None or '"' in name or "\\" in name:
            return None
        table[name] = compiled
    regions = tuple((n, f.country_field) for n, f in fields if isinstance(f, Region))
    contract = "contract_start" in table and "contract_end" in table
    return _FastSpec(table, len(required), any_of, regions, contract)


_FAST: dict[str, _FastSpec | None] = {
    name: _fast_spec(spec.fields, spec.required, spec.any_of) for name, spec in SPECS.items()
}


def fast_data(
    type: str, data: dict[str, Any], plain: bool, escaped: bool
) -> tuple[dict[str, Any], int] | None:
    """``(validate_data(type, data), quotes)`` when that is certain, else ``None``.

    ``data`` was parsed from JSON text without ``\\u`` escapes; ``escaped``: that text has
    other escapes (``\\n``, ``\\"`` ...); ``plain``: it is printable ASCII without escapes, so
    no string holds a control character. ``quotes`` is how many ``"`` the JSON text of
    ``data``'s members holds if no key was repeated. Never raises.
    """
    spec = _FAST.get(type)
    if spec is None:
        return None
    quotes = _fast_object(spec, data, plain, escaped)
    if quotes < 0:
        return None
    if spec.any_of and not any(name in data for name in spec.any_of):
        return None
    for name, country_field in spec.regions:
        if name in data and country_field in data and data[name][:2] != data[country_field]:
            return None
    if spec.contract and "contract_start" in data and "contract_end" in data:
        if data["contract_end"] < data["contract_start"]:
            return None
    return data, quotes


# Country codes and region codes the patterns matched (small sets: the destinations and
# their regions), one set per pattern. Bounded: cleared when full.
_countries: set[str] = set()
_regions: set[str] = set()


def _code(value: str, form: re.Pattern[str], known: set[str]) -> str | None:
    """``value`` when ``form`` matches it all (remembered in ``known``), else None."""
    if form.fullmatch(value) is None:
        return None
    if len(known) >= 4096:
        known.clear()
    known.add(value)
    return value


def _fast_object(spec: _FastSpec, data: dict[str, Any], plain: bool, escaped: bool) -> int:
    """The ``"`` of ``data``'s members (see ``fast_data``), or -1 on any doubt."""
    fields = spec.fields
    tally = 0
    for name, value in data.items():
        f = fields.get(name)
        if f is None:
            return -1
        kind, arg, arg2, counts = f
        cls = type(value)
        if kind <= _ID:  # Text, Identifier
            if cls is not str or len(value) > arg or not value.strip():
                return -1
            if not plain:
                if kind == _ID and CONTROL_RE.search(value) is not None:
                    return -1
                if escaped:
                    tally += value.count('"')  # each was written \"
        elif kind == _ENUM:
            if cls is not str or value not in arg:
                return -1
        elif kind == _DATETIME:  # a text the cache holds was read (and is valid)
            if cls is not str or (value not in FAST_DATETIMES and fast_datetime(value) is None):
                return -1
        elif kind == _DATE:
            if cls is not str or (value not in FAST_DATES and fast_date(value) is None):
                return -1
        elif kind == _COUNTRY:
            if cls is not str or (
                value not in _countries and _code(value, COUNTRY_RE, _countries) is None
            ):
                return -1
        elif kind == _REGION:
            if cls is not str or (
                value not in _regions and _code(value, REGION_RE, _regions) is None
            ):
                return -1
        elif kind == _INT:
            if cls is not int or value < arg or (arg2 is not None and value > arg2):
                return -1
        elif kind == _BOOL:
            if cls is not bool:
                return -1
        else:  # _OBJECT
            if cls is not dict:
                return -1
            nested = _fast_object(arg, value, plain, escaped)
            if nested < 0:
                return -1
            tally += nested
        tally += counts
    if tally >> 24 != spec.n_required:
        return -1
    return tally & (_REQUIRED - 1)


def parsed_data(type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of validated ``data`` with date-times as aware ``datetime`` and dates as ``date``."""
    fields = get_spec(type).field_map
    return {
        name: fields[name].parse(value) if name in fields else value for name, value in data.items()
    }


def json_schema(type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``data`` of ``type``."""
    spec = get_spec(type)
    schema: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "$id": f"urn:garda:schema:{spec.name}",
        "title": f"{spec.name} data",
        "description": spec.description,
        "type": "object",
        "properties": {name: f.schema() for name, f in spec.fields},
        "required": list(spec.required),
        "additionalProperties": False,
    }
    if spec.any_of:
        schema["anyOf"] = [{"required": [name]} for name in spec.any_of]
    comments = [
        _CROSS_FIELD_COMMENT["region"].format(country=f.country_field)
        for _, f in spec.fields
        if isinstance(f, Region)
    ]
    fields = spec.field_map
    if "contract_start" in fields and "contract_end" in fields:
        comments.append(_CROSS_FIELD_COMMENT["contract"])
    if comments:
        schema["$comment"] = " ".join(comments)
    return schema
