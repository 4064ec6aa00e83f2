"""The nbgrader pipeline (autograder, nbgrader_config.py) and the labs it grades.

Every lab found under ``solutions/labNN/labNN.ipynb`` is checked, so a new lab needs no change
here except its plausible mistakes in ``tests/mutants/<lab>.py`` (and entries in EXPECTED if it
has example submissions in tests/submissions):

- its source notebook follows the lab conventions and has been executed;
- (fast, in-process) every lab lists plausible mistakes for every exercise, and each loses
  points in its exercise;
- (slow) one ``python -m autograder demo`` run on a scratch copy of the course grades, per
  lab, the solution (full marks), the blank release (0), the solution with a PyTorch warning
  on stderr in every cell (full marks) and the example submissions of tests/submissions
  (expected scores), plus malformed submissions that must be reported, not crash the batch;
- the committed release equals what ``nbgrader generate_assignment`` produces now.

nbgrader always runs on a copy of the course under tmp_path: nothing is written into the
repository.
"""
from __future__ import annotations

import ast
import copy
import csv
import html
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import grading, probes
from autograder.preprocessors import (HIDDEN_LINE, HIDDEN_PLACEHOLDER, ExerciseSummary, HideHiddenTests, RestoreCells,
                                      StderrToStdout)

REPO = Path(__file__).resolve().parents[1]
LABS = grading.discover_labs(REPO)
SUBMISSIONS = REPO / "tests" / "submissions"

# Expected total scores of the example submissions tests/submissions/<lab>/<student>/<lab>.ipynb.
EXPECTED = {
    "lab01": {"perfect": 20.0, "blank": 0.0, "partial": 16.0, "warnings": 20.0},
}
# Cells that lose points (grade_id -> score); every other graded cell gets full marks
# (none when the expected total is 0).
EXPECTED_CELLS = {
    ("lab01", "partial"): {  # Exercise 2 without the 1/2; Exercise 3 returns the std, not the standard error
        "ex2_visible": 0.0,
        "ex2_hidden_reference": 0.0,
        "ex2_hidden_properties": 1.0,
        "ex3_hidden_stderr": 0.0,
    },
}

# Plausible mistakes, one file per lab: tests/mutants/<lab>.py defines
# MUTANTS = [(name, solution cell grade_id, [(text in the solution, replacement), ...]), ...].
# Each must lose points in its exercise's test cells (visible or hidden). A file may also define
# IN_PROCESS = {solution grade_id: n}: only the first n mistakes of that cell run here, on every test run
# (a training exercise's mistake trains a model, 4 to 5 s each); the others are autograded by nbgrader
# with every listed mistake by `python -m autograder.integrity mutants` (its figures are in the README).
MUTANTS_DIR = Path(__file__).resolve().parent / "mutants"


def _load_mutants(in_process: bool = False) -> dict:
    found = {}
    for path in sorted(MUTANTS_DIR.glob("lab*.py")):
        namespace = runpy.run_path(str(path))
        mutants = namespace["MUTANTS"]
        if in_process:
            limits, seen, kept = namespace.get("IN_PROCESS", {}), {}, []
            for m in mutants:
                seen[m[1]] = seen.get(m[1], 0) + 1
                if seen[m[1]] <= limits.get(m[1], len(mutants)):
                    kept.append(m)
            mutants = kept
        found[path.stem] = mutants
    return found


MUTANTS = _load_mutants()

# Appended as a new first cell of a correct submission: after every cell (test cells included)
# PyTorch itself emits a UserWarning, printed by ipykernel to stderr.


def _ordinary_tests(lab) -> bool:
    """Does the lab have test cells that are not probe cells (autograder.probes)?"""
    nb = nbformat.read(str(grading.source_path(lab)), as_version=4)
    return any(c.metadata.get("nbgrader", {}).get("grade") and probes.parse(c.source) is None for c in nb.cells)


#: the labs graded with a warning on stderr after every cell: the first (in probe cells) and the first
#: lab with ordinary test cells, while there is one
STDERR_LABS = [LABS[0]] + [lab for lab in LABS[1:] if _ordinary_tests(lab)][:1]

STDERR_HOOK = '''\
# added by tests/test_grading.py: a genuine PyTorch UserWarning on stderr after every cell
import warnings as _warnings

import torch as _torch


def _torch_user_warning(*_args):
    with _warnings.catch_warnings():
        _warnings.simplefilter("always")
        _torch.tensor(_torch.zeros(1))  # UserWarning: To copy construct from a tensor, ...


get_ipython().events.register("post_run_cell", _torch_user_warning)
'''

# Malformed submissions: (student, file contents or a callable of the release notebook, expected words in the report)
MALFORMED = [
    ("bad-json", '{"cells": [', "invalid JSON"),
    ("empty-file", "", "empty file"),
    ("nbformat-99", json.dumps({"nbformat": 99, "nbformat_minor": 0, "cells": [], "metadata": {}}), "nbformat 99"),
]


