r"""Grading kernels forked from a process that has already imported torch and ipykernel.

A fresh grading kernel spends about 3 s on one core importing what every lab needs before
its first cell: Python and ipykernel (0.2 s), torch (1.3 s), matplotlib's pyplot (0.4 s),
``torch._dynamo`` with sympy (the first optimizer, 1.2 s), and in Labs 1 and 2 ``scipy.stats``
(0.8 s). On a Lab 1 submission of 5 s that is most of the cost. This module
pays it once per machine and interpreter: a *zygote* process imports those modules, then waits
on a unix socket; each kernel is a ``fork()`` of it, which finds them already in memory.

The sandbox is unchanged: the forked child is the launcher of :mod:`autograder.sandbox.launcher`
(same code, same policy), which builds the namespaces, mounts, rlimits and drops to the
sandbox user exactly as it does before an ``exec``; only its last step differs, where it runs
``ipykernel_launcher`` in the process (``runpy``) instead of executing a new interpreter.
Nothing the zygote holds is secret: it has imported library code and nothing else (no
gradebook, no notebook, no test), and each kernel gets a copy-on-write copy of its memory that
no other kernel sees.

How a kernel starts (``wrap_command`` gives jupyter_client this client as the kernel's command
when :attr:`SandboxPolicy.preload` is on and the native backend is used)::

    jupyter_client --Popen--> client --unix socket (request, stdin/stdout/stderr)--> zygote
                                                                                        | fork
                                              messenger (setsid; relays signals, exit status)
                                                                                        | fork
                                              launcher (unshare, mounts, rlimits, PID 1...)
                                                                                        | ...
                                              kernel (sandbox user; ipykernel in the process)

- The client is the process jupyter_client knows: a signal sent to its process group
  (interrupt, terminate, kill) reaches the kernel's process group through the messenger
  (``SIGKILL``, which the client cannot catch, ends the client: the messenger sees the socket
  close and kills the kernel's process group, and with the PID namespace every process in it).
  The client exits the way the kernel's launcher did (exit code or signal). When the client's
  parent (jupyter_client's process) dies, the client exits within half a second and the
  messenger kills the kernel, as the launcher's own parent check does for an executed kernel.
- The zygote is started by the first client that finds none (under a lock; its output goes to
  ``<socket>.log``), in its own session, and exits after ``AUTOGRADER_SANDBOX_PRELOAD_IDLE``
  seconds (default 120) without a request. Its socket lies in a directory only its user may
  enter (``$TMPDIR/autograder-zygote-UID``), named after the interpreter, its ``PYTHONPATH``
  and the code of this module and of the launcher: a changed checkout starts a new zygote.
- Where no zygote can run (the preload fails, the socket directory is not private, the kernel
  is not ``python -m ipykernel_launcher`` of the same interpreter), the client executes the
  launcher as before: slower, never weaker.
- The child takes from the client what a kernel inherits from the process that starts it: the
  environment, working directory, umask, CPU affinity (the messenger too: a batch pinned to one
  core, :mod:`autograder.cores`, keeps its kernels there) and nice value (not its cgroup).
- The child undoes what a fresh interpreter would not have: environment, ``sys.argv``,
  ``sys.path[0]`` (the working directory, as ``python -m`` does), signal dispositions, torch's
  thread count (``OMP_NUM_THREADS``), the random generators of ``random`` and numpy (fresh
  entropy), and every file descriptor beyond 0-2. ``tests/test_sandbox.py`` compares what a
  kernel sees in both ways.

Command line (internal)::

    python -I zygote.py client --policy JSON [--report FILE] -- python -m ipykernel_launcher -f CONN
    python -s zygote.py serve --socket PATH [--idle SECONDS]
    python -I zygote.py stop  # ask every zygote of this user to exit now
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, NoReturn

if __package__:
    from autograder.sandbox import launcher as _L
else:  # run as a script: the launcher beside this file, standard library only
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_autograder_sandbox_launcher", os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py"))
    _L = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _L  # dataclasses looks the module up
    _spec.loader.exec_module(_L)

SCRIPT = os.path.abspath(__file__)
_PREFIX = "autograder.sandbox.zygote"

#: imported by the zygote before it serves (a module that fails to import is skipped, and named in its log)
#: ``ipykernel.kernelapp`` itself is left out: its class reads ``JPY_PARENT_PID`` when it is imported;
#: ``scipy.stats`` is what statistical tests import (0.8 s in each Lab 1 and Lab 2 kernel otherwise)
PRELOAD = ("numpy", "scipy.stats", "torch", "torch._dynamo", "torch.optim", "matplotlib", "matplotlib.pyplot", "IPython",
           "IPython.core.application",
           "IPython.core.profiledir", "IPython.core.shellapp", "zmq", "zmq.eventloop.zmqstream", "tornado.ioloop",
           "jupyter_client.connect", "jupyter_client.session", "jupyter_core.paths", "ipykernel.connect",
           "ipykernel.control", "ipykernel.heartbeat", "ipykernel.iostream", "ipykernel.ipkernel",
           "ipykernel.parentpoller", "ipykernel.shellchannel", "ipykernel.zmqshell")
#: modules that read the environment when they are imported: a kernel imports them afresh
_FRESH = ("ipykernel.kernelapp", "ipykernel_launcher")
IDLE_SECONDS = 120.0
START_TIMEOUT = 120.0  # a zygote importing torch on a loaded machine
#: what the zygote's imports depend on: a kernel with other values gets another zygote
_KEY_ENV = ("PYTHONPATH", "PYTHONHOME", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "GOTO_NUM_THREADS", "MATPLOTLIBRC", "SCIPY_ARRAY_API")
#: what ipykernel sets MPLBACKEND to when it is unset (ipykernel.kernelapp, before any cell runs)
_INLINE = "module://matplotlib_inline.backend_inline"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 16 << 20


def _log(text: str) -> None:
    print(f"{_PREFIX}: {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Where a zygote listens
# ----------------------------------------------------------------------------

def socket_dir() -> str:
    """``$TMPDIR/autograder-zygote-UID``, created 0700; refused unless it is a real directory of
    this user that nobody else may enter (:func:`autograder.sandbox.launcher.private_tmp_dir`)."""
    return _L.private_tmp_dir("zygote")


def _code_stamp() -> str:
    parts = []
    for path in (SCRIPT, _L.SCRIPT):
        st = os.stat(path)
        parts.append(f"{path}:{st.st_mtime_ns}:{st.st_size}")
    return ";".join(parts)


def socket_path(python: str, env: dict[str, str]) -> str:
    """The socket of the zygote for interpreter ``python`` started with environment ``env``."""
    key = json.dumps([python, PRELOAD, _code_stamp()] + [env.get(name, "") for name in _KEY_ENV])
    return os.path.join(socket_dir(), hashlib.sha256(key.encode()).hexdigest()[:16] + ".sock")


def _interpreter(cmd: list[str], env: dict[str, str]) -> str | None:
    """The interpreter of ``cmd`` when it is ``PYTHON -m ipykernel_launcher ...``, else None."""
    if len(cmd) < 3 or cmd[1:3] != ["-m", "ipykernel_launcher"]:
        return None
    exe = cmd[0] if "/" in cmd[0] else shutil.which(cmd[0], path=env.get("PATH"))
    return os.path.abspath(exe) if exe and os.access(exe, os.X_OK) else None


# ----------------------------------------------------------------------------
# The client (the process jupyter_client started)
# ----------------------------------------------------------------------------

def _address(path: str) -> tuple[str, int | None]:
    """``path`` as a unix socket address (at most 107 bytes): a long one through its directory's
    descriptor, ``/proc/self/fd/N/NAME`` (close N afterwards)."""
    if len(os.fsencode(path)) < 100:
        return path, None
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    address, fd = _address(path)
    try:
        s.connect(address)
        return s
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _start_zygote(python: str, path: str, env: dict[str, str]) -> subprocess.Popen:
    try:
        os.unlink(path)  # a zygote that died without removing it
    except FileNotFoundError:
        pass
    idle = env.get("AUTOGRADER_SANDBOX_PRELOAD_IDLE") or os.environ.get("AUTOGRADER_SANDBOX_PRELOAD_IDLE") \
        or str(IDLE_SECONDS)
    log = os.open(path + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        return subprocess.Popen([python, "-s", SCRIPT, "serve", "--socket", path, "--idle", idle], env=env,
                                cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                                start_new_session=True)
    finally:
        os.close(log)


def connect_or_start(python: str, env: dict[str, str], timeout: float = START_TIMEOUT) -> tuple[socket.socket | None, str]:
    """A connection to the zygote of ``python`` (started if there is none), or ``(None, why)``."""
    try:
        path = socket_path(python, env)
    except OSError as e:
        return None, f"no private directory for the zygote's socket: {e}"
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the zygote; a zygote exits only under this lock
        s = _connect(path)
        if s is not None:
            return s, ""
        proc = _start_zygote(python, path, env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = _connect(path)
            if s is not None:
                return s, ""
            if proc.poll() is not None:
                return None, f"the zygote exited with status {proc.returncode} (see {path}.log)"
            time.sleep(0.05)
        proc.kill()
        return None, f"the zygote did not listen within {timeout:.0f} s (see {path}.log)"


def _send_request(s: socket.socket, request: dict[str, Any]) -> None:
    data = json.dumps(request).encode()
    s.sendmsg([_HEADER.pack(len(data)), data],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])


def _exec_launcher(why: str, policy_json: str, report: str | None, cmd: list[str]) -> NoReturn:
    """Say ``why``, then become the launcher that executes ``cmd`` (what runs without a zygote)."""
    _log(why)
    args = [sys.executable, "-I", _L.SCRIPT, "exec", "--policy", policy_json]
    os.execv(sys.executable, args + (["--report", report] if report else []) + ["--", *cmd])


def client(policy_json: str, report: str | None, cmd: list[str]) -> NoReturn:
    """Have the zygote start ``cmd`` under ``policy_json``; relay signals; exit as its launcher did."""
    policy = _L.SandboxPolicy.from_json(policy_json)
    env = _L._clean_env(os.environ)
    env.update(policy.env)
    python = _interpreter(cmd, env)
    s, why = (None, "the command is not python -m ipykernel_launcher") if python is None else connect_or_start(python, env)
    if s is None:
        _exec_launcher(f"{why}: the kernel is started without it", policy_json, report, cmd)
    umask = os.umask(0o022)
    os.umask(umask)
    cwd = os.getcwd() if _L._cwd_exists() else "/"
    def forward(signum, frame):  # from now on: a signal for the kernel goes to the messenger
        try:
            s.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    for sig in _SIGNALS:
        signal.signal(sig, forward)
    buf = b""
    try:
        _send_request(s, {"policy": policy.to_dict(), "report": report, "cmd": cmd, "environ": dict(os.environ),
                          "cwd": cwd, "umask": umask, "affinity": sorted(os.sched_getaffinity(0)),
                          "nice": os.getpriority(os.PRIO_PROCESS, 0)})
    except OSError:
        pass  # a refusing zygote may close before reading: its answer is read below
    try:
        while b"\n" not in buf:  # "started PID" or "refused WHY"
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        pass
    first, _, buf = buf.partition(b"\n")
    if not first.startswith(b"started "):
        why = first.decode(errors="replace").partition(" ")[2] or "it closed the connection"
        _exec_launcher(f"the zygote refused ({why}): the kernel is started without it", policy_json, report, cmd)
    parent = os.getppid()
    while True:
        # the kernel manager died (a Dask worker's nbgrader process killed with it): so does the kernel,
        # as the launcher's own check does for an executed one: closing the socket makes the messenger kill it
        if os.getppid() != parent:
            _log("the kernel manager went away: stopping the kernel")
            os._exit(1)
        try:
            if not select.select([s], [], [], 0.5)[0]:
                continue
            chunk = s.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            _log("the zygote's messenger went away before the kernel ended")
            os._exit(1)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            word, _, value = line.decode().partition(" ")
            if word == "exit":
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                _L._mirror_status(int(value))


# ----------------------------------------------------------------------------
# The zygote
# ----------------------------------------------------------------------------

def _open_fds() -> list[int]:
    out = []
    for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2):
        try:
            os.fstat(fd)  # the descriptor listdir used is closed by now
        except OSError:
            continue
        out.append(fd)
    return out


def serve(path: str, idle: float) -> NoReturn:
    """Import :data:`PRELOAD`, listen on ``path``, fork a messenger per connection."""
    started = time.monotonic()
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(SCRIPT):
        del sys.path[0]  # this script's directory: the children put their working directory there
    # matplotlib reads its configuration when it is imported: here from an empty private directory,
    # as a kernel's (its sandbox HOME holds no matplotlibrc) and with no backend asked for; each
    # kernel then gets its own directories and backend (_run_kernel)
    mpl_dir = path + ".mpl"
    os.makedirs(mpl_dir, mode=0o700, exist_ok=True)
    # with the font list the launcher copies into each kernel's (else matplotlib rebuilds it: a second)
    source = _L._matplotlib_cache()
    if source is not None:
        for name, data in _L._font_lists(source).items():
            with open(os.path.join(mpl_dir, name), "wb") as f:
                f.write(data)
    os.environ["MPLCONFIGDIR"] = mpl_dir
    os.environ.pop("MPLBACKEND", None)
    failed = []
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001 -- a kernel imports it itself
            failed.append(f"{name} ({type(e).__name__}: {e})")
    tasks = os.listdir("/proc/self/task")
    refuse = ""
    if len(tasks) != 1:  # fork() copies only the calling thread: a thread pool would be broken in every child
        refuse = (f"its imports started {len(tasks) - 1} thread(s), numpy's BLAS pool most likely: set "
                  "OMP_NUM_THREADS=1 for the grader")
        _log(f"{refuse}; it answers every request with a refusal (the kernels are executed) until it is idle")
    # only the modules: no descriptor may leak into a kernel (the children close what is left anyway)
    leftover = _open_fds()
    _log(f"pid {os.getpid()}: preloaded {len(PRELOAD) - len(failed)} modules in {time.monotonic() - started:.2f} s"
         + (f"; failed: {', '.join(failed)}" if failed else "") + (f"; open descriptors {leftover}" if leftover else ""))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    tmp = f"{path}.{os.getpid()}"
    address, fd = _address(tmp)
    listener.bind(address)
    if fd is not None:
        os.close(fd)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.rename(tmp, path)  # clients never see a socket that is not listening yet
    with open(path + ".pid", "w") as f:
        f.write(f"{os.getpid()}\n")
    last = time.monotonic()
    served = 0
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap the messengers
                pass
        except ChildProcessError:
            pass
        ready, _, _ = select.select([listener], [], [], 1.0)
        if ready:
            conn, _ = listener.accept()
            if refuse:
                try:
                    conn.sendall(f"refused {refuse}\n".encode())
                except OSError:
                    pass
                conn.close()
                last = time.monotonic()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                _messenger(conn)
            conn.close()
            served += 1
            last = time.monotonic()
            continue
        if time.monotonic() - last < idle:
            continue
        with open(path + ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a client is connecting
            if select.select([listener], [], [], 0)[0]:
                continue  # one connected just before
            _remove(path)
            _log(f"idle for {idle:.0f} s after {served} kernel(s): exiting")
            os._exit(0)


def _remove(path: str) -> None:
    """Remove this zygote's socket and what lies beside it (not its log, nor its lock), unless the
    ``.pid`` file names another process (a zygote started since)."""
    try:
        with open(path + ".pid") as f:
            if f.read().strip() != str(os.getpid()):
                return
    except FileNotFoundError:
        pass
    for name in (path, path + ".pid"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    shutil.rmtree(path + ".mpl", ignore_errors=True)


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int], bytes]:
    """The request, the descriptors sent with it, and what the client sent after it (signals)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if len(data) < _HEADER.size:
        raise ValueError("short request")
    (size,) = _HEADER.unpack(data[:_HEADER.size])
    if size > _MAX_REQUEST:
        raise ValueError(f"request of {size} bytes")
    body = data[_HEADER.size:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body[:size]), list(fds), body[size:]


