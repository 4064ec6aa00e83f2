"""A throwaway PostgreSQL cluster for the tests that keep a gradebook in PostgreSQL.

The cluster itself is :func:`autograder.pgcluster.throwaway_postgres` (Debian's server binaries,
a temporary directory, a Unix socket only). ``AUTOGRADER_TEST_POSTGRES_URL`` names an existing
server to use instead.

A missing piece (the driver, the binaries, the postgres user) is reported through the
``missing`` callback: by default :func:`skip_or_fail`, which fails the test when ``CI`` is set
(CI installs PostgreSQL: a test that cannot find it there must say so loudly) and skips it
otherwise.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import pytest

from autograder import pgcluster


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
    why = pgcluster.postgres_missing()
    if why:
        missing(why)
    with pgcluster.throwaway_postgres(port=port) as new_database:
        yield new_database(database)
