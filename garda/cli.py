"""The ``garda`` command: dev, worker, migrate, simulate, rebuild, prune, repolicy, bench,
tokens, hooks and silences. The composition root: the one module that wires every layer."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from errors import GardaError
from infra.logging import configure_logging, get_logger
from infra.settings import Settings, load_settings, mask_url

log = get_logger("garda.cli")

DEV_TOKEN_LABEL = "garda dev session"
# The dev session token is headquarters, bound to the sources of the simulator and of the
# examples in README and docs (an HQ token publishes only as sources bound to it).
DEV_SOURCES = (
    "bpjs-ketenagakerjaan/claims",
    "bpjs-tk/claims",
    "kbri-kuala-lumpur/case-desk",
    "kbri-riyadh/case-desk",
    "kbri-seoul/case-desk",
    "kbri-tokyo/consular",
    "kdei-taipei/case-desk",
    "kjri-hong-kong/case-desk",
    "kjri-johor-bahru/case-desk",
    "kp2mi/hotline",
    "mission/desk",
    "siskop2mi/embarkation",
    "siskop2mi/embarkation-cgk",
    "siskop2mi/embarkation-sub",
)


def _run_worker(
    settings: Settings,
    *,
    demo: dict[str, Any] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    after_stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run the processors and the API in this process until Ctrl-C / SIGTERM.

    The Faust worker runs ``loop`` (a new one by default) and closes it when it stops.
    ``after_stop`` runs in that loop once the worker has stopped, its start finished or
    given up, and before the loop closes (``garda dev`` stops its embedded stack there)."""
    import faust

    from handlers.policy import load_policy
    from streams.app import create_app

    policy = load_policy(settings.policy)
    if loop is None:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings, policy)
    if demo is not None:
        from infra.simulate import simulate

        @app.task
        async def _demo() -> None:
            await asyncio.sleep(3)
            await simulate(settings, **demo)

    class Worker(faust.Worker):
        def _shutdown_loop(self) -> None:
            # mode's last step (gather the tasks, close the loop), called once the stop is
            # complete: nothing of the app runs any more.
            if after_stop is not None:
                self.loop.run_until_complete(after_stop())
            super()._shutdown_loop()

    worker = Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    worker.spinner = None  # its terminal escapes would corrupt the JSON log stream
    from infra.gctune import tune_for_throughput

    tune_for_throughput()  # built: freeze what exists, collect cycles less often
    log.info(
        "worker starting",
        bootstrap=settings.kafka_bootstrap,
        web=f"http://{settings.web_host}:{settings.web_port}",
        partitions=settings.partitions,
        group=settings.group_id,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def _prepare(settings: Settings) -> None:
    """Topics and migrations, idempotently."""
    from infra.db import Database, migrate
    from infra.kafka_admin import ensure_topics

    await ensure_topics(settings.kafka_bootstrap, settings)
    if settings.database_url:
        async with Database(settings.database_url, max_size=1) as db, db.pool.acquire() as conn:
            await migrate(conn)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    database_url = settings.database_url
    if not database_url:
        raise GardaError("garda worker needs GARDA_DATABASE_URL (garda dev starts an embedded one)")
    if args.web_port is not None:
        settings = settings.replace(web_port=args.web_port)
    if args.wait > 0:
        from infra.readiness import wait_for_stack

        asyncio.run(wait_for_stack(database_url, settings.kafka_bootstrap, timeout=args.wait))
    if args.create_topics:
        asyncio.run(_prepare(settings))
    asyncio.run(_refuse_a_rebuild_in_progress(database_url))
    return _run_worker(settings)


async def _refuse_a_rebuild_in_progress(database_url: str) -> None:
    """A worker must not start on a read model a rebuild is writing or left half-written:
    it would take the processed ids as done and never write those workers' rows."""
    from infra.bulk import rebuild_started_at
    from infra.db import Database

    async with Database(database_url, max_size=1) as db, db.pool.acquire() as conn:
        started = await rebuild_started_at(conn)
    if started is not None:
        raise GardaError(
            f"a garda rebuild started {started:%Y-%m-%d %H:%M} UTC is writing this database or"
            " was interrupted: wait for it to finish, or run garda rebuild --force, before"
            " starting workers"
        )


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from infra.broker import EmbeddedBroker
    from infra.postgres import EmbeddedPostgres

    data = settings.data_dir
    broker = EmbeddedBroker(data / "broker")
    pg = None if settings.database_url else EmbeddedPostgres(data / "pg")

    async def up() -> Settings:
        await broker.start()
        url = settings.database_url
        if pg is not None:
            await pg.start()
            url = await pg.create_database("garda")
        s = settings.replace(kafka_bootstrap=broker.bootstrap, database_url=url)
        await _prepare(s)
        return s

    async def dev_token(s: Settings) -> str:
        from infra.db import Database
        from infra.tokens import create_token

        async with Database(s.database_url or "", max_size=1) as db, db.pool.acquire() as conn:
            # One session token at a time: the previous session's stops working.
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE label = $1 AND revoked_at IS NULL",
                DEV_TOKEN_LABEL,
            )
            _, token = await create_token(
                conn, posts=[], hq=True, label=DEV_TOKEN_LABEL, sources=DEV_SOURCES
            )
        return token

    async def down() -> None:
        await broker.stop()
        if pg is not None:
            await pg.stop()
        log.info("dev stack stopped", database="embedded" if pg is not None else "external")

    # One event loop for the whole session: the stack starts in it, the worker runs it and
    # stops the stack in it once the app has stopped (Ctrl-C, SIGTERM, or a failure), then
    # closes it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        s = loop.run_until_complete(up())
        token = loop.run_until_complete(dev_token(s))
        print(dev_banner(s, token, pg.password_file if pg else None), file=sys.stderr)
        demo = None
        if args.demo:
            demo = {"rate": args.rate, "duration": args.duration, "seed": args.seed}
        return _run_worker(s, demo=demo, loop=loop, after_stop=down)
    finally:
        if not loop.is_closed():  # the worker never ran: a failure while starting the stack
            loop.run_until_complete(down())
            loop.close()


