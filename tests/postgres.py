"""A real PostgreSQL server for the tests, on 127.0.0.1, in a temporary data dir.

``running_postgres()`` runs initdb and pg_ctl from the Debian package
(``apt-get install postgresql``: .ci/system-deps.sh installs it), serves on a
free loopback port with trust authentication for one user, and always stops
the server and deletes the directory. PostgreSQL refuses to run as root, so
as root the server runs as the package's ``postgres`` user. If the binaries
are not installed, ``PostgresUnavailable`` says what is missing: the caller
skips with that reason.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    dbname: str = "postgres"

    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"


def _binaries() -> tuple[str, str]:
    for directory in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=directory)
        pg_ctl = shutil.which("pg_ctl", path=directory)
        if initdb and pg_ctl:
            return initdb, pg_ctl
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
        "apt-get install postgresql (.ci/system-deps.sh does it)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as(user: str | None):
    """preexec_fn that drops root for the server (None: stay who we are)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)

    def drop():
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    return drop


@contextlib.contextmanager
def running_postgres(user: str = "labkit"):
    initdb, pg_ctl = _binaries()
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no 'postgres' "
                                      "user to run the server as") from None
        owner = "postgres"
    directory = tempfile.mkdtemp(prefix="labkit-pg-")
    data, sockets, log = (os.path.join(directory, name) for name in ("data", "sock", "log"))
    os.mkdir(sockets)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        for path in (directory, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    env = dict(os.environ, LC_ALL="C", LANG="C")
    port = _free_port()
    started = False
    try:
        try:
            subprocess.run([initdb, "-D", data, "-U", user, "--auth=trust", "-E", "UTF8",
                            "--no-sync"], check=True, capture_output=True, env=env,
                           preexec_fn=_run_as(owner), timeout=120)
            options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -F "
                       f"-c max_connections=20 -c shared_buffers=16MB")
            started = True  # (a failed start may still leave a server behind)
            subprocess.run([pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "60",
                            "start"], check=True, capture_output=True, env=env,
                           preexec_fn=_run_as(owner), timeout=90)
        except subprocess.CalledProcessError as exc:
            raise PostgresUnavailable("PostgreSQL did not start: "
                                      + exc.stderr.decode(errors="replace")[-500:]) from exc
        yield Postgres("127.0.0.1", port, user)
    finally:
        if started:
            subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                           capture_output=True, env=env, preexec_fn=_run_as(owner),
                           timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
