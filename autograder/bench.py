r"""Where a submission's seconds go: the grading pipeline against stock nbgrader, timed.

Command line (``python -m autograder.bench [--course DIR] ...``)::

    [--labs LAB ...] [--per-lab N] [--root DIR] [--json FILE] [--quick] [--no-pin] [--no-parallel]

For each lab (default: every lab of the course) it builds one batch of ``N`` submissions
(default 20): the solution, the blank release, and the solution with one plausible mistake
each (the course's mutants, one exercise after the other, cycling when ``N`` asks for more),
and grades that same batch four ways, each in a fresh scratch course under ``--root``
(default ``_grading/bench`` in the course):

- **stock**: nbgrader's own preprocessors and ``Execute`` (no sandbox, no guard, no
  RestoreCells): the scratch course's ``nbgrader_config.py`` keeps the course directories
  and the cell timeout but resets the preprocessor lists to nbgrader's class defaults;
- **pipeline, sequential**: the course's own configuration, one ``nbgrader autograde``
  batch (:meth:`autograder.grading.Course.autograde_batch`);
- both sequential configurations run on **one core**: the nbgrader process and its kernels
  are pinned to one CPU with ``OMP_NUM_THREADS=1`` (the pipeline claims a core as every batch
  does, :mod:`autograder.cores`; stock nbgrader is pinned by a wrapper, inherited); ``--no-pin``
  leaves every configuration unpinned, for a machine busy with other work;
- **2 batches, no Dask**: the batch in two halves, each a sequential pipeline batch of its own
  scratch course (its own nbgrader process and SQLite gradebook) on a core of its own, both at
  once: what this machine gives two grading processes, the ceiling of the next configuration
  (``--quick`` skips it);
- **pipeline, 2 workers**: the same on :func:`autograder.parallel.grade_parallel` with
  two local Dask workers, into a throwaway PostgreSQL gradebook (Debian's server binaries,
  ``/usr/lib/postgresql/*/bin``); each worker's batch claims a core of its own. Without the
  binaries the run uses ``grade_parallel``'s explicit SQLite override and says so; ``--quick``
  skips this configuration instead, and ``--no-parallel`` always (the smoke test: the 2-worker
  path has tests of its own, ``tests/test_parallel_grading.py``).

Every pipeline configuration starts from no preloaded zygote (:mod:`autograder.sandbox.zygote`)
and first grades the solution alone, untimed by its batch: that kernel starts the machine's zygote,
which then serves the batch, as it serves every batch of a class after the first. ``--quick`` (the
smoke test, run beside other tests) does neither: it leaves the machine's zygotes alone and its
first submission may start one.

It prints, per lab and configuration, the median and mean seconds per submission, the
batch's wall time, submissions per core-hour and the speed-up of two batches and of two workers; a projection
for 1000 students x 12 labs on 16 cores; a warning for any submission whose per-cell scores
differ between configurations (they should not: same notebooks); and where the pipeline's
seconds go: kernel start, the guard's setup and steps, the lab's setup cell and its other
cells, the rest of :class:`GuardedExecute`, nbgrader's own passes, and the one-off cost of an
nbgrader process (``seconds = fixed + N x per_submission`` from the batch of N and a batch of
1 of the solution). The parts come from the timing records :class:`GuardedExecute` writes
when ``AUTOGRADER_TIMINGS`` names a file.

Seconds per submission in a batch are the gaps between the autograded notebooks' write times
(nbgrader grades one submission after the other and writes each notebook last); the first
gap runs from the batch's start, so it carries the nbgrader process's start-up. With two
workers each worker grades a chunk of the batch in one nbgrader process (half of it, at most
ten), and a submission's seconds are the same gaps within its chunk. These are wall-clock figures of one run: on a shared machine they are as noisy as
the machine is busy; a figure to compare is one printed against its baseline in the same run.
``--json FILE`` writes everything printed, and the raw figures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import nbformat

from autograder import grading, integrity
from autograder.config import CONFIG_FILE, CourseNotFound, course_root, course_settings
from autograder.cores import PIN_ENV
from autograder.grading import Course, GradingError
from autograder.pgcluster import postgres_missing, throwaway_postgres
from autograder.preprocessors.execute import TIMINGS_ENV

__all__ = ["CONFIGURATIONS", "build_batch", "main", "run_bench"]

STOCK, SEQUENTIAL, PAIR, PARALLEL = "stock", "sequential", "pair", "parallel"
#: the configurations, in the order they run and print
CONFIGURATIONS = {
    STOCK: "stock nbgrader",
    SEQUENTIAL: "pipeline, sequential",
    PAIR: "2 batches, no Dask",
    PARALLEL: "pipeline, 2 workers",
}
WORKERS = 2
SOLO = "solo-solution"  # the batch of 1 (the solution again) that measures an nbgrader process's fixed cost
PROJECTION = {"students": 1000, "labs": 12, "cores": 16}

#: appended to the stock course's copy of nbgrader_config.py
STOCK_CONFIG = """

# -- python -m autograder.bench: the "stock" configuration ------------------------------------
# nbgrader's own preprocessors, its Execute among them (no sandbox, no guard, no RestoreCells,
# no StderrToStdout); the course directories and the cell timeout above are kept.
from nbgrader.converters import Autograde as _BenchAutograde, GenerateFeedback as _BenchFeedback

