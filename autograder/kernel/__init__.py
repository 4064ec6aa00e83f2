"""Code that runs inside the student's kernel, standard library only at import.

- :mod:`autograder.kernel.guard`: the in-kernel guard, driven by the grader's
  :class:`autograder.preprocessors.GuardedExecute` through authenticated silent steps;
- :mod:`autograder.kernel.references`: binds reference versions of earlier exercises'
  functions while a later exercise's tests run (exercise isolation).

Nothing here imports nbgrader, nbformat or anything of the grader's side.
"""
