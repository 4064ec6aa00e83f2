"""A class through nbgrader's exchange, end to end, with the course's configuration (issue 17).

In a scratch course made from this repository's ``nbgrader_config.py`` and Lab 1, whose exchange is
the course's default (``_grading/exchange``): the instructor generates and releases the lab; three
students, each in a home of their own, fetch it and submit (the example solution, the example with
mistakes, the untouched release); the instructor collects, autogrades, generates and releases the
feedback; each student fetches theirs; ``nbgrader export`` writes the per-exercise CSV under
``_grading/``. The scores must be the expected ones, per exercise, and no student's fetched feedback
may quote a line of a hidden test. About 20 nbgrader runs and 3 autogrades: a minute on one core.
"""
from __future__ import annotations

import csv
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from browser import chromium  # Debian's Chromium, or None (a failure in CI)
from test_integrity import _hidden_lines  # the lines of a lab's hidden tests that no other cell shows

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LAB = "lab01"
EXAMPLES = REPO / "tests" / "submissions" / LAB
# student -> (the notebook they submit, or None for the release as fetched; expected points per exercise)
STUDENTS = {
    "alice": (EXAMPLES / "perfect" / f"{LAB}.ipynb", {"ex1": 3, "ex2": 4, "ex3": 4, "ex4": 4, "ex5": 5}),
    "bob": (EXAMPLES / "partial" / f"{LAB}.ipynb", {"ex1": 3, "ex2": 1, "ex3": 3, "ex4": 4, "ex5": 5}),
    "carol": (None, {"ex1": 0, "ex2": 0, "ex3": 0, "ex4": 0, "ex5": 0}),
}