c.Autograde.sanitize_preprocessors = _BenchAutograde.sanitize_preprocessors.default()
c.Autograde.autograde_preprocessors = _BenchAutograde.autograde_preprocessors.default()
c.GenerateFeedback.preprocessors = _BenchFeedback.preprocessors.default()
"""

#: a graded line of grade_parallel's output: "  STUDENT  SCORE  SECONDS s  graded on WORKER"
_PARALLEL_LINE = re.compile(r"^\s+(\S+)\s+\S+\s+([0-9.]+) s\s+graded on ")


# ----------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------


def _interleaved(mutants: Sequence[integrity.Mutant]) -> list[integrity.Mutant]:
    """The mutants one exercise after the other: each exercise's first, then each one's second..."""
    by_exercise: dict[str, list[integrity.Mutant]] = {}
    for m in mutants:
        by_exercise.setdefault(m.exercise, []).append(m)
    out, depth = [], 0
    while len(out) < len(mutants):
        out += [ms[depth] for ms in by_exercise.values() if depth < len(ms)]
        depth += 1
    return out


def build_batch(lab: str, n: int, repo: Path | None = None,
                mutants_dir: Path | None = None) -> list[tuple[str, nbformat.NotebookNode]]:
    """``[(student, notebook)]``: the solution, the blank release, then one mutant each, ``n`` in all."""
    if n < 1:
        raise GradingError(f"a batch needs at least one submission, not {n}")
    batch = [("solution", integrity.solution_notebook(lab, repo))]
    if n >= 2:
        batch.append(("blank", nbformat.read(str(grading.release_path(lab, repo)), as_version=4)))
    mutants = _interleaved(integrity.load_mutants(lab, mutants_dir)) if n > 2 else []
    if n > 2 and not mutants:
        raise GradingError(f"{lab}: no mutants to fill a batch of {n}")
    for k in range(n - len(batch)):
        m, lap = mutants[k % len(mutants)], k // len(mutants)
        batch.append((m.student if lap == 0 else f"{m.student}-{lap + 1}", integrity.mutant_notebook(m, repo)))
    return batch


# ----------------------------------------------------------------------------
# Scratch courses and the gradebooks
# ----------------------------------------------------------------------------


def _fresh(root: Path, repo: Path) -> Path:
    """``root``, emptied if the bench (or another scratch run) made it; refuse anything else."""
    root = root.resolve()
    release = (repo / grading.RELEASE_DIR).resolve()
    if release in (root, *root.parents) or root in release.parents or root == repo.resolve():
        raise GradingError(f"refusing to use {root} as a scratch course: it holds {release}")
    if root.exists():
        if (root / grading.SCRATCH_MARKER).is_file():
            shutil.rmtree(root)
        elif any(root.iterdir()):
            raise GradingError(f"{root} exists, is not empty and is not a scratch course; choose another --root")
    return root


# ----------------------------------------------------------------------------
# Grading one batch, timed
# ----------------------------------------------------------------------------


def _scratch_course(root: Path, lab: str, repo: Path, batch, db_url: str | None = None,
                    stock: bool = False) -> Course:
    course = Course.create(_fresh(root, repo), [lab], repo, db_url=db_url)
    if stock:
        with open(course.root / CONFIG_FILE, "a") as f:
            f.write(STOCK_CONFIG)
    course.generate(lab)
    for student, nb in batch:
        course.submit_notebook(lab, student, nb)
    if stock:
        course.entry = "nbgrader"  # python -m nbgrader: stock nbgrader's own start-up
    return course


#: the sequential configurations run on one core: nbgrader, its kernels and everything they start are
#: pinned to the first CPU this process may use (sched_setaffinity, inherited), with one thread each
_ONE_CORE = (
    "import os, sys\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _one_core(course: Course) -> None:
    """Run ``course``'s nbgrader (and its kernels) on one core, one thread: the pipeline claims a
    core as every batch does (autograder.cores); stock nbgrader, which does not, is pinned by a
    wrapper to the first CPU."""
    course.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if course.entry == grading.RUN_NBGRADER:
        course.pin = True
    else:
        course.pin = False
        course.command_prefix = [sys.executable, "-c", _ONE_CORE, str(min(os.sched_getaffinity(0)))]


def _no_zygote() -> None:
    """Stop the preloaded zygotes (autograder.sandbox.zygote)."""
    from autograder.sandbox import zygote

    if zygote.stop_all():
        time.sleep(0.5)


def _zygotes() -> int:
    from autograder.sandbox import zygote

    return len(zygote.running())


def _warm_up(course: Course, lab: str, solo_notebook, one_core: bool = True) -> float:
    """Stop every zygote, then grade the solution alone (``SOLO``) in ``course``, untimed by the
    batch that follows: its kernel starts a fresh zygote, as a class's first batch does; a machine's
    zygote then serves every later batch (it exits after 2 minutes without a kernel). Returns the
    batch of 1's wall time (the zygote's start included)."""
    _no_zygote()
    if not course.path("submitted", SOLO, lab).is_file():
        course.submit_notebook(lab, SOLO, solo_notebook)
    return _sequential_batch(course, lab, [SOLO], "", one_core=one_core)["wall"]


def _prepare(course: Course, timings: str, one_core: bool) -> None:
    """Pin ``course``'s batches to one core (or nothing, ``--no-pin``) and say where its timing
    records go (empty: none)."""
    if one_core:
        _one_core(course)
    else:
        course.pin = False
    course.env[TIMINGS_ENV] = timings


def _sequential_batch(course: Course, lab: str, students: Sequence[str], timings: str = "",
                      one_core: bool = True) -> dict:
    _prepare(course, timings, one_core)
    since, start = time.time(), time.perf_counter()
    errors = course.autograde_batch(lab, students)
    wall = time.perf_counter() - start
    seconds = course.batch_seconds(lab, students, since)
    pinned = one_core and (course.last_cpu is not None or course.entry != grading.RUN_NBGRADER)
    return {"wall": wall, "seconds": seconds, "errors": errors, "order": list(seconds), "pinned": pinned}


def _parallel_batch(course: Course, lab: str, students: Sequence[str], timings: str, allow_sqlite: bool,
                    one_core: bool = True) -> dict:
    import logging

    from distributed import LocalCluster

    from autograder.parallel import GRADED, grade_parallel

    log: list[str] = []
    zygotes_before = _zygotes()
    old = os.environ.get(TIMINGS_ENV)
    old_pin = os.environ.get(PIN_ENV)
    os.environ[TIMINGS_ENV] = timings  # the Dask workers, and their nbgrader processes, inherit it
    if not one_core:
        os.environ[PIN_ENV] = "0"
    try:
        # the local cluster is started first and timed apart: a class's cluster is started once
        # for many batches; the wall time compared with the sequential batch's is the grading's
        start = time.perf_counter()
        with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
            cluster_start = time.perf_counter() - start
            start = time.perf_counter()
            statuses = grade_parallel(course.root, lab, list(students), scheduler=cluster.scheduler_address,
                                      db_url=course.db_url, allow_sqlite=allow_sqlite, out=log.append)
            wall = time.perf_counter() - start
    finally:
        for name, value in ((TIMINGS_ENV, old), (PIN_ENV, old_pin)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    seconds = {}
    for line in log:
        m = _PARALLEL_LINE.match(line)
        if m and m.group(1) in statuses:
            seconds[m.group(1)] = float(m.group(2))
    errors = {s: st for s, st in statuses.items() if st != GRADED}
    return {"wall": wall, "cluster_start": cluster_start, "seconds": seconds, "errors": errors, "log": log,
            "zygotes_started": max(0, _zygotes() - zygotes_before)}


def _pair_batch(courses: Sequence[Course], lab: str, halves: Sequence[Sequence[str]], timings: Sequence[str],
                one_core: bool = True) -> dict:
    """The batch's two halves graded at once, each a sequential batch of its own scratch course (its
    own nbgrader process and SQLite gradebook; each claims a core): what two grading processes get
    from this machine without Dask, the ceiling of the 2-worker configuration."""
    import concurrent.futures

    for course, timing in zip(courses, timings):
        _prepare(course, timing, one_core)
    since, start = time.time(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(courses)) as pool:
        futures = [pool.submit(c.autograde_batch, lab, list(h)) for c, h in zip(courses, halves)]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - start
    seconds, errors = {}, {}
    for course, half, result in zip(courses, halves, results):
        seconds.update(course.batch_seconds(lab, list(half), since))
        errors.update(result)
    cpus = [c.last_cpu for c in courses]
    pinned = one_core and None not in cpus and len(set(cpus)) == len(cpus)
    return {"wall": wall, "seconds": seconds, "errors": errors, "order": list(seconds), "pinned": pinned}


#: the imports a kernel of this course pays before and while it runs a lab, timed one after the other
#: in a fresh interpreter on one core (what is already loaded is not counted twice); the last two come
#: with the first ``torch.optim`` optimizer (PyTorch wraps its methods in
#: ``torch._compile._disable_dynamo``, which imports ``torch._dynamo`` on the first call) and the first
#: ``torch.testing.assert_close`` (it checks for DTensors), which grading kernels no longer pay
IMPORTS = [
    ("python and ipykernel", "ipykernel.kernelapp"),
    ("torch", "torch"),
    ("matplotlib.pyplot", "matplotlib.pyplot"),
    ("the library packages", ""),  # the course's (c.GuardedExecute.library_packages), filled in by import_costs
    ("torch._dynamo (the first optimizer)", "torch._dynamo"),
    # the first assert_close's import, which the guard's setup spares grading kernels (kernel.guard._skip_dtensor_import)
    ("torch.distributed.tensor (what the above left; not in grading kernels)", "torch.distributed.tensor"),
]
_IMPORT_TIMER = (
    "import json, sys, time\n"
    "out = {}\n"
    "for label, modules in json.loads(sys.argv[1]):\n"
    "    start = time.perf_counter()\n"
    "    for name in modules.split(', '):\n"
    "        __import__(name)\n"
    "    out[label] = time.perf_counter() - start\n"
    "print(json.dumps(out))\n"
)


def import_costs(repo: Path, repeats: int = 3) -> dict[str, float]:
    """Median seconds of each of :data:`IMPORTS`, in ``repeats`` fresh interpreters pinned to one core."""
    library = ", ".join(course_settings(repo)["library_packages"]) or "sys"
    imports = [(label, modules or library) for label, modules in IMPORTS]
    cmd = [sys.executable, "-c", _ONE_CORE, str(min(os.sched_getaffinity(0))),
           sys.executable, "-c", _IMPORT_TIMER, json.dumps(imports)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {}
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {label: statistics.median(r[label] for r in runs) for label, _ in IMPORTS}


_SPIN = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "s = 0\n"
    "for i in range(int(sys.argv[1])):\n"
    "    s += i * i % 7\n"
    "print(time.perf_counter() - start)\n"
)


def parallel_ceiling(workers: int = WORKERS, loops: int = 25_000_000, repeats: int = 3) -> float | None:
    """What ``workers`` processes at once get from this machine: the speed-up of ``workers`` copies of a
    CPU-bound Python loop (about 2 s) run together over one run alone, the median of ``repeats``.

    A machine whose "cores" share one physical core, or a host busy with other tenants, gives less
    than ``workers``: the 2-worker speed-up of the grading cannot beat it.
    """
    cmd = [sys.executable, "-c", _SPIN, str(loops)]
    ratios = []
    for _ in range(repeats):
        try:
            alone = float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
            together = [float(p.communicate()[0]) for p in procs]
        except (OSError, ValueError, subprocess.CalledProcessError):
            return None
        ratios.append(workers * alone / max(together))
    return statistics.median(ratios)


def _read_records(path: Path) -> dict[str, dict]:
    """``{student: record}`` from a timing file (the last record of a student wins)."""
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record.get("student")] = record
    return records


def _parts(record: dict, wall: float | None) -> dict[str, float]:
    """Where one submission's seconds went, from its timing record and its wall time."""
    cells = record.get("cells") or []
    setup = cells[0][2] if cells else 0.0
    others = sum(c[2] for c in cells[1:])
    parts = {
        "kernel_start": record.get("kernel_start") or 0.0,
        "guard_setup": record["guard_setup"],
        "guard_steps": record["guard_steps"],
        "setup_cell": setup,
        "other_cells": others,
        "kernel_stop": record.get("kernel_stop") or 0.0,
    }
    parts["executor_rest"] = record["total"] - sum(parts.values())
    if wall is not None:
        parts["nbgrader"] = wall - record["total"]
    return parts


