"""A hardened nbgrader autograder for courses whose labs are Jupyter notebooks.

One subpackage or module per stage:

- :mod:`autograder.config`: where the course is and its settings (``nbgrader_config.py``);
- :mod:`autograder.grading`: labs, releases, scratch courses, batches and scores;
- :mod:`autograder.preprocessors`: the nbgrader preprocessors (restore cells, guarded
  execution, stderr, feedback without hidden tests);
- :mod:`autograder.kernel`: what runs inside the student's kernel (the guard, exercise
  isolation), standard library only;
- :mod:`autograder.sandbox`: the operating-system sandbox the kernels start in;
- :mod:`autograder.integrity`: mutation testing and hostile submissions;
- :mod:`autograder.parallel`: a class graded in parallel on Dask distributed;
- :mod:`autograder.cli`: ``python -m autograder``.

Its dependencies (nbgrader, nbformat, traitlets, dask) are its own: the course library
(``gmlib``) never imports it, and it imports the course's packages only by the names
``nbgrader_config.py`` gives it.
"""
