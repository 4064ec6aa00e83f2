"""One core per grading batch (``autograder.cores``) and nbgrader's command line as the autograder
runs it (``autograder.run_nbgrader``: pinned to the claimed core, without jsonschema's IRI grammar).

- Claims are exclusive: within a process and across processes no two batches hold one CPU, a
  batch that finds every CPU held runs unpinned, and a claim ends with its holder.
- ``AUTOGRADER_PIN=0``, ``enabled=False`` and a single usable CPU all mean no pinning.
- ``python -m autograder.run_nbgrader`` pins itself to ``AUTOGRADER_CPU`` (and drops the
  variable, so kernels do not see it), starts nbgrader without importing ``rfc3987_syntax``,
  and nbformat still validates a lab notebook in that process.
- A course's nbgrader command carries the CPU and one thread only while a batch holds a claim.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from autograder import cores, grading

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture
def own_lock_dir(tmp_path, monkeypatch):
    """A temporary directory of the test's own (so the claims of a grading run beside it do not
    count), and pinning on whatever the environment says."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(cores.PIN_ENV, raising=False)
    return tmp_path


def test_claims_are_distinct_until_every_cpu_is_held_and_end_with_their_holder(own_lock_dir, monkeypatch):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    with cores.claim_core() as a, cores.claim_core() as b, cores.claim_core() as c, cores.claim_core() as d:
        assert sorted([a, b, c]) == [0, 1, 2]
        assert d is None  # every CPU held: unpinned
    with cores.claim_core() as a:  # released: claimable again
        assert a in (0, 1, 2)
        with cores.claim_core() as b:
            assert b in (0, 1, 2) and b != a
    lock_dir = Path(cores.lock_dir())
    assert lock_dir.parent == own_lock_dir and (lock_dir.stat().st_mode & 0o777) == 0o700


def test_a_claim_held_by_another_process_is_respected(own_lock_dir):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one usable CPU: nothing is ever pinned")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, tempfile
            tempfile.tempdir = {str(own_lock_dir)!r}
            from autograder import cores
            with cores.claim_core() as cpu:
                print(cpu, flush=True)
                sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        held = int(holder.stdout.readline())
        with cores.claim_core() as mine:
            assert mine is not None and mine != held and mine in allowed
    finally:
        holder.communicate("\n", timeout=30)
    with cores.claim_core() as mine:  # the holder exited: its CPU is free again
        assert mine is not None


def test_pinning_turned_off(own_lock_dir, monkeypatch):
    with cores.claim_core(enabled=False) as cpu:
        assert cpu is None
    monkeypatch.setenv(cores.PIN_ENV, "0")
    with cores.claim_core() as cpu:
        assert cpu is None
    monkeypatch.delenv(cores.PIN_ENV)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {3})
    with cores.claim_core() as cpu:
        assert cpu is None  # one CPU: nothing to choose
    assert cores.pinned_env(None) == {}


def test_run_nbgrader_pins_itself_and_skips_the_iri_grammar():
    cpu = max(os.sched_getaffinity(0))
    probe = textwrap.dedent("""
        import json, os, sys
        sys.argv = ["nbgrader", "--version"]
        from autograder import run_nbgrader
        try:
            run_nbgrader.main()
        except SystemExit:
            pass
        import nbformat
        release = nbformat.read(sys.stdin, as_version=4)
        nbformat.validate(release)  # raises on an invalid notebook
        broken = nbformat.from_dict({**release, "cells": [{"cell_type": "code"}]})
        try:
            nbformat.validate(broken)
            caught = False
        except nbformat.ValidationError:
            caught = True
        print(json.dumps({"affinity": sorted(os.sched_getaffinity(0)), "env": os.environ.get("AUTOGRADER_CPU"),
                          "jsonschema": "jsonschema" in sys.modules, "lark": "lark" in sys.modules,
                          "rfc3987_syntax": sys.modules.get("rfc3987_syntax", "absent") is not None,
                          "invalid_caught": caught}))
    """)
    release = grading.release_path(grading.discover_labs(REPO)[0], REPO).read_text()
    out = subprocess.run([sys.executable, "-c", probe], input=release, capture_output=True, text=True, timeout=120,
                         env={**ENV, cores.CPU_ENV: str(cpu)}, check=True)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert "nbgrader version" in out.stdout
    assert facts["affinity"] == [cpu] and facts["env"] is None
    assert facts["jsonschema"] and not facts["lark"] and not facts["rfc3987_syntax"]
    assert facts["invalid_caught"]


def test_a_course_command_carries_the_cpu_only_while_a_batch_holds_it(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    course = grading.Course(tmp_path)
    cmd, env = course.nbgrader_command("autograde", "lab01")
    assert cmd[1:3] == ["-m", grading.RUN_NBGRADER] and cores.CPU_ENV not in env and "OMP_NUM_THREADS" not in env
    course._cpu = 1
    cmd, env = course.nbgrader_command("autograde", "lab01")
    assert env[cores.CPU_ENV] == "1" and env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["OPENBLAS_NUM_THREADS"] == "1"  # as Dask's workers set it: the same zygote serves both
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the grader's own setting wins
    assert "OMP_NUM_THREADS" not in cores.pinned_env(1)
