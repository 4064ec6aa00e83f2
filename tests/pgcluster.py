"""A throwaway PostgreSQL cluster for the tests that keep a gradebook in PostgreSQL.

:func:`throwaway_postgres` starts one with Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``, package ``postgresql``) in a temporary directory,
listening on a Unix socket there and on no network interface, and removes it afterwards.
PostgreSQL refuses to run as root: as root, the server commands run as the ``postgres``
user. ``AUTOGRADER_TEST_POSTGRES_URL`` names an existing server to use instead.

A missing piece (the driver, the binaries, the postgres user) is reported through the
``missing`` callback: by default :func:`skip_or_fail`, which fails the test when ``CI`` is set
(CI installs PostgreSQL: a test that cannot find it there must say so loudly) and skips it
otherwise.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest


def _as_postgres(cmd, **kw):
    """Run a server command; PostgreSQL refuses to run as root, so drop to the postgres user."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def skip_or_fail(reason: str):
    """Skip a test whose component is missing, or fail it when ``CI`` is set (it must run there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: this test must not be skipped)")
    pytest.skip(reason)


@contextlib.contextmanager
def throwaway_postgres(missing: Callable[[str], object] = skip_or_fail, port: int = 54329,
                       database: str = "dgm") -> Iterator[str]:
    """Yield the SQLAlchemy URL of an empty database ``database`` in a fresh PostgreSQL cluster."""
    url = os.environ.get("AUTOGRADER_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        import psycopg  # noqa: F401  (the driver nbgrader's SQLAlchemy engine will load)
    except ImportError:
        missing("the PostgreSQL driver (psycopg) is not installed")
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not initdb[-1]:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package")
    bindir = Path(initdb[-1]).parent
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no postgres user to run the server")
    base = Path(tempfile.mkdtemp(prefix="autograder-pg-"))
    os.chmod(base, 0o777)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                  "-o", f"-k {base} -p {port} -c listen_addresses=''", "start"])
    try:
        _as_postgres([str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "postgres", database])
        yield f"postgresql://postgres@/{database}?host={base}&port={port}"
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)
