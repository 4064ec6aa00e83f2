"""``HideHiddenTests``: the feedback a student receives never quotes a hidden test."""
from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

__all__ = ["HIDDEN_PLACEHOLDER", "HideHiddenTests"]


_HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)
HIDDEN_PLACEHOLDER = "# (hidden tests: their source is not shown in the feedback)\n"


class HideHiddenTests(NbGraderPreprocessor):
    """For ``generate_feedback``: keep the source of hidden tests out of the feedback.

    The autograded notebook holds the hidden tests (nbgrader restores them to run them), and a
    failing one leaves a traceback that quotes its lines. In every test cell with a hidden
    block, the block is replaced by one comment line, and each error output is cut down to
    its last line (``AssertionError: message``): the message the test chose to show, without
    the code around it.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and "BEGIN HIDDEN TESTS" in cell.source:
            cell.source = _HIDDEN_BLOCK.sub(HIDDEN_PLACEHOLDER, cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    evalue = str(output.get("evalue", ""))
                    last = f"{output.get('ename', 'Error')}: {evalue}" if evalue else str(output.get("ename", "Error"))
                    output["traceback"] = [last, "(traceback not shown: it would quote the hidden tests)"]
        return cell, resources
