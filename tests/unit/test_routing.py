"""Routing (country, region) -> post, and the escalation ladder."""

from __future__ import annotations

import pytest

from errors import Unacceptable
from handlers.policy import Policy, Post, load_policy
from handlers.routing import (
    RouteDecision,
    escalation_target,
    normalize_region,
    route,
)
from tests.unit.factories import POLICY

ROUTES = [
    # (country, region, post, words in the note)
    ("MY", "MY-01", "KJRI-JOHOR-BAHRU", "MY-01"),
    ("MY", "MY-04", "KJRI-JOHOR-BAHRU", "KJRI Johor Bahru"),
    ("MY", "MY-05", "KJRI-JOHOR-BAHRU", "protection desk"),
    ("MY", "MY-06", "KJRI-JOHOR-BAHRU", ""),
    ("MY", "MY-07", "KJRI-PENANG", ""),
    ("MY", "MY-02", "KJRI-PENANG", ""),
    ("MY", "MY-09", "KJRI-PENANG", ""),
    ("MY", "MY-08", "KJRI-PENANG", ""),
    ("MY", "MY-13", "KJRI-KUCHING", ""),
    ("MY", "MY-12", "KJRI-KOTA-KINABALU", ""),
    ("MY", "MY-14", "KBRI-KUALA-LUMPUR", "MY is covered by KBRI Kuala Lumpur"),
    ("MY", "MY-10", "KBRI-KUALA-LUMPUR", ""),
    ("MY", None, "KBRI-KUALA-LUMPUR", ""),
    ("SA", "SA-02", "KJRI-JEDDAH", "SA-02 is covered by KJRI Jeddah"),
    ("SA", "SA-03", "KJRI-JEDDAH", ""),
    ("SA", "SA-07", "KJRI-JEDDAH", ""),
    ("SA", "SA-14", "KJRI-JEDDAH", ""),
    ("SA", "SA-09", "KJRI-JEDDAH", ""),
    ("SA", "SA-01", "KBRI-RIYADH", ""),
    ("SA", None, "KBRI-RIYADH", ""),
    ("KW", None, "KBRI-KUWAIT-CITY", ""),
    ("AE", "AE-DU", "KBRI-ABU-DHABI", ""),
    ("QA", None, "KBRI-DOHA", ""),
    ("JO", None, "KBRI-AMMAN", ""),
    ("BN", None, "KBRI-BANDAR-SERI-BEGAWAN", ""),
    ("KR", "KR-11", "KBRI-SEOUL", ""),
    ("SG", None, "KBRI-SINGAPORE", ""),
    ("HK", None, "KJRI-HONG-KONG", "HK is covered by KJRI Hong Kong"),
    ("TW", None, "KDEI-TAIPEI", "TW is covered by KDEI Taipei"),
    ("TW", "TW-TPE", "KDEI-TAIPEI", ""),
    ("JP", None, "KBRI-TOKYO", "routed to the protection desk of KBRI Tokyo"),
    ("JP", "JP-13", "KBRI-TOKYO", "no labour attaché in JP"),
    ("JP", "JP-27", "KJRI-OSAKA", "protection desk"),
    ("JP", "JP-26", "KJRI-OSAKA", ""),
    ("JP", "JP-28", "KJRI-OSAKA", ""),
    ("JP", "JP-29", "KJRI-OSAKA", ""),
    ("JP", "JP-30", "KJRI-OSAKA", ""),
    ("JP", "JP-25", "KJRI-OSAKA", ""),
    # normalisation
    ("my", "my-01", "KJRI-JOHOR-BAHRU", "MY-01"),
    (" MY ", " MY-01 ", "KJRI-JOHOR-BAHRU", ""),
    ("MY", "01", "KJRI-JOHOR-BAHRU", "MY-01"),
    ("MY", "", "KBRI-KUALA-LUMPUR", ""),
    ("MY", "SA-02", "KBRI-KUALA-LUMPUR", "region SA-02 is not in MY, ignored"),
    # no post: headquarters, and the note says so
    ("FR", None, "HQ", "no Indonesian labour post covers FR; routed to headquarters"),
    ("IT", "IT-25", "HQ", "no Indonesian labour post covers IT"),
    ("TR", None, "HQ", ""),
    ("XX", None, "HQ", "XX"),
    ("fr", None, "HQ", "covers FR"),
    (None, None, "HQ", "country unknown; routed to headquarters"),
    ("", "MY-01", "HQ", "country unknown"),
]


