"""The policy file: the shipped default and the loader's strict validation."""

from __future__ import annotations

import copy
import re
import tomllib
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from errors import ConfigError
from handlers.model import SEVERITIES
from handlers.policy import (
    CATEGORIES,
    DEFAULT_POLICY_PATH,
    Coverage,
    load_policy,
    parse_duration,
    policy_from_dict,
)

DEFAULT_DOC: dict[str, Any] = tomllib.loads(DEFAULT_POLICY_PATH.read_text("utf-8"))
P = load_policy()


def doc() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_DOC)


def post(d: dict[str, Any], post_id: str) -> dict[str, Any]:
    return next(p for p in d["posts"] if p["post_id"] == post_id)


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("72h", timedelta(hours=72)),
        ("7d", timedelta(days=7)),
        ("730d", timedelta(days=730)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "1", "h", "1w", "1.5h", "-1h", "0s", "1 h", "1H", 5, None, 1.0]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="where"):
        parse_duration(bad, "where")


# --- the shipped default ---------------------------------------------------------------


def test_default_loads_with_none_and_path() -> None:
    assert load_policy(None) == load_policy(DEFAULT_POLICY_PATH)
    assert load_policy(str(DEFAULT_POLICY_PATH)).headquarters == "HQ"


def test_default_dedup_and_sla() -> None:
    assert P.dedup_window == timedelta(hours=72)
    h, d = timedelta(hours=1), timedelta(days=1)
    expected = {
        "critical": (1 * h, 4 * h, 3 * d),
        "high": (24 * h, 72 * h, 14 * d),
        "medium": (72 * h, 7 * d, 30 * d),
        "low": (7 * d, None, 60 * d),
    }
    for sev, (ack, level2, resolve) in expected.items():
        sla = P.sla[sev]
        assert (sla.ack, sla.level2, sla.resolve) == (ack, level2, resolve), sev


CATEGORY_DEFAULTS = {
    "death": "critical",
    "trafficking": "critical",
    "sexual_violence": "critical",
    "employer_violence": "critical",
    "detention": "critical",
    "lost_contact": "critical",
    "accident": "high",
    "illness": "high",
    "mental_health": "high",
    "unpaid_wages": "high",
    "document_withheld": "high",
    "job_fraud": "high",
    "deportation": "high",
    "wants_to_go_home": "medium",
    "failed_departure": "medium",
    "social_security": "medium",
    "contract_mismatch": "medium",
    "overstay": "medium",
    "other": "low",
}


def test_default_category_severity_covers_every_category() -> None:
    assert set(CATEGORY_DEFAULTS) == set(CATEGORIES)
    assert P.category_severity == CATEGORY_DEFAULTS


def test_default_posts() -> None:
    posts = P.posts
    assert posts["HQ"].mission_kind == "headquarters" and posts["HQ"].country is None
    countries = {p.country for p in posts.values()} - {None}
    assert countries == {"SA", "MY", "KW", "AE", "QA", "JO", "BN", "KR", "SG", "HK", "TW", "JP"}
    assert posts["KJRI-JEDDAH"].regions == ("SA-02", "SA-03", "SA-07", "SA-14", "SA-09")
    assert posts["KJRI-JOHOR-BAHRU"].regions == ("MY-01", "MY-04", "MY-05", "MY-06")
    assert posts["KJRI-PENANG"].regions == ("MY-07", "MY-02", "MY-09", "MY-08")
    assert posts["KJRI-KUCHING"].regions == ("MY-13",)
    assert posts["KJRI-KOTA-KINABALU"].regions == ("MY-12",)
    assert posts["KJRI-TAWAU"].regions == ()
    assert posts["KJRI-OSAKA"].regions == ("JP-27", "JP-26", "JP-28", "JP-29", "JP-30", "JP-25")
    assert posts["KDEI-TAIPEI"].mission_kind == "economic_office"
    assert posts["KJRI-HONG-KONG"].mission_kind == "consulate"
    for pid in ("KBRI-TOKYO", "KJRI-OSAKA"):
        assert posts[pid].labour_post == "none" and posts[pid].protection_desk
    # consulates answer to their country's embassy; embassies to themselves
    for p in posts.values():
        if p.mission_kind == "consulate" and p.country in ("SA", "MY", "JP"):
            embassy = next(
                q for q in posts.values() if q.country == p.country and q.mission_kind == "embassy"
            )
            assert p.head_of_mission == embassy.post_id, p.post_id
        elif p.mission_kind == "embassy":
            assert p.head_of_mission == p.post_id
    regions = [r for p in posts.values() for r in p.regions]
    assert len(regions) == len(set(regions))


