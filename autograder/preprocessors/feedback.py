"""``HideHiddenTests``: the feedback a student receives never quotes a hidden test."""
from __future__ import annotations

import html
import re

from nbgrader.preprocessors import NbGraderPreprocessor

__all__ = ["HIDDEN_PLACEHOLDER", "HIDDEN_LINE", "HideHiddenTests"]


_HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)
HIDDEN_PLACEHOLDER = "# (hidden tests: their source is not shown in the feedback)\n"
HIDDEN_LINE = "[a line of a hidden test: not shown]"
_MIN_CHARS = 8  # shorter lines (")", "else:", "x = 1") say nothing and would match too much


def _hidden_pattern(nb) -> re.Pattern | None:
    """A pattern that finds, in any text, a line of a hidden test that no other cell shows, even
    within one of its lines (its words in order, whatever the spacing between them)."""
    blocks, public = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        found = [m.group(0) for m in _HIDDEN_BLOCK.finditer(cell.source)]
        blocks += found
        public.append(_HIDDEN_BLOCK.sub("", cell.source))
    shown = "\n".join(" ".join(line.split()) for text in public for line in text.splitlines())
    patterns = set()
    for block in blocks:
        for line in block.splitlines():
            words = line.split()
            if "HIDDEN TESTS" in line or len("".join(words)) < _MIN_CHARS or " ".join(words) in shown:
                continue  # short, or shown elsewhere (a line of the solution, say)
            patterns.add(r"\s+".join(map(re.escape, words)))
    if not patterns:
        return None
    return re.compile("|".join(sorted(patterns, key=len, reverse=True)))


def _scrub(text: str, pattern: re.Pattern) -> tuple[str, int]:
    lines = text.splitlines(keepends=True)
    out, hits = [], 0
    for line in lines:
        if pattern.search(line):
            hits += 1
            out.append(HIDDEN_LINE + ("\n" if line.endswith("\n") else ""))
        else:
            out.append(line)
    return "".join(out), hits


class HideHiddenTests(NbGraderPreprocessor):
    """For ``generate_feedback``: keep the source of hidden tests out of the feedback.

    The autograded notebook holds the hidden tests (nbgrader restores them to run them), and a
    failing one leaves a traceback that quotes its lines. In every test cell with a hidden
    block, the block is replaced by one comment line, and each error output is cut down to
    its last line (``AssertionError: message``): the message the test chose to show, without
    the code around it.

    Student code can print what the kernel ran, too (a ``post_run_cell`` hook that prints each
    cell's source, ``In`` printed by a later cell): in the outputs of every cell, each line that
    holds a line of a hidden test (one no other cell shows, of at least 8 characters) is
    replaced by ``HIDDEN_LINE``, and an HTML output that holds one is dropped. A leak encoded on
    the way (base64, reversed) is not recognised: only checks outside the student's process
    close that (see the README).
    """

    def preprocess(self, nb, resources):
        self._pattern = _hidden_pattern(nb)
        self._hits = 0
        nb, resources = super().preprocess(nb, resources)
        if self._hits:
            self.log.warning("HideHiddenTests: %d output line(s) quoting hidden tests replaced", self._hits)
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        if "BEGIN HIDDEN TESTS" in cell.source:
            cell.source = _HIDDEN_BLOCK.sub(HIDDEN_PLACEHOLDER, cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    evalue = str(output.get("evalue", ""))
                    last = f"{output.get('ename', 'Error')}: {evalue}" if evalue else str(output.get("ename", "Error"))
                    output["traceback"] = [last, "(traceback not shown: it would quote the hidden tests)"]
        pattern = getattr(self, "_pattern", None)
        if pattern is not None:
            for output in cell.get("outputs", []):
                self._scrub_output(output, pattern)
        return cell, resources

    def _scrub_output(self, output, pattern: re.Pattern) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            output["text"], hits = _scrub(_text(output.get("text", "")), pattern)
            self._hits += hits
        elif kind == "error":
            output["evalue"], hits = _scrub(str(output.get("evalue", "")), pattern)
            self._hits += hits
            traceback = []
            for line in output.get("traceback", []):
                line, hits = _scrub(str(line), pattern)
                self._hits += hits
                traceback.append(line)
            output["traceback"] = traceback
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            for mime in list(data):
                if not mime.startswith("text/") and mime not in ("application/json", "application/javascript"):
                    continue  # images
                text = _text(data[mime]) if not isinstance(data[mime], dict) else str(data[mime])
                if mime == "text/html" or not isinstance(data[mime], str | list):
                    if pattern.search(html.unescape(text)):
                        self._hits += 1
                        del data[mime]
                    continue
                data[mime], hits = _scrub(text, pattern)
                self._hits += hits
            if not data:
                data["text/plain"] = HIDDEN_LINE


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)
