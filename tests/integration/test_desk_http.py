"""The desk's HTTP side against a real worker: sign-in exchanges a token for a session
cookie, the cookie reaches the ordinary API with the token's scope, every write needs the
CSRF token, sessions end (sign-out, expiry, revoked token), the queue's urgency order and
keyset paging, the board, the live stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiohttp

from infra.settings import Settings
from tests.integration.desk_support import (
    JOHOR,
    TAIPEI,
    DeskClient,
    cookie_attributes,
    incident,
    open_cases,
)
from tests.integration.harness import WorkerProcess, db_fetch, new_token, run_cli


async def test_sign_in_session_csrf_and_scope(settings: Settings, worker: WorkerProcess) -> None:
    _, hq = await new_token(settings, hq=True)
    johor_id, johor = await new_token(settings, posts=[JOHOR])
    cases = await open_cases(
        settings, worker.url, hq, [incident("W-DESK-JB"), incident("W-DESK-TPE", TAIPEI)]
    )
    jb, tpe = cases["W-DESK-JB"], cases["W-DESK-TPE"]

    async with DeskClient(worker.url) as desk:
        # Without a session: the sign-in form, and the API refuses the cookie-less call.
        code, page = await desk.get("/desk")
        assert code == 200 and 'data-view="signin"' in page
        assert (await desk.get("/desk/session"))[0] == 401
        assert await desk.sign_in("garda_wrong") == 401
        assert await desk.sign_in(johor, next_=f"/desk/cases/{jb['case_id']}") == 303
        assert desk.location == f"/desk/cases/{jb['case_id']}"
        attrs = cookie_attributes(desk.set_cookie)
        assert {"httponly", "samesite", "path"} <= attrs and "secure" not in attrs
        assert "samesite=strict" in desk.set_cookie.lower().replace(" ", "")
        assert johor not in desk.set_cookie

        code, page = await desk.get(f"/desk/cases/{jb['case_id']}")
        assert code == 200 and 'data-view="case"' in page and johor not in page
        # Another post's case page: 404, even typed by hand; the API agrees.
        code, page = await desk.get(f"/desk/cases/{tpe['case_id']}")
        assert code == 404 and 'data-view="notfound"' in page
        assert (await desk.get(f"/api/cases/{tpe['case_id']}"))[0] == 404
        code, listing = await desk.get("/api/cases?limit=1000")
        assert code == 200 and {c["post_id"] for c in listing["cases"]} == {JOHOR}

        # Writes need the session's CSRF token.
        path = f"/api/cases/{jb['case_id']}/notes"
        code, body = await desk.post(path, {"actor": "officer-1", "note": "x"}, csrf="")
        assert code == 403 and "X-Garda-CSRF" in body["error"]
        code, _ = await desk.post(path, {"actor": "officer-1", "note": "x"}, csrf="forged")
        assert code == 403
        code, _ = await desk.post(
            path, {"actor": "officer-1", "note": "x"}, headers={"Origin": "http://evil.example"}
        )
        assert code == 403
        code, body = await desk.post(path, {"actor": "officer-1", "note": "from the desk"})
        assert code == 202, body
        code, body = await desk.post(
            f"/api/cases/{tpe['case_id']}/acknowledge", {"actor": "officer-1"}
        )
        assert code == 404
        audit = await db_fetch(
            settings.database_url,
            "SELECT token_id, status FROM audit_log WHERE path = $1 ORDER BY seq",
            path,
        )
        assert [r["status"] for r in audit] == [403, 403, 403, 202]
        assert audit[-1]["token_id"] == johor_id

        # Sign-out needs the CSRF token too, then the cookie is worthless.
        assert (await desk.post("/desk/signout", {}, csrf="nope"))[0] == 403
        assert (await desk.post("/desk/signout", {}))[0] == 200
        assert (await desk.get("/desk/session"))[0] == 401
        assert (await desk.get("/api/cases"))[0] == 401


async def test_sessions_expire_and_die_with_their_token(
    settings: Settings, worker: WorkerProcess
) -> None:
    token_id, token = await new_token(settings, posts=[JOHOR])
    async with DeskClient(worker.url) as idle, DeskClient(worker.url) as revoked:
        assert await idle.sign_in(token) == 303
        assert await revoked.sign_in(token) == 303
        await db_fetch(
            settings.database_url,
            "UPDATE desk_sessions SET last_seen_at = now() - interval '3 hours' WHERE csrf = $1",
            idle.csrf,
        )
        assert (await idle.get("/api/cases"))[0] == 401
        code, page = await idle.get("/desk")
        assert code == 200 and 'data-view="signin"' in page
        assert (await revoked.get("/api/cases"))[0] == 200
        assert run_cli(settings, "tokens", "revoke", token_id).returncode == 0
        assert (await revoked.get("/api/cases"))[0] == 401


async def test_queue_urgency_order_paging_search_and_board(
    settings: Settings, worker: WorkerProcess
) -> None:
    _, hq = await new_token(settings, hq=True)
    now = datetime.now(UTC)
    # Opened at different times: the oldest has the nearest (or a missed) deadline.
    events = [
        incident(f"W-Q-{i:02d}", time_=(now - timedelta(hours=i)).isoformat())
        for i in (1, 30, 5, 12, 2)
    ]
    events.append(incident("W-Q-CRIT", category="detention"))  # critical: ack within 3 h
    cases = await open_cases(settings, worker.url, hq, events)
    async with DeskClient(worker.url) as desk:
        assert await desk.sign_in(hq) == 303
        seen: list[dict] = []
        after = None
        while True:
            q = "/api/cases?order=urgency&status=open,acknowledged,reopened&limit=2"
            code, page = await desk.get(q + (f"&after={after}" if after else ""))
            assert code == 200, page
            seen += page["cases"]
            after = page.get("next")
            if not after:
                break
        ids = [c["worker_id"] for c in seen]
        assert len(ids) == len(set(ids)) == 6
        dues = [c["ack_due"] for c in seen]
        assert dues == sorted(dues)
        assert ids[0] == "W-Q-30"  # overdue (24 h SLA, opened 30 h ago) comes first
        assert ids.index("W-Q-CRIT") < ids.index("W-Q-01")  # 3 h left beats 23 h left

        code, found = await desk.get("/api/cases?q=W-Q-0")
        assert code == 200 and {c["worker_id"] for c in found["cases"]} == {
            "W-Q-01",
            "W-Q-05",
            "W-Q-02",
        }
        code, found = await desk.get(f"/api/cases?q={cases['W-Q-12']['case_id']}")
        assert [c["worker_id"] for c in found["cases"]] == ["W-Q-12"]
        assert (await desk.get("/api/cases?category=detention"))[1]["count"] == 1
        assert (await desk.get("/api/cases?status=open,bogus"))[0] == 400
        assert (await desk.get("/api/cases?order=sideways"))[0] == 400

        code, board = await desk.get("/api/board")
        assert code == 200
        row = next(p for p in board["posts"] if p["post_id"] == JOHOR)
        assert row["open"] == 6 and row["overdue"] == 1
        assert row["timezone"] == "Asia/Kuala_Lumpur"
        assert sum(row["opened_daily"]) == 6 and row["opened_daily"][-1] == 5
        assert row["median_ack_seconds"] is None


async def test_stream_pushes_changes_in_scope(settings: Settings, worker: WorkerProcess) -> None:
    _, hq = await new_token(settings, hq=True)
    _, johor = await new_token(settings, posts=[JOHOR])
    async with DeskClient(worker.url) as desk:
        assert await desk.sign_in(johor) == 303
        async with desk.http.get(
            worker.url + "/api/stream", timeout=aiohttp.ClientTimeout(total=30)
        ) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            events: list[tuple[str, dict]] = []

            async def read() -> None:
                event = None
                async for raw in stream.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event:
                        events.append((event, json.loads(line[6:])))

            reader = asyncio.create_task(read())
            try:
                await asyncio.sleep(1.0)
                started = asyncio.get_running_loop().time()
                await open_cases(
                    settings,
                    worker.url,
                    hq,
                    [incident("W-LIVE-TPE", TAIPEI), incident("W-LIVE-JB")],
                )
                while not any(e == "case" and d["worker_id"] == "W-LIVE-JB" for e, d in events):
                    assert asyncio.get_running_loop().time() - started < 10, events
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
            finally:
                reader.cancel()
        assert events[0][0] == "hello"
        workers = {d["worker_id"] for e, d in events if e == "case"}
        assert workers == {"W-LIVE-JB"}  # never another post's case
