"""A throwaway PostgreSQL cluster: for trying parallel grading on one machine, for the benchmark
(``python -m autograder.bench``) and for the tests (``tests/pgcluster.py``).

:func:`throwaway_postgres` starts one with Debian's server binaries (``/usr/lib/postgresql/<version>/bin``,
package ``postgresql``) in a temporary directory, listening on a Unix socket there and on no network
interface, and removes it afterwards. PostgreSQL refuses to run as root: as root, the server commands
run as the ``postgres`` user. A real course keeps its gradebook on a real server
(``AUTOGRADER_GRADEBOOK_URL``, ``--db-url``).
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from autograder.common import GradingError

__all__ = ["postgres_missing", "throwaway_postgres"]


def _postgres_binaries() -> Path | None:
    def version(path):
        return [int(x) if x.isdigit() else 0 for x in re.split(r"[.]", Path(path).parents[1].name)]

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:  # Debian's layout: the newest version installed
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")  # elsewhere, the server binaries on PATH
    return Path(initdb).parent if initdb else None


def _as_postgres(cmd: list[str]) -> None:
    """Run a server command; PostgreSQL refuses to run as root, so as root it runs as ``postgres``."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GradingError(f"`{' '.join(cmd)}` failed: {(proc.stdout + proc.stderr).strip()[-500:]}")


def postgres_missing() -> str | None:
    """Why a throwaway PostgreSQL cluster cannot be started here, or ``None`` when it can."""
    if _postgres_binaries() is None:
        return ("PostgreSQL's server binaries (initdb, pg_ctl: /usr/lib/postgresql/*/bin or on PATH) are not installed: "
                "install Debian's postgresql package")
    try:
        import psycopg  # noqa: F401  (the driver nbgrader's SQLAlchemy engine loads)
    except ImportError:
        return "the PostgreSQL driver (psycopg) is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server"
    return None


@contextlib.contextmanager
def throwaway_postgres(port: int = 54330) -> Iterator[Callable[[str], str]]:
    """A PostgreSQL cluster in a temporary directory, listening on a Unix socket there only (no
    network interface); yields ``new_database(name) -> SQLAlchemy URL``, and removes it all after.
    Raises :class:`GradingError` (one line) when :func:`postgres_missing` says it cannot start."""
    why = postgres_missing()
    if why:
        raise GradingError(f"cannot start a throwaway PostgreSQL cluster: {why}")
    bindir = _postgres_binaries()
    base = Path(tempfile.mkdtemp(prefix="autograder-pg-"))
    os.chmod(base, 0o777)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    started = False
    try:
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                      "-o", f"-k {base} -p {port} -c listen_addresses=''", "start"])
        started = True

        def new_database(name: str) -> str:
            _as_postgres([str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "postgres", name])
            return f"postgresql://postgres@/{name}?host={base}&port={port}"

        yield new_database
    finally:
        if started:
            with contextlib.suppress(GradingError):
                _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)
