"""handlers.access: who may see, act on and publish what (pure, no I/O)."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest

from errors import ConfigError
from handlers import access
from handlers.access import Scope
from handlers.dispatch import handle
from handlers.model import Case
from handlers.policy import DEFAULT_POLICY_PATH, policy_from_dict
from streams.processor import content_digest
from tests.unit.factories import POLICY, T0, H, aggregate, envelope, incident

JOHOR, KL, PENANG, TAIPEI = "KJRI-JOHOR-BAHRU", "KBRI-KUALA-LUMPUR", "KJRI-PENANG", "KDEI-TAIPEI"


def scope(*posts: str, hq: bool = False, sources: tuple[str, ...] = ()) -> Scope:
    return Scope("tok_test", frozenset(posts), hq, frozenset(sources))


def case(post: str = JOHOR, level: int = 0, escalated_to: str | None = None) -> Case:
    return Case(
        case_id="CASE-1",
        worker_id="W",
        kind="protection",
        category="unpaid_wages",
        severity="high",
        post_id=post,
        opened_at=T0,
        escalation_level=level,
        escalated_to=escalated_to,
    )


@pytest.mark.parametrize(
    ("level", "escalated_to", "visible"),
    [
        (0, None, {JOHOR, "HQ"}),
        (1, KL, {JOHOR, KL, "HQ"}),
        # Level 2: escalated_to is HQ now, the head of mission keeps the case.
        (2, "HQ", {JOHOR, KL, "HQ"}),
    ],
)
def test_every_level_passed_through_keeps_access(
    level: int, escalated_to: str | None, visible: set[str]
) -> None:
    c = case(level=level, escalated_to=escalated_to)
    assert access.case_posts(c, POLICY) == visible
    assert access.can_see_case(scope(KL), c, POLICY) is (KL in visible)
    assert access.may_act(c, KL, POLICY) is (KL in visible)
    assert not access.can_see_case(scope(PENANG), c, POLICY)
    assert access.can_see_case(scope(hq=True), c, POLICY)


def test_case_filter_lists_what_can_see_case_sees() -> None:
    f = access.case_filter(scope(KL), POLICY)
    assert f is not None and f.posts == {KL}
    assert JOHOR in f.by_level[1] and PENANG in f.by_level[1] and TAIPEI not in f.by_level[1]
    assert f.by_level[2] == frozenset()  # KL is nobody's level 2
    assert access.case_filter(scope(hq=True), POLICY) is None
    hq_post = access.case_filter(scope("HQ"), POLICY)
    assert hq_post is not None and JOHOR in hq_post.by_level[2]


def test_acting_post() -> None:
    c = case(level=2, escalated_to="HQ")
    assert access.acting_post(scope(KL), c, POLICY, None) == KL
    assert access.acting_post(scope(JOHOR, KL), c, POLICY, None) == JOHOR
    assert access.acting_post(scope(KL), c, POLICY, JOHOR) is None
    assert access.acting_post(scope(hq=True), c, POLICY, None) == "HQ"
    assert access.acting_post(scope(hq=True), c, POLICY, "HQ") == "HQ"


def test_sources_must_be_bound_hq_included() -> None:
    assert access.source_refusal(scope(hq=True), "kp2mi/hotline") is not None
    assert access.source_refusal(scope(sources=("kp2mi/hotline",)), "kp2mi/hotline") is None
    assert access.source_refusal(scope(sources=("garda",)), "garda") is not None
    assert access.is_reserved_source("garda-api/tok_1") and not access.is_reserved_source("gardax")


def _two_post_worker():
    """W-TWO: a low case at Johor, then a critical one at Taipei (W now located in TW)."""
    agg = aggregate("W-TWO")
    for i, (inc, t) in enumerate(
        [
            (incident("INC-JB", "other", country="MY", region="MY-01"), T0),
            (incident("INC-TW", "lost_contact", country="TW", region=None), T0 + H),
        ]
    ):
        env = envelope("pmi.incident.reported", inc, time=t, worker_id="W-TWO", id=f"e{i}")
        agg = handle(agg, env, POLICY, t + H).aggregate
    return agg


def test_effects_refusal_is_about_what_the_event_changes() -> None:
    agg = _two_post_worker()
    jb = scope(JOHOR, sources=("jb/desk",))

    def dry(type_: str, data: dict) -> str | None:
        env = envelope(type_, data, time=T0 + 2 * H, worker_id="W-TWO", source="jb/desk")
        result = handle(agg, env, POLICY, T0 + 3 * H)
        return access.publish_refusal(jb, env.source, agg, result, POLICY)

    # Another post's case: changed category, or a report joining it.
    assert "outside this token's posts" in dry(
        "pmi.incident.updated", {"incident_id": "INC-TW", "category": "other"}
    )
    assert "outside" in dry(
        "pmi.incident.reported", incident("INC-X", "lost_contact", country="MY", region="MY-01")
    )
    # Its own case, and a new incident that routes to it: accepted.
    assert dry("pmi.incident.updated", {"incident_id": "INC-JB", "severity": "high"}) is None
    assert dry("pmi.incident.reported", incident("INC-Y", "accident")) is None
    # A worker with no case of its posts cannot be changed (declared deceased).
    tpe_only = handle(
        aggregate("W-T"),
        envelope(
            "pmi.incident.reported",
            incident("INC-T", country="TW", region=None),
            worker_id="W-T",
        ),
        POLICY,
        T0 + H,
    ).aggregate
    env = envelope(
        "pmi.return.recorded",
        {"returned_at": "2026-11-29T03:00:00Z", "reason": "deceased"},
        worker_id="W-T",
        source="jb/desk",
    )
    result = handle(tpe_only, env, POLICY, T0 + H)
    # (the death also opens a reintegration case, at headquarters: outside the token's posts)
    assert "outside this token's posts" in access.effects_refusal(jb, tpe_only, result, POLICY)
    # Headquarters and producer-only tokens are bound by their sources only.
    assert access.effects_refusal(scope(hq=True), tpe_only, result, POLICY) is None
    assert access.effects_refusal(scope(sources=("x",)), tpe_only, result, POLICY) is None


def test_worker_view_filters_to_the_tokens_cases() -> None:
    agg = _two_post_worker()
    tw_case = next(c for c in agg.cases.values() if c.post_id == TAIPEI)
    claim = {"claim_id": "C1", "case_id": tw_case.case_id}
    body = {**agg.worker_public(), "claims": [claim]}
    assert body["in_crisis"] is True and body["country"] == "TW"
    mine = access.worker_view(scope(JOHOR), agg, POLICY, body)
    assert mine is not None
    assert tw_case.case_id not in mine["open_cases"] and len(mine["open_cases"]) == 1
    assert mine["in_crisis"] is False and mine["claims"] == []
    assert mine["country"] is None and mine["region"] is None
    theirs = access.worker_view(scope(TAIPEI), agg, POLICY, body)
    assert theirs is not None and theirs["country"] == "TW" and theirs["claims"] == [claim]
    assert access.worker_view(scope(PENANG), agg, POLICY, body) is None
    assert access.worker_view(scope(hq=True), agg, POLICY, body) is body


def test_case_action_time_checks() -> None:
    agg = handle(
        aggregate("W"),
        envelope("pmi.incident.reported", incident(), worker_id="W"),
        POLICY,
        T0 + H,
    ).aggregate
    cid = next(iter(agg.cases))

    def ack(at: str):
        data = {"case_id": cid, "actor": "a", "post_id": JOHOR, "at": at}
        env = envelope("pmi.case.acknowledged", data, worker_id="W", time=None)
        return handle(agg, env, POLICY, T0 + 30 * H, received_at=T0 + 30 * H)

    with pytest.raises(Exception, match="before case .* opened"):
        ack("2000-01-01T00:00:00Z")
    with pytest.raises(Exception, match="more than 1d before Garda received it"):
        ack("2026-11-29T03:00:00Z")  # after the opening, 29 h before receipt
    assert ack("2026-11-30T07:00:00Z").aggregate.cases[cid].status == "acknowledged"


def test_late_report_clocks_start_at_receipt() -> None:
    received = T0 + 2 * H
    env = envelope("pmi.incident.reported", incident(category="lost_contact"), worker_id="W")
    late = replace(env, time=T0.replace(year=1970))
    result = handle(aggregate("W"), late, POLICY, received + H, received_at=received)
    [c] = [c for c in result.aggregate.cases.values() if c.kind == "protection"]
    assert c.opened_at == received and c.ack_due == received + H
    assert c.detail["late_report"] == {
        "time": "1970-11-29T02:00:00Z",
        "received_at": "2026-11-29T04:00:00Z",
    }
    # Within max_event_age (30 d by default) the event's own time counts.
    on_time = replace(env, time=received - 29 * 24 * H)
    result = handle(aggregate("W"), on_time, POLICY, received + H, received_at=received)
    [c] = [c for c in result.aggregate.cases.values() if c.kind == "protection"]
    assert c.opened_at == on_time.time and "late_report" not in c.detail


def test_intake_policy_keys() -> None:
    doc = tomllib.loads(DEFAULT_POLICY_PATH.read_text())
    assert POLICY.intake.max_event_age.days == 30 and POLICY.intake.max_action_age.days == 1
    doc["intake"] = {"max_event_age": "2h"}
    assert policy_from_dict(doc).intake.max_event_age.total_seconds() == 7200
    doc["intake"] = {"max_age": "2h"}
    with pytest.raises(ConfigError, match="intake: unknown key"):
        policy_from_dict(doc)


def test_content_digest_ignores_encoding_not_content() -> None:
    env = envelope("pmi.incident.reported", incident(), worker_id="W", id="same")
    reordered = replace(env, data=dict(reversed(list(env.data.items()))))
    assert content_digest(env) == content_digest(reordered)
    assert content_digest(env) != content_digest(replace(env, data={**env.data, "category": "x"}))
    assert content_digest(env) != content_digest(replace(env, time=None))
