r"""The course as nbgrader sees it: labs, releases, scratch courses, batches, scores.

Layout (``nbgrader_config.py`` at the course root maps nbgrader's directories onto it)::

    solutions/labNN/labNN.ipynb   source notebook: solutions, visible and hidden tests (executed)
    notebooks/labNN/labNN.ipynb   student release made by ``nbgrader generate_assignment`` (committed)
    _grading/                     submissions, autograded notebooks, gradebook (gitignored)

Labs are discovered automatically: every ``solutions/labNN/labNN.ipynb``. The course root is
passed in (``repo=``) or found by :func:`autograder.config.course_root`; nothing here knows
where a checkout lies. The command line is :mod:`autograder.cli` (``python -m autograder``).

Everything that runs nbgrader does so in a scratch copy of the course, with a scratch sqlite
gradebook, so it never writes into ``solutions/`` or ``notebooks/`` (except ``release``, whose
job that is) nor into a gradebook named by ``AUTOGRADER_GRADEBOOK_URL``.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import nbformat

from autograder import cores
from autograder.config import CONFIG_FILE, course_root, course_settings
from autograder.common import METADATA_KEY, GradingError, nbgrader_meta

__all__ = [
    "GradingError",
    "Course",
    "SubmissionResult",
    "discover_labs",
    "source_path",
    "release_path",
    "normalise_notebook",
    "compare_notebooks",
    "release",
    "check_release",
    "fill_solutions",
    "validate_submission",
    "find_submissions",
    "read_scores",
    "exercise_of",
    "autograde_course",
    "demo",
    "nbgrader_meta",
]

SOURCE_DIR = "solutions"
RELEASE_DIR = "notebooks"
GRADING_DIR = "_grading"
RUN_NBGRADER = "autograder.run_nbgrader"  # python -m RUN_NBGRADER ARGS runs `nbgrader ARGS`
COURSE_ID = "dgm"
LAB_PATTERN = re.compile(r"^lab\d{2}$")
GRADED_MARKER = ".autograder-graded.json"  # beside an autograded notebook: what was graded
SCRATCH_MARKER = ".autograder-scratch-course"  # marks a directory `demo` may wipe and rebuild

#: cell metadata that records how and when a notebook was last edited or run, not what it is
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "trusted")


# ----------------------------------------------------------------------------
# Labs and notebooks
# ----------------------------------------------------------------------------


def discover_labs(repo: str | os.PathLike | None = None) -> list[str]:
    """Every ``labNN`` with a source notebook ``solutions/labNN/labNN.ipynb``, sorted."""
    src = course_root(repo) / SOURCE_DIR
    if not src.is_dir():
        return []
    return sorted(p.name for p in src.iterdir() if LAB_PATTERN.match(p.name) and (p / f"{p.name}.ipynb").is_file())


def source_path(lab: str, repo: str | os.PathLike | None = None) -> Path:
    return course_root(repo) / SOURCE_DIR / lab / f"{lab}.ipynb"


def release_path(lab: str, repo: str | os.PathLike | None = None) -> Path:
    return course_root(repo) / RELEASE_DIR / lab / f"{lab}.ipynb"


def _check_lab(lab: str, repo: str | os.PathLike) -> None:
    if not LAB_PATTERN.match(lab):
        raise GradingError(f"{lab!r} is not a lab name (labNN)")
    if not source_path(lab, repo).is_file():
        known = ", ".join(discover_labs(repo)) or "none"
        raise GradingError(f"no source notebook {source_path(lab, repo)} (labs found: {known})")


def normalise_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without what changes from run to run or editor to editor.

    Kept: cell types, ids, sources, nbgrader metadata (checksums included), the lock flags
    and any other cell metadata (tags); the kernelspec; the language name. Dropped: outputs,
    execution counts, :data:`VOLATILE_CELL_METADATA`, and the rest of the notebook metadata
    (``language_info`` versions, widget state, ...). Generating a release twice from the same
    source gives byte-identical normalised notebooks.
    """
    nb = copy.deepcopy(nb)
    meta = nb.get("metadata", {})
    kept = {}
    if "kernelspec" in meta:
        kept["kernelspec"] = meta["kernelspec"]
    if "language_info" in meta and "name" in meta["language_info"]:
        kept["language_info"] = {"name": meta["language_info"]["name"]}
    if METADATA_KEY in meta:  # the lab's grading settings (forbidden reference functions)
        kept[METADATA_KEY] = meta[METADATA_KEY]
    nb["metadata"] = nbformat.from_dict(kept)
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _cell_label(cell, index: int) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index} ({grade_id})" if grade_id else f"cell {index} (id {cell.get('id', '?')})"


