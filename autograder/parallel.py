r"""Autograde a class in parallel with Dask distributed: a chunk of submissions per task.

``nbgrader autograde LAB`` grades the submissions one after the other. Here the submissions
of one lab are cut into chunks, and every chunk is a Dask task that runs ``nbgrader autograde
LAB --force`` in the course directory over that chunk only (the other students excluded; the
same command and environment as :meth:`Course.autograde_batch`), then writes the marker
:meth:`Course.autograde_batch` writes beside each autograded notebook. So ``python -m
autograder autograde LAB`` and this command agree on what is finished, and running either
again grades only what is not. One nbgrader process per chunk, not per submission: its
start-up (about 2 s) is paid once per chunk (:func:`chunk_size`, ``--chunk``).

Command line::

    python -m autograder.parallel LAB [--root COURSE] [--jobs N | --scheduler tcp://HOST:8786]
                                      [--db-url URL] [--students S ...] [--restart] [--allow-sqlite]
                                      [--chunk N]

``--root`` defaults to the course found from the working directory, as for ``python -m
autograder``. It prints one line per submission graded (student, score, seconds, worker) as its
chunk ends, and a summary, and exits 0 when every submission is graded (now or before), 1 when
one was refused or failed or when the input is wrong (one line saying what: an unknown lab, a
student folder without the notebook, the notebook of another lab, an unreachable scheduler or
database). Refusing changes no grade.

- ``--jobs N`` (default 1) starts an embedded ``distributed.LocalCluster`` of N one-thread
  worker processes on this machine; ``--scheduler ADDRESS`` uses an existing cluster.
- The gradebook is ``--db-url``, else ``AUTOGRADER_GRADEBOOK_URL`` when ``--root`` is the
  course found from the working directory, else the course's SQLite file. SQLite cannot take
  concurrent writers: with more than one worker, or any external scheduler, a SQLite
  gradebook is refused unless ``--allow-sqlite`` is given. Grade in parallel into PostgreSQL.
- A task is safe to run twice (Dask runs a task again when its worker dies): it holds a lock
  on each submission of its chunk (``_grading/.autograder-locks/LAB/STUDENT.lock``), skips a
  submission whose marker says it is graded, and regrades the others from scratch
  (``--force``; nbgrader keeps one record per submission). The nbgrader process gets ``PR_SET_PDEATHSIG``
  (SIGKILL): a killed worker leaves no orphan writing grades, and the scheduler gives the
  task to another worker. ``retries`` covers a task that raised.

Grading on a cluster
--------------------
Every grading machine needs the course directory at the same path (an NFS mount, say
``/srv/course``), this checkout's virtualenv at the same path, and the gradebook in
PostgreSQL, reachable from all of them::

    # once, on the database host
    createdb -h db.example.org -U grader dgm
    # once, from the course root: create the gradebook tables and the assignment
    cd /srv/course && AUTOGRADER_GRADEBOOK_URL=postgresql://grader@db.example.org/dgm \
        .venv/bin/nbgrader generate_assignment lab01 --force

    # one machine: the scheduler (port 8786; the dashboard, if bokeh is installed, on 8787)
    .venv/bin/dask scheduler --port 8786
    # every grading machine: N one-thread worker processes (N = the cores given to grading)
    .venv/bin/dask worker tcp://SCHEDULER_HOST:8786 --nthreads 1 --nworkers N
    # anywhere with the course mounted: grade
    .venv/bin/python -m autograder.parallel lab01 --root /srv/course \
        --scheduler tcp://SCHEDULER_HOST:8786 --db-url postgresql://grader@db.example.org/dgm

Each worker grades one chunk at a time, one submission after the other, and each grading runs its kernel in a process
of its own (in the sandbox of ``nbgrader_config.py``), so a worker needs one core and the
memory of one kernel (the sandbox caps it at 4 GiB). Start the workers with the
virtualenv's ``dask`` (or ``PYTHONPATH`` pointing at this checkout): they run nbgrader with
their own interpreter, and nbgrader loads the course's ``nbgrader_config.py``.

On Slurm, dask-jobqueue submits the workers as batch jobs (``pip install dask-jobqueue``);
the scheduler runs in the Python process that makes the cluster::

    from dask_jobqueue import SLURMCluster
    from autograder.parallel import grade_parallel

    cluster = SLURMCluster(queue="compute", account="dgm", cores=8, processes=8, memory="32GiB",
                           walltime="02:00:00", python="/srv/course/.venv/bin/python")
    cluster.scale(jobs=4)                      # 4 jobs x 8 one-thread workers
    grade_parallel("/srv/course", "lab01", scheduler=cluster.scheduler_address,
                   db_url="postgresql://grader@db.example.org/dgm")

(``processes=8`` with ``cores=8`` makes each job run ``dask worker --nworkers 8 --nthreads 1``.)
Without dask-jobqueue, submit the worker command yourself:
``sbatch -c 8 --mem=32G -t 02:00:00 --wrap "/srv/course/.venv/bin/dask worker
tcp://SCHEDULER_HOST:8786 --nthreads 1 --nworkers 8"``.

On Kubernetes, dask-kubernetes' operator starts them (``helm install --repo
https://helm.dask.org --create-namespace -n dask-operator --generate-name
dask-kubernetes-operator`` once, then ``pip install dask-kubernetes``), from an image holding
this checkout and its virtualenv, with the course volume mounted::

    from dask_kubernetes.operator import KubeCluster, make_cluster_spec

    spec = make_cluster_spec(name="grading", image="registry.example.org/dgm-grader:latest",
                             n_workers=16, resources={"requests": {"cpu": "1", "memory": "4Gi"},
                                                      "limits": {"cpu": "1", "memory": "6Gi"}},
                             worker_command=["dask", "worker", "--nthreads", "1"])
    pod = spec["spec"]["worker"]["spec"]
    pod["volumes"] = [{"name": "course", "persistentVolumeClaim": {"claimName": "course"}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "course", "mountPath": "/srv/course"}]
    cluster = KubeCluster(custom_cluster_spec=spec)
    grade_parallel("/srv/course", "lab01", scheduler=cluster.scheduler_address,
                   db_url="postgresql://grader@db.example.org/dgm")

(The kernel sandbox needs mount namespaces: give the worker pods the privileges
``python -m autograder.sandbox probe`` asks for, or run them with ``AUTOGRADER_SANDBOX=off``
knowing what it costs; see the README.)
"""
from __future__ import annotations

