"""API access (design §6): post-scoped and headquarters tokens, revocation, the audit log and
``garda tokens create|list|revoke``, against a real ``garda worker`` process."""

from __future__ import annotations

import hashlib
import json
import re

import aiohttp

from infra.settings import Settings
from schemas import topics
from tests.integration.events import incident
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    cloudevent,
    db_fetch,
    eventually,
    get_json,
    new_token,
    post_json,
    publish_events,
    run_cli,
)

JOHOR, TAIPEI = "KJRI-JOHOR-BAHRU", "KDEI-TAIPEI"


async def two_cases(settings: Settings, url: str, hq: str) -> tuple[dict, dict]:
    await publish_events(
        settings,
        topics.INCIDENTS,
        [incident("W-JB", region="MY-01"), incident("W-TPE", country="TW", region=None)],
    )
    _, body = await eventually(
        lambda: get_json(f"{url}/api/cases?kind=protection", headers=bearer(hq)),
        lambda r: r[0] == 200 and len(r[1]["cases"]) == 2,
        timeout=15,
    )
    by_worker = {c["worker_id"]: c for c in body["cases"]}
    jb, tpe = by_worker["W-JB"], by_worker["W-TPE"]
    assert jb["post_id"] == JOHOR and tpe["post_id"] == TAIPEI
    return jb, tpe


async def audit_rows(settings: Settings) -> list[dict]:
    rows = await db_fetch(
        settings.database_url,
        "SELECT token_id, method, path, status, event_id, detail FROM audit_log ORDER BY seq",
    )
    return [dict(r, detail=json.loads(r["detail"])) for r in rows]


