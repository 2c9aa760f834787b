"""Small builders for unit tests: envelopes, aggregates and contexts (no I/O)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.context import Ctx
from handlers.model import Aggregate, Worker
from handlers.policy import Policy, Post, Sla, load_policy
from schemas.envelope import Envelope
from schemas.fields import iso

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
WORKER = "PMI-2024-000123"
POLICY = load_policy()

_ids = itertools.count(1)


def envelope(
    type_: str,
    data: dict[str, Any] | None = None,
    *,
    time: datetime | None = T0,
    id: str | None = None,
    source: str = "test/source",
    worker_id: str = WORKER,
) -> Envelope:
    payload = {"worker_id": worker_id, **(data or {})}
    return Envelope(
        id=id or f"ev-{next(_ids)}",
        source=source,
        type=type_,
        subject=payload["worker_id"],
        data=payload,
        time=time,
    )


def aggregate(worker_id: str = WORKER, *, exists: bool = False, **worker: Any) -> Aggregate:
    return Aggregate(worker=Worker(worker_id=worker_id, **worker), exists=exists)


def ctx(
    env: Envelope | None = None, *, now: datetime | None = None, policy: Policy = POLICY
) -> Ctx:
    env = env or envelope("pmi.incident.reported")
    return Ctx(envelope=env, policy=policy, now=now or (env.time or T0) + H)


def departure(at: datetime = T0, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "destination_country": "MY",
        "destination_region": "MY-01",
        "departed_at": iso(at),
        "scheme": "p2p",
        "p3mi_license": "SIP3MI-001",
        "employer_type": "legal_entity",
        "sector": "plantation",
        "e_pmi_id": "EPMI-1",
        "visa_type": "work",
        "bpjs_membership_no": "BPJS-1",
        "contract_start": at.date().isoformat(),
        "contract_end": (at + 730 * D).date().isoformat(),
        "nik": "3201010101010001",
        "passport_no": "X1234567",
        "full_name": "Siti Aminah",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def incident(
    incident_id: str = "INC-1",
    category: str = "unpaid_wages",
    *,
    severity: str | None = None,
    country: str = "MY",
    region: str | None = "MY-01",
    occurred_at: datetime = T0,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "incident_id": incident_id,
        "category": category,
        "occurred_at": iso(occurred_at),
        "country": country,
        "reporter_type": "mission",
        "description": "test report",
        **extra,
    }
    if severity is not None:
        data["severity"] = severity
    if region is not None:
        data["region"] = region
    return data


S = timedelta(seconds=1)


def fast_policy() -> Policy:
    """A policy with seconds-long SLAs and a consulate -> embassy -> HQ ladder (plus a second
    consulate and another country's embassy for the who-may-act rules)."""
    posts = {
        "HQ": Post("HQ", "Headquarters", None, "headquarters", "none", head_of_mission="HQ"),
        "EMB": Post("EMB", "KBRI Test", "MY", "embassy", "attache", head_of_mission="EMB"),
        "CON": Post(
            "CON", "KJRI Test", "MY", "consulate", "none", ("MY-01",), "EMB", protection_desk=True
        ),
        "CON2": Post(
            "CON2", "KJRI Other", "MY", "consulate", "none", ("MY-13",), "EMB", protection_desk=True
        ),
        "OTHER": Post(
            "OTHER", "KBRI Elsewhere", "SG", "embassy", "attache", head_of_mission="OTHER"
        ),
    }
    return Policy(
        dedup_window=timedelta(seconds=30),
        category_severity={"death": "critical", "accident": "high", "other": "low"},
        posts=posts,
        headquarters="HQ",
        sla={
            "critical": Sla(ack=10 * S, level2=40 * S, resolve=300 * S),
            "high": Sla(ack=20 * S, level2=60 * S, resolve=600 * S),
            "medium": Sla(ack=30 * S, level2=90 * S, resolve=900 * S),
            "low": Sla(ack=70 * S, level2=None, resolve=1200 * S),
        },
    )
