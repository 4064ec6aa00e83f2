"""Names every stage of the autograder shares (no nbgrader import here)."""
from __future__ import annotations

__all__ = ["METADATA_KEY", "GradingError", "nbgrader_meta", "one_line"]

#: the notebook metadata key of a lab's grading settings (``metadata.autograder.forbidden``: the
#: reference functions student code may not call)
METADATA_KEY = "autograder"


class GradingError(RuntimeError):
    """An nbgrader step failed, or a course, lab or submission is not what grading needs (the
    message names the problem, with the end of nbgrader's log when it ran)."""


def nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata (``{}`` when it has none or it is not a dict)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def one_line(text, limit: int = 300) -> str:
    """``text`` with its whitespace runs made single spaces, cut to ``limit`` characters (``...``)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
