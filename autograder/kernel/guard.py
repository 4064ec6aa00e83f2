r"""Grading-time defences for the labs: limits on the kernel, and a guard inside it.

Two parts live in this module.

**The grader side**, :class:`GuardedExecute`, an nbgrader autograde preprocessor that takes the
place of nbgrader's ``Execute`` in ``c.Autograde.autograde_preprocessors``. Besides running the
cells as ``Execute`` does, it

- gives every code cell the per-cell time limit ``timeout`` (inherited; on timeout the kernel
  is interrupted and the cell gets a ``CellTimeoutError`` output, as with nbgrader) **and**
  charges all cells to a per-notebook wall-clock budget ``notebook_timeout`` (kernel start and
  guard steps included): a cell's limit is capped by what is left of the budget (the cell that
  runs it out gets a ``NotebookTimeLimit`` error), and once it is spent every remaining code
  cell gets ``NotebookTimeLimit: not run: ...`` without running;
- survives a kernel that dies (``os._exit``, a segmentation fault, the memory limit, SIGKILL):
  the cell that was running gets a ``KernelDied`` error output naming the exit status and the
  likely reasons, every later code cell gets ``KernelDied: not run: the kernel died in cell N``
  (N counts the notebook's cells from 0, markdown included; a ``grade_id`` is added when the
  cell has one), and preprocessing returns normally, so nbgrader records the grades of the
  cells that ran. A kernel that ignores the interrupt sent at a time limit is killed and
  handled the same way. Nothing is retried (nbgrader 0.9's ``Execute`` does not use its
  ``execute_retries`` either), so a deliberate crash costs one kernel, not several;
- caps the outputs as they arrive (the messages are inspected one by one; nothing is
  accumulated first): at most ``max_cell_output_bytes`` per cell and
  ``max_notebook_output_bytes`` per notebook of stream and display outputs are kept, the rest is
  replaced by one note per cell, ``[output truncated by the grader: N bytes not kept]``;
  consecutive stream messages are merged into one output (as a front end shows them), and a
  cell keeps at most ``max_cell_outputs`` outputs. ``error`` outputs are never dropped (one
  longer than ``max_error_bytes`` is shortened; beyond ``max_error_outputs`` errors in a cell
  the newest replaces the last one kept), and a ``clear_output`` message removes every output of
  the cell **except** its errors and the note: a hook that clears the output of a failed test
  cannot erase the failure. ``update_display_data`` messages that would break the caps are
  ignored, and widget comm messages too unless ``allow_widgets`` is set (an Output widget can
  capture a cell's outputs);
- runs the in-kernel guard (below) through silent requests that are not cells and leave no
  trace in the notebook: a *setup* step right after the kernel starts, before any cell; a
  *restore* step before every grade cell (nbgrader ``grade: true``); a *locked* step after every
  locked cell (``locked: true``, ``solution: false``, with a ``grade_id``: cells that nbgrader
  restored from the gradebook) and every grade cell, which records the notebook globals the cell
  bound (:func:`bound_names`) and, after a grade cell, checks that nothing protected was changed
  while it ran and whether it raised. Each answer is authenticated (an HMAC-SHA256 over a fresh
  nonce with a key the kernel made at setup, before any student code ran, and that never
  travels in a cell's code), so student code cannot answer in the guard's place. When a step
  fails (an error, a timeout, a forged or missing answer: the student broke the guard) every
  grade cell from then on gets a ``GraderIntegrityError`` output instead of running: a broken
  guard never lets a test pass. What the restore step put back is logged and shown at the top
  of the grade cell's output, ``[grader] restored before this test: ...``; what changed while
  the test ran fails it with ``GraderIntegrityError``; an exception the test raised whose
  error output was suppressed is added back as an error output.

**The kernel side**, :func:`kernel_step` and the private ``_KernelGuard``. The kernel imports
this module (it imports only the standard library at module level; ``GuardedExecute`` is built
on first access, so the kernel never imports nbgrader) in the setup step with the notebook's
directory removed from ``sys.path``, so a ``gmlib`` package shipped next to the notebook cannot
stand in for it, and the setup fails when ``gmlib`` does not come from the grader's directory.
The setup

- imports and snapshots the objects the tests rely on: every attribute (dunders aside) of the
  ``protected_modules`` (builtins, math, numpy, numpy.testing, numpy.linalg, torch,
  torch.testing, torch.nn, torch.nn.functional, torch.linalg, torch.distributions) and of every
  gmlib library module (every ``gmlib/*.py`` but the grader's own: modules whose source imports
  nbgrader, nbclient, nbformat, jupyter_client or matplotlib); the class dictionaries of the
  mutable classes found there (``torch.Tensor``, ``torch.nn.Module`` and the layers, the
  distributions, gmlib's classes, ...); the ``__code__``, ``__defaults__`` and
  ``__kwdefaults__`` of every Python function among them (and the closure cells of gmlib's); for
  numpy.testing, torch.testing and gmlib also the modules that define their functions
  (``torch.testing._comparison``, ``numpy.testing._private.utils``: the helpers that
  ``assert_close`` and ``assert_allclose`` look up when they run); ``sys.modules``, most of
  ``sys`` (hooks, streams, ``meta_path``, ``path_hooks``, ``path``), ``gc.callbacks``, the
  tracing hooks of ``threading``, the ``__builtins__`` of the notebook namespace;
- snapshots the IPython machinery that decides whether an error is reported: the shell's
  ``showtraceback``/``_showtraceback``, ``InteractiveTB``, ``SyntaxTB``, ``custom_exceptions``
  and ``CustomTB`` (``set_custom_exc``), ``display_pub``, ``displayhook``,
  ``display_formatter``, ``events``, ``compile``, ``run_cell`` and friends, the AST and input
  transformers; the kernel's ``session`` (``session.send``), iopub socket and thread; the class
  dictionaries of all their classes, and which instance attributes they had (an instance
  attribute added later that shadows a method is removed);
- makes ``ExecutionResult.error_in_exec`` and ``error_before_exec`` (what ipykernel turns into
  the reply's status) record every exception set on them, so that a ``post_run_cell`` hook
  resetting them and a suppressed traceback cannot hide that a test failed;
- moves the notebook's directory to the end of ``sys.path``: a module shipped with the
  submission still imports under its own name but no longer shadows an installed one;
- installs the forbidden-reference checks (below), then takes the snapshot, so the checks are
  part of what is restored.

Before every grade cell the restore step puts back every snapshotted binding that was changed
(for the protected classes it also removes the attributes added since), resets
``sys.settrace``/``sys.setprofile``, drops ``IPYKERNEL_CELL_NAME``, restores the
``pre_execute``, ``pre_run_cell`` and ``post_execute`` callbacks (callbacks added by library
code, such as matplotlib's, are kept, those defined by the notebook removed; ``post_run_cell``
callbacks are all kept: they run after the test, cannot hide its failure, and what they change
is caught by the check after it), drops from ``sys.modules`` the modules imported since setup
from outside the library that shadow a library module, and puts back the notebook globals bound
by the locked cells to the objects those cells bound (for dicts, lists and sets of plain data and
for tensors and arrays of up to a million elements also their contents; for functions their
code, defaults and closure cells; for classes defined there their dictionaries). A name bound by
a read-only cell belongs to it and is restored, with a note, even if a solution cell rebinds it;
a name bound by a test cell is restored silently (demo cells reuse names such as ``encoder`` or
``p``) until a solution cell binds it (a later exercise may ask for a function of that name);
names bound only by other cells, the functions of the solution cells in particular, are never
touched. One rebinding is accepted rather than undone: library code replacing a protected
function by a library wrapper of it (``torch._dynamo``, imported by the first
``optimizer.step()``, wraps ``torch.manual_seed``).
The guard puts back its own code, globals and the builtins first, from references it took at
setup, so patching it or ``builtins.setattr`` does not stop a restore.

**Forbidden references.** The notebook metadata ``metadata.gmlib.forbidden`` maps module names
to attribute names, e.g. ``{"gmlib.gan": ["discriminator_loss", "GAN"], "torch.nn.functional":
["binary_cross_entropy_with_logits"]}``; a dotted name forbids a method of a class of the module
(``{"gmlib.probability": ["ConjugateGaussian.elbo_mc"]}``). In autograde the map is read from
the course's *source* notebook too (the submitted copy's metadata is the student's to edit), and
every function of :mod:`gmlib.references` is added (the reference versions that isolate the
exercises); all of it is merged with the submitted notebook's map and the ``forbidden`` trait.
While the notebook runs, a call to one of them raises :class:`ForbiddenCall` (an ``AssertionError``, so the test that triggered it fails)
when it comes from student code, and goes through when it comes from a locked cell (the tests
call the reference to compare) or from library code (gmlib calling its own helpers, torch
internals). The caller is the frame that called the function (``sys._getframe``, captured at
import):

- *a locked cell* when its code object's file name is the one ipykernel gives the source of a
  locked cell (``shell.compile.get_code_name(source, source, 0)``, a hash of the raw source,
  computed at setup with ``IPYKERNEL_CELL_NAME`` removed) and it runs in the notebook
  namespace. The call must also be made through a name the locked cells own: the callee
  expression of the call in progress (read from the cell's source at the instruction's
  position) must start from a name a locked cell binds, a local of a function defined in one,
  or a builtin. ``ref.gaussian_kl(x)`` or ``discriminator_loss(x)`` imported by the setup cell
  is the test calling the reference; ``d_loss(x)``, where a solution cell made ``d_loss`` the
  reference, a ``functools.partial`` of it or a library wrapper around it, is the student
  handing the reference to the test, and is refused;
- *library code* when its file is a real file under the gmlib package directory,
  ``sys.prefix``, ``sys.base_prefix`` or the exec prefixes (or a frozen stdlib module), unless
  that frame merely forwards a callable it was handed (one of its local variables is the
  forbidden object, a ``functools.partial`` or a bound method of it: ``torch.no_grad()(f)``,
  ``gmlib.train.train(loss_fn=f)``): then the frame that called it is judged instead;
- *student code* otherwise: solution cells, cells the student added, ``exec``/``eval``
  strings, files the student wrote.

This works whatever alias the student holds (a default argument, a closure, a name imported
under another name, ``functools.partial``), because the object itself is changed: a Python
function keeps its identity and gets a new ``__code__``, a trampoline (with as many free
variables as the function has closure cells, so closures work too) that checks the caller and
then runs a copy of the original function; a class gets an ``__init__`` that checks whoever
instantiates it and then runs the original ``__init__`` (a subclass written by the student is
refused, a library subclass is not). Objects that can take neither, C builtins (say
``torch.binary_cross_entropy_with_logits``) and immutable classes, are replaced by a checking
wrapper in their module and, before every grade cell, wherever the notebook globals hold the
original.

**What this cannot do.** Everything here runs in the same Python process as the student's code,
so a determined attacker who reads this module can in the end undo it: take the original
function out of the trampoline's closure or a C function from another path
(``torch._C._VariableFunctions``, ``torch.ops.aten``), forge a code object's file name to pass
for a locked cell or a library file (``compile(src, filename, ...)``), reach the HMAC key
through the step function's closure or ``gc``, swap the code of the guard's step function,
patch a helper of the reference that is not snapshotted (a ``torch._C`` submodule, the global
forward hooks of ``torch.nn``), change an object's state rather than a binding (the weights of a
module bound in a setup cell), rebind a test's own names from inside a student function that
the test calls, drive the test's frame from a trace function, or have a thread change something
just while a test runs and undo it before the check that follows. Some holes need no reading of
this module and are the lab's to close: a library function that calls the reference internally
is allowed unless it is forbidden too, and a helper defined in a locked cell that calls a
callable passed to it as an argument is trusted with it. The restore and the checks make the
rest take deliberate work; they stop the attacks the issue lists: rebinding or re-coding the
tests' helpers (``numpy.testing``, ``torch.allclose``, ``torch.testing.assert_close``, gmlib's
functions and check helpers, the helpers and data of locked cells such as a ``forbidden_calls``
context manager and its ``FORBIDDEN`` table), ``set_custom_exc``, a replaced
``showtraceback``/``session.send``/display publisher, AST or input transformers that rewrite the
tests, ``pre_run_cell`` hooks, ``clear_output`` or a reset error from a ``post_run_cell`` hook, a
patched builtin, a thread that keeps patching, a shipped module that shadows a library, a
``gmlib`` package shipped with the submission, and calling a forbidden reference through any
alias (tests in ``tests/test_guard.py``). The kernel's resources, network and file system are
confined elsewhere (``gmlib.sandbox``).

The guard costs well under a second per notebook: its setup imports what a lab's setup cell
imports anyway (torch, numpy) plus gmlib's library modules, and each step (about 10 ms)
compares a few thousand references.
"""
from __future__ import annotations

