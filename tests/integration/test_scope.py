"""Who may send and see what (handlers.access), end to end against a real ``garda worker``:
producer-bound tokens on ``POST /api/events``, content-checked dedup, the filtered worker
view, the head of mission at level 2, backdated Kafka case actions and late reports."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from infra.settings import Settings
from schemas import topics
from schemas.fields import iso, parse_dt
from tests.integration import events
from tests.integration.harness import (
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
    read_topic,
)

JOHOR, TAIPEI, KL = "KJRI-JOHOR-BAHRU", "KDEI-TAIPEI", "KBRI-KUALA-LUMPUR"
JB_DESK, TPE_DESK, HOTLINE = "kjri-johor-bahru/case-desk", "kdei-taipei/case-desk", "kp2mi/hotline"


def incident(
    wid: str,
    country: str,
    region: str | None,
    category: str = "unpaid_wages",
    *,
    source: str = HOTLINE,
    incident_id: str | None = None,
    time_: str | None = None,
) -> dict:
    return events.incident(
        wid,
        category,
        country,
        region=region,
        source=source,
        incident_id=incident_id,
        time_=time_,
    )


async def cases_of(url: str, token: str, worker_id: str, count: int = 1) -> list[dict]:
    """The worker's protection cases, once there are ``count``."""
    query = f"{url}/api/cases?worker_id={worker_id}&kind=protection"
    _, body = await eventually(
        lambda: get_json(query, headers=bearer(token)),
        lambda r: r[0] == 200 and len(r[1]["cases"]) >= count,
        timeout=20,
    )
    return body["cases"]


async def http_deadletters(settings: Settings) -> list[str]:
    rows = await db_fetch(
        settings.database_url,
        "SELECT error FROM deadletters WHERE topic = 'http:/api/events' ORDER BY seq",
    )
    return [r["error"] for r in rows]


