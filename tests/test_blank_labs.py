"""A blank lab, run top to bottom in a front end, says what is unfinished and never stops.

The kernel is driven as JupyterLab drives it for "Restart Kernel and Run All Cells...": one
execute request per code cell, ``allow_stdin`` true and ``stop_on_error`` true, the next cell sent
only if the last one's reply was ``ok``. When a tool runs a notebook (nbclient, as nbgrader's
Validate and autograde do), errors stay errors (gmlib.labs).
"""
import json
import os
import re

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder import grading

pytestmark = pytest.mark.slow

LABS = grading.discover_labs()
NOTE = re.compile(r"^Exercise (\d+) is not implemented yet \(`(\w+)` raises NotImplementedError\): this cell is skipped\.$", re.M)


class FrontEnd:
    """A kernel driven like a notebook front end: each cell is one execute request with stdin allowed."""

    def __init__(self, cwd):
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env["MPLBACKEND"] = "Agg"  # no display here; the figures still count as display_data
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)

    def run(self, source, timeout=300):
        """(reply status, outputs) of one cell; outputs as (type, text) pairs."""
        msg_id = self.kc.execute(source, allow_stdin=True, stop_on_error=True)
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        outputs = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and outputs and outputs[-1][0] == content["name"]:  # merged, as a front end shows them
                outputs[-1] = (content["name"], outputs[-1][1] + content["text"])
            elif kind == "stream":
                outputs.append((content["name"], content["text"]))
            elif kind == "error":
                outputs.append(("error", f"{content['ename']}: {content['evalue']}"))
            elif kind in ("display_data", "execute_result"):
                outputs.append((kind, content["data"].get("text/plain", "")))
            elif kind == "status" and content["execution_state"] == "idle":
                return reply["content"]["status"], outputs

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def front_end(tmp_path):
    fe = FrontEnd(tmp_path)
    yield fe
    fe.close()


@pytest.mark.parametrize("lab", LABS)
def test_run_all_on_a_blank_lab_notes_each_exercise_once_and_reaches_the_end(lab):
    path = grading.release_path(lab)
    nb = nbformat.read(str(path), as_version=4)
    exercises = sorted({int(m.group(1)) for c in nb.cells
                        if (m := re.match(r"ex(\d+)_solution", c.metadata.get("nbgrader", {}).get("grade_id", "")))})
    fe = FrontEnd(path.parent)
    try:
        notes, stdout = [], []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            status, outputs = fe.run(cell.source)
            errors = [text for kind, text in outputs if kind in ("error", "stderr")]
            assert status == "ok" and not errors, f"{lab}: Run All stopped at cell {cell.id}: {errors}"
            text = "".join(text for kind, text in outputs if kind == "stdout")
            stdout.append(text)
            notes += [(int(n), f, cell.id) for n, f in NOTE.findall(text)]
    finally:
        fe.close()
    noted = [n for n, _, _ in notes]
    assert sorted(noted) == exercises, f"{lab}: one note per unfinished exercise, got {notes}"
    for n, function, cell_id in notes:  # the note names a function of that exercise, in a cell the student does not own
        solution = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"ex{n}_solution")
        assert re.search(rf"^def {function}\(", solution.source, re.M)
        assert not nb.cells[[c.id for c in nb.cells].index(cell_id)].metadata.get("nbgrader", {}).get("solution")
    assert f"0 of {len(exercises)} exercises pass their visible tests" in stdout[-1]


def test_a_tool_running_a_blank_lab_still_sees_the_error():
    """nbclient (nbgrader's Validate and autograde, nbval, nbconvert) sends allow_stdin = False:
    the first call of an unfinished function fails its cell as it always did."""
    path = grading.release_path(LABS[0])
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        client.execute()
    failed = [c for c in nb.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "NotImplementedError" in failed[0].outputs[-1].ename


def test_note_unfinished_exercises_in_a_kernel(front_end):
    run = front_end.run
    assert run("from gmlib.labs import note_unfinished_exercises\n"
               "def f(x):\n    raise NotImplementedError()\n"
               "def g(x):\n    return f(x) + 1\n") == ("ok", [])
    assert run("note_unfinished_exercises({'f': 3})") == ("ok", [("execute_result", "True")])
    assert run("note_unfinished_exercises({'f': 3})")[0] == "ok"  # run twice: one handler, not two
    status, out = run("import math\npartial = []\nfor k in range(3):\n    partial.append(g(k))\nafter = 1")
    assert status == "ok" and len(out) == 1 and NOTE.search(out[0][1]).groups() == ("3", "f")
    # the half-made list is gone, the completed import stays, a later cell says what it waits for
    status, out = run("print(math.pi > 3)\nprint(len(partial))")
    assert status == "ok" and out == [("stdout", "True\nSkipped: `partial` comes from a cell above that "
                                      "was skipped while Exercise 3 was not implemented; run that cell first.\n")]
    assert run("after")[1] == [("stdout", "Skipped: `after` comes from a cell above that was skipped while Exercise 3 "
                                          "was not implemented; run that cell first.\n")]
    assert run("g(0)") == ("ok", [("stdout", "Skipped: Exercise 3 is not implemented yet.\n")])  # once in full, then short
    # every other error stops Run All as usual, with its traceback
    for source, name in [("1 / 0", "ZeroDivisionError"), ("undefined_name", "NameError"),
                         ("raise NotImplementedError('mine')", "NotImplementedError")]:
        status, out = run(source)
        assert status == "error" and out[-1][0] == "error" and out[-1][1].startswith(name), (source, out)
    # a tool's requests (no stdin) see the error itself
    msg_id = front_end.kc.execute("g(0)", allow_stdin=False, stop_on_error=True)
    reply = front_end.kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = front_end.kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "NotImplementedError"


def test_note_unfinished_exercises_stays_out_of_the_graders_way(front_end):
    """Under the grader (its in-kernel guard imported at setup) nothing is installed."""
    status, out = front_end.run("import sys, types\nsys.modules['autograder.kernel.guard'] = types.ModuleType('guard')\n"
                                "from gmlib.labs import note_unfinished_exercises\n"
                                "note_unfinished_exercises({'f': 1}), get_ipython().custom_exceptions")
    assert status == "ok" and out == [("execute_result", "(False, ())")]
    with pytest.raises(ValueError, match="function names"):
        from gmlib.labs import note_unfinished_exercises
        note_unfinished_exercises({1: "f"})


def test_every_lab_names_its_functions_for_the_notes():
    """The setup cell's note_unfinished_exercises({...}) lists exactly the functions of the solution cells."""
    import ast
    for lab in LABS:
        nb = json.loads(grading.source_path(lab).read_text())
        cells = {c.get("id"): "".join(c["source"]) for c in nb["cells"]}
        call = next(n for n in ast.walk(ast.parse(cells["setup"]))
                    if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "note_unfinished_exercises")
        listed = ast.literal_eval(call.args[0])
        written = {}
        for c in nb["cells"]:
            gid = c["metadata"].get("nbgrader", {}).get("grade_id", "")
            if c["metadata"].get("nbgrader", {}).get("solution"):
                n = int(re.match(r"ex(\d+)_", gid).group(1))
                written.update({name: n for name in re.findall(r"^def (\w+)", "".join(c["source"]), re.M)})
        assert listed == written, f"{lab}: the setup cell's list of functions differs from the solution cells'"
