"""A worker started before its database is reachable waits for it, with one log line per
attempt, and serves once it is; one that never reaches it stops with one clear sentence.

The database "comes up late" through a TCP relay to the real test PostgreSQL that the test
opens only after the worker has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infra.processes import free_port
from infra.settings import Settings
from tests.integration.harness import REPO, WorkerProcess, worker_env


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def relay(listen_port: int, target_port: int) -> asyncio.Server:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(r, tw), pipe(tr, w))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


async def test_worker_waits_for_a_database_that_comes_up_late(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    real_port = urlsplit(settings.database_url).port
    late = settings.replace(database_url=with_port(settings.database_url, port))
    worker = WorkerProcess(late, tmp_path, "late")
    starting = asyncio.create_task(worker.start(ready_timeout=60))
    try:
        # Open the relay only once the worker has failed to reach it (a fixed sleep raced a
        # slow start on a loaded machine: the first attempt came after the relay opened).
        for _ in range(600):
            log_so_far = worker.log_text() if worker.log_path.exists() else ""
            if "database unreachable, retrying" in log_so_far or starting.done():
                break
            await asyncio.sleep(0.1)
        assert not starting.done(), "the worker must not be ready without its database"
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        server = await relay(port, real_port)
        try:
            await starting
            log = worker.log_text()
            assert "database unreachable, retrying" in log
            assert "database reachable" in log
            assert "Traceback" not in log
        finally:
            await worker.stop()
            server.close()
    finally:
        if not starting.done():
            starting.cancel()
            worker.kill9()


def test_a_database_that_never_comes_gives_one_clear_sentence(settings: Settings) -> None:
    port = free_port()
    env = worker_env(
        settings.replace(database_url=with_port(settings.database_url, port)), free_port()
    )
    done = subprocess.run(
        [sys.executable, "-m", "garda", "worker", "--wait", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"garda: the database at 127.0.0.1:{port}/" in done.stderr
    assert "still unreachable after 2 s" in done.stderr
    assert "Traceback" not in done.stderr
    password = urlsplit(settings.database_url).password
    if password:
        assert password not in done.stderr
