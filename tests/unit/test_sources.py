"""Silent sources: the pure decision (every branch), the alerts it builds, the policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from errors import ConfigError
from handlers.policy import ExpectedSource, load_policy, policy_from_dict
from handlers.sources import RECOVERED, SILENT, SourceState, judge, watch
from schemas import topics
from schemas.types import validate_data

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
FEED = ExpectedSource("siskop2mi/embarkation", "Embarkation feed", 6 * H, "high")


def state(**kw: object) -> SourceState:
    return SourceState(source=FEED.source, watched_since=T0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("st", "now", "verdict"),
    [
        # never spoke: measured from when Garda started watching
        (state(), T0 + 6 * H, None),  # exactly the allowed silence: not yet
        (state(), T0 + 6 * H + timedelta(seconds=1), "silent"),
        # spoke: measured from the last time
        (state(last_seen_at=T0 + 2 * H), T0 + 7 * H, None),
        (state(last_seen_at=T0 + 2 * H), T0 + 8 * H + timedelta(seconds=1), "silent"),
        # already silent, nothing new: no second alert, however long it lasts
        (state(silent=True, silent_since=T0, episode=1), T0 + 100 * H, None),
        (
            state(last_seen_at=T0 + H, silent=True, silent_since=T0 + H, episode=1),
            T0 + 100 * H,
            None,
        ),
        # silent, then spoke after the silence began: recovered (even if handled late)
        (
            state(last_seen_at=T0 + 8 * H, silent=True, silent_since=T0 + H, episode=1),
            T0 + 9 * H,
            "recovered",
        ),
        (
            state(last_seen_at=T0 + 2 * H, silent=True, silent_since=T0 + H, episode=1),
            T0 + 50 * H,
            "recovered",
        ),
        # never spoke before the silence, then spoke
        (
            state(last_seen_at=T0 + 7 * H, silent=True, silent_since=T0, episode=1),
            T0 + 7 * H,
            "recovered",
        ),
        # silent without a recorded silent_since (defensive): measured from watched_since
        (state(last_seen_at=T0 + H, silent=True, episode=1), T0 + 2 * H, "recovered"),
        (state(last_seen_at=T0, silent=True, episode=1), T0 + 2 * H, None),
    ],
)
def test_judge(st: SourceState, now: datetime, verdict: str | None) -> None:
    assert judge(FEED, st, now) == verdict


def test_silent_then_recovered_then_silent_again() -> None:
    st = state(last_seen_at=T0)
    now = T0 + 7 * H
    st, alert = watch(FEED, st, now, "HQ")
    assert alert is not None and alert.type == SILENT and alert.topic == topics.ALERTS
    assert st == state(last_seen_at=T0, silent=True, silent_since=T0, episode=1)
    assert alert.key == alert.subject == FEED.source
    assert alert.data == {
        "alert": "source-silent",
        "source": FEED.source,
        "name": "Embarkation feed",
        "post_id": "HQ",
        "severity": "high",
        "episode": 1,
        "silent_since": "2026-12-01T00:00:00Z",
        "detected_at": "2026-12-01T07:00:00Z",
        "max_silence_seconds": 6 * 3600,
        "last_seen_at": "2026-12-01T00:00:00Z",
    }
    assert validate_data(SILENT, alert.data) == alert.data
    # Checked again: nothing more.
    assert watch(FEED, st, now + H, "HQ") == (st, None)
    # It speaks.
    st = replace(st, last_seen_at=T0 + 9 * H)
    st, back = watch(FEED, st, T0 + 9 * H, "HQ")
    assert back is not None and back.type == RECOVERED
    assert not st.silent and st.episode == 1
    assert back.data["silent_seconds"] == 9 * 3600
    assert back.data["recovered_at"] == "2026-12-01T09:00:00Z"
    assert validate_data(RECOVERED, back.data) == back.data
    assert watch(FEED, st, T0 + 10 * H, "HQ") == (st, None)
    # Silent again: a new episode, a new id.
    st2, again = watch(FEED, st, T0 + 16 * H, "HQ")
    assert again is not None and again.data["episode"] == 2 and again.id != alert.id
    assert st2.silent_since == T0 + 9 * H


def test_ids_are_deterministic_per_source_and_episode() -> None:
    a = watch(FEED, state(), T0 + 7 * H, "HQ")[1]
    b = watch(FEED, state(), T0 + 8 * H, "HQ")[1]
    other = replace(FEED, source="bpjs-ketenagakerjaan/claims")
    c = watch(other, replace(state(), source=other.source), T0 + 7 * H, "HQ")[1]
    assert a is not None and b is not None and c is not None
    assert a.id == b.id != c.id


def test_never_seen_source_alert_has_no_last_seen() -> None:
    _, alert = watch(FEED, state(), T0 + 7 * H, "HQ")
    assert alert is not None and "last_seen_at" not in alert.data
    assert alert.data["silent_since"] == "2026-12-01T00:00:00Z"
    validate_data(SILENT, alert.data)


def test_default_policy_lists_sources() -> None:
    policy = load_policy()
    names = {s.source for s in policy.sources}
    assert {"siskop2mi/embarkation", "bpjs-ketenagakerjaan/claims"} <= names
    assert all(s.max_silence >= H for s in policy.sources)


def _doc(sources: object) -> dict:
    import tomllib

    from handlers.policy import DEFAULT_POLICY_PATH

    doc = tomllib.loads(DEFAULT_POLICY_PATH.read_text())
    doc["sources"] = sources
    return doc


def test_policy_sources_parse() -> None:
    p = policy_from_dict(_doc([{"source": "a/b", "name": "A", "max_silence": "90s"}]))
    assert p.sources == (ExpectedSource("a/b", "A", timedelta(seconds=90), "high"),)
    assert policy_from_dict(_doc([])).sources == ()


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"source": "a"}, "expected [[sources]] tables"),
        ([{"source": "a/b", "name": "A"}], "missing required key(s) max_silence"),
        ([{"source": "a/b", "name": "A", "max_silence": "soon"}], "bad duration"),
        (
            [{"source": "a/b", "name": "A", "max_silence": "1h", "severity": "dire"}],
            "'dire' is not one of",
        ),
        (
            [{"source": "a/b", "name": "A", "max_silence": "1h", "every": "1h"}],
            "unknown key(s) every",
        ),
        (
            [
                {"source": "a/b", "name": "A", "max_silence": "1h"},
                {"source": "a/b", "name": "B", "max_silence": "2h"},
            ],
            "listed twice",
        ),
        ([{"source": "", "name": "A", "max_silence": "1h"}], "non-empty string"),
    ],
)
def test_policy_sources_errors(sources: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        policy_from_dict(_doc(sources))
    assert message in str(err.value)
