"""A ``garda worker`` as a child process, its log in a file: for tests and benchmarks.

``start()`` returns once ``/health`` reports assigned partitions (the group join is done);
``assigned_at`` (``time.perf_counter()``) and ``startup_seconds`` record when.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from infra.processes import free_port
from infra.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def worker_env(settings: Settings, web_port: int, **extra: str) -> dict[str, str]:
    """The environment of a worker child: these settings, no inherited ``GARDA_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDA_")}
    env.update(
        GARDA_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        GARDA_DATABASE_URL=settings.database_url or "",
        GARDA_TOPIC_PREFIX=settings.topic_prefix,
        GARDA_PARTITIONS=str(settings.partitions),
        GARDA_GROUP_ID=settings.group_id,
        GARDA_SESSION_TIMEOUT=str(settings.session_timeout),
        GARDA_WEB_PORT=str(web_port),
        GARDA_LOG_FORMAT="json",
        GARDA_TIMER_INTERVAL=str(settings.timer_interval),
        GARDA_DATA_DIR=str(
            Path(os.environ.get("TMPDIR", "/tmp")) / f"garda-{uuid.uuid4().hex[:8]}"
        ),
    )
    if settings.policy is not None:
        env["GARDA_POLICY"] = str(settings.policy)
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m garda worker`` as a child process, its log in a file."""

    poll_interval = 0.2

    def __init__(self, settings: Settings, log_dir: Path, name: str = "w1", **env: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = worker_env(settings, self.port, **env)
        self.proc: subprocess.Popen | None = None
        self.assigned_at = 0.0
        self.startup_seconds = 0.0

    async def start(self, ready_timeout: float = 40.0) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "garda", "worker"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        started = time.perf_counter()
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    async with http.get(self.url + "/health") as r:
                        if r.status == 200 and (await r.json()).get("assigned"):
                            self.assigned_at = time.perf_counter()
                            self.startup_seconds = self.assigned_at - started
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(self.poll_interval)
        self.kill9()  # never leave a half-started worker behind
        raise RuntimeError(f"worker not ready in {ready_timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