PART_LABELS = {
    "kernel_start": "kernel start",
    "guard_setup": "guard setup",
    "guard_steps": "guard steps",
    "setup_cell": "setup cell",
    "other_cells": "other cells",
    "kernel_stop": "kernel stop",
    "executor_rest": "executor rest",
    "nbgrader": "nbgrader passes",
}


def _stats(seconds: dict[str, float]) -> dict:
    values = list(seconds.values())
    if not values:
        return {"median": None, "mean": None}
    return {"median": statistics.median(values), "mean": statistics.fmean(values)}


# ----------------------------------------------------------------------------
# The bench
# ----------------------------------------------------------------------------


def _bench_lab(lab: str, n: int, repo: Path, root: Path, configs: Sequence[str], new_database,
               allow_sqlite: bool, out, solo: bool = True, one_core: bool = True) -> dict:
    batch = build_batch(lab, n, repo)
    students = [s for s, _ in batch]
    out(f"{lab}: a batch of {len(batch)}: the solution, the blank release"
        + (f" and {len(batch) - 2} mutant(s)" if len(batch) > 2 else ""))
    result: dict = {"students": students, "configurations": {}}
    solution = batch[0][1]
    for config in configs:
        where = root / lab / config
        warm_up = None
        if config == STOCK:
            course = _scratch_course(where, lab, repo, batch, stock=True)
            if solo:
                _no_zygote()  # stock nbgrader executes its kernels: no zygote
            run = _sequential_batch(course, lab, students, one_core=one_core)
        elif config == SEQUENTIAL:
            course = _scratch_course(where, lab, repo, batch)
            timings = where / "timings.jsonl"
            # --quick (the smoke test, beside other tests): no warm-up, and the machine's zygotes left alone
            warm_up = _warm_up(course, lab, solution, one_core) if solo else None
            run = _sequential_batch(course, lab, students, str(timings), one_core=one_core)
            run["solo_wall"] = None
            if solo:  # the batch of 1 again, the zygote warm: an nbgrader process's fixed cost
                run["solo_wall"] = _sequential_batch(course, lab, [SOLO], str(timings), one_core=one_core)["wall"]
            run["records"] = _read_records(timings)
        elif config == PAIR:
            halves = [students[: (len(students) + 1) // 2], students[(len(students) + 1) // 2:]]
            courses = [_scratch_course(where / half, lab, repo, [b for b in batch if b[0] in part])
                       for half, part in zip("ab", halves)]
            warm_up = _warm_up(courses[0], lab, solution, one_core)
            timings_ab = [c.root / "timings.jsonl" for c in courses]
            run = _pair_batch(courses, lab, halves, [str(t) for t in timings_ab], one_core)
            run["records"] = {k: v for t in timings_ab for k, v in _read_records(t).items()}
        else:
            db_url = new_database(f"bench_{lab}") if new_database is not None else None
            course = _scratch_course(where, lab, repo, batch, db_url=db_url)
            timings = where / "timings.jsonl"
            warm_up = _warm_up(course, lab, solution, one_core)
            run = _parallel_batch(course, lab, students, str(timings), allow_sqlite, one_core=one_core)
            run["records"] = _read_records(timings)
            run["records"].pop(SOLO, None)
        run["warm_up"] = warm_up
        scores = {}
        for c in (courses if config == PAIR else [course]):
            scores.update(grading.read_scores(c.db_url))
        run["scores"] = {s: {g: list(v) for g, v in scores[(lab, s)].cells.items()}
                         for s in students if (lab, s) in scores and s not in run["errors"]}
        run.update(_stats(run["seconds"]))
        run["n"] = len(students)
        run["graded"] = len(students) - len(run["errors"])
        run["scratch_course"] = str(course.root.parent if config == PAIR else course.root)
        out(f"{lab}: {CONFIGURATIONS[config]}: {run['graded']}/{len(students)} graded in {run['wall']:.1f} s"
            + (f" (before it: the solution alone, starting the zygote, {warm_up:.1f} s)" if warm_up is not None else "")
            + (f" (the cluster started in {run['cluster_start']:.1f} s before)" if "cluster_start" in run else "")
            + (f" (the workers' kernels started {run['zygotes_started']} zygote(s) of their own)"
               if run.get("zygotes_started") else "")
            + (f" (not graded: {', '.join(sorted(run['errors']))})" if run["errors"] else "")
            + (" (NOT on one core: every core was claimed by another grading batch)"
               if one_core and run.get("pinned") is False else ""))
        result["configurations"][config] = run
    return result


def _compare_scores(lab: str, result: dict) -> list[str]:
    """Warning lines for submissions whose per-cell scores differ between configurations."""
    runs = result["configurations"]
    base = SEQUENTIAL if SEQUENTIAL in runs else next(iter(runs))
    warnings = []
    for student in result["students"]:
        for config, run in runs.items():
            if config == base:
                continue
            mine, theirs = run["scores"].get(student), runs[base]["scores"].get(student)
            if mine is None or theirs is None:
                missing = [c for c, r in ((config, mine), (base, theirs)) if r is None]
                warnings.append(f"WARNING {lab} {student}: not graded by {', '.join(CONFIGURATIONS[c] for c in missing)}"
                                " (no scores to compare)")
                continue
            diffs = [f"{g} {mine.get(g, ['-'])[0]:g} vs {theirs.get(g, ['-'])[0]:g}"
                     if g in mine and g in theirs else f"{g} only in one"
                     for g in sorted(set(mine) | set(theirs)) if mine.get(g) != theirs.get(g)]
            if diffs:
                warnings.append(f"WARNING {lab} {student}: {CONFIGURATIONS[config]} scores differ from "
                                f"{CONFIGURATIONS[base]}: " + "; ".join(diffs))
    return warnings


def _breakdown(lab: str, result: dict) -> dict | None:
    """Where the pipeline's seconds go (sequential run): mean parts over submissions 2..N."""
    run = result["configurations"].get(SEQUENTIAL)
    if run is None:
        return None
    order = [s for s in run["order"] if s in run["records"]]
    steady = order[1:] or order  # the first gap carries the nbgrader process's start-up
    if not steady:
        return None
    each = [_parts(run["records"][s], run["seconds"][s]) for s in steady]
    parts = {k: statistics.fmean(p[k] for p in each) for k in each[0]}
    wall = statistics.fmean(run["seconds"][s] for s in steady)
    n = len(result["students"])
    per = (run["wall"] - run["solo_wall"]) / (n - 1) if n > 1 and run["solo_wall"] is not None else None
    fixed = run["solo_wall"] - per if per is not None else None
    # the same split measured directly: the batch of 1 less its one submission (its GuardedExecute
    # record, plus nbgrader's passes as they cost in the batch of N)
    solo = run["records"].get(SOLO)
    direct = run["solo_wall"] - solo["total"] - parts.get("nbgrader", 0.0) if solo and run["solo_wall"] else None
    counts = statistics.fmean(run["records"][s]["guard_count"] for s in steady)
    first_cell = run["records"][steady[0]]["cells"][0][1] if run["records"][steady[0]]["cells"] else None
    out = {"submissions": steady, "wall": wall, "parts": parts, "guard_count": counts, "setup_cell_id": first_cell,
           "batch_of_n": run["wall"], "n": n, "batch_of_1": run["solo_wall"], "per_submission_fit": per,
           "fixed": fixed, "fixed_direct": direct,
           "warm_up": run.get("warm_up"),
           "zygote_start": run["warm_up"] - run["solo_wall"] if run.get("warm_up") and run["solo_wall"] else None}
    par = result["configurations"].get(PARALLEL)
    if par and par["records"] and par["seconds"]:
        tasks = [s for s in par["seconds"] if s in par["records"]]
        if tasks:
            out["parallel"] = {
                "task": statistics.fmean(par["seconds"][s] for s in tasks),
                "executor": statistics.fmean(par["records"][s]["total"] for s in tasks),
                "kernel_start": statistics.fmean(par["records"][s]["kernel_start"] or 0.0 for s in tasks),
                "cells": statistics.fmean(sum(c[2] for c in par["records"][s]["cells"]) for s in tasks),
            }
    return out


def _fmt(x, width=8, digits=1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def _table(labs: Sequence[str], results: dict) -> list[str]:
    head = (f"{'lab':<6} {'configuration':<21} {'n':>3} {'median s':>9} {'mean s':>8} {'batch s':>8} "
            f"{'subs/core-h':>11} {'speed-up':>8}")
    lines = [head, "-" * len(head)]
    for lab in labs:
        runs = results[lab]["configurations"]
        for config, run in runs.items():
            speed = None
            if config in (PAIR, PARALLEL) and SEQUENTIAL in runs:
                speed = runs[SEQUENTIAL]["wall"] / run["wall"]
            lines.append(f"{lab:<6} {CONFIGURATIONS[config]:<21} {run['n']:>3} {_fmt(run['median'], 9, 2)} "
                         f"{_fmt(run['mean'], 8, 2)} {_fmt(run['wall'], 8)} {_fmt(run['per_core_hour'], 11, 0)} "
                         + (f"{speed:>7.2f}x" if speed else f"{'':>8}"))
    return lines


def _core_seconds(config: str, run: dict) -> float:
    """Core-seconds per submission: one core for a sequential batch, ``WORKERS`` for the two others."""
    if config in (PAIR, PARALLEL):
        return run["wall"] * WORKERS / run["n"]
    return run["wall"] / run["n"]


def run_bench(labs: Sequence[str], per_lab: int, repo: Path, root: Path, quick: bool = False,
              out=print, one_core: bool = True, parallel: bool = True) -> dict:
    """Grade the batches, print the table and the breakdown; return everything as a dict."""
    started = time.perf_counter()
    configs = [STOCK, SEQUENTIAL, PARALLEL] if quick else [STOCK, SEQUENTIAL, PAIR, PARALLEL]
    skipped: dict[str, str] = {}
    if quick:
        skipped[PAIR] = "skipped (--quick)"
    notes: list[str] = []
    why = postgres_missing() if parallel else None
    allow_sqlite = False
    if not parallel:
        configs.remove(PARALLEL)
        skipped[PARALLEL] = "skipped (--no-parallel)"
        out(f"note: {CONFIGURATIONS[PARALLEL]} {skipped[PARALLEL]}")
    elif why and quick:
        configs.remove(PARALLEL)
        skipped[PARALLEL] = f"skipped (--quick): no PostgreSQL gradebook for parallel writers: {why}"
        out(f"note: {CONFIGURATIONS[PARALLEL]} {skipped[PARALLEL]}")
    elif why:
        allow_sqlite = True
        notes.append(f"{CONFIGURATIONS[PARALLEL]} grades into a SQLite gradebook with grade_parallel's "
                     f"allow_sqlite override ({why}): SQLite takes one writer at a time, so the workers may "
                     "wait on each other or fail")
        out("note: " + notes[-1])
    else:
        notes.append(f"{CONFIGURATIONS[PARALLEL]} grades into a throwaway PostgreSQL gradebook")
    if PARALLEL in configs:
        notes.append(f"the {WORKERS}-worker wall time is the grading's: the local Dask cluster is started (and "
                     f"timed) before it, as a class's cluster is started once for many batches")
        notes.append("Dask starts its workers with OMP_NUM_THREADS=1 (distributed.nanny.pre-spawn-environ), which "
                     "their nbgrader processes and kernels inherit")
    if quick:
        notes.append("--quick: no warm-up, and the machine's zygotes left as they are (the first submission may "
                     "start one)")
    else:
        notes.append("every pipeline configuration starts from no zygote and grades the solution alone before its "
                     "batch (the figure after 'before it'): that kernel starts the machine's zygote, which then serves "
                     "the batch, as it serves every batch of a class after the first (it exits after 2 minutes "
                     "without a kernel); the batch's wall time is the steady state's")
    if PAIR in configs:
        notes.append(f"{CONFIGURATIONS[PAIR]}: the batch in two halves, each a pipeline batch on a core of its own "
                     "(its own nbgrader process and SQLite gradebook), both at once: what this machine gives two "
                     "grading processes, the 2 workers' ceiling; the 2 workers' wall over this one is Dask's own cost")
    if one_core:
        notes.append("the sequential configurations (stock and pipeline) run on one core: their nbgrader process and "
                     "its kernels are pinned to one CPU with OMP_NUM_THREADS=1 (the pipeline's batch claims a core, "
                     "autograder.cores, as each 2-worker batch does; stock nbgrader through a wrapper)")
    else:
        notes.append("--no-pin: every configuration ran unpinned, on whatever cores were free (not the targets' "
                     "one core)")
    out(f"bench: labs {', '.join(labs)}, {per_lab} submission(s) per lab, scratch courses under {root}, "
        f"{os.cpu_count()} CPU(s), load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    results: dict = {}
    with contextlib.ExitStack() as stack:
        new_database = stack.enter_context(throwaway_postgres()) if PARALLEL in configs and not why else None
        for lab in labs:
            results[lab] = _bench_lab(lab, per_lab, repo, root, configs, new_database, allow_sqlite, out,
                                      solo=not quick, one_core=one_core)
    for lab in labs:
        for config, run in results[lab]["configurations"].items():
            run["core_seconds"] = _core_seconds(config, run)
            run["per_core_hour"] = 3600.0 / run["core_seconds"]

    lines = ["", "Seconds per submission (median, mean), batch wall time, submissions per core-hour "
             f"(one core: n x 3600 / wall; {WORKERS} workers or batches: n x 3600 / (wall x {WORKERS})), speed-up "
             f"(sequential wall / their wall):", *_table(labs, results)]
    for lab in labs:
        runs = results[lab]["configurations"]
        if PAIR in runs and PARALLEL in runs:
            lines.append(f"  {lab}: {WORKERS} workers took {runs[PARALLEL]['wall'] / runs[PAIR]['wall']:.2f}x the wall "
                         f"time of {WORKERS} batches without Dask (Dask's own cost, and this machine's noise)")

    warnings = [w for lab in labs for w in _compare_scores(lab, results[lab])]
    compared = sum(len(results[lab]["students"]) for lab in labs)
    lines += ["", *(warnings or [f"scores: identical per cell across the {len(configs)} configurations "
                                 f"for all {compared} submissions"])]

    projection = {}
    total = PROJECTION["students"] * PROJECTION["labs"]
    lines += ["", f"Projection: {PROJECTION['students']} students x {PROJECTION['labs']} labs = {total} submissions "
              f"on {PROJECTION['cores']} cores, at the mean measured cost per submission of "
              f"{', '.join(labs)} (it assumes the {len(labs)} measured lab(s) are typical of the "
              f"{PROJECTION['labs']}, and that {PROJECTION['cores']} cores scale as {WORKERS} did):"]
    for config in configs:
        costs = [results[lab]["configurations"][config]["core_seconds"] for lab in labs]
        cost = statistics.fmean(costs)
        hours = total * cost / PROJECTION["cores"] / 3600.0
        projection[config] = {"core_seconds_per_submission": cost, "hours": hours}
        lines.append(f"  {CONFIGURATIONS[config]:<21} {cost:6.2f} core-s per submission -> {hours:6.2f} h")

    breakdowns = {lab: _breakdown(lab, results[lab]) for lab in labs}
    lines += ["", "Where the seconds go (pipeline, sequential): mean seconds per submission over submissions "
              "2..N of the batch (the first carries the nbgrader process's start-up, counted below as fixed):"]
    keys = list(PART_LABELS)
    head = f"{'lab':<6} {'wall':>6}  " + "  ".join(f"{PART_LABELS[k]:>{max(len(PART_LABELS[k]), 6)}}" for k in keys)
    lines += [head, "-" * len(head)]
    for lab in labs:
        b = breakdowns[lab]
        if b is None:
            lines.append(f"{lab:<6} (no timing records)")
            continue
        cols = "  ".join(f"{b['parts'].get(k, 0.0):>{max(len(PART_LABELS[k]), 6)}.2f}" for k in keys)
        shares = "  ".join(f"{100 * b['parts'].get(k, 0.0) / b['wall']:>{max(len(PART_LABELS[k]), 6) - 1}.0f}%"
                           for k in keys)
        lines += [f"{lab:<6} {b['wall']:>6.2f}  {cols}", f"{'':<6} {'100%':>6}  {shares}"]
    lines += ["  kernel start: from the kernel manager's start to the kernel's answer (sandbox included); "
              "guard setup, guard steps: GuardedExecute.guard_seconds (the setup imports the protected modules, "
              "torch and the library packages among them, to snapshot them: the lab's setup cell, its first code "
              "cell, then finds them loaded); other cells: the lab's other code cells; kernel stop: from the last "
              "cell to the kernel's shutdown; executor rest: the rest of GuardedExecute (the forbidden "
              "references, reading the source notebook); nbgrader passes: the rest of the submission's wall time "
              "(sanitising, the gradebook, writing files)."]
    for lab in labs:
        b = breakdowns[lab]
        if b is None:
            continue
        lines.append(f"  {lab}: {b['guard_count']:.0f} guard steps per submission; setup cell {b['setup_cell_id']}")
    ceiling = parallel_ceiling() if PARALLEL in configs and not quick else None
    if ceiling is not None:
        lines.append(f"this machine for {WORKERS} processes at once, on a CPU-bound loop that stays in cache "
                     f"({WORKERS} copies together against one alone, median of 3): {ceiling:.2f}x (grading, which "
                     f"reads far more memory, gets what '{CONFIGURATIONS[PAIR]}' got)")
    imports = import_costs(repo, repeats=1 if quick else 3)
    if imports:
        lines += ["", f"Imports every kernel pays, in a fresh interpreter on one core (median of {1 if quick else 3}), one after the "
                  "other; a grading kernel forked from the preloaded zygote (autograder.sandbox.zygote) pays only the library "
                  "packages of them (the zygote pays the rest once):"]
        library = ", ".join(course_settings(repo)["library_packages"])
        lines += [f"  {label + (f' ({library})' if label == 'the library packages' and library else ''):<56} {seconds:5.2f} s"
                  for label, seconds in imports.items()]
        lines.append(f"  {'total':<56} {sum(imports.values()):5.2f} s")
    lines += ["", "One-off cost of an nbgrader process: seconds = fixed + N x per_submission, from the batch of N "
              "(mixed submissions) and a batch of 1 (the solution alone):"]
    if quick:
        lines.append("  (--quick: no batch of 1, so no split)")
    for lab in labs:
        b = breakdowns[lab]
        if b is None:
            continue
        if b["per_submission_fit"] is not None:
            lines.append(f"  {lab}: batch of {b['n']} {b['batch_of_n']:.1f} s, batch of 1 {b['batch_of_1']:.1f} s -> "
                         f"fixed {b['fixed']:.1f} s + {b['per_submission_fit']:.2f} s per submission"
                         + (" (a negative fixed cost: the noise and the mix of the batch outweigh it)"
                            if b["fixed"] < 0 else ""))
        if b.get("zygote_start") is not None:
            lines.append(f"  {lab}: once per machine, not per batch: the zygote's start, the solution alone with no zygote "
                         f"less the same with it ({b['warm_up']:.1f} s - {b['batch_of_1']:.1f} s): {b['zygote_start']:.1f} s")
        if b.get("fixed_direct") is not None:
            lines.append(f"  {lab}: directly, the batch of 1 less its submission ({b['batch_of_1']:.1f} s - "
                         f"{b['batch_of_1'] - b['fixed_direct']:.1f} s): fixed {b['fixed_direct']:.1f} s")
        if "parallel" in b:
            p = b["parallel"]
            lines.append(f"  {lab}, {WORKERS} workers: a submission takes {p['task']:.2f} s: GuardedExecute {p['executor']:.2f} s "
                         f"(kernel start {p['kernel_start']:.2f} s, cells {p['cells']:.2f} s), the rest "
                         f"{p['task'] - p['executor']:.2f} s (nbgrader's passes, its process's start-up shared by the chunk, Dask)")
    elapsed = time.perf_counter() - started
    lines += ["", *[f"note: {n}" for n in notes],
              f"note: wall-clock figures of one run on {os.cpu_count()} CPU(s), load average now "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}: noisy on a shared machine",
              f"bench: finished in {elapsed:.0f} s"]
    for line in lines:
        out(line)
    return {
        "labs": list(labs),
        "per_lab": per_lab,
        "quick": quick,
        "configurations": {c: CONFIGURATIONS[c] for c in configs},
        "skipped": skipped,
        "notes": notes,
        "results": results,
        "score_differences": warnings,
        "projection": {**PROJECTION, "by_configuration": projection},
        "breakdown": breakdowns,
        "imports": imports,
        "parallel_ceiling": ceiling,
        "seconds": elapsed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", default=None, help="course directory (default: found from the working directory)")
    parser.add_argument("--labs", nargs="+", default=None, help="labs to measure (default: every lab)")
    parser.add_argument("--per-lab", type=int, default=None, help="submissions per lab (default 20; 3 with --quick)")
    parser.add_argument("--root", default=None, help="where the scratch courses go (default _grading/bench)")
    parser.add_argument("--json", default=None, help="write everything printed, and the raw figures, to this file")
    parser.add_argument("--no-pin", action="store_true",
                        help="pin nothing: neither the sequential configurations to one core nor the workers' "
                             "batches to a core each (on a machine busy with other work, a pinned batch waits for "
                             "its one core; the smoke test uses this)")
    parser.add_argument("--quick", action="store_true",
                        help="one lab, 3 submissions; no 2-worker run without PostgreSQL (the smoke test)")
    parser.add_argument("--no-parallel", action="store_true",
                        help="skip the 2-worker configuration (no Dask cluster, no PostgreSQL)")
    args = parser.parse_args(argv)
    printed: list[str] = []

    def out(line: str) -> None:
        printed.append(line)
        print(line, flush=True)

    try:
        repo = course_root(args.course).resolve()
        known = grading.discover_labs(repo)
        labs = list(args.labs) if args.labs else known
        unknown = [lab for lab in labs if lab not in known]
        if unknown:
            raise GradingError(f"no lab {', '.join(unknown)} in {repo} (its labs: {', '.join(known) or 'none'})")
        if args.quick:
            labs = labs[:1]
        per_lab = args.per_lab if args.per_lab is not None else (3 if args.quick else 20)
        if per_lab < 1:
            raise GradingError(f"--per-lab must be at least 1, not {per_lab}")
        if not labs:
            raise GradingError(f"no labs in {repo}")
        root = Path(args.root) if args.root else repo / grading.GRADING_DIR / "bench"
        report = run_bench(labs, per_lab, repo, root, quick=args.quick, out=out, one_core=not args.no_pin,
                           parallel=not args.no_parallel)
    except (GradingError, CourseNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        report["command"] = ["python", "-m", "autograder.bench", *(sys.argv[1:] if argv is None else argv)]
        report["printed"] = printed
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
