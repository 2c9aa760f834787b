"""Referral clocks against a real ``garda worker``, broker and database: a referral nobody
answers escalates its case once (also across a restart), an accepted one never does, a
declined one comes back to the post with an alert. The worker runs the default policy with
the referral answer windows shortened to seconds."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import DEFAULT_POLICY_PATH
from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    db_fetch,
    eventually,
    get_json,
    new_token,
    post_json,
    publish_events,
    read_events,
)

JOHOR = "KJRI-JOHOR-BAHRU"
WINDOW = 3  # seconds to answer a referral, every severity


def fast_referral_policy(tmp: Path) -> Path:
    """The default policy with every referral answer window set to ``WINDOW`` seconds."""
    head, tail = DEFAULT_POLICY_PATH.read_text().split("[referrals.answer_within]")
    tail = re.sub(r'(?m)^(critical|high|medium|low) = "\w+"$', rf'\1 = "{WINDOW}s"', tail)
    path = tmp / "referrals.toml"
    path.write_text(f"{head}[referrals.answer_within]{tail}")
    return path


@pytest.fixture
async def ref_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    w = WorkerProcess(settings.replace(policy=fast_referral_policy(tmp_path)), tmp_path, "w1")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def case_of(url: str, headers: dict[str, str], wid: str) -> dict[str, Any]:
    _, body = await eventually(
        lambda: get_json(f"{url}/api/cases?worker_id={wid}&kind=protection", headers=headers),
        lambda r: r[0] == 200 and len(r[1]["cases"]) == 1,
        timeout=20,
    )
    status, case = await get_json(f"{url}/api/cases/{body['cases'][0]['case_id']}", headers=headers)
    assert status == 200
    return case


def types(case: dict[str, Any]) -> list[str]:
    return [e["type"] for e in case["timeline"]]


async def test_referral_clocks(
    settings: Settings, ref_worker: WorkerProcess, tmp_path: Path
) -> None:
    url = ref_worker.url
    _, token = await new_token(settings, posts=[JOHOR])
    headers = bearer(token)
    wids = {k: f"W-REF-{k}-{uuid.uuid4().hex[:6]}" for k in ("lapse", "accept", "decline")}
    await publish_events(
        settings, topics.INCIDENTS, [incident(w, region="MY-01") for w in wids.values()]
    )
    cases = {k: await case_of(url, headers, w) for k, w in wids.items()}

    async def act(kind: str, action: str, **body: Any) -> None:
        cid = cases[kind]["case_id"]
        status, reply = await post_json(
            f"{url}/api/cases/{cid}/{action}", {"actor": "officer-jb-7", **body}, headers=headers
        )
        assert status == 202, reply

    async def until(kind: str, check: Any, timeout: float = 20) -> dict[str, Any]:
        wid = wids[kind]
        return await eventually(lambda: case_of(url, headers, wid), check, timeout=timeout)

    # an answer with no referral is refused (409) before anything is published
    cid = cases["accept"]["case_id"]
    status, reply = await post_json(
        f"{url}/api/cases/{cid}/referral-accepted", {"actor": "officer-jb-7"}, headers=headers
    )
    assert status == 409 and "no referral" in reply["error"], reply

    for kind in wids:
        await act(kind, "acknowledge")  # the ack clock stops: only the referral clock is left
        await act(kind, "refer", to="IOM Malaysia")
    for kind in wids:
        await until(kind, lambda c: "garda.case.referred" in types(c))
    await act("accept", "referral-accepted", note="shelter place found")
    await act("decline", "referral-declined", note="no capacity this month")

    lapsed = await until("lapse", lambda c: c["escalation_level"] == 1)
    step = next(e for e in lapsed["timeline"] if e["type"] == "garda.case.escalated")
    assert step["detail"]["reason"] == "referral not accepted in time"
    assert step["detail"]["escalated_to"] == "KBRI-KUALA-LUMPUR"
    referred_at = next(e["at"] for e in lapsed["timeline"] if e["type"] == "garda.case.referred")
    assert step["at"] >= step["detail"]["missed_deadline"] > referred_at

    accepted = await until("accept", lambda c: "garda.case.referral-accepted" in types(c))
    declined = await until("decline", lambda c: "garda.case.referral-declined" in types(c))
    assert declined["post_id"] == JOHOR and declined["status"] == "acknowledged"

    # Restart the worker after the windows have passed: nothing fires twice, nothing else fires.
    await ref_worker.stop()
    await asyncio.sleep(WINDOW)
    await ref_worker.start()
    await asyncio.sleep(3 * settings.timer_interval + 2)
    for kind in wids:
        rows = await db_fetch(
            settings.database_url,
            "SELECT count(*) AS n FROM case_timeline WHERE case_id = $1 AND type = $2",
            cases[kind]["case_id"],
            "garda.case.escalated",
        )
        assert rows[0]["n"] == (1 if kind == "lapse" else 0), kind
    accepted = await case_of(url, headers, wids["accept"])
    assert accepted["escalation_level"] == 0
    assert accepted["detail"]["referral"]["state"] == "accepted"

    published = [v for _, v in await read_events(settings, topics.CASES) if v]
    escalated = [
        v["id"]
        for v in published
        if v["type"] == "garda.case.escalated" and v["data"]["case_id"] == cases["lapse"]["case_id"]
    ]
    assert len(set(escalated)) == 1
    alerts = [v for _, v in await read_events(settings, topics.ALERTS) if v]
    declined_alerts = [
        v
        for v in alerts
        if v["type"] == "garda.alert.referral-declined"
        and v["data"]["case_id"] == cases["decline"]["case_id"]
    ]
    assert len(declined_alerts) == 1
    assert declined_alerts[0]["data"]["post_id"] == JOHOR
    assert declined_alerts[0]["data"]["note"] == "no capacity this month"
