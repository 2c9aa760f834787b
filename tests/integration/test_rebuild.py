"""garda rebuild replays the input topics into an empty read model and derives the same state."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from errors import GardaError
from handlers.policy import load_policy
from infra.db import Database, migrate
from infra.settings import Settings
from infra.simulate import traffic
from schemas import topics
from streams.processor import RawRecord
from streams.rebuild import RebuildProcessor, _replay, rebuild
from tests import rawbatch
from tests.integration.events import departure, incident
from tests.integration.harness import db_fetch, eventually, publish, publish_events
from tests.integration.test_pipeline import SCENARIO

# Every column of the read model but the write-time stamps (``updated_at``: now()): the
# rebuild must derive exactly what live wrote, documents included.
STATE_SQL = {
    "workers": "SELECT worker_id, state, country, region, in_crisis, non_procedural,"
    " insured_until, partition, doc FROM workers ORDER BY 1",
    "cases": "SELECT case_id, worker_id, kind, category, severity, status, post_id,"
    " escalation_level, ack_due, resolve_due, opened_at, reports, next_due, partition, doc"
    " FROM cases ORDER BY 1",
    "claims": "SELECT claim_id, worker_id, status, last_change_at, stall_due, partition, doc"
    " FROM claims ORDER BY 1",
    "timeline": "SELECT entry_id, case_id, at, type, actor, detail, source, event_id"
    " FROM case_timeline ORDER BY 1",
    "processed": 'SELECT source, id, type, worker_id, topic, partition, "offset", outcome,'
    " digest FROM processed_events ORDER BY 1, 2",
    "deadletters": 'SELECT topic, partition, "offset", digest, error FROM deadletters'
    " ORDER BY 1, 2, 3",
    "employers": "SELECT employer_key, name, country, region, watchlisted, watchlisted_at, cases"
    " FROM employers ORDER BY 1",
    "employer_cases": "SELECT * FROM employer_cases ORDER BY 1",
    "agency_placements": "SELECT * FROM agency_placements ORDER BY 1, 2",
    "agency_cases": "SELECT * FROM agency_cases ORDER BY 1",
}

SIMULATED = 1500
DEPARTURES = "pmi.departures.v1"  # the full name, no prefix (RebuildProcessor's default)


async def _state(url: str) -> dict[str, list]:
    return {k: [tuple(r) for r in await db_fetch(url, sql)] for k, sql in STATE_SQL.items()}


async def test_rebuild_derives_the_same_read_model(settings: Settings, worker, pg_server) -> None:
    events = [departure(w, c, r) for w, c, r, _, _ in SCENARIO]
    incidents = [incident(w, cat, country=c, region=r) for w, c, r, cat, _ in SCENARIO]
    incidents.append(incident("W-MY-JOHOR", region="MY-01"))  # attaches
    total = len(events) + len(incidents)

    async def processed() -> int:
        return (await db_fetch(settings.database_url, "SELECT count(*) FROM processed_events"))[0][
            0
        ]

    # Departures are recorded before incidents happen (different topics are ordered only by
    # the time they are published; see streams.processor.in_time_order).
    await publish_events(settings, topics.DEPARTURES, events)
    await eventually(processed, lambda n: n == len(events))
    await publish_events(settings, topics.INCIDENTS, incidents)
    await eventually(processed, lambda n: n == total)
    live = await _state(settings.database_url)

    name = "rebuild_" + settings.topic_prefix.strip(".")
    fresh_url = await pg_server.create_database(name)
    try:
        fresh = settings.replace(database_url=fresh_url)
        result = await rebuild(fresh, load_policy(), batch_size=4, progress=False)
        assert result["records"] == total
        assert await _state(fresh_url) == live
        unpublished = await db_fetch(
            fresh_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        assert unpublished[0][0] == 0
        with pytest.raises(GardaError, match="not empty"):
            await rebuild(fresh, load_policy(), progress=False)
        again = await rebuild(fresh, load_policy(), force=True, progress=False)
        assert again["records"] == total
        assert await _state(fresh_url) == live
    finally:
        await pg_server.drop_database(name)


async def test_rebuild_dead_letters_a_batch_the_client_cannot_decode(settings: Settings) -> None:
    """The rebuild's consumer has live's guard (streams.undecodable): an undecodable batch is
    a dead letter with its offsets, the events around it are replayed, nothing crashes."""
    topic = settings.topic(topics.DEPARTURES)

    def one(ev: dict) -> bytearray:
        return rawbatch.batch([(ev["subject"].encode(), json.dumps(ev).encode(), [])])

    bad_key = rawbatch.batch(
        [(b"W-RU-BAD-1", json.dumps(departure("W-RU-BAD-1")).encode(), [("ZZQQ", b"x")])]
    )
    crc = one(departure("W-RU-BAD-2"))
    crc[-3] ^= 0xFF  # a byte the CRC covers
    sends = [
        one(departure("W-RU-OK-1")),
        rawbatch.replace(bad_key, b"ZZQQ", b"\xff\xfeQQ"),  # a header key that is not UTF-8
        crc,
        one(departure("W-RU-OK-2")),
    ]
    for raw in sends:
        resp = await rawbatch.produce_raw(settings.kafka_bootstrap, topic, 0, raw)
        assert resp.topics[0][1][0][1] == 0, resp
    result = await rebuild(settings, load_policy(), progress=False, processes=1)
    assert result["records"] == 4
    assert result["departed"] == 2 and result["undecodable"] == 2
    rows = await db_fetch(
        settings.database_url, 'SELECT partition, "offset", error FROM deadletters ORDER BY 2'
    )
    assert [(r["partition"], r["offset"]) for r in rows] == [(0, 1), (0, 2)]
    assert rows[0]["error"].startswith("undecodable record batch (offset 1): ")
    assert "UnicodeDecodeError" in rows[0]["error"]
    assert "invalid CRC" in rows[1]["error"]
    done = await db_fetch(settings.database_url, "SELECT worker_id FROM processed_events")
    assert sorted(r["worker_id"] for r in done) == ["W-RU-OK-1", "W-RU-OK-2"]


async def test_bulk_writes_leave_exactly_what_the_live_writes_leave(
    settings: Settings, pg_server
) -> None:
    """The rebuild's COPY writes against the live writes, over the same log with the same
    clock: the simulator's mix (journeys, incidents, claims and their steps, deaths,
    returns, employers), a redelivered event, a reused id with other content and an invalid
    event; small batches, so that most workers are written again by later batches."""
    mix = list(itertools.islice(traffic(11), SIMULATED))
    by_topic: dict[str, list] = {}
    for logical, wid, value in mix:
        by_topic.setdefault(logical, []).append((wid.encode(), value, None))
    first = json.loads(mix[0][2])
    other = {**first, "time": "2026-01-02T03:04:05Z"}
    by_topic.setdefault(mix[0][0], []).extend(
        [
            (mix[0][1].encode(), mix[0][2], None),  # redelivered
            (mix[0][1].encode(), json.dumps(other).encode(), None),  # same id, other content
            (b"W-X", b'{"not": "an event"}', None),
        ]
    )
    for logical, records in by_topic.items():
        await publish(settings, logical, records)
    fixed = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    states = []
    # bulk with the default cache (every worker written once, at the end), bulk with a cache
    # of 7 workers (evicted, written, loaded again and written again), live's writes
    for bulk, cache in ((True, 100_000), (True, 7), (False, 0)):
        name = f"rebuild_{'bulk' if bulk else 'live'}{cache}_" + settings.topic_prefix.strip(".")
        url = await pg_server.create_database(name)
        try:
            async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
                await migrate(conn)
            stats: dict[str, int] = {}
            totals, records = await _replay(
                settings.replace(database_url=url),
                load_policy(),
                list(range(settings.partitions)),
                batch_size=150,
                republish=False,
                bulk=bulk,
                clock=lambda: fixed,
                cache_workers=max(cache, 1),
                stats=stats,
            )
            assert records == SIMULATED + 3
            if cache == 7:
                assert stats["reloads"] > 0  # evicted workers were met again
            if cache == 100_000:
                assert stats["reloads"] == 0 and stats["flushed"] > 0
            outbox = await db_fetch(url, "SELECT count(*) FROM outbox")
            states.append((await _state(url), dict(totals), outbox[0][0]))
        finally:
            await pg_server.drop_database(name)
    (bulk_state, bulk_totals, bulk_outbox), small, (live_state, live_totals, live_outbox) = states
    assert bulk_totals == live_totals
    assert bulk_totals["duplicate"] == 1 and bulk_totals["duplicate-conflict"] == 1
    assert bulk_totals["invalid"] == 1
    assert all(live_state[t] for t in ("workers", "cases", "claims", "timeline", "employers"))
    assert bulk_state == live_state
    assert small == (live_state, live_totals, 0)
    assert bulk_outbox == 0 and live_outbox > 0  # the output events were published before


class _Crash(Exception):
    pass


async def test_an_interrupted_rebuild_is_started_again_with_force(
    settings: Settings, pg_server
) -> None:
    """Workers' rows are written when they leave the cache or at the end, so a rebuild that
    stops half-way leaves processed ids without all their workers: the next rebuild refuses
    the database until --force, which starts again and derives the whole read model."""
    mix = list(itertools.islice(traffic(5), 600))
    by_topic: dict[str, list] = {}
    for logical, wid, value in mix:
        by_topic.setdefault(logical, []).append((wid.encode(), value, None))
    for logical, records in by_topic.items():
        await publish(settings, logical, records)
    fixed = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    batches = itertools.count(1)

    def stop_after_two(n: int) -> None:
        if next(batches) == 2:
            raise _Crash  # as a kill between two batches

    states = []
    for crash in (False, True):
        name = f"rebuild_crash{int(crash)}_" + settings.topic_prefix.strip(".")
        url = await pg_server.create_database(name)
        try:
            async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
                await migrate(conn)
            here = settings.replace(database_url=url)

            if crash:
                with pytest.raises(_Crash):
                    await _replay(
                        here,
                        load_policy(),
                        list(range(settings.partitions)),
                        batch_size=100,
                        republish=False,
                        report=stop_after_two,
                        clock=lambda: fixed,
                    )
                done = await db_fetch(url, "SELECT count(*) FROM processed_events")
                assert done[0][0] == 200  # two batches committed, their workers still cached
                with pytest.raises(GardaError, match="not empty"):
                    await rebuild(here, load_policy(), progress=False, processes=1)
                await rebuild(here, load_policy(), force=True, progress=False, processes=1)
            else:
                await _replay(
                    here,
                    load_policy(),
                    list(range(settings.partitions)),
                    batch_size=100,
                    republish=False,
                    clock=lambda: fixed,
                )
            states.append(await _state(url))
        finally:
            await pg_server.drop_database(name)
    clean, restarted = states
    assert len(clean["processed"]) == 600 and clean["workers"]
    # rebuild() runs on the real clock: compare what does not depend on it
    assert restarted["processed"] == clean["processed"]
    for table, columns in (("workers", (0, 1, 2, 3, 5, 7)), ("cases", (0, 1, 2, 3, 6))):
        pick = [[row[i] for i in columns] for row in clean[table]]
        assert [[row[i] for i in columns] for row in restarted[table]] == pick, table


async def test_a_batch_the_bulk_write_refuses_goes_through_the_live_path(
    database_url: str,
) -> None:
    """A case id already owned by another worker: the COPY fails, the batch is rolled back
    and replayed by the live path, which dead-letters the record as live does."""
    ev = departure("W-RB-B", "QA", visa_type="visit")  # non-procedural: opens a case
    dep = json.dumps(ev).encode()
    async with Database(database_url, max_size=2) as db:
        async with db.pool.acquire() as conn:
            await migrate(conn)
        processor = RebuildProcessor(db, Settings(database_url=database_url), load_policy())
        probe = [RawRecord(DEPARTURES, 0, 0, b"W-RB-B", dep, [], 1.7e9)]
        # the case W-RB-B's departure opens, found with a throw-away replay
        async with db.pool.acquire() as conn, conn.transaction():
            await processor.process(probe)
            case_id = await conn.fetchval("SELECT case_id FROM cases WHERE worker_id='W-RB-B'")
            await conn.execute("TRUNCATE workers, cases, processed_events, case_timeline")
            await conn.execute(
                "INSERT INTO cases (case_id, worker_id, kind, severity, status, post_id,"
                " opened_at, doc) VALUES ($1, 'W-RB-A', 'protection', 'low', 'open', 'P-1',"
                " now(), '{}'::jsonb)",
                case_id,
            )
        assert case_id is not None
        processor = RebuildProcessor(db, Settings(database_url=database_url), load_policy())
        other = json.dumps(departure("W-RB-C", "MY")).encode()
        await processor.process([*probe, RawRecord(DEPARTURES, 0, 1, b"W-RB-C", other, [], 1.7e9)])
        assert processor.live_batches == 1
        assert processor.totals["deadletter"] == 1 and processor.totals["departed"] == 1
        async with db.pool.acquire() as conn:
            error = await conn.fetchval("SELECT error FROM deadletters")
            owner = await conn.fetchval("SELECT worker_id FROM cases WHERE case_id=$1", case_id)
        assert error == f"rejected: case {case_id} already exists for another worker; not moved"
        assert owner == "W-RB-A"


async def test_a_rebuild_in_progress_keeps_workers_off_the_database(
    settings: Settings, pg_server
) -> None:
    """While a rebuild writes a read model (or after it was interrupted) the database says so
    (``rebuild_in_progress``): ``garda worker`` refuses to start on it and ``garda rebuild``
    asks for --force; a finished rebuild clears the mark."""
    from garda.cli import _refuse_a_rebuild_in_progress
    from infra.bulk import mark_rebuild_started, rebuild_started_at

    name = "rebuild_mark_" + settings.topic_prefix.strip(".")
    url = await pg_server.create_database(name)
    try:
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            await migrate(conn)
            assert await rebuild_started_at(conn) is None
            await _refuse_a_rebuild_in_progress(url)  # nothing in progress: no refusal
            await mark_rebuild_started(conn)  # as a rebuild killed half-way leaves it
        here = settings.replace(database_url=url)
        with pytest.raises(GardaError, match="starting workers"):
            await _refuse_a_rebuild_in_progress(url)
        with pytest.raises(GardaError, match="interrupted garda rebuild"):
            await rebuild(here, load_policy(), progress=False, processes=1)
        await rebuild(here, load_policy(), force=True, progress=False, processes=1)
        await _refuse_a_rebuild_in_progress(url)  # finished: workers may start
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            assert await rebuild_started_at(conn) is None
    finally:
        await pg_server.drop_database(name)
