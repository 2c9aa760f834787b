"""Field kinds of event ``data``: each one validates a value and describes itself as JSON Schema.

Every kind has two faces that must agree: ``check`` (the validator used by the processor and
the API) and ``schema`` (the published JSON Schema, draft 2020-12). Regular expressions are
written so that they mean the same in Python and in ECMA-262 (ASCII classes only, no ``\\d``).

Decisions:
- Date-times are RFC 3339 ``date-time`` with a mandatory offset (``Z`` or ``+hh:mm``), seconds
  required, fraction optional (any number of digits, truncated to microseconds when parsed),
  ``T``/``Z`` in either case, no leap second ``:60``. The string stays in ``data`` as sent;
  ``parse_datetime`` gives the aware ``datetime``.
- Dates (``contract_start``, ``contract_end``, ``event_date``) are strictly ``YYYY-MM-DD``
  (RFC 3339 ``full-date``). A full date-time is rejected: which calendar day it means
  depends on a time zone the sender did not state.
- Integers reject ``true``/``false``; an integral float such as ``5.0`` is accepted and
  normalized to ``5`` (JSON Schema counts it as an integer too).
- Years of dates and date-times are 1900 to 8999 as written. Anything else is refused: such
  an instant cannot be a real report, and far from ``datetime``'s limits (years 1 to 9999)
  every policy duration can be added to it or taken from it without overflowing (an offset
  such as ``0001-01-01T00:00:00+23:59`` passed the format but overflowed on conversion).
- Identifiers (ids, worker, case, post and officer ids) refuse control characters
  (Unicode ``Cc``: U+0000-U+001F, U+007F-U+009F): Garda derives ids by joining them, and
  they end up in headers, logs and URLs. Free text may hold newlines and tabs, never NUL.
- No string anywhere may hold a lone UTF-16 surrogate (a ``"\\udfff"`` escape in JSON): it has no
  UTF-8 encoding, so PostgreSQL, Kafka headers and logs cannot store it. JSON Schema cannot
  state this rule (ECMA-262 patterns see surrogate pairs as two code units), so it is checked
  by the validator only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar, overload

from errors import InvalidEvent

MIN_YEAR, MAX_YEAR = 1900, 8999
_YEAR = r"(19[0-9]{2}|[2-8][0-9]{3})"  # MIN_YEAR..MAX_YEAR
_DATE = _YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
_OFFSET = r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
DATE_PATTERN = f"^{_DATE}$"
DATETIME_PATTERN = f"^{_DATE}[Tt]{_TIME}{_OFFSET}$"
COUNTRY_PATTERN = "^[A-Z]{2}$"
REGION_PATTERN = "^[A-Z]{2}-[A-Z0-9]{1,3}$"
NON_BLANK_PATTERN = r"[^\s]"
# Same meaning in Python and ECMA-262: the Unicode control characters (category Cc).
CONTROL_PATTERN = r"[\u0000-\u001f\u007f-\u009f]"
_CONTROL_RE = re.compile(CONTROL_PATTERN)
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")

_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EXAMPLE_DATETIME = "2026-11-29T02:31:29Z"
# The patterns above, compiled once (the hot path checks every date-time of every event).
_DATETIME_FULL_RE = re.compile(DATETIME_PATTERN[1:-1])
_DATE_FULL_RE = re.compile(DATE_PATTERN[1:-1])
_COUNTRY_RE = re.compile(COUNTRY_PATTERN[1:-1])
_REGION_RE = re.compile(REGION_PATTERN[1:-1])
_YEAR_FIRST_RE = re.compile(r"[0-9]{4}-.*")
# Public names of the compiled patterns, for the fast path of ``schemas.types``.
CONTROL_RE, COUNTRY_RE, REGION_RE = _CONTROL_RE, _COUNTRY_RE, _REGION_RE
# The fast path's date-time: the published pattern with ``T`` and ``Z`` in upper case and at
# most 6 fraction digits, which ``datetime.fromisoformat`` reads exactly as ``parse_datetime``
# does (same instant, same tzinfo: the UTC singleton for ``Z`` and zero offsets).
_FAST_DATETIME_RE = re.compile(
    _DATE + r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# Strict-pattern texts already read (a batch repeats its timestamps): text -> value. Bounded:
# emptied when full, so a stream of distinct stamps costs one dict insert each.
_FAST_CACHE_SIZE = 4096
_V = TypeVar("_V", date, datetime)
# Texts already parsed (``schemas.types`` looks a text up before it calls the parser).
FAST_DATETIMES: dict[str, datetime] = {}
FAST_DATES: dict[str, date] = {}


# Fields whose values are personal identifiers: never repeated in an error message (errors
# reach logs, HTTP replies and the dead-letter headers).
PERSONAL_FIELDS = frozenset({"nik", "passport_no", "full_name", "employer_name"})


def show(value: Any, path: str | None = None) -> str:
    """A short rendering of a JSON value for error messages that never repeats a personal
    identifier: objects and arrays show only their size, and the value of a personal field
    (``PERSONAL_FIELDS``) only its JSON type."""
    if path is not None and path.rsplit(".", 1)[-1] in PERSONAL_FIELDS:
        return f"a {json_kind(value)} (value hidden: personal identifier)"
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def json_kind(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_datetime(text: str, field: str | None = None) -> datetime:
    """Parse an RFC 3339 date-time with offset into an aware ``datetime``.

    Raises ``InvalidEvent(field=field)`` when ``text`` is not one.
    """
    reason = (
        f"must be an RFC 3339 date-time with a timezone like {_EXAMPLE_DATETIME!r}, "
        f"got {show(text)}"
    )
    if not isinstance(text, str):
        raise InvalidEvent(reason, field)
    m = _DATETIME_RE.fullmatch(text)
    if m is not None:
        _check_year(int(m.group(1)), field)
    if m is None or _DATETIME_FULL_RE.fullmatch(text) is None:
        raise InvalidEvent(reason, field)
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if m.group(8):
        tz = UTC
    else:
        delta = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-delta if m.group(9) == "-" else delta)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise InvalidEvent(f"{reason} ({exc})", field) from None


def fast_datetime(text: str) -> datetime | None:
    """``parse_datetime(text)`` when ``text`` is in the fast path's strict form and valid,
    else ``None`` (then ``parse_datetime`` decides, with its message). Never raises."""
    return _fast_parse(text, FAST_DATETIMES, _FAST_DATETIME_RE, datetime.fromisoformat)


def fast_date(text: str) -> date | None:
    """``parse_date(text)`` when ``text`` is a valid date, else ``None``. Never raises."""
    return _fast_parse(text, FAST_DATES, _DATE_FULL_RE, date.fromisoformat)


def _fast_parse(
    text: str, cache: dict[str, _V], form: re.Pattern[str], parse: Callable[[str], _V]
) -> _V | None:
    """``parse(text)`` for a ``text`` in ``form`` that parses (a calendar day: not
    2026-02-30), remembered in ``cache`` (cleared at ``_FAST_CACHE_SIZE``); else None."""
    value = cache.get(text)
    if value is None:
        if form.fullmatch(text) is None:
            return None
        try:
            value = parse(text)
        except ValueError:
            return None
        if len(cache) >= _FAST_CACHE_SIZE:
            cache.clear()
        cache[text] = value
    return value


def parse_date(text: str, field: str | None = None) -> date:
    """Parse a ``YYYY-MM-DD`` calendar date. Raises ``InvalidEvent(field=field)``."""
    reason = f"must be a date like '2026-12-31' (YYYY-MM-DD), got {show(text)}"
    if isinstance(text, str) and _YEAR_FIRST_RE.fullmatch(text):
        _check_year(int(text[:4]), field)
    if not isinstance(text, str) or _DATE_FULL_RE.fullmatch(text) is None:
        raise InvalidEvent(reason, field)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent(f"{reason} ({exc})", field) from None


def _check_year(year: int, field: str | None) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidEvent(f"year {year} is out of range (must be {MIN_YEAR} to {MAX_YEAR})", field)


def surrogate_free(value: str, path: str | None) -> str:
    """``value`` unchanged; ``InvalidEvent`` if it holds a lone surrogate (no UTF-8 form)."""
    m = _SURROGATE_RE.search(value)
    if m is not None:
        raise InvalidEvent(
            f"holds a lone UTF-16 surrogate U+{ord(m.group()):04X} at character {m.start()}"
            " (not valid Unicode text)",
            path,
        )
    return value


def printable_name(name: str) -> str:
    """A field name as it may appear in an error's field path: control characters and lone
    surrogates escaped (errors reach PostgreSQL text, Kafka headers and logs), at most 100
    characters."""
    if _CONTROL_RE.search(name) or _SURROGATE_RE.search(name):
        name = (
            "".join(f"\\x{ord(c):02x}" if _CONTROL_RE.fullmatch(c) else c for c in name)
            .encode("utf-8", "backslashreplace")
            .decode("ascii", "backslashreplace")
        )
    return name if len(name) <= 100 else name[:97] + "..."


def check_identifier(value: str, path: str | None) -> str:
    """``value`` unchanged; ``InvalidEvent`` if it holds a control character or a surrogate."""
    m = _CONTROL_RE.search(value)
    if m is not None:
        raise InvalidEvent(
            f"must not contain control characters (U+{ord(m.group()):04X} at character"
            f" {m.start()})",
            path,
        )
    return surrogate_free(value, path)


def format_datetime(value: datetime) -> str:
    """RFC 3339 text of an aware datetime (UTC written as ``Z``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# The three date-time forms of Garda, here once: ``parse_datetime`` (strict, for input
# events), ``format_datetime`` (an event's time, its offset kept), and ``iso``/``parse_dt``
# (what Garda stores and serves: UTC, written with ``Z``; a naive value is read as UTC).
@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: None) -> None: ...
@overload
def iso(dt: datetime | None) -> str | None: ...
def iso(dt: datetime | None) -> str | None:
    """``dt`` in UTC as RFC 3339 text with ``Z`` (a naive ``dt`` is taken as local time). A
    UTC datetime (what the rules hold) is written directly, without the conversion."""
    if dt is None:
        return None
    if type(dt) is datetime and dt.tzinfo is UTC:
        text = _iso_texts.get(dt)
        if text is None:
            if len(_iso_texts) >= _FAST_CACHE_SIZE:
                _iso_texts.clear()
            text = _iso_texts[dt] = dt.isoformat()[:-6] + "Z"
        return text
    return format_datetime(dt.astimezone(UTC))


