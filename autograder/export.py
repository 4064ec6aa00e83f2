"""``nbgrader export`` with a column per exercise: a CSV row per student and assignment.

nbgrader's own ``CsvExportPlugin`` writes one total per student and assignment (to ``grades.csv`` in
the working directory, unquoted). This plugin writes nbgrader's columns (``assignment``, ``duedate``,
``timestamp``, ``student_id``, ``last_name``, ``first_name``, ``email``, ``raw_score``,
``late_submission_penalty``, ``score``, ``max_score``), then one column per exercise: the points of
the test cells whose ``grade_id`` names that exercise (up to its first underscore, as in the score table
of :mod:`autograder.grading`: ``ex3_hidden_reference`` belongs to ``ex3``), a blank where an assignment has
no such exercise.
A student with no submission gets 0 everywhere, as in nbgrader's. ``nbgrader_config.py`` makes it
the course's exporter and writes to ``_grading/grades.csv`` (never into the repository's root).
"""
from __future__ import annotations

import csv
import os

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin

from autograder.grading import exercise_of, exercise_order

__all__ = ["ExerciseCsvExport"]

KEYS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email", "raw_score",
        "late_submission_penalty", "score", "max_score"]


class ExerciseCsvExport(ExportPlugin):
    """nbgrader's CSV columns plus a column per exercise (see the module docstring)."""

    def _exercise(self, cell_name: str) -> str | None:
        return exercise_of(cell_name) if cell_name else None

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        students = {str(s) for s in self.student}
        assignments = {str(a) for a in self.assignment}
        rows, exercises = [], set()
        for assignment in gradebook.assignments:
            if assignments and assignment.name not in assignments:
                continue
            own = {self._exercise(cell.name) for notebook in assignment.notebooks for cell in notebook.grade_cells}
            own.discard(None)
            exercises |= own
            for student in gradebook.students:
                if students and student.id not in students:
                    continue
                row = {"assignment": assignment.name, "duedate": assignment.duedate, "student_id": student.id,
                       "last_name": student.last_name, "first_name": student.first_name, "email": student.email,
                       "max_score": assignment.max_score}
                row.update({name: 0.0 for name in own})
                try:
                    submission = gradebook.find_submission(assignment.name, student.id)
                except MissingEntry:
                    row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                else:
                    penalty = submission.late_submission_penalty or 0.0
                    row.update(timestamp=submission.timestamp, raw_score=submission.score,
                               late_submission_penalty=penalty, score=max(0.0, submission.score - penalty))
                    for notebook in submission.notebooks:
                        for grade in notebook.grades:
                            name = self._exercise(grade.name)
                            if name is not None and grade.score is not None:
                                row[name] += grade.score
                rows.append(row)
        columns = KEYS + sorted(exercises, key=exercise_order)
        folder = os.path.dirname(os.path.abspath(dest))
        os.makedirs(folder, exist_ok=True)
        self.log.info("Exporting grades to %s (%d rows, exercises %s)", dest, len(rows), ", ".join(columns[len(KEYS):]))
        with open(dest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
