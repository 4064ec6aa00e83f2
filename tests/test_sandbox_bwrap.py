"""The bubblewrap backend of autograder.sandbox (:mod:`autograder.sandbox.bwrap`).

tests/test_sandbox.py's CHECKS script, and a real Jupyter kernel started by
``SandboxedKernelManager``, run through bwrap twice:

- ``root``: the grader is root (with CAP_SYS_ADMIN): bwrap runs without a user namespace
  and the prelude drops the kernel to the real ``nobody``;
- ``unprivileged``: the launcher and bwrap themselves run as an unprivileged user (as
  ``nobody``, through ``setpriv``, when the tests run as root; as the current user
  otherwise): bwrap builds everything in a user namespace. The virtualenv's interpreter may
  lie where ``nobody`` cannot go (pyenv under ``/root``, mode 0700): the system's interpreter
  of the same version then runs the launcher and the kernel, with the virtualenv's
  site-packages on PYTHONPATH.

Where ``bwrap`` is missing these tests are skipped, and fail when ``CI`` is set.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.sandbox import bwrap
from autograder.sandbox import launcher as sandbox
from autograder.sandbox import SandboxPolicy, SandboxUnavailable, wrap_command
from test_sandbox import (CHECKS, SUBSTITUTE_CHECK, _pids_with, check_substitute, checks_target,
                          kill_group_and_check_gone, substitute_layout)

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
NOBODY = pwd.getpwnam("nobody")


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"bubblewrap is required in CI: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def bwrap_path():
    path = bwrap.find_bwrap()
    if not path:
        _missing("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
    ok, why = bwrap.usable()
    if not ok:
        _missing(f"bwrap does not work here: {why}")
    return path


SETPRIV = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "--inh-caps=-all"]
_SITE = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]


@dataclass
class Runner:
    """How the grader side runs: as root, or as an unprivileged user."""

    name: str
    prefix: list[str]  # setpriv ... when the tests, as root, play an unprivileged grader
    python: str  # runs the launcher (and the kernel, in the Jupyter test)
    kernel_uid: int  # the kernel's uid on the host
    owner: tuple[int, int] | None = None  # chown the test's files to this uid:gid
    env: dict = field(default_factory=dict)

    def wrap(self, cmd, policy, report=None):
        return self.prefix + bwrap.wrap_command(cmd, policy, report, python=self.python)

    def popen_env(self):
        return {**os.environ, **self.env}

    def run(self, cmd, policy, cwd, timeout=60, report=None):
        return subprocess.run(self.wrap(cmd, policy, report), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=self.popen_env())

    def own(self, *paths):
        for p in paths:
            if self.owner:
                os.chown(p, *self.owner)


def _python_for_nobody() -> tuple[str | None, str]:
    """An interpreter ``nobody`` can run, of this one's version (the virtualenv's, else the system's)."""
    want = "%d.%d" % sys.version_info[:2]
    tried = []
    for cand in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3",
                 f"/usr/bin/python{want}"):
        if not os.path.exists(cand) or cand in tried:
            continue
        tried.append(cand)
        # through env: setpriv itself execs with root's capabilities still in force
        probe = subprocess.run([*SETPRIV, "env", cand, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30, cwd="/")
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return cand, ""
    return None, f"no Python {want} that user nobody can run (tried {', '.join(tried)})"


@pytest.fixture(scope="module", params=["root", "unprivileged"])
def runner(request, bwrap_path):
    if request.param == "root":
        if not bwrap.privileged():
            pytest.skip("the root variant needs root with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_CHOWN")
        return Runner("root", [], sys.executable, NOBODY.pw_uid)
    if os.geteuid() != 0:  # the tests already run unprivileged
        return Runner("unprivileged", [], sys.executable, os.getuid())
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to run bwrap as nobody")
    python, why = _python_for_nobody()
    if python is None:
        pytest.skip(why)
    # nobody runs the launcher and imports the library from this checkout: a parent directory of
    # mode 0700 (a clone under /root, or in a fresh mktemp -d) stops it with a bare "Permission denied"
    readable = subprocess.run([*SETPRIV, "env", python, "-I", "-c", "import sys; open(sys.argv[1]).close()",
                               bwrap.__file__], capture_output=True, text=True, timeout=30, cwd="/")
    if readable.returncode != 0:
        _missing(f"user nobody cannot read this checkout ({REPO}; a parent directory is not world-readable), and the "
                 "unprivileged tests run the launcher from it as nobody: clone it where others can read it "
                 "(chmod 755 the parent directories) or run the tests as a user other than root")
    check = subprocess.run([*SETPRIV, bwrap_path, "--unshare-user", "--ro-bind", "/", "/", "true"], capture_output=True,
                           text=True, timeout=30, cwd="/")
    if check.returncode != 0:
        pytest.skip(f"bwrap does not work for an unprivileged user here: {check.stderr.strip()}")
    # the kernel imports jupyter's packages from this virtualenv (same Python version)
    env = {"PYTHONPATH": os.pathsep.join([*dict.fromkeys(_SITE), str(REPO)])}
    return Runner("unprivileged", SETPRIV, python, NOBODY.pw_uid, (NOBODY.pw_uid, NOBODY.pw_gid), env)


@pytest.fixture(scope="module")
def layout(runner):
    """secret/ (hidden), data/ (read-only, mode 0777: only the mount stops a write), work/
    (writable), other/ (not listed), out/ (reports), all under the temp dir (a scratch tmpfs
    in the sandbox)."""
    root = Path(tempfile.mkdtemp(prefix=f"gmlib-bwrap-test-{runner.name}-"))
    os.chmod(root, 0o755)
    for name, text in (("secret", "the answer"), ("data", "some data"), ("other", "another student")):
        (root / name).mkdir()
        (root / name / "file.txt").write_text(text)
    os.chmod(root / "data", 0o777)
    (root / "work").mkdir()
    (root / "out").mkdir()
    (root / "work" / "shipped.txt").write_text("shipped with the submission")
    (root / "work" / "link.txt").symlink_to(root / "secret" / "file.txt")
    runner.own(root / "work", root / "work" / "shipped.txt", root / "out")
    policy = SandboxPolicy.from_env(mode="auto", backend="bwrap")
    policy.hide.append(root / "secret")
    policy.read_only.append(root / "data")
    policy.writable.append(root / "work")
    policy.read_only.append(REPO / "gmlib")
    policy.env["PYTHONPATH"] = str(REPO)  # gmlib for a system interpreter (the virtualenv finds it anyway)
    yield root, policy
    shutil.rmtree(root, ignore_errors=True)


EXTRA = r"""
import json, os, resource, signal
names = ("RLIMIT_DATA", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE")
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapAmb", "NoNewPrivs"):
        status[key] = value.split()
print(json.dumps({
    "limits": {n: list(resource.getrlimit(getattr(resource, n))) for n in names},
    "status": status, "env": sorted(os.environ), "home": os.environ.get("HOME"), "tmpdir": os.environ.get("TMPDIR"),
    "pid": os.getpid(), "pgrp": os.getpgrp(), "sid": os.getsid(0), "sigint": str(signal.getsignal(signal.SIGINT)),
    "devices": sorted(os.listdir("/dev")), "mounts": open("/proc/self/mounts").read().count("\n"),
}))
"""


@pytest.fixture(scope="module")
def checks(runner, layout):
    """tests/test_sandbox.py's CHECKS, then the rlimits, identity and environment, through bwrap."""
    root, policy = layout
    report = root / "out" / "report.json"
    with checks_target() as (port, token, escapes):
        args = [str(root), str(port), str(REPO), token, "1"]
        t0 = time.monotonic()
        proc = runner.run([runner.python, "-c", CHECKS, *args], policy, root / "work", report=report)
        seconds = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["_stderr"] = proc.stderr
        result["_seconds"] = seconds
        result["_escaped"] = [str(p) for p in escapes if p.exists()]
        result["_report"] = json.loads(report.read_text())
        secret_env = {"GMLIB_TEST_API_TOKEN": "hunter2", "AUTOGRADER_GRADEBOOK_URL": "postgresql://secret"}
        extra = subprocess.run(runner.wrap([runner.python, "-I", "-c", EXTRA], policy), cwd=root / "work",
                               capture_output=True, text=True, timeout=60, env={**runner.popen_env(), **secret_env})
        assert extra.returncode == 0, extra.stderr
        result["_extra"] = json.loads(extra.stdout.strip().splitlines()[-1])
        yield result


def test_launcher_reports_every_protection(checks, runner):
    line = [x for x in checks["_stderr"].splitlines() if x.startswith("autograder.sandbox: active:")]
    assert len(line) == 1, checks["_stderr"]
    assert "| skipped:" not in line[0], line[0]
    assert line[0].endswith("(as root)" if runner.name == "root" else "(user namespace)"), line[0]
    report = checks["_report"]
    assert report["backend"] == "bwrap"
    assert report["protections"] == {name: True for name in sandbox.PROTECTIONS}, report
    print(f"\n{runner.name}: CHECKS through bwrap in {checks['_seconds']:.2f} s: {line[0]}")


def test_hidden_paths_unreadable(checks):
    assert checks["read_secret"][0] == "FileNotFoundError"
    assert checks["list_secret"] == ["ok", []]
    assert checks["read_other"][0] == "FileNotFoundError"  # the temp dir is a private scratch tmpfs
    assert checks["read_relative"][0] == "FileNotFoundError"
    assert checks["read_symlink"][0] == "FileNotFoundError"
    assert checks["read_solutions"][0] == "FileNotFoundError"  # the checkout is hidden...
    assert "solutions" not in checks["list_repo"][1] and "nbgrader_config.py" not in checks["list_repo"][1]
    assert checks["find_gmlib"] == ["ok", ""]  # ...but the kept paths inside it are there


def test_read_only_paths_unwritable(checks, layout):
    assert checks["read_data"] == ["ok", "some data"]
    assert checks["write_data"][0] in ("OSError", "PermissionError")
    assert "Read-only file system" in checks["write_data"][1]  # the mount, not the mode (0777), stops it
    assert checks["write_gmlib"][0] in ("OSError", "PermissionError")
    assert not (layout[0] / "data" / "new.txt").exists()


def test_writable_dir_writable(checks, layout, runner):
    assert checks["write_work"][0] == "ok" and checks["overwrite_shipped"][0] == "ok"
    assert (layout[0] / "work" / "written.txt").read_text() == "mine"
    assert checks["home_writable"][0] == "ok"
    assert checks["cwd"] == str((layout[0] / "work").resolve())
    assert (layout[0] / "work" / "written.txt").stat().st_uid == runner.kernel_uid
    if runner.name == "root":  # handed to nobody by the launcher, given back as the kernel manager does
        work = layout[0] / "work"
        assert sandbox.hand_back(work, os.getuid(), os.getgid(), NOBODY.pw_uid) >= 2
        assert all(p.stat().st_uid == os.getuid() for p in [work, *work.iterdir()])


def test_tmp_is_private(checks):
    assert checks["write_tmp"][0] == "ok"  # in the sandbox's own /tmp...
    assert checks["_escaped"] == []  # ...never the host's
    assert checks["write_secret"][0] in ("OSError", "PermissionError")
    extra = checks["_extra"]
    assert extra["home"].startswith("/tmp/") and extra["tmpdir"] == "/tmp"


def test_no_network(checks):
    assert checks["connect_host"][0] in ("ConnectionRefusedError", "OSError", "TimeoutError"), checks["connect_host"]


def test_runs_as_nobody_without_capabilities(checks, runner):
    assert checks["uid"] == checks["euid"] == NOBODY.pw_uid
    status = checks["_extra"]["status"]
    assert status["Uid"] == [str(NOBODY.pw_uid)] * 4 and status["Gid"] == [str(NOBODY.pw_gid)] * 4
    assert int(status["CapEff"][0], 16) == int(status["CapPrm"][0], 16) == int(status["CapAmb"][0], 16) == 0
    assert status["NoNewPrivs"] == ["1"]
    assert checks["home"].startswith("/tmp/")
    expected = "nobody, uid 65534" if runner.name == "root" else "in a user namespace"
    assert expected in checks["_report"]["active"]["drop_privileges"]


def test_pid_namespace_and_process_group(checks):
    assert checks["processes"][0] == "ok" and len(checks["processes"][1]) <= 3, checks["processes"]
    extra = checks["_extra"]
    # --new-session: the sandbox's init (PID 1) leads the session and process group of the kernel
    assert extra["pgrp"] == extra["sid"] == 1 and extra["pid"] == 2
    assert "default_int_handler" in extra["sigint"]  # SIGINT raises KeyboardInterrupt again


def test_rlimits_in_force(checks, layout):
    policy = layout[1]
    limits = checks["_extra"]["limits"]
    assert limits["RLIMIT_DATA"] == [policy.memory_bytes] * 2
    assert limits["RLIMIT_CPU"] == [policy.cpu_seconds, policy.cpu_seconds + 5]
    assert limits["RLIMIT_FSIZE"] == [policy.file_size_bytes] * 2
    assert limits["RLIMIT_NPROC"] == [policy.max_processes] * 2
    assert limits["RLIMIT_CORE"] == [0, 0]


def test_environment_cleaned(checks):
    env = checks["_extra"]["env"]
    assert "GMLIB_TEST_API_TOKEN" not in env and "AUTOGRADER_GRADEBOOK_URL" not in env
    assert {"HOME", "TMPDIR", "IPYTHONDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "USER"} <= set(env)


def test_memory_and_cpu_limits_enforced(runner, layout):
    root, policy = layout
    small = SandboxPolicy(**{**policy.to_dict(), "memory_bytes": 256 * MiB})
    code = ("try:\n    b = bytearray(10 * 256 << 20)\n    print('allocated')\nexcept MemoryError:\n"
            "    print('MemoryError')\n")
    proc = runner.run([runner.python, "-I", "-c", code], small, root / "work")
    assert proc.stdout.strip() == "MemoryError", proc.stdout + proc.stderr
    fast = SandboxPolicy(**{**policy.to_dict(), "cpu_seconds": 2})
    t0 = time.monotonic()
    proc = runner.run([runner.python, "-I", "-c", "while True:\n    pass\n"], fast, root / "work", timeout=30)
    assert proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL), (proc.returncode, proc.stderr)
    assert time.monotonic() - t0 < 15


def test_process_tree_dies_with_the_launcher(runner, layout):
    """Killed as jupyter_client kills a kernel (SIGKILL to the process group): every process
    of the sandbox dies, one that called setsid() included; on the host they are nobody."""
    root, policy = layout
    token = uuid.uuid4().hex
    code = ("import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{token}'],"
            " start_new_session=True)\nprint('ready', flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen(runner.wrap([runner.python, "-I", "-c", code], policy), cwd=root / "work",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=runner.popen_env())
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.3)
        pids = [p for p in _pids_with(token)  # the sleeper itself, not the launcher, bwrap, its init, the kernel
                if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[-2:] == [token.encode(), b""]]
        assert pids, "the grandchild did not start"
        for pid in pids:
            uids = [x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")][0]
            assert uids.split()[1:] == [str(runner.kernel_uid)] * 4, uids  # as the host sees it
        kill_group_and_check_gone(proc, token)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _pids_with(token):
            os.kill(pid, signal.SIGKILL)


def test_nested_user_namespace_cannot_unhide(runner, layout):
    root, policy = layout
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    script = (f"unshare -Urm sh -c 'umount -l {root / 'secret'}; umount -l {REPO}; "
              f"cat {root / 'secret' / 'file.txt'}; ls {REPO}' 2>&1; true")
    proc = runner.run(["sh", "-c", script], policy, root / "work")
    assert proc.returncode == 0, proc.stderr
    assert "the answer" not in proc.stdout
    assert "nbgrader_config.py" not in proc.stdout and "solutions" not in proc.stdout


KERNEL = r"""
import asyncio, json, os, sys, time
from autograder.sandbox import launcher as sandbox
workdir, token, read_only = sys.argv[1], sys.argv[2], sys.argv[3:]
out = {}

async def main():
    km = sandbox.SandboxedKernelManager(kernel_name="python3", sandbox_backend="bwrap", read_only=read_only,
                                        private_copy=os.environ["PRIVATE_COPY"] == "1")
    t0 = time.monotonic()
    await km.start_kernel(cwd=workdir)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        out["start_seconds"] = time.monotonic() - t0
        out["report"] = km.active_protections()
        out["transport"] = km.transport
        texts = []
        hook = lambda m: texts.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
        reply = await kc.execute_interactive("import os\nprint(os.getuid(), os.getcwd())\n"
                                             "open('cell.txt', 'w').write('ran')\nos.symlink('/etc/hostname', 'link.txt')",
                                             timeout=60, output_hook=hook)
        out["cell"] = [reply["content"]["status"], "".join(texts)]
        msg_id = kc.execute("import time\ntime.sleep(60)")
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await kc.get_shell_msg(timeout=20)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        out["interrupt"] = [reply["content"]["status"], reply["content"].get("ename"), time.monotonic() - t0]
        code = ("import subprocess, sys\n"
                f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{token}'], "
                "start_new_session=True)\nprint('alive')")
        for _ in range(20):  # ipykernel aborts requests that arrive just after an error
            reply = await kc.execute_interactive(code, timeout=30)
            if reply["content"]["status"] != "aborted":
                break
            await asyncio.sleep(0.1)
        out["spawned"] = reply["content"]["status"]
    finally:
        kc.stop_channels()
        t0 = time.monotonic()
        await km.shutdown_kernel(now=False)
        out["shutdown_seconds"] = time.monotonic() - t0
        out["alive_after_shutdown"] = await km.is_alive()
        out["runtime_removed"] = km._sandbox_base is None

asyncio.run(main())
print(json.dumps(out))
"""


def test_jupyter_kernel_runs_interrupts_and_shuts_down(runner, bwrap_path):
    """SandboxedKernelManager with the bwrap backend: a cell runs (as nobody, in a private copy of the
    submission's directory; as root, in the directory itself with ``private_copy = False``), a
    ``time.sleep(60)`` cell is interrupted within seconds, shutdown ends every process."""
    private = runner.name != "root"  # both ways of the manager, one per runner
    base = Path(tempfile.mkdtemp(prefix=f"gmlib-bwrap-kernel-{runner.name}-"))
    os.chmod(base, 0o755)
    workdir, home = base / "submission", base / "home"
    workdir.mkdir()
    home.mkdir()
    runner.own(workdir, home)
    token = uuid.uuid4().hex
    env = {**runner.popen_env(), "HOME": str(home), "PRIVATE_COPY": "1" if private else "0"}
    env["PYTHONPATH"] = os.pathsep.join(x for x in [str(REPO), env.get("PYTHONPATH", "")] if x)
    try:
        proc = subprocess.run([*runner.prefix, runner.python, "-c", KERNEL, str(workdir), token, *dict.fromkeys(_SITE)],
                              cwd=base, capture_output=True, text=True, timeout=240, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n{runner.name}: kernel ready in {out['start_seconds']:.2f} s, interrupted in "
              f"{out['interrupt'][2]:.2f} s, shut down in {out['shutdown_seconds']:.2f} s")
        assert out["report"]["backend"] == "bwrap"
        assert out["report"]["protections"] == {name: True for name in sandbox.PROTECTIONS}, out["report"]
        assert out["transport"] == "ipc"  # no network: ZeroMQ over unix sockets in the runtime directory
        status, text = out["cell"]
        uid, cwd = text.split()
        assert status == "ok" and uid == str(NOBODY.pw_uid), out["cell"]
        if private:  # the kernel wrote into its copy, deleted with it; the directory is as it was
            assert cwd.endswith("/work") and "autograder-kernel-" in cwd and not Path(cwd).exists(), cwd
            assert list(workdir.iterdir()) == []
        else:
            assert cwd == str(workdir) and (workdir / "cell.txt").read_text() == "ran"
            assert not (workdir / "link.txt").is_symlink()  # removed once the kernel ended (strip_links)
            assert (workdir / "cell.txt").stat().st_uid == os.getuid() and workdir.stat().st_uid == os.getuid()  # given back
        status, ename, seconds = out["interrupt"]
        assert (status, ename) == ("error", "KeyboardInterrupt") and seconds < 5, out["interrupt"]
        assert out["spawned"] == "ok"
        assert out["alive_after_shutdown"] is False and out["runtime_removed"]
        deadline = time.monotonic() + 5
        while _pids_with(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pids_with(token), "a process started by the kernel survived its shutdown"
    finally:
        for pid in _pids_with(token):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------
# Choosing the backend, the command line, probe (no sandbox started, but bwrap --help)
# ----------------------------------------------------------------------------

def test_backend_from_policy_environment_and_trait(bwrap_path):
    assert SandboxPolicy.from_env({}).backend == "auto"
    assert SandboxPolicy.from_env({"AUTOGRADER_SANDBOX_BACKEND": "bwrap"}).backend == "bwrap"
    with pytest.raises(ValueError, match="AUTOGRADER_SANDBOX_BACKEND"):
        SandboxPolicy.from_env({"AUTOGRADER_SANDBOX_BACKEND": "docker"})
    with pytest.raises(ValueError, match="backend"):
        SandboxPolicy(backend="docker")
    policy = SandboxPolicy.from_env({"AUTOGRADER_SANDBOX_BACKEND": "bwrap"})
    assert SandboxPolicy.from_json(policy.to_json()) == policy
    km = sandbox.SandboxedKernelManager(sandbox_backend="bwrap")
    assert km.make_policy(None).backend == "bwrap"
    assert sandbox.resolve_backend("native") == "native" and sandbox.resolve_backend(policy) == "bwrap"
    cmd = wrap_command(["python", "-c", "pass"], policy)
    assert cmd[2] == bwrap.SCRIPT and cmd[-4:] == ["--", "python", "-c", "pass"]
    assert bwrap.SCRIPT not in wrap_command(["python", "-c", "pass"], SandboxPolicy.from_env(backend="native"))


def test_auto_backend(monkeypatch, bwrap_path):
    monkeypatch.setattr(bwrap.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bwrap, "_has_caps", lambda *caps: True)
    assert sandbox.resolve_backend("auto") == "native"  # root with CAP_SYS_ADMIN
    monkeypatch.setattr(bwrap, "_has_caps", lambda *caps: False)
    monkeypatch.setattr(bwrap, "usable", lambda: (True, ""))
    assert sandbox.resolve_backend("auto") == "bwrap"  # no CAP_SYS_ADMIN, bwrap works
    monkeypatch.setattr(bwrap, "usable", lambda: (False, "bwrap not found on PATH"))
    assert sandbox.resolve_backend("auto") == "native"  # neither: the native launcher keeps what works


def test_required_mode_refuses_when_bwrap_cannot_protect(monkeypatch, bwrap_path):
    broken = {n: (True, "") for n in sandbox.PROTECTIONS}
    broken["network_namespace"] = (False, "bwrap: loopback: Failed RTM_NEWADDR")
    monkeypatch.setattr(bwrap, "probe_details", lambda *a, **k: dict(broken))
    policy = SandboxPolicy.from_env(mode="required", backend="bwrap")
    with pytest.raises(SandboxUnavailable, match="network_namespace.*backend bwrap|backend bwrap.*network_namespace"):
        wrap_command(["python", "-c", "pass"], policy)
    monkeypatch.setattr(bwrap, "probe_details", lambda *a, **k: {n: (True, "") for n in sandbox.PROTECTIONS})
    assert wrap_command(["python", "-c", "pass"], policy)[2] == bwrap.SCRIPT
    # a missing bwrap: nothing works with it
    monkeypatch.setattr(bwrap, "probe_details", lambda *a, **k: {n: (False, "bwrap not found on PATH")
                                                                 for n in sandbox.PROTECTIONS})
    with pytest.raises(SandboxUnavailable, match="bwrap not found"):
        wrap_command(["python", "-c", "pass"], policy)


def _ops(argv):
    """The mount operations of a bwrap command line, as (option, path)."""
    end = argv.index("--clearenv")
    out, i = [], 1
    takes = {"--tmpfs": 1, "--remount-ro": 1, "--dir": 1, "--ro-bind": 2, "--bind": 2, "--dev-bind": 2, "--dev": 1,
             "--proc": 1}
    while i < end:
        opt = argv[i]
        if opt in takes:
            out.append((opt, argv[i + takes[opt]]))
            i += 1 + takes[opt]
        else:
            i += 2 if opt in ("--size", "--perms", "--uid", "--gid", "--cap-add", "--cap-drop", "--chdir",
                              "--info-fd") else 1
    return out


@pytest.mark.parametrize("privileged_mode", [True, False])
def test_bwrap_argv(tmp_path, monkeypatch, bwrap_path, privileged_mode):
    """The policy's translation: namespaces, the root read-only, hidden paths covered (files by
    /dev/null), scratch tmpfs sized, a kept path inside a hidden one mounted after it, the hiding
    tmpfs made read-only last, the cleaned environment, the prelude."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "lib").mkdir(parents=True)
    (checkout / "solutions").mkdir()
    (checkout / "secret.txt").write_text("x")
    (tmp_path / "link").symlink_to(checkout)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("GMLIB_TEST_SECRET", "hunter2")
    policy = SandboxPolicy(hide=[tmp_path / "link", checkout / "secret.txt"], read_only=[tmp_path / "link" / ".venv"],
                           writable=[], scratch=[scratch], user="nobody", backend="bwrap", matplotlib_cache=None,
                           memory_bytes=512 * MiB)
    argv = bwrap.bwrap_argv(policy, ["python3", "-c", "pass"], "/", privileged_mode=privileged_mode)
    assert argv[0] == bwrap_path
    flags = set(argv[:argv.index("--clearenv")])
    assert {"--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net",
            "--die-with-parent", "--new-session"} <= flags
    if privileged_mode:
        assert "--unshare-user" not in flags and argv[argv.index("--cap-drop") + 1] == "ALL"
    else:
        assert {"--unshare-user", "--disable-userns"} <= flags
        assert argv[argv.index("--uid") + 1] == argv[argv.index("--gid") + 1] == "65534"
    ops = _ops(argv)
    real = str(checkout.resolve())
    assert ops[0] == ("--ro-bind", "/") and ("--dev", "/dev") in ops and ("--proc", "/proc") in ops
    hide, venv = ops.index(("--tmpfs", real)), ops.index(("--ro-bind", f"{real}/.venv"))
    remount = ops.index(("--remount-ro", real))
    assert hide < venv < remount  # a kept path inside a hidden one: mounted in its tmpfs, then read-only
    j = next(i for i in range(len(argv) - 1) if argv[i:i + 2] == ["--tmpfs", str(scratch.resolve())])
    assert argv[j - 4:j] == ["--size", str(policy.scratch_bytes), "--perms", "1777"]  # private, sized
    assert not [op for op in ops if op[1] == f"{real}/secret.txt"]  # a file in a hidden directory: covered already
    env = {argv[i + 1]: argv[i + 2] for i, x in enumerate(argv) if x == "--setenv"}
    assert "GMLIB_TEST_SECRET" not in env and env["HOME"] == f"{scratch.resolve()}/.autograder-sandbox-home"
    assert env["TMPDIR"] == str(scratch.resolve()) and env["USER"] == "nobody"
    tail = argv[argv.index("--", argv.index("--clearenv")):]
    assert tail[2:5] == ["-I", "-S", "-c"] and tail[-3:] == ["python3", "-c", "pass"]
    config = json.loads(tail[6])
    assert config["drop"] is privileged_mode and config["uid"] == 65534
    assert [x[0] for x in config["limits"]][:1] == ["data 512 MiB"]


def test_substitute_shows_the_edition_read_only(runner, layout):
    """SandboxPolicy.substitute through bwrap: the library directory shows the edition, read-only, without
    the original's __pycache__ (the checks of tests/test_sandbox.py's native test)."""
    root, base = layout
    lib, edition = substitute_layout(root / "subst")
    runner.own(lib, edition)
    policy = dataclasses.replace(base, read_only=[*base.read_only, lib], substitute={str(lib): str(edition)})
    proc = runner.run([runner.python, "-I", "-c", SUBSTITUTE_CHECK, str(lib)], policy, root / "work")
    assert proc.returncode == 0, proc.stderr
    check_substitute(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "substituted 1" in proc.stderr, proc.stderr
    argv = bwrap.bwrap_argv(policy, ["true"], "/")
    i = argv.index(str(lib.resolve()))
    assert argv[i - 2:i] == ["--ro-bind", str(edition.resolve())]


def test_hidden_file_covered_by_dev_null(tmp_path, bwrap_path):
    secret = tmp_path / "gradebook.db"
    secret.write_text("x")
    policy = SandboxPolicy(hide=[secret], read_only=[], writable=[], scratch=[], backend="bwrap", matplotlib_cache=None)
    argv = bwrap.bwrap_argv(policy, ["true"], "/")
    assert ("--ro-bind", str(secret.resolve())) in _ops(argv)
    i = argv.index(str(secret.resolve()))
    assert argv[i - 2:i] == ["--ro-bind", "/dev/null"]


def test_probe_and_describe_name_the_backend(bwrap_path):
    result = sandbox.probe(backend="bwrap")
    assert set(result) == set(sandbox.PROTECTIONS)
    line = sandbox.describe(result, backend="bwrap")
    assert "[backend: bwrap (" in line and "bubblewrap" in line
    assert sandbox.describe(sandbox.probe(backend="native"), backend="native").endswith("[backend: native]")
    if bwrap.privileged() or os.geteuid() != 0:  # bwrap's own modes: every protection
        assert result == {name: True for name in sandbox.PROTECTIONS}, sandbox.probe_details(backend="bwrap")
    out = subprocess.run([sys.executable, "-m", "autograder.sandbox", "probe", "--backend", "bwrap", "--json"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == result
