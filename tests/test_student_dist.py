"""The student distribution (``make student-dist``, autograder.student_dist): the labs and gmlib, and
nothing of the instructor's: no line of a solution, a hidden test or a reference version is in it,
and a lab filled in by a student runs there, its visible tests included (on the student's own
functions: the reference versions' stub binds nothing)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from autograder.student_dist import build_student_dist

REPO = Path(__file__).resolve().parents[1]
LABS = grading.discover_labs(REPO)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build_student_dist(tmp_path_factory.mktemp("student") / "dist", REPO)


def _secret_lines() -> set[str]:
    """Lines (stripped, 20 characters or more) of the solutions, the hidden tests and the reference
    versions that nothing public (release notebooks, gmlib) also holds."""
    secret, public = [], []
    for lab in LABS:
        for cell in nbformat.read(str(grading.source_path(lab, REPO)), as_version=4).cells:
            secret += re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
            secret += re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", cell.source, re.S)
        public += [c.source for c in nbformat.read(str(grading.release_path(lab, REPO)), as_version=4).cells]
    refs = (REPO / "labrefs" / "__init__.py").read_text()
    secret += [refs[refs.index("# -- Lab 1"):]]  # the adapters
    public += [p.read_text() for p in (REPO / "gmlib").rglob("*.py")]
    public_text = "\n".join(public)
    return {ln.strip() for text in secret for ln in text.splitlines()
            if len(ln.strip()) >= 20 and ln.strip() not in public_text}


def test_the_student_distribution_holds_no_solution_hidden_test_or_reference(dist):
    top = sorted(p.name for p in dist.iterdir())
    assert top == sorted(["notebooks", "gmlib", "labrefs", "pyproject.toml", "requirements.txt", "Makefile", "README.md"])
    assert sorted(p.name for p in (dist / "notebooks").iterdir()) == LABS
    assert not list(dist.rglob("__pycache__")) and not list(dist.rglob("*.pyc"))
    secret = _secret_lines()
    assert len(secret) > 300, len(secret)  # the check has something to find
    for path in dist.rglob("*"):
        if path.is_file() and path.suffix not in (".pt", ".npz"):
            text = path.read_text()
            if path.suffix == ".ipynb":  # the cells' text, not JSON's escaped one
                text = "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
            found = [ln for ln in secret if ln in text]
            assert not found, f"{path.relative_to(dist)} holds instructor text: {found[:3]}"
    assert "autograder" not in (dist / "requirements.txt").read_text().split("-e .")[-1]


@pytest.mark.parametrize("lab", LABS[:2])
def test_a_filled_in_lab_runs_in_the_student_distribution(dist, lab, tmp_path):
    """The release with the solutions typed in, executed with the distribution's packages first on
    the path: every cell runs, the visible tests pass, labrefs is the stub."""
    from nbclient import NotebookClient

    release = nbformat.read(str(dist / "notebooks" / lab / f"{lab}.ipynb"), as_version=4)
    filled = grading.fill_solutions(release, nbformat.read(str(grading.source_path(lab, REPO)), as_version=4))
    filled.cells.append(nbformat.v4.new_code_cell("import gmlib, labrefs\nprint(labrefs.__file__, gmlib.__file__)"))
    env = {**os.environ, "PYTHONPATH": str(dist), "MPLBACKEND": "Agg"}
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        NotebookClient(filled, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(dist / "notebooks" / lab)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    last = "".join(o.get("text", "") for o in filled.cells[-1].outputs)
    assert last.split()[0] == str(dist / "labrefs" / "__init__.py"), last
    assert last.split()[1] == str(dist / "gmlib" / "__init__.py"), last
    for cell in filled.cells:
        assert not [o for o in cell.get("outputs", []) if o.output_type == "error"], cell.source[:200]
