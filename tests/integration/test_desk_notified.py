"""The desk and the alerting hooks in headless Chromium, against a real worker, broker,
database and a real aiohttp receiver (``GARDA_RECEIVERS``):

- the case page shows who was notified (the escalation ledger): the receiver, when it was
  notified, delivered, acknowledged from its link and by whom, the attempts; an alert that
  a silence kept from another receiver is listed with why; both languages;
- an ``ack_url`` from a notification leads an officer who is not signed in to the case page
  through the sign-in form, and one who is signed in straight to it;
- the live view falls back to polling when the event stream is unavailable, and a new case
  still appears within a few seconds.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from tests.integration.browser_support import launch, require_chromium, sign_in
from tests.integration.desk_support import JOHOR, incident, open_cases
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    eventually,
    get_json,
    new_token,
    post_json,
)
from tests.integration.hooks_support import SECRET, Receiver, receivers_file

playwright_api = require_chromium()
expect = playwright_api.expect


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async for b in launch(playwright_api):
        yield b


async def test_case_page_shows_who_was_notified_and_ack_links_land_on_it(
    settings: Settings, tmp_path: Path, browser: Any
) -> None:
    rcv = await Receiver().start()
    path = receivers_file(
        tmp_path,
        [
            {
                "name": "jb-duty",
                "url": rcv.url,
                "secret": SECRET,
                "match": {"posts": [JOHOR], "types": ["garda.case.opened"]},
            },
            {
                "name": "jb-night",
                "url": rcv.url,
                "secret": SECRET,
                "match": {"posts": [JOHOR], "types": ["garda.case.opened"]},
            },
        ],
    )
    worker = await WorkerProcess(settings, tmp_path, "w1", GARDA_RECEIVERS=str(path)).start()
    try:
        url = worker.url
        _, hq = await new_token(settings, hq=True)
        _, johor = await new_token(settings, posts=[JOHOR])
        status, silence = await post_json(
            f"{url}/api/silences",
            {
                "matchers": {"receivers": ["jb-night"]},
                "until": "2h",
                "reason": "night phone in repair",
                "author": "hq-duty",
            },
            headers=bearer(hq),
        )
        assert status == 201, silence
        cases = await open_cases(settings, url, hq, [incident("W-N-1")])
        cid = cases["W-N-1"]["case_id"]

        async def got() -> int:
            return len(rcv.got)

        await eventually(got, lambda n: n >= 1, timeout=30)
        (event,) = rcv.got
        assert event["data"]["case_id"] == cid and event["data"]["delivered_to"] == "jb-duty"
        ack_url = event["data"]["ack_url"]

        async def ledger() -> dict[str, Any]:
            return (await get_json(f"{url}/api/cases/{cid}/deliveries", headers=bearer(hq)))[1]

        await eventually(ledger, lambda d: d["deliveries"][0]["status"] == "delivered")

        # Not signed in: the ack page links to the case page, which asks to sign in first
        # and then lands on it.
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(ack_url)
        await expect(page.locator("h1")).to_contain_text(cid)
        await page.click("text=Open the case on the desk")
        await expect(page.locator("#signin")).to_be_visible()
        await sign_in(playwright_api, page, url, johor, "officer-jb-3", path="")
        assert page.url == f"{url}/desk/cases/{cid}"
        await expect(page.locator("#case-h")).to_have_text(cid)

        # Who was notified, in Bahasa Indonesia (the default).
        duty = page.locator('#deliveries li[data-receiver="jb-duty"]')
        await expect(duty).to_have_attribute("data-status", "delivered")
        await expect(duty).to_contain_text("terkirim")
        await expect(duty).to_contain_text("Diberi tahu")
        await expect(duty).to_contain_text("Kasus dibuka")
        await expect(duty).to_contain_text(re.compile(r"Percobaan\s*1 · jawaban terakhir 204"))
        await expect(duty).not_to_contain_text("Diakui lewat tautan")
        night = page.locator('#deliveries li[data-receiver="jb-night"]')
        await expect(night).to_have_attribute("data-disposition", "silenced")
        await expect(night).to_contain_text("Tidak dikirim: dibisukan")
        await expect(night).to_contain_text(
            f"silence {silence['silence_id']}: night phone in repair"
        )
        assert "[object Object]" not in await page.locator("#deliveries").inner_text()

        # Acknowledge from the link in the same browser (signed in now): the answer page
        # links to the case page, which opens directly and shows who acknowledged.
        await page.goto(ack_url)
        await page.fill("#actor", "officer-jb-3")
        await page.click("form button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Acknowledged")
        await page.click("text=Open the case on the desk")
        await expect(page.locator("#case-h")).to_have_text(cid)
        assert page.url == f"{url}/desk/cases/{cid}"
        await expect(page.locator("#case-badges")).to_contain_text("diakui", timeout=10000)
        await expect(duty).to_contain_text(re.compile(r"Diakui lewat tautan.*oleh officer-jb-3"))

        # The same in English.
        await page.click("#lang")
        await expect(duty).to_contain_text("delivered")
        await expect(duty).to_contain_text(
            re.compile(r"Acknowledged from the link.*by officer-jb-3")
        )
        await expect(duty).to_contain_text(re.compile(r"Delivered.*\(after \d+(\.\d)?s\)"))
        await expect(duty).to_contain_text(re.compile(r"Attempts\s*1 · last answer 204"))
        await expect(night).to_contain_text("Not sent: silenced")
        await expect(night).to_contain_text("Why")
        await expect(page.locator("#case-h")).to_have_text(cid)
        assert not errors, errors
        await context.close()
    finally:
        await worker.stop()
        await rcv.stop()


async def test_live_view_falls_back_to_polling(
    settings: Settings, worker: WorkerProcess, browser: Any
) -> None:
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    await open_cases(settings, url, hq, [incident("W-POLL-1")])
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    stream_calls: list[str] = []

    async def refuse(route: Any) -> None:  # a proxy that does not pass event streams
        stream_calls.append(route.request.url)
        await route.fulfill(status=503, body="no event streams here")

    await context.route("**/api/stream", refuse)
    page = await context.new_page()
    await sign_in(playwright_api, page, url, hq, "hq-duty")
    await expect(page.locator("#case-rows tr")).to_have_count(1)
    await expect(page.locator("#live")).to_have_text(re.compile("Memuat ulang berkala"))
    assert stream_calls, "the page never tried the event stream"

    await open_cases(settings, url, hq, [incident("W-POLL-2", category="detention")])
    # Polling every 2 s: the new case shows within a few seconds, without a reload.
    await expect(page.locator("#case-rows tr")).to_have_count(2, timeout=5000)
    await expect(page.locator("#case-rows tr").first.locator(".badge.sev-critical")).to_be_visible()
    await expect(page.locator("#live")).to_have_text(re.compile("Memuat ulang berkala"))
    await context.close()
