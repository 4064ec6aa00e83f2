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

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    Execute,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from gmlib.grading import StderrToStdout

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
# (nbgrader's Execute defaults to 30 s), a kernel one minute to start.
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120
c.Execute.startup_timeout = 60

# Autograding: nbgrader's default preprocessors, in nbgrader's order, plus StderrToStdout
# between Execute and SaveAutoGrades. nbgrader gives 0 points to a test cell with ANY stderr
# output; StderrToStdout turns stderr streams (e.g. a PyTorch UserWarning) into stdout streams
# headed by "[stderr]", so that only real errors fail a cell. It runs after IgnorePattern,
# which therefore still sees (and may drop) the original stderr streams.
c.Autograde.autograde_preprocessors = [
    Execute,
    IgnorePattern,
    StderrToStdout,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
# sanitize_preprocessors (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
# CheckCellMetadata) and generate_assignment's checksums stay nbgrader's defaults: they restore
# the locked and test cells of every submission before it is executed.
