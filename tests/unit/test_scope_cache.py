"""``infra.tokens.ScopeCache`` and the token check the case list's statement carries."""

from __future__ import annotations

from handlers.access import Scope, case_filter
from handlers.policy import load_policy
from infra.queries import list_cases_sql
from infra.tokens import ACTIVE_TOKEN_SQL, ScopeCache


def scope(n: int) -> Scope:
    return Scope(f"tok_{n}", frozenset({"KJRI-JOHOR-BAHRU"}), False)


def test_bounded_least_recently_resolved_first() -> None:
    cache = ScopeCache(max_size=2)
    cache.put("h1", scope(1))
    cache.put("h2", scope(2))
    cache.put("h1", scope(1))  # resolved again: now the most recent
    cache.put("h3", scope(3))
    assert len(cache) == 2
    assert cache.get("h2") is None
    assert cache.get("h1") == scope(1) and cache.get("h3") == scope(3)
    cache.forget("h3")
    cache.forget("h3")  # forgetting twice is harmless
    assert cache.get("h3") is None and len(cache) == 1


def with_check_before_last_order(plain: str, check: str) -> str:
    head, sep, tail = plain.rpartition(" ORDER BY ")
    return f"{head} AND {check}{sep}{tail}"


def test_the_statement_checks_the_token_once_outside_the_slices() -> None:
    filters = {"status": "open,acknowledged,reopened"}
    post = case_filter(Scope("tok_1", frozenset({"KBRI-KUALA-LUMPUR"}), False), load_policy())
    for visible in (None, post):  # headquarters: one ordered read; a post: the slices' union
        plain, plain_args = list_cases_sql(filters, visible=visible, limit=50, order="urgency")
        sql, args = list_cases_sql(
            filters, visible=visible, limit=50, order="urgency", active_token="abc"
        )
        assert args == [*plain_args, "abc"]
        assert sql == with_check_before_last_order(plain, ACTIVE_TOKEN_SQL.format(len(args)))
