"""``python -m autograder``: see :mod:`autograder.cli`."""
import sys

from autograder.run_nbgrader import skip_iri_grammar

skip_iri_grammar()  # 1.6 s of this process's start-up, and of each local Dask worker's (they import this module)

from autograder.cli import main  # noqa: E402

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
