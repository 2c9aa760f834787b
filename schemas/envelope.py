"""The CloudEvents 1.0 envelope (Kafka protocol binding, structured and binary mode).

- ``Envelope``: a decoded, validated input event.
- ``decode(key, value, headers, topic=None) -> Envelope``: raises ``InvalidEvent`` with the
  field and what was wrong. Structured mode: value is the JSON CloudEvent. Binary mode
  (a ``ce_specversion`` header): ``ce_*`` headers carry the attributes and the value is the
  JSON ``data``.
- ``encode(envelope) -> bytes``: structured mode JSON (Garda's own output).
- ``new_envelope(...)``: builds Garda's own output events (source ``"garda"``).

Decoding has two paths that must agree. The precise path (``_json``, ``_build``,
``schemas.types.validate_data``) decides every refusal and writes every message. The fast
path (``_fast_structured``) serves the common valid structured-mode record: orjson parses,
one pass checks the attributes, the compiled tables of ``schemas.types.fast_data`` check
``data``; it returns an ``Envelope`` only when the precise path would return an equal one,
and on any doubt returns ``None`` and the precise path runs from the start. Rules decided
where the design is silent:
- Any ``\\u`` escape in the value takes the precise path: an escape can hide a NUL, a lone
  surrogate (which orjson refuses and ``json`` accepts) or a ``:`` (see below).
- Duplicate keys (``json`` here refuses them, orjson keeps the last): the fast path counts
  the ``"`` bytes of the value. In JSON without ``\\u`` escapes each one delimits a string
  or was written ``\\"`` inside one, and each key and string of the parsed document was
  written once in the text; so the count equals two per key and string value plus the
  ``"`` inside the parsed strings exactly when no member was dropped, i.e. no key was
  repeated. The fast path accepts no arrays; without any escape no string holds a ``"``
  (no per-string count); otherwise ids, texts and string extensions are counted (the keys,
  enum values, codes and dates it accepts hold none).
- Control characters: JSON text cannot hold U+0000-U+001F raw, so when the value is
  printable ASCII without escapes no string can hold one; otherwise ids are searched.
- Unusual values take the precise path: a float anywhere (an integral float is
  normalized there), a ``null`` extension, ``data_base64``, a content type with parameters,
  a key or value that is not ``bytes``, binary mode.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import orjson

from errors import InvalidEvent
from schemas.fields import (
    CONTROL_RE,
    check_identifier,
    fast_datetime,
    format_datetime,
    parse_datetime,
    printable_name,
    show,
    surrogate_free,
)
from schemas.topics import TYPES_BY_TOPIC
from schemas.types import SPECS, fast_data, parsed_data, validate_data

SPECVERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
GARDA_SOURCE = "garda"
MAX_ATTRIBUTE_LENGTH = 200
CORE_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype")
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_new_object = object.__new__
_set_attribute = object.__setattr__


@dataclass(frozen=True)
class Envelope:
    id: str
    source: str
    type: str
    subject: str
    data: dict[str, Any]
    time: datetime | None = None
    specversion: str = "1.0"
    datacontenttype: str = "application/json"
    extensions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unchecked(
        cls,
        id: str,
        source: str,
        type: str,
        subject: str,
        data: dict[str, Any],
        time: datetime | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> Envelope:
        """``Envelope(...)`` with the standard specversion and content type, for values
        already checked (the decoder's fast path), without the frozen dataclass's
        ``__init__``: it sets each field through ``object.__setattr__``, which cost a third
        of the fast path's own time. ``Envelope`` has no ``__post_init__`` to skip."""
        env = _new_object(cls)
        _set_attribute(
            env,
            "__dict__",
            {
                "id": id,
                "source": source,
                "type": type,
                "subject": subject,
                "data": data,
                "time": time,
                "specversion": SPECVERSION,
                "datacontenttype": DATA_CONTENT_TYPE,
                "extensions": {} if extensions is None else extensions,
            },
        )
        return env

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key: (source, id)."""
        return (self.source, self.id)

    def parsed_data(self) -> dict[str, Any]:
        """``data`` with date-times as aware ``datetime`` and dates as ``date`` objects."""
        if self.type not in SPECS:
            return dict(self.data)
        return parsed_data(self.type, self.data)


def decode(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    topic: str | None = None,
) -> Envelope:
    """Decode and validate one Kafka record into an ``Envelope``.

    ``topic`` is the logical topic name (without prefix); when given, the type must be one
    that topic carries. Raises ``InvalidEvent`` (with ``field``) on the first problem.
    """
    hdrs = _headers(headers)
    if "ce_specversion" in hdrs:
        content_type = hdrs.get("content-type")
        if content_type is not None and _media_type(content_type) != DATA_CONTENT_TYPE:
            raise InvalidEvent(
                f"must be {DATA_CONTENT_TYPE} in binary mode, got {show(content_type)}",
                "content-type",
            )
        attrs: dict[str, Any] = {
            name[3:]: text for name, text in hdrs.items() if name.startswith("ce_")
        }
        attrs["data"] = _json(value)
    else:
        content_type = hdrs.get("content-type")
        if content_type is not None and _media_type(content_type) != STRUCTURED_CONTENT_TYPE:
            raise InvalidEvent(
                f"must be {STRUCTURED_CONTENT_TYPE} in structured mode (binary mode needs "
                f"ce_specversion and the other ce_* headers), got {show(content_type)}",
                "content-type",
            )
        if type(value) is bytes:
            env = _fast_structured(key, value, topic)
            if env is not None:
                return env
        attrs = _json(value)
        if not isinstance(attrs, dict):
            raise InvalidEvent(f"a structured CloudEvent must be a JSON object, got {show(attrs)}")
    return _build(attrs, key, topic)


def encode(env: Envelope) -> bytes:
    """Structured-mode JSON of ``env`` (UTF-8). ``datetime``/``date`` in data become text."""
    doc: dict[str, Any] = {
        "specversion": env.specversion,
        "id": env.id,
        "source": env.source,
        "type": env.type,
        "subject": env.subject,
    }
    if env.time is not None:
        doc["time"] = _time_text(env.time)
    doc["datacontenttype"] = env.datacontenttype
    for name, ext in env.extensions.items():
        if name not in doc and name != "data":
            doc[name] = ext
    doc["data"] = env.data
    try:
        # orjson writes exactly what the json module below writes (compact, UTF-8, keys in
        # order, datetimes through _json_default) about five times faster; whatever it
        # refuses (a lone surrogate, a non-string key, an integer beyond 64 bits) takes the
        # json path, which writes or raises as before. No non-finite float can reach here:
        # the schemas accept integers only (see fields.Integer).
        return orjson.dumps(doc, default=_json_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _encode_json(doc)


_last_time: list[Any] = [None, ""]  # the last (datetime, text): a batch's outputs share one


def _time_text(time: datetime) -> str:
    """``format_datetime(time)``, remembered for the last ``time`` (the same object)."""
    if time is not _last_time[0]:
        _last_time[:] = [time, format_datetime(time)]
    text: str = _last_time[1]
    return text


_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _encode_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(
        doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
    ).encode("utf-8")


def new_envelope(
    type: str,
    subject: str,
    data: Mapping[str, Any],
    id: str,
    time: datetime | None = None,
    extensions: Mapping[str, Any] | None = None,
    source: str = GARDA_SOURCE,
) -> Envelope:
    """An output event of Garda with a caller-given deterministic ``id``.

    ``data`` of a type with a spec (``list_types()``) is validated; for other types (Garda's
    ``garda.case.*``/``garda.alert.*`` outputs) it must be an object and, when it has a
    ``worker_id``, that must equal ``subject``. ``datetime``/``date`` values anywhere in
    ``data`` are turned into RFC 3339 / ``YYYY-MM-DD`` text first, so the envelope holds what
    ``decode(encode(env))`` gives back. Raises ``InvalidEvent``.
    """
    attrs: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": id,
        "source": source,
        "type": type,
        "subject": subject,
        **(extensions or {}),
        "data": _jsonable(data),
    }
    for name in extensions or {}:
        if name in CORE_ATTRIBUTES or name in ("data", "data_base64"):
            raise InvalidEvent("is a CloudEvents attribute, not an extension", name)
    if time is not None:
        if time.tzinfo is None or time.utcoffset() is None:
            raise InvalidEvent("must be timezone-aware", "time")
    env = _build(attrs, None, None, known_types_only=False)
    if time is not None:
        env = replace(env, time=time)
    return env


# -- internals -------------------------------------------------------------------------------


def _headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """CloudEvents and content-type headers, lower-cased names, values decoded as UTF-8."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers or ():
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else raw_name
        name = name.lower()
        if not (name.startswith("ce_") or name == "content-type") or raw_value is None:
            continue
        if name in out:
            raise InvalidEvent("duplicate header", name)
        if isinstance(raw_value, str):
            out[name] = raw_value
            continue
        try:
            out[name] = bytes(raw_value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"header is not valid UTF-8 ({exc.reason})", name) from None
    return out


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: find the first name given twice
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"duplicate key {name!r}")
            seen.add(name)
    return out


