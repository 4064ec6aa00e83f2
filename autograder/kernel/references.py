"""Exercise isolation, kernel side: bind reference versions of earlier exercises' functions.

A lab's later exercise often calls the functions written in earlier ones (Lab 1's ``elbo_mc``
draws its samples with the student's ``reparameterize``). Graded naively, one mistake in an
earlier exercise then costs the points of the later one too. The course keeps, per lab, a table
``{name in the notebook: reference function with the lab's signature}`` (this course's is the
``labrefs`` package; ``GuardedExecute.reference_modules`` names it to the grader), and the test
cells of a later exercise run inside

    with reference_versions(globals(), "lab01", "reparameterize", "gaussian_log_prob"):
        ...

where the course's ``reference_versions`` calls :func:`bind_references` with that table. For the duration of the
block each named notebook global is the reference version; the student's own binding (or its
absence) is put back afterwards, however the block ends. Stdlib only: this runs in the
student's kernel.

In autograde every function of this module and of the course's reference modules is forbidden to
student code (:mod:`autograder.preprocessors.execute` adds them to each lab's forbidden map).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, MutableMapping

__all__ = ["bind_references", "module_functions"]

_MISSING = object()


@contextlib.contextmanager
def bind_references(table: Mapping[str, Mapping[str, Callable]], namespace: MutableMapping,
                    lab: str, *names: str) -> Iterator[None]:
    """Within the block, ``namespace[name]`` is ``table[lab][name]`` for each of ``names``."""
    if not isinstance(namespace, MutableMapping):
        raise TypeError(f"reference_versions: namespace must be a dict such as globals(), got {type(namespace).__name__}")
    entries = table.get(lab)
    if entries is None:
        raise KeyError(f"reference_versions: no reference versions for {lab!r}; labs with some: {sorted(table)}")
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise KeyError(f"reference_versions: {lab} has no reference version of {unknown}; it has {sorted(entries)}")

    def bound(name: str) -> Callable:
        # Looks the reference up when called rather than holding it, so that the guard sees
        # library code calling a library function (not a frame forwarding a reference it was
        # handed, which it judges by the caller: the student's function).
        def reference(*args, **kwargs):
            return table[lab][name](*args, **kwargs)

        reference.__name__ = name
        reference.__qualname__ = f"reference_versions.{name}"
        reference.__doc__ = f"The reference version of {name} ({lab}), bound while the tests of a later exercise run."
        return reference

    saved = {name: namespace.get(name, _MISSING) for name in names}
    try:
        for name in names:
            namespace[name] = bound(name)
        yield
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def module_functions(module) -> list[str]:
    """Every function defined in ``module`` (classes aside): what the guard forbids student code."""
    return sorted(
        name for name, value in vars(module).items()
        if callable(value) and getattr(value, "__module__", None) == module.__name__ and not isinstance(value, type)
    )
