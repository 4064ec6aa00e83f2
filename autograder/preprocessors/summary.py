"""``ExerciseSummary``: the feedback names each exercise, with its subtotal, and renders math offline.

nbgrader's feedback page lists its test cells as "Test cell (Score: 0 / 1)", one line each, and loads
MathJax from a CDN (offline, its formulas stay raw LaTeX). For ``generate_feedback``, after
``GetGrades`` and :class:`HideHiddenTests`, this preprocessor puts in ``resources["autograder"]``:

- ``exercises``: per exercise (the test cells whose ``grade_id`` starts with it, ``ex3_...``, as
  :func:`autograder.grading.exercise_of` counts them; named by the markdown heading that says
  "Exercise 3"), its score and points, and each test cell's
  kind (visible or hidden test), score, points and, when it failed, the one line it ended with (the
  checker's verdict, already scrubbed of hidden lines by :class:`HideHiddenTests`);
- ``mathjax_js``: MathJax 3's self-contained SVG bundle (``tex-svg.js`` of the
  ``sphinx-mathjax-offline`` package the book uses), inlined by the course's feedback template
  (``autograder/templates/autograder_feedback``), so that the page needs no network.

``nbgrader_config.py`` adds it to ``GenerateFeedback.preprocessors`` and names the template.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from autograder.grading import exercise_of, exercise_order
from autograder.preprocessors.feedback import HIDDEN_PLACEHOLDER

__all__ = ["ExerciseSummary", "TEMPLATES", "mathjax_bundle"]

#: the autograder's nbconvert templates (``c.HTMLExporter.extra_template_basedirs``)
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")


@functools.lru_cache(maxsize=None)
def mathjax_bundle(path: str = "") -> str:
    """The text of MathJax 3's ``tex-svg.js``, safe inside a ``<script>`` element; "" when not found."""
    if not path:
        spec = importlib.util.find_spec("sphinx-mathjax-offline")
        if spec is None or not spec.origin:
            return ""
        path = os.path.join(os.path.dirname(spec.origin), "static", "mathjax", "tex-svg.js")
    try:
        with open(path, encoding="utf-8") as f:
            return re.sub(r"</(script)", r"<\\/\1", f.read(), flags=re.I)  # the only text that would end the element
    except OSError:
        return ""


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


class ExerciseSummary(NbGraderPreprocessor):
    """Per-exercise subtotals and the offline MathJax for the feedback template (see the module docstring)."""

    heading_pattern = Unicode(r"^#+\s*(Exercise\s+(\d+)\b.*)$", help="a markdown line naming an exercise: "
                              "group 1 its title, group 2 its number").tag(config=True)
    mathjax_path = Unicode("", help="MathJax 3's tex-svg.js (default: the sphinx-mathjax-offline package's)").tag(
        config=True)

    def preprocess(self, nb, resources):
        titles = {}
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    m = re.match(self.heading_pattern, line.strip())
                    if m and m.group(2) not in titles:
                        titles[m.group(2)] = re.sub(r"[*_`]", "", m.group(1)).strip()
        exercises: dict[str, dict] = {}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
                continue
            grade_id = meta.get("grade_id", "")
            key = exercise_of(grade_id)  # as the score table and the CSV export count exercises
            number = re.sub(r"\D", "", key)
            entry = exercises.setdefault(key, {
                "number": number, "title": titles.get(number) or key,
                "score": 0.0, "points": 0.0, "cells": []})
            score, points = _number(meta.get("score")), _number(meta.get("points"))
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            reason = ""
            if errors and score < points:
                reason = f"{errors[-1].get('ename', '')}: {errors[-1].get('evalue', '')}".strip(": ").splitlines()[0][:300]
            entry["score"] += score
            entry["points"] += points
            entry["cells"].append({"grade_id": grade_id, "score": score, "points": points, "reason": reason,
                                   "kind": "hidden test" if HIDDEN_PLACEHOLDER.strip() in cell.source else "visible test"})
        ordered = [exercises[key] for key in sorted(exercises, key=exercise_order)]
        resources.setdefault("autograder", {})
        resources["autograder"]["exercises"] = ordered
        resources["autograder"]["mathjax_js"] = mathjax_bundle(self.mathjax_path)
        if not resources["autograder"]["mathjax_js"]:
            self.log.warning("no offline MathJax (sphinx-mathjax-offline's tex-svg.js): the feedback shows formulas as LaTeX")
        return nb, resources