import argparse
import fcntl
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from autograder import config, grading
from autograder.common import one_line as _one_line

__all__ = ["GRADED", "ALREADY_GRADED", "grade_parallel", "main"]

GRADED = "graded"
ALREADY_GRADED = "already graded"
LOCK_DIR = ".autograder-locks"  # under the course's _grading/: one lock file per submission being graded
CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler or the database
WORKER_WAIT = 60.0  # seconds to wait for a scheduler's first worker
RETRIES = 2  # reruns of a task that raised (a worker that dies is handled by the scheduler)
MAX_CHUNK = 10  # most submissions per task (one nbgrader process each): see chunk_size
#: the task imports the grading module itself, in its worker thread: shipped as a reference, it
#: would be imported (nbformat and all, seconds on a busy machine) on the worker's event loop
#: while the task is unpacked, and the worker would miss its heartbeats
GRADING_MODULE = grading.__name__

#: run by the task in place of the nbgrader command: asks the kernel to SIGKILL this process
#: when the worker thread that started it dies, then becomes nbgrader (the setting survives exec)
_DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0) != 0: sys.exit('prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(137)  # the worker died before prctl\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


# ----------------------------------------------------------------------------
# The task (runs on a worker)
# ----------------------------------------------------------------------------


def _grade_task(root: str, lab: str, students: list[str], db_url: str) -> list[dict]:
    """Autograde a chunk of submissions on a worker, in one nbgrader process; one dict per student
    saying what happened (never raises for a bad notebook)."""
    import contextlib
    import importlib

    start, since = time.monotonic(), time.time()
    from autograder.run_nbgrader import skip_iri_grammar

    skip_iri_grammar()  # before this worker's first import of nbformat (1.6 s less on its first task)
    grading = importlib.import_module(GRADING_MODULE)  # noqa: F811 (see GRADING_MODULE)
    course = grading.Course(root, db_url=db_url)
    # the nbgrader process asks to be SIGKILLed when this worker dies (see _DIE_WITH_PARENT)
    course.command_prefix = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
    worker = f"{socket.gethostname()}:{os.getpid()}"
    results = {s: {"student": s, "status": GRADED, "reason": None, "rerun": False, "worker": worker, "seconds": 0.0}
               for s in students}
    lock_dir = course.root / grading.GRADING_DIR / LOCK_DIR / lab
    lock_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # a second attempt waits for the first (a worker cut off from the scheduler but alive); the
        # chunks of one run are disjoint and locked in sorted order, so two runs cannot deadlock
        for student in sorted(students):
            lock = stack.enter_context(open(lock_dir / f"{student}.lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        todo = []
        for student in students:
            if course.is_graded(lab, student):  # an earlier attempt of this task finished it
                results[student]["rerun"] = True
            else:
                todo.append(student)
        # the batch removes notebooks left from an earlier attempt, runs `nbgrader autograde LAB --force`
        # over this chunk only, and goes on past a submission nbgrader cannot process
        errors = course.autograde_batch(lab, todo) if todo else {}
        for student, reason in errors.items():
            results[student].update(status="failed", reason=_one_line(reason))
        # seconds per submission: the gaps between the autograded notebooks' write times; the
        # first carries the nbgrader process's start-up; a failed one, what was left of the chunk
        seconds = course.batch_seconds(lab, [s for s in todo if s not in errors], since)
        for student, gap in seconds.items():
            results[student]["seconds"] = max(0.0, gap)
        left = max(0.0, time.time() - since - sum(seconds.values()))
        for student in errors:
            results[student]["seconds"] = left / len(errors)
    if not todo:
        for result in results.values():
            result["seconds"] = (time.monotonic() - start) / max(1, len(students))
    return [results[s] for s in students]


def chunk_size(n: int, workers: int, most: int | None = None) -> int:
    """Submissions per task: the batch shared evenly between the workers, at most ``most``.

    Every task runs one nbgrader process (about 2 s to start on a 2-core machine, before its first
    submission), so tasks of one submission each cost that much per submission; one task per worker
    loses no time to it, but a killed worker then sends a whole share back to be graded again, and
    the last tasks decide when the batch ends. :data:`MAX_CHUNK` bounds both.
    """
    most = MAX_CHUNK if most is None else most
    return max(1, min(most, -(-n // max(1, workers))))


# ----------------------------------------------------------------------------
# Checks made before anything is graded
# ----------------------------------------------------------------------------


def _check_gradebook(url: str, lab: str, root: Path, timeout: float) -> None:
    """Raise :class:`GradingError` (one line) unless the gradebook answers and holds ``lab``."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = _hide_password(url)
    try:
        parsed = make_url(url)
    except Exception as err:
        raise grading.GradingError(f"invalid gradebook URL {shown}: {_one_line(err)}") from None
    generate = f"run `nbgrader generate_assignment {lab}` in {root} with this gradebook first"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).is_file():
            raise grading.GradingError(f"the gradebook {shown} does not exist: {generate}")
        connect_args = {}
    else:
        connect_args = {"connect_timeout": max(1, int(timeout))}
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    except Exception as err:
        raise grading.GradingError(f"cannot use the gradebook {shown}: {_one_line(err)}") from None
    try:
        with engine.connect() as conn:
            if not sqlalchemy.inspect(conn).has_table("assignment"):
                raise grading.GradingError(f"the gradebook {shown} has no nbgrader tables: {generate}")
            found = conn.execute(sqlalchemy.text("select count(*) from assignment where name = :lab"), {"lab": lab})
            if not found.scalar():
                raise grading.GradingError(f"the gradebook {shown} has no assignment {lab}: {generate}")
    except grading.GradingError:
        raise
    except Exception as err:
        cause = getattr(err, "orig", None) or err
        message = _one_line(cause)
        if parsed.password:
            message = message.replace(str(parsed.password), "***")
        raise grading.GradingError(f"cannot reach the gradebook {shown}: {message}") from None
    finally:
        engine.dispose()


@dataclass
class _Plan:
    course: object
    db_url: str
    todo: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def _home_course() -> Path | None:
    """The course found from the working directory (or ``AUTOGRADER_COURSE_ROOT``), if any."""
    try:
        return config.course_root(None).resolve()
    except config.CourseNotFound:
        return None


def _plan(root, lab: str, students: Sequence[str] | None, db_url: str | None, restart: bool,
          parallel_writers: bool, allow_sqlite: bool, timeout: float) -> _Plan:
    """Every check that needs no cluster; nothing is written."""
    root = Path(root).resolve()
    if not (root / config.CONFIG_FILE).is_file():
        raise grading.GradingError(f"{root} is not a course directory (no {config.CONFIG_FILE})")
    labs = grading.discover_labs(root)
    if not grading.source_path(lab, root).is_file():
        raise grading.GradingError(
            f"lab {lab!r} does not exist in the course {root} (its labs: {', '.join(labs) or 'none'})")
    if db_url is None and root == _home_course():  # as `python -m autograder autograde` does
        db_url = os.environ.get("AUTOGRADER_GRADEBOOK_URL") or None
    course = grading.Course(root, db_url=db_url)
    url = course.db_url
    if parallel_writers and url.startswith("sqlite") and not allow_sqlite:
        raise grading.GradingError(
            f"refusing to grade with several workers into the SQLite gradebook {_hide_password(url)}: "
            "SQLite cannot take concurrent writers; give a PostgreSQL --db-url (or --jobs 1, or --allow-sqlite)")
    release = course.path("release", ".", lab)
    if not release.is_file():
        raise grading.GradingError(
            f"{lab} has not been released in {root} (no {release}): "
            f"run `nbgrader generate_assignment {lab}` there first")
    _check_gradebook(url, lab, root, timeout)

    plan = _Plan(course, url)
    submitted = root / grading.GRADING_DIR / "submitted"
    if students is None:
        folders = sorted(p.name for p in submitted.iterdir() if (p / lab).is_dir()) if submitted.is_dir() else []
    else:
        folders = list(dict.fromkeys(students))
    releases = None
    for student in folders:
        path = course.path("submitted", student, lab)
        if not path.is_file():
            folder = path.parent
            if not folder.is_dir():
                where = folder.parent if folder.parent.is_dir() else None
                plan.refused[student] = (f"no submission: {folder} does not exist" if where is None else
                                         f"no {lab} folder in {where}")
            else:
                found = sorted(p.name for p in folder.iterdir())[:5]
                plan.refused[student] = (f"no notebook {lab}.ipynb in {folder} "
                                         f"({'it holds ' + ', '.join(found) if found else 'it is empty'})")
            continue
        if not restart and course.is_graded(lab, student):
            plan.already.append(student)
            continue
        reason = grading.validate_submission(path)
        if reason is None:
            releases = grading.release_keys(course) if releases is None else releases
            reason = grading.other_lab(path, lab, releases)
        if reason:
            plan.refused[student] = _one_line(reason)
        else:
            plan.todo.append(student)
    return plan


# ----------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------


def _connect(jobs: int | None, scheduler: str | None, timeout: float, needed: bool):
    """``(client, cluster)``: connected to ``scheduler``, or to a LocalCluster of ``jobs`` workers when needed."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout, set_as_default=False)
        except Exception as err:
            raise grading.GradingError(
                f"cannot reach the Dask scheduler {scheduler} within {timeout:g} s: {_one_line(err, 200)}") from None
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT)
        except Exception:
            client.close()
            raise grading.GradingError(
                f"the Dask scheduler {scheduler} has no worker after {WORKER_WAIT:g} s: start "
                f"`dask worker {scheduler} --nthreads 1 --nworkers N` on the grading machines") from None
        return client, None
    if not needed:
        return None, None
    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    return Client(cluster, set_as_default=False), cluster


def _ensure_students(db_url: str, students: Iterable[str]) -> None:
    """Create the gradebook's missing student records here, before the tasks start.

    Each nbgrader run creates its student when the gradebook has none, and two runs creating the
    same student at once (two labs graded at the same time) collide: one of them fails. Created
    here, one at a time, the students are only looked up by the runs. A student created meanwhile
    by another driver is fine (nbgrader logs the collision, which is silenced here).
    """
    import logging

    from nbgrader.api import Gradebook, InvalidEntry, MissingEntry

    nbgrader_log = logging.getLogger("tornado.application")  # nbgrader.api's app_log

    def quiet(record):  # a logging filter that passes nothing
        return False

    with Gradebook(db_url, grading.COURSE_ID) as gb:
        for student in students:
            try:
                gb.find_student(student)
                continue
            except MissingEntry:
                pass
            nbgrader_log.addFilter(quiet)
            try:
                gb.add_student(student)
            except InvalidEntry:  # created meanwhile by another run
                gb.find_student(student)
            finally:
                nbgrader_log.removeFilter(quiet)


def _scores(db_url: str, lab: str, student: str) -> tuple[float, float] | None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url, grading.COURSE_ID) as gb:
        try:
            sub = gb.find_submission(lab, student)
        except MissingEntry:
            return None
        return float(sub.score or 0.0), float(sub.max_score or 0.0)


def grade_parallel(
    course_root: str | os.PathLike,
    lab: str,
    students: Sequence[str] | None = None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    db_url: str | None = None,
    restart: bool = False,
    out: Callable[[str], object] = print,
    allow_sqlite: bool = False,
    timeout: float = CONNECT_TIMEOUT,
    chunk: int | None = None,
) -> dict[str, str]:
    """Autograde the submissions of ``lab`` in ``course_root`` on Dask, a chunk of them per task.

    ``students`` (default: every ``_grading/submitted/<student>/LAB/``) are graded unless their
    marker says they are (``restart`` regrades them). ``jobs`` workers of an embedded
    LocalCluster (default 1) or the workers of the cluster at ``scheduler`` do the work.
    Each task grades ``chunk`` submissions (default :func:`chunk_size`: the batch shared evenly
    between the workers, at most :data:`MAX_CHUNK`) in one nbgrader process.
    Returns ``{student: status}``: :data:`GRADED`, :data:`ALREADY_GRADED`, ``"refused: why"``
    (not a gradable notebook of this lab: nothing was run) or ``"failed: why"`` (nbgrader
    could not grade it). Raises :class:`GradingError`, with a one-line message and before
    anything is written, when the lab, the gradebook or the scheduler is not usable.

    The local workers of ``jobs`` are spawned processes: a script that calls this must do so
    under ``if __name__ == "__main__":``.
    """
    if jobs is not None and scheduler:
        raise grading.GradingError("give jobs (a local cluster) or scheduler (an existing one), not both")
    if chunk is not None and chunk < 1:
        raise grading.GradingError(f"chunk must be at least 1, not {chunk}")
    if jobs is not None and jobs < 1:
        raise grading.GradingError(f"jobs must be at least 1, not {jobs}")
    jobs = 1 if jobs is None and not scheduler else jobs
    parallel_writers = bool(scheduler) or (jobs or 1) > 1
    plan = _plan(course_root, lab, students, db_url, restart, parallel_writers, allow_sqlite, timeout)
    course = plan.course
    start = time.monotonic()
    client, cluster = _connect(jobs, scheduler, timeout, needed=bool(plan.todo))
    statuses: dict[str, str] = {s: ALREADY_GRADED for s in plan.already}
    statuses.update({s: f"refused: {why}" for s, why in plan.refused.items()})
    try:
        workers = len(client.scheduler_info()["workers"]) if client is not None else 0
        out(f"{lab}: {len(plan.todo)} submission(s) to autograde, {len(plan.already)} already graded, "
            f"{len(plan.refused)} refused" + (f"; {workers} worker(s)" if plan.todo else ""))
        width = max([len(s) for s in [*plan.todo, *plan.refused]] + [7])
        for student, why in plan.refused.items():
            out(f"  {student:<{width}}  refused: {why}")
        if plan.todo:
            from distributed import as_completed

            if restart:  # the markers go only now that everything is checked and a cluster is there
                for student in plan.todo:
                    (course.path("autograded", student, lab).parent / grading.GRADED_MARKER).unlink(missing_ok=True)
            _ensure_students(plan.db_url, plan.todo)
            _ship_by_value()
            run = uuid.uuid4().hex[:8]
            size = chunk if chunk else chunk_size(len(plan.todo), workers)
            chunks = [plan.todo[i:i + size] for i in range(0, len(plan.todo), size)]
            futures = {
                client.submit(_grade_task, str(course.root), lab, part, plan.db_url,
                              key=f"autograde-{lab}-{part[0]}-{len(part)}-{run}", pure=False, retries=RETRIES): part
                for part in chunks
            }
            for future, results in as_completed(futures, loop=client.loop, with_results=True, raise_errors=False):
                if isinstance(results, BaseException):  # raised RETRIES + 1 times, or its workers kept dying
                    for student in futures[future]:
                        statuses[student] = f"failed: {_one_line(f'{type(results).__name__}: {results}')}"
                        out(f"  {student:<{width}}  {statuses[student]}")
                    continue
                for result in results:
                    student = result["student"]
                    if result["status"] != GRADED:
                        statuses[student] = f"failed: {result['reason']}"
                        out(f"  {student:<{width}}  {'-':>9}  {result['seconds']:6.1f} s  {statuses[student]}")
                        continue
                    statuses[student] = GRADED
                    score = _scores(plan.db_url, lab, student)
                    shown = f"{score[0]:g}/{score[1]:g}" if score else "?"
                    note = " (finished by an earlier attempt)" if result["rerun"] else ""
                    out(f"  {student:<{width}}  {shown:>9}  {result['seconds']:6.1f} s  "
                        f"graded on {result['worker']}{note}")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    counts = {k: sum(1 for v in statuses.values() if v.startswith(k))
              for k in (GRADED, ALREADY_GRADED, "refused", "failed")}
    out(f"{lab}: {counts[GRADED]} graded, {counts[ALREADY_GRADED]} already graded, {counts['refused']} refused, "
        f"{counts['failed']} failed in {time.monotonic() - start:.1f} s")
    return statuses


def _ship_by_value() -> None:
    """Send this module's task to the workers by value: they need nbgrader and ``grading``, not this file."""
    import cloudpickle

    module = sys.modules[__name__]
    if __name__ != "__main__":
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:  # already registered
            pass


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.parallel", description=__doc__.split("\n\n")[0])
    parser.add_argument("lab")
    parser.add_argument("--root", default=None,
                        help="course directory (default: the course found from the working directory)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=None, help="workers of a local Dask cluster (default 1)")
    where.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://HOST:8786")
    parser.add_argument("--db-url", default=None, help="gradebook URL (PostgreSQL for parallel runs)")
    parser.add_argument("--students", nargs="+", default=None, help="grade only these students")
    parser.add_argument("--restart", action="store_true", help="regrade submissions already graded")
    parser.add_argument("--allow-sqlite", action="store_true", help="allow several workers on a SQLite gradebook")
    parser.add_argument("--chunk", type=int, default=None,
                        help=f"submissions per task, one nbgrader process each (default: the batch shared "
                             f"evenly between the workers, at most {MAX_CHUNK})")
    parser.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT,
                        help="seconds to reach the scheduler or the database (default 5)")
    args = parser.parse_args(argv)
    try:
        root = args.root if args.root else config.course_root(None)
        statuses = grade_parallel(root, args.lab, args.students, jobs=args.jobs, scheduler=args.scheduler,
                                  db_url=args.db_url, restart=args.restart, allow_sqlite=args.allow_sqlite,
                                  timeout=args.timeout, chunk=args.chunk, out=lambda line: print(line, flush=True))
    except (grading.GradingError, config.CourseNotFound) as err:
        print(f"error: {_one_line(err, 1000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the submissions graded so far are marked; run the command again to finish",
              file=sys.stderr)
        return 130
    return 0 if all(s in (GRADED, ALREADY_GRADED) for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
