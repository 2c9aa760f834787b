"""``infra.queries.CaseJson`` and ``case_page_json``: the case list's reply, joined from each
case's cached text, is byte for byte what encoding the whole page gives."""

from __future__ import annotations

import json

from bench.desk_cases import synthetic_cases
from handlers.model import Case
from handlers.policy import load_policy
from infra.db import stored_json
from infra.queries import CaseJson, api_json, case_page_json, page_cursor


def stored_texts(n: int) -> list[str]:
    cases = synthetic_cases(n, load_policy(), seed=3)
    cases[0].detail["note"] = "Pekerja di Johor — «darurat» 救命 \u2028"  # non-ASCII kept as is
    cases[1].detail["big"] = 2**70  # beyond 64 bits: read as the pool's decoder reads it
    return [json.dumps(c.to_doc()) for c in cases]


def test_entries_are_the_public_json_of_the_document() -> None:
    cache = CaseJson(max_size=8)
    for text in stored_texts(20):
        expected = Case.from_doc(stored_json(text)).public()  # what a fetched row gives
        got_text, got = cache.get(text)
        assert got == expected and got_text == api_json(expected)
        assert cache.get(text)[1] is got  # served again from the cache
    assert len(cache) == 8


def test_least_recently_served_leave_first() -> None:
    a, b, c = stored_texts(3)
    cache = CaseJson(max_size=2)
    first = cache.get(a)
    cache.get(b)
    cache.get(a)  # a served again: b is now the oldest
    cache.get(c)
    assert cache.get(a) is first and len(cache) == 2
    assert set(cache._entries) == {a, c}


def test_page_bytes_equal_the_whole_page_encoded() -> None:
    cache = CaseJson()
    cases = [cache.get(t) for t in stored_texts(12)]
    for page in (cases, cases[:1], []):
        for order in ("urgency", "newest"):
            rest: dict = {"count": len(page)}
            if page:
                rest["next"] = page_cursor(page[-1][1], order)
            whole = {"cases": [public for _, public in page], **rest}
            assert case_page_json(page, rest) == api_json(whole)
            assert json.loads(case_page_json(page, rest)) == json.loads(json.dumps(whole))
