"""``StderrToStdout``: a warning printed to stderr does not zero a test cell."""
from __future__ import annotations

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

__all__ = ["StderrToStdout"]


class StderrToStdout(NbGraderPreprocessor):
    """Turn stderr stream outputs of code cells into stdout outputs headed by a marker line.

    nbgrader's ``determine_grade`` gives 0 points to a test cell whose outputs contain an
    ``error`` **or any stderr stream** -- so a harmless ``UserWarning`` from PyTorch would
    zero a correct answer. Placed after ``Execute`` and before ``SaveAutoGrades`` in
    ``Autograde.autograde_preprocessors``, this preprocessor keeps the text (visible in the
    autograded notebook and in the feedback, after a ``[stderr]`` line) but moves it to
    stdout, so that only real errors (``output_type == "error"``: a failed assertion, an
    exception) fail a cell.
    """

    marker = Unicode("[stderr]", help="Line put before the text of each former stderr output").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
                    text = output.get("text", "")
                    output["text"] = f"{self.marker}\n{text}" if self.marker else text
        return cell, resources
