r"""The bubblewrap backend of :mod:`autograder.sandbox`: the same :class:`SandboxPolicy`,
enforced by ``bwrap`` (bubblewrap, the sandbox Flatpak uses; Debian/Ubuntu package
``bubblewrap``) instead of the native launcher's own namespace and mount code.

``bwrap`` needs no root: it builds the kernel's namespaces inside an unprivileged user
namespace, so a cluster's machines can grade without giving the grader root. The policy is
the native launcher's, read the same way (``SandboxPolicy``, ``AUTOGRADER_SANDBOX*``), and
its paths are planned by the native launcher's own code (symlinks resolved, in order of
depth, so that a kept path may lie inside a hidden one); only the mechanism differs.

Choosing it
-----------
``SandboxPolicy.backend`` (``AUTOGRADER_SANDBOX_BACKEND``, or
``SandboxedKernelManager.sandbox_backend``): ``native``, ``bwrap`` or ``auto`` (the default:
the native launcher when the grader is root with CAP_SYS_ADMIN, else bubblewrap when
``bwrap`` is on PATH and ``bwrap --unshare-user --ro-bind / / true`` works, else the native
launcher, which then keeps only the rlimits). ``python -m autograder.sandbox probe`` says which
is used and what each gives.

How a kernel starts
-------------------
:func:`wrap_command` gives ``python -I bwrap.py exec --bwrap BWRAP --policy JSON [--report FILE]
-- KERNEL``. This file, run as a script (standard library only, as the native launcher is),

1. plans the mounts on the host's view (the native ``_plan``) and, when it runs as root,
   hands the writable directories to the sandbox user as the native launcher does;
2. starts ``bwrap`` with the command line of :func:`bwrap_argv` and stays as its parent
   (the *supervisor*): it forwards interrupts (below), kills the sandbox when it is
   terminated or when the kernel manager dies, writes the report and mirrors the exit status;
3. inside the sandbox, a tiny prelude (``python -I -S -c PRELUDE``) sets the rlimits
   (``RLIMIT_DATA`` or ``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``,
   ``RLIMIT_CORE`` 0: bwrap has no option for them), drops to the sandbox user where bwrap
   ran as root, makes the private HOME, tells the supervisor what it did, resets the
   signals and executes the kernel.

The bwrap command line: ``--unshare-ipc --unshare-pid --unshare-uts --unshare-cgroup-try``,
``--unshare-net`` unless ``policy.network``, ``--die-with-parent --new-session``,
``--ro-bind / /`` (the whole root filesystem read-only), ``--dev /dev`` (plus the NVIDIA
devices, for CUDA), ``--proc /proc`` (with the PID namespace), then in order of depth:
each hidden directory an empty ``--tmpfs`` (made read-only by ``--remount-ro`` once the
kept paths inside it are mounted), each hidden file ``--ro-bind /dev/null``, each scratch
directory a private ``--size``-limited ``--tmpfs`` (mode 1777), each read-only path
``--ro-bind``, each writable one ``--bind``; ``--chdir`` (as root, the prelude enters the
working directory once it is the sandbox user), ``--clearenv`` and ``--setenv`` for the
environment the native launcher gives (credentials removed, HOME, TMPDIR, IPython,
matplotlib and XDG directories in the private temp dir).

Two modes
---------
*user namespace* (the grader is not root with CAP_SYS_ADMIN): ``--unshare-user --uid 65534
--gid 65534`` (the policy's user) and ``--disable-userns``. The kernel is ``nobody``, with no
capability, inside a user namespace that maps only that uid -- to the grader's own uid on
the host.

*as root* (the grader is root with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_CHOWN,
and the backend was asked for): bwrap runs without a user namespace (``--cap-drop ALL``,
keeping CAP_SETUID and CAP_SETGID for the prelude), and the prelude becomes the real
``nobody`` (``setgroups([])``, ``setgid``, ``setuid``; bwrap sets ``no_new_privs``) as the
native launcher does. With ``--unshare-user`` instead, uid 65534 in the sandbox would be uid
0 on the host -- the owner of every root file it can see (``/etc/shadow`` is readable that
way) and exempt from ``RLIMIT_NPROC``.

Interrupts, shutdown, killing
-----------------------------
jupyter_client interrupts a kernel with ``SIGINT`` to the launcher's process group and
kills it with ``SIGKILL`` to that group. With ``--new-session`` the sandbox's init (PID 1
of the kernel's PID namespace) leads a new session and process group, which holds the
kernel: the group's interrupts would not reach it. So bwrap and its init ignore ``SIGINT``,
and the supervisor, which gets it with the group, sends it on to the init's process group
(found with ``--info-fd``), and to the kernel itself if it left that group. ``SIGTERM`` and
``SIGHUP`` make the supervisor kill bwrap; ``SIGKILL`` to the group kills the supervisor and
bwrap, and ``--die-with-parent`` then kills the sandbox's init, so its PID namespace ends
with every process started in it (including one that called ``setsid()``). The kernel is
reached over ZeroMQ ``ipc`` sockets in its runtime directory, a writable bind mount, as
with the native launcher.

What is weaker than the native launcher
---------------------------------------
- In the user namespace mode the kernel's uid *on the host* is the grader's, not ``nobody``:
  what keeps it from the grader's files is the mount view alone (everything read-only, the
  hidden directories covered), not file permissions. A file of the grader's that is visible
  (outside the hidden directories) is readable whatever its mode, and the kernel may write
  every file in its writable directories whatever its mode. Kernel keyrings of the grader's
  uid are not isolated. A grader that is uid 0 without CAP_SYS_ADMIN cannot use this mode
  (mapping host uid 0 needs CAP_SETFCAP; with it, the kernel would be uid 0 on the host and
  ``drop_privileges`` is reported as not active). In exchange, ``RLIMIT_NPROC`` there counts
  the processes of the sandbox's user namespace only, not every process of the user on the
  machine.
- bwrap bind mounts are recursive: a mount below a kept directory stays visible (read-only
  below a read-only path, with its own flags below a writable one), where the native launcher
  drops it.
- ``/dev`` is a minimal new one (``null``, ``zero``, ``random``, ``urandom``, ``tty``, ``pts``,
  ``shm``; the NVIDIA devices are bound back); the native launcher leaves the host's.
- Every path to keep must be reachable by bwrap: in the user namespace mode, by the grader's
  uid (the native launcher, as root, also mounts paths only root can traverse, such as an
  interpreter under ``/root``); one it cannot reach is left out, as a missing one is.
- A bwrap setup that fails (a path that cannot be mounted) stops the kernel from starting,
  in mode ``auto`` too, where the native launcher would go on with what works.
- The exit status is bwrap's: a kernel killed by signal N ends the launcher with that
  signal (bwrap's 128 + N is turned back into it), and a kernel that *exits* with a status
  above 128 is taken for one killed by a signal.
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NoReturn

if __package__:
    from autograder.sandbox import launcher as _L
else:  # run as a script (python -I bwrap.py exec ...): the launcher beside this file, standard library only
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_autograder_sandbox_launcher", os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py"))
    _L = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _L  # dataclasses looks the module up
    _spec.loader.exec_module(_L)

SandboxPolicy = _L.SandboxPolicy
PROTECTIONS = _L.PROTECTIONS
MiB = _L.MiB
GiB = _L.GiB
SCRIPT = os.path.abspath(__file__)
_PREFIX = _L._PREFIX

__all__ = ["bwrap_argv", "wrap_command", "find_bwrap", "usable", "privileged", "auto_backend", "backend_label",
           "probe_details", "probe", "PRELUDE"]

CAP_CHOWN, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 0, 6, 7, 21
PR_SET_CHILD_SUBREAPER = 36
#: size of the empty tmpfs that hides a directory (mount points for kept paths only)
HIDE_TMPFS_BYTES = 1 * MiB


# ----------------------------------------------------------------------------
# Is bwrap here, does it work, which mode
# ----------------------------------------------------------------------------

def find_bwrap() -> str | None:
    """The ``bwrap`` on PATH (None: not installed)."""
    return shutil.which("bwrap")


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _has_caps(*caps: int) -> bool:
    eff = _effective_caps()
    return all(eff >> c & 1 for c in caps)


def privileged() -> bool:
    """True when bwrap runs as root without a user namespace (the grader is root with
    CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_CHOWN) and the prelude becomes the real
    sandbox user; False: a user namespace maps the sandbox user to the grader's uid."""
    return os.geteuid() == 0 and _has_caps(CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_CHOWN)


