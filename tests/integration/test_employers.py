"""The employer watchlist against a real ``garda worker``, broker and database (default
policy: three substantiated cases of listed categories within 365 days)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from handlers.employers import employer_key
from infra.settings import Settings
from schemas import topics
from tests.integration import events
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

KL = "KBRI-KUALA-LUMPUR"


def departure(wid: str, employer: str) -> dict[str, Any]:
    return events.departure(
        wid, "MY", "MY-10", employer_name=employer, p3mi_license="SIP3MI-2019-0417"
    )


def incident(wid: str) -> dict[str, Any]:
    return events.incident(wid, "employer_violence", region="MY-10")


async def cases_of(url: str, headers: dict[str, str], wid: str, kind: str) -> list[dict]:
    status, body = await get_json(f"{url}/api/cases?worker_id={wid}&kind={kind}", headers=headers)
    assert status == 200, body
    return body["cases"]


async def test_watchlist_across_workers(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    url = worker.url
    tag = uuid.uuid4().hex[:6]
    name = f"PT Maju Jaya {tag}"
    spellings = [name, f"  pt.  MAJU jaya {tag} ", f"PT MAJU JAYA {tag.upper()}"]
    wids = [f"W-EMP-{i}-{tag}" for i in range(3)]
    await publish_events(
        settings, topics.DEPARTURES, [departure(w, n) for w, n in zip(wids, spellings, strict=True)]
    )
    await eventually(
        lambda: db_fetch(
            settings.database_url,
            "SELECT count(*) AS n FROM workers WHERE worker_id = ANY($1)",
            wids,
        ),
        lambda rows: rows[0]["n"] == 3,
        timeout=20,
    )
    await publish_events(settings, topics.INCIDENTS, [incident(w) for w in wids])
    key = employer_key(name, "MY")
    opened = []
    for w in wids:
        found = await eventually(
            lambda w=w: cases_of(url, hq_headers, w, "protection"),
            lambda c: len(c) == 1,
            timeout=20,
        )
        opened.append(found[0])
    # all three workers are one employer
    rows = await db_fetch(
        settings.database_url, "SELECT case_id FROM employer_cases WHERE employer_key = $1", key
    )
    assert sorted(r["case_id"] for r in rows) == sorted(c["case_id"] for c in opened)

    async def resolve(case: dict[str, Any], substantiated: bool) -> None:
        status, body = await post_json(
            f"{url}/api/cases/{case['case_id']}/resolve",
            {"actor": "hq-1", "resolution": "employer sanctioned", "substantiated": substantiated},
            headers=hq_headers,
        )
        assert status == 202, body

    async def listed() -> list[dict[str, Any]]:
        status, body = await get_json(f"{url}/api/employers?watchlisted=true", headers=hq_headers)
        assert status == 200, body
        return [e for e in body["employers"] if e["employer_key"] == key]

    await resolve(opened[0], True)
    await resolve(opened[1], True)
    await resolve(opened[2], False)  # not substantiated: two of three
    await eventually(
        lambda: db_fetch(
            settings.database_url,
            "SELECT count(*) AS n FROM employer_cases WHERE employer_key = $1 AND status = 'resolved'",
            key,
        ),
        lambda r: r[0]["n"] == 3,
        timeout=20,
    )
    assert await listed() == []

    # Reopened and resolved again as substantiated: the third one tips it.
    status, body = await post_json(
        f"{url}/api/cases/{opened[2]['case_id']}/reopen", {"actor": "hq-1"}, headers=hq_headers
    )
    assert status == 202, body
    await eventually(
        lambda: get_json(f"{url}/api/cases/{opened[2]['case_id']}", headers=hq_headers),
        lambda r: r[1]["status"] == "reopened",
        timeout=20,
    )
    await resolve(opened[2], True)
    (entry,) = await eventually(listed, lambda e: len(e) == 1, timeout=20)
    assert entry["name"] == f"pt maju jaya {tag}" and entry["country"] == "MY"
    assert sorted(c["case_id"] for c in entry["cases"]) == sorted(c["case_id"] for c in opened)
    assert all(c["substantiated"] for c in entry["cases"])

    # Post tokens: their countries only, without the cases.
    _, kl = await new_token(settings, posts=[KL])
    _, riyadh = await new_token(settings, posts=["KBRI-RIYADH"])
    _, body = await get_json(f"{url}/api/employers?watchlisted=true", headers=bearer(kl))
    (mine,) = [e for e in body["employers"] if e["employer_key"] == key]
    assert "cases" not in mine and mine["case_count"] == 3
    _, body = await get_json(f"{url}/api/employers?watchlisted=true", headers=bearer(riyadh))
    assert [e for e in body["employers"] if e["employer_key"] == key] == []
    assert (await get_json(f"{url}/api/employers?watchlisted=maybe", headers=hq_headers))[0] == 400

    # The change is one event on pmi.employers.v1.
    events = [v for _, v in await read_events(settings, topics.EMPLOYERS) if v]
    mine_events = [v for v in events if v["data"]["employer_key"] == key]
    assert [v["type"] for v in mine_events] == ["garda.employer.watchlisted"]

    # A new departure to the listed employer: flag, preventive visit at the post, alert.
    newcomer = f"W-EMP-new-{tag}"
    await publish_events(settings, topics.DEPARTURES, [departure(newcomer, name.lower())])
    (visit,) = await eventually(
        lambda: cases_of(url, hq_headers, newcomer, "preventive_visit"),
        lambda c: len(c) == 1,
        timeout=20,
    )
    assert visit["post_id"] == KL and visit["severity"] == "medium"
    rows = await db_fetch(
        settings.database_url, "SELECT doc FROM workers WHERE worker_id = $1", newcomer
    )
    doc = rows[0]["doc"]
    assert (json.loads(doc) if isinstance(doc, str) else doc)["flags"] == ["watchlisted_employer"]
    alerts = [v for _, v in await read_events(settings, topics.ALERTS) if v]
    assert [
        v
        for v in alerts
        if v["type"] == "garda.alert.watchlisted-employer" and v["data"]["worker_id"] == newcomer
    ]