def _read(path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _cells_by_id(nb) -> dict:
    return {_nbgrader_meta(c)["grade_id"]: c for c in nb.cells if "grade_id" in _nbgrader_meta(c)}


def _grade_cells(nb) -> list:
    return [c for c in nb.cells if _nbgrader_meta(c).get("grade")]


# ----------------------------------------------------------------------------
# Fast checks: discovery, lab structure, the preprocessor, configuration, helpers
# ----------------------------------------------------------------------------


def test_labs_are_discovered():
    assert "lab01" in LABS
    for lab in LABS:
        assert grading.release_path(lab).is_file(), f"{lab} has no committed release: run python -m autograder release {lab}"


def test_discover_labs_picks_up_new_labs(tmp_path):
    for name in ["lab01", "lab07"]:
        (tmp_path / "solutions" / name).mkdir(parents=True)
        (tmp_path / "solutions" / name / f"{name}.ipynb").write_text("{}")
    (tmp_path / "solutions" / "lab08").mkdir()  # no notebook
    (tmp_path / "solutions" / "notes").mkdir()
    (tmp_path / "solutions" / "notes" / "notes.ipynb").write_text("{}")
    assert grading.discover_labs(tmp_path) == ["lab01", "lab07"]
    assert grading.discover_labs(tmp_path / "missing") == []


@pytest.mark.parametrize("lab", LABS)
def test_lab_source_follows_the_conventions(lab):
    nb = _read(grading.source_path(lab))
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), "cell ids need nbformat 4.5"
    assert nb.metadata.kernelspec.name == "python3"
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    cells = _cells_by_id(nb)
    exercises = sorted({grading.exercise_of(g) for g in cells if re.match(r"ex\d+_", g)})
    assert len(exercises) >= 4, f"{lab}: at least four graded exercises, found {exercises}"
    for ex in exercises:
        mine = {g: c for g, c in cells.items() if grading.exercise_of(g) == ex}
        tasks = [c for c in mine.values() if c.cell_type == "markdown"]
        solutions = [c for c in mine.values() if _nbgrader_meta(c).get("solution")]
        tests = [c for c in mine.values() if _nbgrader_meta(c).get("grade")]
        assert tasks and "$" in tasks[0].source and "shape" in tasks[0].source, f"{ex}: task cell with formula and shapes"
        assert solutions and all("### BEGIN SOLUTION" in c.source for c in solutions), f"{ex}: solution cell"
        visible = [c for c in tests if "BEGIN HIDDEN TESTS" not in c.source]
        hidden = [c for c in tests if "### BEGIN HIDDEN TESTS" in c.source and "### END HIDDEN TESTS" in c.source]
        assert visible and hidden, f"{ex}: needs a visible and a hidden test cell"
        for c in tests:
            meta = _nbgrader_meta(c)
            assert c.cell_type == "code" and meta["locked"] and meta["points"] > 0 and not meta["solution"]
            # a failed check says what failed, in words (the feedback shows the message, never the line)
            bare = [ast.get_source_segment(c.source, n) for n in ast.walk(ast.parse(c.source))
                    if isinstance(n, ast.Assert) and n.msg is None]
            assert not bare, f"{lab} {meta['grade_id']}: asserts without a message: {bare}"
    # executed, with the outputs nbval compares, and no stderr or errors
    checked = [c for c in nb.cells if c.cell_type == "code" and "nbval-check-output" in c.metadata.get("tags", [])]
    assert checked and all(c.outputs for c in checked), "executed source with cells tagged nbval-check-output"
    # the harness's markers are cell tags, never text a student sees in a cell
    for book in (nb, nbformat.read(str(grading.release_path(lab)), as_version=4)):
        assert not [c.id for c in book.cells if "NBVAL" in c.source], f"{lab}: an nbval marker in a cell's text"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.execution_count is not None, f"{lab}: source notebook not executed (cell {c.id})"
            for out in c.outputs:
                assert out.output_type != "error", f"cell {c.id} failed"
                assert not (out.output_type == "stream" and out.name == "stderr"), f"cell {c.id} wrote to stderr"
                assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), "no widgets"


def _code_cell(outputs, points=1, grade_id="t1"):
    cell = new_code_cell("assert True")
    cell.metadata["nbgrader"] = {
        "grade": True, "grade_id": grade_id, "locked": True, "points": points,
        "schema_version": 3, "solution": False, "task": False,
    }
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def test_stderr_to_stdout_keeps_warnings_visible_and_points():
    from nbgrader.utils import determine_grade

    warning = {"output_type": "stream", "name": "stderr", "text": "x.py:1: UserWarning: careful\n"}
    printed = {"output_type": "stream", "name": "stdout", "text": "passed\n"}
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}
    nb = new_notebook(cells=[
        _code_cell([printed, warning], grade_id="warned"),
        _code_cell([warning, error], grade_id="failed"),
        new_markdown_cell("text"),
    ])
    before = [determine_grade(c)[0] for c in nb.cells[:2]]
    assert before == [0, 0]  # nbgrader alone: any stderr output zeroes a test cell
    nb, _ = StderrToStdout().preprocess(nb, {})
    assert [determine_grade(c)[0] for c in nb.cells[:2]] == [1.0, 0]  # only the real error fails
    outputs = nb.cells[0].outputs
    assert [o.name for o in outputs] == ["stdout", "stdout"]
    assert outputs[0].text == "passed\n"
    assert outputs[1].text == "[stderr]\nx.py:1: UserWarning: careful\n"
    assert nb.cells[1].outputs[1].output_type == "error"