@functools.lru_cache(maxsize=None)
def _usable(bwrap: str | None, as_root: bool) -> tuple[bool, str]:
    if not bwrap:
        return False, "bwrap not found on PATH (Debian/Ubuntu: apt-get install bubblewrap)"
    cmd = [bwrap, *([] if as_root else ["--unshare-user"]), "--ro-bind", "/", "/", "true"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{' '.join(cmd)}: {e}"
    if proc.returncode != 0:
        why = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return False, f"`{' '.join(cmd)}` failed: {why[0]}"
    return True, ""


def usable() -> tuple[bool, str]:
    """``(works, why not)``: bwrap is on PATH and starts a sandbox in the mode this process
    would use (``bwrap --unshare-user --ro-bind / / true``; as root, without
    ``--unshare-user``). Cached."""
    return _usable(find_bwrap(), privileged())


def auto_backend() -> str:
    """What backend ``auto`` means here: ``native`` as root with CAP_SYS_ADMIN, else ``bwrap``
    where it works, else ``native`` (which then applies only what works)."""
    if os.geteuid() == 0 and _has_caps(CAP_SYS_ADMIN):
        return "native"
    return "bwrap" if usable()[0] else "native"


@functools.lru_cache(maxsize=None)
def _bwrap_output(bwrap: str, option: str) -> str:
    try:
        proc = subprocess.run([bwrap, option], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        return proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _supports(bwrap: str, option: str) -> bool:
    return re.search(rf"^\s*{re.escape(option)}\b", _bwrap_output(bwrap, "--help"), re.M) is not None


def backend_label(backend: str) -> str:
    """``backend`` for humans: for bwrap, its mode, path and version."""
    if backend != "bwrap":
        return backend
    path = find_bwrap()
    if not path:
        return "bwrap (not found on PATH)"
    version = _bwrap_output(path, "--version").strip() or "unknown version"
    mode = "as root, the kernel drops to the sandbox user" if privileged() else "user namespace"
    return f"bwrap ({mode}; {path}, {version})"


# ----------------------------------------------------------------------------
# The prelude: inside the sandbox, before the kernel (python -I -S -c PRELUDE CONFIG CMD...)
# ----------------------------------------------------------------------------

PRELUDE = r"""
import json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
cmd = sys.argv[2:]
st = {"rlimits": [], "rlimits_failed": [], "dropped": False, "drop_skipped": None, "notes": []}
def die(msg):
    os.write(2, ("autograder.sandbox: error: " + msg + "\n").encode())
    os._exit(126)
for label, which, soft, hard in cfg["limits"]:
    try:
        old = resource.getrlimit(which)[1]
        if old != resource.RLIM_INFINITY:
            hard = min(hard, old)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
        st["rlimits"].append(label)
    except (OSError, ValueError) as e:
        st["rlimits_failed"].append("%s: %s" % (label, e))
try:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
except (OSError, ValueError):
    pass
if st["rlimits_failed"] and cfg["required"]:
    die("required protection rlimits failed: " + "; ".join(st["rlimits_failed"]))
if cfg["drop"]:
    uid, gid, exe = cfg["uid"], cfg["gid"], cmd[0]
    if "/" not in exe:
        for d in os.environ.get("PATH", "").split(os.pathsep):
            if d and os.path.isfile(os.path.join(d, exe)):
                exe = os.path.join(d, exe)
                break
    os.setegid(gid)
    os.seteuid(uid)
    try:
        problem = None
        if not os.access(exe, os.X_OK, effective_ids=True):
            problem = "user %s cannot execute %s" % (cfg["user"], cmd[0])
        elif not os.access(os.path.realpath(exe), os.R_OK, effective_ids=True):
            problem = "user %s cannot read %s" % (cfg["user"], os.path.realpath(exe))
    finally:
        os.seteuid(0)
        os.setegid(0)
    if problem:
        if cfg["required"]:
            die("required protection drop_privileges failed: " + problem)
        st["drop_skipped"] = problem
    else:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
            die("privileges were not dropped")
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            die("root could be regained after dropping privileges")
        st["dropped"] = True
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapEff", "CapPrm", "NoNewPrivs"):
        status[key] = value.strip()
if status.get("NoNewPrivs") != "1":
    import ctypes
    if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:
        st["notes"].append("no_new_privs not set")
os.umask(0o022)
for d in cfg["dirs"]:
    try:
        os.makedirs(d, 0o700, exist_ok=True)
    except OSError as e:
        st["notes"].append("cannot make %s: %s" % (d, e.strerror or e))
if cfg.get("mpl_fd") is not None:
    try:
        fd = cfg["mpl_fd"]
        files = json.loads(os.pread(fd, os.fstat(fd).st_size, 0).decode("latin-1"))
        for name, text in files.items():
            with open(os.path.join(cfg["mplconfigdir"], os.path.basename(name)), "wb") as f:
                f.write(text.encode("latin-1"))
    except (OSError, ValueError) as e:
        st["notes"].append("matplotlib cache not copied: %s" % e)
st.update(uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(), pid=os.getpid(), caps=status.get("CapEff"),
          groups=os.getgroups())
if cfg.get("status_fd") is not None:
    try:
        os.write(cfg["status_fd"], (json.dumps(st) + "\n").encode())
    except OSError:
        pass
for fd in cfg.get("close", []):
    try:
        os.close(fd)
    except OSError:
        pass
for s in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGPIPE", "SIGXFSZ", "SIGUSR1", "SIGUSR2", "SIGCHLD"):
    signal.signal(getattr(signal, s), signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
try:
    os.chdir(cfg["cwd"])
except OSError:
    try:
        os.chdir(cfg["home"])
    except OSError:
        os.chdir("/")
os.environ["PWD"] = os.getcwd()
os.umask(cfg["umask"])
try:
    os.execvp(cmd[0], cmd)
except OSError as e:
    os.write(2, ("autograder.sandbox: cannot execute %s: %s\n" % (cmd[0], e)).encode())
    os._exit(127)
"""


# ----------------------------------------------------------------------------
# The bwrap command line
# ----------------------------------------------------------------------------

@dataclass
class _Spec:
    """A bwrap launch: its command line and what the report says about it."""

    argv: list[str]
    counts: dict[str, int]
    home: str
    tmpdir: str
    privileged: bool
    uid: int | None = None
    gid: int | None = None
    user_name: str | None = None


def _deepest(path: str, plan: list[tuple[str, str]]) -> str | None:
    """The kind of the deepest entry of ``plan`` (shallow first) that holds ``path``."""
    kind = None
    for p, k in plan:
        if _L._within(path, p):
            kind = k
    return kind


def _visible(path: str, plan: list[tuple[str, str]]) -> bool:
    """Is ``path`` (resolved) the host's in the sandbox: under no hidden or scratch entry,
    or under a kept one deeper than those?"""
    return _deepest(path, plan) in (None, "ro", "rw")


class _Quiet:
    def note(self, text: str) -> None:
        pass


def _interpreter_paths(python: str) -> list[str]:
    """What the prelude's interpreter needs: its binary's directory and its standard library."""
    import sysconfig

    real = os.path.realpath(python)
    out = [os.path.dirname(real), os.path.realpath(sys.base_prefix)]
    for key in ("stdlib", "platstdlib"):
        try:
            out.append(os.path.realpath(sysconfig.get_paths()[key]))
        except KeyError:
            pass
    return [p for p in dict.fromkeys(out) if os.path.exists(p)]


def _make_spec(run: Any, cwd: str, *, bwrap: str, privileged_mode: bool, python: str,
               fds: Mapping[str, int]) -> _Spec:
    policy = run.policy
    plan = _L._plan(policy, run)
    # the prelude runs the grader's interpreter with its standard library: keep them visible
    extra_ro = [p for p in _interpreter_paths(python) if not _visible(p, plan)]
    if extra_ro:
        policy = SandboxPolicy(**{**policy.to_dict(), "read_only": [*policy.read_only, *map(Path, extra_ro)]})
        plan = _L._plan(policy, _Quiet())  # its notes were taken the first time
        run.note(f"the interpreter is kept read-only for the prelude: {', '.join(extra_ro)}")

    uid = gid = user_name = None
    if policy.user:
        try:
            pw = pwd.getpwnam(policy.user)
            uid, gid, user_name = pw.pw_uid, pw.pw_gid, pw.pw_name
        except KeyError:
            run.fail("drop_privileges", f"no user {policy.user!r}")

    argv = [bwrap]
    if privileged_mode:
        argv += ["--cap-drop", "ALL"]
        if uid is not None:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # for the prelude's drop
    else:
        argv += ["--unshare-user"]
        if uid is not None:
            argv += ["--uid", str(uid), "--gid", str(gid)]
        if _supports(bwrap, "--disable-userns"):
            argv += ["--disable-userns"]
    argv += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if policy.pid_namespace:
        argv += ["--unshare-pid"]
    if not policy.network:
        argv += ["--unshare-net"]
    argv += ["--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev"]
    if policy.pid_namespace:  # a fresh /proc for the kernel's PID namespace (else the host's, read-only)
        argv += ["--proc", "/proc"]
    for dev in sorted(glob.glob("/dev/nvidia*")):  # CUDA (the native launcher keeps the host's /dev)
        argv += ["--dev-bind", dev, dev]

    sized = _supports(bwrap, "--size")
    perms = _supports(bwrap, "--perms")
    counts = {"hide": 0, "scratch": 0, "ro": 0, "sub": 0, "rw": 0}
    subs = _L.substitute_sources(policy)
    hidden_dirs: list[str] = []
    tmpfs_roots: list[str] = []
    made: set[str] = set()
    for i, (path, kind) in enumerate(plan):
        # a mount point inside one of our tmpfs: its parents made 0755 (bwrap would make them 0700)
        enclosing = [(p, k) for p, k in plan[:i] if _L._within(path, p)]
        if enclosing and enclosing[-1][0] in tmpfs_roots and perms:
            parts = Path(path).relative_to(enclosing[-1][0]).parts[:-1]
            for j in range(len(parts)):
                parent = os.path.join(enclosing[-1][0], *parts[:j + 1])
                if parent not in made:
                    argv += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
        if kind == "hide" and os.path.isdir(path):
            argv += (["--size", str(HIDE_TMPFS_BYTES)] if sized else []) + (["--perms", "0755"] if perms else [])
            argv += ["--tmpfs", path]
            hidden_dirs.append(path)
            tmpfs_roots.append(path)
        elif kind == "hide":
            argv += ["--ro-bind", "/dev/null", path]
        elif kind == "scratch":
            argv += (["--size", str(policy.scratch_bytes)] if sized else []) + (["--perms", "1777"] if perms else [])
            argv += ["--tmpfs", path]
            tmpfs_roots.append(path)
        elif kind == "ro":
            argv += ["--ro-bind", path, path]
        elif kind == "sub":
            argv += ["--ro-bind", subs[path], path]
        else:
            argv += ["--bind", path, path]
        counts[kind] += 1

    # TMPDIR and HOME: the native launcher's choices
    tmpdir = _L._choose_tmpdir([p for p, k in plan if k == "scratch"])
    home = _L._choose_home(policy, tmpdir)
    if home is None:  # no scratch, no policy.home, no writable directory: a fresh one, left behind
        home = tempfile.mkdtemp(prefix="autograder-sandbox-home-")
    if tmpdir is None:  # HOME lies on the host: made here, and bound writable unless it already is
        os.makedirs(home, mode=0o700, exist_ok=True)
        if privileged_mode and uid is not None:
            os.chown(home, uid, gid)
        if _deepest(home, plan) != "rw":
            argv += ["--bind", home, home]
    for path in hidden_dirs:  # the mount points inside are made: now the hiding tmpfs become read-only
        argv += ["--remount-ro", path]

    tmp = tmpdir or os.path.join(home, "tmp")
    env = dict(run.env)  # the grader's, credentials removed, plus policy.env
    env.update({var: os.path.join(home, rel) for var, rel in _L._HOME_SUBDIRS.items()})
    env.update(HOME=home, TMPDIR=tmp)
    if uid is not None:
        env.update(USER=user_name, LOGNAME=user_name)
    if policy.pid_namespace and "JPY_PARENT_PID" in env:
        env["JPY_PARENT_PID"] = "1"  # the kernel's parent is the namespace's init: ipykernel's check off
    visible_cwd = _visible(cwd, plan) and os.path.isdir(cwd)
    env["PWD"] = cwd if visible_cwd else home
    if visible_cwd and not (privileged_mode and uid is not None):  # as root: the prelude enters it once it is
        argv += ["--chdir", cwd]                                      # the sandbox user (it may own it, mode 0700)
    argv += ["--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    if fds.get("info") is not None:
        argv += ["--info-fd", str(fds["info"])]

    config = {
        "limits": [[label, which, soft, hard] for label, which, soft, hard in _L._wanted_rlimits(policy)],
        "drop": bool(privileged_mode and uid is not None), "uid": uid, "gid": gid, "user": user_name,
        "home": home, "cwd": cwd, "umask": run.umask, "required": run.required,
        "dirs": [home, *(os.path.join(home, rel) for rel in _L._HOME_SUBDIRS.values()), tmp],
        "mplconfigdir": os.path.join(home, _L._HOME_SUBDIRS["MPLCONFIGDIR"]),
        "mpl_fd": fds.get("mpl"), "status_fd": fds.get("status"),
        "close": [fd for fd in (fds.get("info"), fds.get("status"), fds.get("mpl")) if fd is not None],
    }
    argv += ["--", python, "-I", "-S", "-c", PRELUDE, json.dumps(config), *run.cmd]
    return _Spec(argv, counts, home, tmp, privileged_mode, uid, gid, user_name)


def _new_launch(policy: SandboxPolicy, cmd: list[str], cwd: str | None = None) -> Any:
    run = _L._Launch(policy, list(cmd))
    if cwd is not None:
        run.cwd = os.path.realpath(cwd)
    return run


def bwrap_argv(policy: SandboxPolicy, cmd: list[str], cwd: str | os.PathLike, *, bwrap: str | None = None,
               privileged_mode: bool | None = None, python: str | None = None,
               fds: Mapping[str, int] | None = None) -> list[str]:
    """The bwrap command line that runs ``cmd`` in ``cwd`` under ``policy``, the rlimits set by
    the prelude (see the module docstring). ``privileged_mode`` (default :func:`privileged`):
    bwrap runs as root without a user namespace and the prelude drops to the policy's user;
    else ``--unshare-user --uid UID --gid GID``. ``python``: the prelude's interpreter
    (default ``sys.executable``). ``fds``: ``info`` (bwrap's ``--info-fd``), ``status`` (where
    the prelude writes what it did, one JSON line) and ``mpl`` (a file with the matplotlib font
    cache), inherited by bwrap. Every path is resolved before use; HOME is made on the host
    only when the policy gives no scratch temp dir."""
    bw = bwrap or find_bwrap()
    if not bw:
        raise FileNotFoundError("bwrap not found on PATH (Debian/Ubuntu: apt-get install bubblewrap)")
    run = _new_launch(policy, cmd, os.fspath(cwd))
    run.umask = 0o022
    priv = privileged() if privileged_mode is None else privileged_mode
    spec = _make_spec(run, run.cwd, bwrap=bw, privileged_mode=priv, python=python or sys.executable, fds=fds or {})
    return spec.argv


def wrap_command(cmd: list[str], policy: SandboxPolicy, report: str | os.PathLike | None = None,
                 python: str | None = None, bwrap: str | None = None) -> list[str]:
    """``cmd`` run through this launcher, hence bwrap, under ``policy`` (see
    :func:`autograder.sandbox.wrap_command`, which calls it for the ``bwrap`` backend)."""
    bw = bwrap or find_bwrap()
    if not bw:
        raise FileNotFoundError("bwrap not found on PATH (Debian/Ubuntu: apt-get install bubblewrap)")
    out = [python or sys.executable, "-I", SCRIPT, "exec", "--bwrap", bw, "--policy", policy.to_json()]
    if report is not None:
        out += ["--report", os.fspath(report)]
    return out + ["--", *cmd]


# ----------------------------------------------------------------------------
# The launcher and supervisor (runs as a script: standard library only)
# ----------------------------------------------------------------------------

def _memfd(data: bytes) -> int | None:
    try:
        fd = os.memfd_create("autograder-sandbox-mpl", 0)
    except (AttributeError, OSError):
        return None
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _finish_report(run: Any, spec: _Spec, status: dict | None, failure: str | None) -> None:
    """Fill ``run.active``/``run.skipped`` from what bwrap and the prelude did."""
    policy = run.policy
    if status is None:
        for name in PROTECTIONS:
            run.skipped.setdefault(name, failure or "the sandbox did not start")
        return
    c = spec.counts
    run.active["mount_namespace"] = (f"bwrap: hidden {c['hide']}, scratch {c['scratch']}, "
                                     f"read-only {c['ro']}, substituted {c['sub']}, writable {c['rw']}")
    if not policy.network:
        run.active["network_namespace"] = "own empty network"
    if policy.pid_namespace:
        run.active["pid_namespace"] = "own /proc"
    if spec.uid is not None:
        inside = (status.get("uid"), status.get("euid"))
        if spec.privileged:
            if status.get("dropped") and inside == (spec.uid, spec.uid):
                run.active["drop_privileges"] = f"{spec.user_name}, uid {spec.uid}"
            else:
                run.skipped["drop_privileges"] = status.get("drop_skipped") or f"uid {inside} in the sandbox"
        elif os.getuid() == 0:
            run.skipped["drop_privileges"] = ("the user namespace maps the sandbox user to uid 0 on the host "
                                              "(run the grader unprivileged, or as root with CAP_SYS_ADMIN)")
        elif inside == (spec.uid, spec.uid) and int(status.get("caps") or "0", 16) == 0:
            run.active["drop_privileges"] = (f"{spec.user_name}, uid {spec.uid} in a user namespace "
                                             f"(uid {os.getuid()} on the host), no capabilities")
        else:
            run.skipped["drop_privileges"] = f"uid {inside}, capabilities {status.get('caps')} in the sandbox"
    if status.get("rlimits"):
        run.active["rlimits"] = ", ".join(status["rlimits"])
    if status.get("rlimits_failed"):
        run.skipped["rlimits"] = "; ".join(status["rlimits_failed"])
    run.notes += status.get("notes", [])


def _write_report(run: Any, spec: _Spec, path: str | None, init_pid: int | None) -> None:
    """Write what is active to ``path``, whole or not at all (the kernel manager reads it as soon
    as it exists)."""
    if not path:
        return
    data = {"active": run.active, "skipped": run.skipped, "notes": run.notes,
            "protections": {name: name in run.active for name in PROTECTIONS},
            "limits": run.policy.limits(), "user": spec.user_name, "launcher_pid": os.getpid(),
            "backend": "bwrap", "bwrap_mode": "root" if spec.privileged else "user namespace",
            "host_uid": spec.uid if spec.privileged and "drop_privileges" in run.active else os.getuid(),
            "init_pid": init_pid}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        print(f"{_PREFIX}: warning: cannot write the report {path}: {e}", file=sys.stderr, flush=True)


def _summary(run: Any, spec: _Spec) -> str:
    mode = "as root" if spec.privileged else "user namespace"
    return _L._summary(run) + f" | backend: bwrap ({mode})"


def launch(policy: SandboxPolicy, cmd: list[str], report: str | None = None, bwrap: str | None = None) -> NoReturn:
    """Start ``cmd`` in bwrap under ``policy`` and supervise it (the body of ``exec``)."""
    if not cmd:
        _L._die("no command given")
    run = _L._Launch(policy, list(cmd))
    if policy.mode == "off":
        os.execvp(cmd[0], cmd)
    run.umask = os.umask(0o022)
    bw = bwrap or find_bwrap()
    if not bw or not os.access(bw, os.X_OK):
        _L._die(f"bwrap not found ({bw or 'not on PATH'})")
    if report and not os.access(os.path.dirname(os.path.abspath(report)), os.W_OK):
        _L._die(f"cannot write the report {report}: its directory is not writable")
    priv = privileged()
    if policy.user and priv:  # hand the writable directories to the sandbox user, as the native launcher does
        try:
            pw = pwd.getpwnam(policy.user)
            run.uid, run.gid, run.user_name = pw.pw_uid, pw.pw_gid, pw.pw_name
        except KeyError:
            pass
        if run.uid is not None:
            for p in policy.writable:
                real = os.path.realpath(p)
                if os.path.isdir(real):
                    try:
                        _L._hand_over(real, run)
                    except OSError as e:
                        run.note(f"! cannot hand {real} to uid {run.uid}: {e.strerror or e}")
    if policy.user and not priv and os.getuid() == 0:
        run.fail("drop_privileges", "the user namespace would map the sandbox user to uid 0 on the host "
                 "(run the grader unprivileged, or as root with CAP_SYS_ADMIN)")

    info_r, info_w = os.pipe()
    status_r, status_w = os.pipe()
    mpl = _L._read_matplotlib_cache(policy)
    mpl_fd = _memfd(json.dumps({k: v.decode("latin-1") for k, v in mpl.items()}).encode("latin-1")) if mpl else None
    fds = {"info": info_w, "status": status_w, **({"mpl": mpl_fd} if mpl_fd is not None else {})}
    try:
        spec = _make_spec(run, run.cwd, bwrap=bw, privileged_mode=priv, python=os.path.realpath(sys.executable),
                          fds=fds)
    except OSError as e:
        _L._die(f"cannot prepare the sandbox: {e}")
    _supervise(run, spec, bw, fds, info_r, status_r, report)


def _supervise(run: Any, spec: _Spec, bwrap: str, fds: Mapping[str, int], info_r: int, status_r: int,
               report: str | None) -> NoReturn:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    state: dict[str, Any] = {"init": None, "term": None, "child": None}
    try:  # bwrap's orphans come to us: --die-with-parent does not cover a bwrap killed while it
        _L._prctl(PR_SET_CHILD_SUBREAPER, 1)  # sets up (its child then waits forever)
    except OSError:
        pass

    def kill_orphans() -> None:
        """SIGKILL to what bwrap left (the sandbox's init: its PID namespace ends), then reap it
        (for 5 s at most: what is left then is reaped by init once we exit)."""
        pending = _children(os.getpid())
        for pid in pending:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        pending.remove(pid)
                except ChildProcessError:
                    pending.remove(pid)
            if pending:
                time.sleep(0.01)

    def forward(signum, frame):  # the kernel is in the session and process group of the sandbox's init
        init = state["init"]
        if not init:
            return
        try:
            os.killpg(init, signum)
        except OSError:
            pass
        for kernel in _children(init):  # a kernel that left that process group still gets it
            try:
                if os.getpgid(kernel) != init:
                    os.kill(kernel, signum)
            except OSError:
                pass

    def on_term(signum, frame):
        state["term"] = state["term"] or signum
        if state["child"]:
            try:
                os.kill(state["child"], signal.SIGKILL)  # --die-with-parent: the sandbox goes with it
            except OSError:
                pass

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    child = os.fork()
    if child == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT, signal.SIGPIPE,
                        signal.SIGXFSZ, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # bwrap and its init: the interrupts are the kernel's
            for fd in (info_r, status_r, wake_r, wake_w):
                os.close(fd)
            for fd in fds.values():
                os.set_inheritable(fd, True)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execv(bwrap, spec.argv)
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"{_PREFIX}: cannot execute {bwrap}: {e}\n".encode())
        os._exit(127)
    state["child"] = child
    for fd in fds.values():
        os.close(fd)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGCHLD, lambda s, f: None)  # wakes the select below
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)

    parent = os.getppid()
    info_buf, status_buf = b"", b""
    status: dict | None = None
    reported = False
    open_fds = [info_r, status_r]
    while True:
        pid, wait_status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if os.getppid() != parent:  # the kernel manager died: so does the kernel
            on_term(signal.SIGTERM, None)
            parent = os.getppid()
        ready, _, _ = select.select([wake_r, *open_fds], [], [], 0.5)
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if info_r in ready:
            data = os.read(info_r, 4096)
            info_buf += data
            m = re.search(rb'"child-pid"\s*:\s*(\d+)', info_buf)
            if m and state["init"] is None:
                state["init"] = int(m.group(1))
            if not data:  # bwrap writes more than the pid: read to the end (a closed pipe would kill it)
                open_fds.remove(info_r)
                os.close(info_r)
        if status_r in ready:
            data = os.read(status_r, 65536)
            status_buf += data
            if b"\n" in status_buf or not data:
                try:
                    status = json.loads(status_buf.split(b"\n")[0])
                except ValueError:
                    status = None
                open_fds.remove(status_r)
                os.close(status_r)
                _finish_report(run, spec, status, "the prelude said nothing")
                print(_summary(run, spec), file=sys.stderr, flush=True)
                _write_report(run, spec, report, state["init"])
                reported = True
    if not reported:
        why = (f"bwrap ended before the kernel started (exit status "
               f"{os.waitstatus_to_exitcode(wait_status)}; its error is above)")
        _finish_report(run, spec, None, why)
        print(_summary(run, spec), file=sys.stderr, flush=True)
        _write_report(run, spec, report, state["init"])
    signal.set_wakeup_fd(-1)
    kill_orphans()  # normally none: the sandbox ended with the kernel
    if state["term"]:
        _L._mirror_status(state["term"])
    if os.WIFEXITED(wait_status):
        code = os.WEXITSTATUS(wait_status)
        if 128 < code < 128 + signal.NSIG:  # bwrap's exit status for a command killed by signal N
            _L._mirror_status(code - 128)
        os._exit(code)
    _L._mirror_status(wait_status)


