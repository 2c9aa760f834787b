"""``garda rebuild``'s writes: the rows ``infra.store.write_batch`` writes, by COPY where the
read model cannot hold them yet.

The rebuild replays the log into an empty read model, so most rows of a batch are new: a
worker first seen in the batch, with its cases and claims, every timeline row and every
processed id. Those are COPYed (binary, one round trip per table); everything else takes
``write_batch``'s own statements.

Rules decided here (the design is silent):
- A worker stored before the batch goes through ``write_batch``'s upserts with all its cases
  and claims, so its rows end exactly as live leaves them. A worker not stored before is
  COPYed with its cases and claims.
- Timeline rows and processed ids are COPYed: the processor has dropped the events processed
  before, and derived ids are unique per event. A row that exists after all (a case id owned
  by another worker, an event another process recorded) makes the COPY fail, which rolls the
  batch back; the caller then runs that batch through the live path (upserts and
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
from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Any

import asyncpg
import orjson

from handlers.claims import stall_due
from handlers.clocks import case_next_due
from handlers.model import Aggregate, iso
from handlers.policy import Policy
from infra.db import Database, _init_connection
from infra.store import (
    CASE_COLUMNS,
    BatchWrite,
    _insert_outbox,
    _record_dead_letters,
    _write_history,
    _write_state,
    case_row,
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
                self.url, min_size=self._min, max_size=self._max, init=_init_bulk_connection
            )
        return self


def _fresh_rows(
    aggregates: Sequence[tuple[Aggregate, int | None]], policy: Policy
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(workers, cases, claims) rows of workers not stored before, as ``_write_state``."""
    workers, cases, claims = [], [], []
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
                doc_json(w),
            )
        )
        for c in agg.cases.values():
            cases.append(case_row(c, case_next_due(c, policy), partition, doc_json(c)))
        for cl in agg.claims.values():
            claims.append(
                (
                    cl.claim_id,
                    cl.worker_id,
                    cl.status,
                    cl.last_change_at,
                    stall_due(cl, policy),
                    partition,
                    doc_json(cl),
                )
            )
    return workers, cases, claims


async def write_bulk(
    conn: asyncpg.Connection,
    batch: BatchWrite,
    policy: Policy,
    new_workers: set[str],
    *,
    outbox: bool = False,
) -> list[int]:
    """Write one batch (inside the caller's transaction, on a ``BulkDatabase`` connection);
    returns the new outbox seqs (none unless ``outbox``). ``new_workers``: the batch's
    workers that had no stored row before it."""
    stored = [(a, p) for a, p in batch.aggregates if a.worker.worker_id not in new_workers]
    fresh = [(a, p) for a, p in batch.aggregates if a.worker.worker_id in new_workers]
    await _write_state(conn, stored, policy)
    workers, cases, claims = _fresh_rows(fresh, policy)
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