import ast
import functools
import gc
import hmac
import importlib
import json
import os
import re
import secrets
import sys
import types
import warnings
import weakref

__all__ = [
    "ForbiddenCall",
    "GuardError",
    "DEFAULT_PROTECTED_MODULES",
    "bound_names",
    "kernel_step",
]

#: modules whose attributes (and classes and functions) the guard snapshots by default;
#: gmlib's library modules are always added
DEFAULT_PROTECTED_MODULES = (
    "builtins",
    "math",
    "numpy",
    "numpy.testing",
    "numpy.linalg",
    "torch",
    "torch.testing",
    "torch.nn",
    "torch.nn.functional",
    "torch.linalg",
    "torch.distributions",
)
#: protected modules whose functions' defining modules are snapshotted as well (the course's
#: library packages are added at setup)
EXPANDED_MODULES = ("numpy.testing", "torch.testing")
#: the course's library packages (``GuardedExecute.library_packages``, sent at setup): their code
#: counts as library code, their modules are snapshotted, and they must come from the grader's
#: installation, not from the submission's directory
LIBRARIES: tuple = ()
#: gmlib modules that are part of the grader, not of the library the labs use
_GRADER_SOURCE = re.compile(r"^\s*(?:import|from)\s+(nbgrader|nbclient|nbformat|jupyter_client|matplotlib)\b", re.M)

_MISSING = object()
_EMPTY_CELL = object()
#: packages of the kernel machinery whose classes are snapshotted with the objects that use them
_KERNEL_PACKAGES = ("IPython", "ipykernel", "jupyter_client", "traitlets", "zmq", "tornado", "comm")
#: arrays (tensors, ndarrays) bound by locked cells up to this many elements have their values kept
_MAX_ARRAY = 1_000_000
_getframe = sys._getframe  # captured at import: rebinding sys._getframe later changes nothing here


class ForbiddenCall(AssertionError):
    """Student code called a reference function or class that the exercise asks to write."""


class GuardError(RuntimeError):
    """The in-kernel guard could not do its job (raised in the kernel, reported by the grader)."""


# ============================================================================
# Kernel side
# ============================================================================


def _mutable_class(cls) -> bool:
    """A class whose attributes can be set (not a static or immutable C type)."""
    return isinstance(cls, type) and not (cls.__flags__ & (1 << 8))  # Py_TPFLAGS_IMMUTABLETYPE


def _top(name) -> str:
    return name.split(".", 1)[0] if isinstance(name, str) else ""


def _same(a, b) -> bool:
    """Identity, counting two bound methods of one function on one object as the same."""
    if a is b:
        return True
    return (
        type(a) is types.MethodType
        and type(b) is types.MethodType
        and a.__func__ is b.__func__
        and a.__self__ is b.__self__
    )


