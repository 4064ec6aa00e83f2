"""The kernel sandbox of autograder.sandbox: each protection, tried through the launcher.

Each test needing a protection is skipped, naming it, where ``probe()`` says it does not
work on this machine (not root, no CAP_SYS_ADMIN); ``test_probe_summary`` always runs
and prints what the machine offers.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import stat
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from autograder.sandbox import launcher as sandbox
from autograder.sandbox import SandboxPolicy, SandboxUnavailable, wrap_command

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


@pytest.fixture(scope="module")
def probed():
    return sandbox.probe()


def need(probed, *names):
    missing = [n for n in names if not probed.get(n)]
    if missing:
        details = sandbox.probe_details()
        why = "; ".join(f"{n}: {details[n][1] or 'unavailable'}" for n in missing)
        pytest.skip(f"sandbox protection unavailable on this machine: {why}")


def run_in_sandbox(code: str, policy: SandboxPolicy, cwd: Path, timeout: float = 30, **kw):
    cmd = wrap_command([sys.executable, "-c", code], policy)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """secret/ (hidden), data/ (read-only), work/ (writable), other/ (not listed)."""
    root = tmp_path_factory.mktemp("sandbox")
    for name, text in (("secret", "the answer"), ("data", "some data"), ("other", "another student")):
        (root / name).mkdir()
        (root / name / "file.txt").write_text(text)
    (root / "work").mkdir()
    (root / "work" / "shipped.txt").write_text("shipped with the submission")
    (root / "work" / "link.txt").symlink_to(root / "secret" / "file.txt")  # a symlink out of the sandbox
    policy = SandboxPolicy.from_env(mode="auto")
    policy.hide.append(root / "secret")
    policy.read_only.append(root / "data")
    policy.writable.append(root / "work")
    policy.read_only.append(REPO / "gmlib")  # the course's library, as nbgrader_config.py adds it
    return root, policy


#: what the check scripts run in the sandbox share: out[key] = ["ok", result] or [exception, message]
ATTEMPT = r"""
def attempt(key, fn):
    try:
        out[key] = ["ok", fn()]
    except Exception as e:
        out[key] = [type(e).__name__, str(e)]
"""

CHECKS = r"""
import json, os, socket, sys
root, port = sys.argv[1], int(sys.argv[2])
out = {"uid": os.getuid(), "euid": os.geteuid(), "cwd": os.getcwd(), "home": os.environ.get("HOME")}
""" + ATTEMPT + r"""

attempt("read_secret", lambda: open(os.path.join(root, "secret", "file.txt")).read())
attempt("list_secret", lambda: os.listdir(os.path.join(root, "secret")))
attempt("read_other", lambda: open(os.path.join(root, "other", "file.txt")).read())
attempt("read_relative", lambda: open("../secret/file.txt").read())
attempt("read_symlink", lambda: open("link.txt").read())
attempt("read_data", lambda: open(os.path.join(root, "data", "file.txt")).read())
attempt("write_data", lambda: open(os.path.join(root, "data", "new.txt"), "w").write("x"))
attempt("write_work", lambda: open("written.txt", "w").write("mine"))
attempt("overwrite_shipped", lambda: open("shipped.txt", "w").write("changed"))
attempt("write_secret", lambda: open(os.path.join(root, "secret", "new.txt"), "w").write("x"))
if sys.argv[5] == "1":  # only where the mounts should stop it: never write into the repository otherwise
    target = os.path.join(sys.argv[3], "gmlib", f".sandbox-test-{sys.argv[4]}.py")
    attempt("write_gmlib", lambda: open(target, "w").write("x"))
