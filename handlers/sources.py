"""Silent sources (heartbeats): is an expected producer silent, or speaking again? Pure.

``judge`` is the decision; ``watch`` applies it to a source's state and builds the alert.
The caller keeps ``SourceState`` in the database and applies ``watch`` under a lock, so
each transition (and so each alert) happens once, whichever worker and however many
restarts.

Rules decided where the design is silent:
- A source is silent when the time since it last spoke (or, if it never spoke, since Garda
  started watching it) is *longer* than ``max_silence``; exactly ``max_silence`` is not yet.
- A silent source has recovered when it spoke *after* the moment its silence was measured
  from (``silent_since``): an event published during the silence and handled late (a
  backlog) counts as speaking, since it was published.
- One silent alert per silence (an episode); the recovered alert carries the same episode,
  and both ids derive from (source, episode), so a repeat of a transition re-derives the same
  id and the outbox dedups it.
- Silence alerts go to headquarters (``post_id``), with the source's policy severity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from handlers.model import OutputEvent, iso, stable_id
from handlers.policy import ExpectedSource
from schemas import topics

SILENT = "garda.alert.source-silent"
RECOVERED = "garda.alert.source-recovered"

Verdict = Literal["silent", "recovered"] | None


@dataclass(frozen=True)
class SourceState:
    source: str
    watched_since: datetime  # when Garda started expecting it
    last_seen_at: datetime | None = None  # when it last spoke (None: never)
    silent: bool = False  # a silent alert is open
    silent_since: datetime | None = None  # the time the open silence is measured from
    episode: int = 0  # silences so far


def judge(expected: ExpectedSource, state: SourceState, now: datetime) -> Verdict:
    """``"silent"``, ``"recovered"`` or ``None`` (nothing to say)."""
    if state.silent:
        since = state.silent_since or state.watched_since
        if state.last_seen_at is not None and state.last_seen_at > since:
            return "recovered"
        return None
    since = state.last_seen_at or state.watched_since
    if now - since > expected.max_silence:
        return "silent"
    return None


def watch(
    expected: ExpectedSource, state: SourceState, now: datetime, headquarters: str
) -> tuple[SourceState, OutputEvent | None]:
    """The source's next state and the alert its transition raises (``None``: no change)."""
    verdict = judge(expected, state, now)
    if verdict == "silent":
        since = state.last_seen_at or state.watched_since
        new = replace(state, silent=True, silent_since=since, episode=state.episode + 1)
        data = _base(expected, new, headquarters, "source-silent")
        data["silent_since"] = iso(since)
        data["detected_at"] = iso(now)
        data["max_silence_seconds"] = int(expected.max_silence.total_seconds())
        if state.last_seen_at is not None:
            data["last_seen_at"] = iso(state.last_seen_at)
        return new, _event(SILENT, new, data)
    if verdict == "recovered":
        assert state.last_seen_at is not None and state.silent_since is not None
        new = replace(state, silent=False)
        data = _base(expected, new, headquarters, "source-recovered")
        data["silent_since"] = iso(state.silent_since)
        data["recovered_at"] = iso(state.last_seen_at)
        data["silent_seconds"] = int((state.last_seen_at - state.silent_since).total_seconds())
        return new, _event(RECOVERED, new, data)
    return state, None


def _base(
    expected: ExpectedSource, state: SourceState, headquarters: str, alert: str
) -> dict[str, object]:
    return {
        "alert": alert,
        "source": expected.source,
        "name": expected.name,
        "post_id": headquarters,
        "severity": expected.severity,
        "episode": state.episode,
    }


def _event(type_: str, state: SourceState, data: dict[str, object]) -> OutputEvent:
    return OutputEvent(
        topic=topics.ALERTS,
        type=type_,
        key=state.source,
        data=data,
        id=stable_id(type_, state.source, str(state.episode), prefix="source-"),
        subject=state.source,
    )