def _messenger(conn: socket.socket) -> NoReturn:
    """One kernel: start its launcher (a child), relay the client's signals to its process group,
    report its exit status; kill it if the client goes away."""
    code = 1
    try:
        os.setsid()
        for sig in (*_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        request, fds, buf = _read_request(conn)
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} descriptors sent, 3 expected")
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        try:  # the kernel's CPUs (autograder.cores pins a batch to one) from its start: not the zygote's
            os.sched_setaffinity(0, request["affinity"])
        except (OSError, KeyError, TypeError, ValueError):
            pass  # _launch warns
        child = os.fork()
        if child == 0:
            conn.close()
            os.setpgid(0, 0)
            _launch(request)
        try:
            os.setpgid(child, child)
        except OSError:
            pass
        conn.sendall(f"started {child}\n".encode())
        pidfd = os.pidfd_open(child)
        while True:
            while b"\n" in buf:  # a signal the client got: to the kernel's process group
                line, buf = buf.split(b"\n", 1)
                word, _, value = line.decode().partition(" ")
                if word == "signal" and value.isdigit() and int(value) in {int(s) for s in _SIGNALS}:
                    try:
                        os.killpg(child, int(value))
                    except OSError:
                        pass
            ready, _, _ = select.select([conn, pidfd], [], [])
            if pidfd in ready:
                _, status = os.waitpid(child, 0)
                conn.sendall(f"exit {status}\n".encode())
                code = 0
                break
            chunk = conn.recv(4096)
            if not chunk:  # the client died (SIGKILL): so does the kernel
                try:
                    os.killpg(child, signal.SIGKILL)
                except OSError:
                    pass
                os.waitpid(child, 0)
                break
            buf += chunk
    except BaseException as e:  # noqa: BLE001
        _log(f"messenger: {type(e).__name__}: {e}")
    os._exit(code)


