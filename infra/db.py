"""PostgreSQL: the pool lifecycle and the migrations (applied on start, idempotently)."""

from __future__ import annotations

import json
from importlib import resources
from types import TracebackType
from typing import Any

import asyncpg
import orjson

from infra.logging import get_logger

log = get_logger("garda.db")

MIGRATION_LOCK = 0x6172_6461  # advisory lock id: one migrator at a time


# 19 digits in a row: a number that may lie beyond 64 bits (or a long digit string). Found by
# mapping every ASCII digit to b"0" and everything else to b"x" (``bytes.translate``) and
# looking for 19 zeros: ~2 µs for a 3 KB document, where ``re.search(rb"[0-9]{19}")`` took
# ~21 µs, five times orjson's own read of it (the live worker reads every stored aggregate).
_DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_NINETEEN_DIGITS = b"0" * 19


def has_long_digit_run(text: str | bytes) -> bool:
    """Whether ``text`` holds 19 ASCII digits in a row (what ``[0-9]{19}`` matches)."""
    raw = text if type(text) is bytes else text.encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
    return _NINETEEN_DIGITS in raw.translate(_DIGIT_MAP)


def stored_json(text: str | bytes) -> Any:
    """JSON from PostgreSQL: orjson (what the hot path reads back, several times faster),
    except where it would not give back what was stored: orjson reads an integer beyond 64
    bits as a float (2**70 -> 1.18e21), so a text with 19 digits in a row, and what orjson
    refuses (a number out of float range), is read by the json module, exactly."""
    if not has_long_digit_run(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _jsonb_encode(value: Any) -> bytes:
    """A jsonb parameter in PostgreSQL's binary form (a version byte, then the JSON text):
    ``bytes`` are JSON text made already (``handlers.model.doc_json``: the documents reach
    PostgreSQL without a str in between), anything else is written by ``json.dumps`` as
    before."""
    return b"\x01" + (value if type(value) is bytes else json.dumps(value).encode())


def _jsonb_decode(data: bytes) -> Any:
    """A jsonb value in binary form: ``stored_json`` of the text after the version byte
    (orjson reads the bytes, no str is decoded first)."""
    return stored_json(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb_encode,
        decoder=_jsonb_decode,
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=stored_json, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection beyond asyncpg's own part (which still
    runs: listeners cleared, a transaction left open rolled back): nothing.

    asyncpg's default (``Connection.reset``) also sends ``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` on every release: one more round trip per acquire,
    which on the loaded machine cost more than the statements themselves (two
    acquire/query/release cycles: 4.3 ms p50 with it, 0.14 ms without). Rule decided here:
    Garda keeps no session state on pooled connections: advisory locks are
    transaction-scoped (``pg_advisory_xact_lock``) except the prune's, which it releases
    itself in a ``finally``; ``LISTEN`` has its own connection (``infra.hooks.dispatcher``);
    no ``SET``, no cursor outside a transaction."""
    return None


class Database:
    """An asyncpg pool with an explicit ``start()/stop()`` lifecycle."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._min = min_size
        self._max = max_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return "Database(url=***)"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Database is not started")
        return self._pool

    async def start(self) -> Database:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min,
                max_size=self._max,
                init=_init_connection,
                reset=_reset_connection,
            )
        return self

    async def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def __aenter__(self) -> Database:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every migration shipped in infra/migrations, in order."""
    folder = resources.files("infra") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n.removesuffix(".sql"), (folder / n).read_text()) for n in names]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns the versions applied now.

    Safe to run from several workers at once (advisory lock) and any number of times.
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    if applied_now:
        log.info("migrations applied", versions=applied_now)
    return applied_now
