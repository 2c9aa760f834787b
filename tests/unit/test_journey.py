"""The worker's journey: every transition, time order, anomalies, refusals, stored facts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import Rejected, Unacceptable
from handlers import journey
from handlers.journey import to_datetime
from handlers.model import Aggregate, parse_dt
from tests.unit.factories import T0, D, H, aggregate, ctx, departure, envelope, iso

DEP = "pmi.departure.recorded"
FAIL = "pmi.departure.failed"
ARR = "pmi.arrival.reported"
EXT = "pmi.contract.extended"
RET = "pmi.return.recorded"
LATE = T0 + 500 * D


def run(agg: Aggregate, type_: str, data: dict, time: datetime = T0):
    c = ctx(envelope(type_, data, time=time))
    journey.JOURNEY_HANDLERS[type_](agg, c)
    return c


def arrival(at: datetime, country: str = "MY", region: str | None = "MY-01") -> dict:
    d = {"country": country, "reported_at": iso(at), "employer_name": "Ladang Sdn Bhd"}
    if region is not None:
        d["region"] = region
    return d


def ret(at: datetime, reason: str = "contract_completed") -> dict:
    return {"returned_at": iso(at), "reason": reason}


# --- starting states --------------------------------------------------------------------


def s_new() -> Aggregate:
    return aggregate()


def s_departed() -> Aggregate:
    agg = aggregate()
    run(agg, DEP, departure(T0), T0)
    return agg


def s_placed() -> Aggregate:
    agg = s_departed()
    run(agg, ARR, arrival(T0 + D), T0 + D)
    return agg


def s_returned() -> Aggregate:
    agg = s_placed()
    run(agg, RET, ret(T0 + 400 * D), T0 + 400 * D)
    return agg


def s_failed() -> Aggregate:
    agg = aggregate()
    run(agg, FAIL, {"reason": "offloaded", "at": iso(T0)}, T0)
    return agg


def s_deceased() -> Aggregate:
    agg = s_placed()
    run(agg, RET, ret(T0 + 100 * D, "deceased"), T0 + 100 * D)
    return agg


def s_unregistered() -> Aggregate:
    return aggregate(
        state="unregistered_abroad", country="SA", first_seen_via="pmi.incident.reported"
    )


STATES: dict[str, Callable[[], Aggregate]] = {
    "new": s_new,
    "departed": s_departed,
    "placed": s_placed,
    "returned": s_returned,
    "failed_departure": s_failed,
    "deceased": s_deceased,
    "unregistered_abroad": s_unregistered,
}


def test_starting_states() -> None:
    for name, make in STATES.items():
        assert make().worker.state == (None if name == "new" else name)


EVENTS: dict[str, tuple[str, dict]] = {
    "depart": (DEP, departure(LATE, destination_country="SA", destination_region="SA-02")),
    "fail": (FAIL, {"reason": "medical", "at": iso(LATE)}),
    "arrive": (ARR, arrival(LATE, "SA", "SA-02")),
    "extend": (EXT, {"contract_end": "2030-01-31"}),
    "return": (RET, ret(LATE)),
    "die": (RET, ret(LATE, "deceased")),
}

R404, R409 = "NotFound", "Conflict"
# (state, event) -> expected state, or a refusal status; plus the anomaly flagged, if any
TRANSITIONS: list[tuple[str, str, str, str | None]] = [
    ("new", "depart", "departed", None),
    ("departed", "depart", "departed", "departure_without_return"),
    ("placed", "depart", "departed", "departure_without_return"),
    ("returned", "depart", "departed", None),
    ("failed_departure", "depart", "departed", None),
    ("unregistered_abroad", "depart", "departed", None),
    ("deceased", "depart", R409, None),
    ("new", "fail", "failed_departure", None),
    ("departed", "fail", "failed_departure", None),
    ("placed", "fail", R409, None),
    ("returned", "fail", "failed_departure", None),
    ("failed_departure", "fail", "failed_departure", None),
    ("unregistered_abroad", "fail", R409, None),
    ("deceased", "fail", R409, None),
    ("new", "arrive", "placed", "arrival_without_departure"),
    ("departed", "arrive", "placed", None),
    ("placed", "arrive", "placed", None),
    ("returned", "arrive", "placed", "arrival_without_departure"),
    ("failed_departure", "arrive", "placed", "arrival_without_departure"),
    ("unregistered_abroad", "arrive", "placed", "arrival_without_departure"),
    ("deceased", "arrive", R409, None),
    ("new", "extend", R404, None),
    ("departed", "extend", "departed", None),
    ("placed", "extend", "placed", None),
    ("unregistered_abroad", "extend", "unregistered_abroad", None),
    ("returned", "extend", R409, None),
    ("failed_departure", "extend", R409, None),
    ("deceased", "extend", R409, None),
    ("new", "return", "returned", "return_without_departure"),
    ("departed", "return", "returned", None),
    ("placed", "return", "returned", None),
    ("returned", "return", "returned", "return_without_departure"),
    ("failed_departure", "return", "returned", "return_without_departure"),
    ("unregistered_abroad", "return", "returned", None),
    ("deceased", "return", R409, None),
    ("new", "die", "deceased", "return_without_departure"),
    ("placed", "die", "deceased", None),
    ("departed", "die", "deceased", None),
    ("unregistered_abroad", "die", "deceased", None),
    ("deceased", "die", R409, None),
]


def test_transition_table_is_complete() -> None:
    assert {(s, e) for s, e, _, _ in TRANSITIONS} >= {
        (s, e) for s in STATES for e in EVENTS if e != "die"
    }


@pytest.mark.parametrize(("state", "event", "expected", "anomaly"), TRANSITIONS)
def test_transition(state: str, event: str, expected: str, anomaly: str | None) -> None:
    agg = STATES[state]()
    before = list(agg.worker.anomalies)
    type_, data = EVENTS[event]
    if expected in (R404, R409):
        with pytest.raises(Rejected) as exc:
            run(agg, type_, data, LATE)
        assert type(exc.value).__name__ == expected
        assert exc.value.reason
        return
    c = run(agg, type_, data, LATE)
    w = agg.worker
    assert w.state == expected
    assert c.outcome != "stale"
    new = [a for a in w.anomalies if a not in before]
    assert new == ([anomaly] if anomaly else [])
    # journeys write no case timeline, except the reintegration case a death opens
    kinds = {agg.cases[e.case_id].kind for e in c.effects.timeline}
    assert kinds == ({"reintegration"} if expected == "deceased" else set())


# --- facts stored -----------------------------------------------------------------------


def test_departure_stores_journey_facts_and_no_personal_identifiers() -> None:
    agg = aggregate()
    c = run(agg, DEP, departure(T0, destination_country="my", destination_region="my-04"), T0)
    w = agg.worker
    assert c.outcome == "departed"
    assert (w.state, w.country, w.region) == ("departed", "MY", "MY-04")
    assert w.departed_at == T0 and w.state_at == T0
    assert w.contract_start == datetime(2026, 11, 29, tzinfo=UTC)
    assert w.contract_end == datetime(2028, 11, 28, tzinfo=UTC)
    assert (w.scheme, w.employer_type, w.sector) == ("p2p", "legal_entity", "plantation")
    assert w.has_social_security is True
    assert w.first_seen_via == DEP
    doc = repr(w.to_doc())
    for secret in ("3201010101010001", "X1234567", "Siti Aminah"):
        assert secret not in doc


@pytest.mark.parametrize(
    ("bpjs", "insured"), [("BPJS-9", True), ("", False), ("  ", False), (None, False)]
)
def test_has_social_security(bpjs: str | None, insured: bool) -> None:
    agg = aggregate()
    run(agg, DEP, departure(T0, bpjs_membership_no=bpjs))
    assert agg.worker.has_social_security is insured


def test_departure_without_optional_fields() -> None:
    agg = aggregate()
    data = departure(
        T0, destination_region=None, contract_start=None, contract_end=None, sector=None
    )
    run(agg, DEP, data)
    w = agg.worker
    assert w.region is None and w.contract_end is None and w.sector is None


def test_departed_at_as_date_only_and_offset() -> None:
    agg = aggregate()
    run(agg, DEP, departure(T0, departed_at="2026-11-28"))
    assert agg.worker.departed_at == datetime(2026, 11, 28, tzinfo=UTC)
    agg = aggregate()
    run(agg, DEP, departure(T0, departed_at="2026-11-29T09:00:00+07:00"))
    assert agg.worker.departed_at == T0


def test_bad_date_is_rejected_not_crashing() -> None:
    agg = aggregate()
    with pytest.raises(Rejected) as exc:
        run(agg, DEP, departure(T0, contract_end="31/12/2028"))
    assert isinstance(exc.value, Unacceptable) and "contract_end" in exc.value.reason


def test_arrival_updates_location_and_keeps_region_when_missing() -> None:
    agg = s_departed()
    run(agg, ARR, arrival(T0 + D, "MY", "MY-12"), T0 + D)
    w = agg.worker
    assert (w.state, w.country, w.region, w.arrived_at) == ("placed", "MY", "MY-12", T0 + D)
    run(agg, ARR, arrival(T0 + 2 * D, "MY", None), T0 + 2 * D)
    assert w.region == "MY-12" and w.arrived_at == T0 + D and w.state_at == T0 + 2 * D
    run(agg, ARR, arrival(T0 + 3 * D, "SA", None), T0 + 3 * D)
    assert (w.country, w.region) == ("SA", None)


def test_arrival_first_records_first_seen_via() -> None:
    agg = aggregate()
    run(agg, ARR, arrival(T0))
    assert agg.worker.first_seen_via == ARR
    assert agg.worker.anomalies == ["arrival_without_departure"]


def test_contract_extension_moves_end() -> None:
    agg = s_placed()
    c = run(agg, EXT, {"contract_end": "2030-06-30"}, T0 + 2 * D)
    assert c.outcome == "extended"
    assert agg.worker.contract_end == datetime(2030, 6, 30, tzinfo=UTC)
    run(agg, EXT, {"contract_end": "2029-01-01"}, T0 + 3 * D)  # a correction may move it back
    assert agg.worker.contract_end == datetime(2029, 1, 1, tzinfo=UTC)
    assert agg.worker.state == "placed"


def test_contract_extension_sent_before_return_is_kept_as_stale_fact() -> None:
    agg = s_returned()
    c = run(agg, EXT, {"contract_end": "2030-06-30"}, T0 + 300 * D)
    assert c.outcome == "stale"
    assert agg.worker.contract_end == datetime(2030, 6, 30, tzinfo=UTC)
    assert agg.worker.state == "returned"


def test_return_stores_reason_and_time() -> None:
    agg = s_placed()
    c = run(agg, RET, ret(T0 + 50 * D, "deported"), T0 + 50 * D)
    w = agg.worker
    assert c.outcome == "returned"
    assert (w.state, w.returned_at, w.return_reason) == ("returned", T0 + 50 * D, "deported")


def test_deceased_return_resent_is_unchanged() -> None:
    agg = s_deceased()
    c = run(agg, RET, ret(T0 + 100 * D, "deceased"), T0 + 200 * D)
    assert c.outcome == "unchanged" and agg.worker.state == "deceased"


def test_same_return_resent_is_a_correction_without_anomaly() -> None:
    agg = s_returned()
    c = run(agg, RET, ret(T0 + 400 * D, "repatriated"), T0 + 401 * D)
    assert c.outcome == "returned"
    assert agg.worker.return_reason == "repatriated" and agg.worker.anomalies == []


def test_failed_departure_without_at_uses_event_time() -> None:
    agg = aggregate()
    run(agg, FAIL, {"reason": "visa"}, T0 + H)
    assert agg.worker.state == "failed_departure" and agg.worker.state_at == T0 + H
    assert agg.worker.first_seen_via == FAIL


# --- new journeys -----------------------------------------------------------------------


def test_new_departure_after_return_starts_new_journey() -> None:
    agg = s_returned()
    run(agg, DEP, departure(LATE, destination_country="TW", destination_region=None), LATE)
    w = agg.worker
    assert (w.state, w.country, w.departed_at) == ("departed", "TW", LATE)
    assert w.arrived_at is None and w.returned_at is None and w.return_reason is None
    assert w.anomalies == []


def test_arrival_after_return_clears_old_journey() -> None:
    agg = s_returned()
    run(agg, ARR, arrival(LATE, "HK", None), LATE)
    w = agg.worker
    assert w.state == "placed" and w.departed_at is None and w.returned_at is None
    assert w.contract_end is None and w.arrived_at == LATE


def test_same_departure_resent_is_a_correction() -> None:
    agg = s_departed()
    c = run(agg, DEP, departure(T0, sector="domestic", employer_type="household"), T0 + H)
    w = agg.worker
    assert c.outcome == "departed" and w.state == "departed"
    assert (w.sector, w.employer_type) == ("domestic", "household")
    assert w.anomalies == []


# --- time order -------------------------------------------------------------------------


STALE = [
    ("placed", DEP, departure(T0 - D)),
    ("placed", ARR, arrival(T0 + H)),
    ("placed", FAIL, {"reason": "x", "at": iso(T0 - D)}),
    ("returned", DEP, departure(T0 + 10 * D)),
    ("returned", ARR, arrival(T0 + 10 * D)),
    ("returned", RET, ret(T0 + 300 * D)),
    ("returned", FAIL, {"reason": "x", "at": iso(T0 + 10 * D)}),
    ("deceased", ARR, arrival(T0 + 2 * D)),
    ("deceased", RET, ret(T0 + 50 * D)),
    ("departed", RET, ret(T0 - D)),
    ("failed_departure", DEP, departure(T0 - D)),
]


@pytest.mark.parametrize(("state", "type_", "data"), STALE)
def test_older_events_do_not_move_state_back(state: str, type_: str, data: dict) -> None:
    agg = STATES[state]()
    before = (agg.worker.state, agg.worker.state_at, agg.worker.country)
    c = run(agg, type_, data, LATE)
    assert c.outcome == "stale"
    assert (agg.worker.state, agg.worker.state_at, agg.worker.country) == before


def test_late_departure_fills_facts_of_arrival_first_worker() -> None:
    agg = aggregate()
    run(agg, ARR, arrival(T0 + D, "MY", "MY-13"), T0 + D)
    c = run(agg, DEP, departure(T0), T0 + 2 * D)
    w = agg.worker
    assert c.outcome == "stale"
    assert (w.state, w.region) == ("placed", "MY-13")
    assert w.departed_at == T0 and w.scheme == "p2p" and w.has_social_security


def test_late_arrival_fills_arrived_at_after_return() -> None:
    agg = s_departed()
    run(agg, RET, ret(T0 + 300 * D), T0 + 300 * D)
    c = run(agg, ARR, arrival(T0 + 2 * D), T0 + 301 * D)
    assert c.outcome == "stale"
    assert agg.worker.state == "returned" and agg.worker.arrived_at == T0 + 2 * D


# --- hooks ------------------------------------------------------------------------------


def test_hooks_run_at_their_call_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(journey, "AFTER_DEPARTURE", [lambda a, c: calls.append(("dep", c.outcome))])
    monkeypatch.setattr(
        journey, "AFTER_JOURNEY_CHANGE", [lambda a, c: calls.append(("chg", c.envelope.type))]
    )
    agg = aggregate()
    run(agg, DEP, departure(T0), T0)
    run(agg, DEP, departure(T0 - D), T0)  # stale: non-procedural checks still see it
    run(agg, ARR, arrival(T0 + D), T0 + D)
    run(agg, EXT, {"contract_end": "2030-01-01"}, T0 + D)
    run(agg, RET, ret(T0 + 9 * D), T0 + 9 * D)
    assert calls == [
        ("dep", "departed"), ("chg", DEP), ("dep", "stale"), ("chg", DEP),
        ("chg", ARR), ("chg", EXT), ("chg", RET),
    ]  # fmt: skip
    with pytest.raises(Rejected):
        run(aggregate(), EXT, {"contract_end": "2030-01-01"})
    assert len(calls) == 7


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
    | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["", " ", "Z", "date"]),
)
def test_remembered_texts_read_as_the_first_time(dt: datetime, form: str) -> None:
    # to_datetime and parse_dt remember the texts they read: a second read gives the same
    # value and offset as the parse itself (without the caches)
    if form == "date":
        text = dt.date().isoformat()
        expected = datetime(dt.year, dt.month, dt.day, tzinfo=UTC)
    else:
        text = dt.isoformat()
        if form == "Z" and dt.utcoffset() == timedelta(0):
            text = text.removesuffix("+00:00") + "Z"
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        expected = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        text = " " + text if form == " " else text
    for _ in range(2):
        got = to_datetime(text)
        assert got is not None and got == expected and got.tzinfo == expected.tzinfo
        if form != "date" and not text.startswith(" "):
            again = parse_dt(text)
            assert again == expected and again.tzinfo == expected.tzinfo


def test_a_text_that_does_not_parse_raises_each_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            to_datetime("2026-13-01")
        with pytest.raises(ValueError):
            parse_dt("not a time")