def _load_config(tmp_path, monkeypatch, url=None):
    from traitlets.config.loader import PyFileConfigLoader

    shutil.copy2(REPO / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    if url is None:
        monkeypatch.delenv("AUTOGRADER_GRADEBOOK_URL", raising=False)
    else:
        monkeypatch.setenv("AUTOGRADER_GRADEBOOK_URL", url)
    return PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config()


def test_a_new_gradebook_is_stamped_with_the_revision_alembic_reports(tmp_path, monkeypatch):
    """run_nbgrader reads nbgrader's schema head in process: the revision `alembic heads` prints (nbgrader's own
    function, which runs it), and the one a gradebook created through nbgrader's Gradebook records."""
    import sqlite3

    import nbgrader.api as api

    from autograder import run_nbgrader

    run_nbgrader.alembic_head_in_process()
    run_nbgrader.alembic_head_in_process()  # idempotent: the original stays reachable
    assert api.get_alembic_version.in_process
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    by_command = api.get_alembic_version.original()
    assert re.fullmatch(r"[0-9a-f]{12}", by_command), by_command
    assert api.get_alembic_version() == by_command
    api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}").close()
    with sqlite3.connect(tmp_path / "gradebook.db") as db:
        assert db.execute("select version_num from alembic_version").fetchall() == [(by_command,)]


def test_config_maps_the_course_onto_the_repository(tmp_path, monkeypatch):
    cfg = _load_config(tmp_path, monkeypatch)
    cd = cfg.CourseDirectory
    assert cd.root == str(tmp_path)  # the directory of the config file
    assert (cd.source_directory, cd.release_directory, cd.course_id) == ("solutions", "notebooks", "dgm")
    for step in ("submitted", "autograded", "feedback"):
        assert cd[f"{step}_directory"] == os.path.join("_grading", step)
    assert cd.db_url == "sqlite:///" + str(tmp_path / "_grading" / "gradebook.db")
    assert cfg.ExecutePreprocessor.timeout >= 60 and cfg.Execute.timeout >= 60
    url = "postgresql://grader@db.example.org/dgm"
    assert _load_config(tmp_path, monkeypatch, url).CourseDirectory.db_url == url


def test_config_keeps_nbgrader_defaults_in_order(tmp_path, monkeypatch):
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute, SaveAutoGrades

    cfg = _load_config(tmp_path, monkeypatch)
    from autograder.preprocessors import GuardedExecute

    configured = list(cfg.Autograde.autograde_preprocessors)
    assert configured.count(StderrToStdout) == 1
    assert GuardedExecute in configured and Execute not in configured and issubclass(GuardedExecute, Execute)
    defaults = Autograde.class_traits()["autograde_preprocessors"].default()
    as_stock = [Execute if p is GuardedExecute else p for p in configured if p is not StderrToStdout]
    assert as_stock == list(defaults)  # GuardedExecute in Execute's place, the rest nbgrader's
    assert configured.index(GuardedExecute) < configured.index(StderrToStdout) < configured.index(SaveAutoGrades)
    # sanitising: RestoreCells first, then nbgrader's own sanitising, unchanged and in order
    sanitize = list(cfg.Autograde.sanitize_preprocessors)
    assert sanitize[0] is RestoreCells
    assert sanitize[1:] == list(Autograde.class_traits()["sanitize_preprocessors"].default())
    assert cfg.RestoreCells.release_directory == str(tmp_path / "notebooks")
    from nbgrader.converters import GenerateFeedback

    feedback = list(cfg.GenerateFeedback.preprocessors)
    assert HideHiddenTests in feedback and ExerciseSummary in feedback
    assert feedback.index(HideHiddenTests) < feedback.index(ExerciseSummary)  # the summary quotes scrubbed verdicts
    assert [p for p in feedback if p not in (HideHiddenTests, ExerciseSummary)] == list(
        GenerateFeedback.class_traits()["preprocessors"].default())


def test_hide_hidden_tests_removes_their_source_and_tracebacks():
    nb = _read(grading.source_path(LABS[0]))
    hidden = [c for c in _grade_cells(nb) if "BEGIN HIDDEN TESTS" in c.source]
    visible = [c for c in _grade_cells(nb) if "BEGIN HIDDEN TESTS" not in c.source]
    assert hidden and visible
    secret = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", hidden[0].source, re.S).group(1)
    public = "\n".join(c.source for c in nb.cells).replace(secret, "")
    quoted = [line for line in secret.splitlines() if line.strip() and line.strip() not in public]
    hidden[0].outputs = [nbformat.from_dict({
        "output_type": "error", "ename": "AssertionError", "evalue": "the entropy of a uniform vector is log K",
        "traceback": ["Traceback (most recent call last):", *quoted, "AssertionError: the entropy of a uniform vector is log K"],
    })]
    visible_source = visible[0].source
    out, _ = HideHiddenTests().preprocess(nb, {})
    text = json.dumps(out)
    for line in quoted:
        if len(line.strip()) > 25:
            assert json.dumps(line.strip())[1:-1] not in text, line
    assert HIDDEN_PLACEHOLDER.strip() in hidden[0].source
    assert hidden[0].outputs[0].traceback[0] == "AssertionError: the entropy of a uniform vector is log K"
    assert visible[0].source == visible_source  # visible tests stay as they are


