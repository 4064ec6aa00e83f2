"""nbgrader configuration: maps nbgrader's course directory onto this repository.

    solutions/labNN/labNN.ipynb            source (instructor) notebooks       nbgrader "source"
    notebooks/labNN/labNN.ipynb            generated student release           nbgrader "release"
    _grading/submitted/<student>/labNN/    submissions to grade                (gitignored)
    _grading/autograded/<student>/labNN/   autograded notebooks                (gitignored)
    _grading/feedback/<student>/labNN/     feedback                            (gitignored)
    _grading/gradebook.db                  gradebook (sqlite)                  (gitignored)

Set ``GMLIB_GRADEBOOK_URL`` to any SQLAlchemy URL (e.g.
``postgresql://grader@db.example.org/dgm``) to keep the gradebook elsewhere.

Run nbgrader from the repository root with the virtualenv activated (nbgrader runs the
``alembic`` executable it finds on PATH), e.g. ``nbgrader autograde lab01``; or use
``python -m gmlib.grading`` (``release``, ``check-release``, ``demo``), which runs
nbgrader on a scratch copy of the course. This file works wherever it is copied:
the course root is the directory that holds it.
"""
import os

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    Execute,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from gmlib.grading import HideHiddenTests, RestoreCells, StderrToStdout
from gmlib.guard import GuardedExecute
from gmlib.sandbox import SandboxedKernelManager

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

ROOT = os.path.dirname(os.path.abspath(__file__))
GRADING = "_grading"  # gitignored

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "dgm"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = os.path.join(GRADING, "submitted")
c.CourseDirectory.autograded_directory = os.path.join(GRADING, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(GRADING, "feedback")
c.CourseDirectory.solution_directory = os.path.join(GRADING, "solution")
c.CourseDirectory.source_with_tests_directory = os.path.join(GRADING, "source_with_tests")
if os.environ.get("GMLIB_GRADEBOOK_URL"):
    c.CourseDirectory.db_url = os.environ["GMLIB_GRADEBOOK_URL"]
else:
    os.makedirs(os.path.join(ROOT, GRADING), exist_ok=True)  # sqlite does not create directories
    c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, GRADING, "gradebook.db")

# Execution: each lab runs in well under a minute; a cell gets two minutes at most
# (nbgrader's Execute defaults to 30 s), a kernel one minute to start. The environment may
# lower them (the hostile-submission checks of gmlib.integrity do, so that an infinite loop
# costs seconds).
CELL_TIMEOUT = int(os.environ.get("GMLIB_GRADING_CELL_TIMEOUT", "120"))
c.ExecutePreprocessor.timeout = CELL_TIMEOUT
c.Execute.timeout = CELL_TIMEOUT
c.Execute.startup_timeout = 60

# Sanitising (before execution): RestoreCells rebuilds each submission around the lab's own
# read-only and test cells (deleted, moved, duplicated, renamed or stripped test cells are put
# back, once, in the lab's order; the student's own cells are kept without nbgrader metadata),
# then nbgrader's defaults: they clear outputs, restore the locked cells' sources from the
# gradebook by checksum, and check the metadata.
c.Autograde.sanitize_preprocessors = [
    RestoreCells,
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
c.RestoreCells.release_directory = os.path.join(ROOT, "notebooks")

# Execution: GuardedExecute (gmlib.guard) in place of nbgrader's Execute: the per-cell limit
# above plus a per-notebook wall-clock budget, a dead kernel (crash, os._exit, memory cap)
# scores what ran before it, outputs are capped as they arrive (errors always kept), and an
# in-kernel guard puts back, before every test cell, whatever the submission rebound that the
# tests rely on, and refuses calls from student code to the reference functions a lab forbids
# (notebook metadata gmlib.forbidden). Its kernels start in the sandbox of gmlib.sandbox: an
# unprivileged user, CPU/memory/file-size/process limits, no network, and a filesystem view
# without the course, the repository (gmlib aside), other students or the temp directories.
# GMLIB_SANDBOX=off|auto|required (default auto: what the machine allows, reported by
# `python -m gmlib.sandbox probe`), GMLIB_SANDBOX_MEMORY_MB, GMLIB_SANDBOX_CPU_SECONDS.
c.GuardedExecute.notebook_timeout = int(os.environ.get("GMLIB_GRADING_NOTEBOOK_TIMEOUT", "1800"))
c.GuardedExecute.kernel_manager_class = SandboxedKernelManager
c.SandboxedKernelManager.hide = [ROOT]

# Autograding: nbgrader's default preprocessors, in nbgrader's order (GuardedExecute for Execute), plus StderrToStdout
# between Execute and SaveAutoGrades. nbgrader gives 0 points to a test cell with ANY stderr
# output; StderrToStdout turns stderr streams (e.g. a PyTorch UserWarning) into stdout streams
# headed by "[stderr]", so that only real errors fail a cell. It runs after IgnorePattern,
# which therefore still sees (and may drop) the original stderr streams.
c.Autograde.autograde_preprocessors = [
    GuardedExecute,
    IgnorePattern,
    StderrToStdout,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback: the hidden tests' source (and the tracebacks that would quote it) stays out.
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