def compare_notebooks(expected: nbformat.NotebookNode, actual: nbformat.NotebookNode, limit: int = 5) -> list[str]:
    """Differences between two notebooks after :func:`normalise_notebook` (empty when equal)."""
    a, b = normalise_notebook(expected), normalise_notebook(actual)
    problems = []
    if (a.nbformat, a.nbformat_minor) != (b.nbformat, b.nbformat_minor):
        problems.append(f"nbformat {b.nbformat}.{b.nbformat_minor}, expected {a.nbformat}.{a.nbformat_minor}")
    if a.metadata != b.metadata:
        problems.append("notebook metadata (kernelspec or language) differs")
    if len(a.cells) != len(b.cells):
        problems.append(f"{len(b.cells)} cells, expected {len(a.cells)}")
    for i, (ca, cb) in enumerate(zip(a.cells, b.cells)):
        what = [key for key in ("cell_type", "id", "source", "metadata") if ca.get(key) != cb.get(key)]
        if what:
            problems.append(f"{_cell_label(ca, i)}: {', '.join(what)} differ")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more differences"]
    return problems


def _write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))  # nbformat's canonical JSON: indent 1, sorted keys, final newline


# ----------------------------------------------------------------------------
# Running nbgrader on a scratch course
# ----------------------------------------------------------------------------