def test_hide_hidden_tests_scrubs_what_student_code_printed_of_them():
    """A post_run_cell hook that prints each cell's source, or a later cell that prints In: every
    output line quoting a hidden line (whatever its spacing) is replaced, the rest is kept."""
    nb = _read(grading.source_path(LABS[0]))
    hidden = [c for c in _grade_cells(nb) if "BEGIN HIDDEN TESTS" in c.source]
    secret = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", hidden[0].source, re.S).group(1)
    public = "\n".join(c.source for c in nb.cells).replace(secret, "")
    quoted = [ln.strip() for ln in secret.splitlines() if len(ln.strip()) > 25 and ln.strip() not in public]
    assert len(quoted) >= 3
    later = next(c for c in nb.cells[nb.cells.index(hidden[0]) + 1:]
                 if c.cell_type == "code" and "BEGIN HIDDEN TESTS" not in c.source)  # a student's or a visible cell
    spaced = "   ".join(quoted[1].split())  # the words, spaced otherwise
    hidden[0].outputs = [nbformat.from_dict({"output_type": "stream", "name": "stdout",
                                             "text": "ran:\n" + secret + "a message of the test\n"})]
    later.outputs = [
        nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": f"my own line\n{spaced}\n"}),
        nbformat.from_dict({"output_type": "execute_result", "execution_count": 1, "metadata": {},
                            "data": {"text/plain": [quoted[0] + "\n", "42\n"]}}),
        nbformat.from_dict({"output_type": "display_data", "metadata": {},
                            "data": {"text/html": f"<pre>{html.escape(quoted[2])}</pre>", "image/png": "iVBORw0K"}}),
        nbformat.from_dict({"output_type": "error", "ename": "ValueError", "evalue": quoted[0],
                            "traceback": ["ValueError: " + quoted[0]]}),
    ]
    out, _ = HideHiddenTests().preprocess(nb, {})
    text = json.dumps(out)
    for line in quoted:
        assert json.dumps(line)[1:-1] not in text, line
    assert spaced not in text
    assert "a message of the test" in hidden[0].outputs[0].text and "ran:" in hidden[0].outputs[0].text
    stream, result, display, error = later.outputs
    assert stream.text == f"my own line\n{HIDDEN_LINE}\n"
    assert result.data["text/plain"] == f"{HIDDEN_LINE}\n42\n"
    assert "text/html" not in display.data and display.data["image/png"] == "iVBORw0K"  # the figure stays
    assert error.evalue == HIDDEN_LINE and error.traceback == [HIDDEN_LINE]
    untouched = _read(grading.source_path(LABS[0]))  # a notebook whose outputs quote nothing hidden is unchanged
    shown = [c for c in untouched.cells if c.cell_type == "code" and "BEGIN HIDDEN TESTS" not in c.source]
    for c in shown:
        c.outputs = [nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": c.source})]
    before = [copy.deepcopy(c.outputs) for c in shown]
    HideHiddenTests().preprocess(untouched, {})
    assert [c.outputs for c in shown] == before


def test_normalise_and_compare_notebooks():
    release = _read(grading.release_path(LABS[0]))
    assert grading.compare_notebooks(release, release) == []
    noisy = copy.deepcopy(release)
    noisy.metadata["language_info"] = {"name": "python", "version": "3.99.0"}
    noisy.metadata["widgets"] = {}
    noisy.cells[1].metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
    noisy.cells[1].metadata["collapsed"] = True
    assert grading.compare_notebooks(release, noisy) == []
    stale = copy.deepcopy(release)
    test_cell = _grade_cells(stale)[0]
    test_cell.source += "\nassert 1 + 1 == 2"
    problems = grading.compare_notebooks(release, stale)
    assert len(problems) == 1 and _nbgrader_meta(test_cell)["grade_id"] in problems[0] and "source" in problems[0]
    stale.cells.pop()
    assert any("cells, expected" in p for p in grading.compare_notebooks(release, stale))


def test_validate_submission(tmp_path):
    release = grading.release_path(LABS[0])
    assert grading.validate_submission(release) is None
    for student, text, words in MALFORMED:
        path = tmp_path / f"{student}.ipynb"
        path.write_text(text)
        assert words in grading.validate_submission(path)
    path = tmp_path / "list.ipynb"
    path.write_text("[1, 2]")
    assert "no 'nbformat'" in grading.validate_submission(path)
    nb = _read(release)
    _grade_cells(nb)[0].metadata["nbgrader"]["schema_version"] = 1
    nbformat.write(nb, str(path))
    assert "schema version 1" in grading.validate_submission(path)
    assert "cannot read" in grading.validate_submission(tmp_path / "missing.ipynb")


def test_a_submission_holding_links_or_special_files_is_refused(tmp_path):
    folder = tmp_path / "submitted" / "student" / LABS[0]
    folder.mkdir(parents=True)
    nb = folder / f"{LABS[0]}.ipynb"
    shutil.copyfile(grading.release_path(LABS[0]), nb)
    assert grading.validate_submission(nb) is None
    outside = tmp_path / "gradebook.db"
    outside.write_text("grades")
    (folder / "data").mkdir()
    (folder / "data" / "notes.txt").symlink_to(outside)
    reason = grading.validate_submission(nb)
    assert "data/notes.txt (a symbolic link)" in reason and "regular files and folders only" in reason, reason
    os.mkfifo(folder / "pipe")
    assert "and 1 more" in grading.validate_submission(nb)
    (folder / "data" / "notes.txt").unlink()
    assert "pipe (a FIFO)" in grading.validate_submission(nb)
    (folder / "pipe").unlink()
    levels = [folder]
    for _ in range(1200):  # deeper than Python's recursion limit
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    (levels[-1] / "deep-link").symlink_to(outside)
    assert grading.validate_submission(nb).startswith("the submission's folder holds " + "d/" * 1200 + "deep-link (a symbolic link)")
    (levels[-1] / "deep-link").unlink()
    for level in reversed(levels[1:]):
        level.rmdir()
    for i in range(5):
        (folder / f"f{i}.txt").write_text("x")
    assert grading.special_files(folder, limit=3) == ["more than 3 entries (not searched to the end)"]  # never "clean"
    nb.unlink()
    nb.symlink_to(grading.release_path(LABS[0]))  # the notebook itself a link
    assert f"{LABS[0]}.ipynb is a symbolic link, not a file" in grading.validate_submission(nb)
    assert outside.read_text() == "grades"


def test_fill_solutions_types_in_the_solutions():
    for lab in LABS:
        release, source = _read(grading.release_path(lab)), _read(grading.source_path(lab))
        filled = grading.fill_solutions(release, source)
        assert len(filled.cells) == len(release.cells)
        for cell in filled.cells:
            if _nbgrader_meta(cell).get("solution"):
                assert "NotImplementedError" not in cell.source and "### BEGIN SOLUTION" not in cell.source


def test_demo_refuses_roots_it_did_not_make(tmp_path):
    for unsafe in [REPO, REPO / "notebooks", REPO / "notebooks" / LABS[0]]:
        with pytest.raises(grading.GradingError, match="refusing"):
            grading.demo(root=unsafe, out=lambda *a: None)
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(grading.GradingError, match="not made by"):
        grading.demo(root=tmp_path, out=lambda *a: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------
# Mistakes lose points (in-process execution of one exercise at a time)
# ----------------------------------------------------------------------------


def _run_exercise(source_nb, exercise: str, solutions: dict[str, str], *,
                  stop_at_failure: bool = False) -> dict[str, str | None]:
    """Run the setup, every solution cell and ``exercise``'s test cells; {grade_id: error or None}.

    ``stop_at_failure``: stop after the first failing test cell (enough to know that points are
    lost; spares the later cells, e.g. a second training run)."""
    namespace: dict = {"__name__": "__lab__"}
    results = {}
    sink = io.StringIO()
    with torch.random.fork_rng(), redirect_stdout(sink), redirect_stderr(sink):
        for cell in source_nb.cells:
            meta = _nbgrader_meta(cell)
            if cell.cell_type != "code" or not meta:
                continue
            grade_id = meta.get("grade_id", "")
            is_test = meta.get("grade", False)
            if is_test and grading.exercise_of(grade_id) != exercise:
                continue
            code = solutions.get(grade_id, cell.source)
            try:
                exec(compile(code, f"<{grade_id}>", "exec"), namespace)
            except Exception as err:  # noqa: BLE001 - a failing cell is a result
                if not is_test:
                    raise
                results[grade_id] = f"{type(err).__name__}: {err}"
                if stop_at_failure:
                    break
            else:
                if is_test:
                    results[grade_id] = None
    return results


def _points_lost(source_nb, results) -> float:
    cells = _cells_by_id(source_nb)
    return sum(_nbgrader_meta(cells[g])["points"] for g, err in results.items() if err)


MUTANT_CASES = [(lab, *m) for lab, ms in _load_mutants(in_process=True).items() for m in ms]


def _exercises(nb) -> list[str]:
    return sorted({grading.exercise_of(_nbgrader_meta(c)["grade_id"]) for c in _grade_cells(nb)})


@pytest.mark.parametrize("lab", LABS)
def test_every_exercise_has_plausible_mistakes(lab):
    assert lab in MUTANTS, f"{lab}: no tests/mutants/{lab}.py with plausible mistakes"
    nb = _read(grading.source_path(lab))
    exercises = set(_exercises(nb))
    covered = {grading.exercise_of(grade_id) for _, grade_id, _ in MUTANTS[lab]}
    assert exercises <= covered, f"{lab}: no plausible mistakes listed for {sorted(exercises - covered)}"


# That each lab's solution passes every test cell is checked elsewhere, so not again here: each
# exercise passes with every other exercise blank (below); tests/test_integrity.py autogrades every
# solution with nbgrader (full marks, and no cell raised: integrity.cells_that_raised); and nbval runs
# the solution notebooks cell by cell in a plain kernel (make test-labs, not part of make test).


def test_cells_that_raised_names_each_cell_with_an_error_output(tmp_path):
    """What the integrity run refuses in an autograded solution: any error output, in any code cell."""
    from autograder import integrity

    nb = new_notebook(cells=[new_code_cell("1"), new_code_cell("x"), new_markdown_cell("text"), new_code_cell("y")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="a warning\n")]
    nb.cells[1].id, nb.cells[3].id = "demo", "plot"
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ImportError", evalue="cannot import name 'PixelCNN'",
                                                  traceback=[])]
    path = tmp_path / "graded.ipynb"
    nbformat.write(nb, str(path))
    assert integrity.cells_that_raised(path) == ["demo: ImportError: cannot import name 'PixelCNN'"]
    nb.cells[3].outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'y' is not defined",
                                                  traceback=[])]
    nbformat.write(nb, str(path))
    assert integrity.cells_that_raised(path)[1] == "plot: NameError: name 'y' is not defined"
    nb.cells[1].outputs = nb.cells[3].outputs = []
    nbformat.write(nb, str(path))
    assert integrity.cells_that_raised(path) == []


