"""The escalation ladder against the real broker, database and ``garda worker`` process.

The worker runs with ``policies/fast_sla.toml`` (critical: ack 3 s, level 2 6 s, resolve 12 s;
high: 4 s / 8 s / 14 s) and a 0.5 s timer interval. Every escalation is checked on
``pmi.cases.v1`` (the ``garda.case.escalated`` event), on ``pmi.alerts.v1`` (the escalation
alert) and in ``case_timeline``, and must happen after its deadline and at most
``LATE_BOUND`` seconds after it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import load_policy
from infra.settings import Settings
from schemas import topics
from schemas.fields import iso, parse_dt
from tests.integration.events import incident
from tests.integration.harness import (
    TopicTail,
    WorkerProcess,
    bearer,
    cloudevent,
    db_fetch,
    eventually,
    get_json,
    new_token,
    policy_file,
    post_json,
    publish_events,
    read_events,
)

POLICY = policy_file("fast_sla.toml")
LATE_BOUND = 3.0  # seconds an escalation may come after its deadline
ESCALATED = "garda.case.escalated"
REASONS = {"ack": "not acknowledged in time", "resolve": "not resolved in time"}
DELAYS: list[float] = []  # (escalation event time - missed deadline), over this module
DUPLICATES: list[int] = []  # escalation records re-published (same id) after a kill -9


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return settings.replace(policy=POLICY)


@pytest.fixture
async def fast_worker(fast_settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    w = WorkerProcess(fast_settings, tmp_path, "w1")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture(scope="module", autouse=True)
def _report_delays() -> Iterator[None]:
    yield
    if DELAYS:
        print(  # shown with -s: the measured escalation delays of this module
            f"\nescalation delay over {len(DELAYS)} escalations: "
            f"p50 {statistics.median(DELAYS):.3f}s max {max(DELAYS):.3f}s; "
            f"re-published after kill -9: {DUPLICATES}"
        )


async def open_cases(
    settings: Settings, url: str, headers: dict[str, str], specs: list[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Publish one incident per (worker_id, category); returns {worker_id: case} once open."""
    await publish_events(
        settings, topics.INCIDENTS, [incident(w, c, region="MY-01") for w, c in specs]
    )
    out: dict[str, dict[str, Any]] = {}
    for wid, _ in specs:
        _, body = await eventually(
            lambda wid=wid: get_json(
                f"{url}/api/cases?worker_id={wid}&kind=protection", headers=headers
            ),
            lambda r: r[0] == 200 and len(r[1]["cases"]) == 1,
            timeout=15,
        )
        out[wid] = body["cases"][0]
    return out


def escalations_once_per_level(published: list[dict[str, Any]], case_id: str) -> list[dict]:
    """The case's escalation events; asserts one distinct event id at level 1 and at level 2."""
    events = [v for v in published if is_escalation(case_id)(v)]
    ids = {lv: {v["id"] for v in events if v["data"]["event"]["level"] == lv} for lv in (1, 2)}
    assert {lv: len(s) for lv, s in ids.items()} == {1: 1, 2: 1}, events
    return events


def expected_deadline(
    case: dict[str, Any], clock: str, level: int, policy: Path = POLICY
) -> datetime:
    sla = load_policy(policy).sla[case["severity"]]
    opened = parse_dt(case["opened_at"])
    if clock == "resolve":
        return opened + sla.resolve
    return opened + (sla.ack if level == 1 else sla.level2)


def is_escalation(case_id: str, level: int | None = None):
    def pred(v: Any) -> bool:
        return (
            v.get("type") == ESCALATED
            and v["data"]["case_id"] == case_id
            and (level is None or v["data"]["event"]["level"] == level)
        )

    return pred


def is_alert(case_id: str):
    return lambda v: v.get("type") == "garda.alert.escalated" and v["data"]["case_id"] == case_id


