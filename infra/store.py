"""Repositories: load worker aggregates and write one batch's effects in one transaction.

Everything a batch changes (workers, cases, claims, timeline rows, the processed ids, the
outbox of output events and the dead-letter records) is written by ``write_batch`` inside
the caller's transaction, so a crash either keeps all of it or none of it.

Rules decided where the design is silent:
- A row is written only when it changed: the processor's ``load_aggregates`` keeps the rows
  it read and ``batch_state`` leaves out a worker, case or claim row whose every column
  (the document as ``handlers.model.doc_json`` writes it) equals the row read; such a row
  keeps its ``updated_at`` (the time it last changed). Any other caller writes every row.
- Every outbox row is publishable by construction: its encoded size (as the producer
  computes it) is checked at write time against ``MAX_RECORD_BYTES``. A dead letter always
  fits (see below); an output event of Garda's own that would not raises ``OutputTooLarge``
  and the input that caused it is dead-lettered instead.
- A dead letter's original key, value and headers are kept in the ``deadletters`` table
  (PostgreSQL only). The copy on the dead-letter topic has the values of personal
  identifiers (``infra.logging.PII_KEYS``: NIK, passport number, names...) masked as in the
  logs, its value cut to ``DEADLETTER_VALUE_CAP`` bytes and the original headers dropped
  when they exceed ``DEADLETTER_HEADERS_CAP``; headers say what was done
  (``garda-masked``, ``garda-truncated``, ``garda-original-size``) and where the full record
  is (``garda-deadletter-id``: the ``deadletters.seq``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from errors import CaseConflict, GardaError
from handlers.claims import stall_due
from handlers.clocks import case_next_due
from handlers.model import Aggregate, Case, Claim, TimelineEntry, Worker, doc_json, json_bytes
from handlers.policy import Policy
from infra.logging import mask_document, mask_json_text

Headers = list[tuple[str, bytes]]

# The producer's max_request_size (infra.outbox) is 1 MiB and Kafka's default
# message.max.bytes about as much; a record this size always goes through.
MAX_RECORD_BYTES = 1_000_000
DEADLETTER_VALUE_CAP = 128 * 1024
DEADLETTER_HEADERS_CAP = 16 * 1024


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The size the producer computes for one record (it refuses more than its maximum)."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


class OutputTooLarge(GardaError):
    """An output event would exceed ``MAX_RECORD_BYTES``: refused at write time."""

    retriable = False


@dataclass
class OutboxRow:
    event_id: str
    topic: str  # full topic name (prefix included)
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    seq: int | None = None  # set when the row is inserted (``write_batch``)


@dataclass
class DeadLetter:
    topic: str  # full source topic name
    partition: int
    offset: int
    error: str
    key: bytes | None
    value: bytes
    headers: Headers
    source: str | None = None
    event_id: str | None = None

    @property
    def digest(self) -> str:
        """Identifies the bytes: a redelivered record is the same dead letter, new bytes at a
        reused offset are not."""
        h = hashlib.sha256()
        h.update(self.key or b"")
        h.update(b"\x00")
        h.update(self.value)
        return h.hexdigest()[:24]


@dataclass
class ProcessedId:
    source: str
    id: str
    type: str
    worker_id: str
    topic: str
    partition: int
    offset: int
    outcome: str = "ok"
    digest: str | None = None  # content digest (streams.processor.content_digest)


@dataclass
class BatchWrite:
    aggregates: list[tuple[Aggregate, int | None]] = field(default_factory=list)
    timeline: list[tuple[TimelineEntry, str, str]] = field(
        default_factory=list
    )  # entry, source, id
    processed: list[ProcessedId] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    deadletter_topic: str = "pmi.deadletter.v1"  # full name (prefix included)
    # (expected source, input partition) -> when it last spoke in this batch
    sources_seen: dict[tuple[str, int], datetime] = field(default_factory=dict)
    # the state rows to write, when made before the write (``batch_state``)
    state: BatchState | None = None


def encode_headers(headers: Iterable[tuple[str, bytes]]) -> list[list[str]]:
    return [[k, base64.b64encode(v or b"").decode()] for k, v in headers]


_HEADERS_JSON: dict[tuple[tuple[str, bytes], ...], str] = {}  # a few common header sets


def _headers_json(headers: Headers) -> str:
    """``encode_headers`` as JSON text; the common sets (every output event has the same
    content-type header) are encoded once."""
    key = tuple(headers)
    text = _HEADERS_JSON.get(key)
    if text is None:
        text = json.dumps(encode_headers(headers))
        if len(_HEADERS_JSON) < 64:
            _HEADERS_JSON[key] = text
    return text


def decode_headers(raw: Sequence[Sequence[str]]) -> Headers:
    return [(k, base64.b64decode(v)) for k, v in raw]


async def lock_partitions(conn: asyncpg.Connection, partitions: Iterable[tuple[str, int]]) -> None:
    """Serialise two processors that briefly hold the same topic-partition during a rebalance.

    One lock per (topic, partition), not per partition number: the urgent and the bulk lane
    (``streams.lanes``) read different topics and must not wait for each other here (the
    worker locks serialise their writes to one worker). One statement; the locks are taken
    in ascending order of the key, before the worker locks, so two processors cannot
    deadlock."""
    keys = sorted({zlib.crc32(f"{t}:{p}".encode()) & 0x7FFFFFFF for t, p in partitions})
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(7301, k) FROM unnest($1::int[]) AS k", keys
        )


WORKER_LOCK_BUCKETS = 256


async def lock_workers(conn: asyncpg.Connection, worker_ids: Iterable[str]) -> None:
    """Serialise two processors that hold one worker's events on different partitions (a
    producer whose partitioner is not Kafka's murmur2, e.g. librdkafka's default CRC32).

    Locks hash buckets, not workers, so a batch takes at most ``WORKER_LOCK_BUCKETS`` advisory
    locks (each one uses a slot of PostgreSQL's shared lock table); they are taken in
    ascending order, after the partition locks, so two processors cannot deadlock.
    """
    buckets = sorted({zlib.crc32(w.encode()) % WORKER_LOCK_BUCKETS for w in worker_ids})
    if buckets:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(7302, b) FROM unnest($1::int[]) AS b", buckets
        )


async def claim_new(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Of these (source, id) keys, the ones never processed before (not yet recorded)."""
    seen = await processed_digests(conn, keys)
    return {k for k in keys if k not in seen}


async def processed_digests(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """Of these (source, id) keys, the ones already processed, with the content digest they
    were processed with (None: processed before digests were recorded)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT source, id, digest FROM processed_events"
        " WHERE (source, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["source"], r["id"]): r["digest"] for r in rows}


async def write_batch(conn: asyncpg.Connection, batch: BatchWrite, policy: Policy) -> list[int]:
    """Write one batch (inside the caller's transaction); returns the new outbox seqs.

    ``policy`` dates the rows the timers scan (a case's next deadline, a claim's stall).
    The state rows are ``batch.state`` when the processor made them (only the rows that
    changed), else every touched aggregate's.
    """
    state = batch.state if batch.state is not None else batch_state(batch.aggregates, policy)
    await _write_state(conn, state)
    await _write_history(conn, batch)
    rows = list(batch.outbox)
    rows += await _record_dead_letters(conn, batch.deadletters, batch.deadletter_topic)
    return await _insert_outbox(conn, rows)


async def write_dead_letters(
    conn: asyncpg.Connection, deadletters: Sequence[DeadLetter], deadletter_topic: str
) -> list[int]:
    """Record dead letters and their outbox rows (inside the caller's transaction); returns
    the new outbox seqs. A dead letter recorded before gets nothing twice."""
    return await _insert_outbox(
        conn, await _record_dead_letters(conn, deadletters, deadletter_topic)
    )


# The columns of a case row, in the order of ``case_row`` (``updated_at`` is the writer's).
CASE_COLUMNS = (
    "case_id",
    "worker_id",
    "kind",
    "category",
    "severity",
    "status",
    "post_id",
    "escalation_level",
    "ack_due",
    "resolve_due",
    "opened_at",
    "reports",
    "next_due",
    "partition",
    "doc",
)


def case_row(
    c: Case, next_due: datetime | None, partition: int | None, doc: Any
) -> tuple[Any, ...]:
    """A case as the values of ``CASE_COLUMNS`` (a row of ``CASE_UPSERT``'s arrays)."""
    return (
        c.case_id,
        c.worker_id,
        c.kind,
        c.category,
        c.severity,
        c.status,
        c.post_id,
        c.escalation_level,
        c.ack_due,
        c.resolve_due,
        c.opened_at,
        c.reports,
        next_due,
        partition,
        doc,
    )


def state_rows(
    aggregates: Sequence[tuple[Aggregate, int | None]],
    policy: Policy,
    doc: Callable[[Any], Any],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(workers, cases, claims) rows of the touched aggregates, each row's document made by
    ``doc`` (``doc_json`` for the live upserts and the rebuild's COPY)."""
    workers: list[tuple[Any, ...]] = []
    cases: list[tuple[Any, ...]] = []
    claims: list[tuple[Any, ...]] = []
    for agg, partition in aggregates:
        w = agg.worker
        workers.append(
            (
                w.worker_id,
                w.state,
                w.country,
                w.region,
                agg.in_crisis(),
                w.non_procedural,
                w.insured_until,
                partition,
                doc(w),
            )
        )
        for c in agg.cases.values():
            cases.append(case_row(c, case_next_due(c, policy), partition, doc(c)))
        for cl in agg.claims.values():
            claims.append(
                (
                    cl.claim_id,
                    cl.worker_id,
                    cl.status,
                    cl.last_change_at,
                    stall_due(cl, policy),
                    partition,
                    doc(cl),
                )
            )
    return workers, cases, claims


Rows = dict[str, tuple[tuple[Any, ...], Any]]  # id -> (row as state_rows makes it, doc as read)


@dataclass
class LoadedRows:
    """The rows of a batch's workers, cases and claims as ``load_aggregates`` read them: each
    in the form ``state_rows`` gives a row (its document as ``doc_json`` writes the object
    read from it), with the document as stored."""

    workers: Rows = field(default_factory=dict)
    cases: Rows = field(default_factory=dict)
    claims: Rows = field(default_factory=dict)

    def changed(self, table: Rows, row: tuple[Any, ...]) -> bool:
        """Whether ``row`` (``state_rows``'s) differs from the stored row of its id.

        Equal document bytes mean the object is as it was read; the stored document is then
        compared too (as JSON values), in case it does not read back to itself (a document
        of an older layout, which a write brings up to date, as it always did)."""
        stored = table.get(row[0])
        if stored is None or stored[0] != row:
            return True
        return bool(orjson.loads(row[-1]) != stored[1])


class Aggregates(dict[str, Aggregate]):
    """``load_aggregates``'s answer: the aggregates by worker id, and the rows they were
    read from (``loaded``)."""

    loaded: LoadedRows


_WORKER_SQL = (
    "SELECT worker_id, state, country, region, in_crisis, non_procedural, insured_until,"
    " partition, doc FROM workers WHERE worker_id = ANY($1)"
)
_CASE_SQL = f"SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE worker_id = ANY($1)"
_CLAIM_SQL = (
    "SELECT claim_id, worker_id, status, last_change_at, stall_due, partition, doc"
    " FROM claims WHERE worker_id = ANY($1)"
)


async def load_aggregates(conn: asyncpg.Connection, worker_ids: Iterable[str]) -> Aggregates:
    """The aggregates of these workers (a new one for a worker never stored), with the rows
    they were read from (for ``batch_state``: a row the batch leaves as it was is not
    written again)."""
    ids = sorted(set(worker_ids))
    aggs = Aggregates((w, Aggregate(worker=Worker(worker_id=w))) for w in ids)
    loaded = aggs.loaded = LoadedRows()
    if not ids:
        return aggs
    for r in await conn.fetch(_WORKER_SQL, ids):
        agg = aggs[r["worker_id"]]
        agg.worker = Worker.from_doc(r["doc"])
        agg.exists = True
        loaded.workers[r[0]] = ((*r[:-1], doc_json(agg.worker)), r[-1])
    for r in await conn.fetch(_CASE_SQL, ids):
        case = Case.from_doc(r["doc"])
        aggs[r["worker_id"]].cases[case.case_id] = case
        loaded.cases[r[0]] = ((*r[:-1], doc_json(case)), r[-1])
    for r in await conn.fetch(_CLAIM_SQL, ids):
        claim = Claim.from_doc(r["doc"])
        aggs[r["worker_id"]].claims[claim.claim_id] = claim
        loaded.claims[r[0]] = ((*r[:-1], doc_json(claim)), r[-1])
    return aggs


@dataclass
class BatchState:
    """The worker, case and claim rows of a batch (``state_rows``, documents by ``doc_json``)
    and the ones to write: all of them, or with ``loaded`` those that differ from the row
    read (a worker touched by events that changed nothing, the cases and claims its events
    did not change stay as they are). The cross-worker syncs (``infra.employers``,
    ``infra.agencies``) take the workers and cases written, whose facts alone can have
    changed."""

    rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]
    workers: list[tuple[Any, ...]]
    cases: list[tuple[Any, ...]]
    claims: list[tuple[Any, ...]]
    changed_workers: list[Worker]
    changed_cases: list[Case]
    loaded: LoadedRows | None = None


def batch_state(
    aggregates: Sequence[tuple[Aggregate, int | None]],
    policy: Policy,
    loaded: LoadedRows | None = None,
) -> BatchState:
    """The rows of the touched aggregates and those to write (see ``BatchState``)."""
    rows = state_rows(aggregates, policy, doc_json)
    workers, cases, claims = rows
    if loaded is not None:
        workers = [r for r in workers if loaded.changed(loaded.workers, r)]
        cases = [r for r in cases if loaded.changed(loaded.cases, r)]
        claims = [r for r in claims if loaded.changed(loaded.claims, r)]
    written_workers = {r[0] for r in workers}
    written_cases = {r[0] for r in cases}
    return BatchState(
        rows,
        workers,
        cases,
        claims,
        [a.worker for a, _ in aggregates if a.worker.worker_id in written_workers],
        [c for a, _ in aggregates for c in a.cases.values() if c.case_id in written_cases],
        loaded,
    )


async def _write_state(conn: asyncpg.Connection, state: BatchState) -> None:
    """Upsert the workers, cases and claims of the batch that changed (``BatchState``)."""
    workers, cases, claims = state.workers, state.cases, state.claims
    if workers:
        await conn.execute(
            """INSERT INTO workers (worker_id, state, country, region, in_crisis, non_procedural,
                   insured_until, partition, doc, updated_at)
               SELECT w, s, c, r, i, n, u, p, d, now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                           $6::bool[], $7::timestamptz[], $8::int[], $9::jsonb[])
                   AS t(w, s, c, r, i, n, u, p, d)
               ON CONFLICT (worker_id) DO UPDATE SET state=EXCLUDED.state,
                   country=EXCLUDED.country, region=EXCLUDED.region,
                   in_crisis=EXCLUDED.in_crisis, non_procedural=EXCLUDED.non_procedural,
                   insured_until=EXCLUDED.insured_until, partition=EXCLUDED.partition,
                   doc=EXCLUDED.doc, updated_at=now()""",
            *_columns(list({w[0]: w for w in workers}.values()), 9),
        )
    if cases:
        await _check_case_owners(conn, cases, state.loaded)
        # One row per case id, the first (a later row for the same id with another worker
        # would be refused by the guard, as row-by-row upserts refused it).
        first: dict[str, tuple] = {}
        for row in cases:
            first.setdefault(row[0], row)
        await conn.execute(CASE_UPSERT, *_columns(list(first.values()), len(CASE_COLUMNS)))
    if claims:
        await conn.execute(
            """INSERT INTO claims (claim_id, worker_id, status, last_change_at, stall_due,
                   partition, doc, updated_at)
               SELECT c, w, s, l, d, p, j, now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                           $5::timestamptz[], $6::int[], $7::jsonb[]) AS t(c, w, s, l, d, p, j)
               ON CONFLICT (claim_id) DO UPDATE SET status=EXCLUDED.status,
                   last_change_at=EXCLUDED.last_change_at, stall_due=EXCLUDED.stall_due,
                   partition=EXCLUDED.partition, doc=EXCLUDED.doc, updated_at=now()
               WHERE claims.doc IS DISTINCT FROM EXCLUDED.doc""",
            # One row per claim id, the last one, as row-by-row upserts would leave it (one
            # statement may not update a row twice).
            *_columns(list({c[0]: c for c in claims}.values()), 7),
        )


def _columns(rows: Sequence[tuple], width: int) -> list[list]:
    """Rows as column arrays for one ``unnest`` statement (one round trip and one plan for
    the whole batch, where ``executemany`` ran the statement once per row); documents are
    JSON bytes already (``doc_json``, ``json_bytes``), passed as ``jsonb[]``."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


async def _write_history(conn: asyncpg.Connection, batch: BatchWrite) -> None:
    """Append the timeline rows and the processed ids (the dedup table)."""
    if batch.timeline:
        timeline = [
            {"e": e.entry_id, "c": e.case_id, "a": e.at, "t": e.type, "r": e.actor,
             "d": e.detail, "s": src, "i": eid}
            for e, src, eid in batch.timeline
        ]  # fmt: skip
        text = _rows_json(timeline, naive=any(e.at.tzinfo is None for e, _, _ in batch.timeline))
        if text is not None:
            await conn.execute(_TIMELINE_JSON, text)
        else:
            await conn.execute(
                _TIMELINE_ARRAYS,
                *_columns(
                    [
                        (r["e"], r["c"], r["a"], r["t"], r["r"], json_bytes(r["d"]), r["s"], r["i"])
                        for r in timeline
                    ],
                    8,
                ),
            )
    if batch.processed:
        processed = [
            {"s": p.source, "i": p.id, "t": p.type, "w": p.worker_id, "p": p.topic,
             "n": p.partition, "o": p.offset, "r": p.outcome, "d": p.digest}
            for p in batch.processed
        ]  # fmt: skip
        text = _rows_json(processed)
        if text is not None:
            await conn.execute(_PROCESSED_JSON, text)
        else:
            await conn.execute(
                _PROCESSED_ARRAYS, *_columns([tuple(r.values()) for r in processed], 9)
            )
    if batch.sources_seen:
        seen = sorted(batch.sources_seen.items())
        await conn.execute(
            """INSERT INTO source_seen (source, partition, last_seen_at)
               SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[])
               ON CONFLICT (source, partition) DO UPDATE
                   SET last_seen_at = greatest(source_seen.last_seen_at, EXCLUDED.last_seen_at)""",
            [k[0] for k, _ in seen],
            [k[1] for k, _ in seen],
            [t for _, t in seen],
        )


# The timeline rows and the processed ids go as one JSON parameter (``_rows_json``): asyncpg
# checks every element of an array parameter against ``collections.abc`` ABCs in Python,
# which cost more than the rest of the statement (about a tenth of the client's CPU for the
# two statements, and PostgreSQL reads the JSON faster than nine unnested arrays). The
# arrays remain for what JSON cannot carry exactly.
_TIMELINE_JSON = """INSERT INTO case_timeline (entry_id, case_id, at, type, actor, detail,
       source, event_id)
   SELECT e, c, a, t, r, d, s, i
   FROM ROWS FROM (json_to_recordset($1::text::json) AS (e text, c text, a timestamptz,
                   t text, r text, d jsonb, s text, i text))
       WITH ORDINALITY AS u(e, c, a, t, r, d, s, i, n)
   ORDER BY n
   ON CONFLICT (entry_id) DO NOTHING"""
_TIMELINE_ARRAYS = """INSERT INTO case_timeline (entry_id, case_id, at, type, actor, detail,
       source, event_id)
   SELECT e, c, a, t, r, d, s, i
   FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
               $6::jsonb[], $7::text[], $8::text[])
       WITH ORDINALITY AS u(e, c, a, t, r, d, s, i, n)
   ORDER BY n
   ON CONFLICT (entry_id) DO NOTHING"""
_PROCESSED_JSON = """INSERT INTO processed_events (source, id, type, worker_id, topic,
       partition, "offset", outcome, digest)
   SELECT s, i, t, w, p, n, o, r, d
   FROM json_to_recordset($1::text::json) AS (s text, i text, t text, w text, p text, n int,
                                              o bigint, r text, d text)
   ON CONFLICT DO NOTHING"""
_PROCESSED_ARRAYS = """INSERT INTO processed_events (source, id, type, worker_id, topic,
       partition, "offset", outcome, digest)
   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::int[], $7::bigint[], $8::text[], $9::text[])
   ON CONFLICT DO NOTHING"""


def _rows_json(rows: list[dict[str, Any]], *, naive: bool = False) -> str | None:
    """Rows as JSON text for ``json_to_recordset``, or None (the caller sends arrays) when
    JSON would not carry them as arrays do: a value orjson refuses (a lone surrogate: the
    arrays fail as before), a NUL character (PostgreSQL refuses ``\\u0000`` with another
    error than the byte), a naive datetime (asyncpg reads it as the client's local time,
    PostgreSQL as the server's)."""
    if naive:
        return None
    try:
        text = orjson.dumps(rows)
    except TypeError:
        return None
    if b"\\u0000" in text:
        return None
    return text.decode()


async def _record_dead_letters(
    conn: asyncpg.Connection, dls: Sequence[DeadLetter], deadletter_topic: str
) -> list[OutboxRow]:
    """Insert the dead letters; the outbox rows of those not recorded before."""
    rows: list[OutboxRow] = []
    if dls:
        # One statement for the whole batch; only dead letters not recorded before (a
        # redelivery records nothing twice) get an outbox row.
        fresh = await conn.fetch(
            """INSERT INTO deadletters (topic, partition, "offset", digest, error, source,
                   event_id, key, value, headers)
               SELECT t, p, o, d, e, s, i, k, v, h::jsonb
               FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::text[])
                    AS u(t, p, o, d, e, s, i, k, v, h)
               ON CONFLICT DO NOTHING RETURNING seq, topic, partition, "offset", digest""",
            [d.topic for d in dls],
            [d.partition for d in dls],
            [d.offset for d in dls],
            [d.digest for d in dls],
            [safe_text(d.error) for d in dls],
            [d.source for d in dls],
            [d.event_id for d in dls],
            [d.key for d in dls],
            [d.value for d in dls],
            [json.dumps(encode_headers(d.headers)) for d in dls],
        )
        new = {(r["topic"], r["partition"], r["offset"], r["digest"]): r["seq"] for r in fresh}
        for d in dls:
            seq = new.pop((d.topic, d.partition, d.offset, d.digest), None)
            if seq is not None:
                rows.append(dead_letter_row(d, deadletter_topic, seq))
    return rows


async def _insert_outbox(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> list[int]:
    """Insert outbox rows (each checked to be publishable); returns the new seqs, sorted."""
    if not rows:
        return []
    for r in rows:
        size = record_size(r.key, r.value, r.headers)
        if size > MAX_RECORD_BYTES:
            raise OutputTooLarge(
                f"output event {r.event_id} on {r.topic} would be {size} bytes"
                f" (at most {MAX_RECORD_BYTES})"
            )
    inserted = await conn.fetch(
        """INSERT INTO outbox (event_id, topic, key, value, headers)
           SELECT e, t, k, v, h::jsonb
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[])
                AS u(e, t, k, v, h)
           ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id""",
        [r.event_id for r in rows],
        [r.topic for r in rows],
        [r.key for r in rows],
        [r.value for r in rows],
        [_headers_json(r.headers) for r in rows],
    )
    by_id: dict[str, OutboxRow] = {}
    for row in rows:
        by_id.setdefault(row.event_id, row)  # the statement inserts the first of an id
    for r in inserted:  # an event id already in the outbox keeps its first row and seq
        by_id[r["event_id"]].seq = r["seq"]
    return sorted(r["seq"] for r in inserted)


# The WHERE guard: an existing case never moves to another worker or post (the row stays as
# it is); ``_check_case_owners`` makes such a write fail loudly before it gets here. One
# statement for the batch: $1 to $15 are the columns of ``CASE_COLUMNS`` as arrays.
CASE_UPSERT = """INSERT INTO cases (case_id, worker_id, kind, category, severity, status, post_id,
       escalation_level, ack_due, resolve_due, opened_at, reports, next_due, partition, doc,
       updated_at)
   SELECT c, w, k, g, s, t, p, e, a, r, o, n, d, q, j, now()
   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
               $7::text[], $8::int[], $9::timestamptz[], $10::timestamptz[],
               $11::timestamptz[], $12::int[], $13::timestamptz[], $14::int[], $15::jsonb[])
       WITH ORDINALITY AS u(c, w, k, g, s, t, p, e, a, r, o, n, d, q, j, i)
   ORDER BY i
   ON CONFLICT (case_id) DO UPDATE SET kind=EXCLUDED.kind, category=EXCLUDED.category,
       severity=EXCLUDED.severity, status=EXCLUDED.status, post_id=EXCLUDED.post_id,
       escalation_level=EXCLUDED.escalation_level, ack_due=EXCLUDED.ack_due,
       resolve_due=EXCLUDED.resolve_due, reports=EXCLUDED.reports, next_due=EXCLUDED.next_due,
       partition=EXCLUDED.partition, doc=EXCLUDED.doc, updated_at=now()
   WHERE cases.worker_id = EXCLUDED.worker_id AND cases.post_id = EXCLUDED.post_id
     AND (cases.doc IS DISTINCT FROM EXCLUDED.doc
          OR cases.next_due IS DISTINCT FROM EXCLUDED.next_due)"""


async def _check_case_owners(
    conn: asyncpg.Connection, cases: Sequence[tuple], loaded: LoadedRows | None = None
) -> None:
    """Refuse (``CaseConflict``) a case row whose id exists with another worker or post.

    A case never changes worker or post (escalation raises its level, the post stays). The
    upsert's ``WHERE`` guard keeps such a row from ever being overwritten; this check makes
    the refusal loud instead of silent. A case read for its own worker in this transaction
    (``loaded``) with the same worker and post needs no look-up: its row is under that
    worker's lock, and the guard keeps any other writer from moving it.
    """
    ids = [
        c[0]
        for c in cases
        if loaded is None
        or (known := loaded.cases.get(c[0])) is None
        or (known[0][1], known[0][6]) != (c[1], c[6])
    ]
    if not ids:
        return
    rows = await conn.fetch(
        "SELECT case_id, worker_id, post_id FROM cases WHERE case_id = ANY($1::text[])", ids
    )
    stored = {r["case_id"]: (r["worker_id"], r["post_id"]) for r in rows}
    for c in cases:
        owner = stored.get(c[0])
        if owner is not None and owner != (c[1], c[6]):
            what = "worker" if owner[0] != c[1] else "post"
            raise CaseConflict(f"case {c[0]} already exists for another {what}; not moved")


def dead_letter_row(d: DeadLetter, deadletter_topic: str, deadletter_id: int) -> OutboxRow:
    """What goes on the dead-letter topic: the input with personal identifiers masked, cut to
    the caps, with the reason, its origin and the ``deadletters`` row id as headers."""
    value, masked = mask_record_value(d.value)
    headers: Headers = []
    original = [h for h in d.headers if not h[0].startswith("garda-")]
    if sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in original) <= (
        DEADLETTER_HEADERS_CAP
    ):
        headers += original
    else:
        headers.append(("garda-headers-dropped", str(len(original)).encode()))
    headers += [
        ("garda-error", _cap_text(safe_text(d.error), 4000)),
        ("garda-source-topic", d.topic.encode()),
        ("garda-source-partition", str(d.partition).encode()),
        ("garda-source-offset", str(d.offset).encode()),
        ("garda-deadletter-id", str(deadletter_id).encode()),
    ]
    if masked:
        headers.append(("garda-masked", ",".join(sorted(masked)).encode()))
    if len(value) > DEADLETTER_VALUE_CAP:
        headers += [
            ("garda-truncated", b"true"),
            ("garda-original-size", str(len(d.value)).encode()),
        ]
        value = value[:DEADLETTER_VALUE_CAP]
    key = d.key if d.key is None or len(d.key) <= 1024 else d.key[:1024]
    return OutboxRow(
        event_id=f"deadletter:{d.topic}:{d.partition}:{d.offset}:{d.digest}",
        topic=deadletter_topic,
        key=key,
        value=value,
        headers=headers,
    )


def safe_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cap_text(text: str, limit: int) -> bytes:
    """UTF-8 of ``text`` cut to ``limit`` bytes on a character boundary (never raises)."""
    return text.encode("utf-8", "backslashreplace")[:limit].decode("utf-8", "ignore").encode()


def mask_record_value(value: bytes) -> tuple[bytes, set[str]]:
    """``value`` with the values of personal identifier keys masked, and the keys masked.

    JSON is parsed and written back; anything else (invalid, truncated, nested too deeply)
    is masked textually, key by key."""
    try:
        doc = json.loads(value)
        if not isinstance(doc, dict | list):
            return value, set()
        masked_doc, keys = mask_document(doc)
        if not keys:
            return value, keys
        text = json.dumps(masked_doc, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace"), keys
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        text = value.decode("utf-8", "surrogateescape")
        masked_text, keys = mask_json_text(text)
        if not keys:
            return value, keys
        return masked_text.encode("utf-8", "surrogateescape"), keys
