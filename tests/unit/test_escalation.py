"""The escalation ladder: deadline arithmetic, the timer's due commands, the deadline handler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from errors import NotFound, Rejected, Unacceptable
from handlers import escalation
from handlers.cases import deadlines
from handlers.context import Ctx
from handlers.escalation import (
    DEADLINE_HANDLERS,
    clock_start,
    due_commands,
    handle_deadline_due,
    next_deadline,
)
from handlers.model import Aggregate, Case, Worker, iso
from handlers.policy import Policy, Sla, load_policy
from handlers.routing import escalation_target
from schemas.envelope import Envelope
from tests.unit.factories import fast_policy

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
S = timedelta(seconds=1)
H = timedelta(hours=1)
D = timedelta(days=1)
WORKER = "PMI-2024-000123"

DEFAULT = load_policy()


FAST = fast_policy()
POLICIES = {"default": DEFAULT, "fast": FAST}


def post_of(policy: Policy) -> str:
    """A consulate whose head of mission is another post (so level 1 != level 0)."""
    if policy is FAST:
        return "CON"
    return "KJRI-JOHOR-BAHRU"


def make_case(
    policy: Policy,
    severity: str = "critical",
    *,
    status: str = "open",
    level: int = 0,
    opened_at: datetime = T0,
    case_id: str = "case-1",
) -> Case:
    ack_due, resolve_due = deadlines(policy, severity, opened_at)
    case = Case(
        case_id=case_id,
        worker_id=WORKER,
        kind="protection",
        category="accident",
        severity=severity,
        post_id=post_of(policy),
        opened_at=opened_at,
        status=status,
        escalation_level=level,
        ack_due=ack_due,
        resolve_due=resolve_due,
    )
    if status == "acknowledged":
        case.acknowledged_at = opened_at
    if status == "resolved":
        case.resolved_at = opened_at
    return case


def agg_of(*cases: Case) -> Aggregate:
    return Aggregate(worker=Worker(WORKER), cases={c.case_id: c for c in cases}, exists=True)


_seq = iter(range(1_000_000))


def command_ctx(policy: Policy, data: dict, now: datetime) -> Ctx:
    env = Envelope(
        id=f"cmd-{next(_seq)}",
        source="garda/timer",
        type="garda.deadline.due",
        subject=data.get("worker_id", WORKER),
        data=data,
        time=now,
    )
    return Ctx(envelope=env, policy=policy, now=now)


def command(case: Case, deadline: str, level: int, due_at: datetime | None = None) -> dict:
    return {
        "case_id": case.case_id,
        "worker_id": case.worker_id,
        "due_at": iso(due_at or T0),
        "deadline": deadline,
        "level": level,
    }


def apply(agg: Aggregate, policy: Policy, data: dict, now: datetime) -> Ctx:
    ctx = command_ctx(policy, data, now)
    handle_deadline_due(agg, ctx)
    return ctx


def run_timer(
    agg: Aggregate, policy: Policy, until: datetime, tick: timedelta | None = None
) -> list[tuple[timedelta, str, int]]:
    """Drive the timer: jump to each next deadline, send its commands, apply them.

    Returns (offset from T0 of the processor's clock, clock, level) per escalation.
    """
    fired: list[tuple[timedelta, str, int]] = []
    now = T0
    for _ in range(20):
        nexts = [n for c in agg.cases.values() if (n := next_deadline(c, policy)) is not None]
        if not nexts:
            break
        now = max(now, min(n[0] for n in nexts)) + (tick or timedelta(0))
        if now > until:
            break
        for data in due_commands(agg.cases.values(), policy, now):
            ctx = apply(agg, policy, data, now)
            assert ctx.outcome == "escalated", data
            fired.append((now - T0, data["deadline"], data["level"]))
    return fired


# --- deadline arithmetic -------------------------------------------------------------------

DESIGN_LADDER = {  # design §5 defaults: (ack -> level 1, level2 -> level 2 or None)
    "critical": (1 * H, 4 * H),
    "high": (24 * H, 72 * H),
    "medium": (72 * H, 7 * D),
    "low": (7 * D, None),
}


@pytest.mark.parametrize("severity", list(DESIGN_LADDER))
def test_default_policy_matches_design_ladder(severity: str) -> None:
    ack, level2 = DESIGN_LADDER[severity]
    sla = DEFAULT.sla[severity]
    assert (sla.ack, sla.level2) == (ack, level2)
    assert sla.resolve > sla.ack


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("severity", list(DESIGN_LADDER))
def test_deadlines_from_opened_at(policy_name: str, severity: str) -> None:
    policy = POLICIES[policy_name]
    sla = policy.sla[severity]
    case = make_case(policy, severity)
    assert case.ack_due == T0 + sla.ack
    assert case.resolve_due == T0 + sla.resolve
    assert clock_start(case) == T0
    expected_l2 = T0 + sla.level2 if sla.level2 else None
    assert escalation.level2_due(case, policy) == expected_l2


def expected_unacked_ladder(policy: Policy, severity: str) -> list[tuple[timedelta, str, int]]:
    sla = policy.sla[severity]
    if sla.level2 is not None:
        return [(sla.ack, "ack", 1), (sla.level2, "ack", 2)]
    # no level 2 on the ack clock: the resolve deadline brings it to 2
    return [(sla.ack, "ack", 1), (sla.resolve, "resolve", 2)]


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("severity", list(DESIGN_LADDER))
def test_unacknowledged_ladder(policy_name: str, severity: str) -> None:
    policy = POLICIES[policy_name]
    case = make_case(policy, severity)
    agg = agg_of(case)
    fired = run_timer(agg, policy, until=T0 + 365 * D)
    assert fired == expected_unacked_ladder(policy, severity)
    assert case.escalation_level == 2
    assert next_deadline(case, policy) is None
    assert case.post_id == post_of(policy)  # the assigned post never changes
    assert case.escalated_to == policy.headquarters


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("severity", list(DESIGN_LADDER))
def test_acknowledged_at_once_only_resolve_fires(policy_name: str, severity: str) -> None:
    policy = POLICIES[policy_name]
    case = make_case(policy, severity, status="acknowledged")
    fired = run_timer(agg_of(case), policy, until=T0 + 365 * D)
    assert fired == [(policy.sla[severity].resolve, "resolve", 1)]
    assert case.escalation_level == 1
    assert next_deadline(case, policy) is None  # the resolve clock fires once per resolve_due


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize("severity", list(DESIGN_LADDER))
def test_timer_late_by_a_tick_still_fires_each_level_once(policy_name: str, severity: str) -> None:
    policy = POLICIES[policy_name]
    case = make_case(policy, severity)
    fired = run_timer(agg_of(case), policy, until=T0 + 365 * D, tick=5 * S)
    assert [(c, lvl) for _, c, lvl in fired] == [
        (c, lvl) for _, c, lvl in expected_unacked_ladder(policy, severity)
    ]


def test_processor_down_past_every_deadline_catches_up_in_order() -> None:
    case = make_case(FAST, "critical")
    agg = agg_of(case)
    now = T0 + 10_000 * S  # ack, level2 and resolve all missed
    seen = []
    for _ in range(5):
        cmds = due_commands([case], FAST, now)
        if not cmds:
            break
        assert len(cmds) == 1  # one command per case per tick
        seen.append((cmds[0]["deadline"], cmds[0]["level"], cmds[0]["due_at"]))
        assert apply(agg, FAST, cmds[0], now).outcome == "escalated"
    assert seen == [("ack", 1, iso(T0 + 10 * S)), ("ack", 2, iso(T0 + 40 * S))]
    assert case.escalation_level == 2


# --- next_deadline table --------------------------------------------------------------------

# (severity, status, level, resolve marker set) -> expected (offset, clock, level) or None
NEXT_TABLE = [
    ("critical", "open", 0, False, (10 * S, "ack", 1)),
    ("critical", "open", 1, False, (40 * S, "ack", 2)),
    ("critical", "open", 2, False, None),
    ("critical", "reopened", 0, False, (10 * S, "ack", 1)),
    ("critical", "acknowledged", 0, False, (300 * S, "resolve", 1)),
    ("critical", "acknowledged", 1, False, (300 * S, "resolve", 2)),
    ("critical", "acknowledged", 1, True, None),
    ("critical", "acknowledged", 2, False, None),
    ("critical", "resolved", 0, False, None),
    ("critical", "resolved", 1, False, None),
    ("low", "open", 0, False, (70 * S, "ack", 1)),
    ("low", "open", 1, False, (1200 * S, "resolve", 2)),
    ("low", "open", 1, True, None),
    ("low", "acknowledged", 0, False, (1200 * S, "resolve", 1)),
    ("high", "open", 1, True, (60 * S, "ack", 2)),
]


@pytest.mark.parametrize(("severity", "status", "level", "marker", "expected"), NEXT_TABLE)
def test_next_deadline_table(
    severity: str, status: str, level: int, marker: bool, expected: tuple | None
) -> None:
    case = make_case(FAST, severity, status=status, level=level)
    if marker:
        case.resolve_deadline_missed = case.resolve_due
    nd = next_deadline(case, FAST)
    if expected is None:
        assert nd is None
    else:
        offset, clock, lvl = expected
        assert nd == (T0 + offset, clock, lvl)


def test_never_above_level_two() -> None:
    case = make_case(FAST, "critical", status="acknowledged", level=2)
    assert next_deadline(case, FAST) is None
    assert due_commands([case], FAST, T0 + 365 * D) == []
    for deadline in ("ack", "resolve"):
        ctx = apply(agg_of(case), FAST, command(case, deadline, 2), T0 + 365 * D)
        assert ctx.outcome == "stale-deadline"
    with pytest.raises(Rejected) as exc:
        apply(agg_of(case), FAST, command(case, "resolve", 3), T0 + 365 * D)
    assert isinstance(exc.value, Unacceptable)
    assert case.escalation_level == 2


def test_tie_between_clocks_fires_ack_first() -> None:
    policy = Policy(
        dedup_window=FAST.dedup_window,
        category_severity=FAST.category_severity,
        posts=FAST.posts,
        headquarters="HQ",
        sla={sev: Sla(ack=10 * S, level2=None, resolve=10 * S) for sev in DESIGN_LADDER},
    )
    case = make_case(policy, "critical")
    assert next_deadline(case, policy) == (T0 + 10 * S, "ack", 1)
    fired = run_timer(agg_of(case), policy, until=T0 + D)
    # both were missed: each one is a step of its own
    assert fired == [(10 * S, "ack", 1), (10 * S, "resolve", 2)]


def test_resolve_earlier_than_ack_skips_reached_level() -> None:
    policy = Policy(
        dedup_window=FAST.dedup_window,
        category_severity=FAST.category_severity,
        posts=FAST.posts,
        headquarters="HQ",
        sla={sev: Sla(ack=50 * S, level2=90 * S, resolve=20 * S) for sev in DESIGN_LADDER},
    )
    case = make_case(policy, "high")
    fired = run_timer(agg_of(case), policy, until=T0 + D)
    assert fired == [(20 * S, "resolve", 1), (90 * S, "ack", 2)]


# --- ack / resolve / reopen ------------------------------------------------------------------


def test_ack_stops_ack_clock_but_resolve_still_fires() -> None:
    case = make_case(FAST, "critical")
    agg = agg_of(case)
    assert run_timer(agg, FAST, until=T0 + 15 * S) == [(10 * S, "ack", 1)]
    case.status, case.acknowledged_at = "acknowledged", T0 + 20 * S
    assert next_deadline(case, FAST) == (T0 + 300 * S, "resolve", 2)
    # a level-2 ack command sent before the acknowledgement is now stale
    ctx = apply(agg, FAST, command(case, "ack", 2, T0 + 40 * S), T0 + 41 * S)
    assert ctx.outcome == "stale-deadline"
    assert ctx.effects.events == [] and ctx.effects.timeline == []
    assert case.escalation_level == 1
    ctx = apply(agg, FAST, command(case, "resolve", 2, T0 + 300 * S), T0 + 301 * S)
    assert ctx.outcome == "escalated"
    assert case.escalation_level == 2


def test_resolve_stops_all_clocks() -> None:
    case = make_case(FAST, "critical", level=1)
    case.status, case.resolved_at = "resolved", T0 + 5 * S
    assert next_deadline(case, FAST) is None
    assert due_commands([case], FAST, T0 + 365 * D) == []
    for deadline, level in (("ack", 2), ("resolve", 2)):
        ctx = apply(agg_of(case), FAST, command(case, deadline, level), T0 + 365 * D)
        assert ctx.outcome == "stale-deadline"
        assert ctx.effects.events == []
    assert case.escalation_level == 1


def reopen(case: Case, policy: Policy, at: datetime) -> None:
    """What handlers.actions does on pmi.case.reopened (clocks restart at ``at``)."""
    case.status = "reopened"
    case.ack_due, case.resolve_due = deadlines(policy, case.severity, at)
    case.clock_started_at = at
    case.resolved_at = case.acknowledged_at = None


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, [(1010 * S, "ack", 1), (1040 * S, "ack", 2)]),
        (1, [(1040 * S, "ack", 2)]),  # the level is kept; level 1 never fires twice
        (2, []),
    ],
)
def test_reopen_restarts_clocks_from_reopen_time(level: int, expected: list) -> None:
    case = make_case(FAST, "critical", status="resolved", level=level)
    case.resolve_deadline_missed = case.resolve_due
    reopen(case, FAST, T0 + 1000 * S)
    assert case.opened_at == T0
    assert clock_start(case) == T0 + 1000 * S
    assert escalation.level2_due(case, FAST) == T0 + 1040 * S
    assert run_timer(agg_of(case), FAST, until=T0 + 1299 * S) == expected


def test_reopen_rearms_resolve_clock() -> None:
    case = make_case(FAST, "low", status="acknowledged")
    agg = agg_of(case)
    assert run_timer(agg, FAST, until=T0 + D) == [(1200 * S, "resolve", 1)]
    case.status, case.resolved_at = "resolved", T0 + 1300 * S
    reopen(case, FAST, T0 + 2000 * S)
    case.status, case.acknowledged_at = "acknowledged", T0 + 2001 * S
    assert next_deadline(case, FAST) == (T0 + 3200 * S, "resolve", 2)


def test_clock_start_survives_the_database_round_trip() -> None:
    case = make_case(FAST, "critical", status="resolved", level=1)
    reopen(case, FAST, T0 + 1000 * S)
    back = Case.from_doc(case.to_doc())
    assert clock_start(back) == T0 + 1000 * S
    assert next_deadline(back, FAST) == next_deadline(case, FAST)


# --- stale and duplicate commands ----------------------------------------------------------


def test_duplicate_command_is_a_no_op() -> None:
    case = make_case(FAST, "critical")
    agg = agg_of(case)
    data = due_commands([case], FAST, T0 + 10 * S)[0]
    first = apply(agg, FAST, data, T0 + 10 * S)
    assert first.outcome == "escalated"
    again = apply(agg, FAST, data, T0 + 11 * S)
    assert again.outcome == "stale-deadline"
    assert again.effects.events == [] and again.effects.timeline == []
    assert case.escalation_level == 1


def test_duplicate_resolve_command_is_a_no_op() -> None:
    case = make_case(FAST, "high", status="acknowledged")
    agg = agg_of(case)
    data = due_commands([case], FAST, T0 + 600 * S)[0]
    assert data["deadline"] == "resolve" and data["level"] == 1
    assert apply(agg, FAST, data, T0 + 600 * S).outcome == "escalated"
    assert apply(agg, FAST, data, T0 + 601 * S).outcome == "stale-deadline"
    # the same resolve_due, asked for one level more: still only once per resolve deadline
    assert apply(agg, FAST, {**data, "level": 2}, T0 + 602 * S).outcome == "stale-deadline"
    assert case.escalation_level == 1


STALE = [
    # (status, level, command deadline, command level, now offset, why)
    ("open", 0, "ack", 1, 9 * S, "early: not due yet"),
    ("open", 0, "ack", 2, 20 * S, "level 2 not due yet"),
    ("open", 1, "ack", 1, 50 * S, "level already reached"),
    ("open", 2, "ack", 2, 50 * S, "level already reached"),
    ("acknowledged", 0, "ack", 1, 50 * S, "acknowledged"),
    ("acknowledged", 0, "ack", 2, 50 * S, "acknowledged"),
    ("resolved", 0, "ack", 1, 50 * S, "resolved"),
    ("resolved", 0, "resolve", 1, 500 * S, "resolved"),
    ("acknowledged", 0, "resolve", 1, 299 * S, "resolve not due yet"),
    ("acknowledged", 0, "resolve", 2, 500 * S, "resolve goes one level up only"),
    ("acknowledged", 1, "resolve", 1, 500 * S, "level already reached"),
]


@pytest.mark.parametrize(("status", "level", "deadline", "cmd_level", "offset", "why"), STALE)
def test_stale_commands_are_no_ops(
    status: str, level: int, deadline: str, cmd_level: int, offset: timedelta, why: str
) -> None:
    case = make_case(FAST, "critical", status=status, level=level)
    before = case.to_doc()
    ctx = apply(agg_of(case), FAST, command(case, deadline, cmd_level), T0 + offset)
    assert ctx.outcome == "stale-deadline", why
    assert ctx.effects.events == [] and ctx.effects.timeline == []
    assert case.to_doc() == before


def test_low_severity_has_no_ack_level_two() -> None:
    case = make_case(FAST, "low", level=1)
    ctx = apply(agg_of(case), FAST, command(case, "ack", 2), T0 + 1000 * S)
    assert ctx.outcome == "stale-deadline"


def test_deadline_moved_into_the_future_is_stale() -> None:
    case = make_case(FAST, "critical")
    agg = agg_of(case)
    data = due_commands([case], FAST, T0 + 10 * S)[0]
    case.ack_due = T0 + 100 * S  # e.g. reopened / recomputed meanwhile
    assert apply(agg, FAST, data, T0 + 11 * S).outcome == "stale-deadline"
    assert case.escalation_level == 0
    assert apply(agg, FAST, data, T0 + 100 * S).outcome == "escalated"
    assert case.escalated_to and case.escalation_level == 1


def test_unknown_case_is_rejected_404() -> None:
    case = make_case(FAST, "critical")
    with pytest.raises(Rejected) as exc:
        apply(agg_of(), FAST, command(case, "ack", 1), T0 + 11 * S)
    assert isinstance(exc.value, NotFound)


@pytest.mark.parametrize(("deadline", "level"), [("late", 1), ("ack", "1"), ("ack", None)])
def test_malformed_command_rejected(deadline: str, level: object) -> None:
    case = make_case(FAST, "critical")
    data = {**command(case, "ack", 1), "deadline": deadline, "level": level}
    with pytest.raises(Rejected) as exc:
        apply(agg_of(case), FAST, data, T0 + 11 * S)
    assert isinstance(exc.value, Unacceptable)


# --- what an escalation records -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "level", "deadline", "cmd_level", "due", "reason"),
    [
        ("open", 0, "ack", 1, 10 * S, "not acknowledged in time"),
        ("open", 1, "ack", 2, 40 * S, "not acknowledged in time"),
        ("acknowledged", 0, "resolve", 1, 300 * S, "not resolved in time"),
        ("acknowledged", 1, "resolve", 2, 300 * S, "not resolved in time"),
    ],
)
def test_escalation_effects(
    status: str, level: int, deadline: str, cmd_level: int, due: timedelta, reason: str
) -> None:
    case = make_case(FAST, "critical", status=status, level=level)
    now = T0 + due + 7 * S  # the processor is a little late
    ctx = apply(agg_of(case), FAST, command(case, deadline, cmd_level, T0 + due), now)
    target = escalation_target(FAST, "CON", cmd_level)
    assert target == {1: "EMB", 2: "HQ"}[cmd_level]
    assert ctx.outcome == "escalated"
    assert case.escalation_level == cmd_level
    assert case.post_id == "CON"
    assert case.escalated_to == target
    assert case.status == status
    assert case.updated_at == now
    detail = {
        "level": cmd_level,
        "reason": reason,
        "deadline": deadline,
        "missed_deadline": iso(T0 + due),
        "escalated_to": target,
    }
    [entry] = ctx.effects.timeline
    assert entry.type == "garda.case.escalated"
    assert entry.at == now  # the processor's clock, not the deadline
    assert entry.actor == "garda"
    assert entry.detail == detail
    case_events = [e for e in ctx.effects.events if e.type == "garda.case.escalated"]
    alerts = [e for e in ctx.effects.events if e.type == "garda.alert.escalated"]
    assert len(case_events) == 1 and len(alerts) == 1
    assert case_events[0].data["escalation_level"] == cmd_level
    assert case_events[0].data["event"]["escalated_to"] == target
    assert alerts[0].key == WORKER
    assert alerts[0].data["case_id"] == case.case_id
    assert alerts[0].data["level"] == cmd_level
    assert alerts[0].data["escalated_to"] == target
    assert alerts[0].data["severity"] == "critical"


def test_escalation_ids_are_deterministic() -> None:
    def once() -> list[str]:
        case = make_case(FAST, "critical")
        env = Envelope(
            id="cmd-fixed",
            source="garda/timer",
            type="garda.deadline.due",
            subject=WORKER,
            data=command(case, "ack", 1, T0 + 10 * S),
            time=T0 + 10 * S,
        )
        ctx = Ctx(envelope=env, policy=FAST, now=T0 + 10 * S)
        handle_deadline_due(agg_of(case), ctx)
        return [e.id for e in ctx.effects.events] + [t.entry_id for t in ctx.effects.timeline]

    assert once() == once()


# --- due_commands ---------------------------------------------------------------------------


def test_due_commands_selects_sorts_and_formats() -> None:
    cases = [
        make_case(FAST, "high", case_id="c-high"),  # ack due +20s
        make_case(FAST, "critical", case_id="c-crit"),  # ack due +10s
        make_case(FAST, "low", case_id="c-low"),  # ack due +70s: not yet
        make_case(FAST, "critical", status="resolved", case_id="c-done"),
        make_case(FAST, "critical", status="acknowledged", case_id="c-ack"),  # resolve +300s
    ]
    now = T0 + 20 * S
    assert due_commands(cases, FAST, now) == [
        {
            "case_id": "c-crit",
            "worker_id": WORKER,
            "due_at": "2026-11-29T02:00:10Z",
            "deadline": "ack",
            "level": 1,
        },
        {
            "case_id": "c-high",
            "worker_id": WORKER,
            "due_at": "2026-11-29T02:00:20Z",
            "deadline": "ack",
            "level": 1,
        },
    ]
    assert due_commands(cases, FAST, T0 + 9 * S) == []
    assert [c["case_id"] for c in due_commands(cases, FAST, T0 + 300 * S)] == [
        "c-crit",
        "c-high",
        "c-low",
        "c-ack",
    ]


def test_due_commands_due_at_is_exact_boundary() -> None:
    case = make_case(FAST, "critical")
    assert due_commands([case], FAST, T0 + 10 * S - timedelta(microseconds=1)) == []
    assert len(due_commands([case], FAST, T0 + 10 * S)) == 1


def test_registration() -> None:
    assert DEADLINE_HANDLERS == {"garda.deadline.due": handle_deadline_due}
