"""nbgrader configuration: maps nbgrader's course directory onto this repository.

    solutions/labNN/labNN.ipynb            source (instructor) notebooks       nbgrader "source"
    notebooks/labNN/labNN.ipynb            generated student release           nbgrader "release"
    _grading/submitted/<student>/labNN/    submissions to grade                (gitignored)
    _grading/autograded/<student>/labNN/   autograded notebooks                (gitignored)
    _grading/feedback/<student>/labNN/     feedback                            (gitignored)
    _grading/gradebook.db                  gradebook (sqlite)                  (gitignored)

Set ``AUTOGRADER_GRADEBOOK_URL`` to any SQLAlchemy URL (e.g.
``postgresql://grader@db.example.org/dgm``) to keep the gradebook elsewhere.

Run nbgrader from the repository root with the virtualenv activated (nbgrader runs the
``alembic`` executable it finds on PATH), e.g. ``nbgrader autograde lab01``; or use
``python -m autograder`` (``release``, ``check-release``, ``autograde``, ``demo``), which runs
nbgrader on a scratch copy of the course where it can. This file works wherever it is copied:
the course root is the directory that holds it. The autograder (the top-level package
``autograder``) knows nothing of this course but what this file tells it: the course's library
packages, its reference versions, its mutants and its example submissions (``c.Autograder``).
"""
import importlib.util
import os
import warnings

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

from autograder.preprocessors import ExerciseSummary, GuardedExecute, HideHiddenTests, RestoreCells, StderrToStdout
from autograder.preprocessors.summary import TEMPLATES as FEEDBACK_TEMPLATES
from autograder.sandbox import SandboxedKernelManager
from nbgrader.validator import Validator

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# nbgrader's gradebook triggers SQLAlchemy's "Object of type <SubmittedAssignment> not in session"
# warnings on every submission it records (autoflush inside its own queries; nothing is lost):
# routine noise in an honest autograde's log, kept out of it.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session", module=r"nbgrader\.")

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
# The course's own settings for the autograder: the plausible mistakes of each lab (integrity
# testing) and the example submissions (`python -m autograder demo`), relative to this directory.
c.Autograder.mutants_dir = os.path.join("tests", "mutants")
c.Autograder.submissions_dir = os.path.join("tests", "submissions")

if os.environ.get("AUTOGRADER_GRADEBOOK_URL"):
    c.CourseDirectory.db_url = os.environ["AUTOGRADER_GRADEBOOK_URL"]
else:
    os.makedirs(os.path.join(ROOT, GRADING), exist_ok=True)  # sqlite does not create directories
    c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, GRADING, "gradebook.db")

# The nbgrader exchange (release_assignment, fetch_assignment, submit, collect, release_feedback,
# fetch_feedback): a directory the instructor and every student can write, shared by all of them
# (nbgrader's default, /usr/local/share/nbgrader/exchange, is usually missing and unwritable).
# AUTOGRADER_EXCHANGE names it (students give theirs the same, see the README); without it the
# exchange is _grading/exchange, for a class on one account (a trial run, the tests).
EXCHANGE = os.environ.get("AUTOGRADER_EXCHANGE") or os.path.join(ROOT, GRADING, "exchange")
if not os.environ.get("AUTOGRADER_EXCHANGE") and not os.path.isdir(EXCHANGE):
    os.makedirs(EXCHANGE, exist_ok=True)
c.Exchange.root = EXCHANGE

# nbgrader export: a row per student and lab with a column per exercise (autograder.export), into
# _grading/ (never the repository's root, where grades could be committed by mistake)
c.ExportApp.plugin_class = "autograder.export.ExerciseCsvExport"
c.ExportPlugin.to = os.path.join(ROOT, GRADING, "grades.csv")

# Execution: each lab runs in well under a minute; a cell gets two minutes at most
# (nbgrader's Execute defaults to 30 s), a kernel one minute to start. The environment may
# lower them (the hostile-submission checks of autograder.integrity do, so that an infinite loop
# costs seconds).
CELL_TIMEOUT = int(os.environ.get("AUTOGRADER_CELL_TIMEOUT", "120"))
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