def test_default_non_procedural_coverage_claims() -> None:
    np = P.non_procedural
    assert np.revoked_licenses == frozenset()
    assert np.critical_reasons == {"moratorium_destination", "non_work_visa"}
    assert np.licensed_schemes == {"p2p"}
    by_country = {m.country: m for m in np.moratoria}
    assert set(by_country) == {
        "SA", "AE", "QA", "KW", "BH", "OM", "JO", "LB", "IQ", "EG", "SY", "YE", "LY",
    }  # fmt: skip
    assert all(m.effective_from == date(2015, 5, 26) for m in np.moratoria)
    assert all(m.employer_types == ("household",) for m in np.moratoria)
    assert by_country["SA"].effective_until == date(2025, 3, 14)
    assert all(m.effective_until is None for c, m in by_country.items() if c != "SA")
    cov = P.coverage
    assert (cov.pre_placement, cov.post_placement, cov.default_contract) == (
        timedelta(days=150),
        timedelta(days=30),
        timedelta(days=730),
    )
    assert cov.gap_categories == {
        "accident", "death", "employer_violence", "sexual_violence", "illness",
    }  # fmt: skip
    assert P.claims.stall == timedelta(days=14)


def test_optional_sections_default() -> None:
    d = doc()
    for key in ("non_procedural", "coverage", "claims"):
        del d[key]
    p = policy_from_dict(d)
    assert p.claims.stall == timedelta(days=14)
    assert p.coverage.gap_categories == Coverage().gap_categories  # the default list
    assert p.non_procedural.moratoria == ()


def test_short_durations_for_tests() -> None:
    d = doc()
    d["sla"]["critical"] = {"ack": "2s", "level2": "5s", "resolve": "30s"}
    d["dedup"]["window"] = "10s"
    p = policy_from_dict(d)
    assert p.sla["critical"].ack == timedelta(seconds=2)
    assert p.dedup_window == timedelta(seconds=10)


# --- validation: each mutation must fail with a precise message -------------------------


def _unknown_top(d: dict[str, Any]) -> None:
    d["dedupe"] = {"window": "1h"}


def _unknown_post_key(d: dict[str, Any]) -> None:
    post(d, "KBRI-SEOUL")["region"] = ["KR-11"]


def _bad_window(d: dict[str, Any]) -> None:
    d["dedup"]["window"] = "3 days"


def _bad_sla(d: dict[str, Any]) -> None:
    d["sla"]["high"]["ack"] = "24"


def _missing_sla(d: dict[str, Any]) -> None:
    del d["sla"]["medium"]


def _missing_sla_key(d: dict[str, Any]) -> None:
    del d["sla"]["high"]["resolve"]


def _unknown_sla(d: dict[str, Any]) -> None:
    d["sla"]["urgent"] = {"ack": "1h", "resolve": "1d"}


def _level2_before_ack(d: dict[str, Any]) -> None:
    d["sla"]["high"]["level2"] = "1h"


def _unknown_severity(d: dict[str, Any]) -> None:
    d["severity"]["urgent"] = ["other"]


def _unknown_category(d: dict[str, Any]) -> None:
    d["severity"]["high"].append("kidnapping")


def _category_twice(d: dict[str, Any]) -> None:
    d["severity"]["low"].append("death")


def _category_missing(d: dict[str, Any]) -> None:
    d["severity"]["medium"].remove("overstay")


def _region_twice(d: dict[str, Any]) -> None:
    post(d, "KJRI-TAWAU")["regions"] = ["MY-12"]


def _hom_not_post(d: dict[str, Any]) -> None:
    post(d, "KJRI-OSAKA")["head_of_mission"] = "KBRI-KYOTO"


def _hom_other_country(d: dict[str, Any]) -> None:
    post(d, "KJRI-OSAKA")["head_of_mission"] = "KBRI-SEOUL"


def _hq_not_post(d: dict[str, Any]) -> None:
    d["headquarters"] = "HQ2"


def _hq_not_headquarters(d: dict[str, Any]) -> None:
    d["headquarters"] = "KBRI-SEOUL"


def _post_twice(d: dict[str, Any]) -> None:
    d["posts"].append(dict(post(d, "KBRI-SEOUL")))