async def test_post_tokens_see_only_their_cases(settings: Settings, worker: WorkerProcess) -> None:
    url = worker.url
    hq_id, hq = await new_token(settings, hq=True)
    jb_id, jb_token = await new_token(settings, posts=[JOHOR], sources=["kp2mi/hotline"])
    jb, tpe = await two_cases(settings, url, hq)
    johor = bearer(jb_token)

    # Reads: its own case yes; the other post's case does not exist for it (404, not 403).
    _, directory = await get_json(f"{url}/api/posts", headers=johor)
    counts = {p["post_id"]: p["open_cases"] for p in directory["posts"]}
    assert counts[JOHOR] == 1 and counts[TAIPEI] is None  # other posts' load is not shown
    _, directory = await get_json(f"{url}/api/posts", headers=bearer(hq))
    assert {p["post_id"]: p["open_cases"] for p in directory["posts"]}[TAIPEI] == 1
    status, body = await get_json(f"{url}/api/cases/{jb['case_id']}", headers=johor)
    assert status == 200 and body["case_id"] == jb["case_id"] and body["timeline"]
    status, body = await get_json(f"{url}/api/cases/{tpe['case_id']}", headers=johor)
    assert status == 404 and body["error"] == f"unknown case {tpe['case_id']}"
    status, body = await get_json(f"{url}/api/cases/CASE-nothing-here", headers=johor)
    assert status == 404 and body["error"] == "unknown case CASE-nothing-here"  # same answer
    _, body = await get_json(f"{url}/api/cases", headers=johor)
    assert {c["post_id"] for c in body["cases"]} == {JOHOR}
    assert jb["case_id"] in {c["case_id"] for c in body["cases"]}
    _, body = await get_json(f"{url}/api/cases?post_id={TAIPEI}", headers=johor)
    assert body["cases"] == []
    _, body = await get_json(f"{url}/api/cases?worker_id=W-TPE", headers=johor)
    assert body["cases"] == []
    assert (await get_json(f"{url}/api/workers/W-JB", headers=johor))[0] == 200
    assert (await get_json(f"{url}/api/workers/W-TPE", headers=johor))[0] == 404

    # Writes: 404 on the other post's case, nothing published.
    status, body = await post_json(
        f"{url}/api/cases/{tpe['case_id']}/acknowledge", {"actor": "officer-jb-1"}, headers=johor
    )
    assert status == 404 and body["error"] == f"unknown case {tpe['case_id']}"
    status, body = await post_json(
        f"{url}/api/cases/{tpe['case_id']}/notes",
        {"actor": "officer-jb-1", "note": "x"},
        headers=johor,
    )
    assert status == 404
    status, body = await post_json(
        f"{url}/api/cases/{jb['case_id']}/acknowledge", {"actor": "officer-jb-1"}, headers=johor
    )
    assert status == 202
    ack_id = body["id"]
    # Acting for a post the token does not hold.
    status, body = await post_json(
        f"{url}/api/cases/{jb['case_id']}/notes",
        {"actor": "officer-jb-1", "note": "x", "post_id": TAIPEI},
        headers=johor,
    )
    assert status == 403, body

    # Headquarters sees and acts on everything.
    _, body = await get_json(f"{url}/api/cases", headers=bearer(hq))
    assert {JOHOR, TAIPEI} <= {c["post_id"] for c in body["cases"]}
    assert (await get_json(f"{url}/api/cases/{tpe['case_id']}", headers=bearer(hq)))[0] == 200
    assert (await get_json(f"{url}/api/workers/W-TPE", headers=bearer(hq)))[0] == 200
    status, body = await post_json(
        f"{url}/api/cases/{tpe['case_id']}/notes",
        {"actor": "hq-duty-1", "note": "following up"},
        headers=bearer(hq),
    )
    assert status == 202
    note_id = body["id"]
    _, case = await eventually(
        lambda: get_json(f"{url}/api/cases/{tpe['case_id']}", headers=bearer(hq)),
        lambda r: any(e["type"] == "garda.case.note-added" for e in r[1]["timeline"]),
    )
    note = next(e for e in case["timeline"] if e["type"] == "garda.case.note-added")
    assert note["actor"] == "hq-duty-1" and note["detail"]["post_id"] == "HQ"

    # Ingest needs a token too.
    ev = incident("W-JB", region="MY-01")
    ce = {"Content-Type": "application/cloudevents+json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/events", data=json.dumps(ev), headers=ce) as r:
            assert r.status == 401
        async with http.post(
            f"{url}/api/events", data=json.dumps(ev), headers={**ce, **johor}
        ) as r:
            assert r.status == 202, await r.text()

    # Without a token, or with a bad one: 401 everywhere under /api; /health and /metrics open.
    for path in (
        "/api/cases",
        f"/api/cases/{jb['case_id']}",
        "/api/workers/W-JB",
        "/api/posts",
        "/api/schemas",
        "/api/schemas/pmi.incident.reported",
    ):
        assert (await get_json(url + path))[0] == 401, path
        assert (await get_json(url + path, headers=bearer("garda_nope")))[0] == 401, path
        assert (await get_json(url + path, headers={"Authorization": jb_token}))[0] == 401, path
    status, _ = await post_json(
        f"{url}/api/cases/{jb['case_id']}/notes", {"actor": "a", "note": "n"}
    )
    assert status == 401
    status, health = await get_json(f"{url}/health")
    assert status == 200 and health["status"] == "ok"
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        assert r.status == 200 and "garda_db_cases_open" in await r.text()

    # Every write is in the audit log: who, what, the answer, the event it published.
    rows = await audit_rows(settings)
    assert all(r["method"] == "POST" for r in rows)
    seen = [(r["token_id"], r["path"], r["status"]) for r in rows]
    assert seen == [
        (jb_id, f"/api/cases/{tpe['case_id']}/acknowledge", 404),
        (jb_id, f"/api/cases/{tpe['case_id']}/notes", 404),
        (jb_id, f"/api/cases/{jb['case_id']}/acknowledge", 202),
        (jb_id, f"/api/cases/{jb['case_id']}/notes", 403),
        (hq_id, f"/api/cases/{tpe['case_id']}/notes", 202),
        (None, "/api/events", 401),
        (jb_id, "/api/events", 202),
        (None, f"/api/cases/{jb['case_id']}/notes", 401),
    ], seen
    assert rows[2]["event_id"] == ack_id and rows[4]["event_id"] == note_id
    assert rows[6]["event_id"] == ev["id"]
    assert rows[2]["detail"]["action"] == "acknowledge"

    # A revoked token is refused from then on.
    conn_rows = await db_fetch(
        settings.database_url,
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 RETURNING token_id",
        jb_id,
    )
    assert conn_rows
    assert (await get_json(f"{url}/api/cases", headers=johor))[0] == 401
    status, _ = await post_json(
        f"{url}/api/cases/{jb['case_id']}/notes", {"actor": "a", "note": "n"}, headers=johor
    )
    assert status == 401


