"""The gradebook works in PostgreSQL, not only SQLite.

nbgrader keeps grades in any SQLAlchemy database; ``nbgrader_config.py`` takes
the URL from ``AUTOGRADER_GRADEBOOK_URL``. This test starts a throwaway PostgreSQL
cluster (a Unix socket in a temporary directory, no network), autogrades two
example submissions into it and reads the scores back from PostgreSQL.

It needs the PostgreSQL server binaries (Debian's ``postgresql`` package, which
``.ci/run`` installs); without them it is skipped, saying so, or fails when ``CI`` is
set. Set ``AUTOGRADER_TEST_POSTGRES_URL`` to use an existing server instead.
"""
from pathlib import Path

import pytest

from autograder import grading
from pgcluster import throwaway_postgres  # tests/pgcluster.py

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "tests" / "submissions" / "lab01"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_postgres() as url:  # skipped (failed under CI), saying why, without the server binaries
        yield url


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
