"""Autograding a class in parallel with Dask distributed (``autograder.parallel``).

- A real ``dask scheduler`` and two ``dask worker`` processes (one thread each, 127.0.0.1 only)
  grade 6 submissions of the first two labs (per lab: the example solution of ``tests/submissions``,
  the blank release; the first lab's solution with one plausible mistake, the second's release with
  only exercise 1 solved) into a throwaway PostgreSQL
  gradebook, both labs at once. Once a submission is finished and another is being graded, the
  worker grading it is killed with SIGKILL. Every submission must end graded, once, with
  exactly its expected per-cell scores (below), no grade left without a score, the
  killed worker's nbgrader process (and its kernel) gone with it, and the grades recorded
  before the kill unchanged; running the command again grades nothing and touches no file, and
  the single-process ``autograde`` finds nothing left to grade.
- Bad input (a lab the course does not have, a student folder without the notebook, another
  lab's notebook, SQLite with several workers, an unreachable scheduler or database) gives one
  line saying what, exit status 1, and changes no grade.

Expected scores: the solution's full marks, the blank release's zeros and the one-exercise
submission's (exercise 1's points, zero elsewhere: the exercises are isolated, as
tests/test_grading.py checks for every exercise) come from the lab's points; the mistake's scores
from grading it alone, once, in a SQLite scratch course (the ``alone`` fixture, which the
bad-input tests reuse).

The PostgreSQL server binaries (Debian's ``postgresql``) and the ``dask`` executable are
needed: without them the tests that use them are skipped, saying so, or fail when ``CI`` is
set. About 6 autogrades of 5-15 s of CPU each, plus 1 alone: two minutes on two cores.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import psutil
import pytest

from autograder import config, grading, integrity, parallel
from browser import free_port  # tests/browser.py: a free port on 127.0.0.1
from pgcluster import skip_or_fail as _missing  # tests/pgcluster.py: skip, or fail when CI is set
from pgcluster import throwaway_postgres

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LABS = grading.discover_labs(REPO)[:2]
EXAMPLES = config.course_settings(REPO)["submissions_dir"]  # c.Autograder.submissions_dir: LAB/STUDENT/LAB.ipynb
ENV = {k: v for k, v in os.environ.items() if k not in ("AUTOGRADER_GRADEBOOK_URL", "AUTOGRADER_COURSE_ROOT")}
ENV["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def _points(lab: str) -> dict[str, float]:
    nb = nbformat.read(str(grading.source_path(lab, REPO)), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def _batch(lab: str) -> dict[str, tuple[nbformat.NotebookNode, dict | None]]:
    """``{student: (notebook, expected cells)}``; ``None`` for the mistakes, graded alone to know."""
    solution = integrity.solution_notebook(lab, REPO)
    blank = nbformat.read(str(grading.release_path(lab, REPO)), as_version=4)

    def example(name, default):  # the lab's example submission, when it has one
        path = EXAMPLES / lab / name / f"{lab}.ipynb" if EXAMPLES else None
        return nbformat.read(str(path), as_version=4) if path and path.is_file() else default

    full = {g: (p, p) for g, p in _points(lab).items()}
    zero = {g: (0.0, p) for g, p in _points(lab).items()}
    batch = {"sol": (example("perfect", solution), full), "blank": (blank, zero)}
    if lab == LABS[0]:
        mutants = integrity.load_mutants(lab, integrity.mutants_dir_of(REPO))
        for i, mutant in enumerate(integrity.select_mutants(mutants, per_exercise=1)[:1], 1):
            batch[f"mut-{i}"] = (integrity.mutant_notebook(mutant, REPO), None)
    else:  # scores known without grading it alone: exercise 1 as solved, the others as released (exercise isolation)
        source = nbformat.read(str(grading.source_path(lab, REPO)), as_version=4)
        source.cells = [c for c in source.cells if not c.metadata.get("nbgrader", {}).get("solution")
                        or grading.exercise_of(c.metadata["nbgrader"]["grade_id"]) == "ex1"]
        first = {g: (p if grading.exercise_of(g) == "ex1" else 0.0, p) for g, p in _points(lab).items()}
        batch["part-1"] = (grading.fill_solutions(blank, source), first)
    return batch


def _marker(course, lab: str, student: str) -> Path:
    return course.path("autograded", student, lab).parent / grading.GRADED_MARKER


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder.parallel", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The batch, and the per-cell scores of each mistake graded alone (sequentially, SQLite)."""
    course = grading.Course.create(tmp_path_factory.mktemp("alone") / "course", LABS, REPO)
    notebooks, expected = {}, {}
    for lab in LABS:
        course.generate(lab)
        batch = _batch(lab)
        notebooks[lab] = {s: nb for s, (nb, _) in batch.items()}
        expected[lab] = {s: cells for s, (_, cells) in batch.items()}
        mistakes = [s for s, cells in expected[lab].items() if cells is None]
        if not mistakes:
            continue
        for s in mistakes:
            course.submit_notebook(lab, s, notebooks[lab][s])
        assert course.autograde_batch(lab, mistakes) == {}
        scores = grading.read_scores(course.db_url)
        for s in mistakes:
            expected[lab][s] = scores[(lab, s)].cells
            full = sum(p for p in _points(lab).values())
            assert scores[(lab, s)].score < full, f"{lab} {s}: the mistake lost no points"
    return SimpleNamespace(course=course, notebooks=notebooks, expected=expected)