def _student(home: Path, exchange: Path, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader ARGS --course dgm`` as a student would run it: from their home, with HOME there (no
    course configuration of theirs), the exchange given on the command line. (Through
    ``autograder.run_nbgrader``: nbgrader's own command line, 1.7 s quicker to start.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGRADER_", "JUPYTER"))}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "autograder.run_nbgrader", *args, "--course", "dgm", f"--Exchange.root={exchange}"],
                          cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} as {home.name}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc


def _math_renders_offline(folder: Path) -> None:
    """The feedback page, opened by headless Chromium with no network: MathJax typesets its formulas."""
    browser = chromium()
    if browser is None:
        return  # outside CI: the rest of the test stands
    page = next(folder.glob(f"*/{LAB}.html"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--virtual-time-budget=15000", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    typeset = proc.stdout.count("<mjx-container")
    assert typeset >= 10, f"MathJax typeset {typeset} formulas in the feedback page ({proc.stderr[-500:]})"


def _formgrader_shows_the_class(tmp_path: Path, root: Path) -> None:
    """`make formgrader COURSE=root` in headless Chromium: the assignment with its submissions, the
    gradebook's scores, one graded submission, and the links into the course's folders."""
    from browser import Browser
    from test_browser import MakeServer, keep

    server = MakeServer(tmp_path, "formgrader", [], [f"COURSE={root}"])
    browser = Browser(1400, 900)
    try:
        browser.authorize(server.token)
        browser.goto(f"{server.url}/formgrader/manage_assignments")
        row = browser.wait_for(f"Array.from(document.querySelectorAll('tbody tr')).map(r => r.innerText)"
                               f".find(t => t.startsWith('{LAB}') && /\\b3\\b/.test(t))", 60, "lab01 with 3 submissions")
        links = browser.eval("Array.from(document.querySelectorAll('tbody tr:first-child a[href^=\"/tree/\"]'))"
                             ".map(a => a.getAttribute('href'))")
        assert sorted(links) == [f"/tree/./notebooks/{LAB}", f"/tree/./solutions/{LAB}"], links
        for link in links:  # the source (Edit) and the release (Preview) open: the server serves the course root
            folder = link.removeprefix("/tree/./")
            listing = browser.eval(f"fetch('/api/contents/{folder}').then(r => r.ok ? r.json() : r.status)")
            assert isinstance(listing, dict) and f"{LAB}.ipynb" in [c["name"] for c in listing["content"]], (link, listing)
        browser.goto(f"{server.url}/formgrader/gradebook/{LAB}/{LAB}")
        rows = browser.wait_for("(() => { const r = Array.from(document.querySelectorAll('tbody tr'))"
                                ".map(r => Array.from(r.cells).map(c => c.innerText.trim()));"
                                " return r.length === 3 && r.every(c => c.length > 3) && r; })()", 60, "3 graded submissions")
        assert sorted(r[2] for r in rows) == ["0 / 20", "16 / 20", "20 / 20"], rows  # overall score
        keep(browser.screenshot(tmp_path / "formgrader-gradebook.png"))
        partial = browser.eval("Array.from(document.querySelectorAll('tbody tr')).find(r => r.cells[2].innerText.trim()"
                               " === '16 / 20').querySelector('a').href")
        browser.goto(partial)
        text = browser.wait_for("document.querySelector('#notebook') && document.body.innerText.includes('Exercise 5')"
                                " && document.body.innerText", 60, "the graded submission")
        assert "Submission" in text and "Lab 1: the probability toolkit" in text
        keep(browser.screenshot(tmp_path / "formgrader-submission.png"))
    finally:
        browser.close()
        server.close()
    log = (tmp_path / "formgrader.log").read_text()
    assert " 500 " not in log and "Traceback" not in log, log[-3000:]


def test_a_class_through_the_exchange(tmp_path):
    course = grading.Course.create(tmp_path / "course", [LAB])
    exchange = course.root / "_grading" / "exchange"  # nbgrader_config.py's default for one account
    generated = course.generate(LAB)
    # byte for byte the committed release: `nbgrader generate_assignment --force`, the README's first
    # instructor command, leaves the checkout clean
    assert generated.read_bytes() == grading.release_path(LAB, REPO).read_bytes()
    assert exchange.is_dir(), "nbgrader_config.py makes the default exchange"
    course.nbgrader("release_assignment", LAB)
    for student, (notebook, _) in STUDENTS.items():
        home = tmp_path / "home" / student
        home.mkdir(parents=True)
        _student(home, exchange, "fetch_assignment", LAB)
        fetched = home / LAB / f"{LAB}.ipynb"
        assert fetched.is_file(), f"{student} fetched nothing"
        if notebook is not None:
            fetched.write_bytes(notebook.read_bytes())
        _student(home, exchange, "submit", LAB, f"--student={student}")
    course.nbgrader("collect", LAB)
    for student in STUDENTS:
        assert course.path("submitted", student, LAB).is_file(), f"{student}'s submission was not collected"
    log = course.nbgrader("autograde", LAB)
    log = log.stdout + log.stderr
    # an honest autograde's log holds no routine warnings (issue 17): SQLAlchemy's "not in session", the
    # guard's notes on what the student edition leaves out, a restore for a release submitted as fetched
    assert "not in session" not in log and "guard setup:" not in log, log[-3000:]
    assert "KeyboardInterrupt" not in log and "display_data_priority" not in log, log[-3000:]  # kernel noise (issue 17)
    carol = log[log.index(f"submitted/carol/{LAB}"):].split("Sanitizing")[0]
    assert "RestoreCells" not in carol, carol
    _formgrader_shows_the_class(tmp_path, course.root)
    course.nbgrader("generate_feedback", LAB)
    course.nbgrader("release_feedback", LAB)
    hidden = _hidden_lines(LAB)
    for student in STUDENTS:
        home = tmp_path / "home" / student
        _student(home, exchange, "fetch_feedback", LAB, f"--student={student}")
        pages = list((home / LAB / "feedback").glob(f"*/{LAB}.html"))
        assert len(pages) == 1, f"{student} fetched {pages}"
        page = pages[0].read_text()
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        for line in hidden:
            assert line not in text, f"{student}'s feedback shows a hidden test line: {line!r}"
        # named exercises with their subtotals (autograder.preprocessors.ExerciseSummary), math offline
        rows = re.findall(r'<tr class="exercise">\s*<td><b>(Exercise (\d+)[^<]*)</b></td>\s*'
                          r'<td class="center"><b>([\d.]+) / ([\d.]+)</b></td>', page)
        expected = STUDENTS[student][1]
        assert {f"ex{n}": float(score) for _, n, score, _ in rows} == expected, (student, rows)
        assert all(":" in title for title, *_ in rows), rows  # "Exercise 1: entropy of ..."
        assert "window.MathJax" in page and "MathJax" in page and len(page) > 2_000_000
        assert not re.search(r'<script[^>]+src="https?://', page) and "cdnjs" not in page
        if student == "bob":  # a failed test says why, in the checker's words
            assert re.search(r"hidden test</a>: 0\.0 / \d[^<]*(?:&mdash;|\u2014) <code>AssertionError: ", page), page[:3000]
    _math_renders_offline(tmp_path / "home" / "alice" / LAB / "feedback")
    proc = course.nbgrader("export")
    grades = course.root / "_grading" / "grades.csv"
    assert grades.is_file(), proc.stdout + proc.stderr
    assert not (course.root / "grades.csv").exists()  # never beside the course's files
    rows = {r["student_id"]: r for r in csv.DictReader(grades.open()) if r["assignment"] == LAB}
    assert set(rows) == set(STUDENTS)
    for student, (_, expected) in STUDENTS.items():
        got = {ex: float(rows[student][ex]) for ex in expected}
        assert got == expected, (student, got)
        assert float(rows[student]["score"]) == sum(expected.values())
        assert float(rows[student]["max_score"]) == 20


def test_validate_judges_a_warning_as_the_autograder_does(tmp_path):
    """`nbgrader validate` (the Validate button) from the course root, with its configuration: a solution
    that prints a warning on stderr passes, as it keeps its points when autograded (StderrToStdout),
    where stock nbgrader's Validator calls the cell failed."""
    release = nbformat.read(str(grading.release_path(LAB, REPO)), as_version=4)
    nb = grading.fill_solutions(release, nbformat.read(str(grading.source_path(LAB, REPO)), as_version=4))
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "ex1_solution":
            body = cell.source.index('"""', cell.source.index('"""') + 3) + 4  # after the docstring
            cell.source = (cell.source[:body] + "    import sys; print('a harmless warning', file=sys.stderr)\n"
                           + cell.source[body:])
            assert "harmless" in cell.source
    path = tmp_path / f"{LAB}.ipynb"
    nbformat.write(nb, str(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGRADER_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, "-m", "autograder.run_nbgrader", "validate", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "No nbgrader_config.py" not in out and "Success! Your notebook passes all the tests." in out, out[-3000:]