def check_escalation(
    case: dict[str, Any],
    msg: Any,
    ev: dict[str, Any],
    *,
    level: int,
    clock: str,
    bound: float | None = LATE_BOUND,
) -> float:
    """The event's shape and timing; returns its delay (processing time - deadline)."""
    data = ev["data"]
    assert ev["specversion"] == "1.0" and ev["subject"] == case["worker_id"]
    assert msg.key.decode() == case["worker_id"]
    assert data["case_id"] == case["case_id"]
    assert data["escalation_level"] == level
    step = data["event"]
    assert step["level"] == level
    assert step["deadline"] == clock
    assert step["reason"] == REASONS[clock]
    assert step["actor"] == "garda"
    missed = parse_dt(step["missed_deadline"])
    assert missed == expected_deadline(case, clock, level), (step, case)
    if clock == "resolve":
        assert step["missed_deadline"] == case["resolve_due"]
    elif level == 1:
        assert step["missed_deadline"] == case["ack_due"]
    target = "HQ" if level == 2 else step["escalated_to"]
    assert step["escalated_to"] == target
    handled = parse_dt(ev["time"])
    delay = (handled - missed).total_seconds()
    published = datetime.fromtimestamp(msg.timestamp / 1000, UTC)
    assert delay >= 0, f"escalated {-delay:.3f}s before its deadline: {step}"
    assert published >= missed
    if bound is not None:
        assert delay < bound, f"escalated {delay:.3f}s after its deadline (bound {bound}s)"
        assert (published - missed).total_seconds() < bound
        DELAYS.append(delay)
    return delay


async def timeline_escalations(settings: Settings, case_id: str) -> list[dict[str, Any]]:
    rows = await db_fetch(
        settings.database_url,
        "SELECT at, actor, detail FROM case_timeline WHERE case_id = $1 AND type = $2 ORDER BY seq",
        case_id,
        ESCALATED,
    )
    return [{"at": r["at"], "actor": r["actor"], "detail": json.loads(r["detail"])} for r in rows]


async def sleep_until(when: datetime, tail: TopicTail, *others: TopicTail) -> None:
    while datetime.now(UTC) < when:
        await tail.poll(100)
        for t in others:
            await t.poll(50)


async def test_unacknowledged_case_climbs_to_level_1_then_level_2(
    fast_settings: Settings, fast_worker: WorkerProcess
) -> None:
    settings, url = fast_settings, fast_worker.url
    _, hq = await new_token(settings, hq=True)
    async with TopicTail(settings, topics.CASES) as cases_t:
        cases = await open_cases(
            settings,
            url,
            bearer(hq),
            [("W-ESC-CRIT", "trafficking"), ("W-ESC-HIGH", "unpaid_wages")],
        )
        crit, high = cases["W-ESC-CRIT"], cases["W-ESC-HIGH"]
        assert crit["severity"] == "critical" and high["severity"] == "high"
        assert crit["post_id"] == high["post_id"] == "KJRI-JOHOR-BAHRU"

        for case in (crit, high):
            l1 = await cases_t.wait(is_escalation(case["case_id"], 1), timeout=12)
            check_escalation(case, *l1[0], level=1, clock="ack")
            assert l1[0][1]["data"]["event"]["escalated_to"] == "KBRI-KUALA-LUMPUR"
            l2 = await cases_t.wait(is_escalation(case["case_id"], 2), timeout=12)
            check_escalation(case, *l2[0], level=2, clock="ack")

        # Past both resolve deadlines: a case at level 2 climbs no further.
        last = max(parse_dt(c["resolve_due"]) for c in (crit, high)) + timedelta(seconds=1.5)
        await sleep_until(last, cases_t)

        all_cases = [v for _, v in await read_events(settings, topics.CASES) if v]
        all_alerts = [v for _, v in await read_events(settings, topics.ALERTS) if v]
        for case in (crit, high):
            cid = case["case_id"]
            events = escalations_once_per_level(all_cases, cid)
            assert len(events) == 2, "the same escalation published twice"

            alerts = [v for v in all_alerts if is_alert(cid)(v)]
            assert len({a["id"] for a in alerts}) == len(alerts) == 2
            for a, lv in zip(sorted(alerts, key=lambda a: a["data"]["level"]), (1, 2), strict=True):
                d = a["data"]
                assert d["alert"] == "escalated" and d["level"] == lv and d["deadline"] == "ack"
                assert d["reason"] == REASONS["ack"] and d["post_id"] == case["post_id"]
                assert d["severity"] == case["severity"] and d["worker_id"] == case["worker_id"]
                assert parse_dt(d["missed_deadline"]) == expected_deadline(case, "ack", lv)

            rows = await timeline_escalations(settings, cid)
            assert [r["detail"]["level"] for r in rows] == [1, 2]
            for r in rows:
                lv = r["detail"]["level"]
                missed = expected_deadline(case, "ack", lv)
                assert r["actor"] == "garda" and r["detail"]["reason"] == REASONS["ack"]
                assert parse_dt(r["detail"]["missed_deadline"]) == missed
                assert timedelta(0) <= r["at"] - missed < timedelta(seconds=LATE_BOUND)

            status, body = await get_json(f"{url}/api/cases/{cid}", headers=bearer(hq))
            assert status == 200 and body["escalation_level"] == 2 and body["status"] == "open"
            esc = [e for e in body["timeline"] if e["type"] == ESCALATED]
            assert [e["detail"]["level"] for e in esc] == [1, 2]
            assert all(e["actor"] == "garda" and e["at"] for e in esc)

        next_due = await db_fetch(
            settings.database_url,
            "SELECT next_due FROM cases WHERE case_id = ANY($1)",
            [crit["case_id"], high["case_id"]],
        )
        assert [r["next_due"] for r in next_due] == [None, None]