def _launch(request: dict[str, Any]) -> NoReturn:
    """In the child: become the launcher of ``request`` as if it had been executed."""
    try:
        os.environ.clear()
        os.environ.update(request["environ"])
        if "JPY_PARENT_PID" in os.environ:  # ipykernel watches its parent: here the messenger
            os.environ["JPY_PARENT_PID"] = str(os.getppid())  # (the launcher sets 1 with a PID namespace)
        os.umask(int(request["umask"]))
        # what the kernel would have inherited from the client rather than from the zygote
        try:
            os.sched_setaffinity(0, request["affinity"])
            os.setpriority(os.PRIO_PROCESS, 0, int(request["nice"]))
        except OSError as e:  # a CPU gone since, a nice value only root may lower: not a reason to fail
            _log(f"warning: the kernel keeps the zygote's CPU affinity or priority ({e})")
        try:
            os.chdir(request["cwd"])
        except OSError:
            os.chdir("/")
        policy = _L.SandboxPolicy.from_dict(request["policy"])
        _L._RUN_IN_PROCESS = _run_kernel
        _L.launch(policy, list(request["cmd"]), request.get("report"))
    except SystemExit as e:
        os._exit(e.code if isinstance(e.code, int) else 1)
    except BaseException as e:  # noqa: BLE001
        _log(f"launcher: {type(e).__name__}: {e}")
        os._exit(126)
    os._exit(126)


