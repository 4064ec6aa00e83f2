"""``python -m autograder.bench`` runs end to end (``--quick --per-lab 1 --no-parallel``: one lab, its
solution, stock nbgrader against the pipeline).

Its figures are printed, never asserted: this only checks that the two sequential configurations
ran and the 2-worker one was skipped, saying why (``tests/test_parallel_grading.py`` grades on a
real Dask cluster), that the times are positive, that both configurations gave the same per-cell
scores, and that the breakdown of a submission's seconds adds up: non-negative parts whose sum is
the submission's wall time at most. Two autogrades of lab01 (the blank release's zero is checked by
tests/test_grading.py): about 30 s on two idle cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import bench

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05  # seconds: the file times nbgrader leaves against the grader's own clock


def test_quick_bench_reports_three_configurations_and_a_breakdown_that_adds_up(tmp_path):
    report_path = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("AUTOGRADER_GRADEBOOK_URL", "AUTOGRADER_COURSE_ROOT", "AUTOGRADER_TIMINGS")}
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.bench", "--quick", "--per-lab", "1", "--no-pin", "--no-parallel", "--labs", "lab01", "--json", str(report_path),
         "--root", str(tmp_path / "courses")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["printed"] and "Where the seconds go" in "\n".join(report["printed"])

    configs = set(report["configurations"])
    assert configs == {"stock", "sequential"} and report["skipped"]["parallel"] == "skipped (--no-parallel)"

    runs = report["results"]["lab01"]["configurations"]
    assert set(runs) == configs
    students = report["results"]["lab01"]["students"]
    assert students == ["solution"]
    for name, run in runs.items():
        assert not run["errors"], (name, run["errors"])
        assert run["wall"] > 0 and run["median"] > 0 and run["mean"] > 0, name
        assert set(run["seconds"]) == set(students) and all(s > 0 for s in run["seconds"].values()), name
        assert set(run["scores"]) == set(students), name
    # the same notebooks get the same per-cell scores, whatever grades them
    assert report["score_differences"] == []
    for run in runs.values():
        assert run["scores"] == runs["sequential"]["scores"]
    solution = runs["sequential"]["scores"]["solution"]
    assert all(score == points for score, points in solution.values())  # the solution: full marks

    # the imports every kernel pays, each timed in fresh interpreters: torch is one of them
    imports = report["imports"]
    assert list(imports) == [label for label, _ in bench.IMPORTS] and all(v >= 0 for v in imports.values())
    assert imports["torch"] > 0

    breakdown = report["breakdown"]["lab01"]
    parts = breakdown["parts"]
    assert {"kernel_start", "guard_setup", "guard_steps", "setup_cell", "other_cells", "nbgrader"} <= set(parts)
    assert all(value >= 0 for value in parts.values()), parts
    assert parts["kernel_start"] > 0 and parts["guard_setup"] > 0 and parts["other_cells"] > 0
    assert sum(parts.values()) <= breakdown["wall"] + TOLERANCE
    assert breakdown["guard_count"] > 0