def _bad_mission_kind(d: dict[str, Any]) -> None:
    post(d, "KBRI-SEOUL")["mission_kind"] = "ambassade"


def _bad_labour_post(d: dict[str, Any]) -> None:
    post(d, "KBRI-SEOUL")["labour_post"] = "attaché"


def _bad_country(d: dict[str, Any]) -> None:
    post(d, "KBRI-SEOUL")["country"] = "KOR"


def _region_other_country(d: dict[str, Any]) -> None:
    post(d, "KBRI-SEOUL")["regions"] = ["JP-13"]


def _hq_with_country(d: dict[str, Any]) -> None:
    post(d, "HQ")["country"] = "ID"


def _two_embassies(d: dict[str, Any]) -> None:
    post(d, "KJRI-OSAKA")["mission_kind"] = "embassy"


def _several_posts_no_embassy(d: dict[str, Any]) -> None:
    d["posts"].append({**post(d, "KJRI-HONG-KONG"), "post_id": "KJRI-HK2", "regions": ["HK-01"]})
    post(d, "KJRI-HK2")["head_of_mission"] = "KJRI-HK2"


def _desk_not_bool(d: dict[str, Any]) -> None:
    post(d, "KBRI-TOKYO")["protection_desk"] = "yes"


def _missing_post_key(d: dict[str, Any]) -> None:
    del post(d, "KBRI-SEOUL")["name"]


def _bad_moratorium_date(d: dict[str, Any]) -> None:
    d["non_procedural"]["moratorium"][0]["effective_from"] = "26/05/2015"


def _moratorium_until_before(d: dict[str, Any]) -> None:
    d["non_procedural"]["moratorium"][0]["effective_until"] = date(2010, 1, 1)


def _moratorium_employer(d: dict[str, Any]) -> None:
    d["non_procedural"]["moratorium"][0]["employer_types"] = ["family"]


def _moratorium_unknown_key(d: dict[str, Any]) -> None:
    d["non_procedural"]["moratorium"][0]["until"] = date(2030, 1, 1)


def _bad_reason(d: dict[str, Any]) -> None:
    d["non_procedural"]["critical_reasons"] = ["smuggling"]


def _bad_scheme(d: dict[str, Any]) -> None:
    d["non_procedural"]["licensed_schemes"] = ["p3p"]


def _bad_gap_category(d: dict[str, Any]) -> None:
    d["coverage"]["gap_categories"] = ["accident", "flood"]


def _bad_coverage_duration(d: dict[str, Any]) -> None:
    d["coverage"]["post_placement"] = 30


def _bad_stall(d: dict[str, Any]) -> None:
    d["claims"]["stall"] = "two weeks"


def _unknown_claims_key(d: dict[str, Any]) -> None:
    d["claims"]["expiry"] = "5d"


def _no_posts(d: dict[str, Any]) -> None:
    d["posts"] = []


MUTATIONS = [
    (_unknown_top, r"policy: unknown key\(s\) dedupe"),
    (_unknown_post_key, r"KBRI-SEOUL.*unknown key\(s\) region"),
    (_bad_window, "dedup.window: bad duration '3 days'"),
    (_bad_sla, "sla.high.ack: bad duration '24'"),
    (_missing_sla, "sla: missing required key.*medium"),
    (_missing_sla_key, "sla.high: missing required key.*resolve"),
    (_unknown_sla, "sla: unknown key.*urgent"),
    (_level2_before_ack, "sla.high.level2: must be later than ack"),
    (_unknown_severity, "severity: unknown key.*urgent"),
    (_unknown_category, "severity.high: unknown category 'kidnapping'"),
    (_category_twice, "category 'death' is assigned to both low and critical"),
    (_category_missing, "categories without a severity: overstay"),
    (_region_twice, "KJRI-TAWAU.*region MY-12 is already covered by KJRI-KOTA-KINABALU"),
    (_hom_not_post, "KJRI-OSAKA.*head_of_mission: 'KBRI-KYOTO' is not a post_id"),
    (_hom_other_country, "KJRI-OSAKA.*head_of_mission: KBRI-SEOUL is in another country"),
    (_hq_not_post, "headquarters: 'HQ2' is not a post_id"),
    (_hq_not_headquarters, "headquarters: post 'KBRI-SEOUL' must have mission_kind"),
    (_post_twice, "KBRI-SEOUL.*post_id listed twice"),
    (_bad_mission_kind, "mission_kind: 'ambassade' is not one of"),
    (_bad_labour_post, "labour_post: 'attaché' is not one of"),
    (_bad_country, "KBRI-SEOUL.*country: expected an ISO 3166-1 alpha-2 code"),
    (_region_other_country, "'JP-13' is not an ISO 3166-2 code of KR"),
    (_hq_with_country, "headquarters has no country"),
    (_two_embassies, "country JP has more than one embassy"),
    (_several_posts_no_embassy, "country HK has several posts"),
    (_desk_not_bool, "protection_desk: expected true or false"),
    (_missing_post_key, r"KBRI-SEOUL.*missing required key\(s\) name"),
    (_bad_moratorium_date, r"moratorium\[0\].effective_from: expected a date"),
    (_moratorium_until_before, "effective_until: must be after effective_from"),
    (_moratorium_employer, "employer_types.*'family' is not one of"),
    (_moratorium_unknown_key, "unknown key.*until"),
    (_bad_reason, "critical_reasons.*'smuggling' is not one of"),
    (_bad_scheme, "licensed_schemes.*'p3p' is not one of"),
    (_bad_gap_category, "gap_categories.*'flood' is not one of"),
    (_bad_coverage_duration, "coverage.post_placement: expected a duration string"),
    (_bad_stall, "claims.stall: bad duration"),
    (_unknown_claims_key, "claims: unknown key.*expiry"),
    (_no_posts, "posts: expected one or more"),
]


