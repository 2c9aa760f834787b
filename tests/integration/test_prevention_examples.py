"""The worked examples of README.md ("Prevention and aftercare") and docs/prevention.md,
replayed word for word against a real ``garda worker``, broker and database.

The policy is the default one with the intake ages raised (the examples are dated) and the
high ladder moved far away, so that the referral lapse is the first escalation whenever
this runs (the case opens with its dates in the past, before the acknowledgement arrives).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import DEFAULT_POLICY_PATH
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    REPO,
    WorkerProcess,
    assert_subset,
    doc_examples,
    eventually,
    publish_events,
    read_topic,
)

DOCS = (REPO / "README.md", REPO / "docs" / "prevention.md")


def examples() -> dict[str, Any]:
    """The JSON blocks after ``<!-- example: NAME -->`` markers, in both documents."""
    return doc_examples(*DOCS)


def example_policy(tmp: Path) -> Path:
    text = DEFAULT_POLICY_PATH.read_text()
    for old, new in (
        ('max_event_age = "30d"', 'max_event_age = "3650d"'),
        ('max_action_age = "1d"', 'max_action_age = "3650d"'),
        (
            '[sla.high]\nack = "24h"\nlevel2 = "72h"\nresolve = "14d"',
            '[sla.high]\nack = "3650d"\nlevel2 = "3651d"\nresolve = "3652d"',
        ),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp / "examples.toml"
    path.write_text(text)
    return path


@pytest.fixture
async def ex_worker(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Settings, WorkerProcess]]:
    s = settings.replace(policy=example_policy(tmp_path))
    w = WorkerProcess(s, tmp_path, "w1")
    await w.start()
    try:
        yield s, w
    finally:
        await w.stop()


async def case_events(settings: Settings, case_id: str, type_: str) -> list[dict[str, Any]]:
    msgs = await read_topic(settings, topics.CASES, min_count=1)
    out = [json.loads(m.value) for m in msgs if m.value]
    return [e for e in out if e["type"] == type_ and e["data"]["case_id"] == case_id]


async def test_worked_examples(ex_worker: tuple[Settings, WorkerProcess]) -> None:
    settings, _ = ex_worker
    ex = examples()
    assert {
        "reintegration-events",
        "reintegration-case",
        "referral-events",
        "referral-escalated",
    } <= set(ex)

    await publish_events(settings, topics.DEPARTURES, ex["reintegration-events"])
    want = ex["reintegration-case"]
    opened = await eventually(
        lambda: case_events(settings, want["case_id"], "garda.case.opened"),
        lambda evs: len(evs) == 1,
        timeout=20,
    )
    assert_subset(want, opened[0]["data"])

    events = ex["referral-events"]
    await publish_events(settings, topics.INCIDENTS, events[:1])
    case_id = events[1]["data"]["case_id"]
    await eventually(
        lambda: case_events(settings, case_id, "garda.case.opened"),
        lambda e: len(e) == 1,
        timeout=20,
    )
    await publish_events(settings, topics.CASE_ACTIONS, events[1:])
    want = ex["referral-escalated"]
    escalated = await eventually(
        lambda: case_events(settings, case_id, "garda.case.escalated"),
        lambda e: len(e) >= 1,
        timeout=30,
    )
    assert_subset(want, escalated[0]["data"])


async def employer_events(settings: Settings) -> list[dict[str, Any]]:
    msgs = await read_topic(settings, topics.EMPLOYERS, min_count=1)
    return [json.loads(m.value) for m in msgs if m.value]


async def test_employer_watchlist_example(ex_worker: tuple[Settings, WorkerProcess]) -> None:
    settings, _ = ex_worker
    ex = examples()
    await publish_events(settings, topics.DEPARTURES, ex["employer-departures"])
    await publish_events(settings, topics.INCIDENTS, ex["employer-incidents"])
    for res in ex["employer-resolutions"]:
        await eventually(
            lambda res=res: case_events(settings, res["data"]["case_id"], "garda.case.opened"),
            lambda e: len(e) == 1,
            timeout=20,
        )
    await publish_events(settings, topics.CASE_ACTIONS, ex["employer-resolutions"])
    want = ex["employer-watchlisted"]
    events = await eventually(
        lambda: employer_events(settings),
        lambda evs: any(e["data"]["employer_key"] == want["employer_key"] for e in evs),
        timeout=30,
    )
    (listed,) = [e for e in events if e["data"]["employer_key"] == want["employer_key"]]
    assert listed["type"] == "garda.employer.watchlisted"
    assert_subset(want, listed["data"])

    await publish_events(settings, topics.DEPARTURES, [ex["employer-newcomer"]])
    visit = ex["employer-visit"]
    opened = await eventually(
        lambda: case_events(settings, visit["case_id"], "garda.case.opened"),
        lambda e: len(e) == 1,
        timeout=20,
    )
    assert_subset(visit, opened[0]["data"])