def _log_tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Course:
    """An nbgrader course directory laid out like this repository (a scratch copy, usually).

    ``root`` holds a copy of ``nbgrader_config.py`` and ``solutions/``; the gradebook is
    ``root/_grading/gradebook.db`` whatever ``AUTOGRADER_GRADEBOOK_URL`` says, so scratch runs
    never touch the real gradebook, unless ``db_url`` names another SQLAlchemy database
    explicitly (the PostgreSQL test does). Every nbgrader step runs in a subprocess with
    this interpreter, from ``root``, so nbgrader reads the copied configuration.
    """

    def __init__(self, root: str | os.PathLike, db_url: str | None = None):
        self.root = Path(root).resolve()
        self._db_url = db_url
        self.env: dict[str, str] = {}  # extra environment of the nbgrader runs (e.g. AUTOGRADER_CELL_TIMEOUT)
        #: put before every nbgrader command line (autograder.parallel's tasks run nbgrader through a
        #: wrapper that makes it die with the worker)
        self.command_prefix: list[str] = []
        #: the module run as nbgrader: :mod:`autograder.run_nbgrader` (pins, starts faster); the
        #: benchmark's stock configuration sets ``"nbgrader"``
        self.entry = RUN_NBGRADER
        #: whether :meth:`autograde_batch` claims a core for its nbgrader process and kernels
        #: (:mod:`autograder.cores`); ``None``: unless ``AUTOGRADER_PIN=0``
        self.pin: bool | None = None
        self._cpu: int | None = None  # the core claimed by the batch running now
        #: the core the last :meth:`autograde_batch` ran on (``None``: unpinned)
        self.last_cpu: int | None = None

    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        labs: Iterable[str],
        repo: str | os.PathLike | None = None,
        db_url: str | None = None,
    ) -> "Course":
        """Make a course at ``root`` from the repository's config and the source of ``labs``."""
        repo = course_root(repo)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / SCRATCH_MARKER).write_text("scratch nbgrader course made by the autograder; safe to delete\n")
        shutil.copy2(repo / CONFIG_FILE, root / CONFIG_FILE)
        ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")
        for lab in labs:
            _check_lab(lab, repo)
            shutil.copytree(repo / SOURCE_DIR / lab, root / SOURCE_DIR / lab, ignore=ignore, dirs_exist_ok=True)
        (root / GRADING_DIR).mkdir(exist_ok=True)
        return cls(root, db_url=db_url)

    @property
    def db_url(self) -> str:
        return self._db_url or "sqlite:///" + str(self.root / GRADING_DIR / "gradebook.db")

    def path(self, step: str, student: str, lab: str) -> Path:
        steps = {
            "release": Path(RELEASE_DIR),
            "submitted": Path(GRADING_DIR, "submitted"),
            "autograded": Path(GRADING_DIR, "autograded"),
        }
        if step == "release":
            return self.root / steps[step] / lab / f"{lab}.ipynb"
        return self.root / steps[step] / student / lab / f"{lab}.ipynb"

    def nbgrader_command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run ``nbgrader ARGS`` on this course."""
        cmd = [
            *self.command_prefix, sys.executable, "-m", self.entry, *args,
            f"--CourseDirectory.root={self.root}",
            f"--CourseDirectory.db_url={self.db_url}",
        ]
        env = dict(os.environ)
        env.pop("AUTOGRADER_GRADEBOOK_URL", None)  # scratch courses keep their own gradebook
        # nbgrader's Gradebook runs the `alembic` executable found on PATH: make it this environment's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(cores.pinned_env(self._cpu))
        env.update(self.env)
        return cmd, env

    def nbgrader(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``nbgrader ARGS`` on this course; with ``check``, raise :class:`GradingError` on failure."""
        cmd, env = self.nbgrader_command(*args)
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise GradingError(
                f"`nbgrader {' '.join(args)}` failed with exit status {proc.returncode} in {self.root}:\n"
                + _log_tail(proc.stdout + proc.stderr)
            )
        return proc

    def generate(self, lab: str) -> Path:
        """``nbgrader generate_assignment LAB``; returns the release notebook's path."""
        self.nbgrader("generate_assignment", lab, "--force")
        out = self.path("release", ".", lab)
        if not out.is_file():
            raise GradingError(f"nbgrader generate_assignment {lab} wrote no {out}")
        return out

    def submit(self, lab: str, student: str, notebook: str | os.PathLike) -> Path:
        dest = self.path("submitted", student, lab)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, dest)
        return dest

    def submit_notebook(self, lab: str, student: str, nb: nbformat.NotebookNode) -> Path:
        dest = self.path("submitted", student, lab)
        _write_notebook(nb, dest)
        return dest

    def autograde(self, lab: str, exclude: Iterable[str] = ()) -> subprocess.CompletedProcess:
        """One ``nbgrader autograde LAB --force`` call over every submission not in ``exclude``.

        nbgrader grades the submissions one after the other (sorted by path), logs those it
        cannot process and goes on, then exits with status 1. A submission whose nbgrader
        metadata has the wrong schema version, though, stops the whole batch. The exit
        status is returned, not raised; :meth:`autograde_batch` deals with both cases.
        """
        args = ["autograde", lab, "--force"]
        exclude = sorted(exclude)
        if exclude:
            args.append("--CourseDirectory.student_id_exclude=" + ",".join(exclude))
        return self.nbgrader(*args, check=False)

    def _fingerprint(self, lab: str, student: str) -> str:
        """What a grade depends on: the submitted notebook and the lab's source, hashed."""
        digest = hashlib.sha256()
        for path in (self.path("submitted", student, lab), self.root / SOURCE_DIR / lab / f"{lab}.ipynb"):
            digest.update(path.read_bytes() if path.is_file() else b"-")
        return digest.hexdigest()

    def is_graded(self, lab: str, student: str) -> bool:
        """True when the current submission of ``student`` was autograded to the end (see :meth:`autograde_batch`)."""
        marker = self.path("autograded", student, lab).parent / GRADED_MARKER
        try:
            return json.loads(marker.read_text()).get("fingerprint") == self._fingerprint(lab, student)
        except (OSError, ValueError):
            return False

    def _mark_graded(self, lab: str, student: str) -> None:
        marker = self.path("autograded", student, lab).parent / GRADED_MARKER
        tmp = marker.with_suffix(".part")
        tmp.write_text(json.dumps({"fingerprint": self._fingerprint(lab, student)}) + "\n")
        os.replace(tmp, marker)

    def batch_seconds(self, lab: str, students: Iterable[str], since: float) -> dict[str, float]:
        """Seconds per submission of one nbgrader batch that started at ``since`` (epoch seconds): the
        gaps between the autograded notebooks' write times (nbgrader grades the submissions one after
        the other and writes each notebook last), in the order they were written (the dict's order);
        the first gap, from ``since``, carries the nbgrader process's start-up. Students without an
        autograded notebook are left out."""
        written = sorted((path.stat().st_mtime, s) for s in students
                         if (path := self.path("autograded", s, lab)).is_file())
        out, last = {}, since
        for mtime, student in written:
            out[student] = mtime - last
            last = mtime
        return out

    def autograde_batch(self, lab: str, students: Iterable[str], resume: bool = False) -> dict[str, str]:
        """Autograde the submitted ``students`` of ``lab``; return ``{student: reason}`` for failures.

        Usually one nbgrader call. When nbgrader stops before the end of the batch, the
        submission it stopped at is marked failed with nbgrader's last error message and the
        rest are graded in a further call, so one bad submission never costs the others.

        Each submission graded to the end gets a marker (a hash of the submitted notebook and
        of the lab's source) beside its autograded notebook. With ``resume``, submissions whose
        marker matches are skipped: a batch killed half-way is finished by running it again,
        and running a finished batch again changes nothing. nbgrader saves a submission's grades
        (one commit per cell) after executing it, and grades submissions one after the other: a
        kill keeps the grades of the submissions before, and leaves the one it interrupted
        without a marker, so the next run grades that one again, completely.

        The batch claims a core of its own (:mod:`autograder.cores`, unless :attr:`pin` is False
        or ``AUTOGRADER_PIN=0``): its nbgrader processes and their kernels run on that CPU.
        """
        submitted_dir = self.root / GRADING_DIR / "submitted"
        everyone = {p.name for p in submitted_dir.iterdir() if p.is_dir()} if submitted_dir.is_dir() else set()
        # nbgrader's order: sorted submission directories
        remaining = sorted(students, key=lambda s: str(self.path("submitted", s, lab).parent))
        if resume:
            remaining = [s for s in remaining if not self.is_graded(lab, s)]
        errors: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            self._cpu = self.last_cpu = stack.enter_context(cores.claim_core(self.pin))
            stack.callback(setattr, self, "_cpu", None)
            self._autograde_remaining(lab, remaining, everyone, errors)
        return errors

    def _autograde_remaining(self, lab: str, remaining: list[str], everyone: set[str], errors: dict[str, str]) -> None:
        while remaining:
            for s in remaining:  # a notebook left from an earlier run must not pass for a result
                shutil.rmtree(self.path("autograded", s, lab).parent, ignore_errors=True)
            proc = self.autograde(lab, exclude=everyone - set(remaining))
            log = proc.stdout + proc.stderr
            done = [s for s in remaining if self.path("autograded", s, lab).is_file()]
            for s in done:
                self._mark_graded(lab, s)
            for s in remaining:
                if s not in done:
                    reason = _failure_reason(log, self.path("submitted", s, lab).parent)
                    if reason:
                        errors[s] = reason
            rest = [s for s in remaining if s not in done and s not in errors]
            if rest and proc.returncode == 0:
                for s in rest:
                    errors[s] = "nbgrader wrote no autograded notebook (see its log)"
                rest = []
            if rest and len(rest) == len(remaining):
                # nbgrader stopped at the first submission without naming it
                errors[rest[0]] = _last_error(log) or "nbgrader stopped at this submission (see its log)"
                rest = rest[1:]
            remaining = rest

    def export_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.nbgrader("export", f"--to={path}")
        return path

    def add_students(self, students: Iterable[str]) -> None:
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url, COURSE_ID) as gb:
            for student in students:
                gb.update_or_create_student(student)


