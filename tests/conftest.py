"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one CPU thread, restoring the previous count afterwards.

    The problems in these tests are tiny: a second thread costs more in OpenMP
    synchronisation than it saves, and on a busy shared machine it slows them tenfold.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
