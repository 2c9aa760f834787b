"""``garda rebuild``'s writes: the rows ``infra.store.write_batch`` writes, by COPY where the
read model cannot hold them yet.

The rebuild replays the log into an empty read model, so most rows of a batch are new:
every timeline row and processed id, most workers with their cases and claims. Rows are
COPYed (binary, one round trip per table); the source watch and the dead letters take
``write_batch``'s own statements.

Rules decided here (the design is silent):
- Every touched worker is written whole, with its cases and claims, by COPY; the rows of a
  worker stored before the batch are deleted first (an upsert leaves the same values; only
  ``updated_at``, the write time, differs). A case is never moved: one that the batch would
  give another worker or post is refused here (``BulkRefused``), as live refuses it.
- Timeline rows and processed ids are COPYed: the processor has dropped the events processed
  before, and derived ids are unique per event. A row that exists after all (a case or claim
  id owned by another worker, an event another process recorded) makes the COPY fail, which
  rolls the batch back; the caller then runs that batch through the live path (upserts and
  ``ON CONFLICT``), so the result is live's (``streams.rebuild.RebuildProcessor``).
- Documents are serialised once, by orjson straight from the dataclasses (``doc_json``), to
  the JSON ``to_doc`` gives; the bulk connection's jsonb codec takes bytes as ready JSON
  text (``BulkDatabase``) and everything else as before (``json.dumps``).
- No outbox rows unless asked (``outbox=True``, ``garda rebuild --republish``): the output
  events were published when the log was first processed. Dead letters are recorded as
  live records them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import orjson

from errors import GardaError
from handlers.model import Aggregate, iso
from handlers.policy import Policy
from infra.db import Database, _init_connection, _reset_connection
from infra.store import (
    CASE_COLUMNS,
    BatchWrite,
    _insert_outbox,
    _record_dead_letters,
    _write_history,
    state_rows,
)

WORKER_COLUMNS = (
    "worker_id",
    "state",
    "country",
    "region",
    "in_crisis",
    "non_procedural",
    "insured_until",
    "partition",
    "doc",
)
CLAIM_COLUMNS = (
    "claim_id",
    "worker_id",
    "status",
    "last_change_at",
    "stall_due",
    "partition",
    "doc",
)
TIMELINE_COLUMNS = (
    "entry_id",
    "case_id",
    "at",
    "type",
    "actor",
    "detail",
    "source",
    "event_id",
)
PROCESSED_COLUMNS = (
    "source",
    "id",
    "type",
    "worker_id",
    "topic",
    "partition",
    "offset",
    "outcome",
    "digest",
)

_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME


def _json_default(value: Any) -> Any:
    """What ``handlers.model._to_json`` makes of a value JSON has no type for."""
    if type(value) is datetime and value.tzinfo is UTC:
        return value.isoformat()[:-6] + "Z"  # what iso() writes for it, without converting
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def doc_json(obj: Any) -> bytes:
    """``obj.to_doc()`` as JSON, written by orjson from the dataclass (no dict built)."""
    return orjson.dumps(obj, default=_json_default, option=_PASSTHROUGH)


def _jsonb_encode(value: Any) -> bytes:
    text = value if type(value) is bytes else json.dumps(value).encode()
    return b"\x01" + text  # jsonb's binary form: a version byte, then the text


def _jsonb_decode(data: bytes) -> Any:
    """As ``infra.db``'s reader: orjson, and the json module for what orjson refuses."""
    try:
        return orjson.loads(data[1:])
    except orjson.JSONDecodeError:
        return json.loads(data[1:])


async def _init_bulk_connection(conn: asyncpg.Connection) -> None:
    await _init_connection(conn)
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        schema="pg_catalog",
        format="binary",
    )


class BulkDatabase(Database):
    """A pool whose jsonb parameters may also be ready JSON (bytes), for COPY."""

    async def start(self) -> BulkDatabase:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min,
                max_size=self._max,
                init=_init_bulk_connection,
                reset=_reset_connection,  # as infra.db's pool: no reset round trip
            )
        return self


@dataclass
class StoredRows:
    """What a batch's workers had in the database before it."""

    workers: set[str] = field(default_factory=set)
    cases: dict[str, tuple[str, str]] = field(default_factory=dict)  # case id -> worker, post

    @classmethod
    def of(cls, aggregates: dict[str, Aggregate]) -> StoredRows:
        """From the aggregates ``infra.store.load_aggregates`` loaded."""
        return cls(
            {w for w, a in aggregates.items() if a.exists},
            {
                cid: (c.worker_id, c.post_id)
                for a in aggregates.values()
                for cid, c in a.cases.items()
            },
        )


class BulkRefused(GardaError):
    """A batch the bulk write cannot write as live would: the caller takes the live writes."""

    retriable = False


async def write_bulk(
    conn: asyncpg.Connection,
    batch: BatchWrite,
    policy: Policy,
    stored: StoredRows,
    *,
    outbox: bool = False,
) -> list[int]:
    """Write one batch (inside the caller's transaction, on a ``BulkDatabase`` connection);
    returns the new outbox seqs (none unless ``outbox``). ``stored``: what the batch's
    workers had in the database before it (``StoredRows.of``)."""
    again = [
        a.worker.worker_id for a, _ in batch.aggregates if a.worker.worker_id in stored.workers
    ]
    for agg, _ in batch.aggregates:
        for c in agg.cases.values():
            owner = stored.cases.get(c.case_id)
            if owner is not None and owner != (c.worker_id, c.post_id):
                # live refuses it (CaseConflict) and dead-letters the record
                raise BulkRefused(f"case {c.case_id} would move to another worker or post")
    if again:
        # Rows of workers stored before are replaced whole, as the upserts leave them.
        for table in ("workers", "cases", "claims"):
            await conn.execute(f"DELETE FROM {table} WHERE worker_id = ANY($1::text[])", again)
    workers, cases, claims = state_rows(batch.aggregates, policy, doc_json)
    for table, columns, rows in (
        ("workers", WORKER_COLUMNS, workers),
        ("cases", CASE_COLUMNS, cases),
        ("claims", CLAIM_COLUMNS, claims),
        (
            "case_timeline",
            TIMELINE_COLUMNS,
            [
                (e.entry_id, e.case_id, e.at, e.type, e.actor, orjson.dumps(e.detail), src, eid)
                for e, src, eid in batch.timeline
            ],
        ),
        (
            "processed_events",
            PROCESSED_COLUMNS,
            [
                (
                    p.source,
                    p.id,
                    p.type,
                    p.worker_id,
                    p.topic,
                    p.partition,
                    p.offset,
                    p.outcome,
                    p.digest,
                )
                for p in batch.processed
            ],
        ),
    ):
        if rows:
            await conn.copy_records_to_table(table, records=rows, columns=columns)
    await _write_history(conn, BatchWrite(sources_seen=batch.sources_seen))
    dead = await _record_dead_letters(conn, batch.deadletters, batch.deadletter_topic)
    if not outbox:
        return []
    return await _insert_outbox(conn, [*batch.outbox, *dead])