@pytest.fixture(scope="module")
def postgres_url():
    with throwaway_postgres(port=54331) as url:
        yield url


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A ``dask scheduler`` and two ``dask worker`` processes (one thread each) on 127.0.0.1."""
    exe = Path(sys.executable).parent / "dask"
    if not exe.is_file():
        _missing(f"no dask executable in {exe.parent} (pip install distributed)")
    base = tmp_path_factory.mktemp("dask")
    procs = []

    def start(name, *args):
        log = open(base / f"{name}.log", "w")
        procs.append(subprocess.Popen([str(exe), *args], cwd=base, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        log.close()

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(base / "scheduler.json"))
        deadline = time.monotonic() + 120
        while not (base / "scheduler.json").is_file():
            assert procs[0].poll() is None and time.monotonic() < deadline, (base / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written at once; read it whole
        address = json.loads((base / "scheduler.json").read_text())["address"]
        for i in (1, 2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                  "--name", f"w{i}", "--local-directory", str(base / f"w{i}"))
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=180)
        yield SimpleNamespace(address=address, base=base, workers=[p.pid for p in procs[1:]])
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ----------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------


def _nbgrader_runs(root: Path, students: dict[str, list[str]]) -> list[tuple[psutil.Process, str, set[str]]]:
    """``(process, lab, chunk)`` of every ``nbgrader autograde LAB`` running on ``root``: the chunk is
    the students of ``students[LAB]`` that its ``student_id_exclude`` leaves in."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        runs_nbgrader = "nbgrader" in cmd or grading.RUN_NBGRADER in cmd  # python -m autograder.run_nbgrader
        if runs_nbgrader and "autograde" in cmd and f"--CourseDirectory.root={root}" in cmd:
            lab = cmd[cmd.index("autograde") + 1]
            excluded = next((a.split("=", 1)[1].split(",") for a in cmd
                             if a.startswith("--CourseDirectory.student_id_exclude=")), [])
            chunk = set(students.get(lab, [])) - set(excluded)
            if chunk:
                found.append((proc, lab, chunk))
    return found


def _kill_a_worker_mid_batch(course, students, postgres_url, threads, workers, timeout=900):
    """Once a submission is finished and another is being graded, SIGKILL the worker grading it.

    ``workers``: the pids of the ``dask worker`` processes (the nannies, whose child runs the tasks).
    """
    deadline = time.monotonic() + timeout
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.5)
        done = {(lab, s) for lab in LABS for s in students[lab] if _marker(course, lab, s).is_file()}
        running = [(proc, lab, sorted(s for s in chunk if (lab, s) not in done))
                   for proc, lab, chunk in _nbgrader_runs(course.root, students)]
        running = [r for r in running if r[2]]
        if not (done and running):
            continue
        nbgrader, lab, chunk = running[0]
        student = chunk[0]
        try:
            worker = nbgrader.parent()
            if worker is None or not ({worker.pid, worker.ppid()} & set(workers)):
                continue
            tree = [nbgrader, *nbgrader.children(recursive=True)]
            recorded = {k: v.cells for k, v in grading.read_scores(postgres_url).items() if k in done}
            if not nbgrader.is_running():
                continue  # it finished meanwhile: look again
            worker.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue
        return SimpleNamespace(worker=worker.pid, lab=lab, student=student, tree=tree, recorded=recorded)
    return None