async def test_ingest_refuses_sources_and_workers_outside_the_token(
    settings: Settings, worker: WorkerProcess
) -> None:
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    jb_id, jb = await new_token(settings, posts=[JOHOR], sources=[JB_DESK])
    _, insurer = await new_token(settings, sources=["bpjs-tk/claims"])
    tpe_incident = incident("W-TPE", "TW", None, "sexual_violence", source=TPE_DESK)
    await publish_events(settings, topics.INCIDENTS, [tpe_incident])
    [tpe_case] = await cases_of(url, hq, "W-TPE")
    assert tpe_case["post_id"] == TAIPEI

    # 1. The source must be bound to the token: headquarters is no exception, so nobody can
    # pre-claim a producer's (source, id) over HTTP.
    for token, source in ((hq, HOTLINE), (insurer, HOTLINE), (jb, TPE_DESK)):
        ev = incident("W-X", "MY", "MY-01", source=source)
        status, reply = await post_json(f"{url}/api/events", ev, headers=bearer(token))
        assert status == 403, reply
        assert f"source {source!r} is not bound to token" in reply["error"]

    # 2. A post token may change nothing outside its posts.
    tpe_data = tpe_incident["data"]
    forged = [
        # another post's case category (sexual_violence -> other)
        cloudevent(
            "pmi.incident.updated",
            {
                "incident_id": tpe_data["incident_id"],
                "worker_id": "W-TPE",
                "category": "other",
            },
            source=JB_DESK,
        ),
        # a report that would join that post's open case (same category, within the window)
        incident("W-TPE", "MY", "MY-01", "sexual_violence", source=JB_DESK),
        # a worker it cannot see, declared deceased
        cloudevent(
            "pmi.return.recorded",
            {"worker_id": "W-TPE", "returned_at": "2026-11-29T00:00:00Z", "reason": "deceased"},
            source=JB_DESK,
        ),
    ]
    for ev in forged:
        status, reply = await post_json(f"{url}/api/events", ev, headers=bearer(jb))
        assert status == 403, (ev["type"], reply)
        assert (
            "outside this token's posts" in reply["error"]
            or "no case at this token's" in (reply["error"])
        ), reply

    # Its own work goes through: a new incident that routes to it, and its update.
    own = incident("W-JB", "MY", "MY-01", "other", source=JB_DESK)
    status, reply = await post_json(f"{url}/api/events", own, headers=bearer(jb))
    assert status == 202, reply
    [jb_case] = await cases_of(url, jb, "W-JB")
    assert jb_case["post_id"] == JOHOR
    update = cloudevent(
        "pmi.incident.updated",
        {"incident_id": own["data"]["incident_id"], "worker_id": "W-JB", "severity": "high"},
        source=JB_DESK,
    )
    status, reply = await post_json(f"{url}/api/events", update, headers=bearer(jb))
    assert status == 202, reply
    # The insurer (a producer-only token) publishes as its source about any worker.
    claim = cloudevent(
        "pmi.claim.filed",
        {
            "worker_id": "W-TPE",
            "claim_id": "JKK-X-1",
            "program": "JKK",
            "benefit": "treatment_abroad",
            "event_date": "2026-11-08",
            "filed_at": "2026-11-29T02:00:00Z",
        },
        source="bpjs-tk/claims",
    )
    status, reply = await post_json(f"{url}/api/events", claim, headers=bearer(insurer))
    assert status == 202, reply

    # Nothing forged reached the other post's case or worker.
    await eventually(
        lambda: get_json(f"{url}/api/cases/{jb_case['case_id']}", headers=bearer(jb)),
        lambda r: r[1]["severity"] == "high",
        timeout=20,
    )
    _, case = await get_json(f"{url}/api/cases/{tpe_case['case_id']}", headers=bearer(hq))
    assert case["category"] == "sexual_violence" and case["reports"] == 1
    assert [e["type"] for e in case["timeline"]] == ["garda.case.opened", "garda.case.assigned"]
    _, w = await get_json(f"{url}/api/workers/W-TPE", headers=bearer(hq))
    assert w["state"] == "unregistered_abroad"

    # Every refusal is dead-lettered with its reason and audited.
    dead = await http_deadletters(settings)
    assert len(dead) == 6 and all(d.startswith("forbidden: ") for d in dead), dead
    audits = await db_fetch(
        settings.database_url,
        "SELECT status, count(*) AS n FROM audit_log WHERE path = '/api/events' GROUP BY status",
    )
    assert {r["status"]: r["n"] for r in audits} == {403: 6, 202: 3}
    refused = await db_fetch(
        settings.database_url,
        "SELECT event_id FROM audit_log WHERE token_id = $1 AND status = 403 ORDER BY seq",
        jb_id,
    )
    assert [r["event_id"] for r in refused][-3:] == [ev["id"] for ev in forged]


async def test_same_id_other_content_is_a_dead_letter_same_content_a_silent_duplicate(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    first = incident("W-DUPC", "MY", "MY-01", "trafficking", incident_id="INC-DUPC-1")
    again = json.loads(json.dumps(first))  # the same event, redelivered
    claimed = json.loads(json.dumps(first))  # the same (source, id), other content
    claimed["data"]["category"] = "other"
    claimed["data"]["incident_id"] = "INC-DUPC-2"
    await publish_events(settings, topics.INCIDENTS, [first])
    _, hq = await new_token(settings, hq=True)
    await cases_of(worker.url, hq, "W-DUPC")
    await publish_events(settings, topics.INCIDENTS, [again, claimed])
    rows = await eventually(
        lambda: db_fetch(settings.database_url, "SELECT error, event_id FROM deadletters"),
        lambda r: len(r) >= 1,
        timeout=20,
    )
    assert len(rows) == 1, rows
    assert rows[0]["event_id"] == first["id"]
    assert rows[0]["error"].startswith("duplicate id, different content: ")
    _, body = await get_json(f"{worker.url}/api/cases?worker_id=W-DUPC", headers=hq_headers)
    assert [c["category"] for c in body["cases"]] == ["trafficking"]
    dls = await read_topic(settings, topics.DEADLETTER, min_count=1)
    assert len(dls) == 1
    assert dict(dls[0].headers)["garda-error"].startswith(b"duplicate id, different content")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.url}/metrics") as r:
            text = await r.text()
    incidents = f'topic="{topics.INCIDENTS}"'
    assert f'garda_deadletters_total{{reason="duplicate-conflict",{incidents}}} 1.0' in text
    kind = f'{incidents},type="pmi.incident.reported"'
    assert f'garda_events_total{{outcome="duplicate-conflict",{kind}}} 1.0' in text
    assert f'garda_events_total{{outcome="duplicate",{kind}}} 1.0' in text


