"""The decoder as it was before the fast path (December 2026), kept verbatim as the test
oracle: ``tests/unit/test_decode_fast.py`` requires ``schemas.envelope.decode`` to accept and
refuse exactly what this accepts and refuses, with the same messages, fields and envelopes.
Do not "fix" this copy: it is the reference the fast path is held to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from errors import InvalidEvent
from schemas.envelope import (
    CORE_ATTRIBUTES,
    DATA_CONTENT_TYPE,
    MAX_ATTRIBUTE_LENGTH,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    Envelope,
)
from schemas.fields import (
    Region,
    check_identifier,
    parse_date,
    parse_datetime,
    printable_name,
    show,
    surrogate_free,
)
from schemas.topics import TYPES_BY_TOPIC
from schemas.types import SPECS, TypeSpec, get_spec

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")


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
        attrs = _json(value)
        if not isinstance(attrs, dict):
            raise InvalidEvent(f"a structured CloudEvent must be a JSON object, got {show(attrs)}")
    return _build(attrs, key, topic)


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
