"""Helpers for the lab notebooks: a blank lab that runs from top to bottom.

A released lab holds a ``raise NotImplementedError()`` in each function the student writes, and
the cells after it (a demonstration, the visible tests, a figure) call those functions. In a
front end, "Restart Kernel and Run All Cells..." would stop at Exercise 1's first call, and a later
cell would fail on a name a skipped cell never defined. :func:`note_unfinished_exercises`, called
by a lab's setup cell with the lab's functions and their exercise numbers, turns both into one
line of text instead of an error::

    Exercise 2 is not implemented yet (`gaussian_kl` raises NotImplementedError): this cell is skipped.
    Write the function in Exercise 2's solution cell, run that cell, then this one.

and the run goes on to the next cell; a later cell of the same exercise says only ``Skipped:
Exercise 2 is not implemented yet.``, and a cell that fails on a name bound by a skipped cell
says which exercise it waits for. Any other error is reported as usual.

This applies only to cells a person runs from a front end (JupyterLab, Notebook 7, VS Code: their
execute requests allow stdin). When a tool runs the notebook (nbclient: nbgrader's Validate and
autograde, nbval, ``jupyter nbconvert --execute``; all send ``allow_stdin = False``), an unfinished
exercise fails its cells exactly as before, so Validate still lists what is missing and a blank
exercise still scores zero. Under the course's grader (whose in-kernel guard owns the shell's error
handling) nothing is installed at all.

Uses only what IPython puts in the kernel (``get_ipython`` in builtins): gmlib does not import IPython.
"""
from __future__ import annotations

import ast
import builtins
import sys
import types
from typing import Mapping

__all__ = ["note_unfinished_exercises"]

# The course grader's in-kernel guard (autograder.kernel.guard) is imported by its setup step,
# before any cell runs; it snapshots the shell's error handling, so nothing may change it there.
_GRADER_GUARD = "autograder.kernel.guard"

_active: "_UnfinishedExercises | None" = None


def note_unfinished_exercises(functions: Mapping[str, int]) -> bool:
    """Report unfinished exercises in one line each instead of stopping "Run All" (see the module).

    functions: the name of each function the student writes -> its exercise number, e.g.
    ``{"categorical_entropy": 1, "gaussian_kl": 2}``. Calling it again (the setup cell run twice)
    replaces the earlier call's handler. Returns whether it is active (False outside IPython and
    under the course's grader).
    """
    global _active
    if not isinstance(functions, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in functions.items()):
        raise ValueError("note_unfinished_exercises: give a mapping of function names (str) to exercise numbers (int)")
    get_ipython = getattr(builtins, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    if shell is None or _GRADER_GUARD in sys.modules or not hasattr(shell, "set_custom_exc"):
        return False
    if _active is not None:
        _active.remove()
    _active = _UnfinishedExercises(shell, dict(functions))
    return True


def _person_at_the_front_end(shell) -> bool:
    """Whether the running cell came from a front end (stdin allowed) rather than from a tool."""
    kernel = getattr(shell, "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


def _bound_names(source: str) -> set[str]:
    """The names a cell binds at its top level (assignments, loops, imports, def, class, with)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


class _UnfinishedExercises:
    def __init__(self, shell, functions: dict[str, int]):
        self.shell = shell
        self.functions = functions
        self.announced: set[int] = set()  # exercises whose full message was printed
        self.waiting: dict[str, int] = {}  # a name a skipped cell would have bound -> its exercise
        self.skipped: int | None = None  # the exercise the running cell was skipped for
        self.names_before: set[str] = set()  # the notebook's names when the running cell started
        shell.set_custom_exc((NotImplementedError, NameError), self._handle)
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)

    def remove(self):
        self.shell.set_custom_exc((), None)
        for event, hook in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                self.shell.events.unregister(event, hook)
            except ValueError:
                pass

    def _pre_run_cell(self, info=None):
        self.names_before = set(self.shell.user_ns)

    def _unfinished(self, etype, value, tb) -> tuple[int, str] | None:
        """(exercise, function) for a NotImplementedError raised by one of the lab's functions."""
        if not issubclass(etype, NotImplementedError):
            return None
        found = None
        while tb is not None:  # the innermost of the lab's functions on the stack
            name = tb.tb_frame.f_code.co_name
            if name in self.functions:
                found = (self.functions[name], name)
            tb = tb.tb_next
        return found

    def _handle(self, shell, etype, value, tb, tb_offset=None):
        note = None
        if _person_at_the_front_end(shell):
            unfinished = self._unfinished(etype, value, tb)
            if unfinished is not None:
                exercise, function = unfinished
                if exercise in self.announced:
                    note = f"Skipped: Exercise {exercise} is not implemented yet."
                else:
                    note = (f"Exercise {exercise} is not implemented yet (`{function}` raises NotImplementedError): "
                            f"this cell is skipped.\nWrite the function in Exercise {exercise}'s solution cell, "
                            f"run that cell, then this one.")
            elif issubclass(etype, NameError) and getattr(value, "name", None) in self.waiting:
                exercise = self.waiting[value.name]
                note = (f"Skipped: `{value.name}` comes from a cell above that was skipped while Exercise "
                        f"{exercise} was not implemented; run that cell first.")
        if note is None:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        self.skipped = exercise
        self.announced.add(exercise)
        print(note)
        return None

    def _post_run_cell(self, result):
        exercise, self.skipped = self.skipped, None
        if exercise is None or result is None or result.error_in_exec is None:
            return
        source = getattr(getattr(result, "info", None), "raw_cell", None) or ""
        user_ns = self.shell.user_ns
        for name in _bound_names(source):
            if name in self.names_before:
                continue  # it was there before the cell: left as it is
            if name in user_ns and isinstance(user_ns[name], (types.ModuleType, types.FunctionType, type)):
                continue  # an import, a def or a class the cell completed before it stopped
            # never bound, or bound before the cell stopped (``curves = {}`` and then a loop that
            # calls the unfinished function): a later cell would see it half made and fail obscurely
            user_ns.pop(name, None)
            self.waiting[name] = exercise
        result.error_in_exec = None  # the cell counts as run: "Run All" goes on