async def test_worker_view_shows_a_post_only_its_own_part(
    settings: Settings, worker: WorkerProcess
) -> None:
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    _, jb = await new_token(settings, posts=[JOHOR])
    # Seen first in Johor (a low case), now in Taiwan with a critical case and a claim.
    await publish_events(settings, topics.INCIDENTS, [incident("W-TWO", "MY", "MY-01", "other")])
    await cases_of(url, hq, "W-TWO")
    tpe = incident("W-TWO", "TW", None, "lost_contact", incident_id="INC-TWO-TPE")
    await publish_events(settings, topics.INCIDENTS, [tpe])
    # The claim names the Taipei incident: publish it once that case exists (Kafka orders a
    # worker's events within one topic only; a claim applied first links to no case).
    await cases_of(url, hq, "W-TWO", 2)
    claim = cloudevent(
        "pmi.claim.filed",
        {
            "worker_id": "W-TWO",
            "claim_id": "JKK-TWO-1",
            "program": "JKK",
            "benefit": "treatment_abroad",
            "event_date": "2026-11-08",
            "filed_at": "2026-11-29T02:00:00Z",
            "incident_id": "INC-TWO-TPE",
        },
        source="bpjs-tk/claims",
    )
    await publish_events(settings, topics.CLAIMS, [claim])
    _, full = await eventually(
        lambda: get_json(f"{url}/api/workers/W-TWO", headers=bearer(hq)),
        lambda r: r[0] == 200 and r[1]["claims"] and len(r[1]["open_cases"]) == 2,
        timeout=20,
    )
    assert full["in_crisis"] is True and full["country"] == "TW"
    tpe_case = next(c for c in await cases_of(url, hq, "W-TWO", 2) if c["post_id"] == TAIPEI)
    assert full["claims"][0]["case_id"] == tpe_case["case_id"]

    status, mine = await get_json(f"{url}/api/workers/W-TWO", headers=bearer(jb))
    assert status == 200
    assert tpe_case["case_id"] not in mine["open_cases"] and len(mine["open_cases"]) == 1
    assert mine["in_crisis"] is False  # only Taipei's case makes the worker in crisis
    assert mine["claims"] == []  # the claim is linked to Taipei's case
    assert mine["country"] is None and mine["region"] is None  # where Taipei covers them
    assert mine["state"] == full["state"] and mine["worker_id"] == "W-TWO"


