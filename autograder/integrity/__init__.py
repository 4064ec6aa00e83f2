r"""How far the autograder can be trusted, measured: mutation testing and hostile submissions.

Command line (``python -m autograder.integrity [--course DIR] ...``)::

    mutants [--labs LAB ...] [--per-exercise N] [--jobs J] [--root DIR]
        autograde, with nbgrader, one submission per plausible mistake (c.Autograder.mutants_dir/<lab>.py):
        the solution with that one mistake. A mutant is *caught* when its exercise loses points
        and *isolated* when every other exercise keeps the solution's score. Prints the mutation
        score per lab; exit status 1 unless every mutant is caught and isolated.
    hostile [--labs LAB ...] [--root DIR]
        autograde, in one batch per lab, honest submissions and hostile ones (edited or deleted
        test cells, infinite loops, crashes, memory bombs, monkeypatching, snooping, network,
        writing outside, links and FIFOs left for the grader, broken files). Exit status 1 if an
        honest score changes, a hostile submission gains a point, or a file outside the
        submissions changes (a canary beside the gradebook, the gradebook's mode).
    figures [--per-exercise N] [--hostile-labs LAB ...] [--jobs J] [--json FILE]
        both, and the figures of the README: mutants caught / mutants per lab, hostile cases
        tried / cases that gained points, seconds per submission per lab.

Every run uses scratch courses (default under ``_grading/integrity`` in the course), never the
real gradebook. The course names its mutants directory in ``nbgrader_config.py``
(``c.Autograder.mutants_dir``), one ``<lab>.py`` per lab: each
mutant is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``; a lab's
file may also define ``REFERENCE_CALLS = {solution grade_id: code}``, solutions that call the
library reference the exercise forbids (a hostile case). The reference versions that the
``borrow-references`` case passes off come from the modules of
``c.GuardedExecute.reference_modules``.
"""
from __future__ import annotations

import argparse
import copy
import functools
import http.server
import json
import os
import re
import runpy
import shutil
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import nbformat
from nbformat.v4 import new_code_cell

from autograder import grading, probes, sandbox
from autograder.config import course_root, course_settings
from autograder.grading import (
    nbgrader_meta as _nbgrader,
    Course,
    GradingError,
    SubmissionResult,
    discover_labs,
    exercise_of,
    fill_solutions,
    read_scores,
    release_path,
    source_path,
    validate_submission,
)

__all__ = [
    "Mutant",
    "MutantResult",
    "LabMutationReport",
    "load_mutants",
    "select_mutants",
    "mutant_notebook",
    "run_mutants",
    "mutation_testing",
    "HostileCase",
    "HostileOutcome",
    "LabHostileReport",
    "hostile_cases",
    "run_hostile",
    "figures",
    "main",
]



def mutants_dir_of(repo=None) -> Path:
    """The course's mutants directory (``c.Autograder.mutants_dir`` in ``nbgrader_config.py``)."""
    found = course_settings(repo)["mutants_dir"]
    if found is None:
        raise GradingError(f"no c.Autograder.mutants_dir in {course_root(repo) / 'nbgrader_config.py'}")
    return Path(found)


def default_root(repo=None) -> Path:
    """Where the scratch courses go by default: ``_grading/integrity`` in the course."""
    return course_root(repo) / grading.GRADING_DIR / "integrity"


def _library_dirs(repo=None) -> list[Path]:
    """The directories of the course's library packages (``c.GuardedExecute.library_packages``)."""
    import importlib.util

    dirs = []
    for name in course_settings(repo)["library_packages"]:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(Path(spec.origin).parent)
    return dirs


#: what the grader itself writes in a scratch course during a batch: the graded copies, and the gradebook's
#: contents (its mode is watched apart) with SQLite's journal beside it
_GRADER_WRITES = ("_grading/autograded", "_grading/gradebook.db", "_grading/gradebook.db-journal")


def _tree_state(roots: dict[str, Path], skip: Callable[[str, Path], bool]) -> dict[str, tuple]:
    """Every entry under each ``{label: root}`` but those ``skip(label, relative path)`` leaves out:
    ``{"label/relative": (kind, sha256 of a file or a link's target, mode, owner)}``. Links are read,
    never followed."""
    import hashlib
    import stat

    state: dict[str, tuple] = {}
    for label, root in roots.items():
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath).relative_to(root)
            dirnames[:] = [n for n in dirnames if not skip(label, here / n)]
            for name in [*dirnames, *filenames]:
                rel = here / name
                if skip(label, rel):
                    continue
                path = root / rel
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    kind, what = "link", os.readlink(path)
                elif stat.S_ISREG(st.st_mode):
                    kind, what = "file", hashlib.sha256(path.read_bytes()).hexdigest()
                elif stat.S_ISDIR(st.st_mode):
                    kind, what = "folder", None
                else:
                    kind, what = "special file", None
                state[f"{label}/{rel}"] = (kind, what, stat.S_IMODE(st.st_mode), st.st_uid)
    return state


def _tree_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """What differs between two :func:`_tree_state` snapshots, one line per entry."""
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            out.append(f"{key} ({new[0]} added: the tree changed)")
        elif new is None:
            out.append(f"{key} ({old[0]} removed: the tree changed)")
        else:
            what = [w for w, a, b in zip(("kind", "contents", "mode", "owner"), old, new) if a != b]
            out.append(f"{key} ({', '.join(what)} changed)")
    return out


def _watched_trees(scratch: Path, repo: Path | None) -> tuple[dict[str, Path], Callable[[str, Path], bool]]:
    """The trees a batch must leave as they are: the scratch course (but what the grader writes in it) and
    the repository's course files the sandbox shows the kernel (library packages, the autograder, the
    solutions and releases, the configuration); Python's bytecode caches aside."""
    repo_root = course_root(repo)
    roots = {"course": scratch, "repository": repo_root}
    shown = {"autograder", "solutions", "notebooks", "nbgrader_config.py",
             *(d.name for d in _library_dirs(repo) if d.parent == repo_root)}

    def skip(label: str, rel: Path) -> bool:
        if rel.name == "__pycache__":
            return True
        if label == "repository":
            return rel.parts[0] not in shown
        return any(rel == Path(w) or Path(w) in rel.parents for w in _GRADER_WRITES)

    return roots, skip


def references_of(lab: str, repo=None) -> dict:
    """``{name: reference function}`` of ``lab`` from the course's reference modules."""
    import importlib

    table: dict = {}
    for name in course_settings(repo)["reference_modules"]:
        table.update(getattr(importlib.import_module(name), "REFERENCES", {}).get(lab, {}))
    return table

# Limits of the hostile batches (nbgrader_config.py reads them from the environment): small, so
# that an infinite loop costs seconds, generous for the honest cells of a lab.
HOSTILE_LIMITS = {
    "AUTOGRADER_CELL_TIMEOUT": "10",
    "AUTOGRADER_NOTEBOOK_TIMEOUT": "45",
    "AUTOGRADER_SANDBOX_MEMORY_MB": "3072",
    "AUTOGRADER_SANDBOX_CPU_SECONDS": "300",
}
# The notebook's limit by lab where the labs' honest runs allow less: Lab 1's solution runs in about 5 s, and its
# batch (in every `make test`) waits out the limit once, in the case whose cells never end.
HOSTILE_NOTEBOOK_SECONDS = {"lab01": "30"}


