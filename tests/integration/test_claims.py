"""BPJS claims end to end (design §4 claims, §5 "Insurance"): lifecycle, out-of-order
changes, disputes on rejection and on stall (the timer), and the claims example of
docs/rules.md word for word."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from schemas import topics
from schemas.fields import iso
from tests.integration.events import departure, incident
from tests.integration.harness import (
    REPO,
    ReadApi,
    WorkerProcess,
    assert_subset,
    cloudevent,
    db_fetch,
    derived_policy,
    doc_examples,
    eventually,
    processed_count,
    publish_events,
)

INSURER = "bpjs-tk/claims"
LIFECYCLE = ("docs_pending", "submitted", "verified", "approved", "paid")


def filed(
    wid: str,
    claim_id: str,
    at: datetime,
    *,
    program: str = "JKK",
    incident_id: str | None = None,
    **extra: Any,
) -> dict:
    data = {
        "claim_id": claim_id,
        "worker_id": wid,
        "program": program,
        "event_date": at.date().isoformat(),
        "filed_at": iso(at),
        **extra,
    }
    if incident_id:
        data["incident_id"] = incident_id
    return cloudevent("pmi.claim.filed", data, source=INSURER)


def status(wid: str, claim_id: str, status_: str, at: datetime, **extra: Any) -> dict:
    return cloudevent(
        "pmi.claim.status-changed",
        {"claim_id": claim_id, "worker_id": wid, "status": status_, "changed_at": iso(at), **extra},
        source=INSURER,
    )


async def setup_worker(
    api: ReadApi,
    settings: Settings,
    wid: str,
    *,
    incident_id: str | None,
    occurred: datetime,
    category: str = "accident",
) -> dict | None:
    """A departed worker (TW), with an open protection case for ``incident_id`` if given."""
    await publish_events(settings, topics.DEPARTURES, [departure(wid, "TW")])
    await api.workers([wid])
    if incident_id is None:
        return None
    await publish_events(
        settings,
        topics.INCIDENTS,
        [incident(wid, category, "TW", occurred_at=iso(occurred), incident_id=incident_id)],
    )
    cases = await eventually(lambda: api.cases(wid, "protection"), lambda cs: len(cs) == 1)
    return cases[0]


async def claims_of(api: ReadApi, wid: str) -> dict[str, dict]:
    w = await api.worker_json(wid)
    return {c["claim_id"]: c for c in (w or {}).get("claims", [])}


async def test_claim_lifecycle_out_of_order_and_rejection(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    api = ReadApi(worker, hq_headers)
    # Recent business times: nothing here may look stalled under the default 14 days.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
    case = await setup_worker(api, settings, "W-CL-1", incident_id="INC-CL-1", occurred=base)
    assert case is not None
    # In order, with the incident link.
    events = [
        filed(
            "W-CL-1",
            "CL-1",
            base + timedelta(hours=1),
            incident_id="INC-CL-1",
            amount_idr=50_000_000,
            benefit="treatment_abroad",
        )
    ]
    events += [
        status(
            "W-CL-1",
            "CL-1",
            s,
            base + timedelta(days=1 + i),
            **({"amount_paid_idr": 48_500_000} if s == "paid" else {}),
        )
        for i, s in enumerate(LIFECYCLE)
    ]
    # Out of order: paid before approved; then a late "approved" dated before the payment.
    events += [
        filed("W-CL-1", "CL-2", base + timedelta(hours=2), program="JKM"),
        status("W-CL-1", "CL-2", "submitted", base + timedelta(days=1)),
        status("W-CL-1", "CL-2", "paid", base + timedelta(days=3), amount_paid_idr=85_000_000),
        status("W-CL-1", "CL-2", "approved", base + timedelta(days=2)),
    ]
    await publish_events(settings, topics.CLAIMS, events)
    claims = await eventually(
        lambda: claims_of(api, "W-CL-1"),
        lambda c: (
            len(c.get("CL-1", {}).get("history", [])) == 6
            and len(c.get("CL-2", {}).get("history", [])) == 4
        ),
    )
    c1 = claims["CL-1"]
    assert c1["status"] == "paid" and c1["program"] == "JKK" and c1["out_of_order"] is False
    assert [e["status"] for e in c1["history"]] == ["filed", *LIFECYCLE]
    assert not any(e["out_of_order"] for e in c1["history"])
    assert c1["case_id"] == case["case_id"] and c1["incident_id"] == "INC-CL-1"
    assert (c1["amount_idr"], c1["amount_paid_idr"]) == (50_000_000, 48_500_000)
    assert c1["last_change_at"] == iso(base + timedelta(days=5))

    c2 = claims["CL-2"]
    assert c2["status"] == "paid" and c2["out_of_order"] is True
    assert [(e["status"], e["out_of_order"]) for e in c2["history"]] == [
        ("filed", False),
        ("submitted", False),
        ("paid", True),
        ("approved", True),
    ]
    assert c2["last_change_at"] == iso(base + timedelta(days=3))
    assert c2["case_id"] is None  # no incident_id: linked to no case

    # The incident's case shows every step of the linked claim.
    body = await api.case(case["case_id"])
    rows = [r for r in body["timeline"] if r["type"].startswith("garda.claim.")]
    assert [(r["type"], r["detail"].get("status")) for r in rows] == [
        ("garda.claim.filed", None),
        *[("garda.claim.status-changed", s) for s in LIFECYCLE],
    ]
    assert all(r["actor"] == INSURER and r["detail"]["claim_id"] == "CL-1" for r in rows)
    assert rows[-1]["at"] == iso(base + timedelta(days=5))
    assert await api.cases("W-CL-1", "claim_dispute") == []

    # Rejected while the worker has an open protection case -> one claim_dispute case.
    rejected = status(
        "W-CL-1", "CL-3", "rejected", base + timedelta(days=2), reason="documents incomplete"
    )
    await publish_events(
        settings,
        topics.CLAIMS,
        [filed("W-CL-1", "CL-3", base + timedelta(days=1), incident_id="INC-CL-1"), rejected],
    )
    # ... and for a worker without one: no dispute.
    await setup_worker(api, settings, "W-CL-NOCASE", incident_id=None, occurred=base)
    await publish_events(
        settings,
        topics.CLAIMS,
        [
            filed("W-CL-NOCASE", "CL-4", base + timedelta(days=1)),
            status("W-CL-NOCASE", "CL-4", "rejected", base + timedelta(days=2), reason="late"),
        ],
    )
    disputes = await eventually(
        lambda: api.cases("W-CL-1", "claim_dispute"), lambda cs: len(cs) == 1
    )
    d = disputes[0]
    assert (d["severity"], d["post_id"], d["category"]) == ("high", "KDEI-TAIPEI", None)
    assert d["detail"] == {
        "claim_id": "CL-3",
        "program": "JKK",
        "reason": "documents incomplete",
        "trigger": "rejected",
        "p3mi_license": "SIP3MI-001",  # the journey's agency (agency scorecard)
    }
    await eventually(
        lambda: claims_of(api, "W-CL-NOCASE"),
        lambda c: c.get("CL-4", {}).get("status") == "rejected",
    )
    # A replay of the rejection, then a marker: still one dispute.
    before = await processed_count(settings)
    await publish_events(settings, topics.CLAIMS, [rejected, rejected])
    await publish_events(
        settings,
        topics.CLAIMS,
        [status("W-CL-NOCASE", "CL-4", "expired", base + timedelta(days=3))],
    )
    await eventually(lambda: processed_count(settings), lambda n: n == before + 1)
    assert len(await api.cases("W-CL-1", "claim_dispute")) == 1
    assert await api.cases("W-CL-NOCASE") == []
    nocase = await claims_of(api, "W-CL-NOCASE")
    # After a terminal status: kept and flagged; the latest changed_at is the current status.
    assert nocase["CL-4"]["status"] == "expired"
    assert nocase["CL-4"]["history"][-1]["out_of_order"] is True


@pytest.fixture
async def stall_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    policy = derived_policy(tmp_path, "short_stall.toml", **{'stall = "14d"': 'stall = "3s"'})
    w = WorkerProcess(settings.replace(policy=policy), tmp_path, "w-stall")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def test_a_stalled_claim_opens_one_dispute_from_the_timer(
    settings: Settings, stall_worker: WorkerProcess
) -> None:
    from tests.integration.conftest import make_token

    token = await make_token(settings, hq=True)
    api = ReadApi(stall_worker, {"Authorization": f"Bearer {token}"})
    now = datetime.now(UTC).replace(microsecond=0)
    await setup_worker(api, settings, "W-STALL", incident_id=None, occurred=now)
    await publish_events(
        settings,
        topics.CLAIMS,
        [
            filed("W-STALL", "CL-STALL", now),
            # Paid (terminal) right away: never stalls.
            filed("W-STALL", "CL-DONE", now, program="JKM"),
            status("W-STALL", "CL-DONE", "paid", now, amount_paid_idr=85_000_000),
        ],
    )
    disputes = await eventually(
        lambda: api.cases("W-STALL", "claim_dispute"), lambda cs: len(cs) >= 1, timeout=60
    )
    assert len(disputes) == 1
    d = disputes[0]
    assert d["detail"] == {
        "claim_id": "CL-STALL",
        "program": "JKK",
        "trigger": "stalled",
        "reason": f"no status change since {iso(now)}",
        "p3mi_license": "SIP3MI-001",  # the journey's agency (agency scorecard)
    }
    assert (d["severity"], d["post_id"]) == ("high", "KDEI-TAIPEI")
    body = await api.case(d["case_id"])
    assert body["timeline"][0]["type"] == "garda.case.opened"
    assert body["timeline"][0]["actor"] == "garda"

    # The insurer moves it on; it stalls again 3 s later: the timer's second command finds
    # the dispute already open and opens nothing.
    moved = datetime.now(UTC).replace(microsecond=0)
    await publish_events(
        settings, topics.CLAIMS, [status("W-STALL", "CL-STALL", "submitted", moved)]
    )

    async def stall_outcomes() -> list[str]:
        rows = await db_fetch(
            settings.database_url,
            "SELECT outcome FROM processed_events WHERE type ="
            " 'garda.claim.stalled' ORDER BY processed_at",
        )
        return [r["outcome"] for r in rows]

    # Generous waits (a loaded machine); the second outcome can only be the second stall's:
    # the first command is never sent twice (streams.timers, the scan's positions).
    outcomes = await eventually(stall_outcomes, lambda o: len(o) >= 2, timeout=60)
    assert outcomes[:2] == ["dispute_opened", "ignored"]
    disputes = await api.cases("W-STALL", "claim_dispute")
    assert len(disputes) == 1
    claims = await claims_of(api, "W-STALL")
    assert claims["CL-STALL"]["status"] == "submitted"
    assert claims["CL-DONE"]["status"] == "paid"
    # The dispute case's timeline follows the claim after it opened.
    body = await api.case(disputes[0]["case_id"])
    assert [
        r["detail"].get("status")
        for r in body["timeline"]
        if r["type"] == "garda.claim.status-changed"
    ] == ["submitted"]


async def test_rules_doc_claims_example(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    ex = doc_examples(REPO / "docs" / "rules.md")
    api = ReadApi(worker, hq_headers)
    wid = ex["claims-departure"]["subject"]
    await publish_events(settings, topics.DEPARTURES, [ex["claims-departure"]])
    await api.workers([wid])
    await publish_events(settings, topics.INCIDENTS, [ex["claims-incident"]])
    await eventually(lambda: api.cases(wid, "protection"), lambda cs: len(cs) == 1)
    await publish_events(settings, topics.CLAIMS, ex["claims-events"])
    n = len(ex["claims-events"])
    w = await eventually(
        lambda: api.worker_json(wid), lambda w: sum(len(c["history"]) for c in w["claims"]) == n
    )
    assert_subset(ex["claims-worker"], w)
    cases = await eventually(lambda: api.cases(wid), lambda cs: len(cs) == 2)
    dispute = next(c for c in cases if c["kind"] == "claim_dispute")
    assert_subset(ex["claims-dispute-case"], dispute)
    timeline = (await api.case(ex["claims-dispute-case"]["case_id"]))["timeline"]
    assert [r["type"] for r in timeline] == ex["claims-dispute-timeline-types"]
    assert all(r["actor"] == "bpjs-tk/claims" for r in timeline[2:])
    accident = next(c for c in cases if c["kind"] == "protection")
    rows = (await api.case(accident["case_id"]))["timeline"]
    assert sum(r["type"].startswith("garda.claim.") for r in rows) == n