@pytest.mark.parametrize(("mutate", "message"), MUTATIONS, ids=[m.__name__ for m, _ in MUTATIONS])
def test_invalid_policy(mutate: Any, message: str) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(d)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load_policy(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[dedup\nwindow = 1", "utf-8")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_policy(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        DEFAULT_POLICY_PATH.read_text("utf-8").replace('window = "72h"', 'window = "72x"')
    )
    with pytest.raises(ConfigError, match=r"bad.toml: dedup.window: bad duration '72x'"):
        load_policy(bad)


def test_every_severity_has_sla() -> None:
    assert set(P.sla) == set(SEVERITIES)


# --- retention ---------------------------------------------------------------------------


def test_default_retention() -> None:
    r = P.retention
    assert r.outbox == timedelta(days=7)
    assert r.deadletters == timedelta(days=90)
    assert r.audit_log == timedelta(days=365)
    assert r.processed_events == timedelta(days=30)
    assert r.interval == timedelta(hours=1)
    assert r.batch == 5000


def test_retention_section_is_optional() -> None:
    d = doc()
    del d["retention"]
    assert policy_from_dict(d).retention == P.retention


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("processed_events", "6d", "shorter than the 7d minimum"),
        ("processed_events", "48h", "must outlive any redelivery"),
        ("outbox", "7 days", "retention.outbox: bad duration"),
        ("batch", 0, "retention.batch: expected an integer from 1 to 100000"),
        ("batch", True, "retention.batch"),
        ("audit", "1d", "retention: unknown key(s) audit"),
    ],
)
def test_retention_is_validated(key: str, value: object, message: str) -> None:
    d = doc()
    d["retention"][key] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        policy_from_dict(d)


# --- the loader's shape (handlers.policy_shape) --------------------------------------------


@pytest.mark.parametrize("top", [[], ["dedup"], "dedup", 5])
def test_a_document_that_is_not_a_table_is_refused(top: object) -> None:
    with pytest.raises(
        ConfigError, match=re.escape(f"policy: expected a table, got {type(top).__name__}")
    ):
        policy_from_dict(top)  # type: ignore[arg-type]


def test_every_unknown_key_of_a_table_is_named_with_the_allowed_ones() -> None:
    d = doc()
    d["claims"].update(zz="1d", aa="1d")
    with pytest.raises(ConfigError) as err:
        policy_from_dict(d)
    assert str(err.value) == "claims: unknown key(s) aa, zz (allowed: stall)"


def test_the_top_level_allows_every_prevention_section() -> None:
    from handlers.policy import _Document
    from handlers.prevention_policy import SECTIONS

    assert set(SECTIONS) <= set(_Document.model_fields)


def test_a_wrong_value_in_a_list_of_tables_names_its_place() -> None:
    d = doc()
    d["non_procedural"]["moratorium"][0]["employer_types"] = ["household", 5]
    with pytest.raises(ConfigError) as err:
        policy_from_dict(d)
    assert str(err.value) == (
        "non_procedural.moratorium[0].employer_types[1]: expected a non-empty string, got 5"
    )
