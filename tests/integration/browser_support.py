"""Headless Chromium for the desk tests: Debian's ``/usr/bin/chromium`` driven by Playwright
(never a browser download). Test modules call :func:`require_chromium` at import, so they
skip with a clear message where Chromium or Playwright is absent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}


def require_chromium() -> Any:
    """The ``playwright.async_api`` module; skips the calling module without Chromium."""
    if not CHROMIUM.exists():
        pytest.skip(
            "desk browser tests need Debian's chromium at /usr/bin/chromium"
            " (apt-get install -y chromium)",
            allow_module_level=True,
        )
    return pytest.importorskip("playwright.async_api", reason="pip install playwright")


async def launch(playwright_api: Any) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(
    playwright_api: Any, page: Any, url: str, token: str, actor: str, path: str = "/desk"
) -> None:
    """Open ``path`` (``url`` + path; empty path: stay on the current page's form), fill the
    sign-in form and wait until signed in."""
    if path:
        await page.goto(url + path)
    await page.fill("#token", token)
    await page.fill("#actor", actor)
    logs: list[str] = []
    page.on("console", lambda m: logs.append(m.text))
    page.on("pageerror", lambda e: logs.append(str(e)))
    await page.click("#signin-form button[type=submit]")
    try:
        await page.wait_for_selector("#signout:not([hidden])", timeout=10000)
    except playwright_api.Error as exc:
        raise AssertionError(f"not signed in at {page.url}: {logs}") from exc