def _plain(value, budget=10_000):
    """True for (nested) dicts, lists, tuples and sets of str/bytes/numbers/bool/None."""
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if v is None or type(v) in (str, bytes, int, float, bool, complex):
            continue
        if type(v) in (list, tuple, set, frozenset):
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            return False
    return True


def _function_state(fn, closures: bool):
    cells = fn.__closure__ if closures else None
    contents = None
    if cells:
        contents = []
        for cell in cells:
            try:
                contents.append(cell.cell_contents)
            except ValueError:
                contents.append(_EMPTY_CELL)
        contents = tuple(contents)
    return (fn, fn.__code__, fn.__defaults__, fn.__kwdefaults__, cells, contents)


def _sync_class(cls, saved, changed, label):
    """Put the class dictionary of ``cls`` back to ``saved``: rebound entries restored, added ones removed."""
    current = vars(cls)
    if len(current) == len(saved) and all(current.get(k, _MISSING) is v for k, v in saved.items()):
        return
    for key, value in saved.items():
        if current.get(key, _MISSING) is not value:
            try:
                setattr(cls, key, value)
                changed.append(f"{label}.{key}")
            except (AttributeError, TypeError):
                pass
    for key in [k for k in current if k not in saved]:
        try:
            delattr(cls, key)
            changed.append(f"{label}.{key} (added)")
        except (AttributeError, TypeError):
            pass


def _sync_function(entry, changed, label):
    fn, code, defaults, kwdefaults, cells, contents = entry
    if fn.__code__ is not code:
        fn.__code__ = code
        changed.append(f"{label} (its code)")
    if fn.__defaults__ is not defaults:
        fn.__defaults__ = defaults
        changed.append(f"{label} (its defaults)")
    if fn.__kwdefaults__ is not kwdefaults:
        fn.__kwdefaults__ = kwdefaults
        changed.append(f"{label} (its keyword defaults)")
    if cells:
        for cell, value in zip(cells, contents):
            try:
                current = cell.cell_contents
            except ValueError:
                current = _EMPTY_CELL
            if current is not value:
                if value is _EMPTY_CELL:
                    del cell.cell_contents
                else:
                    cell.cell_contents = value
                changed.append(f"{label} (a closure cell)")


class _Snapshot:
    """References to restore: module dicts, class dicts, function internals, lists, attributes."""

    def __init__(self):
        self.dict_entries = []  # (label, dict, key, value)
        self.class_entries = []  # (label, cls, dict copy)
        self.fn_entries = []  # (label, function state)
        self.list_entries = []  # (label, list, tuple of items, keep additions at the end?)
        self.attr_entries = []  # (label, obj, name, instance value, trait value)
        self.shadow_entries = []  # (label, obj, instance keys at setup, method names of its class)
        self._modules = set()
        self._classes = set()
        self._functions = set()
        #: accept(old, new) -> True when a library legitimately rebound a name (see sync)
        self.accept = None

    # -- building -------------------------------------------------------------------

    def add_function(self, fn, label, closures=False):
        if id(fn) in self._functions:
            return
        self._functions.add(id(fn))
        self.fn_entries.append((label, _function_state(fn, closures)))

    def add_class(self, cls, label, closures=False):
        if id(cls) in self._classes or not _mutable_class(cls):
            return
        self._classes.add(id(cls))
        saved = dict(vars(cls))
        self.class_entries.append((label, cls, saved))
        for key, value in saved.items():
            target = value
            if isinstance(value, (staticmethod, classmethod)):
                target = value.__func__
            elif isinstance(value, property):
                for part, name in ((value.fget, "getter"), (value.fset, "setter")):
                    if isinstance(part, types.FunctionType):
                        self.add_function(part, f"{label}.{key} ({name})", closures)
                continue
            if isinstance(target, types.FunctionType):
                self.add_function(target, f"{label}.{key}", closures)

    def add_module(self, module, label, *, classes_from=None, expand=False, closures=False):
        if classes_from is None:
            classes_from = ("torch", "numpy", *LIBRARIES)
        if id(module) in self._modules:
            return
        self._modules.add(id(module))
        namespace = vars(module)
        for key, value in list(namespace.items()):
            if key.startswith("__") and key.endswith("__"):
                continue
            if module.__name__ == __name__ and key in ("_STEP", "GuardedExecute"):
                continue  # this module's state, set after the snapshot
            self.dict_entries.append((label, namespace, key, value))
            if isinstance(value, types.FunctionType):
                self.add_function(value, f"{label}.{key}", closures)
                if expand:
                    home = sys.modules.get(getattr(value, "__module__", None) or "")
                    if isinstance(home, types.ModuleType) and home is not module:
                        self.add_module(home, home.__name__, classes_from=(), expand=False, closures=closures)
            elif isinstance(value, type) and _top(getattr(value, "__module__", "")) in classes_from:
                self.add_class(value, f"{label}.{key}", closures)

    def add_object(self, obj, label, pinned=(), volatile=()):
        """Pin ``obj``'s attributes ``pinned`` (instance or trait values), watch for shadowing."""
        inst = getattr(obj, "__dict__", None)
        if not isinstance(inst, dict):
            return
        traits = inst.get("_trait_values") if isinstance(inst.get("_trait_values"), dict) else None
        for name in pinned:
            trait = traits.get(name, _MISSING) if traits is not None else _MISSING
            self.attr_entries.append((label, obj, name, inst.get(name, _MISSING), trait))
        methods = set()
        for cls in type(obj).__mro__:
            if cls is object:
                continue
            for key, value in vars(cls).items():
                if isinstance(value, (types.FunctionType, staticmethod, classmethod, property)) or callable(value):
                    methods.add(key)
            if _top(cls.__module__) in _KERNEL_PACKAGES:
                self.add_class(cls, f"{cls.__module__}.{cls.__qualname__}")
        keys = frozenset(inst) | frozenset(volatile)
        self.shadow_entries.append((label, obj, keys, frozenset(methods - set(volatile))))

    def add_list(self, lst, label, keep_added=False):
        if isinstance(lst, list):
            self.list_entries.append((label, lst, tuple(lst), keep_added))

    # -- restoring ------------------------------------------------------------------

    def sync(self, changed):
        """Put back every binding that differs from the snapshot; append labels to ``changed``.

        One exception: a name that library code rebound to a wrapper of the original (a
        function defined in a library file whose ``__wrapped__`` is the snapshotted object:
        importing ``torch._dynamo``, which the first ``optimizer.step()`` does, wraps
        ``torch.manual_seed`` so) is accepted and becomes the new reference.
        """
        accept = self.accept
        for index, (label, namespace, key, value) in enumerate(self.dict_entries):
            current = namespace.get(key, _MISSING)
            if not _same(current, value):
                if accept is not None and current is not _MISSING and accept(value, current):
                    self.dict_entries[index] = (label, namespace, key, current)
                    continue
                namespace[key] = value
                changed.append(f"{label}.{key}" if label else key)
        for label, cls, saved in self.class_entries:
            _sync_class(cls, saved, changed, label)
        for label, state in self.fn_entries:
            _sync_function(state, changed, label)
        for label, lst, items, keep_added in self.list_entries:
            if len(lst) != len(items) or any(a is not b for a, b in zip(lst, items)):
                if keep_added:  # the original entries first, in their order; additions after them
                    wanted = list(items) + [x for x in lst if x not in items]
                    if wanted == lst:
                        continue
                    lst[:] = wanted
                else:
                    lst[:] = items
                changed.append(label)
        for label, obj, name, inst_value, trait_value in self.attr_entries:
            inst = obj.__dict__
            current = inst.get(name, _MISSING)
            if not _same(current, inst_value):
                if inst_value is _MISSING:
                    del inst[name]
                else:
                    inst[name] = inst_value
                changed.append(f"{label}.{name}")
            if trait_value is not _MISSING:
                traits = inst.get("_trait_values")
                if isinstance(traits, dict) and not _same(traits.get(name, _MISSING), trait_value):
                    traits[name] = trait_value
                    changed.append(f"{label}.{name}")
        for label, obj, keys, methods in self.shadow_entries:
            inst = obj.__dict__
            for key in [k for k in inst if k not in keys and k in methods]:
                del inst[key]
                changed.append(f"{label}.{key} (shadowing the method)")