def _failure_reason(log: str, submission_dir: Path) -> str | None:
    """The last line of the traceback nbgrader logged for ``submission_dir``."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "error processing assignment" in line and str(submission_dir) in line:
            block = []
            for nxt in lines[i + 1:]:
                if re.match(r"^\[\w+ \|", nxt) and "Traceback" not in nxt:
                    if block:
                        break
                    continue
                block.append(nxt.strip())
            block = [b for b in block if b]
            return block[-1] if block else None
    return None


def _last_error(log: str) -> str | None:
    """nbgrader's first error message after its last traceback-free ERROR header, on one line."""
    messages = []
    for line in log.splitlines():
        m = re.match(r"^\[\w+ \| ERROR\] (.*)$", line)
        if m:
            messages.append(m.group(1).strip())
        elif messages and line.strip() and not line.startswith("["):
            messages[-1] += " " + line.strip()
    messages = [m for m in messages if not m.startswith(("There was an error processing", "Please see"))]
    return messages[0] if messages else None


# ----------------------------------------------------------------------------
# Releases
# ----------------------------------------------------------------------------


def _generate_in_scratch(lab: str, repo: Path, scratch: Path) -> Path:
    course = Course.create(scratch, [lab], repo)
    return course.generate(lab)


def release(lab: str, repo: str | os.PathLike | None = None) -> Path:
    """Regenerate ``notebooks/LAB/`` from ``solutions/LAB/`` and return the release notebook's path.

    Runs ``nbgrader generate_assignment`` in a scratch course, normalises the notebook
    (:func:`normalise_notebook`, the source's ``language_info`` kept whole, as nbgrader writes it)
    and writes it, with any other file of the release, into the repository.
    """
    repo = course_root(repo)
    _check_lab(lab, repo)
    with tempfile.TemporaryDirectory(prefix=f"autograder-release-{lab}-") as tmp:
        generated = _generate_in_scratch(lab, repo, Path(tmp))
        out_dir = repo / RELEASE_DIR / lab
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(generated.parent.rglob("*")):
            if path.is_file():
                dest = out_dir / path.relative_to(generated.parent)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".ipynb":
                    generated_nb = nbformat.read(str(path), as_version=4)
                    released = normalise_notebook(generated_nb)
                    if "language_info" in generated_nb.metadata:
                        # as nbgrader writes it (the source's): `nbgrader generate_assignment --force`
                        # in the course then leaves the committed release as it is
                        released.metadata["language_info"] = generated_nb.metadata["language_info"]
                    _write_notebook(released, dest)
                else:
                    shutil.copyfile(path, dest)
    return release_path(lab, repo)