async def test_acknowledged_case_stops_the_ack_clock_but_escalates_at_resolve_due(
    fast_settings: Settings, fast_worker: WorkerProcess
) -> None:
    settings, url = fast_settings, fast_worker.url
    _, post = await new_token(settings, posts=["KJRI-JOHOR-BAHRU"])
    async with TopicTail(settings, topics.CASES) as cases_t:
        case = (await open_cases(settings, url, bearer(post), [("W-ESC-ACK", "detention")]))[
            "W-ESC-ACK"
        ]
        cid = case["case_id"]
        assert case["severity"] == "critical"
        status, reply = await post_json(
            f"{url}/api/cases/{cid}/acknowledge", {"actor": "officer-jb-1"}, headers=bearer(post)
        )
        assert status == 202, reply
        _, body = await eventually(
            lambda: get_json(f"{url}/api/cases/{cid}", headers=bearer(post)),
            lambda r: r[1]["status"] == "acknowledged",
            timeout=5,
        )
        ack = next(e for e in body["timeline"] if e["type"] == "garda.case.acknowledged")
        assert parse_dt(ack["at"]) < parse_dt(case["ack_due"]), (
            "acknowledged too late for this test"
        )

        # Past the ack clock's level 1 and level 2 deadlines: nothing.
        await sleep_until(expected_deadline(case, "ack", 2) + timedelta(seconds=1.5), cases_t)
        assert cases_t.matching(is_escalation(cid)) == []

        # At resolve_due: one level up (0 -> 1), and only once.
        found = await cases_t.wait(is_escalation(cid), timeout=12)
        check_escalation(case, *found[0], level=1, clock="resolve")
        await sleep_until(parse_dt(case["resolve_due"]) + timedelta(seconds=2.5), cases_t)
        all_cases = [v for _, v in await read_events(settings, topics.CASES) if v]
        assert len({v["id"] for v in all_cases if is_escalation(cid)(v)}) == 1
        all_alerts = [v for _, v in await read_events(settings, topics.ALERTS) if v]
        alerts = {v["id"]: v for v in all_alerts if is_alert(cid)(v)}
        assert [a["data"]["deadline"] for a in alerts.values()] == ["resolve"]
        rows = await timeline_escalations(settings, cid)
        assert [(r["detail"]["level"], r["detail"]["deadline"]) for r in rows] == [(1, "resolve")]
        _, body = await get_json(f"{url}/api/cases/{cid}", headers=bearer(post))
        assert body["status"] == "acknowledged" and body["escalation_level"] == 1
        nd = await db_fetch(
            settings.database_url, "SELECT next_due FROM cases WHERE case_id = $1", cid
        )
        assert nd[0]["next_due"] is None