ALONE_CASES = [(lab, ex) for lab in LABS for ex in _exercises(_read(grading.source_path(lab)))]


@pytest.mark.parametrize("lab,exercise", ALONE_CASES, ids=[f"{lab}-{ex}" for lab, ex in ALONE_CASES])
def test_each_exercise_scores_full_marks_with_every_other_exercise_blank(lab, exercise):
    """Exercise isolation: with every other solution cell as released (``raise NotImplementedError``)
    the exercise's test cells all pass. Its score then cannot depend on another exercise's code: tests
    that call an earlier exercise's function run under ``labrefs.reference_versions``."""
    nb = _read(grading.source_path(lab))
    release = _cells_by_id(_read(grading.release_path(lab)))
    blank = {
        _nbgrader_meta(c)["grade_id"]: release[_nbgrader_meta(c)["grade_id"]].source
        for c in nb.cells
        if _nbgrader_meta(c).get("solution") and grading.exercise_of(_nbgrader_meta(c)["grade_id"]) != exercise
    }
    assert all("NotImplementedError" in code or "YOUR CODE HERE" in code for code in blank.values())
    results = _run_exercise(nb, exercise, blank)
    failed = {g: err for g, err in results.items() if err}
    assert results and not failed, (
        f"{lab} {exercise} depends on other exercises' solutions: {failed}; run the calls of those "
        "functions under reference_versions(globals(), lab, name, ...) (labrefs)")


