"""The autograder's nbgrader preprocessors, one per file, in the order a submission meets them.

- :class:`RestoreCells` (``restore``), first of ``Autograde.sanitize_preprocessors``: the lab's own
  read-only and test cells, once each, in the lab's order;
- :class:`GuardedExecute` (``execute``), in ``Execute``'s place: time, crash and output limits, the
  in-kernel guard (:mod:`autograder.kernel.guard`), forbidden references;
- :class:`StderrToStdout` (``stderr``), before ``SaveAutoGrades``: a warning does not zero a cell;
- :class:`HideHiddenTests` (``feedback``), then :class:`ExerciseSummary` (``summary``), in
  ``GenerateFeedback.preprocessors``.

``nbgrader_config.py`` wires them in.
"""
from autograder.preprocessors.execute import GuardedExecute
from autograder.preprocessors.feedback import HIDDEN_LINE, HIDDEN_PLACEHOLDER, HideHiddenTests
from autograder.preprocessors.restore import RestoreCells
from autograder.preprocessors.stderr import StderrToStdout
from autograder.preprocessors.summary import ExerciseSummary

__all__ = ["ExerciseSummary", "GuardedExecute", "HIDDEN_LINE", "HIDDEN_PLACEHOLDER", "HideHiddenTests", "RestoreCells", "StderrToStdout"]
