"""Where the course is, and the course's settings for the autograder.

Nothing in the autograder knows where a checkout lies. The course root is, in this order: the
directory passed in (``--course``), ``$AUTOGRADER_COURSE_ROOT``, or the nearest directory at or
above the working directory that holds ``nbgrader_config.py``. The course's own settings come
from that file's ``c.Autograder`` section:

- ``c.Autograder.mutants_dir``: the plausible mistakes, one ``LAB.py`` per lab (integrity);
- ``c.Autograder.submissions_dir``: example submissions ``LAB/STUDENT/LAB.ipynb`` (the demo);
- ``c.GuardedExecute.reference_modules``: modules with a ``REFERENCES`` table
  ``{lab: {name: reference function}}`` (exercise isolation; the hostile cases borrow them).

Relative paths are taken from the course root.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

__all__ = ["CONFIG_FILE", "CourseNotFound", "course_root", "course_settings"]

CONFIG_FILE = "nbgrader_config.py"


class CourseNotFound(FileNotFoundError):
    """No course directory (no ``nbgrader_config.py``) was given or found."""


def course_root(root: str | os.PathLike | None = None) -> Path:
    """The course directory: ``root`` if given, else ``$AUTOGRADER_COURSE_ROOT``, else the nearest
    directory at or above the working directory holding ``nbgrader_config.py``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("AUTOGRADER_COURSE_ROOT")
    if env:
        path = Path(env)
        if not (path / CONFIG_FILE).is_file():
            raise CourseNotFound(f"AUTOGRADER_COURSE_ROOT={env} holds no {CONFIG_FILE}")
        return path
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    raise CourseNotFound(
        f"no course found: no {CONFIG_FILE} in {here} or above it; run from the course directory, "
        "pass --course DIR or set AUTOGRADER_COURSE_ROOT"
    )


@lru_cache(maxsize=None)
def _load(config_path: str, mtime_ns: int) -> dict:
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(os.path.basename(config_path), path=os.path.dirname(config_path)).load_config()
    section = config.get("Autograder", {})
    execute = config.get("GuardedExecute", {})
    return {
        "mutants_dir": section.get("mutants_dir"),
        "submissions_dir": section.get("submissions_dir"),
        "reference_modules": list(execute.get("reference_modules", [])),
        "library_packages": list(execute.get("library_packages", [])),
    }


def course_settings(root: str | os.PathLike | None = None) -> dict:
    """``{mutants_dir, submissions_dir: Path | None, reference_modules, library_packages: [str]}``
    from the course's ``nbgrader_config.py``."""
    base = course_root(root).resolve()
    path = base / CONFIG_FILE
    if not path.is_file():
        raise CourseNotFound(f"{base} holds no {CONFIG_FILE}")
    raw = dict(_load(str(path), path.stat().st_mtime_ns))
    for key in ("mutants_dir", "submissions_dir"):
        if raw[key]:
            raw[key] = base / raw[key]
    return raw
