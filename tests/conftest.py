"""Fixtures shared by the test modules.

``GMLIB_TEST_THREADS=N`` runs the whole suite with N torch threads, the modules that ask for
``one_thread`` included (the suite must pass with 1 and with 2; see the README).
"""
import os

import pytest
import torch

_THREADS = os.environ.get("GMLIB_TEST_THREADS")
if _THREADS:
    torch.set_num_threads(int(_THREADS))


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one CPU thread, restoring the previous count afterwards.

    The problems in these tests are tiny: a second thread costs more in OpenMP
    synchronisation than it saves, and on a busy shared machine it slows them tenfold.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    ``GMLIB_TEST_THREADS`` overrides the count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(int(_THREADS) if _THREADS else 1)
    yield
    torch.set_num_threads(threads)
