"""The simulator's prevention traffic: origins, employers with spelling variants, returns."""

from __future__ import annotations

import itertools
import json
from collections import Counter

from handlers.employers import employer_key
from infra.simulate import traffic
from schemas.types import validate_data


def events(seed: int, n: int = 3000) -> list[dict]:
    return [json.loads(v) for _, _, v in itertools.islice(traffic(seed), n)]


def test_departures_carry_origin_and_employer_and_some_workers_return() -> None:
    evs = events(7)
    for e in evs:
        validate_data(e["type"], e["data"])  # everything the simulator sends is valid
    deps = [e["data"] for e in evs if e["type"] == "pmi.departure.recorded"]
    assert all(d["origin"]["province"] in ("35", "33", "32", "52") for d in deps)
    assert all(d["origin"]["regency"].startswith(d["origin"]["province"]) for d in deps)
    reasons = Counter(e["data"]["reason"] for e in evs if e["type"] == "pmi.return.recorded")
    assert reasons["contract_completed"] > 0 and sum(reasons.values()) > 20
    # a small pool of employers, spelt differently, collects several workers each
    names = [d["employer_name"] for d in deps]
    keys = Counter(
        employer_key(n, d["destination_country"]) for n, d in zip(names, deps, strict=True)
    )
    assert len(set(names)) > len(keys)  # spelling variants of one employer
    assert keys.most_common(1)[0][1] >= 5


def test_same_seed_same_stream() -> None:
    def strip(e: dict) -> tuple:
        data = {
            k: v
            for k, v in e["data"].items()
            if k
            not in (
                "returned_at",
                "reported_at",
                "filed_at",
                "changed_at",
                "departed_at",
                "occurred_at",
                "contract_start",
                "contract_end",
            )
        }
        return (e["type"], e["subject"], json.dumps(data, sort_keys=True))

    assert [strip(e) for e in events(3, 500)] == [strip(e) for e in events(3, 500)]
