"""``python -m autograder.run_nbgrader ARGS``: nbgrader's command line (``python -m nbgrader ARGS``),
as the autograder runs it, with two differences that change no result:

- it pins its process to the CPU in ``AUTOGRADER_CPU`` when that is set (see
  :mod:`autograder.cores`), before anything else runs; its kernels inherit the CPU;
- it starts without ``rfc3987_syntax``. nbgrader imports nbformat, which imports jsonschema,
  whose format checker imports that package when it is installed (jupyter-events asks for it)
  and builds its IRI grammar (a Lark Earley parser) at import: ``python -m nbgrader --version``
  takes 3.0 s on this project's machines, 1.3 s without it (2026-12-06). jsonschema
  treats the package as optional and then has no checker for the ``iri`` and
  ``iri-reference`` formats; no schema nbgrader or nbformat validates uses them. The
  autograder's own processes (``python -m autograder``, its Dask tasks) skip it the same way
  (:func:`skip_iri_grammar`);
- it stamps a new gradebook with nbgrader's schema revision computed in process
  (:func:`alembic_head_in_process`): nbgrader's ``Gradebook`` runs ``alembic heads`` in a
  subprocess for it, which took 5.8 s of the 10 s of a first ``nbgrader generate_assignment``
  on this project's machines (2026-12-07); the revision is the same, read from the same scripts.
"""
from __future__ import annotations

import os
import sys


def skip_iri_grammar() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` in this process (see above); call it before
    anything imports nbformat or jsonschema (no effect after)."""
    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: `import` raises ImportError


def alembic_head_in_process() -> None:
    """Make ``nbgrader.api.get_alembic_version`` (which a ``Gradebook`` calls when it creates a
    gradebook, to stamp its schema revision) read the head revision of nbgrader's migration
    scripts in this process, through alembic's ``ScriptDirectory``, instead of running the
    ``alembic heads`` command: the same scripts, the same answer, without a second interpreter
    that imports alembic and SQLAlchemy again. Imports ``nbgrader.api``; idempotent."""
    import nbgrader.api as api
    from nbgrader import dbutil

    if getattr(api.get_alembic_version, "in_process", False):
        return

    def get_alembic_version() -> str:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", dbutil.ALEMBIC_DIR)
        return ScriptDirectory.from_config(config).get_current_head()

    get_alembic_version.in_process = True
    get_alembic_version.original = api.get_alembic_version  # nbgrader's, for the test that compares them
    api.get_alembic_version = get_alembic_version


def main() -> None:
    cpu = os.environ.pop("AUTOGRADER_CPU", "")
    if cpu.isdigit():
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError as e:  # a CPU gone since the claim: grade unpinned rather than not at all
            print(f"autograder: not pinned to CPU {cpu} ({e})", file=sys.stderr)
    skip_iri_grammar()
    from nbgrader.apps.nbgraderapp import main as nbgrader_main

    alembic_head_in_process()

    sys.argv[0] = "nbgrader"
    nbgrader_main()


if __name__ == "__main__":
    main()
