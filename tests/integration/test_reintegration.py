"""Reintegration referrals against a real ``garda worker``, broker and database (default
policy): a deportation opens a case at the origin regency's manpower office, a death opens
one that links the family's JKM claim when it arrives, and a unit's own token sees its case."""

from __future__ import annotations

import uuid
from typing import Any

from infra.settings import Settings
from schemas import topics
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    cloudevent,
    eventually,
    get_json,
    new_token,
    publish_events,
)

MALANG = "DISNAKER-KAB-MALANG"


def departure(wid: str, origin: dict[str, str]) -> dict[str, Any]:
    data = {
        "worker_id": wid,
        "destination_country": "HK",
        "departed_at": "2026-06-01T01:00:00Z",
        "scheme": "p2p",
        "p3mi_license": "SIP3MI-2019-0417",
        "employer_type": "household",
        "visa_type": "work",
        "e_pmi_id": "EPMI-1",
        "bpjs_membership_no": "25011234567",
        "origin": origin,
    }
    return cloudevent("pmi.departure.recorded", data, source="siskop2mi/embarkation")


def ret(wid: str, reason: str) -> dict[str, Any]:
    data = {"worker_id": wid, "returned_at": "2026-11-30T05:00:00Z", "reason": reason}
    return cloudevent("pmi.return.recorded", data, source="siskop2mi/embarkation")


async def reint_case(url: str, headers: dict[str, str], wid: str) -> dict[str, Any]:
    _, body = await eventually(
        lambda: get_json(f"{url}/api/cases?worker_id={wid}&kind=reintegration", headers=headers),
        lambda r: r[0] == 200 and len(r[1]["cases"]) == 1,
        timeout=20,
    )
    status, case = await get_json(f"{url}/api/cases/{body['cases'][0]['case_id']}", headers=headers)
    assert status == 200, case
    return case


async def test_returns_open_cases_at_the_origin(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    url = worker.url
    tag = uuid.uuid4().hex[:6]
    deported, deceased, completed = (f"W-RI-{k}-{tag}" for k in ("dep", "dec", "ok"))
    malang = {"province": "35", "regency": "3507", "village": "3507020002"}
    aceh = {"province": "11", "regency": "1101"}
    await publish_events(
        settings,
        topics.DEPARTURES,
        [
            departure(deported, malang),
            departure(deceased, aceh),
            departure(completed, malang),
            ret(deported, "deported"),
            ret(deceased, "deceased"),
            ret(completed, "contract_completed"),
        ],
    )
    case = await reint_case(url, hq_headers, deported)
    assert case["post_id"] == MALANG and case["severity"] == "medium"
    assert case["kind"] == "reintegration"
    assert "Malang regency manpower office" in case["routing_note"]

    # the unit's own token sees its case, not the other ones
    _, token = await new_token(settings, posts=[MALANG])
    mine = await reint_case(url, bearer(token), deported)
    assert mine["case_id"] == case["case_id"]
    dead = await reint_case(url, hq_headers, deceased)
    assert dead["post_id"] == "HQ" and "no service unit for origin 11/1101" in dead["routing_note"]
    assert dead["severity"] == "high" and dead["detail"]["jkm"]["claim_id"] is None
    status, body = await get_json(f"{url}/api/cases/{dead['case_id']}", headers=bearer(token))
    assert status == 404, body

    claim = cloudevent(
        "pmi.claim.filed",
        {
            "claim_id": f"JKM-{tag}",
            "worker_id": deceased,
            "program": "JKM",
            "event_date": "2026-11-25",
            "filed_at": "2026-11-30T09:00:00Z",
        },
        source="bpjs-ketenagakerjaan/claims",
    )
    await publish_events(settings, topics.CLAIMS, [claim])
    linked = await eventually(
        lambda: reint_case(url, hq_headers, deceased),
        lambda c: c["detail"]["jkm"]["claim_id"] == f"JKM-{tag}",
        timeout=20,
    )
    assert "garda.case.claim-linked" in [e["type"] for e in linked["timeline"]]
    # the claim's later steps reach the case's timeline
    change = cloudevent(
        "pmi.claim.status-changed",
        {
            "claim_id": f"JKM-{tag}",
            "worker_id": deceased,
            "status": "submitted",
            "changed_at": "2026-12-01T09:00:00Z",
        },
        source="bpjs-ketenagakerjaan/claims",
    )
    await publish_events(settings, topics.CLAIMS, [change])
    await eventually(
        lambda: reint_case(url, hq_headers, deceased),
        lambda c: "garda.claim.status-changed" in [e["type"] for e in c["timeline"]],
        timeout=20,
    )

    # a planned return with no protection history: no case
    status, body = await get_json(
        f"{url}/api/cases?worker_id={completed}&kind=reintegration", headers=hq_headers
    )
    assert status == 200 and body["cases"] == []
