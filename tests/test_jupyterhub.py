"""The course on a real JupyterHub (deploy/jupyterhub_config.py), on 127.0.0.1.

JupyterHub with configurable-http-proxy (from the npm registry; `make install` puts it in the
virtualenv), the shared-password authenticator and the simple local spawner, a scratch
course with Lab 1 generated, and an exchange of its own. An instructor and a student log in through the
hub's login form, as a browser does (cookies, XSRF tokens, the OAuth hand-over to each server). The
instructor releases Lab 1 from the formgrader's API; the student lists, fetches and submits it from the
Assignments API of their server; the instructor collects and autogrades it from the formgrader's API,
and the score is the one the same notebook gets everywhere else.
"""
from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from autograder import grading
from browser import free_port, wait_for_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LAB = "lab01"
PARTIAL = REPO / "tests" / "submissions" / LAB / "partial" / f"{LAB}.ipynb"  # 16 of 20 points (test_exchange.py)


def proxy_command() -> str | None:
    found = shutil.which("configurable-http-proxy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                          os.environ.get("PATH", "")]))
    if found is None and os.environ.get("CI"):
        pytest.fail("configurable-http-proxy is not installed (make install does it with npm; .ci/run installs npm)")
    return found


class HubUser:
    """A user of the hub with a cookie jar, as a browser: logs in through the form, then calls their server."""

    def __init__(self, base: str, name: str):
        self.base, self.name = base, name
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str, path_prefix: str) -> str:
        found = [c for c in self.jar if c.name == name and path_prefix.startswith(c.path.rstrip("/") or "/")]
        assert found, f"{self.name}: no {name} cookie for {path_prefix} ({[(c.name, c.path) for c in self.jar]})"
        return max(found, key=lambda c: len(c.path)).value

    def open(self, path: str, data: dict | None = None, xsrf_path: str | None = None, timeout: float = 300):
        headers = {}
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if xsrf_path is not None:
            headers["X-XSRFToken"] = self.cookie("_xsrf", xsrf_path)
        request = urllib.request.Request(self.base + path, data=body, headers=headers, method="POST" if body is not None or xsrf_path else "GET")
        with self.opener.open(request, timeout=timeout) as response:
            return response.geturl(), response.read().decode()

    def log_in(self, password: str) -> None:
        self.open("/hub/login")  # the form, and its _xsrf cookie
        url, _ = self.open("/hub/login", {"username": self.name, "password": password,
                                          "_xsrf": self.cookie("_xsrf", "/hub/login")})
        # the hub starts the server and hands over to it (spawn-pending, OAuth); wait until it answers
        deadline = time.monotonic() + 240
        page = ""
        while f"/user/{self.name}/" not in url or "spawn-pending" in url:
            assert time.monotonic() < deadline, f"{self.name}'s server did not start: at {url}: {page[-2000:]}"
            time.sleep(1)
            url, page = self.open(f"/user/{self.name}/lab")
        self.server = f"/user/{self.name}"

    def api(self, path: str, data: dict | None = None, post: bool = False):
        """JSON from the user's own server (a POST carries the XSRF token, as JupyterLab sends it)."""
        _, text = self.open(self.server + path, data=data, xsrf_path=(self.server + "/") if (post or data) else None)
        return json.loads(text)


def test_a_student_submits_lab1_through_jupyterhub_and_the_instructor_grades_it(tmp_path):
    proxy = proxy_command()
    if proxy is None:
        pytest.skip("configurable-http-proxy is not installed (npm install configurable-http-proxy)")
    course = grading.Course.create(tmp_path / "course", [LAB])
    course.generate(LAB)
    port, password, admin_password = free_port(), secrets.token_hex(8), secrets.token_hex(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGRADER_", "JUPYTER", "MAKE", "DGM_"))}
    env.update(DGM_HUB_DIR=str(tmp_path / "hub"), DGM_COURSE_ROOT=str(course.root), DGM_INSTRUCTORS="teacher",
               DGM_STUDENTS="alice", DGM_HUB_AUTH="shared", DGM_HUB_PASSWORD=password,
               DGM_HUB_ADMIN_PASSWORD=admin_password, DGM_HUB_SPAWNER="simple",
               AUTOGRADER_EXCHANGE=str(tmp_path / "exchange"), DGM_HUB_PORT=str(port),
               DGM_HUB_API_PORT=str(free_port()), DGM_PROXY_API_PORT=str(free_port()))
    env.pop("MPLBACKEND", None)
    log = tmp_path / "jupyterhub.log"
    hub = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(REPO / "deploy" / "jupyterhub_config.py")],
                           cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/hub/api", 120, hub, log, any_status=False)  # the proxy answers 404 until it routes
        teacher, alice = HubUser(base, "teacher"), HubUser(base, "alice")
        with pytest.raises(urllib.error.HTTPError):  # a wrong password gets nothing
            HubUser(base, "alice").log_in("wrong")
        teacher.log_in(admin_password)
        released = teacher.api(f"/formgrader/api/assignment/{LAB}/release", post=True)
        assert released.get("success"), released
        alice.log_in(password)
        listed = alice.api(f"/assignments?course_id=dgm")
        assert [a["assignment_id"] for a in listed["value"] if a["status"] == "released"] == [LAB], listed
        fetched = alice.api("/assignments/fetch", {"course_id": "dgm", "assignment_id": LAB})
        assert any(a["assignment_id"] == LAB and a["status"] == "fetched" for a in fetched["value"]), fetched
        home = tmp_path / "hub" / "home" / "alice"
        assert (home / LAB / f"{LAB}.ipynb").is_file()  # in her server's root, as the Assignments tab shows it
        (home / LAB / f"{LAB}.ipynb").write_bytes(PARTIAL.read_bytes())  # her work
        submitted = alice.api("/assignments/submit", {"course_id": "dgm", "assignment_id": LAB})
        assert any(a["status"] == "submitted" for a in submitted["value"]), submitted
        collected = teacher.api(f"/formgrader/api/assignment/{LAB}/collect", post=True)
        assert collected.get("success"), collected
        graded = teacher.api(f"/formgrader/api/submission/{LAB}/alice/autograde", post=True)
        assert graded.get("success"), graded.get("error") or graded
        submission = teacher.api(f"/formgrader/api/submission/{LAB}/alice")
        assert (submission["score"], submission["max_score"]) == (16.0, 20.0), submission
        # the student sees no instructor material: her server's root is her home, and the course is not in it
        contents = alice.api("/api/contents/")
        assert sorted(c["name"] for c in contents["content"]) == [LAB], contents
    finally:
        if hub.poll() is None:
            os.killpg(hub.pid, signal.SIGTERM)
            try:
                hub.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(hub.pid, signal.SIGKILL)
        proxy_pid = tmp_path / "hub" / "proxy.pid"  # a hub that died early leaves its proxy running
        if proxy_pid.is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(proxy_pid.read_text().strip()), signal.SIGTERM)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
