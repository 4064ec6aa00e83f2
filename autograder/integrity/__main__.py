"""``python -m autograder.integrity``: mutation testing and hostile submissions."""
import sys

from autograder.integrity import main

sys.exit(main())
