"""schemas.envelope.encode writes byte for byte what the json module wrote before orjson."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import Envelope, _encode_json, encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
times = st.datetimes(
    min_value=datetime(1970, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=7)), timezone(-timedelta(hours=3))]),
)


def _envelope(data: dict, at: datetime | None) -> Envelope:
    return Envelope(
        id="e-1", source="garda", type="garda.case.opened", subject="PMI-1", data=data, time=at
    )


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.text(), json_values, max_size=6), at=st.none() | times, when=times)
def test_encode_matches_the_json_module(data: dict, at: datetime | None, when: datetime) -> None:
    data = {**data, "at": when, "day": when.date()}
    env = _envelope(data, at)
    doc = json.loads(encode(env))
    assert encode(env) == _encode_json({k: v for k, v in _doc_of(env).items()}), (
        "orjson and json differ"
    )
    assert doc["data"]["day"] == when.date().isoformat()


def _doc_of(env: Envelope) -> dict:
    from schemas.fields import format_datetime

    doc = {
        "specversion": env.specversion,
        "id": env.id,
        "source": env.source,
        "type": env.type,
        "subject": env.subject,
    }
    if env.time is not None:
        doc["time"] = format_datetime(env.time)
    doc["datacontenttype"] = env.datacontenttype
    doc["data"] = env.data
    return doc


def test_utc_is_written_z_and_unicode_raw() -> None:
    at = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)
    out = encode(_envelope({"name": "Siti Aminah \u2028 ✓", "ctl": "a\nb\x1f"}, at))
    assert b'"time":"2026-12-01T10:00:00.123000Z"' in out
    assert "Siti Aminah \u2028 ✓".encode() in out and b'"a\\nb\\u001f"' in out


@pytest.mark.parametrize(
    "bad",
    [{"big": 2**70}, {1: "non-string key"}, {"lone": "\ud800"}, {"when": datetime(2026, 1, 1)}],
)
def test_what_orjson_refuses_behaves_as_before(bad: dict) -> None:
    env = _envelope(bad, None)
    try:
        expected: bytes | type[BaseException] = _encode_json(_doc_of(env))
    except Exception as exc:  # noqa: BLE001 - the old behaviour, whatever it was
        expected = type(exc)
    if isinstance(expected, bytes):
        assert encode(env) == expected
    else:
        with pytest.raises(expected):
            encode(env)


def test_a_date_is_iso() -> None:
    assert b'"d":"2026-12-01"' in encode(_envelope({"d": date(2026, 12, 1)}, None))
