"""Helpers shared by the desk tests: incidents, a signed-in HTTP client."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from infra.settings import Settings
from schemas import topics
from tests.integration import events
from tests.integration.harness import bearer, eventually, get_json, publish_events

JOHOR, TAIPEI = "KJRI-JOHOR-BAHRU", "KDEI-TAIPEI"
PLACES = {JOHOR: ("MY", "MY-01"), TAIPEI: ("TW", None)}


def incident(
    wid: str, post: str = JOHOR, category: str = "unpaid_wages", time_: str | None = None
) -> dict[str, Any]:
    """An incident whose case goes to ``post`` (Johor or Taipei)."""
    country, region = PLACES[post]
    return events.incident(wid, category, country, region=region, time_=time_)


async def open_cases(
    settings: Settings, url: str, hq: str, events: list[dict[str, Any]]
) -> dict[str, dict]:
    """Publish incidents and wait for their cases; returns the cases by worker id."""
    await publish_events(settings, topics.INCIDENTS, events)
    wanted = {e["subject"] for e in events}

    async def cases() -> tuple[int, Any]:
        return await get_json(f"{url}/api/cases?limit=1000", headers=bearer(hq))

    _, body = await eventually(
        cases, lambda r: r[0] == 200 and wanted <= {c["worker_id"] for c in r[1]["cases"]}
    )
    return {c["worker_id"]: c for c in body["cases"] if c["worker_id"] in wanted}


class DeskClient:
    """An HTTP client signed in to the desk the way a browser is: cookie jar, CSRF header."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.set_cookie = ""

    async def __aenter__(self) -> DeskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def sign_in(self, token: str, actor: str = "officer-1", next_: str = "/desk") -> int:
        async with self.http.post(
            f"{self.url}/desk/session",
            data={"token": token, "actor": actor, "next": next_},
            allow_redirects=False,
        ) as r:
            self.set_cookie = r.headers.get("Set-Cookie", "")
            self.location = r.headers.get("Location")
            status = r.status
        if status == 303:
            code, body = await self.get("/desk/session")
            assert code == 200, body
            self.csrf = body["csrf"]
        return status

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as r:
            text = await r.text()
            if r.content_type == "application/json":
                import json

                return r.status, json.loads(text)
            return r.status, text

    async def post(
        self, path: str, body: Any, *, csrf: str | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        token = self.csrf if csrf is None else csrf
        if token:
            h["X-Garda-CSRF"] = token
        async with self.http.post(self.url + path, json=body, headers=h) as r:
            return r.status, await r.json(content_type=None)


def cookie_attributes(set_cookie: str) -> set[str]:
    return {p.strip().split("=")[0].lower() for p in re.split(r";\s*", set_cookie)[1:]}
