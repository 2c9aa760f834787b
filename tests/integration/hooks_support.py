"""Test receivers for the alerting hooks: real aiohttp servers that verify Standard Webhooks
signatures, dedupe on ``webhook-id`` and fail on purpose."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from infra.processes import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "handlers" / "default_policy.toml"

FAST_HOOKS = """
[hooks]
retry_schedule = ["1s", "1s", "2s", "2s", "3s"]
horizon = "60s"
timeout = "2s"
ack_link_ttl = "1h"
"""


def fast_hooks_policy(tmp_path: Path, hooks: str = FAST_HOOKS) -> Path:
    """The default policy with a seconds-long [hooks] table."""
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_POLICY.read_text() + "\n" + hooks)
    return path


@dataclass
class Receiver:
    """An HTTP receiver. ``script`` holds the answers of the next requests ("500", "410",
    "timeout", "429:2" = 429 with Retry-After 2); when empty it answers 200."""

    secret: str = SECRET
    port: int = field(default_factory=free_port)
    script: list[str] = field(default_factory=list)
    got: list[dict[str, Any]] = field(default_factory=list)  # verified bodies, in order
    ids: Counter = field(default_factory=Counter)  # webhook-id -> times received (2xx)
    bad_signatures: int = 0
    requests: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def unique(self) -> dict[str, dict[str, Any]]:
        return {b["id"]: b for b in self.got}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        if self.script:
            step = self.script.pop(0)
            if step == "timeout":
                await asyncio.sleep(30)  # longer than the dispatcher waits
                return web.Response(status=504)
            code, _, after = step.partition(":")
            headers = {"Retry-After": after} if after else {}
            return web.Response(status=int(code), headers=headers)
        wid = request.headers["webhook-id"]
        self.ids[wid] += 1
        if self.ids[wid] == 1:  # dedupe on webhook-id, as the spec asks receivers to
            self.got.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def receivers_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write a GARDA_RECEIVERS file from dicts (``match`` as a nested dict)."""
    lines: list[str] = []
    for e in entries:
        lines.append("[[receivers]]")
        for k, v in e.items():
            if k != "match":
                lines.append(f"{k} = {json.dumps(v)}")
        if e.get("match"):
            lines.append("[receivers.match]")
            for k, v in e["match"].items():
                lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "receivers.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
