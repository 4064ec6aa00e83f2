"""The autograder's guard (autograder.kernel.guard, driven by autograder.preprocessors.execute): time, crash and output limits, and the in-kernel guard against hostile notebooks.

Small synthetic notebooks (a read-only setup cell, a solution cell, grade cells, with nbgrader
metadata) run through :class:`autograder.preprocessors.GuardedExecute` exactly as nbgrader's autograde would
run them, and nbgrader's own ``determine_grade`` says which cells earned their points.

- limits: an infinite loop times out and the next cells still run; 100 MB of printing is cut
  to the per-cell cap and the notebook stays small; ``os._exit`` keeps the results before it and
  marks the rest; a memory error under an address-space limit is an ordinary error; SIGKILL (what
  a memory cap does) is reported as such; a kernel that ignores the interrupt is killed; the
  notebook's time budget stops the rest;
- the guard: one notebook carries a wrong answer and every attack listed in the issue, each
  followed by a test that the wrong answer must fail. Run with the guard, every such test fails
  (and the honest tests pass); run without it, every attack earns the point: the attacks are real;
- the honest solutions of Lab 1 (fast) and Lab 6 (slow: two GAN trainings) keep every point.

Kernels take about 1.5 s to start: each notebook module-scoped fixture runs once.
"""
from __future__ import annotations

import ast
import json
import math
import re
import sys
import time
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.kernel import guard
from autograder.preprocessors import execute

nbgrader_utils = pytest.importorskip("nbgrader.utils")
determine_grade = nbgrader_utils.determine_grade

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _cell(source, kind=None, grade_id=None, points=1):
    """A code cell; ``kind``: None (a plain cell), "setup" (read-only), "solution" or "test"."""
    cell = new_code_cell(source)
    if kind:
        meta = {
            "grade_id": grade_id,
            "locked": kind in ("setup", "test"),
            "solution": kind == "solution",
            "grade": kind == "test",
            "schema_version": 3,
        }
        if kind == "test":
            meta["points"] = points
        cell.metadata["nbgrader"] = meta
    return cell


def _notebook(cells, forbidden=None):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if forbidden:
        nb.metadata["autograder"] = {"forbidden": forbidden}
    return nb


def _run(nb, tmp_path, **traits):
    """Execute ``nb`` with GuardedExecute; (notebook, seconds, the preprocessor)."""
    traits.setdefault("library_packages", ["gmlib", "labrefs"])  # as nbgrader_config.py sets them
    traits.setdefault("reference_modules", ["labrefs"])
    preprocessor = execute.GuardedExecute(**traits)
    start = time.perf_counter()
    nb, _ = preprocessor.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    return nb, time.perf_counter() - start, preprocessor


def _grades(nb):
    """{grade_id: (score, max_score)} of the grade cells."""
    return {
        c.metadata["nbgrader"]["grade_id"]: determine_grade(c)
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade")
    }


def _by_id(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.get("metadata", {})}


