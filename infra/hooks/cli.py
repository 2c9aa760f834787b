"""``garda hooks …`` and ``garda silences …``: what operators run (output for people).

- ``hooks list``: every receiver of ``GARDA_RECEIVERS`` (secrets hidden), enabled or
  disabled, with its pending / delivered / failed deliveries;
- ``hooks deliveries [--receiver R] [--status S] [--case C] [--limit N]``: newest first;
- ``hooks retry DELIVERY_ID…`` / ``hooks retry --failed [--receiver R]``: back to pending, due now;
- ``hooks enable NAME``: re-enable a receiver disabled by a 410 (its pending deliveries resume);
- ``hooks test NAME``: POST a signed ``garda.alert.test`` now and print the answer (not recorded);
- ``silences add --matcher K=V… --until T --reason R [--author A]`` / ``list [--all]`` /
  ``expire ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from errors import ConfigError
from infra.hooks.matching import parse_matcher_args
from infra.hooks.receivers import load_receivers
from infra.hooks.signing import alertmanager_body, cloudevent_body, sign
from infra.hooks.silences import add_silence, expire_silence, list_silences, parse_until
from infra.settings import Settings


async def _connect(settings: Settings) -> asyncpg.Connection:
    if not settings.database_url:
        raise ConfigError("GARDA_DATABASE_URL is required")
    return await asyncpg.connect(settings.database_url)


def cmd_hooks(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_hooks(args, settings))


async def _hooks(args: argparse.Namespace, settings: Settings) -> int:
    receivers = load_receivers(settings.receivers)
    if args.action == "test":
        return await _test(receivers, args.names, settings)
    conn = await _connect(settings)
    try:
        if args.action == "list":
            state = {r["name"]: r for r in await conn.fetch("SELECT * FROM hook_receivers")}
            counts: dict[str, dict[str, int]] = {}
            for r in await conn.fetch(
                "SELECT receiver, status, count(*) AS n FROM hook_deliveries GROUP BY 1, 2"
            ):
                counts.setdefault(r["receiver"], {})[r["status"]] = r["n"]
            if not len(receivers):
                print("no receivers (set GARDA_RECEIVERS to a receivers file)")
            for rcv in receivers:
                s = state.get(rcv.name)
                off = s["disabled_at"] if s is not None else None
                c = counts.pop(rcv.name, {})
                print(
                    f"{rcv.name}  {rcv.type}  {rcv.url}  "
                    f"{'DISABLED since ' + off.isoformat() if off else 'enabled'}  "
                    f"pending={c.get('pending', 0)} delivered={c.get('delivered', 0)}"
                    f" failed={c.get('failed', 0)}  match: {rcv.match.describe()}"
                )
                if s is not None and off:
                    print(f"    disabled: {s['disabled_reason']}")
            for name, c in counts.items():
                print(f"{name}  (not in the receivers file)  pending={c.get('pending', 0)}")
            return 0
        if args.action == "deliveries":
            where, params = [], []
            for col, val in (
                ("receiver", args.receiver),
                ("status", args.status),
                ("case_id", args.case),
            ):
                if val:
                    params.append(val)
                    where.append(f"{col} = ${len(params)}")
            params.append(args.limit)
            rows = await conn.fetch(
                "SELECT d.*, (SELECT count(*) FROM hook_alerts a WHERE a.delivery_id ="
                " d.delivery_id) AS alerts FROM hook_deliveries d"
                + (" WHERE " + " AND ".join(where) if where else "")
                + f" ORDER BY created_at DESC LIMIT ${len(params)}",
                *params,
            )
            for r in rows:
                print(
                    f"{r['delivery_id']}  {r['receiver']}  {r['status']}  attempts={r['attempts']}"
                    f"  alerts={r['alerts']}  case={r['case_id'] or '-'}"
                    f"  created={r['created_at'].isoformat()}"
                    + (
                        f"  next={r['next_attempt_at'].isoformat()}"
                        if r["status"] == "pending"
                        else ""
                    )
                    + (f"  error={r['last_error']}" if r["last_error"] else "")
                )
            held = await conn.fetch(
                "SELECT receiver, alert_id, alert_type, disposition, reason FROM hook_alerts"
                " WHERE disposition <> 'queued' AND delivery_id IS NULL"
                + (" AND receiver = $1" if args.receiver else "")
                + " ORDER BY created_at DESC LIMIT 50",
                *([args.receiver] if args.receiver else []),
            )
            for h in held:
                print(
                    f"{h['disposition']}: {h['alert_type']} {h['alert_id']} -> {h['receiver']}: {h['reason']}"
                )
            if not rows and not held:
                print("no deliveries")
            return 0
        if args.action == "retry":
            if args.failed:
                status = await conn.execute(
                    "UPDATE hook_deliveries SET status = 'pending', next_attempt_at = now(),"
                    " lease_until = NULL WHERE status = 'failed'"
                    + (" AND receiver = $1" if args.receiver else ""),
                    *([args.receiver] if args.receiver else []),
                )
            elif args.names:
                status = await conn.execute(
                    "UPDATE hook_deliveries SET status = 'pending', next_attempt_at = now(),"
                    " lease_until = NULL WHERE delivery_id = ANY($1) AND status <> 'delivered'",
                    args.names,
                )
            else:
                raise ConfigError("hooks retry: give delivery ids, or --failed")
            print(f"{status.split()[-1]} deliveries due now")
            return 0
        if args.action == "enable":
            for name in args.names:
                status = await conn.execute(
                    "UPDATE hook_receivers SET disabled_at = NULL, disabled_reason = NULL,"
                    " updated_at = now() WHERE name = $1 AND disabled_at IS NOT NULL",
                    name,
                )
                print(f"{name}: {'enabled' if status.endswith(' 1') else 'was not disabled'}")
            return 0
    finally:
        await conn.close()
    return 2


async def _test(receivers: Any, names: list[str], settings: Settings) -> int:
    if not names:
        raise ConfigError("hooks test: name the receiver(s)")
    worst = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for name in names:
            rcv = receivers.get(name)
            if rcv is None:
                raise ConfigError(f"hooks test: no receiver {name!r} in GARDA_RECEIVERS")
            event_id = uuid.uuid4().hex
            event = {
                "specversion": "1.0",
                "id": event_id,
                "source": "garda",
                "type": "garda.alert.test",
                "subject": name,
                "time": datetime.now(UTC).isoformat(),
                "data": {"alert": "test", "receiver": name, "note": "garda hooks test"},
            }
            did = "test_" + event_id[:20]
            if rcv.type == "alertmanager":
                body, headers = alertmanager_body([event]), {"Content-Type": "application/json"}
            else:
                body = cloudevent_body(did, name, [event])
                headers = {"Content-Type": "application/cloudevents+json"}
                headers.update(sign(rcv.secret or "", did, body))
            try:
                async with http.post(rcv.endpoint, data=body, headers=headers) as resp:
                    ok = 200 <= resp.status < 300
                    print(f"{name}: HTTP {resp.status} {'ok' if ok else 'FAILED'}")
                    worst = max(worst, 0 if ok else 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"{name}: FAILED {type(exc).__name__}: {exc}")
                worst = 1
    return worst


def cmd_silences(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_silences(args, settings))


async def _silences(args: argparse.Namespace, settings: Settings) -> int:
    conn = await _connect(settings)
    author = args.author or getpass.getuser()
    try:
        if args.action == "add":
            if not args.matcher or not args.until or not args.reason:
                raise ConfigError("silences add needs --matcher, --until and --reason")
            s = await add_silence(
                conn,
                parse_matcher_args(args.matcher),
                until=parse_until(args.until),
                author=author,
                reason=args.reason,
                token_id=f"cli:{author}",
            )
            print(f"{s.silence_id}  until {s.ends_at.isoformat()}  {s.matcher.describe()}")
            return 0
        if args.action == "list":
            found = await list_silences(conn, include_over=args.all)
            if not found:
                print("no active silences")
            now = datetime.now(UTC)
            for s in found:
                state = "active" if s.active(now) else "over"
                print(
                    f"{s.silence_id}  {state}  until {s.ends_at.isoformat()}  by {s.author}"
                    f"  silenced={s.silenced}  {s.matcher.describe()}  reason: {s.reason}"
                )
            return 0
        if args.action == "expire":
            if not args.silence_id:
                raise ConfigError("silences expire needs the silence id")
            gone = await expire_silence(conn, args.silence_id, by=author, token_id=f"cli:{author}")
            if gone is None:
                print(f"{args.silence_id}: unknown or already over")
                return 1
            print(f"{gone.silence_id} expired (silenced {gone.silenced} alerts)")
            return 0
    finally:
        await conn.close()
    return 2


def add_parsers(sub: Any) -> None:
    h = sub.add_parser("hooks", help="alert receivers: list, deliveries, retry, enable, test")
    h.add_argument("action", choices=["list", "deliveries", "retry", "enable", "test"])
    h.add_argument("names", nargs="*", help="delivery ids (retry) or receiver names (enable, test)")
    h.add_argument("--receiver")
    h.add_argument("--status", choices=["pending", "delivered", "failed"])
    h.add_argument("--case")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("--failed", action="store_true", help="retry: every failed delivery")
    h.set_defaults(func=cmd_hooks)
    s = sub.add_parser("silences", help="silence alerts for a while: add, list, expire")
    s.add_argument("action", choices=["add", "list", "expire"])
    s.add_argument("silence_id", nargs="?")
    s.add_argument("--matcher", action="append", help="NAME=VALUE[,VALUE…] (repeatable: AND)")
    s.add_argument("--until", help="ISO time with zone, or a duration from now (2h)")
    s.add_argument("--reason")
    s.add_argument("--author", help="who (default: your user name)")
    s.add_argument("--all", action="store_true", help="list: also expired ones")
    s.set_defaults(func=cmd_silences)