class _Binding:
    """What a locked cell bound to a notebook global, with enough to restore its contents."""

    __slots__ = ("value", "plain", "array", "functions", "classes", "report")

    def __init__(self, value, snapshot_functions, report=True, contents=True):
        self.value = value
        self.report = report
        self.plain = None
        self.array = None
        self.functions = []
        self.classes = []
        if not contents:
            return
        if type(value) in (dict, list, set) and _plain(value):
            import copy

            self.plain = copy.deepcopy(value)
        torch = sys.modules.get("torch")
        numpy = sys.modules.get("numpy")
        if torch is not None and isinstance(value, torch.Tensor):
            if value.numel() <= _MAX_ARRAY and value.layout == torch.strided:
                self.array = value.detach().clone()
        elif numpy is not None and isinstance(value, numpy.ndarray):
            if value.size <= _MAX_ARRAY and value.dtype != object:
                self.array = value.copy()
        if snapshot_functions:
            self._functions(value, depth=0)

    def _functions(self, value, depth):
        if depth > 2:
            return
        if isinstance(value, types.FunctionType):
            self.functions.append(_function_state(value, closures=True))
            for cell in value.__closure__ or ():
                try:
                    inner = cell.cell_contents
                except ValueError:
                    continue
                if isinstance(inner, types.FunctionType):
                    self._functions(inner, depth + 1)
            wrapped = getattr(value, "__wrapped__", None)
            if isinstance(wrapped, types.FunctionType):
                self._functions(wrapped, depth + 1)
        elif isinstance(value, type) and _mutable_class(value) and value.__module__ == "__main__":
            self.classes.append((value, dict(vars(value))))
            for item in vars(value).values():
                if isinstance(item, types.FunctionType):
                    self._functions(item, depth + 1)

    def sync(self, name, namespace, changed):
        if not self.report:
            changed = []  # restored all the same, not worth a note
        if namespace.get(name, _MISSING) is not self.value:
            namespace[name] = self.value
            changed.append(f"notebook global {name}")
        value = self.value
        if self.plain is not None and value != self.plain:
            import copy

            fresh = copy.deepcopy(self.plain)
            if type(value) is dict:
                value.clear()
                value.update(fresh)
            elif type(value) is list:
                value[:] = fresh
            else:
                value.clear()
                value.update(fresh)
            changed.append(f"notebook global {name} (its contents)")
        if self.array is not None:
            self._sync_array(name, namespace, changed)
        for state in self.functions:
            _sync_function(state, changed, f"notebook global {name}")
        for cls, saved in self.classes:
            _sync_class(cls, saved, changed, f"notebook global {name}")

    def _sync_array(self, name, namespace, changed):
        value, saved = self.value, self.array
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(saved, torch.Tensor):
            with torch.no_grad():
                same = value.shape == saved.shape and value.dtype == saved.dtype and value.device == saved.device
                if same and not torch.equal(value, saved):  # equal, or different only by NaNs in the same places
                    both_nan = value.isnan() & saved.isnan() if value.is_floating_point() else None
                    same = both_nan is not None and bool(((value == saved) | both_nan).all())
                if same:
                    return
                try:
                    if value.shape != saved.shape or value.dtype != saved.dtype or value.device != saved.device:
                        raise ValueError("reshaped")
                    value.copy_(saved)
                except Exception:  # noqa: BLE001 - reshaped, an expanded view, ...: rebind a copy
                    self.value = namespace[name] = saved.clone()
            changed.append(f"notebook global {name} (its values)")
            return
        import numpy

        if value.shape == saved.shape and value.dtype == saved.dtype:
            if numpy.array_equal(value, saved, equal_nan=value.dtype.kind in "fc"):
                return
            try:
                value[...] = saved
            except Exception:  # noqa: BLE001 - read-only, ...
                self.value = namespace[name] = saved.copy()
        else:
            self.value = namespace[name] = saved.copy()
        changed.append(f"notebook global {name} (its values)")


def bound_names(source: str) -> list[str] | None:
    """The global names a cell's code binds or deletes at module level (``None``: unparsable).

    Assignments (including tuple targets, augmented and annotated ones, ``for`` and ``with``
    targets, the walrus operator anywhere outside lambdas), imports, ``def`` and ``class``,
    ``except ... as``, ``match`` captures, ``del``, and names declared ``global`` inside the
    cell's functions. IPython syntax (magics, ``!cmd``) is translated first when IPython is
    importable.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - no IPython, or a cell it cannot transform
        code = source
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()

    def scoped(node):
        """A function or class body: only its ``global`` declarations and walruses count."""
        for inner in ast.walk(node):
            if isinstance(inner, ast.Global):
                names.update(inner.names)

    class Visitor(ast.NodeVisitor):
        def visit_Name(self, node):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.id)

        def visit_FunctionDef(self, node):
            names.add(node.name)
            for item in node.decorator_list:
                self.visit(item)
            for default in list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(default)
            scoped(node)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ClassDef(self, node):
            names.add(node.name)
            for item in node.decorator_list + node.bases + [k.value for k in node.keywords]:
                self.visit(item)
            scoped(node)

        def visit_Lambda(self, node):
            for default in list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(default)

        def _comprehension(self, node):
            for inner in ast.walk(node):
                if isinstance(inner, ast.NamedExpr) and isinstance(inner.target, ast.Name):
                    names.add(inner.target.id)

        visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

        def visit_Import(self, node):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])

        def visit_ImportFrom(self, node):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name)

        def visit_ExceptHandler(self, node):
            if node.name:
                names.add(node.name)
            self.generic_visit(node)

        def visit_MatchAs(self, node):
            if node.name:
                names.add(node.name)
            self.generic_visit(node)

        def visit_MatchStar(self, node):
            if node.name:
                names.add(node.name)

        def visit_MatchMapping(self, node):
            if node.rest:
                names.add(node.rest)
            self.generic_visit(node)

    Visitor().visit(tree)
    return sorted(names)


def _call_sites(source):
    """{(line, end line, column, end column) of each call in ``source``: the root of its callee}.

    The root is the name the callee expression starts from (``ref`` for ``ref.f(x)``,
    ``IMPLS`` for ``IMPLS["x"](y)``), or ``"<expression>"`` (a call result, a lambda, ...).
    Positions are those CPython gives the call instruction (``co_positions``: UTF-8 columns).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    sites = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            while isinstance(func, (ast.Attribute, ast.Subscript)):
                func = func.value
            root = func.id if isinstance(func, ast.Name) else "<expression>"
            sites[(node.lineno, node.end_lineno, node.col_offset, node.end_col_offset)] = root
    return sites


