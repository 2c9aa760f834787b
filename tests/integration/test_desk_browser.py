"""The desk end to end in headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real worker, broker and database: sign in, a case appears live, acknowledging
stops its countdown, a note shows in the timeline, another post's case URL is refused,
the language switches, and the same at phone width (390 px).

Skips when /usr/bin/chromium is absent (``apt-get install -y chromium``); never downloads a
browser. ``GARDA_SCREENSHOTS=docs/screenshots`` also writes the README's screenshots
(``python -m bench.screenshots``)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from schemas import topics
from tests.integration.browser_support import PHONE, launch, require_chromium
from tests.integration.browser_support import sign_in as browser_sign_in
from tests.integration.desk_support import JOHOR, TAIPEI, incident, open_cases
from tests.integration.harness import (
    WorkerProcess,
    bearer,
    cloudevent,
    eventually,
    get_json,
    new_token,
    post_json,
    publish_events,
)
from tests.integration.hooks_support import SECRET, Receiver, receivers_file

playwright_api = require_chromium()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async for b in launch(playwright_api):
        yield b


async def sign_in(page: Any, url: str, token: str, actor: str, path: str = "/desk") -> None:
    await browser_sign_in(playwright_api, page, url, token, actor, path)


def expect() -> Any:
    return playwright_api.expect


async def test_desk_in_a_browser(settings: Settings, worker: WorkerProcess, browser: Any) -> None:
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    _, johor = await new_token(settings, posts=[JOHOR])
    cases = await open_cases(settings, url, hq, [incident("W-B-OLD"), incident("W-B-TPE", TAIPEI)])
    foreign = cases["W-B-TPE"]["case_id"]

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await sign_in(page, url, johor, "officer-jb-7")
    # No token anywhere the page's script can read.
    stored = await page.evaluate(
        "() => JSON.stringify([document.cookie, localStorage, sessionStorage,"
        " document.documentElement.outerHTML])"
    )
    assert johor not in stored
    await expect()(page.locator("html")).to_have_attribute("lang", "id")
    await expect()(page.locator("#live")).to_have_text(re.compile("Langsung"))
    await expect()(page.locator("#case-rows tr")).to_have_count(1)

    # A new case appears without a reload, within two seconds of being stored.
    await open_cases(settings, url, hq, [incident("W-B-NEW", category="detention")])
    await expect()(page.locator("#case-rows tr")).to_have_count(2, timeout=2000)
    new_row = page.locator("#case-rows tr").first  # critical: 3 h beats 24 h
    await expect()(new_row.locator(".badge.sev-critical")).to_be_visible()
    countdown = new_row.locator(".due")
    await expect()(countdown).to_have_attribute("data-state", "running")
    first = await countdown.text_content()
    # It ticks (every second; a loaded machine may delay a timer, hence the margin).
    await expect()(countdown).not_to_have_text(first or "", timeout=3000)

    # Open it with the keyboard, acknowledge; the countdown stops without a reload.
    await new_row.locator("a").first.focus()
    await page.keyboard.press("Enter")
    await expect()(page.locator("#case")).to_be_visible()
    await page.click("#do-acknowledge")
    await expect()(page.locator("#case-badges")).to_contain_text("diakui", timeout=10000)
    stopped = page.locator("#case-facts .due")
    await expect()(stopped).to_have_attribute("data-state", "stopped")
    text = await stopped.text_content()
    await page.wait_for_timeout(1100)
    assert await stopped.text_content() == text
    await expect()(page.locator("#do-acknowledge")).to_be_disabled()

    # A note appears in the timeline; a refused action shows the API's reason.
    await page.fill("#note-text", "Called the shelter; worker is safe")
    await page.click("#form-note button")
    await expect()(page.locator("#timeline")).to_contain_text(
        "Called the shelter; worker is safe", timeout=10000
    )
    await expect()(page.locator("#timeline li").last).to_contain_text("officer-jb-7")
    await page.fill("#refer-to", "   ")
    await page.locator("#refer-to").evaluate("n => n.removeAttribute('required')")
    await page.click("#form-refer button")
    await expect()(page.locator("#action-error")).to_contain_text("422")
    await expect()(page.locator("#deliveries [data-empty]")).to_be_visible()

    # Back in the queue the countdown of that case is stopped too.
    await page.click("#nav-queue")
    acked = page.locator('#case-rows tr[data-status="acknowledged"] .due')
    await expect()(acked).to_have_attribute("data-state", "stopped")

    # Another post's case, typed by hand: 404, nothing shown.
    response = await page.goto(f"{url}/desk/cases/{foreign}")
    assert response is not None and response.status == 404
    await expect()(page.locator("#notfound")).to_be_visible()
    await expect()(page.locator("body")).not_to_contain_text("W-B-TPE")

    # Switch language: English, remembered across pages.
    await page.goto(url + "/desk")
    await page.click("#lang")
    await expect()(page.locator("html")).to_have_attribute("lang", "en")
    await expect()(page.locator("#queue-h")).to_contain_text("Case queue")
    await page.reload()
    await expect()(page.locator("#queue-h")).to_contain_text("Case queue")

    # Sign out: the session is gone, the sign-in form is back.
    await page.click("#signout")
    await expect()(page.locator("#signin")).to_be_visible()
    assert not errors, errors
    await context.close()


async def test_desk_at_phone_width(settings: Settings, worker: WorkerProcess, browser: Any) -> None:
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    await open_cases(settings, url, hq, [incident("W-P-1"), incident("W-P-2", TAIPEI)])
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    await sign_in(page, url, hq, "hq-duty")
    await expect()(page.locator("#case-rows tr")).to_have_count(2)
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page is {width}px wide on a 390px screen"
    await page.click("#nav-board")
    await expect()(page.locator("#board-rows tr")).to_have_count(20)
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"board is {width}px wide on a 390px screen"
    await page.locator(f'#board-rows tr[data-post="{TAIPEI}"]').click()
    await expect()(page.locator("#queue-post")).to_contain_text("Taipei")
    await expect()(page.locator("#case-rows tr")).to_have_count(1)
    await context.close()


@pytest.mark.skipif(not os.environ.get("GARDA_SCREENSHOTS"), reason="GARDA_SCREENSHOTS not set")
async def test_screenshots(settings: Settings, tmp_path: Path, browser: Any) -> None:
    """Screenshots for the README: a queue with overdue, escalated and acknowledged cases,
    a case page with a timeline and who was notified (a real receiver), the board; desktop
    and phone."""
    rcv = await Receiver().start()
    match = {"posts": [JOHOR], "types": ["garda.case.opened"]}
    path = receivers_file(
        tmp_path,
        [
            {"name": "kjri-jb-duty-phone", "url": rcv.url, "secret": SECRET, "match": match},
            {"name": "kjri-jb-night-desk", "url": rcv.url, "secret": SECRET, "match": match},
        ],
    )
    worker = await WorkerProcess(settings, tmp_path, "w1", GARDA_RECEIVERS=str(path)).start()
    try:
        await take_screenshots(settings, worker, browser)
    finally:
        await worker.stop()
        await rcv.stop()


async def take_screenshots(settings: Settings, worker: WorkerProcess, browser: Any) -> None:
    out = Path(os.environ["GARDA_SCREENSHOTS"])
    out.mkdir(parents=True, exist_ok=True)
    url = worker.url
    _, hq = await new_token(settings, hq=True)
    status, _ = await post_json(
        f"{url}/api/silences",
        {
            "matchers": {"receivers": ["kjri-jb-night-desk"]},
            "until": "2h",
            "reason": "night desk closed for the holiday",
            "author": "hq-duty",
        },
        headers=bearer(hq),
    )
    assert status == 201
    now = datetime.now(UTC)
    cats = ["unpaid_wages", "detention", "document_withheld", "wants_to_go_home", "illness"]
    events = [
        incident(
            f"PMI-2026-{100200 + i:06d}",
            JOHOR if i % 3 else TAIPEI,
            category=cats[i % len(cats)],
            time_=(now - timedelta(hours=i * 5 + 1)).isoformat(),
        )
        for i in range(12)
    ]
    cases = await open_cases(settings, url, hq, events)
    first = sorted(cases.values(), key=lambda c: c["case_id"])
    for c in first[:3]:
        await post_json(
            f"{url}/api/cases/{c['case_id']}/acknowledge",
            {"actor": "atnaker-jb-2"},
            headers=bearer(hq),
        )
    target = next(c for c in first if c["post_id"] == JOHOR)
    await post_json(
        f"{url}/api/cases/{target['case_id']}/notes",
        {"actor": "atnaker-jb-2", "note": "Spoke with the employer; wages promised by Friday"},
        headers=bearer(hq),
    )
    await publish_events(
        settings,
        topics.INCIDENTS,
        [
            cloudevent(
                "pmi.incident.reported",
                {**events[0]["data"], "incident_id": "INC-again"},
                source="kp2mi/hotline",
            )
        ],
    )

    async def ledger() -> list[Any]:
        path = f"{url}/api/cases/{target['case_id']}/deliveries"
        return (await get_json(path, headers=bearer(hq)))[1]["deliveries"]

    await eventually(ledger, lambda ds: bool(ds) and ds[0]["status"] == "delivered")
    for name, viewport in (("desktop", {"width": 1280, "height": 860}), ("phone", PHONE)):
        context = await browser.new_context(viewport=viewport, device_scale_factor=1)
        page = await context.new_page()
        await sign_in(page, url, hq, "atnaker-jb-2")
        await page.goto(f"{url}/desk?post_id={JOHOR}")
        await page.wait_for_selector("#case-rows tr")
        await page.wait_for_timeout(500)
        await page.screenshot(path=str(out / f"queue-{name}.png"), full_page=name == "phone")
        await page.goto(f"{url}/desk/cases/{target['case_id']}")
        await page.wait_for_selector("#timeline li")
        await page.wait_for_selector("#deliveries li.dlv")
        await page.wait_for_timeout(500)
        await page.screenshot(path=str(out / f"case-{name}.png"), full_page=True)
        await page.goto(f"{url}/desk/board")
        await page.wait_for_selector("#board-rows tr")
        await page.wait_for_timeout(500)
        await page.screenshot(path=str(out / f"board-{name}.png"), full_page=name == "phone")
        await context.close()