async def test_tokens_cli(settings: Settings, worker: WorkerProcess) -> None:
    url = worker.url
    created = run_cli(settings, "tokens", "create", "--post", JOHOR, "--label", "jb desk")
    assert created.returncode == 0, created.stderr
    token_id = re.search(r"token id: (tok_\w+)", created.stdout).group(1)
    token = re.search(r"token:\s+(garda_\S+)", created.stdout).group(1)
    assert "shown once" in created.stderr

    # Only the hash is stored; the secret appears in no column.
    rows = await db_fetch(
        settings.database_url, "SELECT * FROM api_tokens WHERE token_id = $1", token_id
    )
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["posts"] == [JOHOR] and row["hq"] is False and row["revoked_at"] is None
    assert all(token not in str(v) for v in row.values())

    listed = run_cli(settings, "tokens", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(token_id))
    assert JOHOR in line and "active" in line and "jb desk" in line
    assert token not in listed.stdout and row["token_hash"] not in listed.stdout

    assert (await get_json(f"{url}/api/cases", headers=bearer(token)))[0] == 200

    hq = run_cli(settings, "tokens", "create", "--hq")
    assert hq.returncode == 0, hq.stderr
    hq_token = re.search(r"token:\s+(garda_\S+)", hq.stdout).group(1)
    assert hq_token != token
    assert (await get_json(f"{url}/api/posts", headers=bearer(hq_token)))[0] == 200

    revoked = run_cli(settings, "tokens", "revoke", token_id)
    assert revoked.returncode == 0 and f"revoked {token_id}" in revoked.stdout
    assert (await get_json(f"{url}/api/cases", headers=bearer(token)))[0] == 401
    listed = run_cli(settings, "tokens", "list")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(token_id))
    assert "revoked" in line

    again = run_cli(settings, "tokens", "revoke", token_id)
    assert again.returncode == 2 and "no active token" in again.stderr
    bad = run_cli(settings, "tokens", "create", "--post", "KJRI-ATLANTIS")
    assert bad.returncode == 2 and "unknown post" in bad.stderr
    none = run_cli(settings, "tokens", "create")
    assert none.returncode == 2 and "--post" in none.stderr
    count = await db_fetch(settings.database_url, "SELECT count(*) FROM api_tokens")
    assert count[0][0] == 2


async def test_head_of_mission_sees_a_case_once_it_is_escalated_to_it(
    settings: Settings, tmp_path
) -> None:
    """Level 1 of the ladder is the head of mission (KJRI Johor Bahru -> KBRI Kuala Lumpur):
    from then on the embassy's token can read and act on the consulate's case."""

    from tests.integration.harness import policy_file

    fast = settings.replace(policy=policy_file("fast_sla.toml"))
    worker = await WorkerProcess(fast, tmp_path, "w1").start()
    try:
        _, hq = await new_token(fast, hq=True)
        _, kl = await new_token(fast, posts=["KBRI-KUALA-LUMPUR"])
        await publish_events(
            fast, topics.INCIDENTS, [incident("W-HOM", "lost_contact", region="MY-01")]
        )
        _, body = await eventually(
            lambda: get_json(f"{worker.url}/api/cases?worker_id=W-HOM", headers=bearer(hq)),
            lambda r: r[0] == 200 and len(r[1]["cases"]) == 1,
            timeout=15,
        )
        case = body["cases"][0]
        assert case["post_id"] == JOHOR and case["escalation_level"] == 0
        url = f"{worker.url}/api/cases/{case['case_id']}"
        status, _ = await get_json(url, headers=bearer(kl))
        assert status == 404  # not the embassy's case yet
        await eventually(
            lambda: get_json(url, headers=bearer(kl)),
            lambda r: r[0] == 200 and r[1]["escalation_level"] >= 1,
            timeout=15,
        )
        _, listed = await get_json(f"{worker.url}/api/cases", headers=bearer(kl))
        assert [c["case_id"] for c in listed["cases"]] == [case["case_id"]]
        status, reply = await post_json(
            f"{url}/acknowledge", {"actor": "atnaker-kl-1"}, headers=bearer(kl)
        )
        assert status == 202, reply
        _, after = await eventually(
            lambda: get_json(url, headers=bearer(kl)),
            lambda r: r[1]["status"] == "acknowledged",
            timeout=15,
        )
        ack = [e for e in after["timeline"] if e["type"] == "garda.case.acknowledged"]
        assert ack and ack[0]["actor"] == "atnaker-kl-1"
    finally:
        await worker.stop()


