"""The start-up wait: retriable failures are waited for, others fail at once."""

from __future__ import annotations

import pytest
import stamina

from errors import Unavailable
from infra.readiness import _where, wait_for


@pytest.fixture(autouse=True)
def no_waiting():
    stamina.set_testing(True, attempts=5)
    yield
    stamina.set_testing(False)


async def test_retriable_failures_are_waited_for() -> None:
    calls = []

    async def probe() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "refused")

    assert await wait_for("database", "db:5432/x", probe, timeout=10) == 3


async def test_a_permanent_failure_stops_at_once() -> None:
    calls = []

    async def probe() -> None:
        calls.append(1)
        raise ValueError("password authentication failed")

    with pytest.raises(Unavailable, match="the database at db:5432/x refused Garda"):
        await wait_for("database", "db:5432/x", probe, timeout=10)
    assert len(calls) == 1


async def test_giving_up_names_what_and_where() -> None:
    async def probe() -> None:
        raise ConnectionRefusedError(111, "refused")

    with pytest.raises(Unavailable, match=r"the broker at k:9092 is still unreachable after 10 s"):
        await wait_for("broker", "k:9092", probe, timeout=10)


def test_where_never_shows_the_password() -> None:
    assert _where("postgresql://garda:s3cret@db.internal:5432/garda") == "db.internal:5432/garda"
    assert _where("postgresql://db:5432/garda") == "db:5432/garda"