def dev_banner(s: Settings, token: str, password_file: Path | None) -> str:
    """What ``garda dev`` prints at start: never a database password (``password_file`` is
    where the embedded database keeps its own, or None for the user's GARDA_DATABASE_URL)."""
    url = mask_url(s.database_url or "")
    if password_file is not None:
        where = f"embedded PostgreSQL in {password_file.parent}"
        shown = url.replace(":***@", ":$(cat " + shlex.quote(str(password_file)) + ")@", 1)
        db_line = f'export GARDA_DATABASE_URL="{shown}"'
    else:
        where = "GARDA_DATABASE_URL"
        db_line = f"{url} (your GARDA_DATABASE_URL)"
    api = f"http://{s.web_host}:{s.web_port}"
    return (
        f"\n  Garda dev stack is up\n"
        f"    broker   {s.kafka_bootstrap} (Tansu, memory storage)\n"
        f"    database {where}\n"
        f"    API      {api}/api/cases\n"
        f"  Database, for garda tokens/migrate/prune:\n"
        f"    {db_line}\n\n"
        f"  A headquarters token for this session (shown once, stored hashed):\n"
        f"    export GARDA_TOKEN={token}\n"
        f'    curl -H "Authorization: Bearer $GARDA_TOKEN" {api}/api/cases\n\n'
        f"  Ctrl-C stops everything.\n"
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from infra.db import Database, migrate

    if not settings.database_url:
        raise GardaError("garda migrate needs GARDA_DATABASE_URL")
    url = settings.database_url

    async def run() -> list[str]:
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            return await migrate(conn)

    applied = asyncio.run(run())
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from infra.simulate import simulate

    asyncio.run(
        simulate(
            settings,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed,
            progress=not args.quiet,
        )
    )
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from infra.db import Database, migrate
    from infra.tokens import create_token, list_tokens, revoke_token

    if not settings.database_url:
        raise GardaError("garda tokens needs GARDA_DATABASE_URL (the database garda dev uses)")
    url = settings.database_url

    async def run() -> int:
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            await migrate(conn)
            if args.action == "create":
                if not args.hq and not args.post and not args.producer:
                    raise GardaError(
                        "garda tokens create needs --post ID, --hq or --producer SOURCE"
                        " (each repeatable but --hq, and combinable)"
                    )
                if args.post:
                    from handlers.policy import load_policy

                    known = load_policy(settings.policy).posts
                    unknown = [p for p in args.post if p not in known]
                    if unknown:
                        raise GardaError(
                            f"unknown post(s) {', '.join(unknown)}; see GET /api/posts"
                        )
                try:
                    token_id, token = await create_token(
                        conn,
                        posts=args.post or [],
                        hq=args.hq,
                        label=args.label,
                        sources=args.producer or [],
                    )
                except ValueError as exc:
                    raise GardaError(str(exc)) from exc
                print(f"token id: {token_id}")
                print(f"token:    {token}")
                print("This token is shown once; only its hash is stored.", file=sys.stderr)
            elif args.action == "list":
                for t in await list_tokens(conn):
                    scope = t.scope_text
                    state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
                    print(f"{t.token_id}  {scope:<40} {state:<24} {t.label or ''}")
            else:
                if not args.token_id:
                    raise GardaError("garda tokens revoke needs a token id (see garda tokens list)")
                if not await revoke_token(conn, args.token_id):
                    raise GardaError(f"no active token {args.token_id}")
                print(f"revoked {args.token_id}")
        return 0

    return asyncio.run(run())


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.policy import load_policy
    from streams.rebuild import rebuild

    asyncio.run(
        rebuild(
            settings,
            load_policy(settings.policy),
            batch_size=args.batch_size,
            force=args.force,
            republish=args.republish,
            processes=args.processes,
        )
    )
    return 0


# Why rows past the cutoff were kept, per table (``garda prune`` output).
KEPT_AS = {
    "outbox": "unpublished",
    "hook_deliveries": "pending",
    "hook_alerts": "held",
}


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.policy import load_policy
    from infra.db import Database, migrate
    from infra.retention import prune

    if not settings.database_url:
        raise GardaError("garda prune needs GARDA_DATABASE_URL")
    url = settings.database_url
    retention = load_policy(settings.policy).retention

    def progress(table: str, done: int, total: int) -> None:
        if not args.dry_run and total:
            print(f"  {table}: {done}/{total} deleted", file=sys.stderr)

    async def run() -> int:
        async with Database(url, max_size=1) as db, db.pool.acquire() as conn:
            await migrate(conn)
            report = await prune(conn, retention, dry_run=args.dry_run, progress=progress)
        if report.skipped:
            print("another Garda process is pruning right now; try again later", file=sys.stderr)
            return 1
        verb = "would delete" if report.dry_run else "deleted"
        for t in report.tables:
            line = f"{t.table:<17} {verb} {t.eligible if report.dry_run else t.deleted:>9}"
            line += f"  (older than {t.older_than:%Y-%m-%d %H:%M:%S} UTC)"
            if t.kept:
                line += f"; kept {t.kept} {KEPT_AS.get(t.table, 'on purpose')}"
            print(line)
        return 0

    return asyncio.run(run())


def cmd_repolicy(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.policy import load_policy
    from infra.repolicy import RepolicyReport, repolicy

    def progress(report: RepolicyReport) -> None:
        print(
            f"scanned {report.scanned} open cases, {len(report.changes)} to change",
            file=sys.stderr,
        )

    report = asyncio.run(
        repolicy(settings, load_policy(settings.policy), dry_run=args.dry_run, progress=progress)
    )
    for change in report.changes:
        fields = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in change.fields.items())
        print(f"{change.case_id}  {change.severity}  {fields}")
    verb = "would change" if args.dry_run else "commands sent for"
    print(
        f"{report.scanned} open cases scanned; {verb} {len(report.changes)}"
        + ("" if args.dry_run else " (the processors apply them in order)"),
        file=sys.stderr,
    )
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """``garda report agencies``: the agency (P3MI) scorecard, as a table or CSV."""
    from datetime import UTC, datetime

    import asyncpg

    from handlers.policy import load_policy
    from infra.agencies import scorecards
    from infra.reports import parse_since, render

    if not settings.database_url:
        raise GardaError("garda report needs GARDA_DATABASE_URL")
    url = settings.database_url
    policy = load_policy(settings.policy)
    since = parse_since(args.since, policy, datetime.now(UTC))

    async def run() -> str:
        conn = await asyncpg.connect(url)
        try:
            return render(await scorecards(conn, since), as_csv=args.csv)
        finally:
            await conn.close()

    sys.stdout.write(asyncio.run(run()))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """``python -m bench ARGS`` from the source tree (the suite is not part of the wheel)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "__main__.py").is_file():
        raise GardaError("garda bench runs from a source checkout (bench/ is not installed)")
    return subprocess.call([sys.executable, "-m", "bench", *args.args], cwd=root)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="garda", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="everything on one machine: embedded broker and database")
    dev.add_argument("--demo", action="store_true", help="feed simulated traffic")
    dev.add_argument("--rate", type=float, default=20.0, help="demo events per second")
    dev.add_argument("--duration", type=float, default=60.0, help="demo seconds")
    dev.add_argument(
        "--seed",
        type=int,
        default=None,
        help="traffic seed (default: a new one each run, so workers are new)",
    )
    dev.set_defaults(func=cmd_dev, log_format="console")

    w = sub.add_parser("worker", help="processors + API against GARDA_KAFKA_BOOTSTRAP/DATABASE_URL")
    w.add_argument("--web-port", type=int, default=None)
    w.add_argument("--create-topics", action="store_true", help="create topics, apply migrations")
    w.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for the database and the broker at start (0: do not wait)",
    )
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("migrate", help="apply database migrations")
    m.set_defaults(func=cmd_migrate)

    s = sub.add_parser("simulate", help="publish realistic traffic to the input topics")
    s.add_argument(
        "--rate", type=float, default=50.0, help="events per second (0: as fast as possible)"
    )
    s.add_argument("--duration", type=float, default=30.0, help="seconds")
    s.add_argument(
        "--seed",
        type=int,
        default=None,
        help="traffic seed; the same seed gives the same workers and incidents "
        "(default: a new one each run)",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_simulate)
    r = sub.add_parser("rebuild", help="replay the input topics into an empty read model")
    r.add_argument("--batch-size", type=int, default=10_000, help="records per transaction")
    r.add_argument("--force", action="store_true", help="clear a non-empty read model first")
    r.add_argument("--republish", action="store_true", help="publish the output events again")
    r.add_argument(
        "--processes",
        type=int,
        default=None,
        help="parallel processes, each replaying some partitions (default: one per CPU)",
    )
    r.set_defaults(func=cmd_rebuild)

    pr = sub.add_parser("prune", help="delete rows older than the policy's [retention]")
    pr.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    pr.set_defaults(func=cmd_prune)

    rp = sub.add_parser(
        "repolicy",
        help="recompute open cases' deadlines after an SLA change (restart the workers first)",
    )
    rp.add_argument("--dry-run", action="store_true", help="list what would change, send nothing")
    rp.set_defaults(func=cmd_repolicy)

    rep = sub.add_parser("report", help="reports for supervision: agencies (P3MI scorecard)")
    rep.add_argument("report", choices=["agencies"])
    rep.add_argument("--since", help="a date (2026-01-01), ISO time or duration (90d)")
    rep.add_argument("--csv", action="store_true", help="CSV instead of a table")
    rep.set_defaults(func=cmd_report)

    b = sub.add_parser(
        "bench", add_help=False, help="the benchmark suite (garda bench --help for its options)"
    )
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("tokens", help="API bearer tokens: create, list, revoke")
    t.add_argument("action", choices=["create", "list", "revoke"])
    t.add_argument("token_id", nargs="?", help="for revoke")
    t.add_argument("--post", action="append", help="post id the token acts for (repeatable)")
    t.add_argument("--hq", action="store_true", help="headquarters: sees every post")
    t.add_argument(
        "--producer",
        action="append",
        metavar="SOURCE",
        help="CloudEvents source the token may publish as on POST /api/events (repeatable)",
    )
    t.add_argument("--label", help="who the token is for")
    t.set_defaults(func=cmd_tokens)

    from infra.hooks.cli import add_parsers

    add_parsers(sub)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``garda bench`` passes everything after it to ``python -m bench``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        fmt = settings.log_format
        if getattr(args, "log_format", None) == "console" and "GARDA_LOG_FORMAT" not in os.environ:
            fmt = "console"
        configure_logging(fmt, settings.log_level)
        return args.func(args, settings) or 0
    except GardaError as exc:
        print(f"garda: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