# Execution: GuardedExecute (autograder.preprocessors) in place of nbgrader's Execute: the
# per-cell limit above plus a per-notebook wall-clock budget, a dead kernel (crash, os._exit,
# memory cap) scores what ran before it, outputs are capped as they arrive (errors always kept),
# and an in-kernel guard (autograder.kernel.guard) puts back, before every test cell, whatever the
# submission rebound that the tests rely on, and refuses calls from student code to the reference
# functions a lab forbids (notebook metadata autograder.forbidden) and to every reference version
# of labrefs. Its kernels start in the sandbox of autograder.sandbox: an unprivileged user,
# CPU/memory/file-size/process limits, no network, and a filesystem view without the course, the
# repository (the autograder and the course's library packages aside, read-only), other students
# or the temp directories. AUTOGRADER_SANDBOX=off|auto|required (default auto: what the machine
# allows, reported by `python -m autograder.sandbox probe`), AUTOGRADER_SANDBOX_MEMORY_MB,
# AUTOGRADER_SANDBOX_CPU_SECONDS.
# A submission's cells together get 10 minutes of wall clock (the slowest lab's solution takes about
# 20 s on one core): a kernel made to hang in every cell costs at most that, not the per-cell limit
# times the number of cells. AUTOGRADER_NOTEBOOK_TIMEOUT overrides it.
c.GuardedExecute.notebook_timeout = int(os.environ.get("AUTOGRADER_NOTEBOOK_TIMEOUT", "600"))
c.GuardedExecute.kernel_manager_class = SandboxedKernelManager
# The course's library packages: gmlib (the reference library) and labrefs (the reference
# versions that isolate the exercises; every function in it is forbidden to student code).
c.GuardedExecute.library_packages = ["gmlib", "labrefs"]
c.GuardedExecute.reference_modules = ["labrefs"]
# probe cells (autograder.probes): their CHECK runs in a trusted checker process that imports the course from here
c.GuardedExecute.checker_paths = [ROOT]
c.SandboxedKernelManager.hide = [ROOT]
# where the installed packages lie (a scratch copy of this file is not beside them)
_LIBRARY_DIRS = [os.path.dirname(importlib.util.find_spec(name).origin) for name in c.GuardedExecute.library_packages]
# gmlib's data cache (the digit classifier Lab 6 measures with), read-only in the kernel
_CACHE = os.environ.get("GMLIB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gmlib")
c.SandboxedKernelManager.read_only = [*_LIBRARY_DIRS, _CACHE]
c.SandboxedKernelManager.kernel_env = {"GMLIB_CACHE": _CACHE} if os.path.isdir(_CACHE) else {}

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

# Validate (nbgrader validate, the lab extension's button) must judge a cell as the autograder does: a
# warning on stderr does not fail it. nbgrader's Validator runs a fixed list of preprocessors (not a
# configurable trait), so StderrToStdout is appended to its default here, where every nbgrader process
# and the lab extension's Validate handler (run from the course root by `make lab`) read this file.
_validator_preprocessors = Validator.class_traits()["preprocessors"]
if StderrToStdout not in _validator_preprocessors.default():
    _validator_preprocessors.default_args = ([*_validator_preprocessors.default(), StderrToStdout],)

# Feedback: the hidden tests' source (and the tracebacks that would quote it) stays out; the page
# opens with each exercise's name, subtotal and tests (ExerciseSummary) and renders math with MathJax
# inlined (the course's template, autograder/templates/autograder_feedback: no network needed).
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, ExerciseSummary, CSSHTMLHeaderPreprocessor]
# Scoped to GenerateFeedback's exporter (traitlets' parent-specific config): the formgrader's own
# HTMLExporter, which shows a submission with its 'formgrade' template, must not get this one.
c.GenerateFeedback.HTMLExporter.template_name = "autograder_feedback"
c.GenerateFeedback.HTMLExporter.template_file = "feedback_page.html.j2"
c.GenerateFeedback.HTMLExporter.extra_template_basedirs = [
    FEEDBACK_TEMPLATES,
    os.path.join(os.path.dirname(importlib.util.find_spec("nbgrader").origin), "server_extensions", "formgrader", "templates"),
]
