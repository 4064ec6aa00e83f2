"""The labs and the formgrader as their users see them: `make lab` and `make formgrader` in headless Chromium.

`make lab` is started as the README says (its arguments only add a port and a token, and LAB_ROOT a
scratch copy of the labs, so that nothing is written into notebooks/), with the tests' MPLBACKEND=Agg in its environment as `make
test` exports it. In the browser, "Restart Kernel and Run All Cells..." is run on a blank Lab 1 and on
Lab 2 with its solutions typed in (autograder.grading.fill_solutions); the notebook's own model, read
in the page, says what every cell printed. The formgrader check lives in tests/test_exchange.py,
which has a graded class at hand.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from browser import Browser, free_port, wait_for_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = os.environ.get("GMLIB_SCREENSHOTS")  # a folder to keep the screenshots in, if set


class MakeServer:
    """``make TARGET`` serving Jupyter on 127.0.0.1 with a token, in a process group of its own."""

    def __init__(self, tmp: Path, target: str, lab_args: list[str], make_vars: list[str] = ()):
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        env.update(MPLBACKEND="Agg",  # as `make test` exports it: `make lab` must not pass it on
                   JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"))
        news = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text('{"fetchNews": "false"}')  # no "notified about Jupyter news?" toast over the screenshots
        args = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", "--LabApp.expose_app_in_browser=True",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *lab_args]
        self.log = tmp / f"{target}.log"
        self.proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", target, f"LAB_ARGS={' '.join(args)}", *make_vars],
                                     cwd=REPO, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_http(f"{self.url}/api/status", 120, self.proc, self.log)

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def keep(path: Path) -> None:
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        shutil.copy2(path, SCREENSHOTS)


# The open notebook's model: per code cell, its execution count and outputs (as nbformat JSON).
PANEL_JS = ("Array.from(window.jupyterapp.shell.widgets('main'))"
            ".find(w => w.sessionContext && w.content && w.content.model && w.isVisible)")
CELLS_JS = """(() => {
  const panel = PANEL;
  return panel.content.model.sharedModel.cells.filter(c => c.cell_type === 'code')
    .map(c => ({id: c.id, count: c.execution_count, outputs: c.outputs.map(o => (o.toJSON ? o.toJSON() : o)),
                source: c.source}));
})()""".replace("PANEL", PANEL_JS)
KERNEL_IDLE_JS = """(() => {
  const panel = window.jupyterapp && PANEL;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && panel.context.isReady;
})()""".replace("PANEL", PANEL_JS)


def restart_and_run_all(browser: Browser, url: str, timeout: float) -> list[dict]:
    """Open a notebook, "Restart Kernel and Run All Cells..." (the dialog accepted), wait until every code
    cell has run; the code cells of the notebook's model."""
    browser.goto(url)
    browser.wait_for(KERNEL_IDLE_JS, 120, "JupyterLab to open the notebook with an idle kernel")
    browser.eval(f"window.jupyterapp.shell.activateById(({PANEL_JS}).id), true")
    browser.wait_for(f"window.jupyterapp.shell.currentWidget === ({PANEL_JS})", 30, "the notebook to be the current one")
    labels = browser.eval("window.jupyterapp.commands.label('notebook:restart-run-all')")
    assert labels == "Restart Kernel and Run All Cells…", labels  # the wording the labs use
    browser.eval("void window.jupyterapp.commands.execute('notebook:restart-run-all'), true")
    restart = "Array.from(document.querySelectorAll('.jp-Dialog button')).find(b => b.innerText.trim() === 'Restart')"
    browser.wait_for(f"!!{restart}", 30, "the dialog's Restart button")
    browser.eval(f"{restart}.click(), true")
    browser.wait_for(f"({KERNEL_IDLE_JS}) && ({CELLS_JS}).every(c => c.count !== null)", timeout,
                     "every code cell to have run")
    return browser.eval(CELLS_JS)


def show_cell(browser: Browser, cell_id: str) -> None:
    """Scroll the open notebook to a cell (by id), at the top of the window."""
    browser.eval(f"""(async () => {{
      const nb = ({PANEL_JS}).content;
      const i = nb.widgets.findIndex(w => w.model.id === {json.dumps(cell_id)});
      nb.activeCellIndex = i;
      await nb.scrollToItem(i, 'auto', 'start');
      nb.widgets[i].node.scrollIntoView({{block: 'start'}});
      await new Promise(r => setTimeout(r, 500));
      return i;
    }})()""")


