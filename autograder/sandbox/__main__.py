"""``python -m autograder.sandbox``: see :mod:`autograder.sandbox.launcher`."""
import sys

from autograder.sandbox.launcher import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
