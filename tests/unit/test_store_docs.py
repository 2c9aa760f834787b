"""The stored documents (``handlers.model.doc_json``), the rows compared with those read
(``infra.store.LoadedRows``) and the jsonb codec (``infra.db``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from handlers.model import Case, Claim, Worker, doc_json, json_bytes
from infra.db import _jsonb_decode, _jsonb_encode
from infra.store import LoadedRows

T = datetime(2026, 12, 1, 22, 23, 13, tzinfo=UTC)
JAKARTA = timezone(timedelta(hours=7))


def _case(**changes: object) -> Case:
    case = Case(
        case_id="CASE-1",
        worker_id="W-1",
        kind="protection",
        category="accident",
        severity="high",
        post_id="KDEI-TAIPEI",
        opened_at=T,
        ack_due=T + timedelta(hours=1),
        incident_ids=["INC-1"],
        detail={"occurred_at": T, "dates": (date(2026, 11, 30), T), "nested": [{"at": T}]},
    )
    case.__dict__.update(changes)
    return case


def _objects() -> dict[str, object]:
    worker = Worker(
        worker_id="W-1",
        state="placed",
        insured_until=T.replace(microsecond=123456),
        departed_at=T,
        non_procedural_reasons=["no_worker_card"],
        origin={"province": "33"},
        employer={"key": "EMP-1", "name": "n", "since": T},
    )
    claim = Claim(
        claim_id="CLM-1",
        worker_id="W-1",
        program="JKK",
        filed_at=T,
        history=[{"at": "2026-12-01T22:23:13Z", "status": "filed"}],
    )
    odd = _case()
    odd.surprise = "an attribute that is not a field"  # type: ignore[attr-defined]
    return {
        "worker": worker,
        "case": _case(),
        "claim": claim,
        "worker, a time with an offset": Worker(worker_id="W-2", departed_at=T.astimezone(JAKARTA)),
        "case, a nested time with an offset": _case(detail={"at": T.astimezone(JAKARTA)}),
        "case, a naive time (iso: local time)": _case(resolved_at=T.replace(tzinfo=None)),
        "case, text that looks like a time with an offset": _case(
            detail={"said": "2026-12-01T10:00:00+07:00", "naive": "2026-12-01T10:00:00"}
        ),
        "case, an integer beyond 64 bits": _case(detail={"amount": 10**30}),
        "case, a key that is not a string": _case(detail={1: "one"}),
        "case, an attribute that is not a field": odd,
        "claim, a date": Claim(
            claim_id="C-2", worker_id="W-1", program="JKM", history=[{"on": date(2026, 1, 2)}]
        ),
    }


@pytest.mark.parametrize(("name", "obj"), _objects().items(), ids=list(_objects()))
def test_doc_json_writes_the_json_of_to_doc(name: str, obj: Worker | Case | Claim) -> None:
    assert doc_json(obj) == json_bytes(obj.to_doc())
    assert orjson.loads(doc_json(obj)) == orjson.loads(json_bytes(obj.to_doc()))


@pytest.mark.parametrize("name", ["worker", "case", "claim"])
def test_doc_json_writes_a_utc_document_without_building_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = _objects()[name]
    expected = json_bytes(obj.to_doc())  # type: ignore[attr-defined]

    def refuse(self: object) -> None:
        raise AssertionError("to_doc called")

    monkeypatch.setattr(type(obj), "to_doc", refuse)
    assert doc_json(obj) == expected  # type: ignore[arg-type]


def test_json_bytes_falls_back_to_the_json_module() -> None:
    assert json_bytes({"n": 10**30, 2: "x"}) == b'{"n": 1000000000000000000000000000000, "2": "x"}'
    assert json_bytes({"a": [1, None]}) == b'{"a":[1,null]}'


def _row(doc: bytes, partition: int = 1, due: datetime | None = T) -> tuple[object, ...]:
    return ("CASE-1", "W-1", due, partition, doc)


def test_a_row_is_unchanged_only_when_every_column_is_equal() -> None:
    doc = doc_json(_case())
    loaded = LoadedRows(cases={"CASE-1": (_row(doc), orjson.loads(doc))})
    assert not loaded.changed(loaded.cases, _row(doc))
    # the same instant with another offset is the same timestamptz
    assert not loaded.changed(loaded.cases, _row(doc, due=T.astimezone(JAKARTA)))
    assert loaded.changed(loaded.cases, _row(doc_json(_case(severity="critical"))))
    assert loaded.changed(loaded.cases, _row(doc, partition=2))
    assert loaded.changed(loaded.cases, _row(doc, due=None))
    assert loaded.changed(loaded.cases, ("CASE-2", "W-1", T, 1, doc))  # never read


def test_a_stored_document_that_does_not_read_back_to_itself_is_written() -> None:
    """A document of an older layout (a key since dropped, one not there yet) reads into the
    same object, whose JSON is not what is stored: the row is written, as it always was."""
    doc = doc_json(_case())
    old = {**orjson.loads(doc), "retired_key": 1}
    loaded = LoadedRows(cases={"CASE-1": (_row(doc), old)})
    assert loaded.changed(loaded.cases, _row(doc))


def test_the_jsonb_codec_takes_ready_json_and_values() -> None:
    assert _jsonb_encode(b'{"a": 1}') == b'\x01{"a": 1}'
    assert _jsonb_encode({"a": [1, "x"]}) == b'\x01{"a": [1, "x"]}'
    assert _jsonb_decode(_jsonb_encode({"a": [1, "x"]})) == {"a": [1, "x"]}
    assert _jsonb_decode(b"\x01" + str(2**70).encode()) == 2**70  # beyond orjson's integers


def test_stored_json_gives_back_integers_beyond_64_bits_exactly() -> None:
    # orjson reads them as floats; a stored document must read back as it was written
    from infra.db import stored_json

    doc = {"amount": 2**70, "low": -(2**64), "id": "1234567890123456789012", "n": 7}
    for text in (json.dumps(doc), json.dumps(doc).encode()):
        back = stored_json(text)
        assert back == doc
        assert type(back["amount"]) is int and type(back["low"]) is int
    assert stored_json(b'{"a": 1e999}') == {"a": float("inf")}  # orjson refuses: json reads
    assert stored_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


@given(st.text(alphabet=st.sampled_from("0123456789x.-é\u00b2\U0001f600"), max_size=60))
@example("x" + "1" * 19)
@example("1" * 18 + "\u00b2")
def test_the_long_digit_check_is_the_regular_expression(text: str) -> None:
    # the translate-based check finds exactly what [0-9]{19} finds, in str and in bytes
    from infra.db import has_long_digit_run

    expected = re.search(r"[0-9]{19}", text) is not None
    assert has_long_digit_run(text) is expected
    assert has_long_digit_run(text.encode()) is expected
