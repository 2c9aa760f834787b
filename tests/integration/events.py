"""The CloudEvents the integration tests publish: one builder per input type.

Defaults describe an ordinary case (an incident in Malaysia, a procedural departure to
Malaysia); a test passes what it is about. Personal identifiers are fake but well-formed, so
that the tests also prove they never reach a log or a dead letter in clear.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.harness import cloudevent

T0 = "2026-11-20T08:00:00Z"
OCCURRED = "2026-11-28T10:00:00Z"

# A procedural departure: licensed p2p placement, work visa, worker card, BPJS membership.
PROCEDURAL = {
    "scheme": "p2p",
    "p3mi_license": "SIP3MI-001",
    "employer_type": "legal_entity",
    "visa_type": "work",
    "e_pmi_id": "EPMI-1",
    "bpjs_membership_no": "BPJS-1",
    "contract_start": "2026-11-20",
    "contract_end": "2028-11-19",
}


def departure(
    wid: str,
    country: str = "MY",
    region: str | None = None,
    *,
    departed_at: str = T0,
    **changes: Any,
) -> dict:
    """``pmi.departure.recorded``, procedural; ``changes`` override fields, a ``None`` value
    drops one (``bpjs_membership_no=None``: no social security)."""
    data: dict[str, Any] = {
        "worker_id": wid,
        "destination_country": country,
        "departed_at": departed_at,
        **PROCEDURAL,
        "nik": "3201010101010001",
        "passport_no": "C1234567",
        "full_name": "Siti Aminah",
    }
    if region:
        data["destination_region"] = region
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return cloudevent("pmi.departure.recorded", data, source="siskop2mi/embarkation")


def journey(type_: str, wid: str, **data: Any) -> dict:
    """Another journey event (``pmi.arrival.reported``, ``pmi.return.recorded``,
    ``pmi.contract.extended``...) from the registry."""
    return cloudevent(type_, {"worker_id": wid, **data}, source="siskop2mi/registry")


def incident(
    wid: str,
    category: str = "unpaid_wages",
    country: str = "MY",
    *,
    region: str | None = None,
    incident_id: str | None = None,
    occurred_at: str = OCCURRED,
    source: str = "kp2mi/hotline",
    time_: str | None = None,
    **extra: object,
) -> dict:
    """``pmi.incident.reported`` by the hotline (default: unpaid wages in Malaysia); ``source``
    the producer, ``time_`` the envelope's ``time`` (none by default)."""
    data = {
        "incident_id": incident_id or f"INC-{uuid.uuid4().hex[:8]}",
        "worker_id": wid,
        "category": category,
        "occurred_at": occurred_at,
        "country": country,
        "reporter_type": "hotline",
        **extra,
    }
    if region:
        data["region"] = region
    return cloudevent("pmi.incident.reported", data, source=source, time_=time_)
