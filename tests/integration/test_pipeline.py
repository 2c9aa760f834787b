"""End to end: CloudEvents in through the real broker, state in the real PostgreSQL."""

from __future__ import annotations

import json
import uuid

from infra.settings import Settings
from schemas import topics
from tests.integration.events import departure, incident
from tests.integration.harness import (
    WorkerProcess,
    cloudevent,
    db_fetch,
    eventually,
    get_json,
    publish,
    publish_events,
    read_topic,
)


async def _count(url: str, sql: str) -> int:
    return (await db_fetch(url, sql))[0][0]


# Mixed scenario: (worker, departure country, region, incident category, expected post)
SCENARIO = [
    ("W-MY-JOHOR", "MY", "MY-01", "unpaid_wages", "KJRI-JOHOR-BAHRU"),
    ("W-MY-KL", "MY", "MY-14", "employer_violence", "KBRI-KUALA-LUMPUR"),
    ("W-TW", "TW", None, "accident", "KDEI-TAIPEI"),
    ("W-HK", "HK", None, "document_withheld", "KJRI-HONG-KONG"),
    ("W-JP", "JP", "JP-13", "illness", "KBRI-TOKYO"),
    ("W-SA-JEDDAH", "SA", "SA-02", "detention", "KJRI-JEDDAH"),
    ("W-FR", "FR", None, "lost_contact", "HQ"),
]


