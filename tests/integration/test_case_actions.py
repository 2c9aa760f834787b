"""Responders' case actions through the HTTP API and directly on pmi.case-actions.v1, against
a real ``garda worker`` process, broker and database (default policy: no deadline fires)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from infra.settings import Settings
from schemas import topics
from schemas.fields import parse_dt
from tests.integration.events import incident
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    cloudevent,
    db_fetch,
    eventually,
    get_json,
    new_token,
    post_json,
    publish,
    publish_events,
    read_events,
)

JOHOR = "KJRI-JOHOR-BAHRU"
OPENING = ["garda.case.opened", "garda.case.assigned"]  # a new case's first timeline rows


def action(
    type_: str,
    case: dict[str, Any],
    *,
    actor: str = "officer-jb-7",
    post_id: str = JOHOR,
    id: str | None = None,
    **extra: Any,
) -> dict:
    data = {
        "case_id": case["case_id"],
        "worker_id": case["worker_id"],
        "actor": actor,
        "post_id": post_id,
        **extra,
    }
    return cloudevent(type_, data, source="kjri-johor-bahru/case-desk", id=id)


async def open_case(settings: Settings, url: str, headers: dict[str, str], wid: str) -> dict:
    await publish_events(settings, topics.INCIDENTS, [incident(wid, region="MY-01")])
    _, body = await eventually(
        lambda: get_json(f"{url}/api/cases?worker_id={wid}&kind=protection", headers=headers),
        lambda r: r[0] == 200 and len(r[1]["cases"]) == 1,
        timeout=15,
    )
    case = body["cases"][0]
    assert case["post_id"] == JOHOR and case["status"] == "open"
    return case


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, bearer(token)

    async def act(
        self,
        case_id: str,
        name: str,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        return await post_json(
            f"{self.url}/api/cases/{case_id}/{name}",
            body or {},
            headers=self.headers if headers is None else headers,
        )

    async def case(self, case_id: str) -> dict[str, Any]:
        status, body = await get_json(f"{self.url}/api/cases/{case_id}", headers=self.headers)
        assert status == 200, body
        return body

    async def until(self, case_id: str, check: Any, timeout: float = 10) -> dict[str, Any]:
        return await eventually(lambda: self.case(case_id), check, timeout=timeout)


def timeline_types(case: dict[str, Any]) -> list[str]:
    return [e["type"] for e in case["timeline"]]


async def test_actions_through_the_api(settings: Settings, worker: WorkerProcess) -> None:
    _, token = await new_token(settings, posts=[JOHOR])
    api = Api(worker.url, token)
    case = await open_case(settings, worker.url, api.headers, "W-ACT-API")
    cid = case["case_id"]
    started = datetime.now(UTC) - timedelta(seconds=1)

    # Refused before anything is published.
    assert (await api.act(cid, "acknowledge", {"actor": "x"}, headers={}))[0] == 401
    assert (await api.act(cid, "acknowledge", {"actor": "x"}, headers=bearer("garda_not-a-token")))[
        0
    ] == 401
    status, body = await api.act("CASE-does-not-exist", "acknowledge", {"actor": "officer-jb-7"})
    assert status == 404 and "unknown case" in body["error"]
    status, body = await api.act(cid, "reopen", {"actor": "officer-jb-7"})  # open: not resolved
    assert status == 409, body
    status, body = await api.act(cid, "resolve", {"actor": "officer-jb-7"})  # no resolution
    assert status == 422 and "resolution" in body["error"], body
    status, body = await api.act(cid, "notes", {"actor": "officer-jb-7"})  # no note
    assert status == 422 and "note" in body["error"], body
    status, body = await api.act(cid, "refer", {"actor": "officer-jb-7"})  # no "to"
    assert status == 422, body
    status, body = await api.act(cid, "acknowledge", {})  # no actor
    assert status == 422 and body["field"] == "actor", body
    status, body = await api.act(cid, "acknowledge", {"actor": "a", "colour": "red"})
    assert status == 400, body
    assert (await api.act(cid, "escalate", {"actor": "a"}))[0] == 404
    assert timeline_types(await api.case(cid)) == OPENING

    # acknowledge -> 409 once applied.
    status, body = await api.act(cid, "acknowledge", {"actor": "officer-jb-7"})
    assert status == 202 and body["accepted"] and body["id"], body
    await api.until(cid, lambda c: c["status"] == "acknowledged")
    status, body = await api.act(cid, "acknowledge", {"actor": "officer-jb-8"})
    assert status == 409 and "already acknowledged" in body["error"], body

    assert (await api.act(cid, "notes", {"actor": "officer-jb-7", "note": "called employer"}))[
        0
    ] == 202
    assert (await api.act(cid, "refer", {"actor": "officer-jb-7", "to": "IOM Malaysia"}))[0] == 202
    await api.until(cid, lambda c: "garda.case.referred" in timeline_types(c))
    status, body = await api.act(cid, "refer", {"actor": "officer-jb-7", "to": "IOM Malaysia"})
    assert status == 409, body  # already referred there
    status, _ = await api.act(
        cid,
        "resolve",
        {"actor": "officer-jb-9", "resolution": "wages paid", "note": "RM 4,200 recovered"},
    )
    assert status == 202
    await api.until(cid, lambda c: c["status"] == "resolved")
    status, body = await api.act(cid, "resolve", {"actor": "officer-jb-9", "resolution": "again"})
    assert status == 409, body
    status, body = await api.act(cid, "refer", {"actor": "officer-jb-9", "to": "Tenaganita"})
    assert status == 409, body
    status, body = await api.act(cid, "reopen", {"actor": "officer-jb-7", "note": "why"})
    assert status == 400 and "note" in body["error"], body  # pmi.case.reopened has no note
    assert (await api.act(cid, "reopen", {"actor": "officer-jb-7"}))[0] == 202
    final = await api.until(cid, lambda c: c["status"] == "reopened")

    steps = final["timeline"][len(OPENING) :]
    assert timeline_types(final) == [
        *OPENING,
        "garda.case.acknowledged",
        "garda.case.note-added",
        "garda.case.referred",
        "garda.case.resolved",
        "garda.case.reopened",
    ]
    actors = [e["actor"] for e in steps]
    assert actors == ["officer-jb-7"] * 3 + ["officer-jb-9", "officer-jb-7"]
    now = datetime.now(UTC) + timedelta(seconds=1)
    times = [parse_dt(e["at"]) for e in steps]
    assert all(started <= t <= now for t in times) and times == sorted(times)
    assert all(e["source"].startswith("garda-api/") and e["event_id"] for e in steps)
    assert steps[1]["detail"]["note"] == "called employer"
    assert steps[2]["detail"]["to"] == "IOM Malaysia"
    assert steps[3]["detail"]["resolution"] == "wages paid"
    assert all(e["detail"]["post_id"] == JOHOR for e in steps)
    assert final["escalation_level"] == 0
    assert parse_dt(final["ack_due"]) > parse_dt(case["ack_due"])  # clocks restarted on reopen

    # The case events went out on pmi.cases.v1 too.
    out = [v for _, v in await read_events(settings, topics.CASES) if v]
    mine = [v["type"] for v in out if v["data"]["case_id"] == cid]
    assert mine == timeline_types(final)


async def test_actions_on_the_topic(settings: Settings, worker: WorkerProcess) -> None:
    _, token = await new_token(settings, posts=[JOHOR])
    api = Api(worker.url, token)
    case = await open_case(settings, worker.url, api.headers, "W-ACT-KAFKA")
    cid = case["case_id"]

    note = action("pmi.case.note-added", case, note="visited the shelter", id="note-1")
    ack = action("pmi.case.acknowledged", case, id="ack-1")
    unknown = action("pmi.case.acknowledged", dict(case, case_id="CASE-nope"), id="ack-unknown")
    foreign = action("pmi.case.note-added", case, post_id="KDEI-TAIPEI", note="x", id="note-tpe")
    ack_again = action("pmi.case.acknowledged", case, actor="officer-jb-8", id="ack-2")
    no_res = action("pmi.case.resolved", case, id="res-1")  # no resolution
    marker = action("pmi.case.note-added", case, note="marker", id="note-marker")
    # The same events again (redelivery): no second effect.
    await publish_events(
        settings, topics.CASE_ACTIONS, [note, ack, note, unknown, foreign, ack, ack_again, no_res]
    )
    await publish(settings, topics.CASE_ACTIONS, [(case["worker_id"].encode(), note, None)])
    await publish_events(settings, topics.CASE_ACTIONS, [marker])  # same key: comes after
    body = await api.until(
        cid, lambda c: any(e["detail"].get("note") == "marker" for e in c["timeline"])
    )
    assert timeline_types(body) == [
        *OPENING,
        "garda.case.note-added",
        "garda.case.acknowledged",
        "garda.case.note-added",
    ]
    assert body["status"] == "acknowledged"
    first = body["timeline"][len(OPENING)]
    assert first["actor"] == "officer-jb-7" and first["at"]
    assert first["source"] == "kjri-johor-bahru/case-desk" and first["event_id"] == "note-1"

    dead = await eventually(
        lambda: read_events(settings, topics.DEADLETTER, quiet=0.5),
        lambda recs: len(recs) >= 4,
        timeout=10,
    )
    errors = {}
    for m, v in dead:
        h = dict(m.headers)
        assert h["garda-source-topic"].decode() == settings.topic(topics.CASE_ACTIONS)
        assert int(h["garda-source-partition"]) >= 0 and int(h["garda-source-offset"]) >= 0
        errors[v["id"]] = h["garda-error"].decode()
        assert m.key == case["worker_id"].encode()
    assert set(errors) == {"ack-unknown", "note-tpe", "ack-2", "res-1"}, errors
    assert "unknown case" in errors["ack-unknown"] and "CASE-nope" in errors["ack-unknown"]
    assert "KDEI-TAIPEI" in errors["note-tpe"] and "may not act" in errors["note-tpe"]
    assert "already acknowledged" in errors["ack-2"]
    assert "data.resolution" in errors["res-1"]
    # Dead-lettered bytes are the input, unchanged.
    raw = next(m for m, v in dead if v["id"] == "ack-unknown")
    assert raw.value.decode().startswith("{")

    rows = await db_fetch(
        settings.database_url,
        "SELECT id, outcome FROM processed_events WHERE source = $1 ORDER BY id",
        "kjri-johor-bahru/case-desk",
    )
    assert {r["id"]: r["outcome"] for r in rows} == {
        "ack-1": "acknowledged",
        "ack-2": "rejected",
        "ack-unknown": "rejected",
        "note-1": "noted",
        "note-marker": "noted",
        "note-tpe": "rejected",
    }  # res-1 is invalid (schema): dead-lettered before the dedup, so not recorded
    assert (
        len(
            await db_fetch(
                settings.database_url, "SELECT 1 FROM case_timeline WHERE event_id = 'note-1'"
            )
        )
        == 1
    )
