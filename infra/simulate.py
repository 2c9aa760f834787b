"""``garda simulate``: realistic consulate, embarkation and insurer traffic for demos and benchmarks.

Destinations follow the 2023 placement figures (domain.md); incidents follow the complaint
categories; about one incident in five concerns a worker with no departure record.
Departures carry an origin (province, regency, village codes) and an employer from a small
pool per country, spelt differently now and then; about one arrival in ten is followed by a
return home, for a reason drawn from ``RETURN_REASONS`` (reintegration referrals).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from infra.settings import Settings
from schemas import topics
from schemas.fields import iso

# country: (placements 2023, regions seen in reports)
DESTINATIONS: dict[str, tuple[int, list[str | None]]] = {
    "TW": (83216, [None]),
    "MY": (72260, ["MY-01", "MY-10", "MY-14", "MY-12", "MY-13", "MY-07"]),
    "HK": (65916, [None]),
    "KR": (12580, [None]),
    "JP": (9673, ["JP-13", "JP-27"]),
    "SG": (7898, [None]),
    "SA": (6310, ["SA-01", "SA-02"]),
    "IT": (3519, [None]),
    "BN": (2872, [None]),
    "TR": (2289, [None]),
}
CATEGORIES = {
    "wants_to_go_home": 20,
    "unpaid_wages": 14,
    "deportation": 8,
    "failed_departure": 4,
    "death": 3,
    "job_fraud": 6,
    "illness": 7,
    "accident": 4,
    "social_security": 4,
    "trafficking": 3,
    "contract_mismatch": 8,
    "employer_violence": 4,
    "sexual_violence": 2,
    "mental_health": 2,
    "lost_contact": 5,
    "document_withheld": 3,
    "detention": 2,
    "overstay": 2,
    "other": 3,
}
# Where workers come from (2023 origin figures: East, Central, West Java lead; Kemendagri
# codes) and a few sending regencies of each, for reintegration routing.
ORIGINS: dict[str, tuple[int, list[str]]] = {
    "35": (68069, ["3507", "3505", "3502", "3578"]),
    "33": (59009, ["3301", "3302"]),
    "32": (52961, ["3212", "3210"]),
    "52": (30000, ["5203", "5202"]),
}
# Why workers come home (the simulator's guess).
RETURN_REASONS = {
    "contract_completed": 70,
    "repatriated": 10,
    "deported": 8,
    "medical": 6,
    "deceased": 2,
    "other": 4,
}
EMPLOYERS_PER_COUNTRY = 25  # a small pool, so that some employers collect several cases


def _employer_name(rnd: random.Random, country: str) -> str:
    """One of the country's pool of employer names, sometimes spelt differently (case,
    spacing, a trailing dot): the watchlist must see one employer."""
    base = f"{country} Employer {rnd.randrange(EMPLOYERS_PER_COUNTRY):02d} Ltd"
    variant = rnd.random()
    if variant < 0.1:
        return base.upper()
    if variant < 0.2:
        return "  " + base.replace(" ", "  ") + "."
    return base


# The insurer's usual path for a claim; one in five ends rejected instead of paid.
CLAIM_STEPS = ("docs_pending", "submitted", "verified", "approved", "paid")
SOURCES = {
    "TW": "kdei-taipei/case-desk",
    "MY": "kbri-kuala-lumpur/case-desk",
    "HK": "kjri-hong-kong/case-desk",
    "SA": "kbri-riyadh/case-desk",
    "JP": "kbri-tokyo/consular",
    "KR": "kbri-seoul/case-desk",
}


def _stamp(dt: datetime) -> str:
    """Whole seconds, UTC, ``Z``: what the producers send."""
    return iso(dt.replace(microsecond=0))


def _event(type_: str, source: str, worker_id: str, data: dict[str, Any], at: datetime) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": type_,
            "subject": worker_id,
            "time": _stamp(at),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


def traffic(seed: int) -> Iterator[tuple[str, str, bytes]]:
    """An endless stream of (logical topic, worker_id, CloudEvent bytes): departures, arrivals,
    incidents and, for accidents, deaths and illness, the insurer's claims and their steps."""
    rnd = random.Random(seed)
    countries = list(DESTINATIONS)
    weights = [DESTINATIONS[c][0] for c in countries]
    cats, cat_w = list(CATEGORIES), list(CATEGORIES.values())
    placed: list[tuple[str, str, str | None]] = []
    # A second generator for the prevention fields (origin, employer, returns), so that the
    # events drawn from ``rnd`` are the same for a seed as before they were added.
    extra = random.Random(seed * 7919 + 1)
    employer_of: dict[str, str] = {}
    provinces = list(ORIGINS)
    reasons, reason_w = list(RETURN_REASONS), list(RETURN_REASONS.values())
    claims: list[tuple[str, str, int]] = []  # (claim_id, worker_id, index into CLAIM_STEPS)
    n = 0
    while True:
        n += 1
        now = datetime.now(UTC)
        stamp = _stamp(now)
        if claims and rnd.random() < 0.05:  # the insurer moves a claim on
            i = rnd.randrange(len(claims))
            claim_id, wid, step = claims[i]
            status = CLAIM_STEPS[step]
            if status == "approved" and rnd.random() < 0.2:
                status = "rejected"
            if status in ("paid", "rejected") or step + 1 >= len(CLAIM_STEPS):
                claims.pop(i)
            else:
                claims[i] = (claim_id, wid, step + 1)
            data: dict[str, Any] = {
                "claim_id": claim_id,
                "worker_id": wid,
                "status": status,
                "changed_at": stamp,
            }
            yield (
                topics.CLAIMS,
                wid,
                _event("pmi.claim.status-changed", "bpjs-ketenagakerjaan/claims", wid, data, now),
            )
            continue
        roll = rnd.random()
        if roll < 0.45 or not placed:
            wid = f"PMI-{seed:04d}-{n:07d}"
            country = rnd.choices(countries, weights)[0]
            region = rnd.choice(DESTINATIONS[country][1])
            household = rnd.random() < 0.4
            data = {
                "worker_id": wid,
                "destination_country": country,
                "departed_at": _stamp(now - timedelta(hours=rnd.randint(1, 48))),
                "embarkation_point": rnd.choice(["CGK", "SUB", "KNO", "BTH"]),
                "scheme": rnd.choices(["p2p", "g2g", "individual"], [85, 10, 5])[0],
                "employer_type": "household" if household else "legal_entity",
                "visa_type": "work" if rnd.random() < 0.97 else "visit",
                "contract_start": now.date().isoformat(),
                "contract_end": (now.date() + timedelta(days=730)).isoformat(),
                "nik": f"35{rnd.randint(10**13, 10**14 - 1)}",
                "passport_no": f"C{rnd.randint(10**6, 10**7 - 1)}",
                "full_name": rnd.choice(
                    ["Siti Aminah", "Sri Wahyuni", "Dewi Lestari", "Agus Salim"]
                ),
            }
            if region:
                data["destination_region"] = region
            if data["scheme"] == "p2p" and rnd.random() < 0.95:
                data["p3mi_license"] = f"SIP3MI-{rnd.randint(1, 424):03d}"
            if rnd.random() < 0.95:
                data["e_pmi_id"] = f"EPMI-{rnd.randint(10**8, 10**9 - 1)}"
            if rnd.random() < 0.92:
                data["bpjs_membership_no"] = f"BPJS{rnd.randint(10**9, 10**10 - 1)}"
            province = extra.choices(provinces, [ORIGINS[p][0] for p in provinces])[0]
            regency = extra.choice(ORIGINS[province][1])
            data["origin"] = {
                "province": province,
                "regency": regency,
                "village": f"{regency}{extra.randint(10, 20):03d}{extra.randint(1, 9):03d}",
            }
            data["employer_name"] = employer_of[wid] = _employer_name(extra, country)
            placed.append((wid, country, region))
            yield (
                topics.DEPARTURES,
                wid,
                _event("pmi.departure.recorded", "siskop2mi/embarkation", wid, data, now),
            )
        elif roll < 0.75:
            wid, country, region = rnd.choice(placed)
            data = {
                "worker_id": wid,
                "country": country,
                "reported_at": _stamp(now),
            }
            if region:
                data["region"] = region
            if wid in employer_of:
                data["employer_name"] = employer_of[wid]
            yield (
                topics.DEPARTURES,
                wid,
                _event(
                    "pmi.arrival.reported", SOURCES.get(country, "mission/desk"), wid, data, now
                ),
            )
            if extra.random() < 0.1:  # some come home (reintegration referrals)
                back = {
                    "worker_id": wid,
                    "returned_at": stamp,
                    "reason": extra.choices(reasons, reason_w)[0],
                }
                yield (
                    topics.DEPARTURES,
                    wid,
                    _event("pmi.return.recorded", "siskop2mi/embarkation", wid, back, now),
                )
        else:
            if rnd.random() < 0.2:  # a worker nobody saw leave
                wid = f"PMI-X{seed:04d}-{n:07d}"
                country = rnd.choices(countries, weights)[0]
                region = rnd.choice(DESTINATIONS[country][1])
            else:
                wid, country, region = rnd.choice(placed)
            data = {
                "incident_id": f"INC-{seed}-{n}",
                "worker_id": wid,
                "category": rnd.choices(cats, cat_w)[0],
                "occurred_at": _stamp(now - timedelta(hours=rnd.randint(0, 72))),
                "country": country,
                "reporter_type": rnd.choice(
                    ["mission", "worker", "family", "hotline", "panic_button"]
                ),
                "description": "reported through the simulator",
            }
            if region:
                data["region"] = region
            yield (
                topics.INCIDENTS,
                wid,
                _event(
                    "pmi.incident.reported", SOURCES.get(country, "mission/desk"), wid, data, now
                ),
            )
            if data["category"] in ("accident", "death", "illness") and rnd.random() < 0.6:
                claim_id = f"CLM-{seed}-{n}"
                program = "JKM" if data["category"] == "death" else "JKK"
                claim = {
                    "claim_id": claim_id,
                    "worker_id": wid,
                    "program": program,
                    "event_date": data["occurred_at"][:10],
                    "filed_at": stamp,
                    "incident_id": data["incident_id"],
                }
                claims.append((claim_id, wid, 0))
                yield (
                    topics.CLAIMS,
                    wid,
                    _event("pmi.claim.filed", "bpjs-ketenagakerjaan/claims", wid, claim, now),
                )


