"""Acknowledge links, the escalation ledger and the silences API, end to end: an incident on
Kafka → a real ``garda worker`` opens a critical case → its dispatcher POSTs the signed
CloudEvent to a real aiohttp receiver (verified with ``standardwebhooks``) → the officer
follows ``ack_url`` once (a normal case action: timeline, audit, clock stopped) and a second
use is refused."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from infra.hooks.acklinks import AckLink, make_token, signing_key
from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    cloudevent,
    db_fetch,
    eventually,
    get_json,
    new_token,
    publish_events,
)
from tests.integration.hooks_support import SECRET, Receiver, receivers_file

pytestmark = pytest.mark.integration

JOHOR = "KJRI-JOHOR-BAHRU"


def trafficking(wid: str) -> dict[str, Any]:
    data = {
        "incident_id": f"INC-{uuid.uuid4().hex[:8]}",
        "worker_id": wid,
        "category": "trafficking",
        "occurred_at": "2026-11-28T10:00:00Z",
        "country": "MY",
        "region": "MY-01",
        "reporter_type": "hotline",
    }
    return cloudevent("pmi.incident.reported", data, source="kp2mi/hotline")


async def start_worker(settings: Settings, tmp_path: Path, rcv: Receiver) -> WorkerProcess:
    path = receivers_file(
        tmp_path,
        [
            {
                "name": "jb-duty",
                "url": rcv.url,
                "secret": SECRET,
                "match": {"severities": ["critical"], "types": ["garda.case.opened"]},
            }
        ],
    )
    return await WorkerProcess(settings, tmp_path, "w1", GARDA_RECEIVERS=str(path)).start()


async def request(method: str, url: str, **kw: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as r:
        return r.status, await r.text()


async def test_critical_case_notified_signed_then_acknowledged_once_from_the_link(
    settings: Settings, tmp_path: Path
) -> None:
    rcv = await Receiver().start()
    worker = await start_worker(settings, tmp_path, rcv)
    try:
        _, token = await new_token(settings, posts=[JOHOR])
        _, other = await new_token(settings, posts=["KBRI-DOHA"])
        await publish_events(settings, topics.INCIDENTS, [trafficking("W-ACK-1")])

        async def got() -> int:
            return len(rcv.got)

        await eventually(got, lambda n: n >= 1, timeout=30)
        assert rcv.bad_signatures == 0  # every request verified with standardwebhooks
        (event,) = rcv.got
        assert event["type"] == "garda.case.opened"
        data = event["data"]
        cid = data["case_id"]
        assert data["severity"] == "critical" and data["delivered_to"] == "jb-duty"
        ack_url = data["ack_url"]
        assert ack_url.startswith(f"{worker.url}/ack/")

        # The confirmation page: which case, its severity and post, a form for the officer id.
        status, page = await request("GET", ack_url)
        assert status == 200, page
        assert cid in page and "critical" in page and JOHOR in page
        assert 'name="actor"' in page and 'method="post"' in page
        assert f"/desk/cases/{cid}" in page

        status, page = await request("POST", ack_url, data={"actor": "  "})
        assert status == 422, page  # no officer id: refused, the link stays usable

        # Two officers at once: exactly one acknowledges.
        first, second = await asyncio.gather(
            request("POST", ack_url, data={"actor": "officer-jb-7"}),
            request("POST", ack_url, data={"actor": "officer-jb-9"}),
        )
        statuses = sorted([first[0], second[0]])
        assert statuses[0] == 202 and statuses[1] in (409, 410), (first, second)
        winner = "officer-jb-7" if first[0] == 202 else "officer-jb-9"

        # A normal case action: status, timeline (actor), clock stopped.
        async def case() -> dict[str, Any]:
            return (await get_json(f"{worker.url}/api/cases/{cid}", headers=bearer(token)))[1]

        body = await eventually(case, lambda c: c["status"] == "acknowledged", timeout=15)
        acks = [e for e in body["timeline"] if e["type"] == "garda.case.acknowledged"]
        assert len(acks) == 1 and acks[0]["actor"] == winner
        (row,) = await db_fetch(
            settings.database_url or "",
            "SELECT next_due, resolve_due, doc->>'acknowledged_at' AS acked FROM cases"
            " WHERE case_id = $1",
            cid,
        )
        assert row["acked"] and row["next_due"] == row["resolve_due"]  # the ack clock stopped

        # Every later use is refused with a clear message, the page says so too.
        status, page = await request("POST", ack_url, data={"actor": "officer-jb-8"})
        assert status == 410 and "already used" in page and winner in page
        status, reply = await request("POST", ack_url, json={"actor": "officer-jb-8"})
        assert status == 410 and "already used" in reply
        assert (await request("GET", ack_url))[0] == 410

        # The escalation ledger: notified → delivered → acknowledged.
        status, ledger = await get_json(
            f"{worker.url}/api/cases/{cid}/deliveries", headers=bearer(token)
        )
        assert status == 200, ledger
        (entry,) = ledger["deliveries"]
        assert entry["receiver"] == "jb-duty" and entry["status"] == "delivered"
        assert entry["notified_at"] <= entry["delivered_at"] <= entry["acknowledged_at"]
        assert entry["seconds_to_deliver"] >= 0 and entry["seconds_to_acknowledge"] >= 0
        assert entry["ack_link"]["actor"] == winner
        assert [a["outcome"] for a in entry["attempts"]] == ["delivered"]
        assert entry["attempts"][0]["status_code"] == 204
        assert [a["type"] for a in entry["alerts"]] == ["garda.case.opened"]
        assert ledger["case_status"] == "acknowledged"
        # Same access rule as the case view.
        status, _ = await get_json(
            f"{worker.url}/api/cases/{cid}/deliveries", headers=bearer(other)
        )
        assert status == 404
        assert (await get_json(f"{worker.url}/api/cases/{cid}/deliveries"))[0] == 401

        rows = await db_fetch(
            settings.database_url or "",
            "SELECT status, token_id, detail FROM audit_log WHERE path LIKE '/ack/%' ORDER BY seq",
        )
        assert [r["status"] for r in rows].count(202) == 1
        assert all(r["token_id"].startswith("ack-link:dlv_") for r in rows)
        assert all("/ack/" + ack_url.rsplit("/", 1)[1] not in str(r["detail"]) for r in rows)
    finally:
        await worker.stop()
        await rcv.stop()


async def test_forged_expired_links_and_the_silences_api(
    settings: Settings, tmp_path: Path
) -> None:
    rcv = await Receiver().start()
    worker = await start_worker(settings, tmp_path, rcv)
    try:
        conn = await asyncpg.connect(settings.database_url)
        try:
            key = await signing_key(conn)
        finally:
            await conn.close()
        past = AckLink("dlv_x", "CASE-X", datetime.now(UTC) - timedelta(minutes=1))
        future = AckLink("dlv_x", "CASE-X", datetime.now(UTC) + timedelta(hours=1))
        expired, unknown = make_token(key, past), make_token(key, future)
        forged = make_token(b"k" * 32, future)
        base = f"{worker.url}/ack/"
        status, page = await request("GET", base + expired)
        assert status == 410 and "expired" in page
        assert (await request("POST", base + expired, data={"actor": "o-1"}))[0] == 410
        status, page = await request("GET", base + forged)
        assert status == 404 and "not valid" in page
        assert (await request("POST", base + forged, json={"actor": "o-1"}))[0] == 404
        assert (await request("GET", base + "not-a-token"))[0] == 404
        assert (await request("GET", base + unknown))[0] == 404  # signed, but no such link

        # Silences: headquarters only.
        _, hq = await new_token(settings, hq=True)
        _, post = await new_token(settings, posts=[JOHOR])
        url = f"{worker.url}/api/silences"
        assert (await get_json(url, headers=bearer(post)))[0] == 403
        new = {
            "matchers": {"post": ["KBRI-DOHA"], "severity": ["low", "medium"]},
            "until": "2h",
            "reason": "duty phone replaced",
            "author": "officer-hq-3",
        }
        assert (await request("POST", url, json=new, headers=bearer(post)))[0] == 403
        status, text = await request("POST", url, json={**new, "author": ""}, headers=bearer(hq))
        assert status == 422 and "author" in text
        status, text = await request("POST", url, json={**new, "matchers": {}}, headers=bearer(hq))
        assert status == 422 and "matcher" in text
        status, text = await request("POST", url, json={**new, "until": "40d"}, headers=bearer(hq))
        assert status == 422 and "30 days" in text
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=new, headers=bearer(hq)) as r,
        ):
            assert r.status == 201
            silence = await r.json()
        sid = silence["silence_id"]
        assert silence["matchers"] == {"posts": ["KBRI-DOHA"], "severities": ["low", "medium"]}
        assert silence["active"] and silence["author"] == "officer-hq-3"
        cli_style = {**new, "matchers": ["post=KBRI-DOHA", "severity=high"]}
        status, text = await request("POST", url, json=cli_style, headers=bearer(hq))
        assert status == 201, text
        status, listed = await get_json(url, headers=bearer(hq))
        assert (
            status == 200
            and listed["count"] == 2
            and sid in {s["silence_id"] for s in listed["silences"]}
        )
        assert (await request("DELETE", f"{url}/{sid}", headers=bearer(post)))[0] == 403
        assert (await request("DELETE", f"{url}/{sid}", headers=bearer(hq)))[0] == 422
        status, text = await request(
            "DELETE", f"{url}/{sid}?author=officer-hq-4", headers=bearer(hq)
        )
        assert status == 200 and "officer-hq-4" in text
        assert (
            await request("POST", f"{url}/{sid}/expire", json={"author": "x"}, headers=bearer(hq))
        )[0] == 404  # already over
        status, listed = await get_json(url, headers=bearer(hq))
        assert listed["count"] == 1
        status, listed = await get_json(url + "?all=1", headers=bearer(hq))
        assert listed["count"] == 2
        rows = await db_fetch(
            settings.database_url or "",
            "SELECT token_id, status, detail->>'action' AS action, detail->>'author' AS author"
            " FROM audit_log WHERE detail->>'silence_id' = $1 ORDER BY seq",
            sid,
        )
        assert [(r["action"], r["author"], r["status"]) for r in rows] == [
            ("silence.add", "officer-hq-3", 200),
            ("silence.expire", "officer-hq-4", 200),
            ("silence.expire", "x", 404),  # refusals are audited too
        ]
        assert rows[0]["token_id"] and rows[0]["token_id"].startswith("tok_")
    finally:
        await worker.stop()
        await rcv.stop()
