"""The fast decoding path against the decoder it replaced (``reference_decode``, a verbatim
copy of the code before it): every input must be accepted or refused alike, with the same
message and field, the same ``Envelope`` (``repr``: types of values and time zones too) and
the same content digest. The inputs are the simulator's events and the sample data of every
type, mutated: values replaced by awkward JSON values, keys repeated, dropped or added,
escapes and non-ASCII text, other separators, single bytes changed."""

from __future__ import annotations

import copy
import itertools
import json
import random
from dataclasses import replace
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from errors import InvalidEvent
from infra.simulate import traffic
from schemas.envelope import Envelope, _fast_structured, decode
from schemas.topics import TYPES_BY_TOPIC
from schemas.types import SPECS
from streams.processor import content_digest
from tests.unit import reference_decode
from tests.unit.test_schemas import FULL, MINIMAL, W, _event

TOPIC_OF = {t: topic for topic, types in TYPES_BY_TOPIC.items() for t in types}


def outcome(fn: Any, key: bytes | None, value: bytes, topic: str | None) -> tuple:
    try:
        env = fn(key, value, [], topic)
    except InvalidEvent as exc:
        return ("refused", str(exc), exc.field)
    tz = env.time.tzinfo if env.time is not None else None
    return ("accepted", repr(env), tz is UTC, content_digest(env))


def assert_same(value: bytes, key: bytes | None = None, topic: str | None = None) -> tuple:
    expected = outcome(reference_decode.decode, key, value, topic)
    assert outcome(decode, key, value, topic) == expected, value
    return expected


# -- a JSON writer that can repeat keys and choose its escapes and separators -----------------


class Pairs(list):
    """An object written member by member (a key may repeat)."""


def dump(value: Any, ensure_ascii: bool = False, sep: str = ": ", comma: str = ", ") -> str:
    if isinstance(value, dict):
        value = Pairs(value.items())
    if isinstance(value, Pairs):
        inner = comma.join(
            json.dumps(k, ensure_ascii=ensure_ascii) + sep + dump(v, ensure_ascii, sep, comma)
            for k, v in value
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + comma.join(dump(v, ensure_ascii, sep, comma) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def simulator_events(n: int = 300) -> list[tuple[str, bytes, bytes]]:
    return [(t, k.encode(), v) for t, k, v in itertools.islice(traffic(7), n)]


def sample_events() -> list[tuple[str | None, bytes, bytes]]:
    out: list[tuple[str | None, bytes, bytes]] = []
    for type_ in MINIMAL:
        for data in (MINIMAL[type_], FULL[type_]):
            doc = _event(type_, dict(data))
            subject = data.get("worker_id", W)
            doc["subject"] = subject
            out.append((TOPIC_OF.get(type_), subject.encode(), json.dumps(doc).encode()))
    return out


SEEDS = [*simulator_events(), *sample_events()]


# -- the unchanged inputs take the fast path, with the reference's result -------------------


def test_every_seed_takes_the_fast_path_with_the_same_result() -> None:
    for topic, key, value in SEEDS:
        assert assert_same(value, key, topic)[0] == "accepted"
        assert _fast_structured(key, value, topic) is not None, value


def test_compact_and_escaped_forms_take_the_fast_path_too() -> None:
    for topic, key, value in SEEDS[:50] + SEEDS[-40:]:
        doc = json.loads(value)
        for form in (
            dump(doc, sep=":", comma=","),
            dump(doc, sep=" :\t", comma=" ,\n"),
            dump({**doc, "data": {**doc["data"]}}, ensure_ascii=False),
        ):
            assert assert_same(form.encode(), key, topic)[0] == "accepted"
            assert _fast_structured(key, form.encode(), topic) is not None


@pytest.mark.parametrize(
    "text",
    [
        'say "hi": now',
        "tab\there",
        "back\\slash",
        'ends with a quote"',
        "Bahasa é ü",
        "\x7f del",
        "\x85 next line",
        "line\u2028sep",
    ],
)
def test_escapes_and_non_ascii_in_free_text(text: str) -> None:
    doc = _event("pmi.incident.reported", {**FULL["pmi.incident.reported"], "description": text})
    for ensure_ascii in (False, True):
        assert assert_same(dump(doc, ensure_ascii).encode())[0] == "accepted"
    # without \\u escapes (ensure_ascii=False writes them only for control characters)
    value = dump(doc).encode()
    assert (_fast_structured(None, value, None) is not None) == (b"\\u" not in value)


@pytest.mark.parametrize("char", ["\x7f", "\x85", "\x9f", "\n", "\x01"])
@pytest.mark.parametrize("where", ["id", "source", "data.incident_id"])
def test_control_characters_in_ids_are_refused_alike(char: str, where: str) -> None:
    doc = _event("pmi.incident.reported", dict(FULL["pmi.incident.reported"]))
    if where.startswith("data."):
        doc["data"][where[5:]] = f"a{char}b"
    else:
        doc[where] = f"a{char}b"
    assert assert_same(dump(doc).encode())[0] == "refused"


# -- repeated keys: the quote count must see every one ---------------------------------------


def _with_repeat(doc: dict, path: tuple[str, ...], name: str, repeat: Any) -> str:
    """``doc`` written with the member ``name`` of the object at ``path`` given twice (the
    second time with ``repeat``)."""

    def build(obj: dict, rest: tuple[str, ...]) -> Pairs:
        pairs = Pairs(
            (k, build(v, rest[1:]) if rest and k == rest[0] else v) for k, v in obj.items()
        )
        if not rest:
            pairs.append((name, repeat))
        return pairs

    return dump(build(doc, path))


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ((), "id"),
        ((), "time"),
        ((), "data"),
        ((), "specversion"),
        (("data",), "worker_id"),
        (("data",), "nik"),
        (("data",), "contract_end"),
        (("data",), "origin"),
        (("data", "origin"), "village"),
    ],
)
@pytest.mark.parametrize("same", [True, False])
def test_a_repeated_key_is_refused_like_the_reference(path: tuple, name: str, same: bool) -> None:
    doc = _event("pmi.departure.recorded", dict(FULL["pmi.departure.recorded"]))
    obj: Any = doc
    for step in path:
        obj = obj[step]
    repeat = obj[name] if same else (obj[name] + "x" if isinstance(obj[name], str) else obj[name])
    result = assert_same(_with_repeat(doc, path, name, repeat).encode())
    assert result[0] == "refused" and "duplicate key" in result[1]


