"""One core per grading process: the nbgrader process of a batch and its kernels share one CPU.

A submission is graded by two processes that take turns: nbgrader sends a cell, the kernel
runs it and answers, nbgrader records the answer and sends the next (about 60 round trips
per Lab 1 submission, the guard's steps included). On two cores the operating system puts
the two on different cores and every turn wakes the other core; measured on this project's
2-core virtual machines, a Lab 1 submission then took 4.2 s against 3.1 s with both
processes on one core, and more CPU time, not less (see the README's figures). So each
batch claims a core of its own for its nbgrader process, which its kernels inherit (the
zygote gives each forked kernel its client's affinity): two Dask workers on two cores then
grade as two independent one-core graders.

The claim is a lock on ``$TMPDIR/autograder-cores-UID/cpuN.lock`` for a CPU N this process
may use (``flock``: released when the holder exits, however it exits); a batch that finds
every core claimed (more workers than cores, or several graders at once) runs unpinned, as
before. ``AUTOGRADER_PIN=0`` turns pinning off. A pinned batch also runs with one
OpenMP/MKL/OpenBLAS thread (``OMP_NUM_THREADS=1`` and the others, unless set), which a one-core
process wants anyway, which lets the zygote fork its kernels (see :mod:`autograder.sandbox.zygote`),
and which matches what Dask's workers set: their kernels and the command line's share a zygote.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from autograder.sandbox.launcher import private_tmp_dir

#: ``AUTOGRADER_PIN=0`` keeps the nbgrader processes (and their kernels) unpinned
PIN_ENV = "AUTOGRADER_PIN"
#: read by :mod:`autograder.run_nbgrader`: the CPU its process pins itself to before it starts
CPU_ENV = "AUTOGRADER_CPU"


def lock_dir() -> str:
    """``$TMPDIR/autograder-cores-UID``, created 0700 (:func:`autograder.sandbox.launcher.private_tmp_dir`)."""
    return private_tmp_dir("cores")


def pinning_enabled() -> bool:
    return os.environ.get(PIN_ENV, "1").strip() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def claim_core(enabled: bool | None = None) -> Iterator[int | None]:
    """Hold a CPU of this process's affinity set that no other grading batch of this user holds,
    and yield its number; yield ``None`` when pinning is off (``enabled`` False, or ``None`` and
    ``AUTOGRADER_PIN=0``), when there is only one CPU to use, or when every one is held (the
    caller then runs unpinned)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if enabled is None:
        enabled = pinning_enabled()
    if not enabled or len(allowed) < 2:
        yield None
        return
    try:
        where = lock_dir()
    except OSError:
        yield None
        return
    # start from a CPU that depends on the process, so that two graders starting at once do not
    # both try CPU 0 first (either way each gets a distinct one)
    start = os.getpid() % len(allowed)
    for cpu in allowed[start:] + allowed[:start]:
        try:
            fd = os.open(os.path.join(where, f"cpu{cpu}.lock"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                         | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            yield cpu
        finally:
            os.close(fd)  # releases the lock
        return
    yield None


def pinned_env(cpu: int | None) -> dict[str, str]:
    """What to add to the environment of an nbgrader process started on ``cpu`` (nothing for
    ``None``): the CPU for :mod:`autograder.run_nbgrader`, and one OpenMP/MKL/OpenBLAS thread unless
    the caller's environment says otherwise (the three Dask's workers set too, so a pinned batch of the
    command line and a Dask task on the same machine fork their kernels from the same zygote)."""
    if cpu is None:
        return {}
    env = {CPU_ENV: str(cpu)}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if not os.environ.get(name):
            env[name] = "1"
    return env