# UTC datetimes already written by ``iso`` (an event writes the same few times again and
# again: a case's deadlines in each of its events, the worker's in each snapshot): value ->
# text. ``isoformat`` costs ~0.5 µs, a look-up ~0.03. Keys are UTC datetimes of the exact
# type only, and two equal ones are the same instant, hence the same text. Bounded as the
# parse caches above.
_iso_texts: dict[datetime, str] = {}


@overload
def parse_dt(value: str) -> datetime: ...
@overload
def parse_dt(value: None) -> None: ...
@overload
def parse_dt(value: str | None) -> datetime | None: ...
def parse_dt(value: str | None) -> datetime | None:
    """A stored or served date-time (``iso`` text) back as an aware datetime (naive: UTC)."""
    if value is None:
        return None
    if type(value) is str:  # remembered (as iso's texts): an event reads its times again
        dt = _parsed_texts.get(value)
        if dt is None:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            if len(_parsed_texts) >= _FAST_CACHE_SIZE:
                _parsed_texts.clear()
            _parsed_texts[value] = dt
        return dt
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# Texts ``parse_dt`` read: text -> value (a text that does not parse is not kept, and
# raises again). Bounded as the parse caches above.
_parsed_texts: dict[str, datetime] = {}


@dataclass(frozen=True)
class Field:
    """Base of the field kinds."""

    description: str = ""

    def check(self, value: Any, path: str) -> Any:
        """Validate ``value`` at ``path``; return the normalized value."""
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this field."""
        raise NotImplementedError

    def parse(self, value: Any) -> Any:
        """The typed value of an already-validated value (default: unchanged)."""
        return value

    def _with_description(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": self.description, **schema} if self.description else schema


@dataclass(frozen=True)
class Text(Field):
    """A string with at least one non-whitespace character and at most ``max_length``."""

    max_length: int = 200

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise InvalidEvent(f"must be a string, got {show(value, path)}", path)
        if not value.strip():
            raise InvalidEvent("must not be empty or blank", path)
        if "\x00" in value:  # PostgreSQL text cannot hold it
            raise InvalidEvent("must not contain NUL characters", path)
        if len(value) > self.max_length:
            raise InvalidEvent(
                f"must be at most {self.max_length} characters, got {len(value)}", path
            )
        return surrogate_free(value, path)

    def schema(self) -> dict[str, Any]:
        return self._with_description(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": self.max_length,
                "pattern": NON_BLANK_PATTERN,
                "not": {"pattern": "\u0000"},
            }
        )


@dataclass(frozen=True)
class Identifier(Text):
    """An id: ``Text`` without control characters (they would make derived ids ambiguous)."""

    def check(self, value: Any, path: str) -> Any:
        return check_identifier(super().check(value, path), path)

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        schema["not"] = {"pattern": CONTROL_PATTERN}
        return schema


@dataclass(frozen=True)
class Enum(Field):
    """One of a fixed set of strings."""

    values: tuple[str, ...] = ()

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or value not in self.values:
            allowed = ", ".join(repr(v) for v in self.values)
            raise InvalidEvent(f"must be one of {allowed}; got {show(value, path)}", path)
        return value

    def schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "enum": list(self.values)})


@dataclass(frozen=True)
class Country(Field):
    """ISO 3166-1 alpha-2 code: two uppercase ASCII letters."""

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or _COUNTRY_RE.fullmatch(value) is None:
            raise InvalidEvent(
                f"must be an ISO 3166-1 alpha-2 code like 'MY', got {show(value, path)}", path
            )
        return value

    def schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "pattern": COUNTRY_PATTERN})


@dataclass(frozen=True)
class Region(Field):
    """ISO 3166-2 subdivision code; its prefix must equal the value of ``country_field``."""

    country_field: str = ""

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or _REGION_RE.fullmatch(value) is None:
            raise InvalidEvent(
                f"must be an ISO 3166-2 code like 'MY-01', got {show(value, path)}", path
            )
        return value

    def schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "pattern": REGION_PATTERN})


@dataclass(frozen=True)
class DateTime(Field):
    """RFC 3339 date-time with a timezone; kept as text, parsed to an aware datetime."""

    def check(self, value: Any, path: str) -> Any:
        parse_datetime(value, path)
        return value

    def parse(self, value: Any) -> Any:
        return parse_datetime(value)

    def schema(self) -> dict[str, Any]:
        return self._with_description(
            {"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}
        )


@dataclass(frozen=True)
class Date(Field):
    """Calendar date ``YYYY-MM-DD``; kept as text, parsed to a ``date``."""

    def check(self, value: Any, path: str) -> Any:
        parse_date(value, path)
        return value

    def parse(self, value: Any) -> Any:
        return parse_date(value)

    def schema(self) -> dict[str, Any]:
        return self._with_description({"type": "string", "format": "date", "pattern": DATE_PATTERN})


@dataclass(frozen=True)
class Integer(Field):
    """An integer in [minimum, maximum] (``maximum`` None: unbounded). Booleans rejected."""

    minimum: int = 0
    maximum: int | None = None

    def check(self, value: Any, path: str) -> Any:
        ok = not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
        number = int(value) if ok else 0
        if not ok or number < self.minimum or (self.maximum is not None and number > self.maximum):
            if self.maximum is not None:
                what = f"an integer from {self.minimum} to {self.maximum}"
            elif self.minimum == 0:
                what = "a non-negative integer"
            else:
                what = f"an integer of at least {self.minimum}"
            raise InvalidEvent(f"must be {what}, got {show(value, path)}", path)
        return number

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._with_description(schema)


@dataclass(frozen=True)
class Object(Field):
    """A nested object of optional fields; unknown keys rejected."""

    fields: tuple[tuple[str, Field], ...] = ()

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise InvalidEvent(f"must be a JSON object, got {show(value, path)}", path)
        known = dict(self.fields)
        for name in value:
            if name not in known:
                raise InvalidEvent(
                    f"unknown field (allowed: {', '.join(known)})", f"{path}.{printable_name(name)}"
                )
        return {name: known[name].check(v, f"{path}.{name}") for name, v in value.items()}

    def schema(self) -> dict[str, Any]:
        return self._with_description(
            {
                "type": "object",
                "properties": {name: f.schema() for name, f in self.fields},
                "additionalProperties": False,
            }
        )


@dataclass(frozen=True)
class Boolean(Field):
    """``true`` or ``false`` (no 0/1, no strings)."""

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise InvalidEvent(f"must be true or false, got {show(value, path)}", path)
        return value

    def schema(self) -> dict[str, Any]:
        return self._with_description({"type": "boolean"})
