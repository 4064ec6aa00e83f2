"""The gradebook works in PostgreSQL, not only SQLite.

nbgrader keeps grades in any SQLAlchemy database; ``nbgrader_config.py`` takes
the URL from ``AUTOGRADER_GRADEBOOK_URL``. This test starts a throwaway PostgreSQL
cluster (a Unix socket in a temporary directory, no network), autogrades two
example submissions into it and reads the scores back from PostgreSQL.

It needs the PostgreSQL server binaries (Debian's ``postgresql`` package);
without them it is skipped, saying so. Set ``GMLIB_TEST_POSTGRES_URL`` to use an
existing server instead.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autograder import grading

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "tests" / "submissions" / "lab01"

pytestmark = pytest.mark.slow


def _as_postgres(cmd, **kw):
    """Run a server command; PostgreSQL refuses to run as root, so drop to the postgres user."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("GMLIB_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (psycopg) is not installed")
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not initdb[-1]:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    bindir = Path(initdb[-1]).parent
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
    base = Path(tempfile.mkdtemp(prefix="gmlib-pg-"))
    os.chmod(base, 0o777)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                  "-o", f"-k {base} -p 54329 -c listen_addresses=''", "start"])
    try:
        _as_postgres([str(bindir / "createdb"), "-h", str(base), "-p", "54329", "-U", "postgres", "dgm"])
        yield f"postgresql://postgres@/dgm?host={base}&port=54329"
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def test_autograde_into_postgresql(postgres_url, tmp_path):
    course = grading.Course.create(tmp_path / "course", ["lab01"], db_url=postgres_url)
    course.generate("lab01")
    for student in ("perfect", "partial"):
        course.submit("lab01", student, SUBMISSIONS / student / "lab01.ipynb")
    failures = course.autograde_batch("lab01", ["perfect", "partial"])
    assert failures == {}
    scores = grading.read_scores(postgres_url)
    assert scores[("lab01", "perfect")].score == 20
    assert scores[("lab01", "partial")].score == 16
    assert not (tmp_path / "course" / "_grading" / "gradebook.db").exists(), "grades went to SQLite"
    # the rows are really in PostgreSQL
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        n = conn.execute("select count(*) from submitted_assignment").fetchone()[0]
    assert n == 2