async def simulate(
    settings: Settings,
    *,
    rate: float = 50.0,
    duration: float = 30.0,
    seed: int | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> int:
    """Publish traffic at ``rate`` events/s for ``duration`` s (or ``limit`` events).

    ``seed`` None picks a new one (printed), so a second run against a kept database brings
    new workers and incidents rather than replays of the first run's.
    """
    if seed is None:
        seed = random.SystemRandom().randrange(1, 10_000)
        if progress:
            print(
                f"simulate: seed {seed} (pass --seed {seed} to repeat this traffic)",
                file=sys.stderr,
                flush=True,
            )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=10
    )
    await producer.start()
    sent = 0
    total = limit if limit is not None else (int(rate * duration) if rate > 0 else None)
    started = time.monotonic()
    last_report = started
    try:
        for topic, wid, value in traffic(seed):
            if total is not None and sent >= total:
                break
            if rate <= 0 and time.monotonic() - started >= duration and limit is None:
                break
            await producer.send(settings.topic(topic), value=value, key=wid.encode())
            sent += 1
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                of = f"/{total}" if total else ""
                print(
                    f"simulate: sent {sent}{of} events ({sent / (last_report - started):.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        print(
            f"simulate: done, {sent} events in {time.monotonic() - started:.1f}s", file=sys.stderr
        )
    return sent