@pytest.mark.parametrize("lab,name,grade_id,edits", MUTANT_CASES, ids=[f"{c[0]}-{c[1]}" for c in MUTANT_CASES])
def test_each_plausible_mistake_loses_points(lab, name, grade_id, edits):
    nb = _read(grading.source_path(lab))
    code = _cells_by_id(nb)[grade_id].source
    for old, new in edits:
        assert old in code, f"mutant {name!r}: {old!r} is not in {grade_id}; update MUTANTS"
        code = code.replace(old, new)
    results = _run_exercise(nb, grading.exercise_of(grade_id), {grade_id: code}, stop_at_failure=True)
    assert _points_lost(nb, results) > 0, f"{name}: every test cell passed"


# ----------------------------------------------------------------------------
# Slow: one demo run grades everything
# ----------------------------------------------------------------------------


def _add(subs: Path, lab: str, student: str, nb_or_text) -> None:
    path = subs / lab / student / f"{lab}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb_or_text, str):
        path.write_text(nb_or_text)
    else:
        nbformat.write(nb_or_text, str(path))


def _with_stderr_hook(nb):
    nb = copy.deepcopy(nb)
    hook = new_code_cell(STDERR_HOOK)
    hook.id = "stderr-hook"
    nb.cells.insert(0, hook)
    return nb


