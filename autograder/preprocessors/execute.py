"""``GuardedExecute``: nbgrader's ``Execute`` with time, crash and output limits, driving the
in-kernel guard (:mod:`autograder.kernel.guard`) from the grader's side.

It takes the place of nbgrader's ``Execute`` in ``c.Autograde.autograde_preprocessors``. What each
defence does, and what it cannot stop, is in the docstring of :mod:`autograder.kernel.guard`;
this module is the half that runs in the grader's process (it imports nbgrader and nbclient,
which the kernel never does). Its kernels may be started by any ``kernel_manager_class``, such as
:class:`autograder.sandbox.SandboxedKernelManager`.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time

from autograder import edition, probes
from autograder.common import METADATA_KEY
from autograder.kernel.guard import _SETUP_IMPORT, DEFAULT_PROTECTED_MODULES, bound_names

__all__ = ["GuardedExecute", "TIMINGS_ENV"]

#: when set to a file name, GuardedExecute appends one JSON line per notebook saying where its
#: seconds went (``python -m autograder.bench``); unset or empty: nothing is recorded
TIMINGS_ENV = "AUTOGRADER_TIMINGS"


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _utf8_head(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _mime_size(data) -> int:
    total = 0
    for value in (data or {}).values():
        if isinstance(value, str):
            total += _utf8_len(value)
        elif isinstance(value, list):
            total += sum(_utf8_len(v) if isinstance(v, str) else len(json.dumps(v)) for v in value)
        else:
            total += len(json.dumps(value))
    return total


def _error_size(out) -> int:
    return _utf8_len(str(out.get("ename", ""))) + _utf8_len(str(out.get("evalue", ""))) + sum(
        _utf8_len(str(line)) for line in out.get("traceback", [])
    )


def _nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _is_grade(cell) -> bool:
    meta = _nbgrader_meta(cell)
    return bool(meta.get("grade")) and bool(meta.get("grade_id"))


def _is_locked(cell) -> bool:
    """Read-only code the grader trusts: locked, not a solution, known by its grade_id."""
    meta = _nbgrader_meta(cell)
    return (
        cell.get("cell_type") == "code"
        and bool(meta.get("locked"))
        and not meta.get("solution")
        and bool(meta.get("grade_id"))
    )


def _merge_forbidden(*maps) -> dict:
    merged: dict[str, list[str]] = {}
    for mapping in maps:
        if not isinstance(mapping, dict):
            continue
        for module, names in mapping.items():
            if not isinstance(module, str) or not isinstance(names, (list, tuple)):
                continue
            bucket = merged.setdefault(module, [])
            for name in names:
                if isinstance(name, str) and name not in bucket:
                    bucket.append(name)
    return merged


def _references_forbidden(modules) -> dict:
    """Every function of each of ``modules`` (the course's reference versions, which the tests bind
    while a later exercise is graded, and the helper that binds them: ``reference_modules``) and of
    :mod:`autograder.kernel.references`: forbidden to student code in every lab.

    Listing them imports each module, and torch and the course library with it: 1.3 s of every
    nbgrader process's start-up. So each list is also kept in a private directory of the grader's
    user (:func:`_functions_cache`), keyed by the interpreter, this listing code and the bytes of
    every Python file of the module (all of its package's files, for a package): an nbgrader
    process finds it there without importing anything, and any change of those files means a
    fresh import."""
    import importlib

    from autograder.kernel import references

    forbidden = {references.__name__: references.module_functions(references)}
    for name in modules:
        path = _functions_cache(name)
        cached = _read_cached_functions(path)
        if cached is not None:
            forbidden[name] = cached
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install shows up in the lab's own setup cell
            continue
        forbidden[name] = references.module_functions(module)
        _write_cached_functions(path, forbidden[name])
    return forbidden


def _functions_cache(name: str) -> str | None:
    """``$TMPDIR/autograder-cache-UID/functions-NAME-KEY.json`` for module ``name``, or ``None``
    when its files cannot be found without importing it (a submodule) or read."""
    import hashlib
    import importlib.util
    import sys

    from autograder.sandbox.launcher import private_tmp_dir
    from autograder.kernel import references

    if "." in name:
        return None  # find_spec would import its parent package
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    if spec.submodule_search_locations:
        files = sorted(os.path.join(d, f) for top in spec.submodule_search_locations
                       for d, _, fs in os.walk(top) for f in fs if f.endswith(".py"))
    else:
        files = [spec.origin]
    digest = hashlib.sha256()
    try:
        for part in (sys.version, sys.executable, name, references.__file__, *files):
            digest.update(part.encode() + b"\0")
        for file in (references.__file__, *files):
            with open(file, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        where = private_tmp_dir("cache")
    except OSError:
        return None
    return os.path.join(where, f"functions-{name}-{digest.hexdigest()[:32]}.json")


def _read_cached_functions(path: str | None) -> list[str] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return None


def _write_cached_functions(path: str | None, names: list[str]) -> None:
    if path is None:
        return
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(names, f)
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except OSError:
        pass


def _left_out_by(student_edition, problem: str, packages) -> bool:
    """Is the guard's setup ``problem`` a forbidden reference the student edition does not have (or a
    library module that cannot be imported without one)?"""
    missing = re.match(r"forbidden: (\S+) does not exist$", problem)
    if missing:
        return missing.group(1) in student_edition.absent
    unimportable = (re.match(r"forbidden: cannot import (\S+):", problem)
                    or re.match(r"(\S+) could not be imported: ImportError", problem))
    return bool(unimportable) and unimportable.group(1).split(".")[0] in packages


def _notebook_forbidden(nb) -> dict:
    meta = nb.get("metadata", {}).get(METADATA_KEY, {})
    return meta.get("forbidden", {}) if isinstance(meta, dict) else {}


_SIGNALS = {
    9: "SIGKILL",
    11: "SIGSEGV",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    4: "SIGILL",
    15: "SIGTERM",
    24: "SIGXCPU",
    25: "SIGXFSZ",
}


def _death_reason(status) -> str:
    if status is None:
        what = "its exit status is unknown"
        why = ("it may have used more memory than the grader allows, run past the CPU-time limit, "
               "called os._exit(), or crashed in native code")
    elif status < 0 or status > 128 and status - 128 in _SIGNALS:
        number = -status if status < 0 else status - 128
        name = _SIGNALS.get(number, f"signal {number}")
        what = f"it was killed by {name}"
        why = {
            "SIGKILL": "most likely it used more memory than the grader allows (the kernel is stopped at the "
                       "memory limit), or ran past the CPU-time limit",
            "SIGXCPU": "it used more CPU time than the grader allows",
            "SIGXFSZ": "it wrote a file larger than the grader allows",
            "SIGSEGV": "a crash in native code, often a failed memory allocation under the memory limit",
            "SIGABRT": "the interpreter or a native library aborted, often after running out of memory",
            "SIGBUS": "a crash in native code",
        }.get(name, "the process received a fatal signal")
    else:
        what = f"it exited with status {status}"
        why = "the code called os._exit() or sys.exit() from a thread, or the interpreter stopped"
    return f"{what}: {why}"


#: the trusted checker of this process (autograder.checker), started on the first probe cell
_CHECKER = None
#: exception names a failed probe may show (a class the student made could spell anything)
_BUILTIN_ERRORS = frozenset(name for name, value in vars(builtins).items()
                            if isinstance(value, type) and issubclass(value, BaseException))


#: the start of the guard's ForbiddenCall message (autograder.kernel.guard), the name it refuses first
_FORBIDDEN_MESSAGE = re.compile(r"([\w.]+) is not allowed in this exercise: write it yourself")


def _garbled(err: BaseException) -> bool:
    """A message of the kernel that failed jupyter_client's signature check: a kernel that ran out of
    memory in the middle of sending a multipart message leaves its parts to be joined to the next
    one's (seen with a memory bomb followed by a probe's large output)."""
    return isinstance(err, ValueError) and str(err).startswith(("Invalid Signature", "Duplicate Signature"))


def _checker(paths):
    """The process-wide trusted checker (one per nbgrader process: its torch import is paid once)."""
    global _CHECKER
    if _CHECKER is None:
        import atexit

        from autograder.checker import Checker

        env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_"))}
        env["MPLBACKEND"] = "Agg"
        _CHECKER = Checker(list(paths) or [os.getcwd()], env=env)
        atexit.register(_CHECKER.close)
    return _CHECKER


def _build_guarded_execute():
    import signal
    from queue import Empty
    from time import monotonic

    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async, run_sync
    from nbformat import NotebookNode
    from nbformat.v4 import output_from_msg
    from nbgrader.preprocessors import Execute
    from traitlets import Bool, Dict, Enum, Integer, List, Unicode

    class GuardedExecute(Execute):
        """nbgrader's ``Execute`` with time, crash and output limits and the in-kernel guard.

        See the module docstring of :mod:`autograder.kernel.guard` for what each defence does and what it
        cannot stop. Configure it like ``Execute`` (``c.Execute.timeout`` applies to it) and
        with its own traits, e.g. ``c.GuardedExecute.notebook_timeout = 1200``; any
        ``kernel_manager_class`` (say a confining one from ``autograder.sandbox``) is accepted.
        """

        notebook_timeout = Integer(
            600,
            allow_none=True,
            help="Wall-clock seconds for the whole notebook (kernel start and guard steps included); "
            "each cell's timeout is capped by what is left; 0 or None: no budget",
        ).tag(config=True)
        max_cell_output_bytes = Integer(
            1_000_000, help="Bytes of stream and display output kept per cell (errors always kept)"
        ).tag(config=True)
        max_notebook_output_bytes = Integer(
            10_000_000, help="Bytes of stream and display output kept per notebook (errors always kept)"
        ).tag(config=True)
        max_error_bytes = Integer(
            100_000, help="Longest error output (ename, evalue and traceback); longer ones are shortened"
        ).tag(config=True)
        max_error_outputs = Integer(
            20, help="Error outputs kept per cell; further errors replace the last one kept"
        ).tag(config=True)
        max_cell_outputs = Integer(
            1000, help="Outputs kept per cell besides errors (consecutive stream messages count as one)"
        ).tag(config=True)
        allow_widgets = Bool(
            False, help="Handle widget comm messages (an Output widget can capture a cell's outputs)"
        ).tag(config=True)
        guard = Bool(True, help="Run the in-kernel guard (restore before grade cells, forbidden references)").tag(
            config=True
        )
        guard_timeout = Integer(60, help="Seconds each silent guard step may take").tag(config=True)
        forbidden = Dict(
            {}, help="Extra forbidden references {module: [names]} for every notebook"
        ).tag(config=True)
        forbidden_from_source = Bool(
            True,
            help="In autograde, read metadata.autograder.forbidden from the source notebook of the course too",
        ).tag(config=True)
        library_packages = List(
            Unicode(), [],
            help="The course's library packages: their code is library code for the forbidden-call check, "
            "their modules are snapshotted, and the kernel must import them from the grader's installation",
        ).tag(config=True)
        reference_modules = List(
            Unicode(), [],
            help="Modules of reference versions (bound by reference_versions in later exercises' tests): "
            "every function in them is forbidden to student code",
        ).tag(config=True)
        protected_modules = List(
            Unicode(), list(DEFAULT_PROTECTED_MODULES), help="Modules the guard snapshots (the library packages' are added)"
        ).tag(config=True)
        iopub_timeout = Integer(10, help="Seconds to wait for the outputs after a cell's reply").tag(config=True)
        shutdown_kernel = Enum(
            ["graceful", "immediate"],
            default_value="immediate",
            help="How the kernel stops after the last cell: 'immediate' kills it (its outputs are all in by "
            "then; nothing of the kernel's is kept) and saves the graceful shutdown's 0.5 to 1 s per submission",
        ).tag(config=True)
        store_widget_state = Bool(False).tag(config=True)
        checker_paths = List(
            Unicode(), [],
            help="sys.path entries of the trusted checker that runs probe cells' CHECK sections (the course "
            "root, for the library packages); default: the working directory",
        ).tag(config=True)
        student_edition = Bool(
            True,
            help="Kernels see a student edition of the library packages (autograder.edition): the forbidden "
            "references of the lab and the reference modules' versions are not in their files (with a sandbox "
            "that mounts it: SandboxedKernelManager). Probe cells get the reference versions they bind as source",
        ).tag(config=True)
        checker_setup_cells = List(
            Unicode(), ["setup"],
            help="grade_ids of the read-only cells the checker runs before a lab's checks (from the "
            "restored notebook: the course's own source)",
        ).tag(config=True)

        _edition = None  # the student edition of the notebook being run (autograder.edition)
        _trusted_forbidden: dict = {}

        # -- the notebook --------------------------------------------------------------

        def preprocess(self, nb, resources=None, km=None):
            from nbclient.client import NotebookClient

            NotebookClient.__init__(self, nb, km)
            self.reset_execution_trackers()
            self._check_assign_resources(resources)
            self._started = monotonic()
            self._dead_in = None  # label of the cell where the kernel died
            self._budget_spent_in = None
            self._guard_broken = None
            self._guard_secret = None
            self._released = set()  # names bound by solution cells since the last guard step
            self.guard_seconds = {"setup": 0.0, "steps": 0.0, "count": 0}  # what the guard cost this notebook
            # -- timing record ($AUTOGRADER_TIMINGS, python -m autograder.bench) --------------
            self._timings = {"kernel_start": None, "kernel_stop": None, "cells": []} if os.environ.get(TIMINGS_ENV) else None
            # -- end of timing record ----------------------------------------------------------
            self._nb_bytes = 0
            self._seed = probes.submission_seed()  # this submission's secret seed (probe cells)
            self._probe = None  # {"nonce", "payloads"} while a probe cell runs
            self._timeout_kind = "cell"
            self._interrupted = False
            self._reset_cell_state()
            if not self.interrupt_on_timeout:
                self.log.warning("GuardedExecute always interrupts a cell at its time limit (interrupt_on_timeout)")
                self.interrupt_on_timeout = True
            forbidden = self._forbidden_for(nb, resources or {})
            self._forbidden_labels = {f"{module}.{name}" for module, names in forbidden.items() for name in names}
            self._edition = self._make_edition()
            self._probe_plan = self._plan_probes()
            kernel_starting = monotonic()  # (timing record)
            with self.setup_kernel():
                assert self.kc is not None
                info_msg = self.wait_for_reply(self.kc.kernel_info())
                if info_msg is None:
                    raise RuntimeError("the kernel did not answer kernel_info")
                if self._timings is not None:  # (timing record) the kernel is ready
                    self._timings["kernel_start"] = monotonic() - kernel_starting
                self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
                if self.guard:
                    self._guard_setup(forbidden)
                for index, cell in enumerate(self.nb.cells):
                    self.preprocess_cell(cell, resources, index)
                kernel_stopping = monotonic()  # (timing record)
            if self._timings is not None:  # (timing record) the kernel is shut down
                self._timings["kernel_stop"] = monotonic() - kernel_stopping
            self.set_widgets_metadata()
            self._write_timings(resources)  # (timing record)
            return self.nb, self.resources

        def preprocess_cell(self, cell, resources, index):
            self._check_assign_resources(resources)
            if cell.cell_type != "code" or not cell.source.strip():
                return cell, self.resources
            if self.skip_cells_with_tag in cell.metadata.get("tags", []):
                return cell, self.resources
            if self._dead_in is not None:
                self._replace_outputs(cell, "KernelDied", f"not run: the kernel died in {self._dead_in}")
                return cell, self.resources
            if self._budget_left() <= 0:
                where = self._budget_spent_in or self._label(cell, index)
                self._replace_outputs(
                    cell, "NotebookTimeLimit",
                    f"not run: the notebook used up its time budget of {self.notebook_timeout} s (in {where})",
                )
                return cell, self.resources
            grade = _is_grade(cell)
            probe_cell = self._probe_plan.get(index) if grade else None
            if isinstance(probe_cell, probes.ProbeError):
                self.log.error("%s: a malformed probe cell: %s", self._label(cell, index), probe_cell)
                self._replace_outputs(cell, "GraderError", f"not run: this hidden test of the course is malformed: {probe_cell}")
                return cell, self.resources
            restored = []
            if grade and self.guard:
                problem = self._guard_broken
                if problem is None:
                    report, problem = self._guard_call("restore", {"released": self._take_released()}, index)
                    if report is not None:
                        restored = report.get("restored", [])
                if problem is not None:
                    self._guard_broken = self._guard_broken or problem
                    if self._dead_in is None:
                        self._replace_outputs(cell, "GraderIntegrityError", f"not run: {problem}")
                    return cell, self.resources
            cell_started = monotonic()  # (timing record)
            kernel_source = cell.source
            if probe_cell is not None:
                kernel_source = self._run_probe_cell(cell, index, probe_cell)
            else:
                self._run_code_cell(cell, index)
            if getattr(self, "_timings", None) is not None:  # (timing record)
                self._timings["cells"].append([index, _nbgrader_meta(cell).get("grade_id"), monotonic() - cell_started])
            if _nbgrader_meta(cell).get("solution"):
                self._released.update(bound_names(cell.source) or ())
            if restored:
                self.log.warning("%s: the guard restored %s", self._label(cell, index), ", ".join(restored))
                note = NotebookNode(output_type="stream", name="stdout",
                                    text="[grader] restored before this test: " + ", ".join(restored[:20])
                                    + (f", ... ({len(restored)} in all)" if len(restored) > 20 else "") + "\n")
                cell.outputs.insert(0, note)
            if self._dead_in is None and self.guard and (grade or _is_locked(cell)) and self._guard_broken is None:
                names = bound_names(kernel_source) if _is_locked(cell) else []
                payload = {"names": names or [], "grade": grade, "released": self._take_released()}
                report, problem = self._guard_call("locked", payload, index)
                if problem is not None:
                    self._guard_broken = problem
                    if grade:
                        cell.outputs.append(self._error("GraderIntegrityError", problem))
                elif (grade and probe_cell is None and report.get("raised")
                      and not any(o.get("output_type") == "error" for o in cell.outputs)):
                    ename, evalue = report["raised"][-1][:2]
                    self.log.warning("%s raised %s but showed no error", self._label(cell, index), ename)
                    cell.outputs.append(self._error(
                        ename, f"{evalue} (this test failed, but its error output was suppressed)"))
                if grade and report is not None and report.get("changed"):
                    changed = report["changed"]
                    self.log.warning("%s: changed while the test ran: %s", self._label(cell, index), ", ".join(changed))
                    cell.outputs.append(self._error(
                        "GraderIntegrityError",
                        "objects the tests rely on were changed while this test ran (now restored): "
                        + ", ".join(changed[:20]) + (f", ... ({len(changed)} in all)" if len(changed) > 20 else ""),
                    ))
            return cell, self.resources

        # -- timing record ($AUTOGRADER_TIMINGS) -------------------------------------------------

        def _write_timings(self, resources):
            """Append this notebook's record to the file ``$AUTOGRADER_TIMINGS`` names: ``{"lab",
            "student", "kernel_start", "kernel_stop", "guard_setup", "guard_steps", "guard_count",
            "cells": [[index, grade_id or null, seconds], ...], "total"}`` (seconds; ``total`` from
            the start of :meth:`preprocess` to after the kernel's shutdown). One ``write`` in append
            mode per record, so parallel graders can share the file."""
            path = os.environ.get(TIMINGS_ENV)
            if not path or self._timings is None:
                return
            info = (resources or {}).get("nbgrader") or {}
            record = {
                "lab": info.get("assignment"),
                "student": info.get("student"),
                "kernel_start": self._timings["kernel_start"],
                "kernel_stop": self._timings["kernel_stop"],
                "guard_setup": self.guard_seconds["setup"],
                "guard_steps": self.guard_seconds["steps"],
                "guard_count": self.guard_seconds["count"],
                "cells": self._timings["cells"],
                "total": monotonic() - self._started,
            }
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, (json.dumps(record) + "\n").encode())
                finally:
                    os.close(fd)
            except OSError as err:
                self.log.warning("could not append the timing record to %s: %s", path, err)

        # -- end of timing record -------------------------------------------------------------------

        # -- helpers -----------------------------------------------------------------------

        def _take_released(self):
            released, self._released = sorted(self._released), set()
            return released

        @staticmethod
        def _error(ename, evalue):
            return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                                traceback=[f"\x1b[0;31m{ename}\x1b[0m: {evalue}"])

        def _replace_outputs(self, cell, ename, evalue):
            cell.outputs = [self._error(ename, evalue)]
            cell.execution_count = None

        @staticmethod
        def _label(cell, index):
            grade_id = _nbgrader_meta(cell).get("grade_id")
            return f"cell {index} ({grade_id})" if grade_id else f"cell {index}"

        def _budget_left(self):
            if not self.notebook_timeout or self.notebook_timeout <= 0:
                return math.inf
            return self.notebook_timeout - (monotonic() - self._started)

        def _forbidden_for(self, nb, resources):
            references = _references_forbidden(self.reference_modules)
            maps = [self.forbidden, _notebook_forbidden(nb), references]
            # the student edition removes only what the course forbids (not what a submission's metadata adds)
            self._trusted_forbidden = _merge_forbidden(self.forbidden, _notebook_forbidden(nb), references)
            info = resources.get("nbgrader") if isinstance(resources, dict) else None
            in_autograde = isinstance(info, dict) and info.get("assignment") and info.get("notebook")
            if self.forbidden_from_source and in_autograde:
                source = self._source_notebook(info["assignment"], info["notebook"])
                if source is not None:
                    maps.insert(0, _notebook_forbidden(source))
                    self._trusted_forbidden = _merge_forbidden(self.forbidden, _notebook_forbidden(source), references)
            return _merge_forbidden(*maps)

        def _make_edition(self):
            """The student edition of the library packages for this notebook's forbidden map, or None."""
            if not (self.student_edition and self.library_packages):
                return None
            try:
                return edition.edition_for(self.library_packages, self._trusted_forbidden, self.reference_modules)
            except Exception as err:  # noqa: BLE001 - the guard still refuses the calls: say so and go on
                self.log.error("no student edition of %s (the guard alone keeps the references): %s",
                               ", ".join(self.library_packages), err)
                return None

        def create_kernel_manager(self):
            km = super().create_kernel_manager()
            if self._edition is not None and hasattr(km, "substitute"):
                km.substitute = {**km.substitute, **self._edition.substitutes}
            return km

        def _source_notebook(self, assignment, notebook):
            try:
                import nbformat
                from nbgrader.coursedir import CourseDirectory

                coursedir = CourseDirectory(config=self.config)
                path = os.path.join(
                    coursedir.format_path(coursedir.source_directory, ".", assignment), f"{notebook}.ipynb"
                )
                if os.path.isfile(path):
                    return nbformat.read(path, as_version=4)
                self.log.warning("source notebook %s not found: using the submission's forbidden list", path)
            except Exception as err:  # noqa: BLE001
                self.log.warning("could not read the source notebook of %s/%s: %s", assignment, notebook, err)
            return None

        # -- running a cell ------------------------------------------------------------------

        def _get_timeout(self, cell):
            timeout = super()._get_timeout(cell)
            if cell is None:
                return timeout
            left = self._budget_left()
            if left != math.inf and (timeout is None or left < timeout):
                self._timeout_kind = "notebook"
                timeout = max(1, int(math.ceil(left)))
                self.error_on_timeout = {
                    "ename": "NotebookTimeLimit",
                    "evalue": f"the notebook's time budget of {self.notebook_timeout} s ran out while this "
                              "cell was running; it was interrupted",
                    "traceback": [f"\x1b[0;31mNotebookTimeLimit\x1b[0m: the notebook's time budget of "
                                  f"{self.notebook_timeout} s ran out while this cell was running"],
                }
            else:
                self._timeout_kind = "cell"
                self.error_on_timeout = {
                    "ename": "CellTimeoutError",
                    "evalue": f"the cell ran longer than {timeout} s and was interrupted",
                    "traceback": [f"\x1b[0;31mCellTimeoutError\x1b[0m: the cell ran longer than {timeout} s "
                                  "and was interrupted"],
                }
            return timeout

        async def _async_handle_timeout(self, timeout, cell=None):
            self._interrupted = True
            return await super()._async_handle_timeout(timeout, cell)

        def _run_code_cell(self, cell, index):
            self._reset_cell_state()
            self._interrupted = False
            try:
                self.execute_cell(cell, index, store_history=True)
            except DeadKernelError:
                self._flush_stream()
                self._kernel_died(cell, index)
            except ValueError as err:
                if not _garbled(err):
                    raise
                self._flush_stream()
                self.log.error("%s: %s", self._label(cell, index), err)
                self._kill_kernel()
                self._kernel_died(cell, index, during="while this cell was running (it sent a garbled message, "
                                  "as a kernel out of memory can, and was stopped)")
            except CellTimeoutError:
                self._flush_stream()
                if self._interrupted:
                    self._kill_kernel()
                    cell.outputs.append(self._error(
                        "KernelDied",
                        "the kernel did not stop when interrupted after the time limit and was killed; "
                        "the cells after this one were not run",
                    ))
                    self._dead_in = self._label(cell, index)
                else:
                    cell.outputs.append(self._error(
                        "CellTimeoutError", f"the outputs of this cell did not all arrive within {self.iopub_timeout} s"
                    ))
            finally:
                self._flush_stream()
            if self._interrupted and self._timeout_kind == "notebook":
                self._budget_spent_in = self._label(cell, index)

        def _plan_probes(self):
            """{cell index: (ProbeCell, seed, nonce, the code the kernel runs)} for the probe cells
            (a :class:`probes.ProbeError` for a malformed one). Made before the guard's setup, which
            must know the code of every locked cell the kernel will run."""
            plan = {}
            # what the checker runs before a lab's checks: the course's setup cell(s), as restored
            self._checker_setup = [c.source for c in self.nb.cells if c.cell_type == "code"
                                   and _nbgrader_meta(c).get("grade_id") in self.checker_setup_cells]
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code" or not _is_grade(cell):
                    continue
                try:
                    probe_cell = probes.parse(cell.source)
                except probes.ProbeError as err:
                    plan[index] = err
                    continue
                if probe_cell is not None:
                    seed = probes.seed_for(self._seed, str(_nbgrader_meta(cell).get("grade_id", "")))
                    nonce = secrets.token_hex(16)
                    try:  # the reference versions the cell binds, as source (autograder.edition)
                        prelude = edition.injection_source(
                            self.reference_modules, edition.reference_calls(probe_cell.inputs + "\n" + probe_cell.probe)
                        ) if self.reference_modules else ""
                    except edition.EditionError as err:
                        plan[index] = probes.ProbeError(str(err))
                        continue
                    plan[index] = (probe_cell, seed, nonce, probe_cell.kernel_code(seed, nonce, prelude))
            return plan

        def _run_probe_cell(self, cell, index, plan):
            """Run a probe cell (:mod:`autograder.probes`): INPUTS and PROBE in the kernel, CHECK in the
            trusted checker; the cell's outputs become the checker's verdict. Returns the code the
            kernel ran."""
            probe_cell, seed, nonce, kernel_source = plan
            source = cell.source
            cell.source = kernel_source
            self._probe = {"nonce": nonce, "payloads": []}
            dead_before = self._dead_in
            started = time.monotonic()  # the grader's clock of INPUTS and PROBE (a training's time budget)
            try:
                self._run_code_cell(cell, index)
            finally:
                probe_seconds = time.monotonic() - started
                cell.source = source
                state, self._probe = self._probe, None
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            if self._dead_in is not dead_before:
                # in the grader's words only: an error output of the kernel may be the student's
                passed, message = False, ("KernelDied: the kernel died while this test called your code; "
                                          "the cells after it were not run")
            elif self._interrupted:
                passed, message = False, (
                    f"NotebookTimeLimit: the notebook's time budget of {self.notebook_timeout} s ran out during this test"
                    if self._timeout_kind == "notebook" else
                    "CellTimeoutError: this test ran longer than its time limit and was interrupted")
            elif errors:
                ename = errors[-1].get("ename")
                self.log.info("%s: the probe raised %s: %s", self._label(cell, index), ename,
                              str(errors[-1].get("evalue"))[:300])  # the grader's log only
                forbidden = _FORBIDDEN_MESSAGE.match(str(errors[-1].get("evalue")))
                if ename == "ForbiddenCall" and forbidden and forbidden.group(1) in self._forbidden_labels:
                    # the guard's refusal, rebuilt from the grader's own list of names: nothing the kernel chose
                    passed, message = False, f"ForbiddenCall: {forbidden.group(0)}"
                else:
                    shown = ename if ename in _BUILTIN_ERRORS else "an exception of a class of your own"
                    passed, message = False, (f"ProbeError: your code raised {shown} while the hidden test called "
                                              "it (its message and traceback are not shown: they may hold the test's "
                                              "inputs)")
            else:
                payload, why = probes.find_payload(state["payloads"], nonce)
                if payload is None:
                    passed, message = False, f"ProbeError: {why}"
                else:
                    left = self._budget_left()
                    timeout = float(self.timeout or 600)
                    if left != math.inf:
                        timeout = max(1.0, min(timeout, left))
                    request = {"setup": self._checker_setup, "inputs": probe_cell.inputs, "check": probe_cell.check,
                               "seed": seed, "exported": probe_cell.exported,
                               "payload": payload, "probe_seconds": probe_seconds}
                    try:
                        passed, message = _checker(self.checker_paths).check(request, timeout)
                    except Exception as err:  # noqa: BLE001 - the checker could not start: fail the cell, say why
                        self.log.error("the checker failed: %s", err)
                        passed, message = False, f"GraderError: the checker could not run: {err}"
            if not passed:
                self.log.info("%s: %s", self._label(cell, index), message)
            cell.outputs = [NotebookNode(o) for o in probes.verdict_outputs(passed, message)]
            return kernel_source

        def _exit_status(self):
            provisioner = getattr(self.km, "provisioner", None)
            process = getattr(provisioner, "process", None)
            if process is None:
                return None
            try:
                status = process.poll()
            except Exception:  # noqa: BLE001
                status = getattr(process, "returncode", None)
            return status

        def _kernel_died(self, cell, index, during=None):
            status = self._exit_status()
            label = self._label(cell, index)
            self._dead_in = label
            what = during or "while this cell was running"
            self.log.error("the kernel died %s (%s)", what, label)
            cell.outputs.append(self._error(
                "KernelDied",
                f"the kernel died {what}: {_death_reason(status)}. The cells before this one keep "
                "their results; the cells after it were not run.",
            ))

        async def _async_kill_kernel(self):
            try:
                await ensure_async(self.km.signal_kernel(signal.SIGKILL))
            except Exception as err:  # noqa: BLE001
                self.log.warning("could not kill the kernel: %s", err)

        _kill_kernel = run_sync(_async_kill_kernel)

        def on_cell_executed(self, **kwargs):
            self._flush_stream()
            return super().on_cell_executed(**kwargs)

        # -- the silent guard steps -------------------------------------------------------------

        async def _async_silent(self, code, expressions, timeout):
            msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions=expressions,
                                     allow_stdin=False, stop_on_error=False)
            deadline = monotonic() + timeout
            while True:
                left = deadline - monotonic()
                if left <= 0:
                    try:
                        await ensure_async(self.km.interrupt_kernel())
                    except Exception:  # noqa: BLE001
                        pass
                    return None
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(left, 1.0)))
                except Empty:
                    await self._async_check_alive()
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg

        _silent = run_sync(_async_silent)

        def _guard_setup(self, forbidden):
            import importlib

            # a probe cell's locked code is what the kernel runs of it (autograder.probes)
            locked_sources = [self._probe_plan[i][3] if isinstance(self._probe_plan.get(i), tuple) else c.source
                              for i, c in enumerate(self.nb.cells) if _is_locked(c)]
            payload = {
                "locked_sources": locked_sources,
                "forbidden": forbidden,
                "protected_modules": list(self.protected_modules),
                "libraries": {
                    name: os.path.dirname(os.path.realpath(importlib.import_module(name).__file__))
                    for name in self.library_packages
                },
            }
            report, problem = self._guard_call("setup", payload, None)
            if problem is not None:
                self._guard_broken = self._guard_broken or problem
                self.log.error("the grader's guard could not be set up: %s", problem)
                return
            for item in report.get("problems", []):
                if self._edition is not None and _left_out_by(self._edition, item, self.library_packages):
                    continue  # what the student edition left out: the file system keeps it from the kernel
                self.log.warning("guard setup: %s", item)
            if report.get("forbidden"):
                self.log.info("forbidden references: %s", ", ".join(report["forbidden"]))

        def _guard_call(self, step, payload, index):
            """Run a guard step; (report, None) or (None, problem).

            A step hit by a late KeyboardInterrupt (the interrupt sent at a cell's time limit can
            land just after the cell ended) is tried once more.
            """
            report, problem = self._guard_call_once(step, payload, index)
            if problem is not None and "KeyboardInterrupt" in problem and self._dead_in is None and step != "setup":
                report, problem = self._guard_call_once(step, payload, index)
            return report, problem

        def _guard_call_once(self, step, payload, index):
            nonce = secrets.token_hex(16)
            expression = (
                f"__import__('autograder.kernel.guard', fromlist=['kernel_step']).kernel_step("
                f"{step!r}, {nonce!r}, {json.dumps(payload)!r})"
            )
            code = _SETUP_IMPORT if step == "setup" else ""
            timeout = self.guard_timeout
            left = self._budget_left()
            if left != math.inf:
                timeout = max(1, min(timeout, left))
            what = {"setup": "the grader's setup", "restore": "the grader's check before this test",
                    "locked": "the grader's check after this cell"}[step]
            started = monotonic()
            try:
                try:
                    reply = self._silent(code, {"gmlib_guard": expression}, timeout)
                except ValueError as err:
                    if not _garbled(err):
                        raise
                    self.log.error("%s: %s", what, err)
                    self._kill_kernel()
                    raise DeadKernelError(f"the kernel sent a garbled message during {what}") from None
            except DeadKernelError:
                cell = self.nb.cells[index] if index is not None else None
                if cell is not None:
                    if step == "restore":
                        cell.outputs = []  # the test did not run: only the reason is shown
                        cell.execution_count = None
                    self._kernel_died(cell, index, during=f"during {what}")
                else:
                    self._dead_in = "the grader's setup, before any cell"
                return None, f"the kernel died during {what}"
            finally:
                elapsed = monotonic() - started
                if step == "setup":
                    self.guard_seconds["setup"] += elapsed
                else:
                    self.guard_seconds["steps"] += elapsed
                    self.guard_seconds["count"] += 1
            if reply is None:
                return None, f"{what} did not finish within {timeout:.0f} s"
            content = reply.get("content", {})
            if content.get("status") != "ok":
                return None, f"{what} failed: {content.get('ename')}: {content.get('evalue')}"
            result = content.get("user_expressions", {}).get("gmlib_guard")
            if not isinstance(result, dict) or result.get("status") != "ok":
                detail = f"{result.get('ename')}: {result.get('evalue')}" if isinstance(result, dict) else "no answer"
                return None, f"{what} failed ({detail})"
            try:
                text = ast.literal_eval(result["data"]["text/plain"])
                proof, body = text.split("|", 1)
                report = json.loads(body)
            except Exception:  # noqa: BLE001
                return None, f"{what} gave an unreadable answer"
            if step == "setup":
                try:
                    self._guard_secret = bytes.fromhex(proof)
                except ValueError:
                    return None, f"{what} gave an unreadable key"
                return report, None
            expected = hmac.new(self._guard_secret or b"", f"{nonce}|{body}".encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, proof):
                return None, f"{what} was answered by something other than the grader's guard"
            return report, None

        # -- outputs -------------------------------------------------------------------------------

        def _reset_cell_state(self):
            self._cell_bytes = 0
            self._sizes = {}
            self._tail = None  # (stream output, [chunks]) being merged
            self._note = None
            self._dropped = 0
            self._pending_clear = False
            self._errors = 0
            self._kept = 0  # outputs kept besides the errors and the note
            self._last_error = None  # index in the cell's outputs of the last error kept

        def _allowance(self):
            return max(0, min(self.max_cell_output_bytes - self._cell_bytes,
                              self.max_notebook_output_bytes - self._nb_bytes))

        def _account(self, out, size):
            self._sizes[id(out)] = self._sizes.get(id(out), 0) + size
            self._cell_bytes += size
            self._nb_bytes += size

        def _flush_stream(self):
            tail = getattr(self, "_tail", None)
            if tail is not None:
                out, chunks = tail
                if len(chunks) > 1:
                    out["text"] = "".join(chunks)
                    chunks[:] = [out["text"]]
                self._tail = None

        def _drop(self, outs, size):
            self._dropped += size
            text = f"[output truncated by the grader: {self._dropped} bytes not kept]\n"
            if self._note is None:  # once added, the note stays (clear_output keeps it)
                self._flush_stream()
                self._note = NotebookNode(output_type="stream", name="stdout", text=text)
                outs.append(self._note)
            else:
                self._note["text"] = text

        def _clear(self, outs, cell_index):
            self._pending_clear = False
            self._flush_stream()
            kept, removed = [], []
            for out in outs:
                (kept if out.get("output_type") == "error" or out is self._note else removed).append(out)
            for out in removed:
                size = self._sizes.pop(id(out), 0)
                self._cell_bytes -= size
                self._nb_bytes -= size
            outs[:] = kept
            self._kept = 0
            errors = [i for i, o in enumerate(kept) if o.get("output_type") == "error"]
            self._last_error = errors[-1] if errors else None
            self.clear_display_id_mapping(cell_index)

        def clear_output(self, outs, msg, cell_index):
            if msg["content"].get("wait"):
                self._pending_clear = True
            else:
                self._clear(outs, cell_index)

        def output(self, outs, msg, display_id, cell_index):
            msg_type = msg["msg_type"]
            try:
                out = output_from_msg(msg)
            except ValueError:
                self.log.error(f"unhandled iopub msg: {msg_type}")
                return None
            if self._pending_clear:
                self._clear(outs, cell_index)
            if (getattr(self, "_probe", None) is not None and out.output_type in ("display_data", "execute_result")
                    and probes.MIME in (out.get("data") or {})):
                # the probe's values: kept aside (not an output, not counted), for the checker only
                if len(self._probe["payloads"]) < 2:
                    self._probe["payloads"].append(out["data"][probes.MIME])
                else:
                    self._probe["payloads"].append("")
                return None
            if out.output_type == "error":
                return self._add_error(outs, out)
            if out.output_type == "stream":
                return self._add_stream(outs, out)
            size = _mime_size(out.get("data"))
            if size > self._allowance() or self._kept >= self.max_cell_outputs:
                self._drop(outs, size)
                return None
            self._flush_stream()
            if display_id:
                cell_map = self._display_id_map.setdefault(display_id, {})
                cell_map.setdefault(cell_index, []).append(len(outs))
            outs.append(out)
            self._kept += 1
            self._account(out, size)
            return out

        def _add_stream(self, outs, out):
            text = out.get("text", "")
            size = _utf8_len(text)
            allowance = self._allowance()
            keep = text if size <= allowance else _utf8_head(text, allowance)
            kept = _utf8_len(keep) if keep is not text else size
            tail = self._tail
            if keep:
                if tail is not None and outs and outs[-1] is tail[0] and tail[0].get("name") == out.get("name"):
                    tail[1].append(keep)
                    self._account(tail[0], kept)
                    out = tail[0]
                elif self._kept >= self.max_cell_outputs:
                    kept = 0
                else:
                    self._flush_stream()
                    out["text"] = keep
                    outs.append(out)
                    self._kept += 1
                    self._tail = (out, [keep])
                    self._account(out, kept)
            if size - kept > 0:
                self._drop(outs, size - kept)
            return out

        def _add_error(self, outs, out):
            self._flush_stream()
            size = _error_size(out)
            if size > self.max_error_bytes:
                limit = max(1000, self.max_error_bytes)
                out["evalue"] = _utf8_head(str(out.get("evalue", "")), limit // 4)
                lines = [str(line) for line in out.get("traceback", [])]
                head, tail, budget = [], [], limit // 2
                for line in reversed(lines):  # the end of a traceback says the most
                    if budget - _utf8_len(line) < 0:
                        break
                    tail.insert(0, line)
                    budget -= _utf8_len(line)
                if len(tail) < len(lines):
                    first = _utf8_head(lines[0], limit // 4) if lines else ""
                    dropped = len(lines) - len(tail) - 1
                    head = [first, f"[... traceback shortened by the grader: {dropped} entries not kept ...]"]
                out["traceback"] = head + tail
                size = _error_size(out)
            self._errors += 1
            i = self._last_error
            if self._errors > self.max_error_outputs and i is not None and i < len(outs):
                old_size = self._sizes.pop(id(outs[i]), 0)
                self._cell_bytes -= old_size
                self._nb_bytes -= old_size
                self._drop(outs, old_size)
                outs[i] = out
                self._account(out, size)
                return out
            self._last_error = len(outs)
            outs.append(out)
            self._account(out, size)
            return out

        def _update_display_id(self, display_id, msg):
            size = _mime_size(msg.get("content", {}).get("data"))
            targets = self._display_id_map.get(display_id, {})
            count = sum(len(v) for v in targets.values())
            if count and (size > self.max_cell_output_bytes
                          or self._nb_bytes + count * size > self.max_notebook_output_bytes):
                self.log.warning("update_display_data of %s bytes ignored (output limits)", size)
                return
            return super()._update_display_id(display_id, msg)

        def handle_comm_msg(self, outs, msg, cell_index):
            if self.allow_widgets:
                return super().handle_comm_msg(outs, msg, cell_index)
            return None

    GuardedExecute.__module__ = __name__
    return GuardedExecute


GuardedExecute = _build_guarded_execute()
