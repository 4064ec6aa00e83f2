"""A student distribution of the course: the labs and the library, without the instructor's material.

``python -m autograder student-dist [--out DIR]`` (``make student-dist``) writes, by default to
``_build/student/``, a folder a student can install and work in on their own machine:

- ``notebooks/``: the release notebooks (what ``nbgrader generate_assignment`` gives students);
- the course's library packages (``c.GuardedExecute.library_packages``) as they are, but for its
  reference modules (``labrefs``), each replaced by a stub whose ``reference_versions`` binds
  nothing: a visible test that would isolate an exercise runs on the student's own functions;
- ``pyproject.toml`` for those packages, the course's pinned ``requirements.txt`` with the
  autograder left out, a ``Makefile`` (``make install``, ``make lab``) and a ``README.md``.

Nothing else: no source notebook (solutions, hidden tests), no reference version, no autograder,
no test, no mutant. ``tests/test_student_dist.py`` checks that no line of those is in it.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from autograder.config import course_settings, course_root
from autograder.edition import copy_package, package_dirs
from autograder.grading import RELEASE_DIR, discover_labs, release_path

__all__ = ["build_student_dist", "STUB"]

#: a reference module as students get it
STUB = '''\
"""Reference versions of the labs' functions: not in the student distribution.

When a lab is graded, a later exercise's tests use reference versions of the earlier exercises'
functions, so that one mistake costs points once. Here ``reference_versions`` binds nothing: the
visible tests run on your own functions.
"""
import contextlib

REFERENCES = {}


@contextlib.contextmanager
def reference_versions(namespace, lab, *names):
    """Binds nothing in the student distribution: the block runs with your own functions."""
    yield
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "dgm-course-labs"
version = "{version}"
description = "Deep Generative Models course: the labs and the course's library (student distribution)"
requires-python = ">=3.10"
dependencies = ["torch>=2.1", "numpy", "scipy", "matplotlib"]

[tool.setuptools.packages.find]
include = [{packages}]

[tool.setuptools.package-data]
{package_data}
'''

MAKEFILE = '''\
# make install   a virtualenv in .venv with the pinned requirements
# make lab       JupyterLab on the labs (figures inline, CUDA when present)
SHELL  := /bin/bash
PYTHON ?= python3
BIN    := .venv/bin
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" (a CPU-only PyTorch)
PIP_ARGS ?=

# Extra JupyterLab arguments, e.g. LAB_ARGS="--no-browser --port 8899"
LAB_ARGS ?=
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: install lab
install: .venv/.installed
.venv/.installed: requirements.txt pyproject.toml
\t@test -x $(BIN)/python || $(PYTHON) -m venv .venv
\t$(BIN)/python -m pip install --disable-pip-version-check -q $(PIP_ARGS) -r requirements.txt
\t@touch $@
lab: .venv/.installed
\t$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(ALLOW_ROOT) $(LAB_ARGS)
'''

README = '''\
# Deep Generative Models: the labs

One lab per chapter, in `notebooks/labNN/labNN.ipynb`.

```bash
make install   # a virtualenv in .venv (a few minutes: PyTorch is the big part)
make lab       # JupyterLab on the labs
```

Fill in the cells marked `# YOUR CODE HERE`, and run the visible test cell under each exercise to
check yourself. The hidden tests run when your lab is graded. Labs: {labs}.
'''


def _requirements(text: str) -> str:
    """The course's pins, the course package installed without the autograder extra."""
    out = []
    for line in text.splitlines():
        if re.match(r"^-e\s+\.(\[.*\])?\s*$", line.strip()):
            out.append("-e .")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def build_student_dist(out: str | os.PathLike | None = None, repo: str | os.PathLike | None = None) -> Path:
    """Write the student distribution into ``out`` (replaced if it exists); returns its path."""
    repo = course_root(repo)
    settings = course_settings(repo)
    out = Path(out) if out is not None else repo / "_build" / "student"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    labs = discover_labs(repo)
    for lab in labs:
        target = out / RELEASE_DIR / lab / f"{lab}.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copyfile(release_path(lab, repo), target)
    packages = settings["library_packages"]
    references = set(settings["reference_modules"])
    for name, directory in package_dirs(packages).items():
        if name in references:
            (out / name).mkdir()
            (out / name / "__init__.py").write_text(STUB)
        else:
            copy_package(directory, str(out / name))
    data = {}
    for name in packages:
        folder = out / name
        kinds = sorted({f"{p.parent.relative_to(folder).as_posix()}/*{p.suffix}" for p in folder.rglob("*")
                        if p.is_file() and p.suffix not in (".py",) and p.parent != folder})
        if kinds:
            data[name] = kinds
    version = re.search(r'^version = "([^"]+)"', (repo / "pyproject.toml").read_text(), re.M)
    (out / "pyproject.toml").write_text(PYPROJECT.format(
        version=version.group(1) if version else "0",
        packages=", ".join(f'"{p}*"' for p in packages),
        package_data="\n".join(f"{name} = {kinds!r}".replace("'", '"') for name, kinds in data.items()),
    ))
    (out / "requirements.txt").write_text(_requirements((repo / "requirements.txt").read_text()))
    (out / "Makefile").write_text(MAKEFILE)
    (out / "README.md").write_text(README.format(labs=", ".join(labs)))
    return out


if __name__ == "__main__":  # pragma: no cover
    print(build_student_dist())