def check_release(labs: Iterable[str] | None = None, repo: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Problems with the committed releases: ``{lab: [problem, ...]}``, empty when all are current.

    Each lab is regenerated in a scratch course and compared, after normalisation, with
    ``notebooks/LAB/``: the release notebook and any other file nbgrader copies.
    """
    repo = course_root(repo)
    labs = discover_labs(repo) if labs is None else list(labs)
    problems: dict[str, list[str]] = {}
    for lab in labs:
        _check_lab(lab, repo)
        committed_dir = repo / RELEASE_DIR / lab
        with tempfile.TemporaryDirectory(prefix=f"autograder-check-{lab}-") as tmp:
            generated = _generate_in_scratch(lab, repo, Path(tmp))
            found = []
            gen_files = {p.relative_to(generated.parent) for p in generated.parent.rglob("*") if p.is_file()}
            com_files = (
                {p.relative_to(committed_dir) for p in committed_dir.rglob("*") if p.is_file()}
                if committed_dir.is_dir()
                else set()
            )
            for rel in sorted(gen_files):
                committed = committed_dir / rel
                if not committed.is_file():
                    found.append(f"{RELEASE_DIR}/{lab}/{rel} is missing")
                elif rel.suffix == ".ipynb":
                    try:
                        nb = nbformat.read(str(committed), as_version=4)
                    except Exception as err:  # unreadable committed release
                        found.append(f"{RELEASE_DIR}/{lab}/{rel} cannot be read: {err}")
                        continue
                    diffs = compare_notebooks(nbformat.read(str(generated.parent / rel), as_version=4), nb)
                    found += [f"{RELEASE_DIR}/{lab}/{rel}: {d}" for d in diffs]
                elif committed.read_bytes() != (generated.parent / rel).read_bytes():
                    found.append(f"{RELEASE_DIR}/{lab}/{rel} differs")
            for rel in sorted(com_files - gen_files):
                found.append(f"{RELEASE_DIR}/{lab}/{rel} is not part of the release")
        if found:
            problems[lab] = found
    return problems


# ----------------------------------------------------------------------------
# Submissions
# ----------------------------------------------------------------------------

_SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def fill_solutions(release_nb: nbformat.NotebookNode, source_nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A student's notebook made from the release with the source's solutions typed in.

    Each solution cell of the release (matched by nbgrader ``grade_id``) gets the source
    cell's code without the ``### BEGIN/END SOLUTION`` lines.
    """
    solutions = {}
    for cell in source_nb.cells:
        nbg = cell.get("metadata", {}).get("nbgrader", {})
        if nbg.get("solution"):
            lines = [line for line in cell.source.splitlines() if not _SOLUTION_MARKERS.match(line)]
            solutions[nbg["grade_id"]] = "\n".join(lines)
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in solutions:
            cell.source = solutions[grade_id]
    return nb


def _special(mode: int) -> str | None:
    """What a file of this mode is ("a symbolic link", ...) when it is neither a regular file nor a directory."""
    from autograder.sandbox.launcher import special_kind  # the standard library only

    kind = special_kind(mode)
    return f"a {kind}" if kind else None


def special_files(folder: str | os.PathLike, limit: int = 10000) -> list[str]:
    """``"relative/path (a symbolic link)"`` for what in ``folder`` is neither a regular file nor a
    directory, found without following any link. nbgrader copies a submission's other files into
    the graded folder as root and follows links when it does (a link to the gradebook would hand
    it to the student's kernel; a FIFO would block the batch), so a submission may hold none.
    A folder of more than ``limit`` entries is not searched to the end: it is reported as such
    (never passed as clean). No recursion: a tree of any depth is searched."""
    from autograder.sandbox.launcher import walk_plain  # the standard library only

    top = Path(folder)
    found: list[str] = []

    def unreadable(path, err):
        found.append(f"{Path(path).relative_to(top)} (unreadable: {err.strerror or err})")

    for seen, (entry, st) in enumerate(walk_plain(top, on_error=unreadable), start=1):
        if seen > limit:
            return found + [f"more than {limit} entries (not searched to the end)"]
        what = _special(st.st_mode)
        if what:
            found.append(f"{Path(entry.path).relative_to(top)} ({what})")
    return found


def validate_submission(path: str | os.PathLike) -> str | None:
    """``None`` for a notebook nbgrader can grade, else a one-line reason.

    The notebook must be a regular file, and its folder (what nbgrader copies beside it) may hold
    regular files and folders only: no symbolic link, FIFO, socket or device."""
    path = Path(path)
    try:
        what = _special(path.lstat().st_mode)
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"
    if what:
        return f"{path.name} is {what}, not a file: a submission holds regular files and folders only"
    others = special_files(path.parent)
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        return (f"the submission's folder holds {others[0]}{more}: a submission holds regular files and folders "
                "only (the grader copies them and never follows a link)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"
    if not raw.strip():
        return "empty file"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        return f"not a notebook: not UTF-8 text ({err.reason} at byte {err.start})"
    except json.JSONDecodeError as err:
        return f"not a notebook: invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    if not isinstance(data, dict) or "nbformat" not in data:
        return "not a notebook: the JSON has no 'nbformat' field"
    version = data.get("nbformat")
    if version not in (3, 4):
        return f"unsupported notebook format: nbformat {version!r} (expected 4)"
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"invalid notebook (nbformat {version}): {message}"
    # nbgrader stops a whole autograde batch at a cell whose nbgrader metadata has another
    # schema version, so such a submission is refused here.
    from nbgrader.nbgraderformat import SCHEMA_VERSION

    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        if not isinstance(meta, dict):
            return f"cell {index}: nbgrader metadata is not a mapping"
        schema = meta.get("schema_version", 0)
        if schema != SCHEMA_VERSION:
            return (
                f"{_cell_label(cell, index)}: nbgrader metadata schema version {schema}, expected "
                f"{SCHEMA_VERSION} (was the notebook edited with another nbgrader version?)"
            )
    return None


def find_submissions(directory: str | os.PathLike, labs: Iterable[str]) -> dict[str, dict[str, Path]]:
    """``{lab: {student: path}}`` for every ``directory/<lab>/<student>/<lab>.ipynb``."""
    directory = Path(directory)
    found: dict[str, dict[str, Path]] = {}
    for lab in labs:
        lab_dir = directory / lab
        if not lab_dir.is_dir():
            continue
        for student_dir in sorted(p for p in lab_dir.iterdir() if p.is_dir()):
            nb = student_dir / f"{lab}.ipynb"
            if nb.exists():
                found.setdefault(lab, {})[student_dir.name] = nb
    return found


# ----------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------


def exercise_of(grade_id: str) -> str:
    """The exercise a graded cell belongs to: its ``grade_id`` up to the first underscore."""
    return grade_id.split("_", 1)[0]


def exercise_order(exercise: str) -> tuple[int, str]:
    """Sort key of an exercise (:func:`exercise_of`): by its number, ``ex2`` before ``ex10``; one without a number last."""
    digits = re.sub(r"\D", "", exercise)
    return (int(digits) if digits else 1 << 30, exercise)


@dataclass
class SubmissionResult:
    """What happened to one submission: its scores, or why it could not be graded."""

    lab: str
    student: str
    score: float = 0.0
    max_score: float = 0.0
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    error: str | None = None

    @property
    def exercises(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for grade_id, (score, max_score) in self.cells.items():
            s, m = out.get(exercise_of(grade_id), (0.0, 0.0))
            out[exercise_of(grade_id)] = (s + score, m + max_score)
        return out


def read_scores(db_url: str, course_id: str = COURSE_ID) -> dict[tuple[str, str], SubmissionResult]:
    """Every submission in the gradebook: ``{(lab, student): SubmissionResult}``."""
    from nbgrader.api import Gradebook

    results = {}
    with Gradebook(db_url, course_id) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                cells = {}
                for notebook in sub.notebooks:
                    for grade in notebook.grades:
                        cells[grade.name] = (float(grade.score or 0.0), float(grade.max_score or 0.0))
                results[(assignment.name, sub.student.id)] = SubmissionResult(
                    lab=assignment.name,
                    student=sub.student.id,
                    score=float(sub.score or 0.0),
                    max_score=float(sub.max_score or 0.0),
                    cells=cells,
                )
    return results


def _fmt(x: float) -> str:
    return f"{x:g}"


def format_table(results: Sequence[SubmissionResult]) -> str:
    """A plain-text table: one row per submission, one column per exercise."""
    lines = []
    labs = sorted({r.lab for r in results})
    for lab in labs:
        rows = sorted((r for r in results if r.lab == lab), key=lambda r: r.student)
        exercises: dict[str, float] = {}
        for r in rows:
            for ex, (_, m) in r.exercises.items():
                exercises[ex] = max(exercises.get(ex, 0.0), m)
        max_total = max((r.max_score for r in rows), default=0.0)
        width = max([len("student")] + [len(r.student) for r in rows])
        header = f"{'student':<{width}}  " + "  ".join(f"{ex + '/' + _fmt(m):>7}" for ex, m in exercises.items())
        header += f"  {'total':>7}  status"
        lines += [f"{lab} ({len(rows)} submissions, {_fmt(max_total)} points)", header, "-" * len(header)]
        for r in rows:
            if r.error:
                cols = "  ".join(f"{'-':>7}" for _ in exercises)
                lines.append(f"{r.student:<{width}}  {cols}  {'-':>7}  ERROR: {r.error}")
            else:
                ex = r.exercises
                cols = "  ".join(f"{_fmt(ex.get(e, (0.0, 0.0))[0]):>7}" for e in exercises)
                lines.append(f"{r.student:<{width}}  {cols}  {_fmt(r.score) + '/' + _fmt(r.max_score):>7}  graded")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Autograding a course
# ----------------------------------------------------------------------------


def lab_keys(nb) -> set[str]:
    """What identifies a lab's cells: each nbgrader cell's ``grade_id`` with the release's checksum."""
    keys = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str):
            keys.add(f"{meta['grade_id']}:{meta.get('checksum', '')}")
    return keys


def release_keys(course) -> dict[str, set[str]]:
    """``{lab: keys}`` for every lab released in the course (``notebooks/LAB/LAB.ipynb``)."""
    keys = {}
    release_dir = course.root / RELEASE_DIR
    for path in sorted(release_dir.iterdir()) if release_dir.is_dir() else []:
        notebook = path / f"{path.name}.ipynb"
        if LAB_PATTERN.match(path.name) and notebook.is_file():
            try:
                keys[path.name] = lab_keys(nbformat.read(str(notebook), as_version=4))
            except Exception:  # an unreadable release identifies nothing
                continue
    return keys


def other_lab(path: Path, lab: str, releases: dict[str, set[str]]) -> str | None:
    """A one-line reason when the notebook at ``path`` is another lab's, else ``None``.

    Like :class:`RestoreCells`, which matches cells by ``grade_id``, a notebook belongs to the
    lab whose cells it carries: its nbgrader cells (``grade_id`` and checksum, which the student
    does not edit) are counted against every release; a notebook with more cells of another lab
    than of this one is refused. Cells without nbgrader metadata count for no lab.
    """
    keys = lab_keys(nbformat.read(str(path), as_version=4))
    mine = len(keys & releases.get(lab, set()))
    best, best_n = None, mine
    for other, other_keys in sorted(releases.items()):
        n = len(keys & other_keys)
        if other != lab and n > best_n:
            best, best_n = other, n
    if best is None:
        return None
    return (f"the notebook is {best}, not {lab}: {best_n} of its {len(keys)} nbgrader cells are "
            f"{best}'s, {mine} are {lab}'s")


def autograde_course(course: Course, lab: str, resume: bool = True, out=print) -> list[SubmissionResult]:
    """Autograde every ``_grading/submitted/<student>/LAB/LAB.ipynb`` of ``course``.

    A submission that is not a gradable notebook is reported (and scores 0), the others are
    graded regardless. With ``resume`` (the default) submissions graded before are skipped
    (:meth:`Course.autograde_batch`), so an interrupted run is finished by running it again.
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(course.db_url, COURSE_ID) as gb:
        try:
            gb.find_assignment(lab)
        except MissingEntry:
            raise GradingError(
                f"the gradebook {course.db_url} has no assignment {lab}: run `nbgrader generate_assignment {lab}` "
                f"in {course.root} first"
            ) from None
    submitted = course.root / GRADING_DIR / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / lab / f"{lab}.ipynb").exists()) if submitted.is_dir() else []
    errors = {}
    releases = release_keys(course)
    for student in students:
        path = course.path("submitted", student, lab)
        reason = validate_submission(path) or other_lab(path, lab, releases)
        if reason:
            errors[student] = reason
    todo = [s for s in students if s not in errors]
    skipped = [s for s in todo if resume and course.is_graded(lab, s)]
    out(f"{lab}: {len(todo) - len(skipped)} submission(s) to autograde, {len(skipped)} already graded, {len(errors)} refused")
    errors.update(course.autograde_batch(lab, todo, resume=resume))
    if errors:
        course.add_students(errors)  # listed in the CSV, with 0 points
    scores = read_scores(course.db_url)
    results = []
    for student in students:
        if student in errors:
            results.append(SubmissionResult(lab, student, error=errors[student]))
        else:
            results.append(scores[(lab, student)])
    return results


# ----------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------


def _fresh_root(root: Path, repo: Path | None = None) -> Path:
    """``root``, emptied if an earlier demo made it; refuse anything that holds the releases."""
    root = root.resolve()
    repo_release = (course_root(repo) / RELEASE_DIR).resolve()
    if repo_release in (root, *root.parents) or root in repo_release.parents:
        raise GradingError(f"refusing to use {root} as a scratch course: it holds {repo_release}")
    if root.exists():
        if (root / SCRATCH_MARKER).is_file():
            shutil.rmtree(root)
        elif any(root.iterdir()):
            raise GradingError(
                f"{root} exists, is not empty and was not made by `python -m autograder demo`; "
                "choose another --root or remove it"
            )
    return root


def demo(
    root: str | os.PathLike | None = None,
    submissions: str | os.PathLike | None = None,
    labs: Iterable[str] | None = None,
    repo: str | os.PathLike | None = None,
    out=print,
) -> tuple[list[SubmissionResult], Path]:
    """Generate, autograde and export in a fresh scratch course; return the results and the CSV path.

    ``root`` (default ``_grading/demo``) is wiped and rebuilt if a previous demo made it.
    Submissions are ``SUBMISSIONS/<lab>/<student>/<lab>.ipynb`` (default: the course's
    ``c.Autograder.submissions_dir``). A submission that is not a readable notebook is reported with the
    reason and scores 0; the others are graded regardless (:func:`autograde_course`, one
    ``nbgrader autograde`` call per lab).
    """
    repo = course_root(repo)
    root = _fresh_root(Path(root) if root is not None else repo / GRADING_DIR / "demo", repo)
    if submissions is None:
        submissions = course_settings(repo)["submissions_dir"]
        if submissions is None:
            raise GradingError(f"no submissions given and no c.Autograder.submissions_dir in {repo / CONFIG_FILE}")
    submissions = Path(submissions)
    labs = discover_labs(repo) if labs is None else list(labs)
    course = Course.create(root, labs, repo)
    out(f"scratch course: {course.root}")
    found = find_submissions(submissions, labs)
    results: list[SubmissionResult] = []
    for lab in labs:
        course.generate(lab)
        out(f"{lab}: generated the release {course.path('release', '.', lab)}")
        subs = found.get(lab, {})
        for student, path in subs.items():
            course.submit(lab, student, path)
        if not subs:
            continue
        for result in autograde_course(course, lab, resume=False, out=out):
            results.append(result)
            if result.error:
                out(f"{lab}: submission {subs[result.student]} could not be graded: {result.error}")
    csv_path = course.export_csv(course.root / GRADING_DIR / "grades.csv")
    out("")
    out(format_table(results))
    out(f"CSV: {csv_path}")
    return results, csv_path
