"""``infra.bulk.doc_json`` writes what ``to_doc`` gives (the rebuild's COPY documents)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import orjson
import pytest

from handlers.model import Case, Claim, Worker
from infra.bulk import doc_json
from infra.db import _jsonb_decode, _jsonb_encode

T = datetime(2026, 12, 1, 22, 23, 13, tzinfo=UTC)
JAKARTA = timezone(timedelta(hours=7))


def _objects() -> list[object]:
    worker = Worker(
        worker_id="W-1",
        state="placed",
        insured_until=T.replace(microsecond=123456),
        departed_at=T.astimezone(JAKARTA),  # converted to UTC, as iso() does
        non_procedural_reasons=["no_worker_card"],
        origin={"province": "33"},
        employer={"key": "EMP-1", "name": "n", "since": T},
        flags=[],
    )
    case = Case(
        case_id="CASE-1",
        worker_id="W-1",
        kind="protection",
        category="accident",
        severity="high",
        post_id="KDEI-TAIPEI",
        opened_at=T,
        incident_ids=["INC-1"],
        detail={"occurred_at": T, "dates": (date(2026, 11, 30), T), "nested": [{"at": T}]},
    )
    claim = Claim(
        claim_id="CLM-1",
        worker_id="W-1",
        program="JKK",
        filed_at=T,
        history=[{"at": T.isoformat(), "status": "filed", "amount": 10**12}],
    )
    return [worker, case, claim]


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: type(o).__name__)
def test_doc_json_is_to_doc(obj: Worker | Case | Claim) -> None:
    assert orjson.loads(doc_json(obj)) == orjson.loads(orjson.dumps(obj.to_doc()))


def test_jsonb_codec_takes_ready_json_and_values() -> None:
    assert _jsonb_encode(b'{"a": 1}') == b'\x01{"a": 1}'
    assert _jsonb_decode(_jsonb_encode({"a": [1, "x"]})) == {"a": [1, "x"]}
    big = _jsonb_decode(b"\x01" + str(2**70).encode())  # beyond orjson's integers
    assert big == 2**70 and type(big) is int