def test_a_repeated_key_cannot_hide_behind_quotes_in_text() -> None:
    # the dropped member's quotes could be made up by quotes elsewhere only through escapes
    doc = _event("pmi.incident.reported", dict(FULL["pmi.incident.reported"]))
    for description in ('a"b', 'a""b', '"', 'x\\"y'):
        doc["data"]["description"] = description
        text = _with_repeat(doc, ("data",), "severity", "low")
        assert assert_same(text.encode())[0] == "refused"
        text = _with_repeat(doc, ("data",), "description", "")
        assert assert_same(text.encode())[0] == "refused"


def test_unicode_escapes_take_the_precise_path() -> None:
    doc = _event("pmi.incident.reported", dict(FULL["pmi.incident.reported"]))
    for text in ('"\\u0022"', '"a\\u003ab"', '"\\udfff"', '"\\u0000"', '"\\u00e9"'):
        value = dump(doc).replace('"No wages for 4 months."', text).encode()
        assert _fast_structured(None, value, None) is None
        assert_same(value)


# every field of every type given each of these values, one at a time
GRID_VALUES: list[Any] = [
    *["", " ", "\n", "x", "x" * 200, "x" * 201, "x" * 5000, "x" * 5001, "a:b", 'a"b', "é"],
    *["MY", "my", "HK", "MY-01", "MY-1234", "HK-KYT", "p2p", "P2P", "low", "JKK", "ack", W],
    *["2026-11-29T02:31:29Z", "2026-11-29T02:31:29.1234567Z", "2026-02-30T00:00:00Z"],
    *["2026-12-31", "2026-12-06", "2029-01-01", "2026-02-29", "1899-12-31", "9000-01-01"],
    *[-1, 0, 1, 2, 3, 43199, 2**63, 2**64, 5.0, 2.5, True, False, None, [], {}, {"x": "y"}],
    {"province": "33"},
    {"province": ""},
]


def test_every_field_of_every_type_with_awkward_values() -> None:
    for type_ in MINIMAL:
        required = {k: v for k, v in MINIMAL[type_].items() if k in SPECS[type_].required}
        for data in [required] + [
            {k: v for k, v in FULL[type_].items() if k != name} for name in FULL[type_]
        ]:
            assert_same(dump(_event(type_, data)).encode())
        for name in FULL[type_]:
            for v in GRID_VALUES:
                doc = _event(type_, {**FULL[type_], name: v})
                doc["subject"] = doc["data"].get("worker_id", W)
                if not isinstance(doc["subject"], str):
                    doc["subject"] = W
                assert_same(dump(doc).encode(), doc["subject"].encode(), TOPIC_OF.get(type_))


# -- property tests: mutated seeds -------------------------------------------------------------

