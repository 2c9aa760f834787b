"""The CloudEvents the integration tests publish: one builder per input type.

Defaults describe an ordinary case (a Johor incident, a procedural departure to Malaysia);
a test passes what it is about. Personal identifiers are fake but well-formed, so that the
tests also prove they never reach a log or a dead letter in clear.
"""

from __future__ import annotations

import uuid

from tests.integration.harness import cloudevent

T0 = "2026-11-20T08:00:00Z"
OCCURRED = "2026-11-28T10:00:00Z"


def departure(wid: str, country: str = "MY", region: str | None = None, **extra: object) -> dict:
    """``pmi.departure.recorded``: procedural (licensed p2p, work visa, worker card, BPJS)."""
    data = {
        "worker_id": wid,
        "destination_country": country,
        "departed_at": T0,
        "scheme": "p2p",
        "p3mi_license": "SIP3MI-001",
        "employer_type": "legal_entity",
        "visa_type": "work",
        "e_pmi_id": "EPMI-1",
        "bpjs_membership_no": "BPJS-1",
        "contract_start": "2026-11-20",
        "contract_end": "2028-11-19",
        "nik": "3201010101010001",
        "passport_no": "C1234567",
        "full_name": "Siti Aminah",
        **extra,
    }
    if region:
        data["destination_region"] = region
    return cloudevent("pmi.departure.recorded", data, source="siskop2mi/embarkation")


def incident(
    wid: str,
    category: str = "unpaid_wages",
    *,
    country: str = "MY",
    region: str | None = "MY-01",
    incident_id: str | None = None,
    **extra: object,
) -> dict:
    """``pmi.incident.reported`` by the hotline (default: unpaid wages in Johor)."""
    data = {
        "incident_id": incident_id or f"INC-{uuid.uuid4().hex[:8]}",
        "worker_id": wid,
        "category": category,
        "occurred_at": OCCURRED,
        "country": country,
        "reporter_type": "hotline",
        **extra,
    }
    if region:
        data["region"] = region
    return cloudevent("pmi.incident.reported", data, source="kp2mi/hotline")
