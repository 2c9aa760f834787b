"""Event schemas: the CloudEvents envelope, the data validator, the JSON Schemas.

The agreement tests run every sample payload through both the validator and a JSON Schema
validator (``jsonschema``) on the generated schema and require both to give the expected
answer.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from errors import InvalidEvent
from schemas import generate
from schemas.envelope import Envelope, decode, encode, new_envelope
from schemas.fields import (
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
    parse_date,
    parse_datetime,
)
from schemas.topics import CASE_ACTIONS, CLAIMS, COMMANDS, DEPARTURES, INCIDENTS, TYPES_BY_TOPIC
from schemas.types import SPECS, json_schema, list_types, parsed_data, validate_data

W = "PMI-2024-000123"
T = "2026-11-29T02:31:29Z"
CASE = {"case_id": "CASE-1", "worker_id": W, "actor": "officer-7", "post_id": "kjri-hong-kong"}

# Minimal (required fields only) and full (every field) valid data of every type.
MINIMAL: dict[str, dict[str, Any]] = {
    "pmi.departure.recorded": {
        "worker_id": W,
        "destination_country": "MY",
        "departed_at": T,
        "scheme": "p2p",
        "employer_type": "household",
        "visa_type": "work",
    },
    "pmi.departure.failed": {"worker_id": W, "reason": "visa refused"},
    "pmi.arrival.reported": {"worker_id": W, "country": "HK", "reported_at": T},
    "pmi.contract.extended": {"worker_id": W, "contract_end": "2028-06-30"},
    "pmi.return.recorded": {"worker_id": W, "returned_at": T, "reason": "contract_completed"},
    "pmi.incident.reported": {
        "incident_id": "INC-9",
        "worker_id": W,
        "category": "unpaid_wages",
        "occurred_at": T,
        "country": "MY",
        "reporter_type": "hotline",
    },
    "pmi.incident.updated": {"incident_id": "INC-9", "worker_id": W, "note": "called back"},
    "pmi.claim.filed": {
        "claim_id": "CLM-1",
        "worker_id": W,
        "program": "JKK",
        "event_date": "2026-11-20",
        "filed_at": T,
    },
    "pmi.claim.status-changed": {
        "claim_id": "CLM-1",
        "worker_id": W,
        "status": "paid",
        "changed_at": T,
    },
    "pmi.case.acknowledged": dict(CASE),
    "pmi.case.note-added": {**CASE, "note": "Spoke with employer."},
    "pmi.case.referred": {**CASE, "to": "BP2MI Crisis Center"},
    "pmi.case.resolved": {**CASE, "resolution": "Wages paid in full."},
    "pmi.case.reopened": dict(CASE),
    "garda.deadline.due": {
        "case_id": "CASE-1",
        "worker_id": W,
        "due_at": T,
        "deadline": "ack",
        "level": 1,
    },
    "garda.claim.stalled": {"claim_id": "CLM-1", "worker_id": W, "last_change_at": T},
    "garda.deadlines.recompute": {"case_id": "CASE-1", "worker_id": W, "sla": "0123abcd"},
    "pmi.case.referral-accepted": dict(CASE),
    "pmi.case.referral-declined": dict(CASE),
    "garda.referral.due": {"case_id": "CASE-1", "worker_id": W, "due_at": T},
    "garda.reintegration.reminder-due": {"case_id": "CASE-1", "worker_id": W, "due_at": T},
    "garda.alert.source-silent": {
        "alert": "source-silent",
        "source": "siskop2mi/embarkation",
        "name": "Embarkation feed",
        "post_id": "HQ",
        "severity": "high",
        "episode": 1,
        "silent_since": "2026-11-28T10:00:00Z",
        "detected_at": "2026-11-28T22:00:01Z",
        "max_silence_seconds": 43200,
    },
    "garda.alert.source-recovered": {
        "alert": "source-recovered",
        "source": "siskop2mi/embarkation",
        "name": "Embarkation feed",
        "post_id": "HQ",
        "severity": "high",
        "episode": 1,
        "silent_since": "2026-11-28T10:00:00Z",
        "recovered_at": "2026-11-29T10:00:00Z",
        "silent_seconds": 86400,
    },
}
OPTIONAL: dict[str, dict[str, Any]] = {
    "pmi.departure.recorded": {
        "destination_region": "MY-01",
        "embarkation_point": "CGK",
        "p3mi_license": "KEP-123/2020",
        "employer_name": "Tan Family",
        "sector": "domestic",
        "e_pmi_id": "EPMI-77",
        "bpjs_membership_no": "24010000001",
        "contract_start": "2026-12-01",
        "contract_end": "2028-11-30",
        "origin": {"province": "33", "regency": "3301", "village": "3301010001"},
        "nik": "3301010101010001",
        "passport_no": "C1234567",
        "full_name": "Siti Aminah",
    },
    "pmi.departure.failed": {"at": T},
    "pmi.arrival.reported": {"region": "HK-KYT", "employer_name": "Wong Ltd"},
    "pmi.contract.extended": {},
    "pmi.return.recorded": {},
    "pmi.incident.reported": {
        "severity": "high",
        "region": "MY-10",
        "description": "No wages for 4 months.",
    },
    "pmi.incident.updated": {"severity": "critical", "category": "trafficking"},
    "pmi.claim.filed": {"benefit": "medical care", "amount_idr": 15000000, "incident_id": "INC-9"},
    "pmi.claim.status-changed": {"reason": "documents verified", "amount_paid_idr": 0},
    "pmi.case.acknowledged": {"at": T},
    "pmi.case.note-added": {"at": T},
    "pmi.case.referred": {"at": T},
    "pmi.case.resolved": {"at": T, "note": "Worker confirmed.", "substantiated": True},
    "pmi.case.reopened": {"at": T},
    "garda.deadline.due": {},
    "garda.claim.stalled": {},
    "garda.deadlines.recompute": {},
    "pmi.case.referral-accepted": {"at": T, "note": "Shelter place found."},
    "pmi.case.referral-declined": {"at": T, "note": "No capacity this month."},
    "garda.referral.due": {},
    "garda.reintegration.reminder-due": {},
    "garda.alert.source-silent": {"last_seen_at": "2026-11-28T10:00:00Z"},
    "garda.alert.source-recovered": {},
}
FULL = {t: {**MINIMAL[t], **OPTIONAL[t]} for t in MINIMAL}

DESIGN_TYPES = {
    "pmi.departure.recorded",
    "pmi.departure.failed",
    "pmi.arrival.reported",
    "pmi.contract.extended",
    "pmi.return.recorded",
    "pmi.incident.reported",
    "pmi.incident.updated",
    "pmi.claim.filed",
    "pmi.claim.status-changed",
    "pmi.case.acknowledged",
    "pmi.case.note-added",
    "pmi.case.referred",
    "pmi.case.resolved",
    "pmi.case.reopened",
    "garda.deadline.due",
    "garda.claim.stalled",
    "garda.deadlines.recompute",
    "pmi.case.referral-accepted",
    "pmi.case.referral-declined",
    "garda.referral.due",
    "garda.reintegration.reminder-due",
    "garda.alert.source-silent",
    "garda.alert.source-recovered",
}


def _event(type_: str = "pmi.incident.reported", data: dict | None = None, **attrs: Any) -> dict:
    doc = {
        "specversion": "1.0",
        "id": "7f0c-1",
        "source": "kjri-hong-kong/case-desk",
        "type": type_,
        "subject": W,
        "time": T,
        "datacontenttype": "application/json",
        "data": dict(MINIMAL[type_]) if data is None else data,
    }
    doc.update(attrs)
    return doc


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _fails(key: bytes | None, value: bytes | None, headers=None, topic=None) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode(key, value, headers, topic)
    return info.value


def _binary_headers(type_: str = "pmi.incident.reported", **extra: str) -> list:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": "b-1",
        "ce_source": "hotline",
        "ce_type": type_,
        "ce_subject": W,
        "ce_time": T,
        "content-type": "application/json",
        **extra,
    }
    return [(k, v.encode()) for k, v in headers.items()]


# -- the type list ---------------------------------------------------------------------------


def test_list_types_is_design_section_4() -> None:
    assert set(list_types()) == DESIGN_TYPES
    assert len(list_types()) == len(DESIGN_TYPES)
    inputs = {t for types in TYPES_BY_TOPIC.values() for t in types}
    # Every type is an input of one topic, except Garda's declared alerts (pmi.alerts.v1).
    assert set(list_types()) - inputs == {t for t in list_types() if t.startswith("garda.alert.")}
    assert inputs <= set(list_types())


def test_samples_cover_every_field() -> None:
    for type_, spec in SPECS.items():
        assert set(FULL[type_]) == set(spec.field_map), type_
        assert set(MINIMAL[type_]) >= set(spec.required), type_


# -- decode: structured mode -----------------------------------------------------------------


def test_decode_structured() -> None:
    doc = _event(data=FULL["pmi.incident.reported"], traceparent="00-abc-01", priority=3)
    env = decode(W.encode(), _bytes(doc), [("content-type", b"application/cloudevents+json")])
    assert env == Envelope(
        id="7f0c-1",
        source="kjri-hong-kong/case-desk",
        type="pmi.incident.reported",
        subject=W,
        data=FULL["pmi.incident.reported"],
        time=datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC),
        extensions={"traceparent": "00-abc-01", "priority": 3},
    )
    assert env.key == ("kjri-hong-kong/case-desk", "7f0c-1")
    assert env.data["occurred_at"] == T  # the string form stays in data
    assert env.parsed_data()["occurred_at"] == datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC)


def test_decode_structured_minimal_attributes_and_no_headers() -> None:
    doc = _event()
    del doc["time"], doc["datacontenttype"]
    env = decode(None, _bytes(doc), None)
    assert env.time is None and env.datacontenttype == "application/json"
    env = decode(None, _bytes({**doc, "time": None, "datacontenttype": None}), [])
    assert env.time is None


INPUT_TYPES = sorted(t for t in DESIGN_TYPES if not t.startswith("garda.alert."))
ALERT_TYPES = sorted(t for t in DESIGN_TYPES if t.startswith("garda.alert."))


@pytest.mark.parametrize("type_", INPUT_TYPES)
@pytest.mark.parametrize("shape", ["minimal", "full"])
def test_decode_every_type_on_its_topic(type_: str, shape: str) -> None:
    data = (MINIMAL if shape == "minimal" else FULL)[type_]
    topic = next(t for t, types in TYPES_BY_TOPIC.items() if type_ in types)
    env = decode(W.encode(), _bytes(_event(type_, data)), [], topic)
    assert env.type == type_ and env.data == data


def test_content_type_parameters_are_accepted() -> None:
    headers = [("Content-Type", b"application/cloudevents+json; charset=utf-8")]
    assert decode(None, _bytes(_event()), headers).id == "7f0c-1"


def test_structured_mode_rejects_other_content_type() -> None:
    err = _fails(None, _bytes(_event()), [("content-type", b"application/json")])
    assert err.field == "content-type"
    assert "application/cloudevents+json" in err.reason


def test_unrelated_headers_are_ignored() -> None:
    headers = [("traceparent", b"\xff\xfe"), ("x-retry", b"2")]
    assert decode(None, _bytes(_event()), headers).type == "pmi.incident.reported"


# -- decode: binary mode ---------------------------------------------------------------------


def test_decode_binary() -> None:
    data = FULL["pmi.incident.reported"]
    headers = _binary_headers(ce_traceparent="00-abc-01")
    env = decode(W.encode(), _bytes(data), headers, INCIDENTS)
    assert env == Envelope(
        id="b-1",
        source="hotline",
        type="pmi.incident.reported",
        subject=W,
        data=data,
        time=datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC),
        extensions={"traceparent": "00-abc-01"},
    )


def test_decode_binary_without_content_type_or_time() -> None:
    headers = [(k, v) for k, v in _binary_headers() if k not in ("content-type", "ce_time")]
    env = decode(None, _bytes(MINIMAL["pmi.incident.reported"]), headers)
    assert env.time is None and env.id == "b-1"


@pytest.mark.parametrize(
    ("headers", "value", "field", "needle"),
    [
        (_binary_headers(**{"content-type": "text/plain"}), None, "content-type", "binary"),
        (_binary_headers(ce_specversion="0.3"), None, "specversion", "'1.0'"),
        ([h for h in _binary_headers() if h[0] != "ce_id"], None, "id", "missing"),
        ([h for h in _binary_headers() if h[0] != "ce_subject"], None, "subject", "missing"),
        (_binary_headers(ce_type="pmi.unknown"), None, "type", "unknown event type"),
        (_binary_headers(ce_time="yesterday"), None, "time", "RFC 3339"),
        (_binary_headers() + [("ce_source", b"again")], None, "ce_source", "duplicate"),
        (_binary_headers() + [("ce_foo", b"\xff")], None, "ce_foo", "UTF-8"),
        (_binary_headers(), b"[1, 2]", "data", "JSON object"),
        (_binary_headers(), b"{oops", None, "invalid JSON"),
        (_binary_headers(), None, None, "invalid JSON"),
    ],
)
def test_decode_binary_errors(headers, value, field, needle) -> None:
    payload = (
        value if value is not None or field is None else _bytes(MINIMAL["pmi.incident.reported"])
    )
    err = _fails(None, payload, headers)
    assert err.field == field
    assert needle in err.reason


# -- decode: failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"{", b"not json", b"\xff\xfe{}", b"", b"   ", None, b'{"a": NaN}', b'{"a": 1, "a": 2}'],
)
def test_invalid_json(value: bytes | None) -> None:
    err = _fails(None, value)
    assert err.reason.startswith("invalid JSON") and err.field is None


def test_deeply_nested_json() -> None:
    err = _fails(None, b"[" * 100000 + b"]" * 100000)
    assert err.reason.startswith("invalid JSON")


@pytest.mark.parametrize("value", [b"[]", b'"event"', b"42", b"null", b"true"])
def test_not_an_object(value: bytes) -> None:
    err = _fails(None, value)
    assert "JSON object" in err.reason


@pytest.mark.parametrize("attr", ["specversion", "id", "source", "type", "subject", "data"])
def test_missing_attribute(attr: str) -> None:
    doc = _event()
    del doc[attr]
    err = _fails(None, _bytes(doc))
    assert err.field == attr and "missing required attribute" in err.reason
    err = _fails(None, _bytes({**_event(), attr: None}))
    assert err.field == attr


@pytest.mark.parametrize(
    ("attrs", "field", "needle"),
    [
        ({"specversion": "0.3"}, "specversion", "'1.0'"),
        ({"specversion": 1.0}, "specversion", "'1.0'"),
        ({"specversion": "1.0.2"}, "specversion", "'1.0'"),
        ({"id": ""}, "id", "empty"),
        ({"id": "  "}, "id", "empty"),
        ({"id": 7}, "id", "string"),
        ({"id": "x" * 201}, "id", "at most 200"),
        ({"source": ["a"]}, "source", "string"),
        ({"subject": ""}, "subject", "empty"),
        ({"type": ""}, "type", "empty"),
        ({"time": "2026-11-29T02:31:29"}, "time", "timezone"),
        ({"time": 1732847489}, "time", "RFC 3339"),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "application/json"),
        ({"datacontenttype": 5}, "datacontenttype", "application/json"),
        ({"data_base64": "e30="}, "data_base64", "not supported"),
        ({"data": "text"}, "data", "JSON object"),
        ({"data": [MINIMAL["pmi.incident.reported"]]}, "data", "JSON object"),
        ({"Trace_Parent": "x"}, "Trace_Parent", "attribute name"),
        ({"averyveryverylongextensionname": "x"}, "averyveryverylongextensionname", "name"),
        ({"meta": {"a": 1}}, "meta", "string, number or boolean"),
        ({"tags": ["a"]}, "tags", "string, number or boolean"),
    ],
)
def test_attribute_errors(attrs: dict, field: str, needle: str) -> None:
    err = _fails(None, _bytes(_event(**attrs)))
    assert err.field == field
    assert needle in err.reason


def test_id_of_200_characters_is_fine() -> None:
    assert decode(None, _bytes(_event(id="x" * 200)), None).id == "x" * 200


def test_unknown_type() -> None:
    err = _fails(None, _bytes({**_event(), "type": "pmi.incident.deleted"}))
    assert err.field == "type" and "unknown event type 'pmi.incident.deleted'" in err.reason


@pytest.mark.parametrize(
    ("type_", "topic"),
    [
        ("pmi.incident.reported", DEPARTURES),
        ("pmi.claim.filed", INCIDENTS),
        ("pmi.case.resolved", CLAIMS),
        ("garda.deadline.due", CASE_ACTIONS),
        ("pmi.departure.recorded", COMMANDS),
        ("pmi.incident.reported", "pmi.cases.v1"),
        ("pmi.incident.reported", "dev.pmi.incidents.v1"),  # prefix must be stripped by caller
    ],
)
def test_type_not_allowed_on_topic(type_: str, topic: str) -> None:
    err = _fails(None, _bytes(_event(type_)), None, topic)
    assert err.field == "type" and "not allowed on topic" in err.reason
    assert topic in err.reason


def test_key_subject_mismatch() -> None:
    err = _fails(b"PMI-OTHER", _bytes(_event()))
    assert err.field == "key"
    assert "does not match subject" in err.reason and "PMI-OTHER" in err.reason
    assert _fails(b"", _bytes(_event())).field == "key"
    err = _fails(b"\xff\xfe", _bytes(_event()))
    assert err.field == "key" and "UTF-8" in err.reason


def test_subject_worker_id_mismatch() -> None:
    err = _fails(None, _bytes(_event(subject="PMI-OTHER")))
    assert err.field == "subject"
    assert "does not match data.worker_id" in err.reason
    # the key agrees with the subject but not with data.worker_id: still rejected
    err = _fails(b"PMI-OTHER", _bytes(_event(subject="PMI-OTHER")))
    assert err.field == "subject"


def test_precise_country_message() -> None:
    data = {**MINIMAL["pmi.departure.recorded"], "destination_country": "Malaysia"}
    err = _fails(W.encode(), _bytes(_event("pmi.departure.recorded", data)), None, DEPARTURES)
    assert err.field == "data.destination_country"
    assert err.reason == "must be an ISO 3166-1 alpha-2 code like 'MY', got 'Malaysia'"
    assert str(err) == f"data.destination_country: {err.reason}"


# one case per field kind, through decode, with the field path
@pytest.mark.parametrize(
    ("type_", "patch", "field", "needle"),
    [
        ("pmi.departure.recorded", {"worker_id": ""}, "data.worker_id", "empty"),
        ("pmi.departure.recorded", {"sector": 5}, "data.sector", "must be a string, got 5"),
        ("pmi.departure.recorded", {"full_name": "x" * 201}, "data.full_name", "at most 200"),
        ("pmi.incident.reported", {"description": "x" * 5001}, "data.description", "5000"),
        ("pmi.departure.recorded", {"scheme": "P2P"}, "data.scheme", "one of 'p2p'"),
        ("pmi.departure.recorded", {"visa_type": None}, "data.visa_type", "one of"),
        ("pmi.arrival.reported", {"country": "hk"}, "data.country", "alpha-2"),
        ("pmi.arrival.reported", {"region": "HK01"}, "data.region", "ISO 3166-2"),
        ("pmi.arrival.reported", {"region": "MY-01"}, "data.region", "not in country 'HK'"),
        (
            "pmi.departure.recorded",
            {"destination_region": "SG-01"},
            "data.destination_region",
            "not in destination_country 'MY'",
        ),
        ("pmi.incident.reported", {"occurred_at": "2026-11-29"}, "data.occurred_at", "RFC 3339"),
        (
            "pmi.incident.reported",
            {"occurred_at": "2026-02-30T00:00:00Z"},
            "data.occurred_at",
            "day",
        ),
        (
            "pmi.claim.filed",
            {"event_date": "2026-11-20T00:00:00Z"},
            "data.event_date",
            "YYYY-MM-DD",
        ),
        ("pmi.claim.filed", {"event_date": "2026-02-29"}, "data.event_date", "day"),
        ("pmi.claim.filed", {"amount_idr": -1}, "data.amount_idr", "non-negative integer"),
        ("pmi.claim.filed", {"amount_idr": True}, "data.amount_idr", "non-negative integer"),
        ("pmi.claim.filed", {"amount_idr": "100"}, "data.amount_idr", "non-negative integer"),
        ("pmi.claim.filed", {"amount_idr": 1.5}, "data.amount_idr", "non-negative integer"),
        ("garda.deadline.due", {"level": 3}, "data.level", "from 1 to 2"),
        ("pmi.departure.recorded", {"origin": "33"}, "data.origin", "JSON object"),
        ("pmi.departure.recorded", {"origin": {"city": "x"}}, "data.origin.city", "unknown"),
        ("pmi.departure.recorded", {"origin": {"village": ""}}, "data.origin.village", "empty"),
        ("pmi.departure.recorded", {"salary": 1}, "data.salary", "unknown field"),
        (
            "pmi.departure.recorded",
            {"contract_start": "2027-01-01", "contract_end": "2026-12-31"},
            "data.contract_end",
            "before contract_start",
        ),
        ("pmi.incident.updated", {"note": None}, "data.note", "string"),
    ],
)
def test_field_errors(type_: str, patch: dict, field: str, needle: str) -> None:
    data = {**MINIMAL[type_], **patch}
    err = _fails(W.encode(), _bytes(_event(type_, data)))
    assert err.field == field
    assert needle in err.reason


@pytest.mark.parametrize("type_", sorted(DESIGN_TYPES))
def test_missing_required_field_paths(type_: str) -> None:
    for name in SPECS[type_].required:
        data = {k: v for k, v in MINIMAL[type_].items() if k != name}
        err = _fails(None, _bytes(_event(type_, data, subject=W)))
        assert (err.field, "is required" in err.reason) == (f"data.{name}", True)


def test_incident_updated_needs_one_change() -> None:
    err = _fails(None, _bytes(_event("pmi.incident.updated", {"incident_id": "I", "worker_id": W})))
    assert err.field == "data" and "at least one of severity, category, note" in err.reason


# -- validate_data (the HTTP API entry) ------------------------------------------------------


def test_validate_data_returns_normalized_copy() -> None:
    data = {**MINIMAL["pmi.claim.filed"], "amount_idr": 2500.0}
    out = validate_data("pmi.claim.filed", data)
    assert out == {**data, "amount_idr": 2500} and type(out["amount_idr"]) is int
    assert out is not data and data["amount_idr"] == 2500.0


def test_validate_data_errors() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_data("pmi.nope", {})
    assert info.value.field == "type"
    with pytest.raises(InvalidEvent) as info:
        validate_data("pmi.claim.filed", ["x"])
    assert info.value.field == "data"
    with pytest.raises(InvalidEvent) as info:
        validate_data("pmi.case.referred", {**CASE})
    assert info.value.field == "data.to"


def test_parsed_data() -> None:
    parsed = parsed_data("pmi.departure.recorded", FULL["pmi.departure.recorded"])
    assert parsed["departed_at"] == datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC)
    assert parsed["contract_start"] == date(2026, 12, 1)
    assert parsed["origin"] == {"province": "33", "regency": "3301", "village": "3301010001"}


def test_parse_datetime_forms() -> None:
    plus7 = timezone(timedelta(hours=7))
    assert parse_datetime("2026-11-29T09:31:29+07:00") == datetime(
        2026, 11, 29, 2, 31, 29, tzinfo=UTC
    )
    assert parse_datetime("2026-11-29T09:31:29+07:00").tzinfo == plus7
    assert parse_datetime("2026-11-29t02:31:29.123456789z").microsecond == 123456
    assert parse_datetime("2026-11-29T02:31:29.5-00:00").microsecond == 500000
    for bad in ["2026-11-29T02:31:29", "2026-11-29 02:31:29Z", "2026-11-29T02:31:60Z", "MY\n"]:
        with pytest.raises(InvalidEvent):
            parse_datetime(bad)
    assert parse_date("2024-02-29") == date(2024, 2, 29)
    for bad in ["2026-11-29T00:00:00Z", "2026-11-29\n", "٢٠٢٦-١١-٢٩"]:
        with pytest.raises(InvalidEvent):
            parse_date(bad)


# -- encode / new_envelope -------------------------------------------------------------------


def test_round_trip_structured() -> None:
    doc = _event(data=FULL["pmi.incident.reported"], traceparent="00-abc-01", sampled=True)
    env = decode(W.encode(), _bytes(doc), None)
    again = decode(W.encode(), encode(env), [("content-type", b"application/cloudevents+json")])
    assert again == env
    assert json.loads(encode(env))["time"] == T


def test_round_trip_binary_to_structured() -> None:
    env = decode(W.encode(), _bytes(MINIMAL["pmi.incident.reported"]), _binary_headers())
    assert decode(W.encode(), encode(env), None) == env


@pytest.mark.parametrize("type_", INPUT_TYPES)
def test_round_trip_every_type(type_: str) -> None:
    env = new_envelope(
        type_, W, FULL[type_], id=f"garda-{type_}", time=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert env.source == "garda"
    assert decode(W.encode(), encode(env), None) == env


@pytest.mark.parametrize("type_", ALERT_TYPES)
@pytest.mark.parametrize("shape", ["minimal", "full"])
def test_source_alerts_round_trip_keyed_by_source(type_: str, shape: str) -> None:
    data = (MINIMAL if shape == "minimal" else FULL)[type_]
    src = data["source"]
    env = new_envelope(type_, src, data, id=f"a-{type_}", time=datetime(2026, 1, 1, tzinfo=UTC))
    assert decode(src.encode(), encode(env), None) == env
    # Declared data is validated like an input's.
    with pytest.raises(InvalidEvent):
        new_envelope(type_, src, {**data, "episode": 0}, id="bad")


def test_new_envelope_for_output_types() -> None:
    due = datetime(2026, 11, 29, 3, 31, 29, 500, tzinfo=timezone(timedelta(hours=8)))
    env = new_envelope(
        "garda.case.opened",
        W,
        {"case_id": "C1", "worker_id": W, "ack_due": due, "opened_on": date(2026, 11, 29)},
        id="garda:case:C1:opened",
        time=due,
        extensions={"partitionkey": W},
    )
    assert env.id == "garda:case:C1:opened" and env.time == due and env.source == "garda"
    assert env.data["ack_due"] == "2026-11-29T03:31:29.000500+08:00"
    assert env.data["opened_on"] == "2026-11-29"
    doc = json.loads(encode(env))
    assert doc["data"] == env.data
    assert doc["partitionkey"] == W and doc["specversion"] == "1.0"
    # an output type is unknown to the input decoder
    assert _fails(W.encode(), encode(env)).field == "type"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": {"case_id": "C1", "worker_id": "PMI-OTHER"}}, "subject"),
        ({"time": datetime(2026, 1, 1)}, "time"),
        ({"extensions": {"type": "x"}}, "type"),
        ({"extensions": {"Bad-Name": "x"}}, "Bad-Name"),
        ({"id": ""}, "id"),
        ({"type": "pmi.claim.filed", "data": {"worker_id": W}}, "data.claim_id"),
    ],
)
def test_new_envelope_errors(kwargs: dict, field: str) -> None:
    args: dict[str, Any] = {"type": "garda.case.opened", "subject": W, "data": {"worker_id": W}}
    args["id"] = "x"
    args.update(kwargs)
    with pytest.raises(InvalidEvent) as info:
        new_envelope(**args)
    assert info.value.field == field


def test_new_envelope_deadline_command_with_datetime() -> None:
    due = datetime(2026, 11, 29, 2, 31, 29, tzinfo=UTC)
    data = {"case_id": "C1", "worker_id": W, "due_at": due, "deadline": "ack", "level": 1}
    env = new_envelope("garda.deadline.due", W, data, id="garda:deadline:C1:ack:1")
    assert env.data["due_at"] == T and env.parsed_data()["due_at"] == due
    assert decode(W.encode(), encode(env), None, COMMANDS) == env


def test_encode_datetime_left_in_data() -> None:
    env = Envelope(id="i", source="garda", type="garda.x", subject=W, data={"at": date(2026, 1, 2)})
    assert json.loads(encode(env))["data"] == {"at": "2026-01-02"}


def test_encode_rejects_unserializable_data() -> None:
    env = new_envelope("garda.alert.raised", W, {"worker_id": W, "blob": object()}, id="a")
    with pytest.raises(TypeError):
        encode(env)


# -- JSON Schemas: committed files, generator, agreement with the validator ------------------


def test_committed_schema_files_are_generated() -> None:
    assert generate.stale_files() == []
    assert sorted(p.stem for p in generate.SCHEMA_DIR.glob("*.json")) == sorted(DESIGN_TYPES)
    for type_ in list_types():
        on_disk = json.loads((generate.SCHEMA_DIR / f"{type_}.json").read_text())
        assert on_disk == json_schema(type_)


def test_generator_writes_and_checks(tmp_path) -> None:
    (tmp_path / "stale.json").write_text("{}")
    written = generate.generate(tmp_path)
    assert len(written) == len(DESIGN_TYPES) and not (tmp_path / "stale.json").exists()
    assert generate.stale_files(tmp_path) == []
    (tmp_path / "pmi.claim.filed.json").write_text("{}\n")
    assert generate.stale_files(tmp_path) == ["pmi.claim.filed.json"]


@pytest.mark.parametrize("type_", sorted(DESIGN_TYPES))
def test_schema_shape(type_: str) -> None:
    schema = json_schema(type_)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(SPECS[type_].required)


_BAD_BY_KIND: dict[type, list[Any]] = {
    Text: ["", "   ", None, 5, ["x"], {"x": 1}, True],
    Boolean: [None, 0, 1, "true", "false", [True], {"x": True}],
    # control characters make derived ids ambiguous (issue: case id collisions)
    Identifier: [
        "",
        "   ",
        None,
        5,
        ["x"],
        "a\x1fb",
        "a\x1eb",
        "line\nbreak",
        "tab\t",
        "\x7f",
        "x\x85",
    ],
    Enum: ["nope", "", None, 1, ["low"]],
    Country: ["Malaysia", "my", "M1", "MYS", "", None, 60],
    Region: ["MY01", "my-01", "MY-0001", "MY-", "MY-a1", None, 1],
    DateTime: [
        "2026-11-29T02:31:29",
        "2026-11-29 02:31:29Z",
        "2026-11-29T02:31Z",
        "2026-11-29",
        "2026-02-30T00:00:00Z",
        "2026-11-29T24:00:00Z",
        "2026-11-29T02:31:29+7:00",
        "2026-11-29T02:31:29+24:00",
        "0001-01-01T00:00:00+23:59",  # overflows on conversion to UTC
        "9999-12-31T23:59:59-23:59",
        "1899-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
        "29/11/2026 02:31",
        "",
        1732847489,
        None,
    ],
    Date: [
        "2026-02-30",
        "2026-1-5",
        "2026-01-01T00:00:00Z",
        "20260101",
        "2026-13-01",
        "9999-12-31",  # plus any coverage span overflows
        "0001-01-01",
        "",
        20260101,
        None,
    ],
    Integer: [-1, True, False, "5", 1.5, None, [1]],
    Object: ["33", [], None, {"city": "x"}, {"village": ""}, {"village": 3301}],
}


def _good_values(f: Field) -> list[Any]:
    if isinstance(f, Text):
        return ["x", "Siti Aminah — ä 🙂", "y" * f.max_length]
    if isinstance(f, Enum):
        return list(f.values)
    if isinstance(f, DateTime):
        return [
            "1900-01-01T00:00:00+01:00",
            "8999-12-31T23:59:59-23:59",
            "2026-11-29t02:31:29z",
            "2024-02-29T23:59:59.123456789-05:30",
            "2026-11-29T02:31:29+00:00",
        ]
    if isinstance(f, Date):
        return ["2028-02-29", "2028-11-30"]
    if isinstance(f, Integer):
        return [f.minimum, float(f.minimum)] + ([f.maximum] if f.maximum else [10**15])
    if isinstance(f, Object):
        return [{}, {"village": "3301010001"}]
    return []  # Country, Region: their good values depend on each other; see FULL


def _samples() -> list[tuple[str, str, dict | Any, bool]]:
    """(type, label, data, expected valid) for every type: many valid and invalid payloads."""
    out: list[tuple[str, str, Any, bool]] = []
    for type_, spec in SPECS.items():
        base, full = MINIMAL[type_], FULL[type_]
        out += [(type_, "minimal", base, True), (type_, "full", full, True)]
        out += [(type_, "not-an-object", [base], False), (type_, "empty", {}, False)]
        out.append((type_, "extra-field", {**base, "unexpected": 1}, False))
        for name in spec.required:
            out.append(
                (type_, f"missing-{name}", {k: v for k, v in base.items() if k != name}, False)
            )
        for name, f in spec.fields:
            if name not in spec.required:
                only = {**base, name: full[name]}
                if type_ == "pmi.incident.updated":
                    only = {"incident_id": "INC-9", "worker_id": W, name: full[name]}
                out.append((type_, f"with-{name}", only, True))
            for i, good in enumerate(_good_values(f)):
                out.append((type_, f"{name}-good-{i}", {**full, name: good}, True))
            for i, bad in enumerate(_BAD_BY_KIND[type(f)]):
                out.append((type_, f"{name}-bad-{i}", {**full, name: bad}, False))
            if isinstance(f, Text):
                out.append(
                    (type_, f"{name}-too-long", {**full, name: "z" * (f.max_length + 1)}, False)
                )
            if isinstance(f, Enum):
                out.append((type_, f"{name}-case", {**full, name: f.values[0].swapcase()}, False))
            if isinstance(f, Integer) and f.maximum is not None:
                out.append((type_, f"{name}-above", {**full, name: f.maximum + 1}, False))
                out.append((type_, f"{name}-below", {**full, name: f.minimum - 1}, False))
        if spec.any_of:
            bare = {k: v for k, v in base.items() if k not in spec.any_of}
            out.append((type_, "none-of-any-of", bare, False))
    return out


SAMPLES = _samples()

# Rules JSON Schema cannot state: the validator rejects these, the schema accepts them.
CROSS_FIELD = [
    ("pmi.departure.recorded", {**FULL["pmi.departure.recorded"], "destination_region": "SG-01"}),
    ("pmi.arrival.reported", {**FULL["pmi.arrival.reported"], "region": "MY-01"}),
    ("pmi.incident.reported", {**FULL["pmi.incident.reported"], "region": "ID-JK"}),
    (
        "pmi.departure.recorded",
        {
            **FULL["pmi.departure.recorded"],
            "contract_start": "2027-01-01",
            "contract_end": "2026-12-31",
        },
    ),
]

_VALIDATORS = {
    t: jsonschema.Draft202012Validator(
        json.loads((generate.SCHEMA_DIR / f"{t}.json").read_text()),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for t in DESIGN_TYPES
}


def _validator_accepts(type_: str, data: Any) -> bool:
    try:
        validate_data(type_, data)
    except InvalidEvent:
        return False
    return True


def test_sample_table_is_large_and_balanced() -> None:
    assert len(SAMPLES) > 800
    assert sum(ok for *_, ok in SAMPLES) > 250
    assert sum(not ok for *_, ok in SAMPLES) > 500
    assert {t for t, *_ in SAMPLES} == DESIGN_TYPES


def test_date_time_format_is_asserted() -> None:
    # the agreement tests rely on the format checker actually checking dates and date-times
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert not checker.conforms("2026-02-30T00:00:00Z", "date-time")
    assert not checker.conforms("2026-02-30", "date")


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [pytest.param(t, d, ok, id=f"{t}:{label}") for t, label, d, ok in SAMPLES],
)
def test_validator_and_schema_agree(type_: str, data: Any, expected: bool) -> None:
    schema_accepts = _VALIDATORS[type_].is_valid(data)
    assert (_validator_accepts(type_, data), schema_accepts) == (expected, expected)


@pytest.mark.parametrize(("type_", "data"), CROSS_FIELD)
def test_cross_field_rules_are_validator_only(type_: str, data: dict) -> None:
    assert _VALIDATORS[type_].is_valid(data)
    assert not _validator_accepts(type_, data)
    assert "$comment" in json_schema(type_)


@pytest.mark.parametrize("field", ["nik", "passport_no", "full_name", "employer_name"])
@pytest.mark.parametrize("bad", [3512345678901234, ["Dewi Lestari"], {"n": "Dewi Lestari"}])
def test_errors_never_repeat_personal_identifiers(field: str, bad: Any) -> None:
    data = {**MINIMAL["pmi.departure.recorded"], field: bad}
    with pytest.raises(InvalidEvent) as err:
        validate_data("pmi.departure.recorded", data)
    assert err.value.field == f"data.{field}"
    assert "3512345678901234" not in str(err.value) and "Dewi" not in str(err.value)


def test_arrays_and_objects_are_described_not_shown() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode(None, json.dumps([{"full_name": "Dewi Lestari"}]).encode(), None)
    assert "Dewi" not in str(err.value) and "array of 1 item" in str(err.value)


@pytest.mark.parametrize("where", ["data", "subject"])
def test_nul_characters_are_rejected(where: str) -> None:
    ev = _event("pmi.incident.reported")
    if where == "data":
        ev["data"]["description"] = "bad\x00byte"
        field = "data.description"
    else:
        ev["subject"] = ev["data"]["worker_id"] = "W\x001"
        field = "subject"
    with pytest.raises(InvalidEvent, match="NUL") as err:
        decode(None, json.dumps(ev).encode(), None)
    assert err.value.field in (field, "data.worker_id")


def test_schema_rejects_nul_characters_like_the_validator() -> None:
    data = {**MINIMAL["pmi.incident.reported"], "description": "bad\x00byte"}
    validator = jsonschema.Draft202012Validator(json_schema("pmi.incident.reported"))
    assert not validator.is_valid(data)
    with pytest.raises(InvalidEvent, match="NUL"):
        validate_data("pmi.incident.reported", data)


# -- hostile text: surrogates, control characters, overflowing instants ---------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": "a\udfffb"}, "id"),
        ({"source": "\ud800"}, "source"),
        (
            {"data": {**MINIMAL["pmi.incident.reported"], "description": "x\udfff"}},
            "data.description",
        ),
        (
            {"data": {**MINIMAL["pmi.incident.reported"], "incident_id": "\udc00"}},
            "data.incident_id",
        ),
        ({"data": {**MINIMAL["pmi.incident.reported"], "descr\udfff": "x"}}, "data.descr\\udfff"),
        ({"note\udfff": "x"}, "note\\udfff"),
        ({"ext": ["\udfff"]}, "ext[0]"),
    ],
)
def test_lone_surrogates_are_rejected_with_their_place(patch: dict, field: str) -> None:
    err = _fails(None, json.dumps(_event(**patch)).encode())
    assert err.field == field
    assert "lone UTF-16 surrogate" in err.reason
    str(err).encode("utf-8")  # the reason itself is encodable (headers, database, logs)


def test_surrogate_pairs_are_fine() -> None:
    data = {**MINIMAL["pmi.incident.reported"], "description": "\ud83d\ude00 ok"}
    env = decode(None, json.dumps(_event(data=data)).encode(), None)
    assert env.data["description"] == "\U0001f600 ok"


@pytest.mark.parametrize("attr", ["id", "source", "subject"])
@pytest.mark.parametrize("char", ["\x1f", "\x01", "\n", "\x7f", "\x9f"])
def test_control_characters_in_attributes_are_rejected(attr: str, char: str) -> None:
    ev = _event()
    ev[attr] = f"a{char}b"
    if attr == "subject":
        ev["data"]["worker_id"] = ev["subject"]
    err = _fails(None, json.dumps(ev).encode())
    assert err.field in (attr, "data.worker_id")
    assert "control characters" in err.reason


def test_free_text_may_hold_newlines() -> None:
    data = {**MINIMAL["pmi.incident.reported"], "description": "line 1\nline 2\ttab"}
    assert decode(None, json.dumps(_event(data=data)).encode(), None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0001-01-01T00:00:00+23:59", "year 1 is out of range"),
        ("9999-12-31T23:59:59-23:59", "year 9999 is out of range"),
        ("33658-01-01T00:00:00Z", "RFC 3339"),
    ],
)
def test_overflowing_instants_are_rejected_precisely(text: str, needle: str) -> None:
    err = _fails(None, json.dumps(_event(time=text)).encode())
    assert err.field == "time" and needle in err.reason


def test_schema_rejects_control_characters_in_ids_like_the_validator() -> None:
    data = {**MINIMAL["pmi.incident.reported"], "incident_id": "INC\x1f9"}
    assert not _VALIDATORS["pmi.incident.reported"].is_valid(data)
    assert not _validator_accepts("pmi.incident.reported", data)


@pytest.mark.parametrize("text", ["1900-01-01", "8999-12-31"])
def test_dates_at_the_year_bounds_are_fine(text: str) -> None:
    assert Date().check(text, "d") == text


@pytest.mark.parametrize("name", ["\x00_x", "a\x1fb", "n\udfff"])
def test_unknown_field_names_are_shown_escaped(name: str) -> None:
    data = {**MINIMAL["pmi.incident.reported"], name: 1}
    err = _fails(None, json.dumps(_event(data=data)).encode())
    assert err.field is not None and err.field.startswith("data.")
    assert err.field.isascii() and err.field.isprintable()  # storable in PostgreSQL and headers