async def test_kill9_between_deadlines_each_level_fires_exactly_once(
    fast_settings: Settings, tmp_path: Path
) -> None:
    settings = fast_settings
    w1 = WorkerProcess(settings, tmp_path, "w1")
    await w1.start()
    w2 = WorkerProcess(settings, tmp_path, "w2")
    try:
        _, hq = await new_token(settings, hq=True)
        async with TopicTail(settings, topics.CASES) as cases_t:
            cases = await open_cases(
                settings,
                w1.url,
                bearer(hq),
                [("W-KILL-CRIT", "lost_contact"), ("W-KILL-HIGH", "document_withheld")],
            )
            crit, high = cases["W-KILL-CRIT"], cases["W-KILL-HIGH"]
            l1 = await cases_t.wait(is_escalation(crit["case_id"], 1), timeout=12)
            check_escalation(crit, *l1[0], level=1, clock="ack")
            w1.kill9()
            killed_at = datetime.now(UTC)
            # Both of the high case's ack deadlines and the critical level 2 pass while down.
            assert killed_at < expected_deadline(crit, "ack", 2)
            t0 = time.monotonic()
            await w2.start(ready_timeout=60)
            restart = time.monotonic() - t0
            for case, level in ((crit, 2), (high, 1), (high, 2)):
                found = await cases_t.wait(is_escalation(case["case_id"], level), timeout=20)
                check_escalation(case, *found[0], level=level, clock="ack", bound=None)
            end = max(parse_dt(c["resolve_due"]) for c in (crit, high)) + timedelta(seconds=2)
            await sleep_until(end, cases_t)

            published = [v for _, v in await read_events(settings, topics.CASES) if v]
            all_alerts = [v for _, v in await read_events(settings, topics.ALERTS) if v]
            for case in (crit, high):
                cid = case["case_id"]
                events = escalations_once_per_level(published, cid)
                alerts = {v["id"] for v in all_alerts if is_alert(cid)(v)}
                assert len(alerts) == 2
                # At least once on the topic: a record published twice keeps its id.
                DUPLICATES.append(len(events) - 2)
                rows = await timeline_escalations(settings, cid)
                assert [r["detail"]["level"] for r in rows] == [1, 2], rows
            # Which worker did what: w1 level 1 of the critical case, w2 the rest.
            assert '"deadline command sent"' in w2.log_text()
            print(f"\nrestarted worker ready after {restart:.1f}s")
    finally:
        await w2.stop()
        await w1.stop()


def test_fast_policy_is_the_default_policy_with_short_slas() -> None:
    """The test policy must not drift from the shipped one except for the SLA clocks."""
    fast, default = load_policy(POLICY), load_policy(None)
    assert replace(fast, sla=default.sla) == default
    assert fast.sla["critical"].ack == timedelta(seconds=3)
    assert fast.sla["critical"].level2 == timedelta(seconds=6)
    assert fast.sla["critical"].resolve == timedelta(seconds=12)


async def test_acknowledgement_made_while_down_counts_before_the_missed_deadline(
    fast_settings: Settings, tmp_path: Path
) -> None:
    """An officer acknowledges on time while no worker runs; the worker restarts after the ack
    deadlines passed. The acknowledgement waits in pmi.case-actions.v1 and must be applied
    before the timer may escalate on the ack clock (only resolve_due may escalate then)."""
    # Critical clocks of 15 s / 20 s (not the module's 3 s / 6 s): stopping a worker on a
    # busy machine can take longer than 3 s, and the ack must be made before its deadline.
    text = POLICY.read_text()
    for old, new in (('ack = "3s"', 'ack = "15s"'), ('level2 = "6s"', 'level2 = "20s"')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    slower = tmp_path / "ack_while_down.toml"
    slower.write_text(text)
    settings = fast_settings.replace(policy=slower)
    w1 = WorkerProcess(settings, tmp_path, "w1")
    await w1.start()
    w2 = WorkerProcess(settings, tmp_path, "w2")
    try:
        _, hq = await new_token(settings, hq=True)
        cases = await open_cases(settings, w1.url, bearer(hq), [("W-DOWN-ACK", "lost_contact")])
        case = cases["W-DOWN-ACK"]
        await w1.stop()
        ack_at = datetime.now(UTC)
        assert ack_at < expected_deadline(case, "ack", 1, slower)
        action = cloudevent(
            "pmi.case.acknowledged",
            {
                "case_id": case["case_id"],
                "worker_id": "W-DOWN-ACK",
                "actor": "officer-7",
                "post_id": case["post_id"],
                "at": iso(ack_at),
            },
            source="kjri-johor-bahru/desk",
        )
        await publish_events(settings, topics.CASE_ACTIONS, [action])
        # Both ack deadlines pass while no worker runs.
        wait = (expected_deadline(case, "ack", 2, slower) - datetime.now(UTC)).total_seconds() + 1
        await asyncio.sleep(max(0.0, wait))
        await w2.start(ready_timeout=60)

        async def current() -> dict[str, Any]:
            return (await get_json(f"{w2.url}/api/cases/{case['case_id']}", headers=bearer(hq)))[1]

        body = await eventually(current, lambda c: c["status"] == "acknowledged", timeout=30)
        rows = await timeline_escalations(settings, case["case_id"])
        assert all(r["detail"]["deadline"] == "resolve" for r in rows), rows
        assert body["escalation_level"] <= 1
    finally:
        await w2.stop()
        await w1.stop()