attempt("read_solutions", lambda: os.listdir(os.path.join(sys.argv[3], "solutions")))
attempt("list_repo", lambda: sorted(os.listdir(sys.argv[3])))
attempt("write_tmp", lambda: open("/tmp/gmlib-sandbox-test-" + sys.argv[4], "w").write("x"))
attempt("connect_host", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
attempt("processes", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("home_writable", lambda: open(os.path.join(os.environ["HOME"], "x"), "w").write("x"))
attempt("find_gmlib", lambda: open(__import__("importlib.util").util.find_spec("gmlib").origin).read(0))
print(json.dumps(out))
"""


@contextlib.contextmanager
def checks_target():
    """What CHECKS needs around it: a TCP server on 127.0.0.1 it must not reach (its port), a
    token, and the files it writes where a protection failed (removed afterwards)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    token = uuid.uuid4().hex
    escapes = [REPO / "gmlib" / f".sandbox-test-{token}.py", Path(f"/tmp/gmlib-sandbox-test-{token}")]
    try:
        yield server.getsockname()[1], token, escapes
    finally:
        server.close()
        for p in escapes:  # where a protection failed, leave nothing behind
            if p.exists():
                p.unlink()


@pytest.fixture(scope="module")
def checks(layout, probed):
    """One sandboxed Python process runs every filesystem/network/identity check."""
    root, policy = layout
    with checks_target() as (port, token, escapes):
        args = [str(root), str(port), str(REPO), token, "1" if probed["mount_namespace"] else "0"]
        cmd = wrap_command([sys.executable, "-c", CHECKS, *args], policy)
        proc = subprocess.run(cmd, cwd=root / "work", capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["_stderr"] = proc.stderr
        result["_escaped"] = [str(p) for p in escapes if p.exists()]
        yield result


def test_probe_summary(probed):
    """Always runs: prints which protections this machine offers."""
    line = sandbox.describe(probed)
    print(f"\nsandbox protections on this machine: {line}")
    assert set(probed) == set(sandbox.PROTECTIONS)
    assert all(isinstance(v, bool) for v in probed.values())
    for name in sandbox.PROTECTIONS:
        assert name.replace("_", " ") in line or name == "drop_privileges"
    out = subprocess.run([sys.executable, "-m", "autograder.sandbox", "probe", "--json"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == probed


def test_launcher_reports_what_is_active(checks, probed):
    line = [x for x in checks["_stderr"].splitlines() if x.startswith("autograder.sandbox: active:")]
    assert len(line) == 1, checks["_stderr"]
    active = line[0].split("|")[0]
    skipped = line[0].split("| skipped:")[1] if "| skipped:" in line[0] else ""
    for name in ("mount_namespace", "network_namespace", "rlimits"):
        assert (name in active) == probed[name], line[0]
        assert (name in skipped) != probed[name], line[0]
    # dropping privileges also needs the interpreter to be reachable by the sandbox user
    assert ("drop_privileges" in active) == (probed["drop_privileges"] and "drop_privileges" not in skipped)


def test_hidden_file_unreadable(checks, probed):
    need(probed, "mount_namespace")
    assert checks["read_secret"][0] == "FileNotFoundError"
    assert checks["list_secret"] == ["ok", []]
    assert checks["read_other"][0] == "FileNotFoundError"  # under the hidden temp dir, not listed
    assert checks["read_relative"][0] == "FileNotFoundError"  # '..' walks the new view
    assert checks["read_symlink"][0] == "FileNotFoundError"  # and so do symlinks
    assert checks["read_solutions"][0] == "FileNotFoundError"  # the repository is hidden
    assert "solutions" not in checks["list_repo"][1] and "nbgrader_config.py" not in checks["list_repo"][1]
    assert checks["find_gmlib"] == ["ok", ""]  # what the kernel needs stays


def test_service_sockets_hidden(layout, probed):
    """Unix sockets of local services (a PostgreSQL gradebook) are out of reach."""
    need(probed, "mount_namespace")
    dirs = [p for p in sandbox._SERVICE_SOCKETS if os.path.isdir(p) and not os.path.islink(p)]
    if not dirs:
        pytest.skip("no service socket directory on this machine")
    root, policy = layout
    proc = run_in_sandbox(f"import os, json; print(json.dumps([os.listdir(p) for p in {dirs!r}]))", policy,
                          root / "work")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[] for _ in dirs]


def test_read_only_path_readable_not_writable(checks, probed, layout):
    need(probed, "mount_namespace")
    assert checks["read_data"] == ["ok", "some data"]
    assert checks["write_data"][0] in ("OSError", "PermissionError")
    assert not (layout[0] / "data" / "new.txt").exists()


def test_writable_dir_is_writable(checks, layout, probed):
    need(probed, "mount_namespace")
    assert checks["write_work"][0] == "ok"
    assert (layout[0] / "work" / "written.txt").read_text() == "mine"
    assert checks["overwrite_shipped"][0] == "ok"
    assert checks["home_writable"][0] == "ok"
    assert checks["cwd"] == str((layout[0] / "work").resolve())


def test_hand_back_restores_owner(checks, probed, layout):
    need_dropped(checks, probed)
    work = layout[0] / "work"
    assert (work / "written.txt").stat().st_uid == 65534  # written by the sandbox user
    changed = sandbox.hand_back(work, os.getuid(), os.getgid(), 65534)
    assert changed >= 2
    assert all(p.stat().st_uid == os.getuid() for p in [work, *work.iterdir()])


def test_writing_outside_fails(checks, probed, layout):
    need(probed, "mount_namespace")
    assert checks["write_secret"][0] in ("OSError", "PermissionError")
    assert checks["write_gmlib"][0] in ("OSError", "PermissionError")
    assert not (layout[0] / "secret" / "new.txt").exists()
    # /tmp inside is a private scratch tmpfs: the write succeeded there and is gone
    assert checks["write_tmp"][0] == "ok"
    assert checks["_escaped"] == []


def test_network_to_host_loopback_fails(checks, probed):
    need(probed, "network_namespace")
    assert checks["connect_host"][0] in ("ConnectionRefusedError", "OSError", "TimeoutError"), checks["connect_host"]


def need_dropped(checks, probed):
    """Skip unless the launcher really ran the checks as the sandbox user."""
    need(probed, "drop_privileges")
    skipped = [x for x in checks["_stderr"].splitlines() if "skipped:" in x and "drop_privileges (" in x]
    if skipped:
        pytest.skip("the launcher could not drop privileges here: " + skipped[0].split("skipped:")[1].strip())


def test_runs_as_nobody(checks, probed):
    need_dropped(checks, probed)
    assert checks["uid"] == checks["euid"] == 65534


def test_pid_namespace_hides_host_processes(checks, probed):
    need(probed, "pid_namespace")
    assert checks["processes"][0] == "ok"
    assert len(checks["processes"][1]) <= 3, checks["processes"]  # init, the kernel, maybe a child


def test_memory_bomb(layout, probed):
    need(probed, "rlimits")
    root, policy = layout
    cap = 256 * MiB
    code = r"""
cap = %d
try:
    blob = bytearray(10 * cap)
    print("big allocation succeeded")
except MemoryError:
    print("big: MemoryError")
chunks = []
try:
    while True:
        chunks.append(bytearray(16 << 20))  # zero-filled: really touched
except MemoryError:
    got = len(chunks) * 16
    del chunks
    print("grow: MemoryError after", got, "MiB")
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print("peak", int(line.split()[1]) // 1024)
""" % cap
    small = SandboxPolicy(**{**policy.to_dict(), "memory_bytes": cap})
    t0 = time.monotonic()
    proc = run_in_sandbox(code, small, root / "work")
    assert time.monotonic() - t0 < 20
    if proc.returncode == 0:
        lines = proc.stdout.splitlines()
        assert "big: MemoryError" in lines, proc.stdout + proc.stderr
        assert any(x.startswith("grow: MemoryError") for x in lines), proc.stdout
        peak = int([x for x in lines if x.startswith("peak")][0].split()[1])
        assert peak < cap // MiB + 64, proc.stdout
    else:  # killed: also acceptable, as long as it ended
        assert proc.returncode < 0, proc.stdout + proc.stderr


def test_cpu_limit_kills_busy_loop(layout, probed):
    need(probed, "rlimits")
    root, policy = layout
    fast = SandboxPolicy(**{**policy.to_dict(), "cpu_seconds": 2})
    t0 = time.monotonic()
    proc = run_in_sandbox("while True:\n    pass\n", fast, root / "work", timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL), (proc.returncode, proc.stderr)
    assert took < 15, took


def test_process_tree_dies_with_the_launcher(layout, probed):
    """A grandchild that left the process group (setsid) still dies when the kernel is killed."""
    need(probed, "pid_namespace")
    root, policy = layout
    token = uuid.uuid4().hex
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{token}'], start_new_session=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen(wrap_command([sys.executable, "-c", code], policy), cwd=root / "work",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert _pids_with(token), "the grandchild did not start"
        kill_group_and_check_gone(proc, token)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _pids_with(token):
            os.kill(pid, signal.SIGKILL)


def kill_group_and_check_gone(proc, token: str) -> None:
    """Kill the sandbox's process group as jupyter_client kills a kernel; no process marked with
    ``token`` may survive it (5 s grace)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pids_with(token), "a process of the sandbox survived"


def _pids_with(token: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if token in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_user_namespace_cannot_unhide(layout, probed):
    """A nested user+mount namespace cannot unmount the tmpfs that hides a directory."""
    need(probed, "mount_namespace", "drop_privileges")
    root, policy = layout
    script = (f"unshare -Urm sh -c 'umount -l {root / 'secret'}; umount -l {REPO}; "
              f"cat {root / 'secret' / 'file.txt'}; ls {REPO}' 2>&1; true")
    proc = subprocess.run(wrap_command(["sh", "-c", script], policy), cwd=root / "work", capture_output=True,
                          text=True, timeout=30)
    assert "the answer" not in proc.stdout
    assert "nbgrader_config.py" not in proc.stdout and "solutions" not in proc.stdout


SUBSTITUTE_CHECK = r"""
import json, os, sys
lib = sys.argv[1]
out = {}
""" + ATTEMPT + r"""
attempt("read", lambda: open(os.path.join(lib, "mod.py")).read())
attempt("list", lambda: sorted(os.listdir(lib)))
attempt("write", lambda: open(os.path.join(lib, "new.py"), "w").write("x"))
attempt("pyc", lambda: open(os.path.join(lib, "__pycache__", "mod.cpython-311.pyc")).read())
print(json.dumps(out))
"""


def substitute_layout(root: Path) -> tuple[Path, Path]:
    """lib/ (mod.py holding a secret, and a __pycache__) and edition/ (mod.py without it)."""
    lib, edition = root / "lib", root / "edition"
    (lib / "__pycache__").mkdir(parents=True)
    (lib / "mod.py").write_text("SECRET = 'the reference'\n")
    (lib / "__pycache__" / "mod.cpython-311.pyc").write_text("the reference, compiled")
    edition.mkdir()
    (edition / "mod.py").write_text("PUBLIC = 1\n")
    for p in (root, lib, lib / "__pycache__", edition):
        os.chmod(p, 0o755)
    return lib, edition


def check_substitute(result: dict) -> None:
    assert result["read"] == ["ok", "PUBLIC = 1\n"], result  # the edition's file, not the library's
    assert result["list"] == ["ok", ["mod.py"]], result  # no __pycache__ of the original
    assert result["pyc"][0] == "FileNotFoundError", result
    assert result["write"][0] in ("OSError", "PermissionError") and "Read-only" in result["write"][1], result


def test_substitute_shows_the_edition_read_only(layout, probed):
    """SandboxPolicy.substitute: a library directory (read-only in the policy, as nbgrader_config.py keeps
    it) shows another directory's contents instead, read-only (autograder.edition's student editions)."""
    need(probed, "mount_namespace")
    root, base = layout
    lib, edition = substitute_layout(root / "subst")
    policy = dataclasses.replace(base, read_only=[*base.read_only, lib], substitute={str(lib): str(edition)})
    proc = subprocess.run(wrap_command([sys.executable, "-c", SUBSTITUTE_CHECK, str(lib)], policy), cwd=root / "work",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    check_substitute(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "substituted 1" in proc.stderr, proc.stderr
    # and a nested user namespace cannot take the edition away to find the library under it
    script = f"unshare -Urm sh -c 'umount -l {lib}; cat {lib / 'mod.py'}' 2>&1; true"
    proc = subprocess.run(wrap_command(["sh", "-c", script], policy), cwd=root / "work", capture_output=True,
                          text=True, timeout=30)
    assert "the reference" not in proc.stdout


def test_required_mode_names_missing_protection(monkeypatch):
    fake = {name: True for name in sandbox.PROTECTIONS}
    fake["mount_namespace"] = False
    monkeypatch.setattr(sandbox, "probe", lambda *a, **k: dict(fake))
    policy = SandboxPolicy.from_env(mode="required")
    with pytest.raises(SandboxUnavailable, match="mount_namespace"):
        wrap_command(["python", "-c", "pass"], policy)
    fake["mount_namespace"] = True
    assert wrap_command(["python", "-c", "pass"], policy)[-4:] == ["--", "python", "-c", "pass"]
    monkeypatch.setattr(sandbox, "probe", lambda *a, **k: {name: False for name in sandbox.PROTECTIONS})
    assert sandbox.active_protections(SandboxPolicy.from_env(mode="auto")) == {n: False for n in sandbox.PROTECTIONS}


def test_off_mode_runs_command_unchanged():
    cmd = [sys.executable, "-c", "print('hi')"]
    assert wrap_command(cmd, SandboxPolicy.from_env(mode="off")) == cmd


def test_policy_from_env_and_validation(tmp_path):
    env = {"AUTOGRADER_SANDBOX": "required", "AUTOGRADER_SANDBOX_MEMORY_MB": "512", "AUTOGRADER_SANDBOX_CPU_SECONDS": "0",
           "AUTOGRADER_SANDBOX_HIDE": f"{tmp_path}/a{os.pathsep}{tmp_path}/b"}
    policy = SandboxPolicy.from_env(env)
    assert policy.mode == "required" and policy.memory_bytes == 512 * MiB and policy.cpu_seconds is None
    assert Path(f"{tmp_path}/b") in policy.hide
    assert SandboxPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ValueError, match="AUTOGRADER_SANDBOX"):
        SandboxPolicy.from_env({"AUTOGRADER_SANDBOX": "sometimes"})
    with pytest.raises(ValueError, match="system directory"):
        SandboxPolicy(hide=[Path("/usr")])
    with pytest.raises(ValueError, match="not absolute"):
        SandboxPolicy(writable=[Path("relative")])
    default = SandboxPolicy()
    assert REPO in default.hide and REPO / "autograder" in default.read_only
    assert Path(sys.prefix) in default.read_only and default.user == "nobody" and not default.network


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_nbclient_notebook_in_sandboxed_kernel(tmp_path, probed):
    """Runs wherever: without the mount namespace the launcher still applies what works."""
    from nbclient import NotebookClient

    workdir = tmp_path / "submission"
    workdir.mkdir()
    (workdir / "shipped.txt").write_text("cell 3 ran")  # a file of the submission: the kernel reads its copy
    (workdir / "shipped-link.txt").symlink_to(tmp_path / "gradebook.db")  # never copied for the kernel
    outside = tmp_path / "gradebook.db"
    outside.write_text("grades")
    nb = _notebook([
        "import os, torch\nx = torch.arange(6.0).reshape(2, 3)\nprint(float((x @ x.T).sum()), os.getuid())",
        f"print(open({str(REPO / 'nbgrader_config.py')!r}).read())",
        "open('result.txt', 'w').write(open('shipped.txt').read())\nprint(open('result.txt').read())",
        # links the grader would follow once the kernel has ended (it writes the graded notebook here, as root)
        f"import os\nos.symlink({str(outside)!r}, 'lab.ipynb')\nos.mkfifo('pipe')",
    ])
    client = NotebookClient(nb, kernel_manager_class=sandbox.SandboxedKernelManager, timeout=60,
                            allow_errors=True, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    out1, out2, out3, out4 = (c.outputs for c in nb.cells)
    assert out1[0]["text"].split()[0] == "83.0"
    if probed["drop_privileges"] and probed["mount_namespace"]:
        assert out1[0]["text"].split()[1] == "65534"
    if probed["mount_namespace"]:
        assert [o["output_type"] for o in out2] == ["error"] and out2[0]["ename"] == "FileNotFoundError"
    assert out3[0]["text"] == "cell 3 ran\n"  # it wrote and read back result.txt in its copy of the directory
    assert out4 == []  # ... where it made the link and the FIFO too
    # the directory itself was never the kernel's: as before, nothing of what the kernel wrote is in it,
    # and nothing outside was touched
    assert sorted(p.name for p in workdir.iterdir()) == ["shipped-link.txt", "shipped.txt"]
    assert all(p.lstat().st_uid == os.getuid() for p in [workdir, *workdir.iterdir()])
    assert outside.read_text() == "grades"
    assert not list(Path(tempfile.gettempdir()).glob("autograder-kernel-*/work/result.txt"))  # the copy is gone


def test_a_new_kernel_directory_removes_those_left_by_dead_graders():
    from autograder.sandbox.launcher import new_kernel_base, remove_tree

    gone = subprocess.Popen(["true"])
    gone.wait()  # a grader process that no longer exists
    made = []

    def base(owner):
        path = Path(tempfile.mkdtemp(prefix="autograder-kernel-"))
        made.append(path)
        if owner is not None:
            (path / "owner").write_text(str(owner))
        return path

    stale, live, unowned = base(gone.pid), base(os.getpid()), base(None)
    (stale / "work").mkdir()
    (stale / "work" / "lab01.ipynb").write_text("{}")  # the copy of a submission, left by a killed grader
    try:
        fresh = Path(new_kernel_base())
        made.append(fresh)
        assert not stale.exists()  # its owner is gone: removed with the submission's copy
        assert live.exists() and unowned.exists()  # a live owner's, or one without an owner file: kept
        assert (fresh / "owner").read_text() == str(os.getpid())
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    finally:
        for path in made:
            remove_tree(path)


def test_copy_plain_copies_regular_files_only(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.py").write_text("b")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (source / "link.txt").symlink_to(outside)
    (source / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(source / "pipe")
    left_out = sandbox.copy_plain(source, target)
    assert sorted(left_out) == ["link.txt (symbolic link)", "pipe (FIFO)", "sub/up (symbolic link)"]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["a.txt", "sub", "sub/b.py"]
    assert (target / "sub" / "b.py").read_text() == "b" and not any(p.is_symlink() for p in target.rglob("*"))
    levels = [target]
    for _ in range(1200):  # remove_tree takes a tree deeper than shutil.rmtree's recursion
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    sandbox.remove_tree(target)
    assert not target.exists() and outside.read_text() == "secret" and (source / "a.txt").exists()


def test_strip_links_removes_what_the_grader_must_not_follow(tmp_path):
    work = tmp_path / "course" / "student" / "lab"
    (work / "sub").mkdir(parents=True)
    outside = tmp_path / "gradebook.db"
    outside.write_text("grades")
    outside.chmod(0o600)
    (work / "lab.ipynb").symlink_to(outside)
    (work / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(work / "pipe")
    os.link(outside, work / "hard")  # a second name of a file outside
    (work / "kept.txt").write_text("x")
    (work / "sub" / "kept.py").write_text("y")
    removed = sandbox.strip_links(work)
    assert sorted(removed) == ["hard (hard-linked file)", "lab.ipynb (symbolic link)", "pipe (FIFO)",
                               "sub/up (symbolic link)"]
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == ["kept.txt", "sub", "sub/kept.py"]
    assert outside.read_text() == "grades" and stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert outside.stat().st_nlink == 1 and (tmp_path / "course").is_dir()
    assert sandbox.strip_links(work) == []  # nothing left to remove
    # a link at the bottom of a tree deeper than Python's recursion limit is found too
    levels = [work]
    for _ in range(1200):
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()  # (os.makedirs recurses: it cannot make this tree)
    (levels[-1] / "lab.ipynb").symlink_to(outside)
    assert sandbox.strip_links(work) == [str(Path(*["d"] * 1200, "lab.ipynb")) + " (symbolic link)"]
    assert not (levels[-1] / "lab.ipynb").is_symlink() and outside.read_text() == "grades"
    for level in reversed(levels[1:]):  # shutil.rmtree recurses too
        level.rmdir()


@pytest.mark.parametrize("preload", [True, False], ids=["forked", "executed"])
def test_kernel_manager_interrupt_and_shutdown(tmp_path, probed, preload, monkeypatch):
    """An interrupted busy cell raises KeyboardInterrupt; shutdown kills every process of the kernel,
    whether the kernel was forked from the preloaded zygote or executed."""
    monkeypatch.setenv("AUTOGRADER_SANDBOX_PRELOAD", "1" if preload else "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else numpy's BLAS threads keep the zygote from forking
    token = uuid.uuid4().hex

    async def scenario():
        km = sandbox.SandboxedKernelManager(kernel_name="python3")
        await km.start_kernel(cwd=str(tmp_path))
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            report = km.active_protections()
            assert report["protections"]["mount_namespace"] == probed["mount_namespace"]
            assert report["forked"] == preload
            assert km.transport == ("ipc" if probed["network_namespace"] else km.transport)
            msg_id = kc.execute("import time\nwhile True:\n    time.sleep(0.01)\n")
            await asyncio.sleep(1.0)
            await km.interrupt_kernel()
            # wait_for_ready may have sent a second kernel_info request when the kernel was slow to
            # start (a loaded machine): its late reply is not the one this test is about
            deadline = time.monotonic() + 20
            while True:
                reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
                assert reply["msg_type"] == "kernel_info_reply", reply["msg_type"]
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
            code = ("import subprocess, sys\n"
                    f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{token}'],"
                    " start_new_session=True)\nprint('alive')")
            for _ in range(20):  # ipykernel aborts requests that arrive just after an error
                reply = await kc.execute_interactive(code, timeout=20)
                if reply["content"]["status"] != "aborted":
                    break
                await asyncio.sleep(0.1)
            assert reply["content"]["status"] == "ok", reply["content"]
            await asyncio.sleep(0.3)
            assert _pids_with(token)
        finally:
            kc.stop_channels()
            sent = []
            signal_kernel = km._async_signal_kernel

            async def recording(signum):
                sent.append(signum)
                await signal_kernel(signum)

            km._async_signal_kernel = recording
            await km.shutdown_kernel(now=True)
            # a kill only: no interrupt first, which a kernel mid-message would log as an error
            assert signal.SIGINT not in sent, sent
        return km

    km = asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while _pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = _pids_with(token)
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    if probed["pid_namespace"]:
        assert not leftover, "a process started by the kernel survived its shutdown"
    assert km._sandbox_base is None  # runtime directory removed


def test_every_top_level_directory_but_the_system_ones_is_hidden():
    # other checkouts of the course (solutions included) may lie anywhere outside the system
    # directories: /work, /opt, /srv, /home... are all covered; the interpreter is mounted back
    hidden = {str(p) for p in sandbox.default_hidden()}
    for entry in os.listdir("/"):
        path = os.path.join("/", entry)
        if os.path.isdir(path) and not os.path.islink(path) and path != "/tmp" and not sandbox._is_system_dir(path):
            assert path in hidden, path
    assert not hidden & {"/usr", "/etc", "/lib", "/proc", "/tmp"}


# ----------------------------------------------------------------------------
# Kernels forked from the preloaded zygote (autograder.sandbox.zygote)
# ----------------------------------------------------------------------------

FACTS = r"""
import json, os, random, signal, sys
preloaded = "torch" in sys.modules
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        kind = os.readlink(f"/proc/self/fd/{fd}").split(":")[0]
    except OSError:
        continue
    fds[kind] = fds.get(kind, 0) + 1
import numpy, torch, matplotlib
from matplotlib import font_manager, pyplot
rc = sorted((k, repr(v)) for k, v in matplotlib.rcParams.items() if k != "backend")
facts = {"preloaded": preloaded, "uid": os.getuid(), "cwd": os.path.basename(os.getcwd()), "argv": sys.argv[1:2],
         "sys.path": sys.path, "home": os.environ["HOME"], "user": os.environ.get("USER"),
         "jpy_parent": os.environ.get("JPY_PARENT_PID"), "ppid": os.getppid(), "pid": os.getpid(),
         "sigint": repr(signal.getsignal(signal.SIGINT)), "sigpipe": repr(signal.getsignal(signal.SIGPIPE)),
         "fd_kinds": sorted(fds), "torch_threads": torch.get_num_threads(), "backend": matplotlib.get_backend(),
         "torch_seed": torch.initial_seed(), "random": random.random(), "numpy": float(numpy.random.rand()),
         "affinity": sorted(os.sched_getaffinity(0)), "session_user": get_ipython().kernel.session.username,
         "modules_missing": [m for m in ("ipykernel.kernelapp", "IPython") if m not in sys.modules],
         "mpl_dirs": [matplotlib.get_configdir(), matplotlib.get_cachedir(), os.environ.get("MPLCONFIGDIR")],
         "rc": __import__("hashlib").sha256(repr(rc).encode()).hexdigest(), "fonts": len(font_manager.fontManager.ttflist),
         "mpl_backend_env": os.environ.get("MPLBACKEND")}
pyplot.plot([0, 1], [1, 0])
pyplot.show()
print(json.dumps(facts))
"""


@contextlib.asynccontextmanager
async def _sandboxed_kernel(cwd, timeout: float = 120):
    """A started SandboxedKernelManager (policy from the environment) and its ready client."""
    km = sandbox.SandboxedKernelManager(kernel_name="python3")
    await km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=timeout)
        yield km, kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()


def _kernel_facts(cwd, monkeypatch, preload: bool) -> tuple[dict, dict]:
    """What FACTS prints in a sandboxed kernel, and the launcher's report."""
    monkeypatch.setenv("AUTOGRADER_SANDBOX_PRELOAD", "1" if preload else "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    async def scenario():
        out = []
        async with _sandboxed_kernel(cwd) as (km, kc):
            reply = await kc.execute_interactive(FACTS, timeout=60, output_hook=out.append)
            assert reply["content"]["status"] == "ok", reply["content"]
            report = km.active_protections()
        text = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
        facts = json.loads(text.strip().splitlines()[-1])
        facts["figure_outputs"] = sorted(k for m in out if m["msg_type"] == "display_data" for k in m["content"]["data"])
        return facts, report

    return asyncio.run(scenario())


def test_preloaded_kernel_looks_like_an_executed_one(tmp_path, probed, monkeypatch):
    """A kernel forked from the zygote finds torch already imported, and otherwise what a kernel the
    launcher executes finds: the same user, sandbox, environment, signal dispositions, descriptors,
    thread count, plotting backend; and fresh random generators (two forked kernels differ)."""
    executed, report_executed = _kernel_facts(tmp_path, monkeypatch, preload=False)
    forked, report_forked = _kernel_facts(tmp_path, monkeypatch, preload=True)
    forked2, _ = _kernel_facts(tmp_path, monkeypatch, preload=True)
    assert not executed["preloaded"] and forked["preloaded"] and forked2["preloaded"]
    assert report_forked.pop("forked") and not report_executed.pop("forked")
    assert report_forked["protections"] == report_executed["protections"]
    assert report_forked["limits"] == report_executed["limits"]
    same = ("uid", "cwd", "argv", "user", "jpy_parent", "sigint", "sigpipe", "torch_threads", "backend",
            "affinity", "session_user", "modules_missing", "rc", "fonts", "mpl_backend_env", "figure_outputs")
    assert {k: forked[k] for k in same} == {k: executed[k] for k in same}
    assert forked["torch_threads"] == 1  # OMP_NUM_THREADS
    # the sandbox's HOME, and no path of the zygote's: the same import path
    assert forked["sys.path"] == executed["sys.path"]
    assert os.path.basename(forked["home"]) == os.path.basename(executed["home"])
    # matplotlib, imported by the zygote: this kernel's configuration and cache directories (its HOME's)
    assert [os.path.relpath(p, forked["home"]) for p in forked["mpl_dirs"]] == \
        [os.path.relpath(p, executed["home"]) for p in executed["mpl_dirs"]] == [".config/matplotlib"] * 3
    # the same kinds of descriptors (the counts of sockets and pipes vary with ZeroMQ's threads)
    assert forked["fd_kinds"] == executed["fd_kinds"]
    if probed["pid_namespace"]:
        assert forked["pid"] == executed["pid"] == 2 and forked["ppid"] == executed["ppid"] == 1
    # fresh entropy in every kernel, as in a new interpreter
    for key in ("torch_seed", "random", "numpy"):
        assert forked[key] != forked2[key] and forked[key] != executed[key], key


def test_preload_falls_back_to_executing_the_kernel(tmp_path, probed, monkeypatch, capfd):
    """Where the zygote's socket directory is not private to the grader, the kernel is executed as
    before (and says so on stderr): slower, not weaker."""
    from autograder.sandbox import zygote

    shared = tmp_path / "tmp"
    (shared / f"autograder-zygote-{os.geteuid()}").mkdir(parents=True)
    (shared / f"autograder-zygote-{os.geteuid()}").chmod(0o777)  # anybody could plant a socket here
    monkeypatch.setenv("TMPDIR", str(shared))
    work = tmp_path / "work"
    work.mkdir()
    facts, report = _kernel_facts(work, monkeypatch, preload=True)
    assert not facts["preloaded"]
    assert "is not a private directory" in capfd.readouterr().err
    assert report["protections"] == {name: bool(probed.get(name)) for name in report["protections"]}
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    with pytest.raises(PermissionError, match="not a private directory"):
        zygote.socket_dir()


def test_zygote_refuses_when_its_imports_start_threads(tmp_path, probed, monkeypatch, capfd):
    """fork() copies only the calling thread: a zygote whose imports started a thread pool (numpy's
    BLAS, asked for 2 threads here) forks nothing, and each kernel is executed instead."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: the BLAS library starts no thread")
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    facts, _ = _kernel_facts(tmp_path, monkeypatch, preload=True)
    assert not facts["preloaded"]
    err = capfd.readouterr().err
    assert "the zygote refused (its imports started" in err, err
    log = next((private / f"autograder-zygote-{os.geteuid()}").glob("*.sock.log")).read_text()
    assert "answers every request with a refusal" in log


def test_zygote_exits_when_idle_and_kernels_survive_it(tmp_path, probed, monkeypatch):
    """The zygote leaves when idle (AUTOGRADER_SANDBOX_PRELOAD_IDLE), removing its socket; a kernel it
    forked does not depend on it: ``stop`` ends the zygote, and the running kernel still answers."""
    from autograder.sandbox import zygote

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setenv("AUTOGRADER_SANDBOX_PRELOAD", "1")
    monkeypatch.setenv("AUTOGRADER_SANDBOX_PRELOAD_IDLE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    directory = private / f"autograder-zygote-{os.geteuid()}"

    work = tmp_path / "work"
    work.mkdir()
    saved = tempfile.tempdir

    def zygote_pids():
        tempfile.tempdir = str(private)  # where zygote.running() looks
        try:
            return zygote.running()
        finally:
            tempfile.tempdir = saved

    async def scenario():
        async with _sandboxed_kernel(work) as (km, kc):
            pids = zygote_pids()
            assert len(pids) == 1 and len(list(directory.glob("*.sock"))) == 1
            for pid in pids:
                os.kill(pid, signal.SIGTERM)  # what `zygote.py stop` does
            reply = await kc.execute_interactive("import sys; print('torch' in sys.modules)", timeout=30)
            assert reply["content"]["status"] == "ok"
            assert await km.is_alive()
        # a second kernel starts a new zygote (the old socket is refused), which leaves when idle
        async with _sandboxed_kernel(work):
            pass

    asyncio.run(scenario())
    assert len(zygote_pids()) == 1
    deadline = time.monotonic() + 20
    while zygote_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not zygote_pids(), "the zygote did not exit when idle"
    assert not list(directory.glob("*.sock"))
    assert "idle for 2 s" in next(directory.glob("*.sock.log")).read_text()