async def test_mixed_scenario_routes_cases_and_projects_state(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    await publish_events(
        settings, topics.DEPARTURES, [departure(w, c, r) for w, c, r, _, _ in SCENARIO]
    )
    await publish_events(
        settings,
        topics.INCIDENTS,
        [incident(w, cat, country=c, region=r) for w, c, r, cat, _ in SCENARIO],
    )
    # A worker nobody saw leave.
    await publish_events(
        settings, topics.INCIDENTS, [incident("W-GHOST", "trafficking", region="MY-01")]
    )

    async def cases() -> list[dict]:
        _, body = await get_json(f"{worker.url}/api/cases?limit=100", headers=hq_headers)
        return body["cases"]

    # Protection cases only: an incident applied before its worker's departure (another
    # lane) also opens a coverage gap, which the departure then closes.
    found = await eventually(
        cases, lambda cs: sum(c["kind"] == "protection" for c in cs) >= len(SCENARIO) + 1
    )
    by_worker = {c["worker_id"]: c for c in found if c["kind"] == "protection"}
    for wid, _, _, category, post in SCENARIO:
        case = by_worker[wid]
        assert case["post_id"] == post, (wid, case)
        assert case["category"] == category
        assert case["status"] == "open" and case["escalation_level"] == 0
        assert case["ack_due"] and case["resolve_due"] and case["opened_at"]
        assert case["reports"] == 1
    assert "headquarters" in (by_worker["W-FR"]["routing_note"] or "")
    assert by_worker["W-MY-KL"]["severity"] == "critical"  # category default beats none
    assert by_worker["W-HK"]["severity"] == "high"

    status, ghost = await get_json(f"{worker.url}/api/workers/W-GHOST", headers=hq_headers)
    assert status == 200
    assert ghost["state"] == "unregistered_abroad"
    assert ghost["in_crisis"] is True and ghost["open_cases"]
    # Departures and incidents are on different lanes (streams.lanes): the bulk lane may
    # apply W-TW's departure after the urgent lane opened the case; the state follows it.
    status, placed = await eventually(
        lambda: get_json(f"{worker.url}/api/workers/W-TW", headers=hq_headers),
        lambda r: r[1].get("state") == "departed",
        timeout=30,
    )
    assert placed["state"] == "departed" and placed["country"] == "TW"
    assert set(placed) >= {
        "worker_id",
        "state",
        "in_crisis",
        "non_procedural",
        "non_procedural_reasons",
        "insured_until",
        "open_cases",
        "country",
        "region",
    }

    # One case in detail, with its timeline.
    cid = by_worker["W-MY-JOHOR"]["case_id"]
    status, case = await get_json(f"{worker.url}/api/cases/{cid}", headers=hq_headers)
    assert status == 200
    assert [e["type"] for e in case["timeline"]][:1] == ["garda.case.opened"]

    # Filters.
    _, body = await get_json(f"{worker.url}/api/cases?post_id=KDEI-TAIPEI", headers=hq_headers)
    assert {c["worker_id"] for c in body["cases"]} == {"W-TW"}
    _, body = await get_json(
        f"{worker.url}/api/cases?severity=critical&status=open", headers=hq_headers
    )
    assert {"W-MY-KL", "W-SA-JEDDAH", "W-FR", "W-GHOST"} <= {c["worker_id"] for c in body["cases"]}
    status, body = await get_json(f"{worker.url}/api/cases?colour=red", headers=hq_headers)
    assert status == 400
    status, body = await get_json(f"{worker.url}/api/cases?after=nonsense", headers=hq_headers)
    assert status == 400

    # Keyset pagination walks every case exactly once.
    seen: list[str] = []
    url = f"{worker.url}/api/cases?limit=3"
    while True:
        _, page = await get_json(url, headers=hq_headers)
        seen += [c["case_id"] for c in page["cases"]]
        if "next" not in page:
            break
        url = f"{worker.url}/api/cases?limit=3&after={page['next']}"
    assert sorted(seen) == sorted(c["case_id"] for c in found) and len(seen) == len(set(seen))

    _, posts = await get_json(f"{worker.url}/api/posts", headers=hq_headers)
    johor = next(p for p in posts["posts"] if p["post_id"] == "KJRI-JOHOR-BAHRU")
    assert johor["open_cases"] >= 2  # W-MY-JOHOR, W-GHOST

    # Output topics carry the case events and worker snapshots (structured CloudEvents).
    out = await read_topic(settings, topics.CASES, min_count=len(SCENARIO) + 1)
    opened = [json.loads(m.value) for m in out]
    assert {e["type"] for e in opened} >= {"garda.case.opened"}
    assert all(e["specversion"] == "1.0" and e["source"] for e in opened)
    assert all(m.key.decode() == json.loads(m.value)["subject"] for m in out)
    states = await read_topic(settings, topics.WORKER_STATE, min_count=len(SCENARIO) + 1)
    assert {json.loads(m.value)["data"]["worker_id"] for m in states} >= {w for w, *_ in SCENARIO}

    # Personal identifiers never reach the log raw, and every line is one JSON object.
    log = worker.log_text()
    assert "event handled" in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    handled = [e for e in lines if e["event"] == "event handled"]
    assert all({"event_id", "type", "worker_id", "outcome"} <= set(e) for e in handled)
    for raw in ("3201010101010001", "C1234567", "Siti Aminah"):
        assert raw not in log


async def test_duplicates_and_replays_change_nothing(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    dep = departure("W-DUP", "MY", "MY-01")
    inc = incident("W-DUP", incident_id="INC-DUP-1")
    await publish_events(settings, topics.DEPARTURES, [dep])
    await publish_events(settings, topics.INCIDENTS, [inc])

    async def snapshot() -> tuple[int, ...]:
        url = settings.database_url
        return (
            # Protection cases: an incident applied before the departure (another lane) also
            # opens a coverage gap, which the departure closes.
            await _count(url, "SELECT count(*) FROM cases WHERE kind = 'protection'"),
            await _count(url, "SELECT count(*) FROM case_timeline"),
            await _count(url, "SELECT count(*) FROM outbox"),
            await _count(url, "SELECT count(*) FROM processed_events"),
            await _count(url, "SELECT coalesce(sum(reports), 0) FROM cases"),
        )

    before = await eventually(snapshot, lambda s: s[0] == 1 and s[3] == 2)
    # The same events again (redelivery / replay), twice; and the same incident under a new
    # event id (a second system forwarding it).
    await publish_events(settings, topics.DEPARTURES, [dep, dep])
    await publish_events(settings, topics.INCIDENTS, [inc, inc])
    again = dict(inc, id=uuid.uuid4().hex)
    await publish_events(settings, topics.INCIDENTS, [again])
    # A marker event after them: once it is processed, so are the replays.
    await publish_events(settings, topics.DEPARTURES, [departure("W-MARK", "TW")])
    await eventually(snapshot, lambda s: s[3] == 4)
    after = await snapshot()
    assert after[0] == before[0]  # no new case
    assert after[4] == before[4]  # no report attached twice
    assert after[1] == before[1] + 0  # the re-forwarded incident is a recorded no-op
    _, case = await get_json(f"{worker.url}/api/cases?worker_id=W-DUP", headers=hq_headers)
    assert case["cases"][0]["reports"] == 1
    outcomes = await db_fetch(
        settings.database_url, "SELECT outcome FROM processed_events WHERE id = $1", again["id"]
    )
    assert outcomes[0]["outcome"] == "duplicate-incident"


async def test_malformed_input_is_dead_lettered_and_valid_events_go_on(
    settings: Settings, worker: WorkerProcess, hq_headers: dict[str, str]
) -> None:
    good1 = departure("W-OK-1", "TW")
    good2 = departure("W-OK-2", "HK")
    missing = departure("W-BAD-3", "MY")
    del missing["data"]["departed_at"]
    bad_enum = departure("W-BAD-4", "MY", visa_type="tourist-ish")
    mismatch = departure("W-BAD-5", "MY")
    unknown_type = cloudevent("pmi.departure.teleported", {"worker_id": "W-BAD-6"})
    wrong_topic = incident("W-BAD-7", "other", region=None)  # an incident on the departures topic
    binary_bad = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"bin-1"),
        ("ce_source", b"test/binary"),
        ("ce_type", b"pmi.departure.recorded"),
        ("ce_subject", b"W-BAD-8"),
        ("content-type", b"application/json"),
    ]
    records = [
        (b"W-OK-1", good1, None),
        (b"W-BAD-1", b"{not json", None),
        (b"W-BAD-2", b"", None),
        (b"W-BAD-3", missing, None),
        (b"W-BAD-4", bad_enum, None),
        (b"someone-else", mismatch, None),
        (b"W-BAD-6", unknown_type, None),
        (b"W-BAD-7", wrong_topic, None),
        (
            b"W-BAD-8",
            json.dumps(
                dict(departure("W-BAD-8", "MY")["data"], destination_country="Malaysia")
            ).encode(),
            binary_bad,
        ),
        (b"W-OK-2", good2, None),
    ]
    await publish(settings, topics.DEPARTURES, records)
    dead = await read_topic(settings, topics.DEADLETTER, min_count=8, timeout=20)
    # Delivery is at least once (Tansu has no idempotent producer: a produce retried under load
    # lands twice), so count distinct things: each source record gets one dead letter (one
    # garda-deadletter-id), and exactly the eight bad keys are there.
    errors = {}
    by_source: dict[tuple[int, int], set[bytes]] = {}
    for m in dead:
        h = dict(m.headers)
        assert h["garda-source-topic"].decode() == settings.topic(topics.DEPARTURES)
        source = (int(h["garda-source-partition"]), int(h["garda-source-offset"]))
        assert source[0] >= 0 and source[1] >= 0
        by_source.setdefault(source, set()).add(h["garda-deadletter-id"])
        errors[m.key.decode()] = h["garda-error"].decode()
    assert all(len(ids) == 1 for ids in by_source.values()), by_source
    assert len(errors) == 8, sorted(errors)
    assert "invalid JSON" in errors["W-BAD-1"]
    assert "W-BAD-2" in errors
    assert "data.departed_at" in errors["W-BAD-3"]
    assert "data.visa_type" in errors["W-BAD-4"]
    assert "key" in errors["someone-else"]
    assert "type" in errors["W-BAD-6"]
    assert "type" in errors["W-BAD-7"]
    assert "data.destination_country" in errors["W-BAD-8"]
    # Unchanged bytes.
    bad1 = next(m for m in dead if m.key == b"W-BAD-1")
    assert bad1.value == b"{not json"
    for wid in ("W-OK-1", "W-OK-2"):
        status, body = await get_json(f"{worker.url}/api/workers/{wid}", headers=hq_headers)
        assert status == 200 and body["state"] == "departed"
    assert await _count(settings.database_url, "SELECT count(*) FROM deadletters") == 8
    _, metrics = await get_json(f"{worker.url}/health")
    assert metrics["status"] == "ok"  # the worker is still alive and well


