"""The autograder's integrity, measured with real nbgrader runs (autograder.integrity).

- every lab: its solution (full marks, and no cell that raised, demonstrations included: the graded
  kernel's library is the student edition), its blank release (0), and a sample of its plausible
  mistakes (tests/mutants/<lab>.py: the first mistake of the
  last exercise, which builds on the earlier ones; the hostile batch below adds the first mistake
  of Lab 1's first exercise) is autograded, each in a submission that is otherwise the solution:
  it must lose points in its exercise and leave every other exercise's score as the solution's (``python -m autograder.integrity mutants`` autogrades
  all of them; the in-process test of tests/test_grading.py runs all of them on every test run but
  the later training mistakes of Labs 7 and 8 (IN_PROCESS in their files),
  and its blank-exercise test proves isolation for every exercise);
- the first lab: hostile submissions are autograded in one batch with honest ones: the honest
  scores are exactly those of a batch without them, no hostile one scores more than the honest
  work it carries, crashes keep the work completed before them, broken files are refused with a
  reason, nothing is written outside the submission's directory;
- released feedback never shows the source of a hidden test;
- an autograde killed mid-batch keeps the grades recorded, and running it again is idempotent.

One ``python -m autograder.integrity figures`` run (session fixture) serves the first two groups.
"""
from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder import grading, integrity

REPO = Path(__file__).resolve().parents[1]
LABS = grading.discover_labs(REPO)
FIRST = LABS[0]
ENV = {k: v for k, v in os.environ.items() if k != "AUTOGRADER_GRADEBOOK_URL"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    out = root / "figures.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.integrity", "--course", str(REPO), "figures", "--per-lab", "1", "--jobs", "2",
         "--root", str(root), "--json", str(out)],
        cwd=root, env=ENV, capture_output=True, text=True,
    )
    print(proc.stdout[-6000:])
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    data["root"] = root
    data["stdout"] = proc.stdout
    data["elapsed"] = time.perf_counter() - start
    return data


@pytest.mark.parametrize("lab", LABS)
def test_autograded_mutants_lose_points_in_their_exercise_only(figures, lab):
    m = figures["mutants"][lab]
    # the sample: the last exercise (the hostile batch grades Lab 1's first-exercise mutant)
    assert m["total"] == 1 and m["exercises"] == [max(_exercises(lab), key=lambda e: int(e[2:]))], m
    assert m["caught"] == m["total"] and not m["failures"], m["failures"]