async def test_head_of_mission_keeps_the_case_at_level_2(
    settings: Settings, tmp_path: Path
) -> None:
    fast = settings.replace(policy=policy_file("fast_sla.toml"))
    worker = await WorkerProcess(fast, tmp_path, "w1").start()
    try:
        _, hq = await new_token(fast, hq=True)
        _, kl = await new_token(fast, posts=[KL])
        await publish_events(
            fast, topics.INCIDENTS, [incident("W-L2", "MY", "MY-01", category="lost_contact")]
        )
        [case] = await cases_of(worker.url, hq, "W-L2")
        url = f"{worker.url}/api/cases/{case['case_id']}"
        await eventually(
            lambda: get_json(url, headers=bearer(hq)),
            lambda r: r[1]["escalation_level"] == 2,
            timeout=30,
        )
        status, body = await get_json(url, headers=bearer(kl))
        assert status == 200 and body["escalation_level"] == 2
        _, listed = await get_json(f"{worker.url}/api/cases?worker_id=W-L2", headers=bearer(kl))
        assert [c["case_id"] for c in listed["cases"]] == [case["case_id"]]
        status, body = await get_json(f"{worker.url}/api/workers/W-L2", headers=bearer(kl))
        assert status == 200 and body["open_cases"] == [case["case_id"]]
        status, reply = await post_json(
            f"{url}/notes", {"actor": "atnaker-kl-1", "note": "calling"}, headers=bearer(kl)
        )
        assert status == 202, reply
        _, after = await eventually(
            lambda: get_json(url, headers=bearer(kl)),
            lambda r: any(e["type"] == "garda.case.note-added" for e in r[1]["timeline"]),
            timeout=15,
        )
        note = next(e for e in after["timeline"] if e["type"] == "garda.case.note-added")
        assert note["detail"]["post_id"] == KL
    finally:
        await worker.stop()


async def test_kafka_case_actions_cannot_be_backdated(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    reported = incident("W-BACK", "MY", "MY-01", time_=iso(now - timedelta(days=10)))
    await publish_events(settings, topics.INCIDENTS, [reported])
    _, body = await eventually(
        lambda: get_json(f"{worker.url}/api/cases?worker_id=W-BACK", headers=hq_headers),
        lambda r: len(r[1]["cases"]) == 1,
        timeout=20,
    )
    case = body["cases"][0]

    def ack(at: str, actor: str) -> dict:
        data = {
            "case_id": case["case_id"],
            "worker_id": "W-BACK",
            "actor": actor,
            "post_id": JOHOR,
            "at": at,
        }
        return cloudevent("pmi.case.acknowledged", data, source="jb-desk-app")

    await publish_events(
        settings,
        topics.CASE_ACTIONS,
        [
            ack("2000-01-01T00:00:00Z", "before-the-case"),
            ack(iso(now - timedelta(days=5)), "five-days-late"),
            ack(iso(now - timedelta(minutes=5)), "on-time"),
        ],
    )
    _, after = await eventually(
        lambda: get_json(f"{worker.url}/api/cases/{case['case_id']}", headers=hq_headers),
        lambda r: r[1]["status"] == "acknowledged",
        timeout=20,
    )
    acks = [e for e in after["timeline"] if e["type"] == "garda.case.acknowledged"]
    assert [e["actor"] for e in acks] == ["on-time"]
    rows = await eventually(
        lambda: db_fetch(settings.database_url, "SELECT error FROM deadletters ORDER BY seq"),
        lambda r: len(r) >= 2,
        timeout=10,
    )
    errors = [r["error"] for r in rows]
    assert len(errors) == 2, errors
    assert "before case" in errors[0] and "opened" in errors[0]
    assert "more than 1d" in errors[1] and "before Garda received it" in errors[1]


async def test_an_incident_dated_1970_opens_with_clocks_from_its_receipt(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    ev = incident("W-1970", "MY", "MY-01", "lost_contact", time_="1970-01-01T00:00:00Z")
    await publish_events(settings, topics.INCIDENTS, [ev])
    _, body = await eventually(
        lambda: get_json(f"{worker.url}/api/cases?worker_id=W-1970", headers=hq_headers),
        lambda r: len(r[1]["cases"]) == 1,
        timeout=20,
    )
    case_id = body["cases"][0]["case_id"]
    await asyncio.sleep(2.5)  # several timer ticks (timer_interval 0.5 s)
    _, case = await get_json(f"{worker.url}/api/cases/{case_id}", headers=hq_headers)
    opened = parse_dt(case["opened_at"])
    assert opened >= before, case["opened_at"]
    ack_due = parse_dt(case["ack_due"])
    assert ack_due - opened == timedelta(hours=1)  # critical SLA, from the receipt
    assert case["escalation_level"] == 0
    assert case["detail"]["late_report"]["time"] == "1970-01-01T00:00:00Z"