async def test_two_workers_share_the_partitions(settings: Settings, tmp_path) -> None:
    w1 = WorkerProcess(settings, tmp_path, "w1")
    w2 = WorkerProcess(settings, tmp_path, "w2")
    await w1.start()
    await w2.start()
    try:
        # Wait until both hold partitions after the rebalance.
        await eventually(lambda: _assigned(w1, w2), lambda ok: ok, timeout=40)
        wids = [f"W-SHARE-{i:03d}" for i in range(60)]
        await publish_events(settings, topics.DEPARTURES, [departure(w, "TW") for w in wids])
        await eventually(
            lambda: _count(settings.database_url, "SELECT count(*) FROM workers"),
            lambda n: n == len(wids),
            timeout=40,
        )
        handled = [w.log_text().count('"event handled"') for w in (w1, w2)]
        assert all(n > 0 for n in handled), handled
        # Co-partitioning: partition N of every input topic belongs to one worker, so all of a
        # worker's events (and the timer's commands) reach the same processor.
        owners: dict[int, set[str]] = {}
        for w in (w1, w2):
            _, health = await get_json(f"{w.url}/health")
            for tp in health["lag"]:
                topic, part = tp.rsplit(":", 1)
                owners.setdefault(int(part), set()).add(w.url)
                assert topic.startswith(settings.topic_prefix)
        assert set(owners) == set(range(settings.partitions))
        assert all(len(urls) == 1 for urls in owners.values()), owners
    finally:
        await w2.stop()
        await w1.stop()


async def _assigned(*workers: WorkerProcess) -> bool:
    ok = True
    for w in workers:
        _, health = await get_json(f"{w.url}/health")
        ok = ok and bool(health.get("assigned"))
    return ok