def _trampoline_code(nfree: int, checker, name: str, qualname: str):
    """A code object ``(*args, **kwargs) -> checker(args, kwargs)`` with ``nfree`` free variables."""
    free = [f"_gmlib_guard_free{i}" for i in range(nfree)]
    lines = ["def _gmlib_guard_outer():"]
    lines += [f"    {v} = None" for v in free]
    lines.append("    def _gmlib_guard_trampoline(*args, **kwargs):")
    if free:
        lines.append("        if False:")
        lines.append("            " + ", ".join(free))
    lines.append("        return ...(args, kwargs)")
    lines.append("    return _gmlib_guard_trampoline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module_code = compile("\n".join(lines), "<gmlib.guard: forbidden-call check>", "exec")
    outer = next(c for c in module_code.co_consts if isinstance(c, types.CodeType))
    inner = next(c for c in outer.co_consts if isinstance(c, types.CodeType))
    if len(inner.co_freevars) != nfree:
        raise GuardError("could not build a trampoline with the right free variables")
    consts = tuple(checker if c is Ellipsis else c for c in inner.co_consts)
    names = {"co_name": name}
    if hasattr(inner, "co_qualname"):  # Python 3.11+
        names["co_qualname"] = qualname
    return inner.replace(co_consts=consts, **names)


class _Forbidden:
    """Checks installed on the forbidden references; ``targets`` are the objects whose calls are checked."""

    def __init__(self, guard, spec):
        self.guard = guard
        self.installed = []  # labels
        self.problems = []
        self.guarded_ids = {}  # id(object) -> label, to recognise forwarders
        self.targets = []  # objects a forwarding frame may hold
        self.blockers = []  # (original, blocker): originals to replace wherever the notebook holds them
        for module_name, names in sorted(spec.items()):
            try:
                module = importlib.import_module(module_name)
            except Exception as err:  # noqa: BLE001
                self.problems.append(f"forbidden: cannot import {module_name}: {type(err).__name__}: {err}")
                continue
            for name in names:
                label = f"{module_name}.{name}"
                owner, attr = module, name
                if "." in name:  # a method or attribute of a class of the module: "Model.elbo"
                    *path, attr = name.split(".")
                    for part in path:
                        owner = getattr(owner, part, _MISSING)
                        if owner is _MISSING:
                            break
                obj = _MISSING if owner is _MISSING else getattr(owner, attr, _MISSING)
                if obj is _MISSING:
                    self.problems.append(f"forbidden: {label} does not exist")
                    continue
                try:
                    self._install(owner, attr, obj, label)
                    self.installed.append(label)
                except Exception as err:  # noqa: BLE001
                    self.problems.append(f"forbidden: could not guard {label}: {type(err).__name__}: {err}")

    def _refuse(self, label, frame):
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
        return ForbiddenCall(
            f"{label} is not allowed in this exercise: write it yourself "
            f"(called from {self.guard.describe(where)})"
        )

    def _install(self, module, name, obj, label):
        guard = self.guard
        if id(obj) in self.guarded_ids:
            for original, blocker in self.blockers:  # the same C function under a second name
                if original is obj:
                    setattr(module, name, blocker)
            return
        allowed, refuse = guard.allowed, self._refuse  # captured: rebinding them later changes nothing here
        if isinstance(obj, types.FunctionType):
            original = types.FunctionType(
                obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__, obj.__closure__
            )
            original.__kwdefaults__ = obj.__kwdefaults__
            original.__qualname__ = obj.__qualname__
            original.__module__ = obj.__module__
            original.__dict__.update(obj.__dict__)
            targets = (obj,)

            def checker(args, kwargs):
                ok, frame = allowed(_getframe(2), targets)  # 0: checker, 1: the trampoline, 2: its caller
                if not ok:
                    raise refuse(label, frame)
                return original(*args, **kwargs)

            try:
                import inspect

                obj.__signature__ = inspect.signature(original)
            except Exception:  # noqa: BLE001 - a signature is a courtesy
                pass
            code = obj.__code__
            obj.__code__ = _trampoline_code(len(code.co_freevars), checker, code.co_name, obj.__qualname__)
            self.guarded_ids[id(obj)] = label
            self.targets.append(obj)
            return
        if isinstance(obj, type) and _mutable_class(obj):
            cls = obj
            own = cls.__dict__.get("__init__", _MISSING)
            targets = (cls,)

            def __init__(self_, *args, **kwargs):
                ok, frame = allowed(_getframe(1), targets)  # type.__call__ is C: frame 1 instantiated
                if not ok:
                    raise refuse(label, frame)
                if own is _MISSING:
                    return super(cls, self_).__init__(*args, **kwargs)
                return own(self_, *args, **kwargs)

            __init__.__qualname__ = f"{cls.__qualname__}.__init__"
            try:
                import inspect

                __init__.__signature__ = inspect.signature(own if own is not _MISSING else cls.__init__)
            except Exception:  # noqa: BLE001
                pass
            cls.__init__ = __init__
            self.guarded_ids[id(cls)] = label
            self.targets.append(cls)
            return
        if not callable(obj):
            raise GuardError(f"{label} is not callable")
        # C builtins, immutable classes, callable objects: a checking wrapper replaces the binding
        original = obj

        def blocker(*args, **kwargs):
            ok, frame = allowed(_getframe(1), (original, blocker))
            if not ok:
                raise refuse(label, frame)
            return original(*args, **kwargs)

        blocker.__name__ = getattr(obj, "__name__", name)
        blocker.__qualname__ = getattr(obj, "__qualname__", name)
        blocker.__doc__ = getattr(obj, "__doc__", None)
        setattr(module, name, blocker)
        self.guarded_ids[id(original)] = label
        self.guarded_ids[id(blocker)] = label
        self.targets += [original, blocker]
        self.blockers.append((original, blocker))

    def sync_notebook(self, namespace, changed):
        """Replace the originals of wrapped C callables wherever the notebook globals hold them."""
        if not self.blockers:
            return
        for key, value in list(namespace.items()):
            for original, blocker in self.blockers:
                if value is original:
                    namespace[key] = blocker
                    changed.append(f"notebook global {key} (a forbidden reference)")


class _KernelGuard:
    """The kernel's guard: snapshot at setup, restore before grade cells, check after them."""

    PINNED_SHELL = (
        "showtraceback", "_showtraceback", "showsyntaxerror", "showindentationerror", "CustomTB",
        "custom_exceptions", "InteractiveTB", "SyntaxTB", "display_pub", "displayhook",
        "display_formatter", "display_trap", "builtin_trap", "events", "compile", "ast_transformers",
        "input_transformers_post", "input_transformer_manager", "user_ns", "_user_ns", "user_module", "kernel",
        "excepthook", "run_cell", "run_cell_async", "_run_cell", "run_code", "run_ast_nodes",
        "transform_cell", "transform_ast", "should_run_async", "user_expressions", "_format_user_obj",
        "_user_obj_error", "get_exception_only", "_get_exc_info", "loop_runner", "hooks",
        "payload_manager", "set_custom_exc", "_tee", "history_manager",
    )
    PINNED_KERNEL = (
        "session", "shell", "iopub_socket", "iopub_thread", "do_execute", "execute_request",
        "send_response", "_publish_status", "_publish_execute_input", "shell_stream", "shell_streams",
    )
    PINNED_SESSION = ("send", "serialize", "sign", "msg", "pack", "unpack", "auth", "key")
    PINNED_PUBLISHERS = (
        "session", "pub_socket", "publish", "clear_output", "_hooks", "topic", "send_multipart", "write", "flush",
    )
    PINNED_SYS_DUNDERS = (
        "__stdout__", "__stderr__", "__stdin__", "__excepthook__", "__displayhook__", "__breakpointhook__",
    )
    PINNED_USER_NS = (
        "__builtins__", "get_ipython", "__name__", "__spec__", "__loader__", "__package__", "exit", "quit",
    )
    VOLATILE_SYS = frozenset({"last_type", "last_value", "last_traceback", "last_exc", "ps1", "ps2", "tracebacklimit"})

    def __init__(self, config):
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise GuardError("no IPython shell: the guard runs inside an IPython kernel")
        self.shell = shell
        self.user_ns = shell.user_ns
        self.problems = []
        self._kinds = {}
        global LIBRARIES, EXPANDED_MODULES
        libraries = config.get("libraries") or {}
        LIBRARIES = tuple(libraries)
        EXPANDED_MODULES = tuple(dict.fromkeys((*EXPANDED_MODULES, *LIBRARIES)))
        self.library_dirs = [self._check_library(name, expected) for name, expected in libraries.items()]
        os.environ.pop("IPYKERNEL_CELL_NAME", None)  # cells get names from their source
        sources = config.get("locked_sources", [])
        self.locked_files = self._locked_file_names(sources, bool(config.get("forbidden")))
        self.locked_names = set()  # every name a locked cell binds
        for source in sources:
            self.locked_names.update(bound_names(source) or ())
        self._call_sites = {}  # (code, f_lasti) -> trusted?
        self._positions = {}
        roots = {os.path.dirname(os.path.dirname(os.path.realpath(__file__))), *self.library_dirs}
        for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
            if prefix:
                roots.add(os.path.realpath(prefix))
        self.roots = tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))
        self.cell_name_env = "IPYKERNEL_CELL_NAME"
        protected = list(config.get("protected_modules") or DEFAULT_PROTECTED_MODULES)
        self.modules = {}
        for name in protected:
            try:
                self.modules[name] = importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 - e.g. numpy missing
                self.problems.append(f"protected module {name} not available: {type(err).__name__}: {err}")
        for name in self._library_modules():
            try:
                self.modules[name] = importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 - a broken module cannot be what a test relies on
                self.problems.append(f"{name} could not be imported: {type(err).__name__}: {err}")
        _skip_dtensor_import()  # before the snapshot, which then keeps it
        self.forbidden = _Forbidden(self, config.get("forbidden") or {})
        self.problems += self.forbidden.problems
        self.raised = []  # exceptions that reached IPython since the last restore step
        self._record_errors()
        self.snapshot = self._take_snapshot()
        self.snapshot.accept = self._library_wrapper
        self.locked = {}  # name -> _Binding
        self.trace = sys.gettrace()
        self.profile = sys.getprofile()

    # -- setup helpers --------------------------------------------------------------------

    def _check_library(self, name, expected):
        """The directory of the library package ``name``, which must be ``expected`` (the grader's)."""
        package = importlib.import_module(name)
        here = os.path.dirname(os.path.realpath(package.__file__))
        if expected and os.path.realpath(expected) != here:
            raise GuardError(
                f"the kernel's {name} is {here}, not the course library {expected} "
                f"(a {name} package shipped with the submission?)"
            )
        cwd = os.path.realpath(os.getcwd()) + os.sep
        if not expected and (here + os.sep).startswith(cwd):
            self.problems.append(f"{name} ({here}) lies under the notebook's directory")
        return here

    def _locked_file_names(self, sources, needed):
        """{file name ipykernel gives a locked cell: {position of each call in it: its callee's root}}.

        Only the call sites are kept, not the sources (hidden tests among them), which student
        code running before them could otherwise read here.
        """
        compiler = self.shell.compile
        names = {}
        probe = "pass  # gmlib.guard probe"
        try:
            if compiler.get_code_name(probe, probe, 0) != compiler.get_code_name(probe, probe, 1):
                raise GuardError("cell file names depend on the execution count")
            for source in sources:
                try:
                    transformed = self.shell.transform_cell(source)
                except Exception:  # noqa: BLE001
                    transformed = source
                names[compiler.get_code_name(source, source, 0)] = _call_sites(transformed)
        except Exception as err:  # noqa: BLE001
            if needed:
                raise GuardError(
                    f"cannot tell locked cells apart ({err}); forbidden references cannot be checked"
                ) from err
            self.problems.append(f"cannot tell locked cells apart: {err}")
        return names

    def _library_modules(self):
        names = []
        for library in LIBRARIES:
            package = importlib.import_module(library)
            directory = os.path.dirname(os.path.realpath(package.__file__))
            for entry in sorted(os.listdir(directory)):
                stem, ext = os.path.splitext(entry)
                if ext != ".py" or not stem.isidentifier() or stem == "__init__":
                    continue
                try:
                    with open(os.path.join(directory, entry), encoding="utf-8") as handle:
                        source = handle.read()
                except OSError:
                    continue
                if _GRADER_SOURCE.search(source):
                    continue
                names.append(f"{library}.{stem}")
        return names

    def _take_snapshot(self):
        snap = _Snapshot()
        import builtins

        for name, module in self.modules.items():
            expand = name in EXPANDED_MODULES or _top(name) in EXPANDED_MODULES
            closures = _top(name) in LIBRARIES
            snap.add_module(module, name, expand=expand, closures=closures)
        for library in LIBRARIES:
            snap.add_module(importlib.import_module(library), library, expand=True, closures=True)
        snap.add_module(sys.modules[__name__], __name__, classes_from=LIBRARIES, closures=True)
        for cls in self._extra_classes():
            snap.add_class(cls, f"{cls.__module__}.{cls.__qualname__}")
        # sys: hooks, streams, import machinery
        sys_ns = vars(sys)
        for key, value in list(sys_ns.items()):
            if key in self.VOLATILE_SYS:
                continue
            if key.startswith("__") and key not in self.PINNED_SYS_DUNDERS:
                continue
            snap.dict_entries.append(("sys", sys_ns, key, value))
        for name, module in list(sys.modules.items()):
            snap.dict_entries.append(("sys.modules", sys.modules, name, module))
        snap.add_list(sys.meta_path, "sys.meta_path")
        snap.add_list(sys.path_hooks, "sys.path_hooks")
        # the notebook's directory goes after the installed packages: a module shipped with (or
        # written by) the submission can still be imported under its own name, but no longer
        # shadows a library a test imports
        here = [p for p in sys.path if p in ("", ".") or (p and os.path.realpath(p) == os.path.realpath(os.getcwd()))]
        sys.path[:] = [p for p in sys.path if p not in here] + here
        snap.add_list(sys.path, "sys.path", keep_added=True)
        self.setup_modules = frozenset(sys.modules)
        self.checked_modules = set()
        snap.add_list(gc.callbacks, "gc.callbacks")
        import threading

        for key in ("_trace_hook", "_profile_hook", "settrace", "setprofile"):
            if key in vars(threading):
                snap.dict_entries.append(("threading", vars(threading), key, vars(threading)[key]))
        snap.dict_entries.append(("builtins", vars(builtins), "__import__", builtins.__import__))
        snap.dict_entries.append(("builtins", vars(builtins), "__build_class__", builtins.__build_class__))
        for key in self.PINNED_USER_NS:
            if key in self.user_ns:
                snap.dict_entries.append(("", self.user_ns, key, self.user_ns[key]))
        # IPython and ipykernel
        shell = self.shell
        volatile = ("showing_traceback", "last_execution_succeeded", "last_execution_result")
        snap.add_object(shell, "shell", self.PINNED_SHELL, volatile=volatile)
        kernel = getattr(shell, "kernel", None)
        objects = [(kernel, "kernel", self.PINNED_KERNEL)]
        if kernel is not None:
            objects.append((getattr(kernel, "session", None), "kernel.session", self.PINNED_SESSION))
            objects.append((getattr(kernel, "iopub_socket", None), "kernel.iopub_socket", self.PINNED_PUBLISHERS))
            objects.append((getattr(kernel, "iopub_thread", None), "kernel.iopub_thread", self.PINNED_PUBLISHERS))
        objects += [
            (getattr(shell, "displayhook", None), "shell.displayhook", self.PINNED_PUBLISHERS),
            (getattr(shell, "display_pub", None), "shell.display_pub", self.PINNED_PUBLISHERS),
            (getattr(shell, "events", None), "shell.events", ("callbacks", "trigger", "register", "unregister")),
            (getattr(shell, "compile", None), "shell.compile", ("get_code_name", "cache", "ast_parse")),
            (getattr(shell, "display_formatter", None), "shell.display_formatter", ("format", "formatters")),
            (getattr(shell, "InteractiveTB", None), "shell.InteractiveTB", ()),
            (getattr(shell, "SyntaxTB", None), "shell.SyntaxTB", ()),
        ]
        for stream_name in ("stdout", "stderr"):
            objects.append((getattr(sys, stream_name), f"sys.{stream_name}", ("session", "pub_thread", "topic")))
        for obj, label, pinned in objects:
            if obj is not None:
                volatile = ("write",) if label.startswith("sys.") else ()
                snap.add_object(obj, label, pinned, volatile=volatile)
        for attr in ("ast_transformers", "input_transformers_post"):
            snap.add_list(getattr(shell, attr, None), f"shell.{attr}")
        manager = getattr(shell, "input_transformer_manager", None)
        for attr in ("cleanup_transforms", "line_transforms", "token_transformers"):
            snap.add_list(getattr(manager, attr, None), f"shell.input_transformer_manager.{attr}")
        events = getattr(shell, "events", None)
        self.callbacks = {}
        if events is not None:
            for event, callbacks in events.callbacks.items():
                self.callbacks[event] = (callbacks, tuple(callbacks))
        return snap

    def _record_errors(self):
        """Make ``ExecutionResult.error_in_exec``/``error_before_exec`` remember every exception.

        IPython sets them when a cell raises; ipykernel reads them for the reply's status. Both
        become properties whose setter also appends the exception to ``self.raised`` (kept
        out of reach of the notebook), so a ``post_run_cell`` hook that sets them back to
        ``None`` and a suppressed error output cannot hide that a test failed: after a grade
        cell the grader adds an error output if the cell has none.
        """
        from IPython.core.interactiveshell import ExecutionResult

        values = weakref.WeakKeyDictionary()
        raised = self.raised

        def make(attr):
            def get(result):
                return values.get(result, {}).get(attr)

            def set_(result, value):
                if value is not None:
                    try:
                        text = str(value)
                    except Exception:  # noqa: BLE001 - a hostile __str__
                        text = "?"
                    raised.append([type(value).__name__, text[:2000]])
                values.setdefault(result, {})[attr] = value

            return property(get, set_, doc=f"{attr} (recorded by gmlib.guard)")

        ExecutionResult.error_in_exec = make("error_in_exec")
        ExecutionResult.error_before_exec = make("error_before_exec")
        self._extra = [ExecutionResult]

    def _extra_classes(self):
        torch = sys.modules.get("torch")
        if torch is None:
            return list(getattr(self, "_extra", []))
        classes = list(getattr(self, "_extra", [])) + [torch.Tensor]
        nn = getattr(torch, "nn", None)
        if nn is not None:
            classes += [nn.Module, nn.Parameter]
        return classes

    # -- classifying frames --------------------------------------------------------------

    def describe(self, where):
        filename, _, line = where.rpartition(":")
        if filename in self.locked_files:
            return f"a read-only cell, line {line}, through a name that is not the reference's"
        if "ipykernel_" in filename:
            return f"a notebook cell, line {line}"
        return where

    def _kind(self, frame):
        """'cell' (a locked cell), 'library' or 'student'."""
        filename = frame.f_code.co_filename
        if filename in self.locked_files:
            if frame.f_globals is self.user_ns and self.cell_name_env not in os.environ:
                return "cell"
            return "student"
        return self._kind_of_file(filename)

    @staticmethod
    def _forwards(frame, targets):
        try:
            values = list(frame.f_locals.values())
        except Exception:  # noqa: BLE001
            return False
        for value in values:
            for target in targets:
                if value is target:
                    return True
            if isinstance(value, functools.partial):
                inner = value
                while isinstance(inner, functools.partial):
                    inner = inner.func
                if any(inner is t for t in targets):
                    return True
            elif isinstance(value, types.MethodType) and any(value.__func__ is t for t in targets):
                return True
        return False

    def _trusted_call_site(self, frame):
        """Is the call a locked cell is making rooted in a name the locked cells own?

        The callee expression of the call in progress (found from the instruction's source
        position in the cell's code) must start from a name bound by a locked cell, a local of
        a function defined in one, or a builtin: ``ref.gaussian_kl(x)`` and
        ``discriminator_loss(x)`` (imported by the setup cell) are the test calling the
        reference; ``d_loss(x)``, where a solution cell made ``d_loss`` the reference itself, a
        ``functools.partial`` of it or a wrapper around it, is the student handing it over.
        """
        code = frame.f_code
        key = (code, frame.f_lasti)
        cached = self._call_sites.get(key)
        if cached is not None:
            return cached
        trusted = True
        root = self._callee_root(frame)
        if root is not None:
            local = root in code.co_varnames or root in code.co_cellvars or root in code.co_freevars
            if code.co_name == "<module>":
                local = False
            if not local and root not in self.locked_names:
                import builtins

                trusted = root not in self.user_ns and hasattr(builtins, root)
        if len(self._call_sites) < 100_000:
            self._call_sites[key] = trusted
        return trusted

    def _callee_root(self, frame):
        """The root name of the callee of the call ``frame`` is making (None: not a call site)."""
        code = frame.f_code
        sites = self.locked_files.get(code.co_filename)
        if not sites or not hasattr(code, "co_positions"):  # co_positions: Python 3.11+
            return None
        positions = self._positions.get(code)
        if positions is None:
            positions = self._positions[code] = list(code.co_positions())
        index = frame.f_lasti // 2
        if index >= len(positions):
            return None
        return sites.get(tuple(positions[index]))

    def allowed(self, frame, targets):
        """May the code running in ``frame`` call one of ``targets``? ``(verdict, deciding frame)``."""
        depth = 0
        while frame is not None and depth < 64:
            kind = self._kind(frame)
            if kind == "cell":
                return self._trusted_call_site(frame), frame
            if kind == "student":
                return False, frame
            if not self._forwards(frame, targets):
                return True, frame
            frame = frame.f_back
            depth += 1
        return True, frame

    # -- steps -----------------------------------------------------------------------------------

    def _sync_machinery(self, changed):
        """Library snapshot, IPython internals, tracing, environment (not the notebook globals)."""
        self.snapshot.sync(changed)
        if sys.gettrace() is not self.trace:
            sys.settrace(self.trace)
            changed.append("sys.settrace")
        if sys.getprofile() is not self.profile:
            sys.setprofile(self.profile)
            changed.append("sys.setprofile")
        if self.cell_name_env in os.environ:
            del os.environ[self.cell_name_env]
            changed.append(f"os.environ[{self.cell_name_env!r}]")
        events = getattr(self.shell, "events", None)
        if events is not None:
            for event, (callbacks, original) in self.callbacks.items():
                current = events.callbacks.get(event, _MISSING)
                if current is not callbacks:
                    events.callbacks[event] = callbacks
                    changed.append(f"shell.events.callbacks[{event!r}]")
                    if isinstance(current, list):
                        callbacks[:] = list(original) + [c for c in current if c not in original]
                if event == "post_run_cell":
                    continue  # kept: they run after the test and cannot hide its errors
                kept = list(original) + [c for c in callbacks if c not in original and self._library_callable(c)]
                if len(kept) != len(callbacks) or any(a is not b for a, b in zip(kept, callbacks)):
                    removed = [c for c in callbacks if c not in kept]
                    callbacks[:] = kept
                    if removed:
                        changed.append(f"shell.events.callbacks[{event!r}] ({len(removed)} added by the notebook)")

    def _library_wrapper(self, old, new):
        """Is ``new`` a library function wrapping ``old`` (e.g. torch._dynamo's ``disable``)?"""
        return (
            isinstance(new, types.FunctionType)
            and getattr(new, "__wrapped__", None) is old
            and self._library_callable(new)
        )

    def _library_callable(self, callback):
        fn = getattr(callback, "__func__", callback)
        code = getattr(fn, "__code__", None)
        if not isinstance(fn, types.FunctionType) or code is None:
            return False
        return self._kind_of_file(code.co_filename) == "library" and not code.co_filename.startswith("<")

    def _unshadow_modules(self, changed):
        """Drop modules imported since setup from outside the library that shadow a library module.

        A test importing ``scipy`` for the first time must get the installed one, not a
        ``scipy.py`` the notebook wrote and imported first.
        """
        from importlib.machinery import PathFinder

        library_path = [
            p for p in sys.path if p and os.path.isabs(p) and (os.path.realpath(p) + os.sep).startswith(self.roots)
        ]
        for name in [n for n in list(sys.modules) if n not in self.setup_modules and n not in self.checked_modules]:
            module = sys.modules.get(name)
            filename = getattr(module, "__file__", None)
            if not isinstance(filename, str) or self._kind_of_file(filename) == "library":
                self.checked_modules.add(name)
                continue
            top = name.split(".", 1)[0]
            try:
                spec = PathFinder.find_spec(top, library_path)
            except Exception:  # noqa: BLE001
                spec = None
            if spec is None and top not in sys.builtin_module_names:
                self.checked_modules.add(name)
                continue
            for other in [n for n in list(sys.modules) if n == top or n.startswith(top + ".")]:
                if other not in self.setup_modules:
                    del sys.modules[other]
            changed.append(f"sys.modules[{top!r}] (a module from {os.path.dirname(filename)} shadowing the library's)")

    def _kind_of_file(self, filename):
        kind = self._kinds.get(filename)
        if kind is None:
            kind = "student"
            if filename.startswith("<frozen "):
                kind = "library"
            elif os.path.isabs(filename):
                real = os.path.realpath(filename)
                if real.startswith(self.roots) and os.path.isfile(real):
                    kind = "library"
            self._kinds[filename] = kind
        return kind

    def release(self, names):
        """Solution cells that ran bind ``names``: those a test cell bound become the student's.

        A name a test cell bound (``sample``, ``encoder``) may be the name a later exercise asks
        the student to define; once a solution cell binds it, it is no longer restored. Names
        bound by the read-only cells stay theirs.
        """
        for name in names or ():
            binding = self.locked.get(name)
            if binding is not None and not binding.report:
                del self.locked[name]

    def before_grade(self):
        changed = []
        del self.raised[:]
        self._sync_machinery(changed)
        self._unshadow_modules(changed)
        for name, binding in self.locked.items():
            try:
                binding.sync(name, self.user_ns, changed)
            except Exception as err:  # noqa: BLE001 - odd data must not stop the other restores
                changed.append(f"notebook global {name} (could not be checked: {type(err).__name__})")
        self.forbidden.sync_notebook(self.user_ns, changed)
        return {"restored": _unique(changed)}

    def after_locked(self, names, grade):
        changed = []
        raised = []
        if grade:
            raised = [list(item) for item in self.raised]
            del self.raised[:]
            self._sync_machinery(changed)
        for name in names or ():
            if name in _IPYTHON_NAMES:
                continue
            if name in self.user_ns:
                value = self.user_ns[name]
                # What a test cell binds (p, z, kl, a lambda, ...) is put back silently when a later
                # cell rebinds it (demo cells reuse such names); the read-only cells' helpers,
                # modules and data are put back with a note.
                report = not grade
                try:
                    self.locked[name] = _Binding(value, snapshot_functions=True, report=report)
                except Exception:  # noqa: BLE001 - a value that cannot be copied: its identity only
                    self.locked[name] = _Binding(value, snapshot_functions=False, report=report, contents=False)
            else:
                self.locked.pop(name, None)
        return {"changed": _unique(changed), "raised": raised}