def _alive(procs):
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def test_parallel_batch_survives_a_killed_worker(alone, postgres_url, dask_cluster, tmp_path):
    course = grading.Course.create(tmp_path / "course", LABS, REPO, db_url=postgres_url)
    for lab in LABS:
        course.generate(lab)
        for student, nb in alone.notebooks[lab].items():
            course.submit_notebook(lab, student, nb)
    students = {lab: sorted(alone.notebooks[lab]) for lab in LABS}
    assert sum(len(s) for s in students.values()) >= 6

    statuses, lines, errors = {}, {lab: [] for lab in LABS}, {}

    def grade(lab):
        try:
            statuses[lab] = parallel.grade_parallel(course.root, lab, scheduler=dask_cluster.address,
                                                    db_url=postgres_url, out=lines[lab].append)
        except BaseException as err:  # noqa: BLE001 (reported by the main thread)
            errors[lab] = err

    start = time.monotonic()
    threads = [threading.Thread(target=grade, args=(lab,), daemon=True) for lab in LABS]
    for t in threads:
        t.start()
    killed = _kill_a_worker_mid_batch(course, students, postgres_url, threads, dask_cluster.workers)
    left = []
    if killed:  # the nbgrader process and its kernel die with the worker: no orphan writes grades
        deadline = time.monotonic() + 20
        while _alive(killed.tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[:120]) for p in _alive(killed.tree)]
    for t in threads:
        t.join(timeout=1800)
    elapsed = time.monotonic() - start
    print(f"\nparallel batch: {elapsed:.0f} s; killed worker {killed and killed.worker} while it graded "
          f"{killed and (killed.lab, killed.student)}")
    for lab in LABS:
        print("\n".join(lines[lab]))
    assert not errors, errors
    assert killed, "no worker was killed mid-batch (nothing finished while another ran)"
    assert not left, f"processes of the killed worker's nbgrader run survived it: {left}"
    for lab in LABS:
        assert statuses[lab] == {s: parallel.GRADED for s in students[lab]}, lines[lab]
        assert f"{lab}: {len(students[lab])} graded, 0 already graded, 0 refused, 0 failed" in lines[lab][-1]

    scores = grading.read_scores(postgres_url)
    for lab in LABS:
        for student in students[lab]:  # exactly the scores of the submission graded alone
            assert scores[(lab, student)].cells == alone.expected[lab][student], (lab, student)
    assert killed.recorded, "nothing was recorded before the kill"
    for key, cells in killed.recorded.items():  # nothing recorded before the kill was lost or changed
        assert scores[key].cells == cells, key

    import psycopg

    with psycopg.connect(postgres_url) as conn:
        twice = conn.execute(
            "select a.name, s.student_id, count(*) from submitted_assignment s join assignment a "
            "on a.id = s.assignment_id group by a.name, s.student_id having count(*) <> 1").fetchall()
        records = conn.execute("select count(*) from submitted_assignment").fetchone()[0]
        notebooks = conn.execute("select count(*) from submitted_notebook").fetchone()[0]
        grades, scored = conn.execute("select count(*), count(auto_score) from grade").fetchone()
    n = sum(len(s) for s in students.values())
    assert twice == [] and records == n and notebooks == n
    assert grades == scored == sum(len(students[lab]) * len(_points(lab)) for lab in LABS)

    # running the command again grades nothing and changes nothing
    stamps = {(lab, s): course.path("autograded", s, lab).stat().st_mtime_ns for lab in LABS for s in students[lab]}
    for lab in LABS:
        again = _cli(lab, "--root", str(course.root), "--scheduler", dask_cluster.address, "--db-url", postgres_url)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{lab}: 0 submission(s) to autograde, {len(students[lab])} already graded, 0 refused" in again.stdout
    after = grading.read_scores(postgres_url)
    assert {k: v.cells for k, v in after.items()} == {k: v.cells for k, v in scores.items()}
    for lab in LABS:  # and the single-process autograde agrees on what is finished
        said = []
        results = grading.autograde_course(grading.Course(course.root, db_url=postgres_url), lab, out=said.append)
        assert said == [f"{lab}: 0 submission(s) to autograde, {len(students[lab])} already graded, 0 refused"]
        assert {r.student: r.cells for r in results} == {s: scores[(lab, s)].cells for s in students[lab]}
    assert {(lab, s): course.path("autograded", s, lab).stat().st_mtime_ns
            for lab in LABS for s in students[lab]} == stamps