# ----------------------------------------------------------------------------
# probe(): one real launch through this backend
# ----------------------------------------------------------------------------

_PROBE_CHECK = r"""
import json, os, resource, socket, sys
base, port = sys.argv[1], int(sys.argv[2])
out = {}
def attempt(key, fn):
    try:
        out[key] = ["ok", fn()]
    except Exception as e:
        out[key] = [type(e).__name__, str(e)]
attempt("hidden", lambda: sorted(os.listdir(os.path.join(base, "hidden"))))
attempt("kept", lambda: open(os.path.join(base, "hidden", "kept", "kept.txt")).read())
attempt("write_ro", lambda: open(os.path.join(base, "ro", "new.txt"), "w").write("x"))
attempt("write_rw", lambda: open(os.path.join(base, "rw", "new.txt"), "w").write("x"))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
out["pid"] = os.getpid()
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["ids"] = [os.getuid(), os.geteuid(), os.getgid()]
out["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
out["limits"] = {n: list(resource.getrlimit(getattr(resource, n))) for n in
                 ("RLIMIT_DATA", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE")}
print(json.dumps(out))
"""


def _probe_run(user: str) -> dict[str, tuple[bool, str]]:
    ok, why = usable()
    if not ok:
        return {name: (False, why) for name in PROTECTIONS}
    base = tempfile.mkdtemp(prefix="autograder-bwrap-probe-")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        os.chmod(base, 0o755)
        for d in ("hidden/kept", "ro", "rw"):
            os.makedirs(os.path.join(base, d), mode=0o755)
        Path(base, "hidden", "secret.txt").write_text("secret")
        Path(base, "hidden", "kept", "kept.txt").write_text("kept")
        os.chmod(os.path.join(base, "ro"), 0o777)  # only the mount may stop a write there
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        limits = {"memory_bytes": 2 * GiB, "cpu_seconds": 60, "file_size_bytes": 8 * MiB, "max_processes": 4096}
        policy = SandboxPolicy(hide=[*_L.default_hidden(), Path(base, "hidden")],  # as a kernel's: /root, /home...
                               read_only=[Path(base, "hidden", "kept"), Path(base, "ro"), *_L.default_read_only()],
                               writable=[Path(base, "rw")], user=user, network=False, mode="auto", backend="bwrap",
                               matplotlib_cache=None, env={}, **limits)
        report = os.path.join(base, "report.json")
        cmd = wrap_command([sys.executable, "-I", "-S", "-c", _PROBE_CHECK, base, str(listener.getsockname()[1])],
                           policy, report=report)
        try:
            proc = subprocess.run(cmd, cwd=os.path.join(base, "rw"), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return {name: (False, "the bwrap probe timed out") for name in PROTECTIONS}
        err = [x for x in (proc.stderr or "").strip().splitlines() if x.strip()]
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            with open(report) as f:
                rep = json.load(f)
        except (IndexError, ValueError, OSError):
            why = f"the bwrap probe failed (exit {proc.returncode}): {err[-1] if err else 'no output'}"
            return {name: (False, why) for name in PROTECTIONS}
        skipped = rep.get("skipped", {})
        result: dict[str, tuple[bool, str]] = {}

        def check(name: str, ok: bool, why: str) -> None:
            ok = bool(ok) and name in rep.get("active", {})
            result[name] = (ok, "" if ok else (skipped.get(name) or why))

        check("mount_namespace", out["hidden"] == ["ok", ["kept"]] and out["kept"] == ["ok", "kept"]
              and out["write_ro"][0] != "ok" and out["write_rw"][0] == "ok",
              f"hidden {out['hidden']}, kept {out['kept']}, read-only write {out['write_ro'][0]}, "
              f"writable write {out['write_rw'][0]}")
        check("network_namespace", out["connect"][0] != "ok", "the host's 127.0.0.1 is reachable")
        check("pid_namespace", out["pid"] <= 3 and len(out["pids"]) <= 3, f"pid {out['pid']}, /proc {out['pids'][:5]}")
        try:
            want = pwd.getpwnam(user).pw_uid
        except KeyError:
            want = -1
        check("drop_privileges", out["ids"][:2] == [want, want] and int(out["caps"], 16) == 0,
              f"uid {out['ids']}, capabilities {out['caps']}")
        expect = {"RLIMIT_DATA": [2 * GiB] * 2, "RLIMIT_CPU": [60, 65], "RLIMIT_FSIZE": [8 * MiB] * 2,
                  "RLIMIT_NPROC": [4096] * 2, "RLIMIT_CORE": [0, 0]}
        got = out["limits"]
        check("rlimits", all(got[k][0] <= v[0] and got[k][1] <= v[1] for k, v in expect.items()), f"limits {got}")
        return result
    finally:
        listener.close()
        shutil.rmtree(base, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _probe_cached(user: str) -> tuple[tuple[str, bool, str], ...]:
    return tuple((name, ok, why) for name, (ok, why) in _probe_run(user).items())


def probe_details(user: str = "nobody", refresh: bool = False) -> dict[str, tuple[bool, str]]:
    """``{protection: (works, why not)}`` with the bwrap backend, from one real launch of a
    checking script through it (cached per user; ``refresh`` tries again)."""
    if refresh:
        _probe_cached.cache_clear()
        _usable.cache_clear()
    return {name: (ok, why) for name, ok, why in _probe_cached(user)}


def probe(user: str = "nobody", refresh: bool = False) -> dict[str, bool]:
    """Which protections work with the bwrap backend: ``{protection: works}``."""
    return {name: ok for name, (ok, _) in probe_details(user, refresh).items()}


# ----------------------------------------------------------------------------
# Command line (as a script: python -I bwrap.py exec --bwrap BWRAP --policy JSON -- CMD ...)
# ----------------------------------------------------------------------------

def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bwrap.py", description="the bubblewrap backend of autograder.sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("exec", help="run a command in the sandbox, through bwrap")
    e.add_argument("--policy", default=None, help="policy as JSON text or a JSON file (default: from the environment)")
    e.add_argument("--report", default=None, help="write what was made active to this JSON file")
    e.add_argument("--bwrap", default=None, help="the bwrap program (default: on PATH)")
    e.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser("argv", help="print the bwrap command line for CMD in the current directory, as JSON").add_argument(
        "cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.command == "argv":
        print(json.dumps(bwrap_argv(SandboxPolicy.from_env(), cmd, os.getcwd()), indent=1))
        return 0
    try:
        policy = SandboxPolicy.from_json(args.policy) if args.policy else SandboxPolicy.from_env()
    except (OSError, ValueError) as err:
        _L._die(f"bad policy: {err}")
    launch(policy, cmd, args.report, args.bwrap)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