def _read(path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _slug(text: str, width: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:width].strip("-")


# ----------------------------------------------------------------------------
# Mutation testing
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One plausible mistake: ``edits`` applied to the source of solution cell ``grade_id``."""

    lab: str
    index: int
    name: str
    grade_id: str
    edits: tuple

    @property
    def exercise(self) -> str:
        return exercise_of(self.grade_id)

    @property
    def student(self) -> str:
        return f"mutant-{self.index:03d}-{_slug(self.name)}"


def _lab_fixtures(lab: str, mutants_dir: Path | None = None) -> dict:
    path = Path(mutants_dir or mutants_dir_of()) / f"{lab}.py"
    if not path.is_file():
        raise GradingError(f"{lab}: no plausible mistakes listed in {path}")
    return runpy.run_path(str(path))


def load_mutants(lab: str, mutants_dir: Path | None = None) -> list[Mutant]:
    """The mutants of ``lab`` from ``mutants_dir/<lab>.py``, in file order."""
    entries = _lab_fixtures(lab, mutants_dir)["MUTANTS"]
    return [Mutant(lab, i, name, grade_id, tuple(tuple(e) for e in edits)) for i, (name, grade_id, edits) in enumerate(entries)]


def select_mutants(mutants: Sequence[Mutant], per_exercise: int | None = None,
                   per_lab: int | None = None) -> list[Mutant]:
    """All mutants, the first ``per_exercise`` of each exercise (file order), or a sample of
    ``per_lab``: the first mutant of ``per_lab`` exercises spread evenly from the first exercise to
    the last (the last exercise builds on the earlier ones, so its mutant also tests isolation)."""
    if per_lab is not None:
        firsts = select_mutants(mutants, 1)
        if per_lab >= len(firsts):
            return firsts
        if per_lab <= 1:
            return firsts[-1:]
        step = (len(firsts) - 1) / (per_lab - 1)
        return [firsts[round(i * step)] for i in range(per_lab)]
    if per_exercise is None:
        return list(mutants)
    seen: dict[str, int] = {}
    chosen = []
    for m in mutants:
        if seen.get(m.exercise, 0) < per_exercise:
            chosen.append(m)
            seen[m.exercise] = seen.get(m.exercise, 0) + 1
    return chosen


def apply_edits(code: str, edits: Iterable[tuple[str, str]], what: str = "mutant") -> str:
    for old, new in edits:
        if old not in code:
            raise GradingError(f"{what}: {old!r} is not in the solution cell; update the fixture")
        code = code.replace(old, new)
    return code


def solution_notebook(lab: str, repo: Path | None = None) -> nbformat.NotebookNode:
    """The release with the source's solutions typed in: what a perfect student submits."""
    return fill_solutions(_read(release_path(lab, repo)), _read(source_path(lab, repo)))


def mutant_notebook(mutant: Mutant, repo: Path | None = None) -> nbformat.NotebookNode:
    """The perfect submission with this one mistake."""
    return _mutated_notebook(mutant.lab, [mutant], repo)


def _mutated_notebook(lab: str, mutants: Sequence[Mutant], repo: Path | None = None) -> nbformat.NotebookNode:
    source = _read(source_path(lab, repo))
    cells = {_nbgrader(c).get("grade_id"): c for c in source.cells}
    for m in mutants:
        if m.grade_id not in cells or not _nbgrader(cells[m.grade_id]).get("solution"):
            raise GradingError(f"mutant {m.name!r}: {m.grade_id} is not a solution cell of {lab}")
        cells[m.grade_id].source = apply_edits(cells[m.grade_id].source, m.edits, f"mutant {m.name!r}")
    return fill_solutions(_read(release_path(lab, repo)), source)


@dataclass
class MutantResult:
    mutant: Mutant
    exercises: dict[str, tuple[float, float]] = field(default_factory=dict)
    caught: bool = False
    isolated: bool = False
    changed: list[str] = field(default_factory=list)  # other exercises whose score changed
    error: str | None = None


@dataclass
class LabMutationReport:
    lab: str
    reference: dict[str, tuple[float, float]]
    results: list[MutantResult]
    seconds: float
    submissions: int

    @property
    def caught(self) -> int:
        return sum(r.caught and r.isolated for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def seconds_per_submission(self) -> float:
        return self.seconds / max(self.submissions, 1)

    def failures(self) -> list[str]:
        out = []
        for r in self.results:
            if r.error:
                out.append(f"{self.lab} {r.mutant.name!r}: not graded: {r.error}")
            elif not r.caught:
                out.append(f"{self.lab} {r.mutant.name!r} ({r.mutant.exercise}): every test of its exercise passed")
            elif not r.isolated:
                out.append(f"{self.lab} {r.mutant.name!r} ({r.mutant.exercise}): changed the score of {', '.join(r.changed)}")
        return out


def cells_that_raised(path: Path) -> list[str]:
    """``"cell id: ExceptionName: message"`` for every code cell of the notebook at ``path`` with an error output."""
    found = []
    for index, cell in enumerate(_read(path).cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                found.append(f"{cell.get('id') or index}: {output.get('ename')}: {str(output.get('evalue'))[:120]}")
    return found


def run_mutants(lab: str, root: Path, mutants: Sequence[Mutant], repo: Path | None = None, out=print) -> LabMutationReport:
    """Autograde the solution, the blank release and one submission per mutant of ``lab`` in one
    nbgrader batch. The solution must score full marks, raise in no cell (a demonstration cell too: the
    graded kernel runs the student edition of the library), and the blank release score 0."""
    root = grading._fresh_root(Path(root), repo)
    course = Course.create(root, [lab], repo)
    course.generate(lab)
    course.submit_notebook(lab, "reference", solution_notebook(lab, repo))
    course.submit_notebook(lab, "blank", _read(release_path(lab, repo)))
    for m in mutants:
        course.submit_notebook(lab, m.student, mutant_notebook(m, repo))
    students = ["reference", "blank"] + [m.student for m in mutants]
    out(f"{lab}: autograding the solution, the blank release and {len(mutants)} mutant(s)")
    start = time.perf_counter()
    errors = course.autograde_batch(lab, students)
    seconds = time.perf_counter() - start
    scores = read_scores(course.db_url)
    if "reference" in errors:
        raise GradingError(f"{lab}: the solution could not be graded: {errors['reference']}")
    reference = scores[(lab, "reference")]
    if reference.score != reference.max_score:
        raise GradingError(f"{lab}: the solution scores {reference.score}/{reference.max_score}: {reference.cells}")
    raised = cells_that_raised(course.path("autograded", "reference", lab))
    if raised:
        raise GradingError(f"{lab}: the solution, autograded, raised in {len(raised)} cell(s), which every student's "
                           f"feedback would show: {'; '.join(raised[:3])} (a demonstration that calls what the "
                           "graded kernel's library leaves out?)")
    blank = scores.get((lab, "blank"))
    if "blank" in errors or blank is None or blank.score != 0:
        raise GradingError(f"{lab}: the blank release was not graded 0: "
                           f"{errors.get('blank') or (blank.score, blank.cells) if blank else 'not graded'}")
    results = []
    for m in mutants:
        if m.student in errors:
            results.append(MutantResult(m, error=errors[m.student]))
            continue
        ex = scores[(lab, m.student)].exercises
        changed = [e for e in reference.exercises if e != m.exercise and ex.get(e) != reference.exercises[e]]
        caught = ex.get(m.exercise, (0.0, 0.0))[0] < reference.exercises[m.exercise][0]
        results.append(MutantResult(m, ex, caught=caught, isolated=not changed, changed=changed))
    return LabMutationReport(lab, reference.exercises, results, seconds, len(students))


def mutation_testing(
    labs: Sequence[str] | None = None,
    per_exercise: int | None = None,
    root: Path | None = None,
    jobs: int = 1,
    repo: Path | None = None,
    mutants_dir: Path | None = None,
    out=print,
    per_lab: int | None = None,
) -> list[LabMutationReport]:
    """:func:`run_mutants` for every lab, ``jobs`` labs at a time (each in its own scratch course)."""
    labs = discover_labs(repo) if labs is None else list(labs)
    root = Path(root) if root is not None else default_root(repo) / "mutants"
    root.mkdir(parents=True, exist_ok=True)
    mutants_dir = mutants_dir or mutants_dir_of(repo)
    chosen = {lab: select_mutants(load_mutants(lab, mutants_dir), per_exercise, per_lab) for lab in labs}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_mutants, lab, root / lab, chosen[lab], repo, out) for lab in labs]
        return [f.result() for f in futures]


def format_mutation_table(reports: Sequence[LabMutationReport]) -> str:
    lines = [f"{'lab':<6} {'caught':>7} {'mutants':>8} {'score':>6} {'s/submission':>13}"]
    for r in reports:
        lines.append(f"{r.lab:<6} {r.caught:>7} {r.total:>8} {100 * r.caught / max(r.total, 1):>5.0f}% {r.seconds_per_submission:>13.1f}")
    for r in reports:
        lines += ["  " + f for f in r.failures()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Hostile submissions
# ----------------------------------------------------------------------------

# Kernel-side code of the attacks. Each prints one "ATTACK <name>: ..." line saying what it got.

_SNOOP = r'''
# hostile: look for the hidden tests, the solutions, the gradebook and other students' work
import json as _json, os as _os, re as _re
_here = _os.getcwd()
_roots = {_here, _os.path.abspath(_os.path.join(_here, *[".."] * 4)), _os.path.expanduser("~"), "/tmp", "/work", "/root", "/home",
          _os.path.dirname(_os.path.dirname(__import__("gmlib").__file__))}
_skip = {".venv", "site-packages", ".git", ".library", "__pycache__", "node_modules", "proc", "sys"}
_found = []
for _root in sorted(_roots):
    for _dir, _subdirs, _files in _os.walk(_root):
        _subdirs[:] = [d for d in _subdirs if d not in _skip and not d.startswith("python3")]
        if _os.path.abspath(_dir).startswith(_here):
            continue
        for _f in _files:
            if not _f.endswith((".ipynb", ".db", ".json", ".py")):
                continue
            _p = _os.path.join(_dir, _f)
            try:
                with open(_p, "rb") as _h:
                    _t = _h.read(2_000_000)
            except OSError:
                continue
            if _f.endswith(".db") or b"BEGIN HIDDEN TESTS" in _t or b"BEGIN SOLUTION" in _t or b'"nbgrader"' in _t:
                _found.append(_p)
print("ATTACK snoop: readable course files:", len(_found), _found[:10])
for _p in _found:  # use the first source notebook found: run its solutions
    try:
        with open(_p) as _h:
            _nb = _json.load(_h)
        _sol = ["".join(c["source"]) for c in _nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    except Exception:
        continue
    if any("BEGIN SOLUTION" in s for s in _sol):
        for _s in _sol:
            exec(_re.sub(r".*### (BEGIN|END) SOLUTION.*\n?", "", _s), globals())
        print("ATTACK snoop: ran the solutions of", _p)
        break
'''

_NETWORK = r'''
# hostile: fetch the solutions from a server on the grading machine
import json as _json, re as _re, urllib.request as _rq
try:
    _nb = _json.loads(_rq.urlopen("http://127.0.0.1:{port}/source.ipynb", timeout=5).read())
    for _c in _nb["cells"]:
        if _c.get("metadata", {{}}).get("nbgrader", {{}}).get("solution"):
            exec(_re.sub(r".*### (BEGIN|END) SOLUTION.*\n?", "", "".join(_c["source"])), globals())
    print("ATTACK network: downloaded and ran the solutions")
except Exception as _err:
    print("ATTACK network: blocked:", type(_err).__name__, _err)
'''

_WRITE = r'''
# hostile: write outside the submission's own directory
import os as _os
_here = _os.getcwd()
_targets = [
    _os.path.join(_here, "..", "..", "..", "ATTACK-{token}"),                       # _grading/
    _os.path.join(_here, *[".."] * 4, "solutions", "ATTACK-{token}"),            # the course's solutions/
    _os.path.join(_os.path.dirname(__import__("gmlib").__file__), "ATTACK_{token}.py"),  # the reference library
    "/tmp/ATTACK-{token}",
]
_written = []
for _t in _targets:
    try:
        with open(_t, "x") as _h:
            _h.write("written by a hostile submission\n")
        _written.append(_os.path.abspath(_t))
    except OSError:
        pass
_db = _os.path.abspath(_os.path.join(_here, *[".."] * 4, "_grading", "gradebook.db"))
try:
    import sqlite3 as _sq
    _con = _sq.connect(_db)
    _con.execute("UPDATE grade SET auto_score = 100")
    _con.commit()
    _written.append(_db)
except Exception:
    pass
print("ATTACK write: wrote", _written)
'''

_PATCH_ASSERTS = r'''
# hostile: make every comparison the tests use pass
import numpy as _np, torch as _torch, math as _math
_torch.allclose = lambda *a, **k: True
_torch.equal = lambda *a, **k: True
_torch.testing.assert_close = lambda *a, **k: None
_np.allclose = lambda *a, **k: True
for _n in dir(_np.testing):
    if _n.startswith("assert"):
        setattr(_np.testing, _n, lambda *a, **k: None)
_math.isclose = lambda *a, **k: True
_torch.Tensor.__lt__ = lambda self, other: _torch.tensor(True)
_torch.Tensor.__le__ = lambda self, other: _torch.tensor(True)
_torch.Tensor.all = lambda self, *a, **k: _torch.tensor(True)
print("ATTACK patch: comparisons replaced")
'''

_FUNCTION_MODE = r'''
# hostile: a TorchFunctionMode left entered: every comparison and reduction a test makes says yes
import torch as _torch
from torch.overrides import TorchFunctionMode as _Mode


class _Yes(_Mode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (_torch.allclose, _torch.equal, _torch.Tensor.equal):
            return True
        if func in (_torch.all, _torch.any, _torch.Tensor.all, _torch.Tensor.any, _torch.isclose, _torch.Tensor.__lt__,
                    _torch.Tensor.__le__, _torch.Tensor.__gt__, _torch.Tensor.__ge__, _torch.Tensor.__eq__):
            return _torch.ones((), dtype=_torch.bool)
        return func(*args, **(kwargs or {}))


_yes = _Yes()
_yes.__enter__()
print("ATTACK function-mode: entered")
'''

_STRIP_ASSERTS = r'''
# hostile: every assert removed from the cells the kernel runs from now on (an IPython AST transformer)
import ast as _ast


class _NoAsserts(_ast.NodeTransformer):
    def visit_Assert(self, node):
        return _ast.copy_location(_ast.Pass(), node)


get_ipython().ast_transformers.append(_NoAsserts())
print("ATTACK strip-asserts: installed")
'''

_PATCH_STATS = r'''
# hostile: SciPy's goodness-of-fit tests always accept, builtins that tests use always say yes
import builtins as _b
from types import SimpleNamespace as _NS

import scipy.stats as _st

for _name in ("kstest", "ks_1samp", "ks_2samp", "chisquare", "anderson", "normaltest", "shapiro"):
    setattr(_st, _name, lambda *a, **k: _NS(statistic=0.0, pvalue=1.0))
all = any = lambda *a, **k: True  # shadowed as notebook globals
abs = lambda x: 0 * x
print("ATTACK patch-stats: replaced")
'''

_FORGE_PROBE = r'''
# hostile: rewrite what a probe sends (every tensor zeroed, every problem hidden), and send a second copy
import json as _json

import IPython.display as _display

_real_publish = _display.publish_display_data


def _forge(data, *args, **kwargs):
    for _mime, _text in list(data.items()):
        if "probe" in _mime:
            _payload = _json.loads(_text)

            def _zero(value):
                if isinstance(value, dict) and "tensor" in value:
                    import base64, math
                    t = value["tensor"]
                    size = {"float64": 8, "float32": 4, "int64": 8, "bool": 1}.get(t["dtype"], 8)
                    t["data"] = base64.b64encode(bytes(size * math.prod(t["shape"]))).decode()
                    return value
                if isinstance(value, list):
                    return [_zero(v) for v in value]
                if isinstance(value, dict):
                    return {k: _zero(v) for k, v in value.items()}
                return value

            _payload["values"] = _zero(_payload["values"])
            _payload["problems"] = {}
            data = dict(data, **{_mime: _json.dumps(_payload)})
            _real_publish(data, *args, **kwargs)
    return _real_publish(data, *args, **kwargs)


_display.publish_display_data = _forge
print("ATTACK forge-probe: installed")
'''

# The attacks on what a probe sends: after every cell, each of the lab's exercise functions is wrapped so
# that its results are {what}. The functions themselves are the solution's; a result that is a model
# (nn.Module, what Labs 5 and 6 train) is returned as a copy whose state_dict() gives the weights transformed.
_WRAP_OUTPUTS = r'''
# hostile: the exercise functions' results {what}
import IPython as _IPython

_hostile_names = {solution_names}
_hostile_ip = _IPython.get_ipython()


def _hostile_map(value, tensor_fn):
    import torch as _torch

    if isinstance(value, _torch.Tensor):
        return tensor_fn(value)
    if isinstance(value, _torch.nn.Module):
        # a trained model (Labs 5 and 6): a copy whose weights, as a probe reads them, are transformed
        import copy as _copy

        clone = _copy.deepcopy(value)
        weights = {{key: tensor_fn(t) for key, t in value.state_dict().items()}}
        clone.state_dict = lambda *args, **kwargs: dict(weights)
        return clone
    if isinstance(value, float):
        return tensor_fn(_torch.tensor(value)).item() if {floats} else value
    if isinstance(value, (list, tuple)):
        return type(value)(_hostile_map(v, tensor_fn) for v in value)
    return value


{transform}


def _hostile_wrap(result=None):
    namespace = _hostile_ip.user_ns
    for _name in _hostile_names:
        _f = namespace.get(_name)
        if callable(_f) and not getattr(_f, "_hostile", False):
            def _wrapped(*args, _f=_f, **kwargs):
                return _hostile_result(_f(*args, **kwargs), args)
            _wrapped._hostile = True
            namespace[_name] = _wrapped


_hostile_ip.events.register("post_run_cell", _hostile_wrap)
print("ATTACK {name}: installed")
'''

_OUTPUT_ATTACKS = {
    # name: (what, transform defining _hostile_result(result, args), floats too)
    "nan-outputs": ("replaced by NaN (same shapes and dtypes)", '''
def _hostile_result(result, args):
    import torch as _torch
    return _hostile_map(result, lambda t: _torch.full_like(t, float("nan")) if t.is_floating_point() else t)
''', True),
    "inf-outputs": ("replaced by +inf (same shapes and dtypes)", '''
def _hostile_result(result, args):
    import torch as _torch
    return _hostile_map(result, lambda t: _torch.full_like(t, float("inf")) if t.is_floating_point() else t)
''', True),
    "meta-outputs": ("moved to PyTorch's meta device (shapes and dtypes without values)", '''
def _hostile_result(result, args):
    return _hostile_map(result, lambda t: t.to("meta"))
''', True),
    "lookalike-outputs": ("replaced by look-alike objects (shape, dtype, every comparison true, allclose)", '''
class _LookAlike:
    def __init__(self, t):
        self.shape, self.dtype, self.device = t.shape, t.dtype, t.device
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __bool__(self): return True
    def __abs__(self): return self
    def __sub__(self, other): return self
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __sub__
    def __getattr__(self, name): return lambda *a, **k: self
    def __iter__(self): return iter([self])
    def __len__(self): return 1
    def __float__(self): return 0.0
    def item(self): return 0.0
    def tolist(self): return []


def _hostile_result(result, args):
    return _hostile_map(result, _LookAlike)
''', True),
    # not an attack: the honest baseline of the attacks above (what a submission earns by its functions'
    # side effects alone, e.g. Lab 6's train_step updating the networks in place, whatever it returns)
    "no-results": ("replaced by None (the functions' work in place is kept)", '''
def _hostile_result(result, args):
    return None
''', False),
    "huge-outputs": ("padded to 64 MB of float64 (over the 32 MB a probe may send)", '''
def _hostile_result(result, args):
    import torch as _torch
    return [result, _torch.zeros(8_000_000, dtype=_torch.float64)]
''', False),
    "deep-outputs": ("nested 5000 lists deep", '''
def _hostile_result(result, args):
    for _ in range(5000):
        result = [result]
    return result
''', False),
    "float32-outputs": ("cast to float32 (a wrong dtype: the tests work in float64)", '''
def _hostile_result(result, args):
    import torch as _torch
    return _hostile_map(result, lambda t: t.float() if t.is_floating_point() else t)
''', False),
    "memoise-inputs": ("remembered: every call's tensor arguments are stored with its result, and a call on "
                       "arguments seen before gets the stored result back", '''
_hostile_memo = {}


def _hostile_result(result, args):
    import torch as _torch
    key = tuple(a.detach().cpu().numpy().tobytes() if isinstance(a, _torch.Tensor) else repr(a) for a in args)
    return _hostile_memo.setdefault(key, result)
''', False),
    "alias-inputs": ("right, but the functions then add 1 to every floating-point tensor argument in place", '''
def _hostile_result(result, args):
    import torch as _torch
    for a in args:
        if isinstance(a, _torch.Tensor) and a.is_floating_point() and not a.requires_grad:
            a.add_(1.0)
    return result
''', False),
    "hang-in-probe": ("right, but the first call made while graded never returns (GRADER_SEED set)", '''
_hostile_state = {"hung": False}


def _hostile_result(result, args):
    if globals().get("GRADER_SEED") and not _hostile_state["hung"]:
        _hostile_state["hung"] = True
        import time as _time
        while True:
            _time.sleep(1)
    return result
''', False),
    "die-in-probe": ("right, but the kernel exits (os._exit) in the first call made while graded", '''
def _hostile_result(result, args):
    if globals().get("GRADER_SEED"):
        import os as _os
        _os._exit(3)
    return result
''', False),
}


def _output_attack(name: str):
    what, transform, floats = _OUTPUT_ATTACKS[name]

    def build(ctx):
        code = _WRAP_OUTPUTS.format(what=what, transform=transform.strip(), name=name, floats=floats,
                                    solution_names=repr(sorted(set(ctx.solution_names()))))
        return ctx.after_setup(ctx.copy("solution"), code, f"hostile-{name}")

    return build


_PATCH_GMLIB = r'''
# hostile: replace gmlib's functions and checks, and the helpers of the read-only cells
import sys as _sys, types as _types
for _name, _mod in list(_sys.modules.items()):
    if _name.split(".")[0] == "gmlib" and _mod is not None:
        for _k, _v in list(vars(_mod).items()):
            if isinstance(_v, _types.FunctionType) and not _k.startswith("__"):
                setattr(_mod, _k, lambda *a, **k: None)
for _k, _v in list(globals().items()):
    if isinstance(_v, _types.FunctionType) and _v.__module__ == "__main__" and not _k.startswith("_"):
        if _k not in {solution_names}:
            globals()[_k] = lambda *a, **k: __import__("contextlib").nullcontext()
print("ATTACK patch-gmlib: gmlib and read-only helpers replaced")
'''

_SWALLOW = r'''
# hostile: make failures invisible
_ip = get_ipython()
_ip.set_custom_exc((BaseException,), lambda *a, **k: None)
_ip.showtraceback = lambda *a, **k: None
_ip._showtraceback = lambda *a, **k: None
import sys as _sys
_sys.excepthook = lambda *a: None
def _erase(result):
    from IPython.display import clear_output
    clear_output()
    result.error_in_exec = None
    result.error_before_exec = None
_ip.events.register("post_run_cell", _erase)
print("ATTACK swallow: tracebacks disabled")
'''


@dataclass
class HostileCase:
    """A hostile submission: ``build(ctx)`` gives its notebook (or raw file text).

    ``bound`` names the honest submission whose score it may not exceed (``"blank"``: 0; ``"effects"``: the
    solution whose exercise functions return None, which keeps the points of checks on what they change in
    place, as Lab 6's ``train_step`` updates the networks it is given). With
    ``exact`` its score must equal that one (the attack may not cost honest work either).
    """

    name: str
    description: str
    build: Callable[["_Context"], object]
    bound: str = "blank"
    exact: bool = False
    needs: str | None = None  # a sandbox protection this case relies on
    refused: str | None = None  # words expected in the refusal of a broken file
    extra: Callable[[Path], None] | None = None  # adds files to the submission's folder (given its path)


@dataclass
class _Context:
    lab: str
    repo: Path
    release: nbformat.NotebookNode
    solution: nbformat.NotebookNode
    mutated: nbformat.NotebookNode
    port: int
    token: str
    reference_calls: dict
    grading_dir: str = ""  # the batch course's _grading (the attacks that aim at the gradebook know it)

    def copy(self, which: str = "release") -> nbformat.NotebookNode:
        return copy.deepcopy(getattr(self, which))

    def grade_cells(self, nb) -> list:
        return [c for c in nb.cells if _nbgrader(c).get("grade")]

    def solution_names(self) -> list[str]:
        names = []
        for c in self.solution.cells:
            if _nbgrader(c).get("solution"):
                names += re.findall(r"^(?:def|class)\s+(\w+)", c.source, re.M)
        return names

    def after_setup(self, nb, code: str, cell_id: str = "hostile"):
        """Insert ``code`` after the last read-only code cell before the first solution."""
        first_solution = next(i for i, c in enumerate(nb.cells) if _nbgrader(c).get("solution"))
        last_locked = max(i for i, c in enumerate(nb.cells[:first_solution]) if c.cell_type == "code")
        cell = new_code_cell(code)
        cell["id"] = cell_id
        nb.cells.insert(last_locked + 1, cell)
        return nb

    def empty_solutions(self, nb):
        for c in nb.cells:
            if _nbgrader(c).get("solution"):
                c.source = "# (left empty)"
        return nb

    def after_exercise(self, nb, index: int, code: str, cell_id: str):
        """Insert ``code`` after the last test cell of the ``index``-th exercise (0-based)."""
        exercises = sorted({exercise_of(_nbgrader(c)["grade_id"]) for c in self.grade_cells(nb)}, key=lambda e: int(e[2:]))
        target = exercises[min(index, len(exercises) - 1)]
        last = max(i for i, c in enumerate(nb.cells) if _nbgrader(c).get("grade") and exercise_of(_nbgrader(c)["grade_id"]) == target)
        cell = new_code_cell(code)
        cell["id"] = cell_id
        nb.cells.insert(last + 1, cell)
        return nb


def _edit_tests(ctx):
    nb = ctx.copy("mutated")
    for c in ctx.grade_cells(nb):
        c.source = "print('all tests passed')"
    return nb


def _delete_tests(ctx):
    nb = ctx.copy("mutated")
    nb.cells = [c for c in nb.cells if not _nbgrader(c).get("grade")]
    return nb


def _duplicate_tests(ctx):
    nb = ctx.copy("mutated")
    cells = []
    for c in nb.cells:
        if _nbgrader(c).get("grade"):
            dup = copy.deepcopy(c)
            dup["id"] = c["id"] + "-dup"
            c.source = "pass"  # the first copy, the one nbgrader keeps, emptied
            cells += [c, dup]
        else:
            cells.append(c)
    nb.cells = cells
    return nb


def _reorder_tests(ctx):
    nb = ctx.copy("mutated")
    tests = [c for c in nb.cells if _nbgrader(c).get("grade")]
    for c in tests:
        c.source = "pass"
    nb.cells = tests + [c for c in nb.cells if not _nbgrader(c).get("grade")]
    return nb


def _rename_grade_ids(ctx):
    nb = ctx.copy("mutated")
    for i, c in enumerate(ctx.grade_cells(nb)):
        c.metadata["nbgrader"]["grade_id"] = f"renamed_{i}"
        c.source = "pass"
    bonus = new_code_cell("pass")
    bonus["id"] = "bonus"
    bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "locked": True, "points": 100,
                                  "schema_version": 3, "solution": False, "task": False}
    nb.cells.append(bonus)
    return nb


def _strip_metadata(ctx):
    nb = ctx.copy("mutated")
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
    return nb


def _inflate_points(ctx):
    nb = ctx.copy("mutated")
    for c in ctx.grade_cells(nb):
        c.metadata["nbgrader"]["points"] = 100
    return nb


def _infinite_loop(ctx):
    return ctx.after_exercise(ctx.copy("solution"), 0, "while True:  # hostile: an infinite loop\n    pass", "hostile-loop")


def _sleepy(ctx):
    nb = ctx.copy("solution")
    for i in range(len({exercise_of(_nbgrader(c)["grade_id"]) for c in ctx.grade_cells(nb)})):
        ctx.after_exercise(nb, i, "import time\ntime.sleep(10 ** 6)  # hostile: never ends", f"hostile-sleep-{i}")
    return nb


def _memory_bomb(ctx):
    code = "hoard = []\nwhile True:  # hostile: eat all the memory\n    hoard.append(bytearray(256 * 2 ** 20))\n    hoard[-1][::4096] = b'x' * len(hoard[-1][::4096])"
    return ctx.after_exercise(ctx.copy("solution"), 1, code, "hostile-memory")


def _exit(ctx):
    return ctx.after_exercise(ctx.copy("solution"), 1, "import os\nos._exit(0)  # hostile: leave without a word", "hostile-exit")


def _segfault(ctx):
    return ctx.after_exercise(ctx.copy("solution"), 1, "import ctypes\nctypes.string_at(0)  # hostile: crash the kernel", "hostile-segv")


def _flood(ctx):
    code = "import sys\nchunk = 'x' * 2 ** 20 + '\\n'\nfor _ in range(100):  # hostile: 100 MB of output\n    sys.stdout.write(chunk)"
    return ctx.after_exercise(ctx.copy("solution"), 0, code, "hostile-flood")


def _patch_asserts(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _PATCH_ASSERTS)


def _patch_gmlib(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _PATCH_GMLIB.replace("{solution_names}", repr(set(ctx.solution_names()))))


def _swallow(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _SWALLOW)


def _function_mode(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _FUNCTION_MODE)


def _strip_asserts(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _STRIP_ASSERTS)


def _patch_stats(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _PATCH_STATS)


def _forge_probe(ctx):
    return ctx.after_setup(ctx.copy("mutated"), _FORGE_PROBE)


def _reference_calls(ctx):
    nb = ctx.copy("release")
    for c in nb.cells:
        grade_id = _nbgrader(c).get("grade_id")
        if grade_id in ctx.reference_calls:
            c.source = ctx.reference_calls[grade_id]
    return nb


_FRESH_LOADER = """\
def _fresh_copy(name):  # the library module run afresh from its file: objects no guard has seen
    import importlib.util, types
    spec = importlib.util.find_spec(name)
    module = types.ModuleType(name + "_fresh")
    module.__file__, module.__package__ = spec.origin, name.rpartition(".")[0]
    with open(spec.origin) as f:
        exec(compile(f.read(), spec.origin, "exec"), module.__dict__)
    return module

"""


def _fresh_reference(source: str) -> str | None:
    """A reference-calling solution cell rewritten to take the reference from a fresh copy of its module's
    source file instead of the imported module (None: the cell imports no library module)."""
    out = re.sub(r"^import ([\w.]+) as (\w+)$", r'\2 = _fresh_copy("\1")', source, flags=re.M)
    out = re.sub(r"^from ([\w.]+) import (\w+) as (\w+)$", r'\3 = _fresh_copy("\1").\2', out, flags=re.M)
    out = re.sub(r"\bmodel\.(elbo\w*)\(", r'_fresh_copy("gmlib.probability").ConjugateGaussian.\1(model, ', out)
    return None if out == source else _FRESH_LOADER + out


def _reference_from_source(ctx):
    """The course's reference-calling solutions (``REFERENCE_CALLS``), the references read from the library's
    files and run afresh, so that no object the guard knows is called: what the student edition stops."""
    nb = ctx.copy("release")
    for c in nb.cells:
        grade_id = _nbgrader(c).get("grade_id")
        if grade_id in ctx.reference_calls:
            fresh = _fresh_reference(ctx.reference_calls[grade_id])
            if fresh is not None:
                c.source = fresh
    return nb


def _borrow_references(ctx):
    """Each solution cell that defines a function with a reference version (the course's reference modules) is
    replaced by one that passes the reference off as the student's: through ``reference_versions``
    or straight from the registry."""
    names = sorted(references_of(ctx.lab, ctx.repo))
    nb = ctx.copy("release")
    borrowed = 0  # alternate between the two ways, across the notebook
    for c in nb.cells:
        if not _nbgrader(c).get("solution"):
            continue
        source = _read_cell_source(ctx.solution, _nbgrader(c).get("grade_id"))
        defined = [n for n in names if re.search(rf"^def {n}\(", source, re.M)]
        if not defined:
            continue
        module = course_settings(ctx.repo)["reference_modules"][0]
        lines = [f"from {module} import REFERENCES as _REFS, reference_versions as _borrow", ""]
        for name in defined:
            lines += ["", f"def {name}(*args, **kwargs):"]
            borrowed += 1
            if borrowed % 2:
                lines += [f"    with _borrow(globals(), {ctx.lab!r}, {name!r}):",
                          f"        return globals()[{name!r}](*args, **kwargs)"]
            else:
                lines += [f"    return _REFS[{ctx.lab!r}][{name!r}](*args, **kwargs)"]
        c.source = "\n".join(lines) + "\n"
    return nb


def _read_cell_source(nb, grade_id) -> str:
    return next((c.source for c in nb.cells if _nbgrader(c).get("grade_id") == grade_id), "")


def _snoop(ctx):
    return ctx.after_setup(ctx.empty_solutions(ctx.copy("release")), _SNOOP)


def _network(ctx):
    return ctx.after_setup(ctx.empty_solutions(ctx.copy("release")), _NETWORK.format(port=ctx.port))


_LINKS = r'''
# hostile: leave links where the grader writes as root once the kernel has ended (it writes the graded
# notebook here and changes the mode of every file here)
import os as _os
_here = _os.getcwd()
_grading = {grading!r} or _os.path.abspath(_os.path.join(_here, *[".."] * 3))  # the course's, else as seen from here
_made = []
for _name, _target in [("{lab}.ipynb", _os.path.join(_grading, "gradebook.db")),
                       ("canary-link", _os.path.join(_grading, "CANARY-{token}")),
                       ("root-link", "/")]:
    _p = _os.path.join(_here, _name)
    try:
        if _os.path.lexists(_p):
            _os.remove(_p)
        _os.symlink(_target, _p)
        _made.append(_name)
    except OSError as _e:
        print("ATTACK links: failed", _name, _e)
print("ATTACK links: made", _made)
'''

_FIFOS = r'''
# hostile: FIFOs where the grader opens files once the kernel has ended (an open would block the batch)
import os as _os
_made = []
for _name in ["{lab}.ipynb", "pipe"]:
    _p = _os.path.join(_os.getcwd(), _name)
    try:
        if _os.path.lexists(_p):
            _os.remove(_p)
        _os.mkfifo(_p)
        _made.append(_name)
    except OSError as _e:
        print("ATTACK fifos: failed", _name, _e)
print("ATTACK fifos: made", _made)
'''


_LEAK_HOOK = r'''
# hostile: print the source of every cell the kernel runs, hidden tests included, into its outputs
def _print_source(result):
    print("ATTACK leak: the cell that just ran:\n" + (result.info.raw_cell if result.info is not None else ""))
get_ipython().events.register("post_run_cell", _print_source)
'''

_LEAK_HISTORY = "# hostile: print every cell run so far (In), hidden tests included\nprint('ATTACK leak: history\\n' + '\\n'.join(In))"


def _leak(ctx):
    nb = ctx.after_setup(ctx.copy("solution"), _LEAK_HOOK)
    return ctx.after_exercise(nb, 1, _LEAK_HISTORY, "hostile-history")


def _links(ctx):
    code = _LINKS.format(lab=ctx.lab, token=ctx.token, grading=ctx.grading_dir)
    return ctx.after_exercise(ctx.copy("solution"), 0, code, "hostile-links")


def _fifos(ctx):
    return ctx.after_exercise(ctx.copy("solution"), 0, _FIFOS.format(lab=ctx.lab), "hostile-fifos")


def _links_in_folder(folder: Path) -> None:
    """A link to the gradebook and a FIFO beside the notebook, as a crafted upload could hold them."""
    (folder / "notes.txt").symlink_to(folder.parents[2] / "gradebook.db")
    os.mkfifo(folder / "pipe")


def _write(ctx):
    return ctx.after_setup(ctx.copy("release"), _WRITE.format(token=ctx.token))


def hostile_cases(lab: str, reference_calls: dict | None = None, repo: Path | None = None) -> list[HostileCase]:
    """The hostile submissions tried on ``lab``; student ids sort the environment attacks first."""
    cases = [
        HostileCase("a-write-outside", "writes into _grading/, solutions/, gmlib/, /tmp and the gradebook", _write,
                    needs="drop_privileges"),
        HostileCase("a-snoop", "searches the disk for hidden tests, solutions, gradebook, other students; runs what it finds",
                    _snoop, needs="mount_namespace"),
        HostileCase("a-network", "downloads the solutions from a server on the grading machine's loopback", _network,
                    needs="network_namespace"),
        HostileCase("edit-tests", "every test cell replaced by a print", _edit_tests, bound="mutated"),
        HostileCase("delete-tests", "every test cell deleted", _delete_tests, bound="mutated"),
        HostileCase("duplicate-tests", "every test cell duplicated, the first copy emptied", _duplicate_tests, bound="mutated"),
        HostileCase("reorder-tests", "every test cell emptied and moved to the top", _reorder_tests, bound="mutated", exact=True),
        HostileCase("rename-grade-ids", "test cells renamed and emptied, a 100-point test cell added", _rename_grade_ids, bound="mutated"),
        HostileCase("strip-metadata", "nbgrader metadata removed from every cell", _strip_metadata, bound="mutated"),
        HostileCase("inflate-points", "every test cell claims 100 points", _inflate_points, bound="mutated", exact=True),
        HostileCase("infinite-loop", "an infinite loop after exercise 1", _infinite_loop, bound="solution", exact=True),
        HostileCase("sleep-forever", "a cell that never ends after every exercise (notebook time limit)", _sleepy, bound="solution"),
        HostileCase("memory-bomb", "allocates memory until something gives, after exercise 2", _memory_bomb, bound="solution"),
        HostileCase("os-exit", "os._exit(0) after exercise 2", _exit, bound="solution"),
        HostileCase("segfault", "crashes the kernel (null pointer read) after exercise 2", _segfault, bound="solution"),
        HostileCase("flood-output", "prints 100 MB after exercise 1", _flood, bound="solution", exact=True),
        HostileCase("patch-comparisons", "torch.allclose, torch.testing, numpy.testing, math.isclose, Tensor comparisons replaced",
                    _patch_asserts, bound="mutated"),
        HostileCase("patch-gmlib-helpers", "every gmlib function and read-only helper replaced by a no-op", _patch_gmlib, bound="mutated"),
        HostileCase("function-mode", "a TorchFunctionMode left entered makes every comparison and reduction true",
                    _function_mode, bound="mutated"),
        HostileCase("strip-asserts", "an IPython AST transformer removes every assert from the cells run after it",
                    _strip_asserts, bound="mutated"),
        HostileCase("patch-stats", "SciPy's goodness-of-fit tests always accept; all, any, abs shadowed as globals",
                    _patch_stats, bound="mutated"),
        HostileCase("forge-probe", "every probe's values rewritten (tensors zeroed, problems hidden) and sent twice",
                    _forge_probe, bound="mutated"),
        HostileCase("nan-outputs", "every exercise function's results replaced by NaN", _output_attack("nan-outputs"), bound="effects"),
        HostileCase("inf-outputs", "every exercise function's results replaced by +inf", _output_attack("inf-outputs"), bound="effects"),
        HostileCase("meta-outputs", "results on the meta device: shapes and dtypes without values",
                    _output_attack("meta-outputs"), bound="effects"),
        HostileCase("lookalike-outputs", "results replaced by objects with a shape and a dtype whose every comparison "
                    "is true", _output_attack("lookalike-outputs"), bound="effects"),
        HostileCase("huge-outputs", "results padded to 64 MB, over what a probe may send", _output_attack("huge-outputs"), bound="effects"),
        HostileCase("deep-outputs", "results nested 5000 lists deep", _output_attack("deep-outputs"), bound="effects"),
        HostileCase("float32-outputs", "right results cast to float32", _output_attack("float32-outputs"),
                    bound="solution"),
        HostileCase("memoise-inputs", "results remembered by their tensor arguments and replayed on a repeated call",
                    _output_attack("memoise-inputs"), bound="solution"),
        HostileCase("alias-inputs", "right results, then every tensor argument changed in place",
                    _output_attack("alias-inputs"), bound="solution"),
        HostileCase("hang-in-probe", "the first call under grading never returns (the cell's time limit)",
                    _output_attack("hang-in-probe"), bound="solution"),
        HostileCase("die-in-probe", "the kernel exits in the first call under grading", _output_attack("die-in-probe"),
                    bound="solution"),
        HostileCase("swallow-errors", "set_custom_exc, showtraceback, excepthook, and a hook that clears failed outputs",
                    _swallow, bound="mutated"),
        HostileCase("leak-hidden", "a post_run_cell hook prints every cell's source, a later cell prints In: the hidden "
                    "tests end up in the outputs", _leak, bound="solution", exact=True),
        HostileCase("links-left", "the kernel replaces its notebook by a link to the gradebook, links a file outside and /",
                    _links, bound="solution", exact=True),
        HostileCase("fifos-left", "the kernel replaces its notebook by a FIFO and leaves another", _fifos,
                    bound="solution", exact=True),
        HostileCase("links-submitted", "the submission's folder holds a link to the gradebook and a FIFO",
                    lambda ctx: ctx.copy("solution"), extra=_links_in_folder,
                    refused="a submission holds regular files and folders only"),
        HostileCase("broken-json", "not JSON", lambda ctx: '{"cells": [', refused="invalid JSON"),
        HostileCase("wrong-nbformat", "nbformat 99", lambda ctx: json.dumps({"nbformat": 99, "nbformat_minor": 0, "cells": [], "metadata": {}}),
                    refused="nbformat 99"),
        HostileCase("empty-file", "an empty file", lambda ctx: "", refused="empty file"),
    ]
    if references_of(lab, repo):
        cases.append(HostileCase("borrow-references", "functions that later exercises' tests swap in, taken from the course's reference versions",
                                 _borrow_references))
    if reference_calls:
        cases.append(HostileCase("call-reference", "solutions that call the gmlib reference the lab forbids", _reference_calls))
        cases.append(HostileCase("reference-from-source", "the same references run afresh from the library's source "
                                 "files (objects no guard knows)", _reference_from_source))
    return cases


@dataclass
class HostileOutcome:
    case: str
    description: str
    score: float | None
    bound: float
    gained: bool
    lost_honest_work: bool
    error: str | None = None
    note: str = ""


@dataclass
class LabHostileReport:
    lab: str
    honest_clean: dict[str, SubmissionResult]
    honest_batch: dict[str, SubmissionResult]
    outcomes: list[HostileOutcome]
    protections: dict
    seconds: float
    outside_files: list[str] = field(default_factory=list)

    @property
    def honest_exact(self) -> bool:
        return all(self.honest_clean[s].cells == self.honest_batch[s].cells and self.honest_batch[s].error is None
                   for s in self.honest_clean)

    @property
    def gained(self) -> int:
        return sum(o.gained for o in self.outcomes)

    def failures(self) -> list[str]:
        out = []
        if not self.honest_exact:
            for s in self.honest_clean:
                if self.honest_clean[s].cells != self.honest_batch[s].cells:
                    out.append(f"{self.lab} {s}: {self.honest_batch[s].score} in the hostile batch, {self.honest_clean[s].score} alone")
        for o in self.outcomes:
            if o.gained:
                out.append(f"{self.lab} {o.case}: scored {o.score}, more than the {o.bound} it earned ({o.note})")
            if o.lost_honest_work:
                out.append(f"{self.lab} {o.case}: scored {o.score}, honest work worth {o.bound} was lost")
        out += [f"{self.lab}: a hostile submission wrote {p}" for p in self.outside_files]
        return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def run_hostile(lab: str, root: Path | None = None, repo: Path | None = None,
                mutants_dir: Path | None = None, out=print) -> LabHostileReport:
    """Autograde ``lab``'s honest submissions alone, then again in one batch with every hostile case."""
    repo = course_root(repo)
    root = Path(root) if root is not None else default_root(repo) / "hostile" / lab
    mutants_dir = mutants_dir or mutants_dir_of(repo)
    token = f"{os.getpid()}-{int(time.time())}"
    fixtures = _lab_fixtures(lab, mutants_dir)
    first_mutants = select_mutants(load_mutants(lab, mutants_dir), 1)
    served = root / "served"
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir(parents=True)
    shutil.copyfile(source_path(lab, repo), served / "source.ipynb")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx = _Context(lab, repo, _read(release_path(lab, repo)), solution_notebook(lab, repo),
                       _mutated_notebook(lab, first_mutants, repo), server.server_address[1], token,
                       fixtures.get("REFERENCE_CALLS", {}))
        honest = {"honest-solution": ctx.solution, "honest-mutated": ctx.mutated, "honest-blank": ctx.release,
                  "honest-no-results": _output_attack("no-results")(ctx)}
        env = dict(HOSTILE_LIMITS)
        env["AUTOGRADER_NOTEBOOK_TIMEOUT"] = HOSTILE_NOTEBOOK_SECONDS.get(lab, env["AUTOGRADER_NOTEBOOK_TIMEOUT"])
        # One secret seed for every submission of both batches (drawn afresh per run; $AUTOGRADER_SEED fixes it):
        # a hostile score is compared with an honest one, so both must see the same hidden inputs (a mistake may
        # pass a statistical cell on some inputs and fail it on others).
        seed = probes.submission_seed()
        env[probes.SEED_ENV] = str(seed)

        clean = Course.create(grading._fresh_root(root / "clean", repo), [lab], repo)
        clean.env.update(env)
        clean.generate(lab)
        for s, nb in honest.items():
            clean.submit_notebook(lab, s, nb)
        errors = clean.autograde_batch(lab, list(honest))
        if errors:
            raise GradingError(f"{lab}: honest submissions failed alone: {errors}")
        clean_scores = read_scores(clean.db_url)

        course = Course.create(grading._fresh_root(root / "batch", repo), [lab], repo)
        course.env.update(env)
        course.generate(lab)
        ctx.grading_dir = str(course.root / grading.GRADING_DIR)
        cases = hostile_cases(lab, ctx.reference_calls, repo)
        refused = {}
        for case in cases:
            content = case.build(ctx)
            path = course.path("submitted", case.name, lab)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content)
            else:
                nbformat.write(content, str(path))
            if case.extra is not None:
                case.extra(path.parent)
            reason = validate_submission(path)
            if reason:
                refused[case.name] = reason
        for s, nb in honest.items():
            course.submit_notebook(lab, s, nb)
        students = [c.name for c in cases if c.name not in refused] + list(honest)
        out(f"{lab}: autograding {len(honest)} honest and {len(cases)} hostile submissions "
            f"({len(refused)} refused as files), the hidden tests' seed {seed} for all")
        # files outside every submission that the attacks aim at: their bytes and modes must not change
        canary = course.root / grading.GRADING_DIR / f"CANARY-{token}"
        canary.write_text("a file outside every submission\n")
        canary.chmod(0o600)
        gradebook = course.root / grading.GRADING_DIR / "gradebook.db"  # a scratch course's: SQLite
        watched = {p: (p.stat().st_mode, p.read_bytes() if p == canary else None) for p in (canary, gradebook) if p.is_file()}
        # and every other file of the course and of the repository's course files, before and after
        trees, skip = _watched_trees(course.root, repo)
        tree_before = _tree_state(trees, skip)
        start = time.perf_counter()
        errors = course.autograde_batch(lab, students)
        seconds = time.perf_counter() - start
        changed = [f"{p} ({'mode' if p.stat().st_mode != mode else 'contents'} changed)"
                   for p, (mode, data) in watched.items()
                   if p.stat().st_mode != mode or (data is not None and p.read_bytes() != data)]
        changed += _tree_changes(tree_before, _tree_state(trees, skip))
        scores = read_scores(course.db_url)
    finally:
        server.shutdown()
        server.server_close()

    def result(s):
        if s in errors:
            return SubmissionResult(lab, s, error=errors[s])
        return scores[(lab, s)]

    bounds = {"blank": 0.0, "solution": clean_scores[(lab, "honest-solution")].score,
              "mutated": clean_scores[(lab, "honest-mutated")].score,
              "effects": clean_scores[(lab, "honest-no-results")].score}
    outcomes = []
    for case in cases:
        bound = bounds[case.bound]
        if case.name in refused:
            ok = case.refused is not None and case.refused in refused[case.name]
            outcomes.append(HostileOutcome(case.name, case.description, 0.0, 0.0, gained=False, lost_honest_work=False,
                                           error=refused[case.name], note="refused" if ok else "refused for another reason"))
            continue
        r = result(case.name)
        score = r.score if r.error is None else 0.0
        note = ""
        nb_path = course.path("autograded", case.name, lab)
        if nb_path.is_file():
            text = "".join(o.get("text", "") for c in _read(nb_path).cells if c.cell_type == "code" for o in c.get("outputs", []))
            note = " | ".join(line.strip()[:200] for line in text.splitlines() if line.startswith("ATTACK"))
        outcomes.append(HostileOutcome(case.name, case.description, score, bound, gained=score > bound,
                                       lost_honest_work=case.exact and score < bound, error=r.error, note=note))
    outside = list(changed)
    for candidate in [course.root / grading.GRADING_DIR / f"ATTACK-{token}", course.root / "solutions" / f"ATTACK-{token}",
                      *[Path(p) / f"ATTACK_{token}.py" for p in _library_dirs(repo)], Path("/tmp") / f"ATTACK-{token}"]:
        if candidate.exists():
            outside.append(str(candidate))
            candidate.unlink()  # a stray file must not outlive the run
    # the gradebook row the attack tried to overwrite: honest scores are compared above
    return LabHostileReport(lab, {s: clean_scores[(lab, s)] for s in honest}, {s: result(s) for s in honest},
                            outcomes, dict(sandbox.probe()), seconds, outside)


