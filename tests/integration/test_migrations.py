"""Migrations apply on start, in order, idempotently, and concurrently without harm."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from infra.db import migrate, migration_files


async def test_migrations_apply_once_and_are_idempotent(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
        assert applied == [v for v, _ in migration_files()]
        assert await migrate(conn) == []  # second run: nothing to do
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {
            "workers",
            "cases",
            "claims",
            "case_timeline",
            "processed_events",
            "outbox",
            "deadletters",
            "api_tokens",
            "audit_log",
            "schema_migrations",
        } <= tables
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_version_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        flat = [v for r in results for v in r]
        assert sorted(flat) == sorted(v for v, _ in migration_files())
    finally:
        for c in conns:
            await c.close()


async def test_case_timeline_is_append_only(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO case_timeline (entry_id, case_id, at, type) VALUES ('e1', 'c1', now(), 'x')"
        )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE case_timeline SET type = 'y'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM case_timeline")
    finally:
        await conn.close()


async def test_015_moves_escalation_and_claim_facts_out_of_detail(database_url: str) -> None:
    """Rows stored in the old layout (the facts as ``detail`` keys) come out of migration 015
    as typed fields, the rest of ``detail`` kept, the published detail unchanged, and the
    desk's escalated_to index on the new key."""
    from handlers.model import Case

    old_docs = {
        "CASE-ESC": {
            "kind": "protection",
            "escalation_level": 1,
            "detail": {
                "escalated_to": "KBRI-KUALA-LUMPUR",
                "resolve_deadline_missed": "2026-11-30T02:00:00Z",
                "clock_started_at": "2026-11-29T02:00:00Z",
                "claim_suggested": {"program": "JKM", "at": "2026-11-29T03:00:00Z"},
                "late_report": {"time": "2026-11-01T00:00:00Z", "received_at": "x"},
            },
        },
        "CASE-DSP": {
            "kind": "claim_dispute",
            "detail": {"claim_id": "CL-1", "program": "JKK", "reason": "r", "trigger": "rejected"},
        },
        "CASE-JKM": {
            "kind": "reintegration",
            "detail": {
                "trigger": "return reason deceased",
                "jkm": {"claim_id": None, "due": "2026-12-29T02:00:00Z", "reminded_at": None},
            },
        },
        "CASE-NONE": {"kind": "protection", "detail": {"reasons": ["no_worker_card"]}},
    }
    conn = await asyncpg.connect(database_url)
    try:
        for version, sql in migration_files():
            if version >= "015":
                break
            await conn.execute(sql)
        for case_id, extra in old_docs.items():
            doc = Case(
                case_id=case_id,
                worker_id="W-1",
                kind=extra["kind"],
                category=None,
                severity="high",
                post_id="KJRI-JOHOR-BAHRU",
                opened_at=datetime(2026, 11, 29, 2, tzinfo=UTC),
                escalation_level=extra.get("escalation_level", 0),
            ).to_doc()
            for typed in ("escalated_to", "resolve_deadline_missed", "clock_started_at"):
                del doc[typed]  # an old document has none of the new keys
            for typed in ("claim_id", "jkm_due", "jkm_reminded_at"):
                del doc[typed]
            del doc["claim_suggested"], doc["claim_suggested_at"]
            doc["detail"] = extra["detail"]
            old_docs[case_id] = doc
            await conn.execute(
                "INSERT INTO cases (case_id, worker_id, kind, severity, status, post_id,"
                " opened_at, doc) VALUES ($1, 'W-1', $2, 'high', 'open', 'KJRI-JOHOR-BAHRU',"
                " now(), $3::jsonb)",
                case_id,
                doc["kind"],
                json.dumps(doc),
            )
        await migrate(conn)
        rows = {
            r["case_id"]: json.loads(r["doc"])
            for r in await conn.fetch("SELECT case_id, doc::text AS doc FROM cases")
        }
        esc = rows["CASE-ESC"]
        assert esc["escalated_to"] == "KBRI-KUALA-LUMPUR"
        assert esc["resolve_deadline_missed"] == "2026-11-30T02:00:00Z"
        assert esc["clock_started_at"] == "2026-11-29T02:00:00Z"
        assert (esc["claim_suggested"], esc["claim_suggested_at"]) == (
            "JKM",
            "2026-11-29T03:00:00Z",
        )
        assert esc["detail"] == {"late_report": old_docs["CASE-ESC"]["detail"]["late_report"]}
        assert rows["CASE-DSP"]["claim_id"] == "CL-1"
        assert rows["CASE-DSP"]["detail"] == {
            "program": "JKK",
            "reason": "r",
            "trigger": "rejected",
        }
        jkm = rows["CASE-JKM"]
        assert (jkm["claim_id"], jkm["jkm_due"], jkm["jkm_reminded_at"]) == (
            None,
            "2026-12-29T02:00:00Z",
            None,
        )
        assert jkm["detail"] == {"trigger": "return reason deceased"}
        assert rows["CASE-NONE"] == old_docs["CASE-NONE"]  # nothing to move: untouched
        for case_id, old in old_docs.items():
            # The migrated row reads as the old one did (Case.from_doc lifts old rows too),
            # and publishes the same detail.
            assert Case.from_doc(rows[case_id]) == Case.from_doc(old)
            assert Case.from_doc(rows[case_id]).public()["detail"] == old["detail"]
        indexes = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'cases_escalated_desk_due_idx'"
        )
        assert "escalated_to" in indexes and "'detail'" not in indexes, indexes
    finally:
        await conn.close()
