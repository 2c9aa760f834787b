"""Child processes of the local stack: spawn with a log file, stop, free ports, lifecycles.

Each child runs in its own session (a terminal Ctrl-C reaches Garda, which then stops them in
order), listens on 127.0.0.1 and writes its output to a log file, never to the terminal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from errors import StackError

LOCALHOST = "127.0.0.1"

_live: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: never leave a child broker/database behind when the interpreter exits."""
    for proc in list(_live):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port free right now on ``host`` (the usual bind-to-0 trick; racy but fine locally)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


async def terminate(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
    _live.discard(proc)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when Garda dies, even by kill -9 (no orphan broker)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; other systems keep the atexit cleanup
        pass


def spawn(cmd: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
    _live.add(proc)
    return proc


class AsyncLifecycle:
    """A child server with an explicit ``start()/stop()`` (and ``async with``)."""

    _proc: subprocess.Popen | None = None
    port: int | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _address(self) -> str:
        """``host:port`` of the running server; StackError before ``start()``."""
        if self._proc is None or self.port is None:
            raise StackError(f"{type(self).__name__} is not started")
        return f"{LOCALHOST}:{self.port}"

    async def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def port_open(host: str, port: int | None) -> bool:
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def forget(proc: subprocess.Popen) -> None:
    """Stop tracking a child that has exited (the exit-time safety net skips it)."""
    _live.discard(proc)
