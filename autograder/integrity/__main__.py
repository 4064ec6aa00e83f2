"""``python -m autograder.integrity``: mutation testing and hostile submissions."""
import sys

from autograder.integrity import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