#: names IPython rebinds by itself (the output cache): never treated as a locked cell's binding
_IPYTHON_NAMES = frozenset({"_", "__", "___", "_i", "_ii", "_iii", "_ih", "_oh", "_dh", "In", "Out"})


def _unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


_STEP = None  # the kernel's step function, made at setup (a closure: it holds the key)


def _make_step(guard, secret):
    """The function that runs the restore and locked steps and signs their reports.

    It holds the key and the guard in its closure, and references to what it calls captured at
    setup; before anything else it puts back the builtins and the code and globals of this module
    and of json/hmac, so that rebinding ``_KernelGuard.before_grade``, ``builtins.setattr`` or
    ``json.dumps`` does not stop the restore or let a report be forged.
    """
    import builtins
    import hashlib as hashlib_
    import json.decoder
    import json.encoder

    builtins_ns = vars(builtins)
    builtins_saved = tuple((k, v) for k, v in builtins_ns.items() if k != "_")
    own = _Snapshot()
    for module in (sys.modules[__name__], json, json.encoder, json.decoder, hmac, hashlib_):
        own.add_module(module, module.__name__, classes_from=LIBRARIES, closures=True)
    own_code = tuple((state[0], state[1]) for _, state in own.fn_entries)
    own_dicts = tuple((namespace, key, value) for _, namespace, key, value in own.dict_entries)
    missing, error = _MISSING, GuardError
    sync = _Snapshot.sync
    before, after, release = _KernelGuard.before_grade, _KernelGuard.after_locked, _KernelGuard.release
    new_hmac, sha256, loads, dumps = hmac.new, hashlib_.sha256, json.loads, json.dumps

    def step(kind, nonce, payload):
        repaired = []
        for key, value in builtins_saved:
            if builtins_ns.get(key, missing) is not value:
                builtins_ns[key] = value
                repaired.append("builtins." + key)
        for fn, code in own_code:
            if fn.__code__ is not code:
                fn.__code__ = code
                repaired.append(fn.__qualname__ + " (its code)")
        for namespace, key, value in own_dicts:
            if namespace.get(key, missing) is not value:
                namespace[key] = value
                repaired.append(key)
        sync(own, repaired)
        config = loads(payload) if payload else {}
        release(guard, config.get("released"))
        if kind == "restore":
            report = before(guard)
            report["restored"] = repaired + report["restored"]
        elif kind == "locked":
            report = after(guard, config.get("names"), bool(config.get("grade")))
            if config.get("grade"):
                report["changed"] = repaired + report["changed"]
        else:
            raise error(f"unknown guard step {kind!r}")
        body = dumps(report)
        return new_hmac(secret, f"{nonce}|{body}".encode(), sha256).hexdigest() + "|" + body

    return step


