"""Pure decisions of the alerting hooks: matching, silences, inhibition, retry times, config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from errors import ConfigError
from handlers.policy import load_policy
from infra.hooks.matching import (
    ActiveSilence,
    CriticalCase,
    Facts,
    Matcher,
    RetryPlan,
    decide,
    matcher_from_doc,
    next_attempt,
    parse_matcher_args,
    parse_retry_after,
)
from infra.hooks.policy import hooks_policy
from infra.hooks.receivers import receivers_from_dict

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def facts(**kw) -> Facts:
    base = dict(type="garda.alert.escalated", posts=frozenset({"KBRI-DOHA"}), severity="high",
                kind="protection", level=1, case_id="CASE-1", worker_id="W-1")  # fmt: skip
    base.update(kw)
    return Facts(**base)


def test_facts_of_an_escalation_include_the_post_it_went_to():
    f = Facts.of({"type": "garda.alert.escalated", "subject": "W-1", "data": {
        "post_id": "KBRI-DOHA", "escalated_to": "HQ", "level": 2, "severity": "critical"}})  # fmt: skip
    assert f.posts == {"KBRI-DOHA", "HQ"} and f.level == 2 and f.worker_id == "W-1"
    opened = Facts.of({"type": "garda.case.opened", "data": {"escalation_level": 0}})
    assert opened.level == 0 and opened.severity is None


@pytest.mark.parametrize(
    ("field", "value", "hit", "miss"),
    [
        ("posts", ["KBRI-DOHA"], {}, {"posts": frozenset({"HQ"})}),
        ("severities", ["high"], {}, {"severity": "low"}),
        ("kinds", ["protection"], {}, {"kind": "coverage_gap"}),
        ("types", ["garda.alert.*"], {}, {"type": "garda.case.opened"}),
        ("levels", [1, 2], {}, {"level": 0}),
        ("cases", ["CASE-1"], {}, {"case_id": "CASE-2"}),
        ("workers", ["W-1"], {}, {"worker_id": "W-2"}),
    ],
)
def test_each_matcher_field_matches_and_misses(field, value, hit, miss):
    m = matcher_from_doc({field: value}, "t")
    assert m.matches(facts(**hit))
    assert not m.matches(facts(**miss))
    absent = {"posts": frozenset()} if field == "posts" else {
        {"severities": "severity", "kinds": "kind", "types": "type", "levels": "level",
         "cases": "case_id", "workers": "worker_id"}[field]: None if field != "types" else ""}  # fmt: skip
    assert not m.matches(facts(**absent))  # a field given for a fact the alert lacks


def test_fields_and_values_combine_as_and_of_ors():
    m = matcher_from_doc({"severities": ["high", "critical"], "posts": ["HQ", "KBRI-DOHA"]}, "t")
    for sev, post in product(["low", "high", "critical"], ["HQ", "KBRI-DOHA", "KJRI-DUBAI"]):
        f = facts(severity=sev, posts=frozenset({post}))
        assert m.matches(f) == (sev != "low" and post != "KJRI-DUBAI")
    assert Matcher().matches(facts()) and Matcher().empty


def test_matcher_errors_are_precise():
    with pytest.raises(ConfigError, match="unknown matcher 'colour'"):
        matcher_from_doc({"colour": "red"}, "r")
    with pytest.raises(ConfigError, match="unknown severity 'urgent'"):
        matcher_from_doc({"severities": ["urgent"]}, "r")
    with pytest.raises(ConfigError, match="levels are integers"):
        parse_matcher_args(["level=two"])
    assert parse_matcher_args(["severity=high,low", "post=HQ"]).to_doc() == {
        "posts": ["HQ"], "severities": ["high", "low"]}  # fmt: skip


def silence(**doc) -> ActiveSilence:
    return ActiveSilence(
        "sil_1", matcher_from_doc(doc, "s"), "maintenance", NOW + timedelta(hours=1)
    )


NEVER = hooks_policy(load_policy()).never_mute


def test_silence_silences_but_never_mute_goes_through():
    s = silence(posts=["KBRI-DOHA"])
    d = decide(facts(), "duty", Matcher(), silences=[s], never_mute=NEVER)
    assert d.action == "silenced" and d.silence_id == "sil_1" and "maintenance" in d.reason
    level2 = decide(facts(level=2), "duty", Matcher(), silences=[s], never_mute=NEVER)
    assert level2.action == "queued"
    crit_open = facts(type="garda.case.opened", severity="critical", level=0)
    assert decide(crit_open, "duty", Matcher(), silences=[s], never_mute=NEVER).action == "queued"
    other = decide(facts(), "duty", Matcher(), silences=[silence(receivers=["other"])])
    assert other.action == "queued"  # a silence naming receivers spares the others


def test_inhibition_holds_lesser_alerts_of_a_worker_with_an_open_critical_case():
    crit = CriticalCase("CASE-C", facts(case_id="CASE-C", severity="critical"))
    for sev in ("low", "medium", "high"):
        d = decide(facts(severity=sev), "duty", Matcher(), open_critical=[crit])
        assert d.action == "held" and d.inhibited_by == "CASE-C"
    assert (
        decide(facts(severity="critical"), "duty", Matcher(), open_critical=[crit]).action
        == "queued"
    )
    own = decide(facts(case_id="CASE-C"), "duty", Matcher(), open_critical=[crit])
    assert own.action == "queued"  # the critical case's own alerts are never held
    unfollowed = decide(
        facts(), "duty", matcher_from_doc({"posts": ["HQ"]}, "r"), open_critical=[crit]
    )
    assert unfollowed.action == "queued"  # a receiver that never hears of that case
    assert (
        decide(facts(level=2), "duty", Matcher(), never_mute=NEVER, open_critical=[crit]).action
        == "queued"
    )


def test_retry_schedule_horizon_and_retry_after():
    plan = RetryPlan((timedelta(seconds=5), timedelta(minutes=5)), timedelta(hours=1))
    n1 = next_attempt(plan, attempts_done=1, created_at=NOW, now=NOW)
    assert n1.at == NOW + timedelta(seconds=5)
    jittered = next_attempt(plan, attempts_done=1, created_at=NOW, now=NOW, rand=0.99)
    assert NOW + timedelta(seconds=5) < jittered.at <= NOW + timedelta(seconds=5.5)
    asked = next_attempt(
        plan, attempts_done=1, created_at=NOW, now=NOW, retry_after=timedelta(seconds=60)
    )
    assert asked.at == NOW + timedelta(seconds=60)
    assert next_attempt(plan, attempts_done=3, created_at=NOW, now=NOW).at is None
    late = NOW + timedelta(minutes=58)
    capped = next_attempt(plan, attempts_done=2, created_at=NOW, now=late)
    assert capped.at == NOW + timedelta(hours=1)  # the last try is at the horizon
    assert (
        next_attempt(plan, attempts_done=2, created_at=NOW, now=NOW + timedelta(hours=2)).at is None
    )
    assert parse_retry_after("120", NOW) == timedelta(seconds=120)
    assert parse_retry_after("Tue, 01 Dec 2026 12:01:00 GMT", NOW) == timedelta(seconds=60)
    assert parse_retry_after("soon", NOW) is None and parse_retry_after(None, NOW) is None


def test_default_schedule_is_standard_webhooks():
    hp = hooks_policy(load_policy())
    assert [int(d.total_seconds()) for d in hp.retry.schedule] == [
        5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]  # fmt: skip
    assert hp.retry.horizon == timedelta(hours=24) and hp.timeout == timedelta(seconds=15)


def test_receivers_file_is_validated_and_secrets_never_shown():
    ok = receivers_from_dict({"receivers": [
        {"name": "duty", "url": "https://x.example/h", "secret": SECRET, "match": {"severities": ["critical"]}},
        {"name": "am", "type": "alertmanager", "url": "http://am:9093"}]})  # fmt: skip
    assert ok.get("am").endpoint == "http://am:9093/api/v2/alerts"
    assert SECRET not in repr(ok) and "whsec_***" in repr(ok.get("duty"))
    cases = [
        ({"name": "Bad Name", "url": "https://x", "secret": SECRET}, "name"),
        ({"name": "a", "url": "ftp://x", "secret": SECRET}, "url"),
        ({"name": "a", "url": "https://x"}, "secret: required"),
        ({"name": "a", "url": "https://x", "secret": "abc"}, "must start with whsec_"),
        ({"name": "a", "url": "https://x", "secret": "whsec_AAAA"}, "too short"),
        (
            {"name": "a", "type": "alertmanager", "url": "https://x", "secret": SECRET},
            "takes no secret",
        ),
        ({"name": "a", "type": "pager", "url": "https://x"}, "type"),
        ({"name": "a", "url": "https://x", "secret": SECRET, "colour": 1}, "unknown key"),
    ]
    for doc, msg in cases:
        with pytest.raises(ConfigError, match=msg) as err:
            receivers_from_dict({"receivers": [doc]})
        assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="used twice"):
        receivers_from_dict(
            {"receivers": [{"name": "a", "type": "alertmanager", "url": "http://x"}] * 2}
        )