def _set_trait_default(cls: type, name: str, value: Any) -> None:
    """Make ``value`` the default of trait ``name`` for instances of ``cls`` created from now on."""
    cls.class_traits()[name].default_value = value
    for klass in cls.mro():  # traitlets copies immutable defaults into a per-class table
        table = klass.__dict__.get("_static_immutable_initial_values")
        if table is not None and name in table:
            table[name] = value


def _run_kernel(launch: Any) -> None:
    """The launcher's last step, in the kernel's own process (sandbox user, working directory and
    umask set): run ``ipykernel_launcher`` here instead of executing it. Returns (and the launcher
    executes the command) when the command is not the kernel of this interpreter."""
    cmd = launch.cmd
    if _interpreter(cmd, launch.env) != sys.executable:
        return
    for fd in _open_fds():  # what an exec would have closed (close-on-exec) or the zygote held
        try:
            os.close(fd)
        except OSError:
            pass
    os.environ.clear()
    os.environ.update(launch.env)
    for name in list(sys.modules):
        if name.split(".", 1)[0] in _FRESH or name in _FRESH:
            del sys.modules[name]
    mpl = sys.modules.get("matplotlib")
    if mpl is not None:  # what `import matplotlib` reads from the environment, read again for this kernel
        for name, fmt in (("get_configdir", "CONFIGDIR=%s"), ("get_cachedir", "CACHEDIR=%s")):
            setattr(mpl, name, mpl._logged_cached(fmt)(getattr(mpl, name).__wrapped__))
        tex = sys.modules.get("matplotlib.texmanager")
        if tex is not None:
            tex.TexManager._cache_dir = os.path.join(mpl.get_cachedir(), "tex.cache")
        if not os.environ.get("MPLBACKEND"):  # ipykernel sets it so before the first cell
            os.environ["MPLBACKEND"] = _INLINE
        mpl.rcParams["backend"] = os.environ["MPLBACKEND"]
    session = sys.modules.get("jupyter_client.session")
    if session is not None:  # its username is the USER seen at import (the zygote's)
        _set_trait_default(session.Session, "username", os.environ.get("USER", "username"))
    sys.argv = [cmd[0], *cmd[3:]]  # runpy sets argv[0] to the module's file
    sys.path.insert(0, os.getcwd())  # as python -m does
    tempfile.tempdir = None
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a fresh interpreter's dispositions
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    torch = sys.modules.get("torch")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None:
        torch.seed()  # a fresh interpreter seeds torch's generator from the system's entropy
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # fresh entropy, as a new interpreter has (random reseeds itself after fork)
    import atexit
    import runpy

    code: Any = 0
    try:
        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def running() -> list[int]:
    """The pids of this user's zygotes (from the ``.pid`` file beside each socket, checked against the
    process's command line: the kernels it forked share that command line)."""
    try:
        directory = socket_dir()
    except OSError:
        return []
    pids = []
    for name in os.listdir(directory):
        if not name.endswith(".sock.pid"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if SCRIPT.encode() in argv and os.fsencode(os.path.join(directory, name[:-4])) in argv:
            pids.append(pid)
    return pids


def stop_all() -> int:
    """Ask every zygote of this user to exit now (``SIGTERM``; the kernels it forked go on); the number asked."""
    n = 0
    for pid in running():
        try:
            os.kill(pid, signal.SIGTERM)
            n += 1
        except OSError:
            pass
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zygote.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("client")
    c.add_argument("--policy", required=True)
    c.add_argument("--report", default=None)
    c.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("serve")
    s.add_argument("--socket", required=True)
    s.add_argument("--idle", type=float, default=IDLE_SECONDS)
    sub.add_parser("stop")
    args = parser.parse_args(argv)
    if args.command == "client":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            _L._die("no command given")
        client(args.policy, args.report, cmd)
    if args.command == "serve":
        def leave(signum, frame):
            _remove(args.socket)
            _log(f"stopped (signal {signum})")
            os._exit(0)

        signal.signal(signal.SIGTERM, leave)
        serve(args.socket, args.idle)
    if args.command == "stop":
        print(f"asked {stop_all()} zygote(s) to exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
