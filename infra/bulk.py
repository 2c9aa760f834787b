"""``garda rebuild``'s writes: the rows ``infra.store.write_batch`` writes, by COPY where the
read model cannot hold them yet.

The rebuild replays the log into an empty read model, so most rows of a batch are new:
every timeline row and processed id, most workers with their cases and claims. Rows are
COPYed (binary, one round trip per table); the source watch and the dead letters take
``write_batch``'s own statements.

Rules decided here (the design is silent):
- The caller (``streams.rebuild.RebuildProcessor``) decides when a worker's rows are
  written (once, when it leaves its cache or at the end): ``write_state`` COPYs the workers
  with their cases and claims; the rows of a worker stored before are deleted first (an
  upsert leaves the same values; only ``updated_at``, the write time, differs).
  ``load_stored`` reads back only workers that have a row (one round trip when none has);
  ``case_owners`` is what a new case id is checked against.
- ``write_history``: timeline rows and processed ids are COPYed: the processor has dropped
  the events processed before, and derived ids are unique per event. A row that exists
  after all (an event another process recorded) makes the COPY fail, which rolls the batch
  back; the caller then runs that batch through the live path (upserts and ``ON
  CONFLICT``), so the result is live's.
- Documents are serialised once, by orjson straight from the dataclasses
  (``handlers.model.doc_json``, as the live upserts write them), to the JSON ``to_doc``
  gives; the pool's jsonb codec (``infra.db``) takes bytes as ready JSON text and
  everything else as before (``json.dumps``).
- No outbox rows unless asked (``outbox=True``, ``garda rebuild --republish``): the output
  events were published when the log was first processed. Dead letters are recorded as
  live records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import asyncpg
import orjson

from errors import GardaError
from handlers.model import Aggregate, Case, Claim, Worker, doc_json
from handlers.policy import Policy
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

# A ``ProcessedId`` as its COPY row (the fields are the columns; one call in C per row).
_PROCESSED_ROW = attrgetter(*PROCESSED_COLUMNS)


class BulkRefused(GardaError):
    """A batch the bulk write cannot write as live would: the caller takes the live writes."""

    retriable = False


async def load_stored(conn: asyncpg.Connection, worker_ids: Sequence[str]) -> dict[str, Aggregate]:
    """The stored aggregates of those of ``worker_ids`` that have a worker row (the rebuild
    writes a worker's row with its cases and claims, so a worker without a row has none):
    one round trip when none has one, the rebuild's usual case."""
    if not worker_ids:
        return {}
    rows = await conn.fetch(
        "SELECT worker_id, doc FROM workers WHERE worker_id = ANY($1::text[])", list(worker_ids)
    )
    if not rows:
        return {}
    aggs = {r["worker_id"]: Aggregate(worker=Worker.from_doc(r["doc"]), exists=True) for r in rows}
    ids = list(aggs)
    for r in await conn.fetch("SELECT worker_id, doc FROM cases WHERE worker_id = ANY($1)", ids):
        case = Case.from_doc(r["doc"])
        aggs[r["worker_id"]].cases[case.case_id] = case
    for r in await conn.fetch("SELECT worker_id, doc FROM claims WHERE worker_id = ANY($1)", ids):
        claim = Claim.from_doc(r["doc"])
        aggs[r["worker_id"]].claims[claim.claim_id] = claim
    return aggs


async def case_owners(
    conn: asyncpg.Connection, case_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """Stored case id -> (worker, post), for those of ``case_ids`` that are stored."""
    if not case_ids:
        return {}
    rows = await conn.fetch(
        "SELECT case_id, worker_id, post_id FROM cases WHERE case_id = ANY($1::text[])",
        list(case_ids),
    )
    return {r["case_id"]: (r["worker_id"], r["post_id"]) for r in rows}


async def write_state(
    conn: asyncpg.Connection,
    aggregates: Sequence[tuple[Aggregate, int | None]],
    policy: Policy,
    replace: Sequence[str] = (),
) -> None:
    """COPY the workers, cases and claims of ``aggregates`` (inside the caller's
    transaction); the stored rows of the workers in ``replace`` are deleted first."""
    if replace:
        # Rows of workers stored before are replaced whole, as the upserts leave them.
        for table in ("workers", "cases", "claims"):
            await conn.execute(
                f"DELETE FROM {table} WHERE worker_id = ANY($1::text[])", list(replace)
            )
    workers, cases, claims = state_rows(aggregates, policy, doc_json)
    for table, columns, rows in (
        ("workers", WORKER_COLUMNS, workers),
        ("cases", CASE_COLUMNS, cases),
        ("claims", CLAIM_COLUMNS, claims),
    ):
        if rows:
            await conn.copy_records_to_table(table, records=rows, columns=columns)


async def write_history(
    conn: asyncpg.Connection, batch: BatchWrite, *, outbox: bool = False
) -> list[int]:
    """Write one batch's history (inside the caller's transaction, on an ``infra.db`` pool
    connection): timeline rows and processed ids by COPY, the sources seen and the dead
    letters as live writes them, and the outbox rows only if ``outbox``; returns the new
    outbox seqs. The workers' own rows are ``write_state``'s."""
    for table, columns, rows in (
        (
            "case_timeline",
            TIMELINE_COLUMNS,
            [
                (e.entry_id, e.case_id, e.at, e.type, e.actor, orjson.dumps(e.detail), src, eid)
                for e, src, eid in batch.timeline
            ],
        ),
        ("processed_events", PROCESSED_COLUMNS, list(map(_PROCESSED_ROW, batch.processed))),
    ):
        if rows:
            await conn.copy_records_to_table(table, records=rows, columns=columns)
    await _write_history(conn, BatchWrite(sources_seen=batch.sources_seen))
    dead = await _record_dead_letters(conn, batch.deadletters, batch.deadletter_topic)
    if not outbox:
        return []
    return await _insert_outbox(conn, [*batch.outbox, *dead])


async def mark_rebuild_started(conn: asyncpg.Connection) -> None:
    """Record that a rebuild writes this read model (``rebuild_in_progress``, migration 016)."""
    await conn.execute(
        "INSERT INTO rebuild_in_progress (singleton) VALUES (true)"
        " ON CONFLICT (singleton) DO UPDATE SET started_at = now()"
    )


async def mark_rebuild_done(conn: asyncpg.Connection) -> None:
    """The rebuild finished: the read model is whole again."""
    await conn.execute("DELETE FROM rebuild_in_progress")


async def rebuild_started_at(conn: asyncpg.Connection) -> Any:
    """When the rebuild that is writing (or was interrupted writing) this read model started;
    None when there is none (or the database predates migration 016)."""
    if await conn.fetchval("SELECT to_regclass('rebuild_in_progress')") is None:
        return None
    return await conn.fetchval("SELECT started_at FROM rebuild_in_progress")