def _skip_dtensor_import() -> None:
    """A speed setting of grading kernels, not a protection: the first ``torch.testing.assert_close``
    imports ``torch.distributed.tensor`` (and sympy with it: 0.6 to 1 s on one core, in every kernel
    whose tests compare tensors) only to unwrap DTensors, which no lab makes. torch 2.13 reads
    ``torch.testing._comparison._HAS_DTENSOR`` on every call; tests/test_guard.py checks both."""
    comparison = sys.modules.get("torch.testing._comparison")
    if comparison is not None and getattr(comparison, "_HAS_DTENSOR", False):
        comparison._HAS_DTENSOR = False


def kernel_step(step: str, nonce: str, payload: str) -> str:
    """Run one guard step in the kernel; evaluated by the grader as a silent user expression.

    ``setup`` (payload: the JSON configuration) creates the guard and returns
    ``"<key>|<report>"``; it runs once, before any cell. ``restore`` (before a grade cell) and
    ``locked`` (after a locked cell; payload ``{"names": [...], "grade": bool}``) return
    ``"<HMAC-SHA256 of nonce|report>|<report>"``, the report being JSON.
    """
    global _STEP
    if step == "setup":
        if _STEP is not None:
            raise GuardError("the guard was already set up in this kernel")
        config = json.loads(payload) if payload else {}
        secret = secrets.token_bytes(32)
        guard = _KernelGuard(config)
        _STEP = _make_step(guard, secret)
        body = json.dumps({"problems": guard.problems, "forbidden": guard.forbidden.installed,
                           "protected": len(guard.snapshot.dict_entries)})
        return secret.hex() + "|" + body
    if _STEP is None:
        raise GuardError("the grader's guard is not set up in this kernel")
    return _STEP(step, nonce, payload)


#: run (silently, as code) before the setup expression: import this module with the notebook's
#: directory out of sys.path, so that a gmlib shipped with the submission cannot stand in for it
_SETUP_IMPORT = """\
def _gmlib_guard_import():
    import importlib, sys
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if p not in ("", ".")]
    try:
        importlib.import_module("autograder.kernel.guard")
    finally:
        sys.path[:] = saved
_gmlib_guard_import()
del _gmlib_guard_import
"""