# ----------------------------------------------------------------------------
# Bad input: one line, exit status 1, no grade changed
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def _nothing_changes(course):
    def state():
        files = sorted((course.root / grading.GRADING_DIR / "autograded").rglob("*"))
        return ({k: v.cells for k, v in grading.read_scores(course.db_url).items()},
                {p: p.stat().st_mtime_ns for p in files if p.is_file()})

    before = state()
    assert before[0], "the course has no grades to protect"
    yield
    assert state() == before


def _one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_lab_the_course_does_not_have(alone):
    root = str(alone.course.root)
    with _nothing_changes(alone.course):
        line = _one_error_line(_cli("lab99", "--root", root))
        with pytest.raises(grading.GradingError, match="lab99"):
            parallel.grade_parallel(root, "lab99", out=lambda line: None)
    assert "'lab99' does not exist" in line and ", ".join(LABS) in line, line


def test_a_student_folder_without_the_notebook(alone):
    lab = LABS[0]
    folder = alone.course.root / grading.GRADING_DIR / "submitted" / "nobody" / lab
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("my answers are in the other file\n")
    try:
        with _nothing_changes(alone.course):
            listed = _cli(lab, "--root", str(alone.course.root), "--students", "nobody")
            everyone = _cli(lab, "--root", str(alone.course.root))
    finally:
        shutil.rmtree(folder.parent)
    for proc in (listed, everyone):
        assert proc.returncode == 1, proc.stdout + proc.stderr
        about = [line for line in proc.stdout.splitlines() if "nobody" in line]
        assert len(about) == 1 and f"no notebook {lab}.ipynb" in about[0] and "notes.txt" in about[0], proc.stdout
    graded = len([s for s in alone.notebooks[lab] if s.startswith("mut-")])  # the mistakes the fixture graded alone
    assert f"{lab}: 0 submission(s) to autograde, {graded} already graded, 1 refused" in everyone.stdout, everyone.stdout


def test_a_notebook_of_another_lab(alone):
    lab, other = LABS
    path = alone.course.path("submitted", "mut-1", lab)
    original = path.read_bytes()  # graded: its grades must stay
    nbformat.write(alone.notebooks[other]["sol"], str(path))
    try:
        with _nothing_changes(alone.course):
            proc = _cli(lab, "--root", str(alone.course.root), "--students", "mut-1")
            # the single-process command refuses it too (the others are graded already: skipped)
            sequential = subprocess.run(
                [sys.executable, "-m", "autograder", "autograde", lab, "--root", str(alone.course.root)],
                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        path.write_bytes(original)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    about = [line for line in proc.stdout.splitlines() if "mut-1" in line]
    assert len(about) == 1 and f"the notebook is {other}, not {lab}" in about[0], proc.stdout
    assert sequential.returncode == 1, sequential.stdout + sequential.stderr
    assert f"the notebook is {other}, not {lab}" in sequential.stdout, sequential.stdout


def test_sqlite_gradebook_refused_with_several_workers(alone):
    root = str(alone.course.root)
    with _nothing_changes(alone.course):
        lines = [_one_error_line(_cli(LABS[0], "--root", root, *how))
                 for how in (["--jobs", "2"], ["--scheduler", f"tcp://127.0.0.1:{free_port()}"])]
    for line in lines:
        assert "SQLite cannot take concurrent writers" in line and "gradebook.db" in line, line


def test_an_unreachable_scheduler(alone):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with _nothing_changes(alone.course):
        line = _one_error_line(_cli(LABS[0], "--root", str(alone.course.root), "--scheduler", address,
                                    "--allow-sqlite", "--restart", "--timeout", "3"))
    assert f"cannot reach the Dask scheduler {address}" in line, line
    assert time.monotonic() - start < 60


def test_an_unreachable_database(alone):
    port = free_port()
    with _nothing_changes(alone.course):
        line = _one_error_line(_cli(LABS[0], "--root", str(alone.course.root), "--restart",
                                    "--db-url", f"postgresql://grader:s3cret@127.0.0.1:{port}/dgm"))
    assert f"cannot reach the gradebook postgresql://grader:***@127.0.0.1:{port}/dgm" in line, line
    assert "s3cret" not in line