def validate(browser: Browser, path: str) -> dict:
    """What nbgrader's Validate button gets from the server (``/assignments/validate``) for a notebook."""
    return browser.eval(f"fetch('/assignments/validate', {{method: 'POST', body: new URLSearchParams({{path: "
                        f"{json.dumps(path)}}})}}).then(r => r.json())", timeout=300)


def errors_of(cells: list[dict]) -> list[tuple[str, str]]:
    """(cell id, error name or "stderr") for every error or stderr output of the cells."""
    return [(c["id"], o.get("ename") or o.get("name")) for c in cells for o in c["outputs"]
            if o.get("output_type") == "error" or o.get("name") == "stderr"]


def text_of(cell: dict) -> str:
    out = []
    for o in cell["outputs"]:
        if o.get("output_type") == "stream":
            out.append(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
    return "".join(out)


def test_make_lab_in_a_browser_runs_a_blank_lab_to_the_end_and_shows_a_solved_labs_figures(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(grading.release_path("lab01").parent, root / "lab01")
    (root / "lab02").mkdir()
    release = nbformat.read(str(grading.release_path("lab02")), as_version=4)
    solved = grading.fill_solutions(release, nbformat.read(str(grading.source_path("lab02")), as_version=4))
    nbformat.write(solved, str(root / "lab02" / "lab02.ipynb"))
    server = MakeServer(tmp_path, "lab", [], [f"LAB_ROOT={root}"])
    browser = Browser(1400, 900)
    try:
        browser.authorize(server.token)
        # a blank lab: Run All reaches the end, one note per exercise, no error, no harness marker
        cells = restart_and_run_all(browser, f"{server.url}/lab/tree/lab01/lab01.ipynb?reset", 180)
        errors = errors_of(cells)
        assert not errors, errors
        notes = re.findall(r"^Exercise (\d) is not implemented yet", "".join(text_of(c) for c in cells), re.M)
        assert sorted(notes) == ["1", "2", "3", "4", "5"], notes
        assert "0 of 5 exercises pass their visible tests" in text_of(cells[-1])
        page = browser.eval(f"({PANEL_JS}).node.textContent")  # every cell, on screen or not
        assert "NBVAL" not in page and "Exercise 1 is not implemented yet" in page
        assert browser.eval("document.querySelectorAll('.jp-MarkdownOutput details summary').length") >= 5  # the hints
        show_cell(browser, next(c["id"] for c in cells if "Exercise 2 is not implemented yet" in text_of(c)))
        keep(browser.screenshot(tmp_path / "lab01-blank-run-all.png"))
        # Validate (nbgrader's button) runs the notebook as a tool does: the unfinished exercises fail there
        verdict = validate(browser, "lab01/lab01.ipynb")
        assert verdict["success"] and verdict["value"].get("failed"), verdict
        # a solved lab: every figure is drawn (MPLBACKEND=Agg is not passed on), every exercise passes
        cells = restart_and_run_all(browser, f"{server.url}/lab/tree/lab02/lab02.ipynb?reset", 300)  # alone: no lab01 tab
        errors = errors_of(cells)
        assert not errors, errors
        shows = [c["id"] for c in cells if "plt.show()" in c["source"]]
        drawn = [c["id"] for c in cells if any("image/png" in o.get("data", {}) for o in c["outputs"])]
        assert shows and set(shows) <= set(drawn), (shows, drawn)
        assert "6 of 6 exercises pass their visible tests" in text_of(cells[-1])
        show_cell(browser, drawn[0])
        assert browser.wait_for("document.querySelectorAll('.jp-RenderedImage img').length", 30, "a figure on the page")
        keep(browser.screenshot(tmp_path / "lab02-solved-run-all.png"))
        verdict = validate(browser, "lab02/lab02.ipynb")
        assert verdict["success"] and not verdict["value"].get("failed") and not verdict["value"].get("changed"), verdict
        assert not [e for e in browser.console if "Error" in e and "favicon" not in e], browser.console
    finally:
        browser.close()
        server.close()
    log = server.log.read_text()
    assert "No nbgrader_config.py" not in log and "Traceback" not in log, log[-3000:]  # Validate read the course's