def _exercises(lab):
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    return {grading.exercise_of(c.metadata["nbgrader"]["grade_id"]) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")}


def _cases(figures):
    return {c["case"]: c for c in figures["hostile"][FIRST]["cases"]}


def test_hostile_batch_keeps_honest_scores_exact(figures):
    h = figures["hostile"][FIRST]
    assert h["honest_exact"], h["failures"]


def test_no_hostile_submission_gains_points(figures):
    protections = figures["protections"]
    needs = {c.name: c.needs for c in integrity.hostile_cases(FIRST, {"x": "y"})}
    gained = []
    for name, case in _cases(figures).items():
        if case["gained"] or case["lost_honest_work"]:
            need = needs.get(name)
            if need and not protections.get(need) and os.environ.get("AUTOGRADER_SANDBOX") != "required":
                print(f"{name}: not protected on this machine ({need} unavailable): {case['note']}")
                continue
            gained.append((name, case["score"], case["bound"], case["note"]))
    assert not gained, gained
    assert len(_cases(figures)) >= 40  # issue 16: at least 40 kinds, every class of attack


def test_no_file_outside_the_submissions_changed(figures):
    failures = figures["hostile"][FIRST]["failures"]
    # the canary beside the gradebook and the gradebook's mode: kept by the kernel's private copy of its directory
    assert not [f for f in failures if "changed)" in f], failures
    protections = figures["protections"]
    if protections.get("drop_privileges") and protections.get("mount_namespace"):  # the ATTACK files: by the sandbox
        assert not [f for f in failures if "a hostile submission wrote" in f], failures


def test_crashes_and_limits_keep_the_work_completed_before_them(figures):
    cases = _cases(figures)
    full = cases["infinite-loop"]["bound"]
    assert cases["infinite-loop"]["score"] == full  # the loop times out, the rest runs
    assert cases["flood-output"]["score"] == full
    nb = nbformat.read(str(grading.source_path(FIRST)), as_version=4)
    points = {}
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade"):
            ex = grading.exercise_of(meta["grade_id"])
            points[ex] = points.get(ex, 0) + meta["points"]
    first_two = sum(points[e] for e in sorted(points, key=lambda e: int(e[2:]))[:2])
    for name in ["os-exit", "segfault", "memory-bomb"]:
        assert first_two <= cases[name]["score"] <= full, (name, cases[name])
    assert 0 < cases["sleep-forever"]["score"] <= full


def test_broken_files_are_refused_with_a_reason(figures):
    cases = _cases(figures)
    for name, words in [("broken-json", "invalid JSON"), ("wrong-nbformat", "nbformat 99"), ("empty-file", "empty file")]:
        assert cases[name]["error"] and words in cases[name]["error"] and cases[name]["score"] == 0


def test_huge_output_is_capped(figures):
    path = Path(figures["root"]) / "hostile" / FIRST / "batch" / "_grading" / "autograded" / "flood-output" / FIRST / f"{FIRST}.ipynb"
    assert path.is_file() and path.stat().st_size < 20 * 2 ** 20, path.stat().st_size


def test_feedback_never_shows_hidden_tests(figures):
    course = grading.Course(Path(figures["root"]) / "hostile" / FIRST / "batch")
    for student in ["honest-blank", "honest-mutated", "leak-hidden"]:  # the last prints the hidden tests' source
        course.nbgrader("generate_feedback", FIRST, f"--student={student}", "--force")
        page = course.root / "_grading" / "feedback" / student / FIRST / f"{FIRST}.html"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        for line in _hidden_lines(FIRST):
            assert line not in text, f"feedback for {student} shows a hidden test line: {line!r}"
        assert "hidden tests" in text  # the placeholder says where they ran


def _hidden_lines(lab):
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    blocks = [b for c in nb.cells for b in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", c.source, re.S)]
    public = "\n".join(c.source for c in nb.cells)
    for block in blocks:
        public = public.replace(block, "")
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if len(ln.strip()) > 25 and ln.strip() not in public]
    assert len(lines) > 10
    return lines


def test_killed_autograde_keeps_grades_and_rerun_is_idempotent(tmp_path):
    course = grading.Course.create(tmp_path / "course", [FIRST])
    course.generate(FIRST)
    solution = integrity.solution_notebook(FIRST)
    release = nbformat.read(str(grading.release_path(FIRST)), as_version=4)
    students = ["s1", "s2", "s3", "s4"]
    for s in students:
        course.submit_notebook(FIRST, s, solution if s != "s3" else release)
    cmd = [sys.executable, "-m", "autograder", "--course", str(REPO), "autograde", FIRST, "--root", str(course.root)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    recorded = {}
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        started = [s for s in students if course.path("autograded", s, FIRST).is_file()]
        if len(started) >= 2:
            # nbgrader grades the submissions in order and writes a notebook before running it:
            # every one before the latest started has all its grades saved
            done = started[:-1]
            recorded = {k: v for k, v in grading.read_scores(course.db_url).items() if k[1] in done}
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert recorded, "nothing was graded before the kill"
    before = grading.read_scores(course.db_url)
    for key in recorded:
        assert before[key].cells == recorded[key].cells  # nothing recorded was lost
    first = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    after = grading.read_scores(course.db_url)
    for key, result in recorded.items():
        assert after[key].cells == result.cells
    full = after[(FIRST, "s1")].max_score
    assert full > 0 and {s: after[(FIRST, s)].score for s in students} == {"s1": full, "s2": full, "s3": 0.0, "s4": full}
    stamps = {s: course.path("autograded", s, FIRST).stat().st_mtime_ns for s in students}
    again = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "0 submission(s) to autograde, 4 already graded" in again.stdout, again.stdout
    assert {k: v.cells for k, v in grading.read_scores(course.db_url).items()} == {k: v.cells for k, v in after.items()}
    assert {s: course.path("autograded", s, FIRST).stat().st_mtime_ns for s in students} == stamps
    # a new submission is graded on the next run; the others are left alone
    course.submit_notebook(FIRST, "s2", release)
    third = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert "1 submission(s) to autograde, 3 already graded" in third.stdout, third.stdout
    assert grading.read_scores(course.db_url)[(FIRST, "s2")].score == 0.0