@pytest.mark.parametrize(("country", "region", "post_id", "note"), ROUTES)
def test_route(country: str | None, region: str | None, post_id: str, note: str) -> None:
    decision = route(POLICY, country, region)
    assert isinstance(decision, RouteDecision)
    assert decision.post_id == post_id
    assert note in decision.note
    assert decision.note  # always says why


def test_tawau_gets_nothing_automatically() -> None:
    for region in ("MY-12", None):
        assert route(POLICY, "MY", region).post_id != "KJRI-TAWAU"


def test_every_region_routes_to_its_post() -> None:
    for post in POLICY.posts.values():
        for region in post.regions:
            assert route(POLICY, post.country, region).post_id == post.post_id


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [("MY", None, None), ("MY", " ", None), ("MY", "my-01", "MY-01"), ("MY", "01", "MY-01"),
     (None, "01", "01")],
)  # fmt: skip
def test_normalize_region(country: str | None, region: str | None, expected: str | None) -> None:
    assert normalize_region(country, region) == expected


def test_country_with_single_non_embassy_post_and_mission_without_labour_post() -> None:
    posts = {
        "HQ": Post("HQ", "HQ", None, "headquarters", "none", head_of_mission="HQ"),
        "KJRI-X": Post("KJRI-X", "KJRI X", "XA", "consulate", "none", protection_desk=True),
    }
    p = Policy(POLICY.dedup_window, POLICY.category_severity, posts, "HQ", POLICY.sla)
    d = route(p, "XA", "XA-1")
    assert d.post_id == "KJRI-X" and "protection desk" in d.note


LADDER = [
    ("KJRI-JOHOR-BAHRU", 0, "KJRI-JOHOR-BAHRU"),
    ("KJRI-JOHOR-BAHRU", 1, "KBRI-KUALA-LUMPUR"),
    ("KJRI-JOHOR-BAHRU", 2, "HQ"),
    ("KJRI-JEDDAH", 1, "KBRI-RIYADH"),
    ("KJRI-OSAKA", 1, "KBRI-TOKYO"),
    ("KJRI-TAWAU", 1, "KBRI-KUALA-LUMPUR"),
    ("KBRI-KUALA-LUMPUR", 1, "KBRI-KUALA-LUMPUR"),
    ("KBRI-KUALA-LUMPUR", 2, "HQ"),
    ("KDEI-TAIPEI", 1, "KDEI-TAIPEI"),
    ("KJRI-HONG-KONG", 1, "KJRI-HONG-KONG"),
    ("HQ", 0, "HQ"),
    ("HQ", 1, "HQ"),
    ("HQ", 2, "HQ"),
    ("GONE-POST", 0, "GONE-POST"),
    ("GONE-POST", 1, "HQ"),
    ("KBRI-SEOUL", 3, "HQ"),
]


@pytest.mark.parametrize(("post_id", "level", "expected"), LADDER)
def test_escalation_target(post_id: str, level: int, expected: str) -> None:
    assert escalation_target(POLICY, post_id, level) == expected


def test_escalation_target_negative_level() -> None:
    with pytest.raises(Unacceptable, match="escalation level"):
        escalation_target(POLICY, "HQ", -1)


def test_remembered_routes_are_the_computed_ones() -> None:
    from handlers import routing

    policy = POLICY
    inputs = [(None, None), ("", None), ("XX", None), ("XX", "YY-01")]
    for post in policy.posts.values():
        for region in (None, *post.regions):
            inputs += [(post.country, region), ((post.country or "").lower(), region)]
    for country, region in inputs * 2:  # the second round is answered from memory
        assert routing.route(policy, country, region) == routing._route(policy, country, region)
    other = load_policy()  # another object: decided afresh
    assert routing.route(other, "MY", "MY-01") == routing._route(other, "MY", "MY-01")