def _without_grade_id(nb):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if _nbgrader_meta(cell).get("solution"):
            del cell.metadata["nbgrader"]["grade_id"]
            break
    return nb


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Run ``python -m autograder demo`` once on a scratch course with every submission."""
    tmp = tmp_path_factory.mktemp("grading")
    subs = tmp / "submissions"
    if SUBMISSIONS.is_dir():
        shutil.copytree(SUBMISSIONS, subs)
    for lab in LABS:
        release, source = _read(grading.release_path(lab)), _read(grading.source_path(lab))
        solution = grading.fill_solutions(release, source)
        if lab == LABS[0]:
            # The first lab's committed release here (its solution: the example "perfect"); every lab's
            # solution (full marks) and blank release (0) are autograded by tests/test_integrity.py's run.
            _add(subs, lab, "auto-release", release)
        if lab in STDERR_LABS:
            _add(subs, lab, "auto-stderr", _with_stderr_hook(solution))
    first = LABS[0]
    for student, text, _ in MALFORMED:
        _add(subs, first, f"auto-{student}", text)
    _add(subs, first, "auto-no-grade-id", _without_grade_id(_read(grading.release_path(first))))
    root = tmp / "course"
    env = {k: v for k, v in os.environ.items() if k != "AUTOGRADER_GRADEBOOK_URL"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "--course", str(REPO), "demo", "--root", str(root), "--submissions", str(subs)],
        cwd=tmp, env=env, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    course = grading.Course(root)
    return {
        "course": course,
        "stdout": proc.stdout,
        "scores": grading.read_scores(course.db_url),
        "elapsed": elapsed,
    }


def _result(graded, lab, student) -> grading.SubmissionResult:
    key = (lab, student)
    assert key in graded["scores"], f"{student} was not graded for {lab}:\n{graded['stdout']}"
    return graded["scores"][key]


def _autograded(graded, lab, student):
    return _read(graded["course"].path("autograded", student, lab))


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS[:1])  # every lab: tests/test_integrity.py
def test_blank_release_scores_zero(graded, lab):
    r = _result(graded, lab, "auto-release")
    assert r.score == 0 and r.max_score > 0, r.cells
    nb = _autograded(graded, lab, "auto-release")  # graded, not crashed: every test cell ran and failed
    for cell in _grade_cells(nb):
        assert any(o.output_type == "error" for o in cell.outputs), _nbgrader_meta(cell)["grade_id"]


@pytest.mark.slow
@pytest.mark.parametrize("lab", STDERR_LABS)
def test_pytorch_warning_on_stderr_keeps_full_marks(graded, lab):
    """StderrToStdout: a warning on stderr costs no points and stays visible in an ordinary test cell's
    outputs. A probe cell (autograder.probes) keeps the checker's verdict alone: nothing the kernel
    wrote while probing, the warning included, reaches the feedback."""
    r = _result(graded, lab, "auto-stderr")
    assert r.score == r.max_score, r.cells
    nb = _autograded(graded, lab, "auto-stderr")
    source = {_nbgrader_meta(c)["grade_id"]: c.source for c in _grade_cells(_read(grading.source_path(lab)))}
    kinds = set()
    for cell in _grade_cells(nb):
        if probes.parse(source[_nbgrader_meta(cell)["grade_id"]]) is not None:
            kinds.add("probe")
            assert cell.outputs == [], (_nbgrader_meta(cell)["grade_id"], cell.outputs)  # passed: no error, nothing else
            continue
        kinds.add("ordinary")
        streams = [o for o in cell.outputs if o.output_type == "stream"]
        assert streams and all(o.name == "stdout" for o in streams)
        kept = [o.text for o in streams if o.text.startswith("[stderr]\n")]
        assert kept and "UserWarning" in kept[0], "the warning stays visible in the feedback"
    expected = {"ordinary" if probes.parse(text) is None else "probe" for text in source.values()}
    assert kinds == expected and (lab != LABS[0] or kinds == {"probe"}), kinds


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_committed_release_matches_generate_assignment(graded, lab):
    generated = _read(graded["course"].path("release", ".", lab))
    committed = _read(grading.release_path(lab))
    problems = grading.compare_notebooks(generated, committed)
    assert not problems, f"{lab}: notebooks/ is stale (run python -m autograder release {lab}): {problems}"
    # what nbgrader generated: outputs cleared, solutions stubbed, hidden tests removed
    text = json.dumps(generated)
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    for cell in generated.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        if _nbgrader_meta(cell).get("solution"):
            assert "# YOUR CODE HERE" in cell.source and "raise NotImplementedError()" in cell.source


@pytest.mark.slow
@pytest.mark.parametrize("lab,student", [(lab, s) for lab, students in EXPECTED.items() for s in students])
def test_example_submissions_get_their_expected_scores(graded, lab, student):
    r = _result(graded, lab, student)
    assert r.score == EXPECTED[lab][student], r.cells
    expected_cells = EXPECTED_CELLS.get((lab, student), {})
    for grade_id, (score, max_score) in r.cells.items():
        default = max_score if EXPECTED[lab][student] > 0 else 0.0
        assert score == expected_cells.get(grade_id, default), (grade_id, score)


@pytest.mark.slow
def test_assertion_failure_scores_zero_and_warnings_do_not(graded):
    partial = _cells_by_id(_autograded(graded, "lab01", "partial"))
    errors = [o for o in partial["ex2_visible"].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "AssertionError"
    assert _result(graded, "lab01", "partial").cells["ex2_visible"][0] == 0
    warned = _cells_by_id(_autograded(graded, "lab01", "warnings"))
    # ex1_visible is a probe cell (autograder.probes): what the kernel wrote, the warning included, is not kept;
    # the verdict alone is (none: it passed). test_pytorch_warning_on_stderr_keeps_full_marks covers ordinary cells.
    assert warned["ex1_visible"].outputs == [], warned["ex1_visible"].outputs
    assert _result(graded, "lab01", "warnings").cells["ex1_visible"][0] == 1
    # the assertion that failed says what failed, in the checker's words (the line of CHECK)
    assert "(CHECK line" in errors[0].evalue, errors[0].evalue


@pytest.mark.slow
def test_demo_reports_malformed_submissions_and_exports_csv(graded):
    out = graded["stdout"]
    first = LABS[0]
    for student, _, words in MALFORMED:
        line = next((l for l in out.splitlines() if f"auto-{student}" in l and "could not be graded" in l), None)
        assert line is not None and words in line, out
        assert f"{first}/auto-{student}/{first}.ipynb" in line  # names the submission
    csv_path = Path(re.search(r"^CSV: (.+)$", out, re.M).group(1))
    assert csv_path.is_file() and csv_path.is_relative_to(graded["course"].root)
    rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(csv_path.open())}
    for lab, students in EXPECTED.items():
        for student, score in students.items():
            assert float(rows[(lab, student)]["score"]) == score
            assert re.search(rf"^{re.escape(student)}\s.*\s{score:g}/", out, re.M), out
    assert float(rows[(first, "auto-bad-json")]["score"]) == 0.0
    # a solution cell without its grade_id is kept as the student's own cell (RestoreCells), and graded
    assert _result(graded, first, "auto-no-grade-id").score == 0.0
    assert _result(graded, first, "auto-no-grade-id").max_score > 0
    print(f"\ndemo run with every submission: {graded['elapsed']:.1f} s")


@pytest.mark.slow
def test_check_release_fails_on_a_stale_release_and_release_fixes_it(tmp_path):
    lab = LABS[0]
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "nbgrader_config.py", repo / "nbgrader_config.py")
    shutil.copytree(REPO / "solutions" / lab, repo / "solutions" / lab)
    shutil.copytree(REPO / "notebooks" / lab, repo / "notebooks" / lab)
    source = _read(repo / "solutions" / lab / f"{lab}.ipynb")
    test_cell = _grade_cells(source)[0]
    test_cell.source += "\nassert True  # a new visible check"
    nbformat.write(source, str(repo / "solutions" / lab / f"{lab}.ipynb"))
    committed = (repo / "notebooks" / lab / f"{lab}.ipynb").read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "AUTOGRADER_GRADEBOOK_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "--course", str(repo), "check-release", lab],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{lab}: the committed release is stale" in proc.stderr
    assert _nbgrader_meta(test_cell)["grade_id"] in proc.stderr
    assert (repo / "notebooks" / lab / f"{lab}.ipynb").read_bytes() == committed  # checking writes nothing
    assert not (repo / "_grading").exists()
    grading.release(lab, repo)
    assert grading.check_release([lab], repo) == {}
    release = _read(repo / "notebooks" / lab / f"{lab}.ipynb")
    assert "a new visible check" in _cells_by_id(release)[_nbgrader_meta(test_cell)["grade_id"]].source


@pytest.mark.slow
def test_a_submission_that_stops_nbgrader_does_not_cost_the_others(graded):
    """nbgrader aborts a whole autograde run at a notebook with an old metadata schema.

    The demo refuses such a notebook up front (validate_submission); autograde_batch copes
    anyway: it blames the submission nbgrader stopped at and grades the rest.
    """
    lab = LABS[0]
    course = graded["course"]
    release = _read(grading.release_path(lab))
    old = copy.deepcopy(release)
    for cell in old.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata["nbgrader"]["schema_version"] = 1
    for student, nb in [("batch-a-old-schema", old), ("batch-b-release", release)]:
        path = course.path("submitted", student, lab)
        path.parent.mkdir(parents=True)
        nbformat.write(nb, str(path))
    errors = course.autograde_batch(lab, ["batch-b-release", "batch-a-old-schema"])
    # RestoreCells now gives every course cell the release's metadata before nbgrader reads it,
    # so an old metadata schema no longer stops the batch: both are graded (0 points, blank)
    assert errors == {}
    scores = grading.read_scores(course.db_url)
    assert scores[(lab, "batch-a-old-schema")].score == 0
    assert scores[(lab, "batch-b-release")].score == 0 and course.path("autograded", "batch-b-release", lab).is_file()
    # the students graded before were left alone
    assert course.path("autograded", "perfect", lab).is_file()
    assert scores[(lab, "perfect")].score == scores[(lab, "perfect")].max_score


def test_parallel_chunks_share_the_batch_between_the_workers():
    """One nbgrader process per Dask task: the batch is cut into one chunk per worker, at most MAX_CHUNK each."""
    from autograder.parallel import MAX_CHUNK, chunk_size

    assert chunk_size(20, 2) == 10 and chunk_size(21, 2) == 10 and chunk_size(3, 2) == 2
    assert chunk_size(1000, 16) == MAX_CHUNK and chunk_size(1000, 16, most=100) == 63
    assert chunk_size(5, 8) == 1 and chunk_size(0, 2) == 1 and chunk_size(7, 0) == 7
    for n in range(1, 60):  # every submission lands in exactly one chunk, and the chunks are balanced
        for workers in (1, 2, 3, 16):
            size = chunk_size(n, workers)
            chunks = [list(range(n))[i:i + size] for i in range(0, n, size)]
            assert sorted(s for c in chunks for s in c) == list(range(n))
            assert len(chunks) <= max(workers, -(-n // MAX_CHUNK))


def test_chunk_without_a_cluster_is_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autograder", "autograde", "lab01", "--chunk", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --chunk sets the submissions per Dask task: give it with --jobs N or --scheduler ADDRESS"


def test_the_tree_snapshot_sees_every_change_outside_what_the_grader_writes(tmp_path):
    """autograder.integrity's before/after check of a hostile batch: contents, modes, links, added and removed
    entries are reported; what the grader itself writes (the graded copies, the gradebook's contents) is not."""
    from autograder import integrity

    course = tmp_path / "course"
    (course / "_grading" / "autograded" / "s1").mkdir(parents=True)
    (course / "_grading" / "submitted" / "s1").mkdir(parents=True)
    (course / "_grading" / "gradebook.db").write_text("grades")
    (course / "_grading" / "submitted" / "s1" / "lab.ipynb").write_text("{}")
    (course / "solutions").mkdir()
    (course / "solutions" / "lab.ipynb").write_text("solution")
    (course / "keep.txt").write_text("keep")
    roots = {"course": course}

    def skip(label, rel):
        return any(rel == Path(w) or Path(w) in rel.parents for w in integrity._GRADER_WRITES)

    before = integrity._tree_state(roots, skip)
    assert integrity._tree_changes(before, integrity._tree_state(roots, skip)) == []
    (course / "_grading" / "autograded" / "s1" / "lab.ipynb").write_text("graded")  # the grader's: not reported
    (course / "_grading" / "gradebook.db").write_text("new grades")
    assert integrity._tree_changes(before, integrity._tree_state(roots, skip)) == []

    (course / "solutions" / "lab.ipynb").write_text("changed")
    (course / "keep.txt").chmod(0o600)
    (course / "_grading" / "submitted" / "s1" / "lab.ipynb").unlink()
    (course / "_grading" / "submitted" / "s1" / "lab.ipynb").symlink_to(course / "solutions" / "lab.ipynb")
    (course / "ATTACK").write_text("x")
    os.mkfifo(course / "pipe")
    changes = integrity._tree_changes(before, integrity._tree_state(roots, skip))
    assert changes == [
        "course/ATTACK (file added: the tree changed)",
        "course/_grading/submitted/s1/lab.ipynb (kind, contents, mode changed)",
        "course/keep.txt (mode changed)",
        "course/pipe (special file added: the tree changed)",
        "course/solutions/lab.ipynb (contents changed)",
    ], changes