async def test_ingest_cannot_carry_case_actions_or_internal_commands(
    settings: Settings, worker: WorkerProcess
) -> None:
    """A post's token must not reach another post's case through POST /api/events, and no
    token may inject the timers' commands."""
    _, hq = await new_token(settings, hq=True)
    _, seoul = await new_token(settings, posts=["KBRI-SEOUL"])
    jb, _ = await two_cases(settings, worker.url, hq)
    forged = [
        cloudevent(
            "pmi.case.resolved",
            {
                "case_id": jb["case_id"],
                "worker_id": "W-JB",
                "actor": "mallory",
                "post_id": "HQ",
                "resolution": "closed quietly",
            },
            source="evil",
        ),
        cloudevent(
            "garda.deadline.due",
            {
                "case_id": jb["case_id"],
                "worker_id": "W-JB",
                "due_at": jb["ack_due"],
                "deadline": "ack",
                "level": 1,
            },
            source="garda/timer",
        ),
    ]
    for ev in forged:
        status, reply = await post_json(f"{worker.url}/api/events", ev, headers=bearer(seoul))
        assert status == 422 and reply["field"] == "type", reply
    _, case = await get_json(f"{worker.url}/api/cases/{jb['case_id']}", headers=bearer(hq))
    assert case["status"] == "open"
    assert [e["type"] for e in case["timeline"]] == ["garda.case.opened", "garda.case.assigned"]
    dead = await db_fetch(
        settings.database_url, "SELECT error FROM deadletters WHERE topic = 'http:/api/events'"
    )
    assert len(dead) == 2 and all("not accepted here" in r["error"] for r in dead)


async def test_bad_queries_get_clear_client_errors(
    settings: Settings, worker: WorkerProcess
) -> None:
    _, hq = await new_token(settings, hq=True)
    for path, status in [
        ("/api/workers/%00", 400),
        ("/api/cases/%00", 400),
        ("/api/cases?worker_id=%00", 400),
        ("/api/cases?severity=extreme", 400),
        ("/api/cases?status=bogus", 400),
        ("/api/cases?kind=x", 400),
        ("/api/cases?limit=0", 400),
        ("/api/cases?limit=5000", 400),
        ("/api/cases?limit=ten", 400),
        ("/api/cases?after=nonsense", 400),
        ("/api/cases?severity=critical&limit=1000", 200),
        ("/api/workers/nobody", 404),
    ]:
        got, body = await get_json(f"{worker.url}{path}", headers=bearer(hq))
        assert got == status, (path, got, body)
        assert got == 200 or body["error"]


async def test_revocation_holds_for_cached_scopes(
    settings: Settings, worker: WorkerProcess
) -> None:
    """The case list takes a known token's scope from the worker's cache and re-checks the
    token in its own statement: a revocation holds from the very next request, for a page
    with cases and for an empty one (the check then runs on its own)."""
    url = worker.url
    hq_id, hq = await new_token(settings, hq=True)
    jb_id, jb_token = await new_token(settings, posts=[JOHOR])
    jb, _ = await two_cases(settings, url, hq)
    johor = bearer(jb_token)
    pages = (f"{url}/api/cases", f"{url}/api/cases?q=NO-SUCH-CASE")
    for _ in range(2):  # the first request looks the token up, the second uses the cache
        status, body = await get_json(pages[0], headers=johor)
        assert status == 200 and [c["case_id"] for c in body["cases"]] == [jb["case_id"]]
        assert await get_json(pages[1], headers=johor) == (200, {"cases": [], "count": 0})

    await db_fetch(
        settings.database_url,
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 RETURNING token_id",
        jb_id,
    )
    for page in pages + pages:  # refused at once, and again once it left the cache
        assert await get_json(page, headers=johor) == (401, {"error": "unknown or revoked token"})
    # A revoked token's empty page is refused too, straight from the cache.
    hq_pages = (f"{url}/api/cases?q=NO-SUCH-CASE", f"{url}/api/cases")
    for page in hq_pages:
        assert (await get_json(page, headers=bearer(hq)))[0] == 200
    await db_fetch(
        settings.database_url,
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 RETURNING token_id",
        hq_id,
    )
    assert await get_json(hq_pages[0], headers=bearer(hq)) == (
        401,
        {"error": "unknown or revoked token"},
    )