def _json(value: bytes | None) -> Any:
    if value is None:
        raise InvalidEvent("invalid JSON: the record has no value")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: not valid UTF-8 ({exc})") from None
    if not text.strip():
        raise InvalidEvent("invalid JSON: empty value")
    try:
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise InvalidEvent("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) is not None:  # strict UTF-8 text has none otherwise
        _no_surrogates(doc, "")
    return doc


# A JSON escape of a UTF-16 surrogate; a valid pair becomes one character when parsed.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_surrogates(value: Any, path: str) -> None:
    """Raise ``InvalidEvent`` at the first lone surrogate in a key or string of ``value``."""
    if isinstance(value, str):
        surrogate_free(value, path or None)
    elif isinstance(value, dict):
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            try:
                surrogate_free(name, None)
            except InvalidEvent as exc:
                # the name itself cannot be shown as is: escape it
                shown = name.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                where = f"{path}.{shown}" if path else shown
                raise InvalidEvent(f"field name {exc.reason}", where) from None
            _no_surrogates(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_surrogates(item, f"{path}[{i}]")


def _string_attribute(attrs: Mapping[str, Any], name: str) -> str:
    value = attrs.get(name)
    if value is None:
        raise InvalidEvent(f"missing required attribute {name}", name)
    if not isinstance(value, str):
        raise InvalidEvent(f"must be a string, got {show(value)}", name)
    if not value.strip():
        raise InvalidEvent("must not be empty", name)
    if "\x00" in value:
        raise InvalidEvent("must not contain NUL characters", name)
    if len(value) > MAX_ATTRIBUTE_LENGTH:
        raise InvalidEvent(
            f"must be at most {MAX_ATTRIBUTE_LENGTH} characters, got {len(value)}", name
        )
    return check_identifier(value, name)


def _build(
    attrs: dict[str, Any],
    key: bytes | None,
    topic: str | None,
    known_types_only: bool = True,
) -> Envelope:
    specversion = attrs.get("specversion")
    if specversion is None:
        raise InvalidEvent("missing required attribute specversion", "specversion")
    if specversion != SPECVERSION:
        raise InvalidEvent(f"must be {SPECVERSION!r}, got {show(specversion)}", "specversion")
    id_ = _string_attribute(attrs, "id")
    source = _string_attribute(attrs, "source")
    type_ = _string_attribute(attrs, "type")
    subject = _string_attribute(attrs, "subject")

    known = type_ in SPECS
    if known_types_only and not known:
        raise InvalidEvent(f"unknown event type {type_!r}", "type")
    if topic is not None:
        allowed = TYPES_BY_TOPIC.get(topic, ())
        if type_ not in allowed:
            raise InvalidEvent(
                f"type {type_!r} is not allowed on topic {topic!r} "
                f"(allowed: {', '.join(allowed) or 'none'})",
                "type",
            )

    time = None
    if attrs.get("time") is not None:
        time = parse_datetime(attrs["time"], "time")

    datacontenttype = attrs.get("datacontenttype")
    if datacontenttype is not None and (
        not isinstance(datacontenttype, str) or _media_type(datacontenttype) != DATA_CONTENT_TYPE
    ):
        raise InvalidEvent(
            f"must be {DATA_CONTENT_TYPE} or absent, got {show(datacontenttype)}",
            "datacontenttype",
        )

    if "data_base64" in attrs:
        raise InvalidEvent("is not supported: data must be a JSON object", "data_base64")
    if "data" not in attrs:
        raise InvalidEvent("missing required attribute data", "data")
    data = attrs["data"]
    if not isinstance(data, dict):
        raise InvalidEvent(f"must be a JSON object, got {show(data)}", "data")

    extensions: dict[str, Any] = {}
    for name, ext in attrs.items():
        if name in CORE_ATTRIBUTES or name == "data" or ext is None:
            continue
        if _EXTENSION_NAME.fullmatch(name) is None:
            raise InvalidEvent(
                "is not a valid CloudEvents attribute name (lowercase a-z and 0-9, "
                "at most 20 characters)",
                printable_name(name),
            )
        if not isinstance(ext, str | int | float | bool):
            raise InvalidEvent(
                f"extension attribute must be a string, number or boolean, got {show(ext)}",
                name,
            )
        extensions[name] = ext

    if key is not None:
        try:
            key_text = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("Kafka key is not valid UTF-8", "key") from None
        if key_text != subject:
            raise InvalidEvent(
                f"Kafka key {show(key_text)} does not match subject {subject!r}", "key"
            )

    if known:
        data = validate_data(type_, data)
    worker_id = data.get("worker_id")
    # A worker's event (its spec has worker_id) is keyed by the worker; a type without one
    # (a source alert) is keyed by what its subject names.
    about_worker = known and "worker_id" in SPECS[type_].field_map
    if (about_worker or worker_id is not None) and worker_id != subject:
        raise InvalidEvent(
            f"subject {subject!r} does not match data.worker_id {show(worker_id)}", "subject"
        )

    return Envelope(
        id=id_,
        source=source,
        type=type_,
        subject=subject,
        data=data,
        time=time,
        specversion=SPECVERSION,
        datacontenttype=DATA_CONTENT_TYPE,
        extensions=extensions,
    )


_CORE_AND_DATA = frozenset((*CORE_ATTRIBUTES, "data"))
_TEXT_ATTRIBUTES = ("id", "source", "subject")
# The types the fast path knows, with what _build would ask of them: whether their data is
# about a worker (keyed by worker_id), and that the name passes _string_attribute.
_FAST_TYPES = {
    name: "worker_id" in spec.field_map
    for name, spec in SPECS.items()
    if name.strip()
    and ":" not in name
    and len(name) <= MAX_ATTRIBUTE_LENGTH
    and name.isascii()
    and name.isprintable()
}


def _fast_structured(key: bytes | None, value: bytes, topic: str | None) -> Envelope | None:
    """The envelope ``_build(_json(value), key, topic)`` would return, when that is certain;
    ``None`` on any doubt (the precise path then decides). Never raises."""
    escaped = b"\\" in value
    if escaped and b"\\u" in value:
        return None
    try:
        attrs = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(attrs) is not dict or attrs.get("specversion") != SPECVERSION:
        return None
    plain = not escaped and value.isascii() and b"\x7f" not in value
    # the " of the members outside data: 2 per key, 2 per string value (specversion, id,
    # source, type, subject so far), 1 per \" escape
    quotes = 2 * len(attrs) + 10
    for name in _TEXT_ATTRIBUTES:
        text = attrs.get(name)
        if (
            type(text) is not str
            or len(text) > MAX_ATTRIBUTE_LENGTH
            or not text.strip()
            or (not plain and CONTROL_RE.search(text) is not None)
        ):
            return None
        if escaped:
            quotes += text.count('"')
    type_ = attrs.get("type")
    if type(type_) is not str or type_ not in _FAST_TYPES:
        return None
    if topic is not None and type_ not in TYPES_BY_TOPIC.get(topic, ()):
        return None
    time = attrs.get("time")
    if time is not None:
        if type(time) is not str:
            return None
        time = fast_datetime(time)
        if time is None:
            return None
        quotes += 2
    content_type = attrs.get("datacontenttype")
    if content_type is not None:
        if content_type != DATA_CONTENT_TYPE:
            return None
        quotes += 2
    data = attrs.get("data")
    if type(data) is not dict:
        return None
    extensions: dict[str, Any] = {}
    if not _CORE_AND_DATA.issuperset(attrs):
        for name, ext in attrs.items():
            if name in _CORE_AND_DATA:
                continue
            # data_base64 fails the name pattern; floats and nulls take the precise path
            if _EXTENSION_NAME.fullmatch(name) is None or type(ext) not in (str, int, bool):
                return None
            if type(ext) is str:
                quotes += 2 + (ext.count('"') if escaped else 0)
            extensions[name] = ext
    subject: str = attrs["subject"]
    if key is not None and (type(key) is not bytes or key != subject.encode()):
        return None
    checked = fast_data(type_, data, plain, escaped)
    if checked is None:
        return None
    data, data_quotes = checked
    worker_id = data.get("worker_id")
    if (_FAST_TYPES[type_] or worker_id is not None) and worker_id != subject:
        return None
    if value.count(b'"') != quotes + data_quotes:
        return None  # a key was repeated (or the count is not exact): the precise path
    return Envelope.unchecked(attrs["id"], attrs["source"], type_, subject, data, time, extensions)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _jsonable(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return _json_default(value)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
