"""Non-procedural departure rules (design §5): every reason, the moratorium dates, the case."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any

import pytest

from handlers.context import Ctx
from handlers.model import Aggregate, Worker
from handlers.nonprocedural import (
    REASONS,
    SUSPECTED,
    check_departure,
    departure_date,
    departure_reasons,
    flag_suspected,
    moratorium_for,
    severity_for_reasons,
)
from handlers.policy import Moratorium, NonProcedural, load_policy
from schemas import topics
from schemas.envelope import Envelope

NOW = datetime(2026, 3, 2, tzinfo=UTC)
BASE = load_policy()
POLICY = dataclasses.replace(
    BASE,
    non_procedural=NonProcedural(
        revoked_licenses=frozenset({"SIP3MI-999"}),
        moratoria=(
            Moratorium("AE", date(2015, 5, 26)),
            Moratorium("SA", date(2015, 5, 26), date(2025, 3, 14)),
            Moratorium("XQ", date(2026, 1, 1), employer_types=("household", "vessel")),
        ),
        critical_reasons=frozenset({"moratorium_destination", "non_work_visa"}),
        licensed_schemes=frozenset({"p2p"}),
    ),
)

CLEAN: dict[str, Any] = {
    "worker_id": "PMI-1",
    "destination_country": "MY",
    "destination_region": "MY-01",
    "departed_at": "2026-03-01T08:00:00+07:00",
    "embarkation_point": "CGK",
    "scheme": "p2p",
    "p3mi_license": "SIP3MI-001",
    "employer_type": "legal_entity",
    "e_pmi_id": "EPMI-0001",
    "visa_type": "work",
    "bpjs_membership_no": "BPJS-0001",
    "contract_end": "2028-02-29",
}


def dep(**changes: Any) -> dict[str, Any]:
    data = dict(CLEAN)
    for k, v in changes.items():
        if v is _DROP:
            data.pop(k, None)
        else:
            data[k] = v
    return data


_DROP = object()


def envelope(data: dict[str, Any], id_: str = "dep-1") -> Envelope:
    return Envelope(
        id=id_,
        source="siskop2mi/departures",
        type="pmi.departure.recorded",
        subject=data["worker_id"],
        data=data,
        time=datetime(2026, 3, 1, 1, 0, tzinfo=UTC),
    )


def ctx_for(data: dict[str, Any], id_: str = "dep-1") -> Ctx:
    return Ctx(envelope=envelope(data, id_), policy=POLICY, now=NOW)


def agg() -> Aggregate:
    return Aggregate(worker=Worker(worker_id="PMI-1", state="departed"))


# --- reasons ---------------------------------------------------------------------------


def test_reason_order_matches_policy_validation_list():
    from handlers.policy import NON_PROCEDURAL_REASONS

    assert REASONS == tuple(NON_PROCEDURAL_REASONS)


def test_clean_departure_has_no_reason():
    assert departure_reasons(CLEAN, POLICY) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # unlicensed_agency: a licensed scheme with no licence (absent, None, blank)
        ({"p3mi_license": _DROP}, ["unlicensed_agency"]),
        ({"p3mi_license": None}, ["unlicensed_agency"]),
        ({"p3mi_license": "  "}, ["unlicensed_agency"]),
        # ... but not for schemes that need none
        ({"scheme": "g2g", "p3mi_license": None}, []),
        ({"scheme": "individual", "p3mi_license": None}, []),
        ({"scheme": "company_own", "p3mi_license": None}, []),
        # revoked_agency: trimmed, case-insensitive, whatever the scheme
        ({"p3mi_license": "SIP3MI-999"}, ["revoked_agency"]),
        ({"p3mi_license": " sip3mi-999 "}, ["revoked_agency"]),
        ({"scheme": "g2p", "p3mi_license": "SIP3MI-999"}, ["revoked_agency"]),
        # no_worker_card
        ({"e_pmi_id": _DROP}, ["no_worker_card"]),
        ({"e_pmi_id": ""}, ["no_worker_card"]),
        # non_work_visa
        ({"visa_type": "visit"}, ["non_work_visa"]),
        ({"visa_type": "tourist"}, ["non_work_visa"]),
        ({"visa_type": "umrah"}, ["non_work_visa"]),
        ({"visa_type": "other"}, ["non_work_visa"]),
        ({"visa_type": _DROP}, ["non_work_visa"]),
        # no_social_security
        ({"bpjs_membership_no": _DROP}, ["no_social_security"]),
        ({"bpjs_membership_no": None}, ["no_social_security"]),
        # moratorium_destination
        ({"destination_country": "AE", "employer_type": "household"}, ["moratorium_destination"]),
        ({"destination_country": "ae", "employer_type": "household"}, ["moratorium_destination"]),
    ],
)
def test_each_reason_alone(changes, expected):
    assert departure_reasons(dep(**changes), POLICY) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"p3mi_license": None, "visa_type": "visit", "bpjs_membership_no": None},
            ["unlicensed_agency", "non_work_visa", "no_social_security"],
        ),
        (
            # given in another order, reported in REASONS order
            {
                "destination_country": "AE",
                "employer_type": "household",
                "e_pmi_id": None,
                "p3mi_license": "SIP3MI-999",
            },
            ["revoked_agency", "no_worker_card", "moratorium_destination"],
        ),
        (
            {
                "p3mi_license": None,
                "e_pmi_id": None,
                "visa_type": "tourist",
                "bpjs_membership_no": None,
                "destination_country": "AE",
                "employer_type": "household",
            },
            [
                "unlicensed_agency",
                "no_worker_card",
                "non_work_visa",
                "no_social_security",
                "moratorium_destination",
            ],
        ),
    ],
)
def test_combinations_keep_policy_order(changes, expected):
    assert departure_reasons(dep(**changes), POLICY) == expected


@pytest.mark.parametrize(
    ("country", "employer_type", "departed_at", "expected"),
    [
        # AE: in force from 2015-05-26 (inclusive), no end
        ("AE", "household", "2015-05-25T23:59:59+00:00", False),  # day before
        ("AE", "household", "2015-05-26T00:00:00+00:00", True),  # on the effective date
        ("AE", "household", "2015-05-27T10:00:00+00:00", True),  # day after
        ("AE", "household", "2031-01-01T10:00:00Z", True),  # still in force
        # the date as written (local date at embarkation), not the UTC date
        ("AE", "household", "2015-05-26T01:00:00+07:00", True),  # 2015-05-25T18:00Z
        ("AE", "household", "2015-05-25T23:00:00-05:00", False),  # 2015-05-26T04:00Z
        ("AE", "household", "2015-05-26", True),  # a bare date
        # SA: lifted on 2025-03-14 (exclusive end)
        ("SA", "household", "2025-03-13T23:59:59Z", True),  # last day in force
        ("SA", "household", "2025-03-14T00:00:00Z", False),  # the lifting day
        ("SA", "household", "2025-03-15T08:00:00Z", False),
        ("SA", "household", "2015-05-25T08:00:00Z", False),  # before it started
        # employer types
        ("AE", "legal_entity", "2026-03-01T08:00:00Z", False),
        ("AE", "vessel", "2026-03-01T08:00:00Z", False),
        ("XQ", "vessel", "2026-03-01T08:00:00Z", True),  # this one lists vessels too
        # household employer in a country with no moratorium
        ("MY", "household", "2026-03-01T08:00:00Z", False),
        ("HK", "household", "2026-03-01T08:00:00Z", False),
        ("TW", "household", "2026-03-01T08:00:00Z", False),
    ],
)
def test_moratorium_dates_and_employer_types(country, employer_type, departed_at, expected):
    data = dep(destination_country=country, employer_type=employer_type, departed_at=departed_at)
    assert ("moratorium_destination" in departure_reasons(data, POLICY)) is expected


def test_moratorium_for_returns_the_entry():
    m = moratorium_for("SA", "household", date(2020, 1, 1), POLICY)
    assert m is not None and m.country == "SA"
    assert moratorium_for(None, "household", date(2020, 1, 1), POLICY) is None
    assert moratorium_for("SA", None, date(2020, 1, 1), POLICY) is None
    assert moratorium_for("SA", "household", None, POLICY) is None


def test_departure_date_forms():
    assert departure_date("2026-03-01T23:30:00-03:00") == date(2026, 3, 1)
    assert departure_date(datetime(2026, 3, 1, 23, tzinfo=UTC)) == date(2026, 3, 1)
    assert departure_date(date(2026, 3, 1)) == date(2026, 3, 1)
    assert departure_date(None) is None


def test_default_policy_moratorium_for_saudi_ends():
    # the shipped policy: SA household lifted on 2025-03-14, AE still in force
    data = dep(
        destination_country="SA", employer_type="household", departed_at="2025-03-14T01:00:00Z"
    )
    assert departure_reasons(data, BASE) == []
    data = dep(destination_country="AE", employer_type="household")
    assert departure_reasons(data, BASE) == ["moratorium_destination"]


@pytest.mark.parametrize(
    ("reasons", "severity"),
    [
        (["moratorium_destination"], "critical"),
        (["non_work_visa"], "critical"),
        (["no_worker_card", "non_work_visa"], "critical"),
        (["unlicensed_agency"], "high"),
        (["revoked_agency"], "high"),
        (["no_worker_card"], "high"),
        (["no_social_security"], "high"),
        (["unlicensed_agency", "no_worker_card", "no_social_security"], "high"),
    ],
)
def test_severity_from_reasons(reasons, severity):
    assert severity_for_reasons(reasons, POLICY) == severity


# --- check_departure ---------------------------------------------------------------------


def test_clean_departure_opens_nothing():
    a = agg()
    ctx = ctx_for(CLEAN)
    assert check_departure(a, ctx) is None
    assert a.cases == {}
    assert a.worker.non_procedural is False
    assert a.worker.non_procedural_reasons == []
    assert ctx.effects.events == []


def test_moratorium_departure_opens_critical_case_at_destination_and_alerts():
    a = agg()
    data = dep(destination_country="AE", destination_region=None, employer_type="household")
    ctx = ctx_for(data)
    case = check_departure(a, ctx)
    assert case is not None
    assert list(a.cases) == [case.case_id]
    assert case.kind == "non_procedural_departure"
    assert case.category is None
    assert case.severity == "critical"
    assert case.country == "AE"
    assert case.post_id == "KBRI-ABU-DHABI"
    assert case.detail == {"reasons": ["moratorium_destination"]}
    assert case.cause == "departure:AE:2026-03-01T01:00:00Z"  # the journey, not the event id
    assert a.worker.non_procedural is True
    assert a.worker.non_procedural_reasons == ["moratorium_destination"]
    alerts = [e for e in ctx.effects.events if e.topic == topics.ALERTS]
    assert [e.type for e in alerts] == ["garda.alert.non_procedural_departure"]
    assert alerts[0].data["reasons"] == ["moratorium_destination"]
    assert alerts[0].data["case_id"] == case.case_id
    assert alerts[0].data["severity"] == "critical"
    opened = [e for e in ctx.effects.events if e.type == "garda.case.opened"]
    assert len(opened) == 1


def test_high_severity_and_region_routing():
    a = agg()
    case = check_departure(a, ctx_for(dep(e_pmi_id=None)))
    assert case.severity == "high"
    assert case.country == "MY" and case.region == "MY-01"
    assert case.post_id == "KJRI-JOHOR-BAHRU"
    assert case.detail["reasons"] == ["no_worker_card"]


def test_replay_is_idempotent_and_case_id_deterministic():
    data = dep(visa_type="visit", bpjs_membership_no=None)
    a = agg()
    first = check_departure(a, ctx_for(data))
    replay_ctx = ctx_for(data)
    again = check_departure(a, replay_ctx)
    assert again is first
    assert len(a.cases) == 1
    assert replay_ctx.effects.events == []  # no second alert, no second opening
    assert a.worker.non_procedural_reasons == ["no_social_security", "non_work_visa"]
    # a fresh aggregate derives the same id from the same event
    other = agg()
    assert check_departure(other, ctx_for(data)).case_id == first.case_id


def test_second_departure_unions_reasons_and_opens_its_own_case():
    a = agg()
    c1 = check_departure(a, ctx_for(dep(visa_type="visit"), "dep-1"))
    later = "2027-06-01T08:00:00+07:00"  # a second journey
    c2 = check_departure(
        a, ctx_for(dep(e_pmi_id=None, visa_type="visit", departed_at=later), "dep-2")
    )
    assert c1.case_id != c2.case_id
    assert len(a.cases) == 2
    assert a.worker.non_procedural_reasons == ["no_worker_card", "non_work_visa"]
    # a later clean departure does not clear earlier findings
    assert check_departure(a, ctx_for(CLEAN, "dep-3")) is None
    assert a.worker.non_procedural is True
    assert a.worker.non_procedural_reasons == ["no_worker_card", "non_work_visa"]


def test_flag_suspected_is_idempotent():
    a = Aggregate(worker=Worker(worker_id="PMI-1", state="unregistered_abroad"))
    flag_suspected(a, ctx_for(CLEAN))
    flag_suspected(a, ctx_for(CLEAN))
    assert a.worker.non_procedural is True
    assert a.worker.non_procedural_reasons == [SUSPECTED]
    assert a.cases == {}
    flag_suspected(a)  # ctx is optional
    assert a.worker.non_procedural_reasons == [SUSPECTED]


def test_departure_record_answers_the_suspicion():
    a = Aggregate(worker=Worker(worker_id="PMI-1", state="unregistered_abroad"))
    flag_suspected(a)
    assert check_departure(a, ctx_for(CLEAN)) is None
    assert a.worker.non_procedural is False
    assert a.worker.non_procedural_reasons == []


def test_suspicion_replaced_by_real_reasons():
    a = Aggregate(worker=Worker(worker_id="PMI-1", state="unregistered_abroad"))
    flag_suspected(a)
    check_departure(a, ctx_for(dep(bpjs_membership_no=None)))
    assert a.worker.non_procedural is True
    assert a.worker.non_procedural_reasons == ["no_social_security"]


def test_same_journey_sent_again_under_a_new_id_joins_its_case():
    a = agg()
    c1 = check_departure(a, ctx_for(dep(visa_type="visit"), "dep-1"))
    again = ctx_for(dep(visa_type="visit", e_pmi_id=None), "dep-1-resync")
    c2 = check_departure(a, again)
    assert c2.case_id == c1.case_id and len(a.cases) == 1
    assert c2.detail["reasons"] == ["no_worker_card", "non_work_visa"]
    assert [e.type for e in again.effects.events] == ["garda.case.updated"]  # no second alert
    quiet = ctx_for(dep(visa_type="visit"), "dep-1-third")
    check_departure(a, quiet)
    assert quiet.effects.events == [] and len(a.cases) == 1


def test_moratorium_is_remembered_per_policy():
    # the same input under another policy (one without moratoria) is decided by that policy
    lifted = dataclasses.replace(
        POLICY, non_procedural=dataclasses.replace(POLICY.non_procedural, moratoria=())
    )
    for _ in range(2):
        assert moratorium_for("AE", "household", date(2026, 3, 1), POLICY) is not None
        assert moratorium_for("AE", "household", date(2026, 3, 1), lifted) is None
        assert moratorium_for(" ae ", "household", date(2026, 3, 1), POLICY) is not None