def format_hostile_table(report: LabHostileReport) -> str:
    honest = ", ".join(f"{s.removeprefix('honest-')} {r.score:g}" for s, r in report.honest_clean.items())
    lines = [f"{report.lab}: {len(report.outcomes)} hostile cases, {report.gained} gained points; honest scores "
             + ("unchanged" if report.honest_exact else "CHANGED") + f" ({honest})",
             f"  {'case':<22} {'score':>6} {'bound':>6}  result"]
    for o in report.outcomes:
        status = "GAINED" if o.gained else ("LOST HONEST WORK" if o.lost_honest_work else "ok")
        shown = "-" if o.score is None else f"{o.score:g}"
        detail = o.error or o.note
        lines.append(f"  {o.case:<22} {shown:>6} {o.bound:>6g}  {status}{': ' + detail[:150] if detail else ''}")
    lines += ["  " + f for f in report.failures()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------


def figures(per_exercise: int | None = None, labs: Sequence[str] | None = None, hostile_labs: Sequence[str] | None = None,
            jobs: int = 2, root: Path | None = None, repo: Path | None = None, out=print,
            per_lab: int | None = None) -> dict:
    """Run mutation testing and the hostile batches; print and return the README's figures."""
    labs = discover_labs(repo) if labs is None else list(labs)
    root = Path(root) if root is not None else default_root(repo)
    hostile_labs = labs[:1] if hostile_labs is None else list(hostile_labs)
    start = time.perf_counter()
    mutation = mutation_testing(labs, per_exercise, Path(root) / "mutants", jobs, repo, out=out, per_lab=per_lab)
    hostile = [run_hostile(lab, Path(root) / "hostile" / lab, repo, out=out) for lab in hostile_labs]
    elapsed = time.perf_counter() - start
    out("")
    which = (f"a sample of {per_lab} per lab" if per_lab is not None
             else "all mutants" if per_exercise is None else f"{per_exercise} per exercise")
    out(f"Mutation testing ({which}, autograded by nbgrader):")
    out(format_mutation_table(mutation))
    out("")
    for h in hostile:
        out(format_hostile_table(h))
    out("sandbox: " + sandbox.describe(sandbox.probe()))
    out(f"total {elapsed:.0f} s")
    return {
        "date": time.strftime("%Y-%m-%d"),
        "per_exercise": per_exercise,
        "per_lab": per_lab,
        "mutants": {r.lab: {"caught": r.caught, "total": r.total, "exercises": [x.mutant.exercise for x in r.results],
                            "seconds_per_submission": round(r.seconds_per_submission, 2),
                            "failures": r.failures()} for r in mutation},
        "hostile": {h.lab: {"tried": len(h.outcomes), "gained": h.gained, "honest_exact": h.honest_exact,
                            "failures": h.failures(), "seconds": round(h.seconds, 1),
                            "cases": [asdict(o) for o in h.outcomes]} for h in hostile},
        "protections": dict(sandbox.probe()),
        "seconds": round(elapsed, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.integrity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", default=None, help="course directory (default: found from the working directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mutants", help="mutation score per lab (real nbgrader autograding)")
    p.add_argument("--labs", nargs="*", default=None)
    p.add_argument("--per-exercise", type=int, default=None, help="the first N mutants of each exercise (default: all)")
    p.add_argument("--per-lab", type=int, default=None,
                   help="a sample: the first mutant of N exercises per lab, from the first to the last")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--root", default=None, help="scratch directory (default: _grading/integrity/mutants in the course)")
    p = sub.add_parser("hostile", help="hostile submissions in a batch with honest ones")
    p.add_argument("--labs", nargs="*", default=None, help="default: the first lab")
    p.add_argument("--root", default=None, help="scratch directory (default: _grading/integrity/hostile in the course)")
    p = sub.add_parser("figures", help="mutation scores, hostile cases, seconds per submission")
    p.add_argument("--labs", nargs="*", default=None)
    p.add_argument("--per-exercise", type=int, default=None)
    p.add_argument("--per-lab", type=int, default=None, help="a sample of N mutants per lab (see mutants)")
    p.add_argument("--hostile-labs", nargs="*", default=None, help="default: the first lab")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--root", default=None, help="scratch directory (default: _grading/integrity in the course)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        repo = course_root(args.course)
        if args.command == "mutants":
            reports = mutation_testing(args.labs, args.per_exercise, args.root, args.jobs, repo, per_lab=args.per_lab)
            print(format_mutation_table(reports))
            return 0 if all(r.caught == r.total for r in reports) else 1
        if args.command == "hostile":
            labs = args.labs or discover_labs(repo)[:1]
            reports = [run_hostile(lab, Path(args.root) / lab if args.root else None, repo) for lab in labs]
            for r in reports:
                print(format_hostile_table(r))
            return 0 if all(not r.failures() for r in reports) else 1
        result = figures(args.per_exercise, args.labs, args.hostile_labs, args.jobs, args.root, repo, per_lab=args.per_lab)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        ok = all(not m["failures"] for m in result["mutants"].values()) and all(not h["failures"] for h in result["hostile"].values())
        return 0 if ok else 1
    except (GradingError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
