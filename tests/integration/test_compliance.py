"""Non-procedural departures and insurance coverage, end to end (design §5).

A real ``garda worker`` against the real broker and PostgreSQL, with a policy derived from
``handlers/default_policy.toml`` (one revoked licence added). The worked example of
``docs/rules.md`` is replayed word for word at the end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.nonprocedural import REASONS
from infra.settings import Settings
from schemas import topics
from tests.integration.events import departure, incident, journey
from tests.integration.harness import (
    REPO,
    ReadApi,
    WorkerProcess,
    assert_subset,
    cloudevent,
    derived_policy,
    doc_examples,
    eventually,
    processed_count,
    publish_events,
    read_topic,
)

REVOKED = "SIP3MI-REVOKED-9"
RULES_DOC = REPO / "docs" / "rules.md"


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """Overrides the conftest worker: same, with the compliance policy (``hq_headers`` uses it)."""
    policy = derived_policy(
        tmp_path,
        "compliance_policy.toml",
        **{
            "revoked_licenses = []": f'revoked_licenses = ["{REVOKED}"]',
            # The worked example is dated 2026-11-20: replayed more than 30 d later it would
            # be a late report (clocks from its receipt) and its deadlines would differ.
            'max_event_age = "30d"': 'max_event_age = "3650d"',
        },
    )
    w = WorkerProcess(settings.replace(policy=policy), tmp_path, "w1")
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def alerts(settings: Settings, type_: str, min_count: int = 0) -> list[dict]:
    msgs = await read_topic(settings, topics.ALERTS, min_count=min_count)
    return [e for e in (json.loads(m.value) for m in msgs) if e["type"] == type_]


# ---------------------------------------------------------------------------------------
# Non-procedural departures
# ---------------------------------------------------------------------------------------

# worker -> (departure, expected reasons, severity, post)
NP = {
    "W-NP-UNLICENSED": (
        departure("W-NP-UNLICENSED", "MY", "MY-01", p3mi_license=None),
        ["unlicensed_agency"],
        "high",
        "KJRI-JOHOR-BAHRU",
    ),
    "W-NP-REVOKED": (
        departure("W-NP-REVOKED", "TW", p3mi_license=REVOKED.lower()),
        ["revoked_agency"],
        "high",
        "KDEI-TAIPEI",
    ),
    "W-NP-NOCARD": (
        departure("W-NP-NOCARD", "HK", e_pmi_id=None),
        ["no_worker_card"],
        "high",
        "KJRI-HONG-KONG",
    ),
    "W-NP-VISA": (
        departure("W-NP-VISA", "SA", "SA-02", visa_type="umrah"),
        ["non_work_visa"],
        "critical",
        "KJRI-JEDDAH",
    ),
    "W-NP-NOBPJS": (
        departure("W-NP-NOBPJS", "KR", bpjs_membership_no=None),
        ["no_social_security"],
        "high",
        "KBRI-SEOUL",
    ),
    "W-NP-MORATORIUM": (
        departure("W-NP-MORATORIUM", "QA", employer_type="household"),
        ["moratorium_destination"],
        "critical",
        "KBRI-DOHA",
    ),
    # Several at once: individual scheme (no licence needed), household in Kuwait, visit visa.
    "W-NP-MANY": (
        departure(
            "W-NP-MANY",
            "KW",
            scheme="individual",
            p3mi_license=None,
            employer_type="household",
            visa_type="visit",
            e_pmi_id=None,
        ),
        ["moratorium_destination", "no_worker_card", "non_work_visa"],
        "critical",
        "KBRI-KUWAIT-CITY",
    ),
    # Moratorium boundaries: QA in force from 2015-05-26 (the local date of departed_at
    # counts), SA lifted on 2025-03-14 (exclusive).
    "W-MOR-QA-BEFORE": (
        departure(
            "W-MOR-QA-BEFORE", "QA", employer_type="household", departed_at="2015-05-25T23:30:00Z"
        ),
        [],
        None,
        None,
    ),
    "W-MOR-QA-FIRST-DAY": (
        departure(
            "W-MOR-QA-FIRST-DAY",
            "QA",
            employer_type="household",
            departed_at="2015-05-26T00:30:00+03:00",
        ),
        ["moratorium_destination"],
        "critical",
        "KBRI-DOHA",
    ),
    "W-MOR-SA-LAST-DAY": (
        departure(
            "W-MOR-SA-LAST-DAY",
            "SA",
            employer_type="household",
            departed_at="2025-03-13T22:00:00+03:00",
        ),
        ["moratorium_destination"],
        "critical",
        "KBRI-RIYADH",
    ),
    "W-MOR-SA-LIFTED": (
        departure(
            "W-MOR-SA-LIFTED",
            "SA",
            employer_type="household",
            departed_at="2025-03-14T01:00:00+03:00",
        ),
        [],
        None,
        None,
    ),
    "W-MOR-LEGAL-ENTITY": (departure("W-MOR-LEGAL-ENTITY", "QA"), [], None, None),
    "W-NP-CLEAN": (departure("W-NP-CLEAN", "MY", "MY-01"), [], None, None),
}


async def test_each_reason_flags_the_worker_and_opens_one_case(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    api = ReadApi(worker, hq_headers)
    deps = [d for d, *_ in NP.values()]
    await publish_events(settings, topics.DEPARTURES, deps)
    got = await api.workers(list(NP))
    for wid, (dep, reasons, severity, post) in NP.items():
        w = got[wid]
        assert w["state"] == "departed", wid
        assert w["non_procedural"] is bool(reasons), (wid, w)
        assert w["non_procedural_reasons"] == reasons, (wid, w)
        cases = await api.cases(wid)
        if not reasons:
            assert cases == [], (wid, cases)
            assert w["open_cases"] == [] and w["in_crisis"] is False
            continue
        assert len(cases) == 1, (wid, cases)
        case = cases[0]
        assert case["kind"] == "non_procedural_departure" and case["category"] is None
        assert (case["severity"], case["post_id"]) == (severity, post), (wid, case)
        # The case lists the departure's reasons in the rule order (the worker, sorted), and
        # the placement agency's licence when the departure named one (agency scorecard).
        expected: dict[str, Any] = {"reasons": [r for r in REASONS if r in reasons]}
        if dep["data"].get("p3mi_license"):
            expected["p3mi_license"] = dep["data"]["p3mi_license"].strip()
        assert case["detail"] == expected
        assert case["status"] == "open" and w["open_cases"] == [case["case_id"]]
        assert w["in_crisis"] is True  # every such case is high or critical

    np_alerts = await alerts(settings, "garda.alert.non_procedural_departure", min_count=1)
    flagged = {wid for wid, (_, reasons, *_) in NP.items() if reasons}
    assert sorted(a["subject"] for a in np_alerts) == sorted(flagged)
    many = next(a["data"] for a in np_alerts if a["subject"] == "W-NP-MANY")
    assert many["reasons"] == ["no_worker_card", "non_work_visa", "moratorium_destination"]
    assert many["post_id"] == "KBRI-KUWAIT-CITY"
    assert many["severity"] == "critical" and many["destination_country"] == "KW"

    # Replays (same source and id), then a marker: nothing opens twice, no second alert.
    before = await processed_count(settings)
    await publish_events(settings, topics.DEPARTURES, deps + [NP["W-NP-MANY"][0]])
    await publish_events(settings, topics.DEPARTURES, [departure("W-NP-MARKER", "TW")])
    await eventually(lambda: processed_count(settings), lambda n: n == before + 1)
    for wid, (_, reasons, *_) in NP.items():
        assert len(await api.cases(wid)) == (1 if reasons else 0), wid
    again = await alerts(settings, "garda.alert.non_procedural_departure", min_count=1)
    assert len(again) == len(np_alerts)


async def test_a_worker_first_seen_abroad_is_suspected_non_procedural(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    api = ReadApi(worker, hq_headers)
    await publish_events(
        settings,
        topics.INCIDENTS,
        [
            incident(
                "W-GHOST",
                "unpaid_wages",
                "MY",
                region="MY-01",
                occurred_at="2026-11-27T10:00:00Z",
                incident_id="INC-GHOST-1",
            ),
        ],
    )
    w = (await api.workers(["W-GHOST"]))["W-GHOST"]
    assert w["state"] == "unregistered_abroad"
    assert w["non_procedural"] is True
    assert w["non_procedural_reasons"] == ["suspected_unregistered"]
    assert (w["country"], w["region"]) == ("MY", "MY-01")
    cases = await api.cases("W-GHOST")
    assert [c["kind"] for c in cases] == ["protection"]  # flagged, no second case
    assert cases[0]["post_id"] == "KJRI-JOHOR-BAHRU"

    # A procedural departure record answers the suspicion; a non-procedural one replaces it.
    await publish_events(
        settings,
        topics.DEPARTURES,
        [
            departure("W-GHOST", "MY", "MY-01", departed_at="2026-10-01T08:00:00Z"),
        ],
    )
    w = (await api.workers(["W-GHOST"], lambda w: w["state"] == "departed"))["W-GHOST"]
    assert w["non_procedural"] is False and w["non_procedural_reasons"] == []


async def test_a_departure_applied_after_the_incident_closes_the_gap_it_disproves(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    """Cross-topic order: the departure is deliberately published only once the incident
    (about the same worker, on another topic) has been applied and opened a coverage gap."""
    api = ReadApi(worker, hq_headers)
    wid = "W-LATE-DEPARTURE"
    await publish_events(
        settings,
        topics.INCIDENTS,
        [
            incident(
                wid,
                "accident",
                "MY",
                region="MY-01",
                occurred_at="2026-11-27T10:00:00Z",
                incident_id="INC-LATE-1",
            )
        ],
    )
    opened = await eventually(
        lambda: api.cases(wid), lambda cs: sorted(c["kind"] for c in cs) == KINDS_BEFORE
    )
    [gap] = [c for c in opened if c["kind"] == "coverage_gap"]
    assert gap["status"] == "open"
    await publish_events(
        settings,
        topics.DEPARTURES,
        [departure(wid, "MY", "MY-01", departed_at="2026-10-01T08:00:00Z")],
    )
    w = (await api.workers([wid], lambda w: w["state"] == "departed"))[wid]
    assert w["non_procedural_reasons"] == []
    closed = await eventually(lambda: api.case(gap["case_id"]), lambda c: c["status"] == "resolved")
    last = closed["timeline"][-1]
    assert last["type"] == "garda.case.resolved"
    assert last["detail"]["reason"] == "disproved"
    assert gap["case_id"] not in w["open_cases"]
    [protection] = [c for c in await api.cases(wid) if c["kind"] == "protection"]
    assert protection["status"] == "open"


KINDS_BEFORE = ["coverage_gap", "protection"]


# ---------------------------------------------------------------------------------------
# Coverage (insured_until, coverage_gap, claim_suggested)
# ---------------------------------------------------------------------------------------


async def test_coverage_windows_gaps_and_claim_suggestions(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    api = ReadApi(worker, hq_headers)
    ret = "pmi.return.recorded"
    await publish_events(
        settings,
        topics.DEPARTURES,
        [
            # Inside the window: contract to 2028-11-19 -> insured until 2028-12-19.
            departure("W-COV-IN", "TW"),
            # Returned long ago: window ended 2022-02-09.
            departure(
                "W-COV-OLD",
                "TW",
                departed_at="2020-01-10T08:00:00Z",
                contract_start="2020-01-10",
                contract_end="2022-01-09",
            ),
            journey(
                ret, "W-COV-OLD", returned_at="2022-01-10T00:00:00Z", reason="contract_completed"
            ),
            # No BPJS membership: no window at all.
            departure("W-COV-NOBPJS", "TW", bpjs_membership_no=None),
            # Contract to 2025-01-01, extended to 2027-01-01.
            departure(
                "W-COV-EXT",
                "TW",
                departed_at="2023-01-01T08:00:00Z",
                contract_start="2023-01-01",
                contract_end="2025-01-01",
            ),
            # Returned 2026-10-01T10:00Z: covered through the UTC day 2026-10-31.
            departure("W-COV-EDGE-IN", "HK", departed_at="2024-10-01T08:00:00Z"),
            journey(ret, "W-COV-EDGE-IN", returned_at="2026-10-01T10:00:00Z", reason="medical"),
            departure("W-COV-EDGE-OUT", "HK", departed_at="2024-10-01T08:00:00Z"),
            journey(ret, "W-COV-EDGE-OUT", returned_at="2026-10-01T10:00:00Z", reason="medical"),
            departure("W-COV-DEATH", "MY", "MY-01"),
        ],
    )
    wids = [
        "W-COV-IN",
        "W-COV-OLD",
        "W-COV-NOBPJS",
        "W-COV-EXT",
        "W-COV-EDGE-IN",
        "W-COV-EDGE-OUT",
        "W-COV-DEATH",
    ]
    got = await api.workers(
        wids,
        lambda w: (
            w is not None
            and w["state"] in ("departed", "returned")
            and (
                w["worker_id"] not in ("W-COV-OLD", "W-COV-EDGE-IN", "W-COV-EDGE-OUT")
                or w["state"] == "returned"
            )
        ),
    )
    assert got["W-COV-IN"]["insured_until"] == "2028-12-19T00:00:00Z"
    assert got["W-COV-IN"]["insured_from"] == "2026-06-23T08:00:00Z"  # 150 days before
    assert got["W-COV-OLD"]["insured_until"] == "2022-02-09T00:00:00Z"
    assert got["W-COV-NOBPJS"]["insured_until"] is None
    assert got["W-COV-EXT"]["insured_until"] == "2025-01-31T00:00:00Z"
    assert got["W-COV-EDGE-IN"]["insured_until"] == "2026-10-31T10:00:00Z"

    await publish_events(
        settings,
        topics.DEPARTURES,
        [
            journey("pmi.contract.extended", "W-COV-EXT", contract_end="2027-01-01"),
        ],
    )
    await api.workers(["W-COV-EXT"], lambda w: w["insured_until"] == "2027-01-31T00:00:00Z")

    accident = "2026-11-28T10:00:00Z"
    await publish_events(
        settings,
        topics.INCIDENTS,
        [
            incident("W-COV-IN", "accident", "TW", occurred_at=accident, incident_id="INC-COV-IN"),
            incident(
                "W-COV-OLD", "accident", "TW", occurred_at=accident, incident_id="INC-COV-OLD"
            ),
            incident(
                "W-COV-NOBPJS", "illness", "TW", occurred_at=accident, incident_id="INC-COV-NOBPJS"
            ),
            incident(
                "W-COV-EXT", "accident", "TW", occurred_at=accident, incident_id="INC-COV-EXT"
            ),
            incident(
                "W-COV-EDGE-IN",
                "accident",
                "HK",
                occurred_at="2026-10-31T23:59:59Z",
                incident_id="INC-COV-EDGE-IN",
            ),
            incident(
                "W-COV-EDGE-OUT",
                "accident",
                "HK",
                occurred_at="2026-11-01T00:00:00Z",
                incident_id="INC-COV-EDGE-OUT",
            ),
            # Not a gap category: never a coverage_gap, even outside the window.
            incident(
                "W-COV-OLD",
                "unpaid_wages",
                "TW",
                occurred_at=accident,
                incident_id="INC-COV-OLD-WAGES",
            ),
            incident(
                "W-COV-DEATH",
                "death",
                "MY",
                region="MY-01",
                occurred_at=accident,
                incident_id="INC-COV-DEATH",
            ),
        ],
    )

    async def kinds() -> dict[str, list[str]]:
        return {w: sorted(c["kind"] for c in await api.cases(w)) for w in wids}

    expected = {
        "W-COV-IN": ["protection"],
        "W-COV-OLD": ["coverage_gap", "protection", "protection"],
        "W-COV-NOBPJS": ["coverage_gap", "non_procedural_departure", "protection"],
        "W-COV-EXT": ["protection"],
        # a medical return also opens a reintegration case (docs/prevention.md)
        "W-COV-EDGE-IN": ["protection", "reintegration"],
        "W-COV-EDGE-OUT": ["coverage_gap", "protection", "reintegration"],
        "W-COV-DEATH": ["protection"],
    }
    await eventually(kinds, lambda k: k == expected)

    gap = (await api.cases("W-COV-OLD", "coverage_gap"))[0]
    protection = next(
        c for c in await api.cases("W-COV-OLD", "protection") if c["category"] == "accident"
    )
    assert gap["category"] is None and gap["severity"] == protection["severity"] == "high"
    assert gap["post_id"] == protection["post_id"] == "KDEI-TAIPEI"
    assert gap["detail"] == {
        "reason": "outside_window",
        "insured_from": "2019-08-13T08:00:00Z",
        "insured_until": "2022-02-09T00:00:00Z",
        "occurred_at": accident,
        "incident_id": "INC-COV-OLD",
        "incident_category": "accident",
        "protection_case_id": protection["case_id"],
        "p3mi_license": "SIP3MI-001",  # the journey's agency (agency scorecard)
    }
    nobpjs = (await api.cases("W-COV-NOBPJS", "coverage_gap"))[0]
    assert nobpjs["detail"]["reason"] == "no_membership"
    assert nobpjs["detail"]["insured_until"] is None
    edge = (await api.cases("W-COV-EDGE-OUT", "coverage_gap"))[0]
    assert edge["detail"]["insured_until"] == "2026-10-31T10:00:00Z"

    # An illness later updated to a death gets the death's claim suggestion too.
    await publish_events(
        settings,
        topics.INCIDENTS,
        [
            cloudevent(
                "pmi.incident.updated",
                {
                    "incident_id": "INC-COV-NOBPJS",
                    "worker_id": "W-COV-NOBPJS",
                    "category": "death",
                    "note": "died in hospital",
                },
                source="kp2mi/hotline",
            )
        ],
    )

    async def suggestions() -> dict[str, dict]:
        found = await alerts(settings, "garda.alert.claim_suggested")
        return {a["subject"]: a["data"] for a in found}

    suggested = await eventually(suggestions, lambda s: len(s) == 2)
    upd = suggested["W-COV-NOBPJS"]
    assert upd["program"] == "JKM" and upd["incident_id"] == "INC-COV-NOBPJS"
    assert upd["covered"] is False and upd["insured_until"] is None
    assert len(await api.cases("W-COV-NOBPJS", "coverage_gap")) == 1  # still one per incident
    data = suggested["W-COV-DEATH"]
    death_case = (await api.cases("W-COV-DEATH"))[0]
    assert data["program"] == "JKM" and data["worker_id"] == "W-COV-DEATH"
    assert data["incident_id"] == "INC-COV-DEATH" and data["case_id"] == death_case["case_id"]
    assert data["covered"] is True and data["insured_until"] == "2028-12-19T00:00:00Z"
    assert death_case["severity"] == "critical" and death_case["post_id"] == "KJRI-JOHOR-BAHRU"


# ---------------------------------------------------------------------------------------
# docs/rules.md, word for word
# ---------------------------------------------------------------------------------------


def doc_blocks() -> dict[str, Any]:
    """The worked examples of docs/rules.md (``<!-- example: NAME -->`` blocks)."""
    return doc_examples(RULES_DOC)


async def test_rules_doc_departure_example(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    ex = doc_blocks()
    api = ReadApi(worker, hq_headers)
    dep = ex["departure-event"]
    wid = dep["subject"]
    await publish_events(settings, topics.DEPARTURES, [dep])
    w = (await api.workers([wid]))[wid]
    assert_subset(ex["departure-worker"], w)
    opened = await eventually(
        lambda: read_topic(settings, topics.CASES, min_count=1),
        lambda ms: any(json.loads(m.value)["type"] == "garda.case.opened" for m in ms),
    )
    event = next(
        json.loads(m.value) for m in opened if json.loads(m.value)["type"] == "garda.case.opened"
    )
    assert_subset(ex["departure-case"], event["data"])
    alert = await alerts(settings, "garda.alert.non_procedural_departure", min_count=1)
    assert_subset(ex["departure-alert"], alert[0]["data"])