_AWKWARD_TEXT = st.text(
    alphabet=st.sampled_from(
        [*"aZ09 -:.,+T", '"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "\x85", "é", "\u2028"]
        + ["\ud800", "\udfff", "\U0001f600", " "]
    ),
    max_size=8,
)
_DATETIMES = st.sampled_from(
    [
        "2026-11-29T02:31:29Z",
        "2026-11-29t02:31:29z",
        "2026-11-29T02:31:29.1234567+05:30",
        "2026-11-29T02:31:29.5-00:00",
        "2026-02-29T00:00:00Z",
        "2026-11-29T24:00:00Z",
        "1899-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
        "2026-11-29T02:31:29",
        "2026-11-29 02:31:29Z",
        "2026-11-29T02:31:60Z",
        "2026-11-29T02:31:29+24:00",
    ]
)
_DATES = st.sampled_from(
    ["2026-12-31", "2026-12-06", "2026-02-29", "2024-02-29", "1899-01-01", "2026-1-01"]
)
_VALUES = st.one_of(
    _AWKWARD_TEXT,
    _DATETIMES,
    _DATES,
    st.sampled_from(["", " ", "MY", "my", "MY-01", "HK-KYT", "SG-01", "p2p", "low", "JKK", W]),
    st.integers(min_value=-3, max_value=5),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([0.0, 5.0, 2.5, -1.0, 1e300, True, False, None, [], {}, ["x"], {"a": 1}]),
    st.text(min_size=195, max_size=205, alphabet="ab"),
)
_KEYS = st.sampled_from(
    ["id", "source", "type", "subject", "time", "datacontenttype", "specversion", "data"]
    + ["data_base64", "ext", "traceparent", "Bad", "x" * 21, "a:b", 'q"k', "origin"]
    + ["worker_id", "nik", "description", "region", "country", "contract_start", "level"]
)


def _paths(doc: dict) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    if isinstance(doc.get("data"), dict):
        out.append(("data",))
        if isinstance(doc["data"].get("origin"), dict):
            out.append(("data", "origin"))
    return out


def _mutate(doc: dict, rnd: random.Random, draw: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    for _ in range(rnd.choice((1, 1, 2, 3))):
        path = rnd.choice(_paths(doc))
        obj = doc
        for step in path:
            obj = obj[step]
        action = rnd.random()
        names = list(obj)
        if action < 0.45 and names:
            obj[rnd.choice(names)] = draw(_VALUES)
        elif action < 0.6 and names:
            del obj[rnd.choice(names)]
        elif action < 0.75:
            obj[draw(_KEYS)] = draw(_VALUES)
        elif action < 0.9 and names:  # a value taken from another member
            obj[rnd.choice(names)] = obj[rnd.choice(names)]
        else:
            return _with_repeat(doc, path, draw(_KEYS), draw(_VALUES))
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    rnd=st.randoms(use_true_random=False),
    ensure_ascii=st.booleans(),
    compact=st.booleans(),
    keyed=st.booleans(),
    data=st.data(),
)
def test_mutated_events_decode_like_the_reference(
    seed: tuple, rnd: random.Random, ensure_ascii: bool, compact: bool, keyed: bool, data: Any
) -> None:
    topic, key, value = seed
    # a copy of each value drawn: the sampled lists and objects are shared between examples
    mutated = _mutate(json.loads(value), rnd, lambda s: copy.deepcopy(data.draw(s)))
    if isinstance(mutated, str):
        text = mutated
    else:
        text = dump(mutated, ensure_ascii, *((":", ",") if compact else (": ", ", ")))
    value = text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8 bytes
    assert_same(value, key if keyed else None, topic if keyed else None)


@settings(max_examples=1500, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    edit=st.sampled_from(["replace", "insert", "delete"]),
    byte=st.sampled_from(b'0123456789:"\\,{}[] \t\n-+TZzuU.ae\x00\x7f\xc3\xa9\xed\xff'),
)
def test_byte_edits_decode_like_the_reference(
    seed: tuple, position: float, edit: str, byte: int
) -> None:
    topic, key, value = seed
    i = int(position * len(value))
    if edit == "replace":
        value = value[:i] + bytes([byte]) + value[i + 1 :]
    elif edit == "insert":
        value = value[:i] + bytes([byte]) + value[i:]
    else:
        value = value[:i] + value[i + 1 :]
    assert_same(value, key, topic)


def test_unchecked_envelope_equals_the_dataclass_one() -> None:
    args = ("e-1", "src", "pmi.incident.reported", W, {"worker_id": W})
    for extra in ({}, {"time": None, "extensions": {"ext": "x"}}):
        fast, slow = Envelope.unchecked(*args, **extra), Envelope(*args, **extra)
        assert fast == slow and repr(fast) == repr(slow) and hash(fast.key) == hash(slow.key)
        assert replace(fast, subject="W-2") == replace(slow, subject="W-2")


def test_a_value_remembered_for_one_kind_is_checked_again_for_another() -> None:
    # the fast path remembers valid country codes, region codes, dates and date-times, each
    # kind apart: a region code, a date or a date-time read before is no country, date-time
    # or date elsewhere
    full = FULL["pmi.departure.recorded"]
    assert_same(dump(_event("pmi.departure.recorded", dict(full))).encode())
    region, date_text = full.get("destination_region", "MY-01"), full["contract_end"]
    for name, value in [
        ("destination_country", region),
        ("destination_region", full["destination_country"]),
        ("departed_at", date_text),
        ("contract_end", full["departed_at"]),
        ("destination_country", "MY-01"),
    ]:
        for _ in range(2):
            doc = _event("pmi.departure.recorded", {**full, name: value})
            assert assert_same(dump(doc).encode())[0] == "refused", (name, value)
