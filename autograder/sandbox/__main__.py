"""``python -m autograder.sandbox``: see :mod:`autograder.sandbox.launcher`."""
import sys

from autograder.sandbox.launcher import main

sys.exit(main())
