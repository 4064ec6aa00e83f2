"""Names every stage of the autograder shares (no nbgrader import here)."""
from __future__ import annotations

__all__ = ["METADATA_KEY", "GradingError", "nbgrader_meta", "private_tmp_dir"]

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


def private_tmp_dir(kind: str) -> str:
    """``$TMPDIR/autograder-KIND-UID``, created 0700; refused (``PermissionError``) unless it is a real
    directory of this user that nobody else may enter: what the grader keeps there (core claims,
    cached lists of forbidden functions) is never decided by someone else. (``autograder.sandbox.zygote``
    keeps its own copy, ``socket_dir``: it runs as a script, standard library only.)"""
    import os
    import stat
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"autograder-{kind}-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of uid {os.geteuid()} (mode "
                              f"{st.st_mode & 0o7777:o}, owner {st.st_uid})")
    return path