def _errors(cell):
    return [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"]


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _passed(nb, grade_id):
    score, max_score = _grades(nb)[grade_id]
    return score == max_score


# ----------------------------------------------------------------------------
# Without a kernel: the pieces
# ----------------------------------------------------------------------------


def test_bound_names_sees_every_kind_of_module_level_binding():
    source = (
        "%matplotlib inline\n"
        "import numpy as np, os.path\n"
        "from math import pi as PI, tau\n"
        "a, (b, *c) = 1, (2, 3)\n"
        "d: int = 4\n"
        "e += 1\n"
        "for f in range(2):\n    g = f\n"
        "with open('x') as h:\n    pass\n"
        "def helper(x, y=[k := 5]):\n    global G\n    G = x\n    local = 1\n"
        "class Checker:\n    attr = 1\n"
        "squares = [s * s for s in range(3) if (w := s)]\n"
        "try:\n    pass\nexcept ValueError as err:\n    pass\n"
        "del e\n"
        "lambda q: (r := q)\n"
    )
    names = guard.bound_names(source)
    expected = {"np", "os", "PI", "tau", "a", "b", "c", "d", "e", "f", "g", "h", "helper", "k", "G",
                "Checker", "squares", "w", "err"}
    assert expected <= set(names)
    assert not {"local", "attr", "s", "x", "y", "q", "r"} & set(names)
    assert guard.bound_names("def broken(:\n") is None


def test_death_reasons_name_the_signal_and_the_likely_cause():
    assert "SIGKILL" in execute._death_reason(-9) and "memory" in execute._death_reason(-9)
    assert "SIGKILL" in execute._death_reason(128 + 9)  # a wrapper that reports the signal as 128 + n
    assert "SIGSEGV" in execute._death_reason(-11)
    assert "CPU" in execute._death_reason(-24)
    assert "status 1" in execute._death_reason(1) and "os._exit" in execute._death_reason(1)
    assert "unknown" in execute._death_reason(None)


def _message(msg_type, **content):
    return {"msg_type": msg_type, "header": {"msg_type": msg_type}, "parent_header": {"msg_id": "m"},
            "content": content}


@pytest.fixture
def capped():
    """A GuardedExecute ready to take output messages for one cell, with small caps."""
    preprocessor = execute.GuardedExecute(max_cell_output_bytes=1000, max_notebook_output_bytes=1500,
                                        max_error_outputs=3, max_error_bytes=2000)
    preprocessor._nb_bytes = 0
    preprocessor._reset_cell_state()
    return preprocessor


def test_streams_are_merged_and_cut_at_the_cell_cap(capped):
    outs = []
    for _ in range(300):  # 300 messages of 10 bytes: 1000 kept, 2000 dropped
        capped.output(outs, _message("stream", name="stdout", text="0123456789"), None, 0)
    capped._flush_stream()
    assert [o.output_type for o in outs] == ["stream", "stream"]
    assert outs[0].text == "0123456789" * 100
    assert outs[1].text == "[output truncated by the grader: 2000 bytes not kept]\n"
    # the notebook cap: the next cell may keep 500 bytes more
    capped._reset_cell_state()
    outs = []
    capped.output(outs, _message("stream", name="stderr", text="é" * 400), None, 1)  # 800 bytes
    capped._flush_stream()
    assert outs[0].text == "é" * 250 and "300 bytes not kept" in outs[1].text
    # displays that do not fit are dropped whole
    capped.output(outs, _message("display_data", data={"text/plain": "x" * 10}, metadata={}), None, 1)
    assert len(outs) == 2 and "310 bytes not kept" in outs[1].text


def test_errors_survive_clear_output_and_the_caps(capped):
    outs = []
    capped.output(outs, _message("stream", name="stdout", text="x" * 2000), None, 0)
    for i in range(5):
        capped.output(outs, _message("error", ename="AssertionError", evalue=f"failure {i}",
                                     traceback=["line"] * 3), None, 0)
    capped.clear_output(outs, _message("clear_output", wait=False), 0)
    kinds = [(o.output_type, o.get("ename")) for o in outs]
    assert kinds.count(("error", "AssertionError")) == 3  # max_error_outputs: the newest replaces the last
    assert outs[-1].evalue == "failure 4"
    assert any("bytes not kept" in o.get("text", "") for o in outs)  # the note stays too
    # clear_output(wait=True) clears at the next output, errors excepted
    capped.output(outs, _message("stream", name="stdout", text="new"), None, 0)
    capped.clear_output(outs, _message("clear_output", wait=True), 0)
    capped.output(outs, _message("stream", name="stdout", text="newer"), None, 0)
    capped._flush_stream()
    assert [o.get("text") for o in outs if o.output_type == "stream"][-1] == "newer"
    assert sum(o.output_type == "error" for o in outs) == 3
    # a huge traceback is shortened, not dropped
    capped.output(outs, _message("error", ename="ValueError", evalue="v" * 10_000,
                                 traceback=["frame %d" % i + " " * 500 for i in range(100)]), None, 0)
    big = [o for o in outs if o.get("ename") == "ValueError"][0]
    assert execute._error_size(big) <= 4000 and "shortened by the grader" in big.traceback[1]


def test_trampolines_check_the_caller_whatever_the_alias():
    """In-process: the forbidden-reference machinery on a fake module, with a fake verdict."""
    module = types.ModuleType("gmlib_guard_test_fake")
    counter = [0]

    def make():
        def closure_fn(x, scale=2):
            counter[0] += 1
            return x * scale

        return closure_fn

    module.closure_fn = make()

    class Base:
        def __init__(self, value):
            self.value = value

    class Child(Base):  # no own __init__
        pass

    module.Child = Child
    module.hypot = math.hypot  # a C builtin
    sys.modules[module.__name__] = module
    try:
        alias = module.closure_fn
        captured_hypot = module.hypot

        class FakeGuard:
            def allowed(self, frame, targets):
                return frame.f_code.co_name != "student", frame

            def describe(self, where):
                return where

        forbidden = guard._Forbidden(FakeGuard(), {module.__name__: ["closure_fn", "Child", "hypot", "nothing"]})
        assert sorted(forbidden.installed) == sorted(f"{module.__name__}.{n}" for n in ["closure_fn", "Child", "hypot"])
        assert forbidden.problems and "nothing" in forbidden.problems[0]
        assert module.closure_fn is alias  # the same object, a new __code__
        assert module.hypot is not captured_hypot  # a C builtin: replaced by a checking wrapper

        def student():
            return alias(3)

        def teacher():
            return alias(3, scale=5), module.Child(7).value, module.hypot(3.0, 4.0)

        with pytest.raises(guard.ForbiddenCall, match="closure_fn"):
            student()
        assert teacher() == (15, 7, 5.0) and counter[0] == 1

        def student():  # noqa: F811 - a second "student" frame
            return module.Child(1)

        with pytest.raises(guard.ForbiddenCall, match="Child"):
            student()

        def student():  # noqa: F811
            return module.hypot(3.0, 4.0)

        with pytest.raises(guard.ForbiddenCall, match="hypot"):
            student()
        import inspect

        assert str(inspect.signature(alias)) == "(x, scale=2)"
    finally:
        del sys.modules[module.__name__]


# ----------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_print_exit(tmp_path_factory):
    """Guard on: an infinite loop, 100 MB of printing, then os._exit(1)."""
    cells = [
        _cell("import os\nimport sys", "setup", "setup"),
        _cell("print('ok')", "test", "before"),
        _cell("while True:\n    pass"),
        _cell("print('after the loop')", "test", "after_loop"),
        _cell("for _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\nsys.stdout.flush()"),
        _cell("print('after printing')", "test", "after_print"),
        _cell("os._exit(1)"),
        _cell("print('never')", "test", "after_exit"),
        _cell("y = 2"),
    ]
    return _run(_notebook(cells), tmp_path_factory.mktemp("limits"), timeout=2)


def test_an_infinite_loop_times_out_and_the_next_cells_run(loop_print_exit):
    nb = loop_print_exit[0]
    loop = nb.cells[2]
    assert ("CellTimeoutError", "the cell ran longer than 2 s and was interrupted") in _errors(loop)
    assert _passed(nb, "before") and _passed(nb, "after_loop") and _passed(nb, "after_print")
    assert "after the loop" in _text(_by_id(nb)["after_loop"])


def test_100_mb_of_printing_is_capped(loop_print_exit):
    nb = loop_print_exit[0]
    printing = nb.cells[4]
    kept = sum(len(o.text) for o in printing.outputs if o.output_type == "stream")
    assert 1_000_000 <= kept <= 1_000_100
    assert "[output truncated by the grader: 99000000 bytes not kept]" in _text(printing)
    assert len(json.dumps(nb)) < 1_100_000


def test_os_exit_keeps_what_ran_and_marks_the_rest(loop_print_exit):
    nb = loop_print_exit[0]
    (ename, evalue), = _errors(nb.cells[6])
    assert ename == "KernelDied" and "status 1" in evalue and "os._exit" in evalue
    for cell in nb.cells[7:]:
        assert _errors(cell) == [("KernelDied", "not run: the kernel died in cell 6")]
        assert cell.execution_count is None
    assert _grades(nb) == {"before": (1.0, 1.0), "after_loop": (1.0, 1.0), "after_print": (1.0, 1.0),
                           "after_exit": (0, 1.0)}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_memory_error_under_a_limit_and_sigkill(tmp_path):
    cells = [
        _cell("import os\nimport resource\nimport signal", "setup", "setup"),
        _cell(
            'vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0]) * 1024\n'
            "resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))\n"
            "block = bytearray(2 * 2**30)"
        ),
        _cell("print('still alive')", "test", "after_memory_error"),
        _cell("os.kill(os.getpid(), signal.SIGKILL)  # what a memory cap (cgroup, OOM killer) does"),
        _cell("print('never')", "test", "after_kill"),
    ]
    nb = _run(_notebook(cells), tmp_path, timeout=20, guard=False)[0]
    assert [e[0] for e in _errors(nb.cells[1])] == ["MemoryError"]
    assert _passed(nb, "after_memory_error")
    (ename, evalue), = _errors(nb.cells[3])
    assert ename == "KernelDied" and "SIGKILL" in evalue and "memory" in evalue
    assert _errors(nb.cells[4]) == [("KernelDied", "not run: the kernel died in cell 3")]


def test_a_kernel_that_ignores_the_interrupt_is_killed(tmp_path):
    cells = [
        _cell("import signal", "setup", "setup"),
        _cell("signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"),
        _cell("print('never')", "test", "after"),
    ]
    nb, seconds, _ = _run(_notebook(cells), tmp_path, timeout=2, iopub_timeout=1, guard=False)
    assert "did not stop when interrupted" in _errors(nb.cells[1])[-1][1]
    assert _errors(nb.cells[2]) == [("KernelDied", "not run: the kernel died in cell 1")]
    assert seconds < 15


def test_the_notebook_budget_stops_the_rest(tmp_path):
    cells = [
        _cell("import time", "setup", "setup"),
        _cell("print('ok')", "test", "before"),
        _cell("time.sleep(60)"),  # within the cell limit, beyond the notebook's
        _cell("print('never')", "test", "after"),
        _cell("z = 3"),
    ]
    nb, seconds, _ = _run(_notebook(cells), tmp_path, timeout=60, notebook_timeout=6, guard=False)
    assert _passed(nb, "before")
    assert "NotebookTimeLimit" in [e[0] for e in _errors(nb.cells[2])]
    for cell in nb.cells[3:]:
        (ename, evalue), = _errors(cell)
        assert ename == "NotebookTimeLimit"
        assert evalue.startswith("not run: the notebook used up its time budget of 6 s")
    assert seconds < 6 + 8  # the budget, the interrupt and the shutdown


def test_grading_kernels_compare_tensors_without_importing_dtensor(tmp_path):
    """The guard's setup spares each kernel the import of torch.distributed.tensor (and sympy) that
    the first assert_close makes; assert_close still tells equal from unequal tensors."""
    import torch.testing._comparison as comparison

    assert comparison._HAS_DTENSOR is True  # the pinned torch has the flag: a new torch must keep it, or this goes
    cells = [
        _cell("import sys\nimport torch", "setup", "setup"),
        _cell("torch.testing.assert_close(torch.ones(3), torch.ones(3))\n"
              "print(sorted(m for m in sys.modules if m.startswith(('torch.distributed.tensor', 'sympy'))))", "test", "same"),
        _cell("torch.testing.assert_close(torch.ones(3), torch.zeros(3))", "test", "different"),
    ]
    nb, _, _ = _run(_notebook(cells), tmp_path, timeout=60)
    assert _passed(nb, "same") and _text(_by_id(nb)["same"]).strip() == "[]"
    assert not _passed(nb, "different") and _errors(_by_id(nb)["different"])[0][0] == "AssertionError"


# ----------------------------------------------------------------------------
# The guard: every attack against a wrong answer
# ----------------------------------------------------------------------------

SETUP = '''\
import functools
import math

import numpy as np
import torch

import gmlib.gan
from gmlib.gan import discriminator_loss

LIMITS = {"atol": 1e-9}
REAL, FAKE = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])


def check_close(a, b):
    """A helper of a read-only cell, used by the tests."""
    assert abs(float(a) - float(b)) < LIMITS["atol"], f"{a} != {b}"
'''

SOLUTION = '''\
import torch.nn.functional as F
from gmlib.gan import discriminator_loss as dl


def answer():
    return 2.0  # wrong: the tests expect 3.0


def d_loss(real_out, fake_out):  # written by hand: allowed
    return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()


def d_loss_direct(r, f):
    return gmlib.gan.discriminator_loss(r, f)


def d_loss_default(r, f, _impl=discriminator_loss):
    return _impl(r, f)


def d_loss_alias(r, f):
    return dl(r, f)


d_loss_partial = functools.partial(gmlib.gan.discriminator_loss)
d_loss_handed = gmlib.gan.discriminator_loss


def d_loss_forwarded(r, f):
    return torch.no_grad()(gmlib.gan.discriminator_loss)(r, f)


def d_loss_exec(r, f):
    scope = {"g": gmlib.gan.discriminator_loss, "r": r, "f": f}
    exec("out = g(r, f)", scope)
    return scope["out"]


def build_gan():
    return gmlib.gan.GAN(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), 2)
'''

REFERENCE = "discriminator_loss(REAL, FAKE)"
# (name, cell run before the test, the test): without the guard every test passes
ATTACKS = [
    ("allclose", "torch.allclose = lambda *a, **k: True",
     "assert torch.allclose(torch.tensor(answer()), torch.tensor(3.0))"),
    ("numpy_testing", "np.testing.assert_allclose = lambda *a, **k: None",
     "np.testing.assert_allclose(answer(), 3.0)"),
    ("assert_close", "torch.testing.assert_close = lambda *a, **k: None",
     "torch.testing.assert_close(torch.tensor(answer()), torch.tensor(3.0))"),
    ("locked_helper", "check_close = lambda *a: None", "check_close(answer(), 3.0)"),
    ("locked_helper_code", "check_close.__code__ = (lambda a, b: None).__code__", "check_close(answer(), 3.0)"),
    ("locked_data", "LIMITS['atol'] = 100.0", "check_close(answer(), 3.0)"),
    ("builtins", "import builtins\nbuiltins.abs = lambda x: 0.0", "assert abs(answer() - 3.0) < 1e-9"),
    ("set_custom_exc", '''\
ip = get_ipython()
ip.set_custom_exc((AssertionError,), lambda shell, etype, value, tb, tb_offset=None: [])


def _looks_ok(result):  # from now on every cell's reply says "ok"
    if result is not None:
        result.error_in_exec = None


ip.events.register("post_run_cell", _looks_ok)''', "assert answer() == 3.0"),
    ("clear_output", '''\
from IPython.display import clear_output

get_ipython().events.register("post_run_cell", lambda result: clear_output())''', "assert answer() == 3.0"),
    ("showtraceback", "get_ipython().showtraceback = lambda *a, **k: None", "assert answer() == 3.0"),
    ("session_send", '''\
_session = get_ipython().kernel.session


def _quiet_send(stream, msg_or_type, *args, _send=_session.send, **kwargs):
    if msg_or_type == "error":
        return None
    return _send(stream, msg_or_type, *args, **kwargs)


_session.send = _quiet_send''', "assert answer() == 3.0"),
    ("ast_transformer", '''\
import ast


class _NoAsserts(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()


get_ipython().ast_transformers.append(_NoAsserts())''', "assert answer() == 3.0"),
    ("pre_run_cell", '''\
def _repatch(info):
    torch.allclose = lambda *a, **k: True


get_ipython().events.register("pre_run_cell", _repatch)''',
     "assert torch.allclose(torch.tensor(answer()), torch.tensor(3.0))"),
    ("shadowed_module", '''\
import os
import sys

with open("yaml.py", "w") as handle:
    handle.write("def safe_load(text):\\n    return 3.0\\n")
sys.path.insert(0, os.getcwd())
import yaml''',
     "import yaml\nassert yaml.safe_load(str(answer())) == 3.0"),
    ("forbidden_direct", "", f"torch.testing.assert_close(d_loss_direct(REAL, FAKE), {REFERENCE})"),
    ("forbidden_default_argument", "", f"torch.testing.assert_close(d_loss_default(REAL, FAKE), {REFERENCE})"),
    ("forbidden_imported_alias", "", f"torch.testing.assert_close(d_loss_alias(REAL, FAKE), {REFERENCE})"),
    ("forbidden_partial", "", f"torch.testing.assert_close(d_loss_partial(REAL, FAKE), {REFERENCE})"),
    ("forbidden_handed_over", "", f"torch.testing.assert_close(d_loss_handed(REAL, FAKE), {REFERENCE})"),
    ("forbidden_library_wrapper", "", f"torch.testing.assert_close(d_loss_forwarded(REAL, FAKE), {REFERENCE})"),
    ("forbidden_exec", "", f"torch.testing.assert_close(d_loss_exec(REAL, FAKE), {REFERENCE})"),
    ("forbidden_class", "", "assert isinstance(build_gan(), torch.nn.Module)"),
    ("thread", '''\
import threading
import time


def _keep_patching():
    end = time.time() + 10
    while time.time() < end:
        torch.allclose = lambda *a, **k: True
        time.sleep(0.0005)


threading.Thread(target=_keep_patching, daemon=True).start()''',
     "assert torch.allclose(torch.tensor(answer()), torch.tensor(3.0))"),
]
HONEST = [  # tests that the submission passes honestly, guard or not
    ("honest_reference", f"torch.testing.assert_close(d_loss(REAL, FAKE), gmlib.gan.discriminator_loss(REAL, FAKE))\n"
                         f"torch.testing.assert_close(d_loss(REAL, FAKE), {REFERENCE})\nprint('passed')"),
    ("honest_class", "gan = gmlib.gan.GAN(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), 2)\nprint('passed')"),
    ("honest_helper", "check_close(answer(), 2.0)\nassert torch.allclose(torch.tensor(answer()), torch.tensor(2.0))"),
    # a name a test cell used for scratch becomes the student's once a solution cell defines it
    ("honest_scratch", "sample = 0.5\nassert sample < 1"),
    ("honest_released", "assert sample() == 3.0"),
]
# after everything: the student breaks the guard itself; the next test fails even though it is right
BREAK_GUARD = ("broken_guard", 'import sys, types\nsys.modules["autograder.kernel.guard"] = types.ModuleType("autograder.kernel.guard")',
               "assert answer() == 2.0")


def _attack_notebook():
    cells = [new_markdown_cell("# Attacks"), _cell(SETUP, "setup", "setup"), _cell(SOLUTION, "solution", "answer"),
             _cell(HONEST[0][1], "test", HONEST[0][0]), _cell(HONEST[1][1], "test", HONEST[1][0]),
             _cell(HONEST[3][1], "test", HONEST[3][0]), _cell("def sample():\n    return 3.0", "solution", "answer2"),
             _cell(HONEST[4][1], "test", HONEST[4][0])]
    for name, attack, test in ATTACKS + [BREAK_GUARD]:
        if name == "thread":
            cells.append(_cell(HONEST[2][1], "test", HONEST[2][0]))
        if attack:  # the rebinding of a read-only cell's helper is typed into a solution cell
            cells.append(_cell(attack, "solution", f"answer_{name}") if name == "locked_helper" else _cell(attack))
        cells.append(_cell(test, "test", name))
    return _notebook(cells, forbidden={"gmlib.gan": ["discriminator_loss", "GAN"]})


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    return _run(_attack_notebook(), tmp_path_factory.mktemp("attacks"), timeout=60)


@pytest.fixture(scope="module")
def unguarded(tmp_path_factory):
    return _run(_attack_notebook(), tmp_path_factory.mktemp("attacks-unguarded"), timeout=60, guard=False)


def test_without_the_guard_every_attack_earns_the_point(unguarded):
    nb = unguarded[0]
    grades = _grades(nb)
    assert all(score == max_score for score, max_score in grades.values()), grades


@pytest.mark.parametrize("name", [a[0] for a in ATTACKS])
def test_with_the_guard_every_attack_fails(attacked, name):
    nb = attacked[0]
    cell = _by_id(nb)[name]
    assert not _passed(nb, name), cell.outputs
    errors = _errors(cell)
    if name == "thread":  # restored before the test, patched again during it: caught after it
        assert any(e == "GraderIntegrityError" and "torch.allclose" in v for e, v in errors), errors
    elif name.startswith("forbidden"):
        assert [e for e, _ in errors] == ["ForbiddenCall"], errors
        assert ("gmlib.gan.GAN" if name == "forbidden_class" else "gmlib.gan.discriminator_loss") in errors[0][1]
    else:  # the wrong answer fails the test as it should, with its own error
        assert [e for e, _ in errors] == ["AssertionError"], errors


def test_the_guard_reports_what_it_restored(attacked):
    nb = attacked[0]
    cells = _by_id(nb)
    for name, what in [("allclose", "torch.allclose"), ("numpy_testing", "numpy.testing.assert_allclose"),
                       ("assert_close", "torch.testing.assert_close"), ("locked_helper", "notebook global check_close"),
                       ("locked_helper_code", "check_close (its code)"), ("locked_data", "LIMITS (its contents)"),
                       ("builtins", "builtins.abs"), ("set_custom_exc", "shell.custom_exceptions"),
                       ("showtraceback", "shell.showtraceback"), ("session_send", "kernel.session.send"),
                       ("ast_transformer", "shell.ast_transformers"), ("pre_run_cell", "pre_run_cell"),
                       ("shadowed_module", "sys.modules['yaml']")]:
        assert "[grader] restored before this test:" in _text(cells[name]) and what in _text(cells[name]), name


def test_honest_tests_pass_under_the_guard_and_may_call_the_reference(attacked):
    nb = attacked[0]
    for name, _ in HONEST:
        assert _passed(nb, name), _by_id(nb)[name].outputs
        assert "[grader]" not in _text(_by_id(nb)[name])


def test_a_broken_guard_fails_the_tests_instead_of_passing_them(attacked, unguarded):
    guarded = attacked[0]
    assert _passed(unguarded[0], "broken_guard")
    (ename, evalue), = _errors(_by_id(guarded)["broken_guard"])
    assert ename == "GraderIntegrityError" and "not run" in evalue


def test_the_guard_costs_little(attacked):
    # its setup imports torch and numpy (which a lab's setup cell imports anyway) and gmlib; then
    # each silent step takes milliseconds: ~55 steps for this notebook
    cost = attacked[2].guard_seconds
    assert cost["count"] >= 50 and cost["steps"] / cost["count"] < 0.1 and cost["setup"] < 15, cost


# ----------------------------------------------------------------------------
# Honest lab solutions keep every point
# ----------------------------------------------------------------------------


def _lab_notebook(lab):
    """The source notebook (hidden tests in full, as autograde runs them) with its forbidden list."""
    nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    if not nb.metadata.get("autograder", {}).get("forbidden"):
        for cell in nb.cells:
            match = re.search(r"^FORBIDDEN = (\{.*?^\})", cell.source, re.M | re.S)
            if match and cell.metadata.get("nbgrader", {}).get("locked"):
                nb.metadata.setdefault("autograder", {})["forbidden"] = ast.literal_eval(match.group(1))
    return nb


def _check_full_marks(nb):
    grades = _grades(nb)
    assert grades and all(score == max_score for score, max_score in grades.values()), grades
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            assert not _errors(cell), (cell.metadata["nbgrader"]["grade_id"], _errors(cell))
            assert "[grader]" not in _text(cell), (cell.metadata["nbgrader"]["grade_id"], _text(cell))


def test_lab01_solution_keeps_full_marks_under_the_guard(tmp_path):
    nb, seconds, preprocessor = _run(_lab_notebook("lab01"), tmp_path, timeout=300)
    _check_full_marks(nb)
    print(f"\nlab01 under the guard: {seconds:.1f} s, of which the guard {preprocessor.guard_seconds}")


# Every lab's solution, Lab 6's (whose forbidden references are enforced) among them, keeps full marks under the
# guard in tests/test_integrity.py's run: real nbgrader, the course's whole pipeline (a Lab 6 run here repeated it,
# 17 s of the grading stream, until 2026-12-07).
def test_lab06_forbids_its_references():
    assert _lab_notebook("lab06").metadata["autograder"]["forbidden"]["gmlib.gan"]


def test_lab07_forbids_its_references():
    """Lab 7 forbids what its exercises write: gmlib.flows' coupling, ActNorm, composition, flow model, base density
    and uniform dequantizer (and the ready-made flows built on them), and torch.distributions' Gaussians; the layers its
    tests compose with the student's (ElementwiseAffine, Invertible1x1Conv, AdditiveCoupling) stay allowed."""
    forbidden = _lab_notebook("lab07").metadata["autograder"]["forbidden"]
    assert {"AffineCoupling", "ActNorm", "Compose", "Flow", "UniformDequantizer", "standard_normal_log_prob"} <= set(
        forbidden["gmlib.flows"])
    assert not {"ElementwiseAffine", "Invertible1x1Conv", "AdditiveCoupling", "half_mask", "checkerboard_mask"} & set(
        forbidden["gmlib.flows"])
    assert {"Normal", "MultivariateNormal"} <= set(forbidden["torch.distributions"])


def test_lab08_forbids_its_references():
    """Lab 8 forbids what its exercises write: gmlib.autoregressive's models and masked convolution, gmlib.flows' MADE
    and torch.distributions' categoricals; the data, the pretrained models of the demonstrations and torch's own
    sampling (torch.multinomial) stay allowed."""
    forbidden = _lab_notebook("lab08").metadata["autograder"]["forbidden"]
    assert {"MADEModel", "MaskedConv2d", "PixelCNN", "AutoregressiveModel"} <= set(forbidden["gmlib.autoregressive"])
    assert forbidden["gmlib.flows"] == ["MADE"]
    assert {"Categorical", "OneHotCategorical"} <= set(forbidden["torch.distributions"])
    assert "torch" not in forbidden and "gmlib.pretrained" not in forbidden and "gmlib.data" not in forbidden


# Exercise isolation (labrefs): the later exercise's tests bind the reference versions of
# the earlier exercises' functions; a solution cell cannot borrow them to pass its own exercise.
BORROWED_REPARAMETERIZE = {
    "through_reference_versions": '''\
def reparameterize(mean, log_var, n):
    with reference_versions(globals(), "lab01", "reparameterize"):
        return globals()["reparameterize"](mean, log_var, n)
''',
    "through_the_registry": '''\
from labrefs import REFERENCES


def reparameterize(mean, log_var, n):
    return REFERENCES["lab01"]["reparameterize"](mean, log_var, n)
''',
}


@pytest.mark.parametrize("how", sorted(BORROWED_REPARAMETERIZE))
def test_a_solution_cannot_borrow_the_reference_versions(tmp_path, how):
    nb = _lab_notebook("lab01")
    _by_id(nb)["ex4_solution"].source = BORROWED_REPARAMETERIZE[how]
    nb, _, _ = _run(nb, tmp_path, timeout=300)
    grades = _grades(nb)
    for grade_id, (score, max_score) in grades.items():
        if grade_id.startswith("ex4_"):  # every test of Exercise 4 fails: the reference is refused
            assert score == 0, (grade_id, _by_id(nb)[grade_id].outputs)
            assert [e for e, _ in _errors(_by_id(nb)[grade_id])] == ["ForbiddenCall"], _errors(_by_id(nb)[grade_id])
        else:  # Exercise 5 runs the student's elbo_mc with the reference reparameterize: full marks
            assert score == max_score, (grade_id, _errors(_by_id(nb)[grade_id]))


def test_a_forbidden_method_is_refused_to_the_solution_and_allowed_to_the_tests(tmp_path):
    # Lab 1 forbids ConjugateGaussian.elbo_mc (a dotted name in metadata.autograder.forbidden): the
    # hidden tests compare with it; an elbo_mc that returns it must earn nothing.
    nb = _lab_notebook("lab01")
    assert "ConjugateGaussian.elbo_mc" in nb.metadata["autograder"]["forbidden"]["gmlib.probability"]
    _by_id(nb)["ex5_solution"].source = (
        "def elbo_mc(model, x, q_mean, q_log_var, n):\n    return model.elbo_mc(x, q_mean, q_log_var, n)\n")
    nb, _, preprocessor = _run(nb, tmp_path, timeout=300)
    for grade_id, (score, max_score) in _grades(nb).items():
        if grade_id.startswith("ex5_"):
            assert score == 0 and [e for e, _ in _errors(_by_id(nb)[grade_id])] == ["ForbiddenCall"], grade_id
            assert "gmlib.probability.ConjugateGaussian.elbo_mc" in _errors(_by_id(nb)[grade_id])[0][1]
        else:
            assert score == max_score, (grade_id, _errors(_by_id(nb)[grade_id]))


def test_a_garbled_message_stops_the_kernel_and_keeps_the_cells_before(monkeypatch):
    """A kernel out of memory in the middle of a multipart send leaves a message that fails
    jupyter_client's signature check (seen in the hostile memory bomb): the cell is marked as the one
    where the kernel died, the kernel is killed, and no exception escapes to fail the whole notebook."""
    from nbformat.v4 import new_code_cell, new_notebook

    preprocessor = execute.GuardedExecute()
    preprocessor.nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("y = 2")])
    preprocessor._nb_bytes = 0
    preprocessor._timeout_kind = "cell"
    preprocessor._dead_in = None
    killed = []

    def garbled(cell, index, **kwargs):
        raise ValueError("Invalid Signature: b'0123'")

    monkeypatch.setattr(preprocessor, "execute_cell", garbled)
    monkeypatch.setattr(preprocessor, "_kill_kernel", lambda: killed.append(True))
    monkeypatch.setattr(preprocessor, "_exit_status", lambda: -9)
    cell = preprocessor.nb.cells[1]
    preprocessor._run_code_cell(cell, 1)
    assert killed == [True] and preprocessor._dead_in is not None
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    assert error.ename == "KernelDied" and "garbled message" in error.evalue

    def other(cell, index, **kwargs):  # any other ValueError is not the kernel's doing: it propagates
        raise ValueError("something else")

    monkeypatch.setattr(preprocessor, "execute_cell", other)
    with pytest.raises(ValueError, match="something else"):
        preprocessor._run_code_cell(preprocessor.nb.cells[0], 0)
