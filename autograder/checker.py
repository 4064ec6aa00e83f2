r"""The trusted checker: the process where a probe cell's CHECK runs (see :mod:`autograder.probes`).

It is started by the grader (one per nbgrader process, on the first probe cell), never by a
kernel, and it never loads student code: it reads requests as JSON lines on its standard input
and answers on its standard output. A request carries the lab's setup code (from the course's
source notebook), a cell's INPUTS and CHECK sections, the cell's seed, the values the
kernel sent (data only: :func:`autograder.probes.decode`) and the seconds INPUTS and PROBE took
in the kernel by the grader's clock. The checker runs the setup once per lab (cached), then for
each request: INPUTS with ``GRADER_SEED`` (and ``PROBE_SECONDS``, the grader's seconds, or None),
the decoded values bound to their names, CHECK; the verdict is ``passed`` or the exception CHECK
raised, in one line.

Command line: ``python -I -m autograder.checker serve --path DIR [--path DIR ...]`` (the course
root, for the library packages). :class:`Checker` is the grader's side: it starts the process,
sends a request, waits at most ``timeout`` seconds for the verdict, and restarts the process
when it did not answer (the cell then fails, with that said).
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import sys
import time
import traceback
from typing import Any

from autograder.common import one_line

__all__ = ["Checker", "CheckerError", "run_check"]

_MAX_MESSAGE = 400


class CheckerError(RuntimeError):
    """The checker process could not be started or answered nonsense (one line)."""


def _one_line(text: str) -> str:
    return one_line(text, _MAX_MESSAGE)


def _failure(err: BaseException, section: str, filename: str) -> str:
    """``Name: message (CHECK line N)``: what failed, never the check's source."""
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    where = f" ({section} line {line})" if line else f" ({section})"
    message = str(err).strip()
    if isinstance(err, AssertionError) and not message:
        message = "a hidden check failed"
    return _one_line(f"{type(err).__name__}: {message}{where}")


# ----------------------------------------------------------------------------
# The checker process
# ----------------------------------------------------------------------------

_setups: dict[str, dict] = {}


def _setup_namespace(setup: list[str]) -> dict:
    key = hashlib.sha256(json.dumps(setup).encode()).hexdigest()
    if key not in _setups:
        namespace: dict[str, Any] = {"__name__": "__autograder_check__"}
        for k, code in enumerate(setup):
            exec(compile(code, f"<lab setup {k}>", "exec"), namespace)  # noqa: S102 - the course's own code
        _setups[key] = namespace
    return _setups[key]


def run_check(request: dict) -> dict:
    """One verdict: ``{"passed": bool, "message": str | None, "seconds": float}``."""
    from autograder.probes import ProbeError, decode

    started = time.perf_counter()

    def done(passed: bool, message: str | None = None) -> dict:
        return {"passed": passed, "message": message, "seconds": time.perf_counter() - started}

    try:
        base = _setup_namespace(list(request.get("setup", [])))
    except Exception as err:  # noqa: BLE001 - the course's setup is broken: say so, fail the cell
        return done(False, "GraderError: the lab's setup failed in the checker: " + _one_line(f"{type(err).__name__}: {err}"))
    namespace = dict(base)
    namespace["GRADER_SEED"] = int(request["seed"])
    # the grader's clock of the cell's INPUTS and PROBE in the kernel (None when not graded)
    seconds = request.get("probe_seconds")
    namespace["PROBE_SECONDS"] = float(seconds) if isinstance(seconds, (int, float)) else None
    try:
        exec(compile(request.get("inputs", ""), "<inputs>", "exec"), namespace)  # noqa: S102
    except Exception as err:  # noqa: BLE001
        return done(False, "GraderError: the test's inputs failed in the checker: " + _failure(err, "INPUTS", "<inputs>"))
    payload = request.get("payload") or {}
    problems = payload.get("problems") or {}
    values = payload.get("values") or {}
    for name in request.get("exported", []):
        if name in problems:
            return done(False, _one_line(f"ProbeError: {name} {problems[name]}"))
        if name not in values:
            return done(False, _one_line(f"ProbeError: the probe sent no value for {name}"))
        try:
            namespace[name] = decode(values[name])
        except ProbeError as err:
            return done(False, _one_line(f"ProbeError: {name}: {err}"))
    try:
        exec(compile(request.get("check", ""), "<check>", "exec"), namespace)  # noqa: S102
    except Exception as err:  # noqa: BLE001 - any exception fails the cell
        return done(False, _failure(err, "CHECK", "<check>"))
    return done(True)


def serve(paths: list[str]) -> int:
    """Answer requests (one JSON object per line on stdin) until stdin closes."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a check prints goes to stderr, never into the answers
    sys.stdout = sys.stderr
    import torch  # noqa: F401 - the checks compare tensors; import it before the first request

    torch.set_num_threads(1)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            answer = run_check(request)
            answer["id"] = request.get("id")
        except Exception as err:  # noqa: BLE001 - a malformed request: answer, go on
            answer = {"passed": False, "message": _one_line(f"GraderError: {type(err).__name__}: {err}"), "id": None}
        out.write(json.dumps(answer) + "\n")
    return 0


# ----------------------------------------------------------------------------
# The grader's side
# ----------------------------------------------------------------------------

class Checker:
    """A checker process for the grader: ``check(request, timeout)`` -> ``(passed, message)``."""

    START_TIMEOUT = 120.0

    def __init__(self, paths: list[str], python: str = sys.executable, env: dict | None = None):
        self.paths, self.python, self.env = list(paths), python, env
        self.proc: subprocess.Popen | None = None
        self._next = 0

    def _start(self) -> None:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("OMP_NUM_THREADS", "1")
        env.pop("PYTHONPATH", None)
        # autograder itself must import: -I drops the working directory from sys.path
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cmd = [self.python, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
               "from autograder.checker import main; sys.exit(main(sys.argv[2:]))", here, "serve"]
        for path in self.paths:
            cmd += ["--path", path]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env=env, text=True, bufsize=1, close_fds=True)
        except OSError as err:
            raise CheckerError(f"cannot start the checker: {err}") from None
        ready = self._read(self.START_TIMEOUT)
        if not ready or not ready.get("ready"):
            self.close()
            raise CheckerError("the checker did not start")

    def _read(self, timeout: float) -> dict | None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return None
                try:
                    return json.loads(line)
                except ValueError:
                    return None

    def check(self, request: dict, timeout: float) -> tuple[bool, str]:
        """The verdict on one probe cell; a checker that does not answer within ``timeout``
        seconds is killed (the next request starts another) and the cell fails."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        request = dict(request, id=self._next)
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return False, "GraderError: the checker stopped; the check was not run"
        answer = self._read(timeout)
        if answer is None or answer.get("id") != self._next:
            self.close()
            return False, f"GraderError: the check did not finish within {timeout:.0f} s"
        return bool(answer.get("passed")), answer.get("message") or ""

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except (OSError, AttributeError):
                    pass
            self.proc = None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder.checker")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="answer check requests on stdin/stdout")
    s.add_argument("--path", action="append", default=[], help="a directory for sys.path (the course root)")
    args = parser.parse_args(argv)
    return serve(args.path)


if __name__ == "__main__":
    sys.exit(main())
