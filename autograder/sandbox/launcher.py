r"""A sandbox for the Jupyter kernels that execute student submissions.

nbgrader runs every submission in a Jupyter kernel; without this module that kernel runs
as the grader, sees the whole machine (``solutions/``, the gradebook, the hidden tests,
the other students' work), can open network connections and may eat all memory or CPU.
This module confines such a kernel with plain Linux mechanisms that need no extra
package (bubblewrap is not required): a private mount namespace, a private network
namespace, a private PID namespace, an unprivileged user and resource limits.

Backends (bwrap backend): this launcher, which needs root (CAP_SYS_ADMIN), is the ``native``
backend. :mod:`autograder.sandbox.bwrap` enforces the same policy with bubblewrap
(``bwrap``), without root, through a user namespace; what it does differently is listed
there. ``SandboxPolicy.backend`` (``AUTOGRADER_SANDBOX_BACKEND``) chooses: ``auto`` (the
default) is this launcher as root with CAP_SYS_ADMIN, else bubblewrap where it works.

What is protected, and how
--------------------------
``mount_namespace``
    The kernel gets its own copy of the mount table (``unshare(CLONE_NEWNS)``, then ``/``
    made recursively private, so that nothing mounted there can propagate back to the
    host). In that private copy each :attr:`SandboxPolicy.hide` directory (the course
    root, the repository, the grader's ``HOME``, and every top-level directory that is not
    a system one: ``/root``, ``/home``, ``/opt``, ``/srv``, ``/mnt``, ``/work``..., where
    other checkouts of the course may lie) is covered by an empty read-only ``tmpfs``; a hidden *file* is covered by a read-only ``/dev/null``.
    Each :attr:`SandboxPolicy.scratch` directory (the temp dir, ``/dev/shm``,
    ``/var/tmp``, ``/run/lock``) is covered by a fresh, private, size-limited writable
    ``tmpfs`` -- so the temp dir is hidden too, and what the kernel writes there vanishes
    with it. Then the :attr:`~SandboxPolicy.read_only` paths (the interpreter, the
    virtualenv, the autograder, the course's library packages and data cache) are bind-mounted back read-only and the
    :attr:`~SandboxPolicy.writable` ones (the submission's own directory, the kernel's
    runtime directory with its connection file and sockets) read-write, at the same paths.
    Every path is resolved (symlinks included) before anything is mounted; the sources of
    the bind mounts are opened (``O_PATH``) *before* the hiding tmpfs are mounted, and all
    mounts are made in order of depth, so a path to keep may lie inside a hidden one
    (a ``.venv`` inside the hidden repository, a submission inside the hidden
    ``/tmp``) and a hidden path may lie inside one to keep. A missing mount point inside a
    hiding tmpfs is created there (never on the host). Bind mounts are not recursive: a
    mount below a kept directory disappears rather than becoming writable. The kernel's
    working directory is entered again after the mounts, so ``..`` from it walks the new
    view, not the covered one. Nothing of this is visible outside the kernel's namespace
    and nothing on the host is modified, with one exception: a writable directory (and
    the real sub-directories and singly-linked files in it) is handed to the sandbox user
    with ``chown`` when that user cannot write there (never a system or top-level
    directory, an ancestor of a hidden or kept path, a directory holding ``.git`` or
    ``nbgrader_config.py``, a symlink, or anything on another filesystem);
    :class:`SandboxedKernelManager` gives it back to its owner when the kernel is shut
    down (:func:`hand_back`). Unix sockets of local services (PostgreSQL, D-Bus, Docker)
    are hidden too, since a network namespace does not cover them.

``network_namespace``
    ``unshare(CLONE_NEWNET)``: the kernel has only its own loopback interface (brought
    up, so that a library binding ``127.0.0.1`` still works); no route leaves it, and the
    host's ``127.0.0.1`` services (a database, a Jupyter server, a web server) are
    unreachable. Because TCP on the host loopback is then unreachable too,
    :class:`SandboxedKernelManager` talks to the kernel over unix sockets (ZeroMQ
    transport ``ipc``) in a per-kernel runtime directory.

``pid_namespace``
    The kernel runs under a small init process (PID 1 of a new PID namespace, with a
    fresh ``/proc``): it sees no host process (no command lines, no ``/proc/PID/root``
    of another process of the same user), and when the kernel ends, is killed, or its
    manager kills the launcher, every process it started dies with it, even one that
    called ``setsid()`` to leave the process group. Used only with the mount namespace.

``drop_privileges``
    The kernel runs as an unprivileged user (``nobody``; ``setgroups([])``, ``setgid``,
    ``setuid``, and ``PR_SET_NO_NEW_PRIVS`` so that no set-uid program can give root
    back). Independently of the mounts, it cannot write anything that the user
    ``nobody`` may not write, and cannot signal or trace the grader's processes.

``rlimits``
    ``RLIMIT_DATA`` caps the memory (the default: ``RLIMIT_DATA`` counts the heap and
    every private writable mapping -- what numpy, torch and Python allocate -- but not
    address space that is merely reserved, which CUDA builds of torch reserve by the
    tens of GiB; ``RLIMIT_AS`` caps all address space and may be chosen with
    ``memory_rlimit="as"``); an allocation beyond the cap fails (``MemoryError`` in
    Python, a ``RuntimeError`` from torch's allocator) instead of taking the host down.
    ``RLIMIT_CPU`` ends a kernel that used too much CPU time (``SIGXCPU``, then ``SIGKILL``
    5 s later), ``RLIMIT_FSIZE`` bounds every file written, ``RLIMIT_NPROC`` bounds the
    processes and threads of the sandbox user (a fork bomb), ``RLIMIT_CORE`` is 0.

The environment passed to the kernel loses variables that look like credentials
(``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``AUTOGRADER_GRADEBOOK_URL``, ...); ``HOME``,
``TMPDIR``, ``IPYTHONDIR``, ``MPLCONFIGDIR`` and the ``XDG_*`` directories point into a
private writable directory, so IPython, matplotlib and torch work as usual.

What it cannot stop
-------------------
- Code that only uses what the policy leaves visible: the kernel can read everything
  outside the hidden directories that ``nobody`` may read (``/etc``, ``/usr``, the
  virtualenv, the course library's source, including its reference implementations).
- Kernel exploits: the namespaces are only as strong as the Linux kernel. Unprivileged
  user namespaces, if the host allows them, are not blocked (the mounts that hide
  directories are locked together in a nested namespace, so they cannot be undone there).
- CPU time is per process and memory per process: a kernel may start up to
  ``max_processes`` processes (threads count) that each get the limits. Time spent
  sleeping is not CPU time: wall-clock limits belong to the caller (nbclient's cell timeout).
- Memory of the scratch tmpfs is host memory (each is bounded by ``scratch_bytes``), and
  is not counted by the rlimits.
- ``RLIMIT_NPROC`` counts all processes of the sandbox user on the machine: another
  service running as ``nobody`` reduces the kernel's share.
- Without root (or ``CAP_SYS_ADMIN``) none of the namespaces nor the change of user is
  available; mode ``auto`` then keeps only the rlimits and says so. Without the mount
  namespace, the change of user is also skipped when the sandbox user cannot reach the
  interpreter (a Python under ``/root``).
- Files the kernel writes into its own directory (symlinks included) remain there for the
  grader to process: do not follow links out of a submission's directory as root.

Interface
---------
:func:`probe` (which protections work here), :func:`describe`, :class:`SandboxPolicy`
(``SandboxPolicy.from_env()`` reads ``AUTOGRADER_SANDBOX``, ``AUTOGRADER_SANDBOX_BACKEND``,
``AUTOGRADER_SANDBOX_MEMORY_MB``, ``AUTOGRADER_SANDBOX_CPU_SECONDS`` and a few more), :func:`wrap_command`,
:func:`check_required`, :func:`active_protections`, :func:`hand_back`,
:class:`SandboxedKernelManager` (a jupyter_client ``AsyncKernelManager``) and
:class:`SandboxedExecute` (nbgrader's ``Execute`` using it; :func:`sandboxed_execute` makes
the same from any subclass of ``Execute``). The classes are created on first access, so
that the launcher -- this file run as a script, once per kernel -- imports nothing but the
standard library (and starts in a few tens of milliseconds). An ipykernel kernel is not
executed but forked, with this launcher's code, from a process that has imported torch and
ipykernel (:mod:`autograder.sandbox.zygote`; ``SandboxPolicy.preload``,
``AUTOGRADER_SANDBOX_PRELOAD=0`` to turn it off).

Command line::

    python -m autograder.sandbox probe [--json] [--user USER] [--backend auto|native|bwrap]
    python -m autograder.sandbox policy            # the policy from the environment, as JSON
    python -m autograder.sandbox exec --policy FILE_OR_JSON [--report FILE] -- CMD ...
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import functools
import json
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NoReturn

__all__ = [
    "PROTECTIONS",
    "MODES",
    "SandboxPolicy",
    "SandboxUnavailable",
    "probe",
    "probe_details",
    "describe",
    "needed_protections",
    "missing_protections",
    "check_required",
    "active_protections",
    "wrap_command",
    "private_tmp_dir",
    "BACKENDS",
    "backend_name",
    "resolve_backend",
    "hand_back",
    "strip_links",
    "copy_plain",
    "remove_tree",
    "new_kernel_base",
    "walk_plain",
    "special_kind",
    "sandboxed_execute",
    "SandboxedKernelManager",
    "SandboxedExecute",
    "main",
]

#: the protections, in the order they are reported
PROTECTIONS = ("mount_namespace", "network_namespace", "pid_namespace", "drop_privileges", "rlimits")
#: the ones mode "required" insists on (the PID namespace is used when available)
REQUIRED = ("mount_namespace", "network_namespace", "drop_privileges", "rlimits")
MODES = ("auto", "required", "off")
#: bwrap backend: which program confines the kernel (auto: native as root with CAP_SYS_ADMIN, else
#: bubblewrap where it works, else native; see autograder.sandbox.bwrap)
BACKENDS = ("auto", "native", "bwrap")
MiB = 1 << 20
GiB = 1 << 30

SCRIPT = os.path.abspath(__file__)
_PREFIX = "autograder.sandbox"

#: directories that may never be hidden, covered by scratch, or handed to the sandbox user
_SYSTEM_DIRS = frozenset(
    ["/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
     "/run", "/sbin", "/sys", "/usr", "/var"]
)
#: environment variables never passed into the sandbox (credentials of the grader)
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|PRIVATE|AUTH|COOKIE", re.I)
_SECRET_ENV_NAMES = frozenset(
    ["AUTOGRADER_GRADEBOOK_URL", "DATABASE_URL", "PGPASSFILE", "SSH_AUTH_SOCK", "KRB5CCNAME",
     "GIT_ASKPASS", "SSH_ASKPASS", "DBUS_SESSION_BUS_ADDRESS"]
)
#: a writable directory holding one of these is never handed to the sandbox user
_NOT_A_SUBMISSION = (".git", "nbgrader_config.py", "gradebook.db", "pyproject.toml", "setup.py")
_HINTS = {
    "mount_namespace": "needs root or CAP_SYS_ADMIN (unshare(CLONE_NEWNS) and mount)",
    "network_namespace": "needs root or CAP_SYS_ADMIN (unshare(CLONE_NEWNET))",
    "pid_namespace": "needs root or CAP_SYS_ADMIN (unshare(CLONE_NEWPID))",
    "drop_privileges": "needs root and the sandbox user",
    "rlimits": "setrlimit failed",
}


class SandboxUnavailable(RuntimeError):
    """Mode ``required`` was asked for and a protection the policy needs does not work here."""


# ----------------------------------------------------------------------------
# libc
# ----------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _raise_errno(what: str) -> NoReturn:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        _raise_errno(f"unshare({flags:#x})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        _raise_errno(f"mount {fstype or 'bind'} {source!r} on {target}")


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        _raise_errno(f"prctl({option})")


def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (best effort)."""
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


# ----------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------

def _repo_root() -> Path | None:
    root = Path(SCRIPT).parents[2]  # autograder/sandbox/launcher.py: the checkout the autograder lies in
    return root if (root / ".git").exists() or (root / "nbgrader_config.py").is_file() else None


def _is_system_dir(path: str) -> bool:
    return os.path.realpath(path) in _SYSTEM_DIRS


#: unix sockets of local services (a network namespace does not cover those): hidden
_SERVICE_SOCKETS = ("/run/postgresql", "/var/run/postgresql", "/run/mysqld", "/var/run/mysqld", "/run/user",
                    "/run/docker.sock", "/var/run/docker.sock", "/run/dbus", "/var/run/dbus")


def _top_level_dirs() -> list[Path]:
    """The directories of ``/`` that are not system directories nor the temp dir (which gets a
    scratch tmpfs): ``/home``, ``/root``, ``/opt``, ``/srv``, ``/mnt``, ``/media``, ``/work``..."""
    try:
        entries = sorted(os.listdir("/"))
    except OSError:
        return []
    out = []
    for entry in entries:
        path = Path("/") / entry
        if path.is_dir() and not path.is_symlink() and not _is_system_dir(str(path)) and str(path) != "/tmp":
            out.append(path)
    return out


def default_hidden() -> list[Path]:
    """Paths hidden by default (those that exist): the repository (``solutions/``, ``tests/``),
    the current directory (nbgrader runs from the course root: the gradebook, every
    submission), the grader's home, every top-level directory that is not a system one
    (``/root``, ``/home``, ``/opt``, ``/work``...: other copies of the course may lie there;
    the interpreter and the virtualenv are mounted back read-only), nbgrader's exchange, and
    the unix sockets of local services (PostgreSQL, MySQL, Docker, D-Bus, ``/run/user``)."""
    out: list[Path] = []
    candidates = [_repo_root(), Path.cwd(), Path(os.path.expanduser("~")), *_top_level_dirs(),
                  Path("/srv/nbgrader/exchange"), *(Path(p) for p in _SERVICE_SOCKETS)]
    for p in candidates:
        if p is not None and p.exists() and not _is_system_dir(str(p)) and p not in out:
            out.append(p)
    return out


def default_scratch() -> list[Path]:
    """World-writable places that get a private empty tmpfs: the temp dir, ``/dev/shm``,
    ``/var/tmp``, ``/run/lock`` (those that exist)."""
    out: list[Path] = []
    for p in (tempfile.gettempdir(), "/tmp", "/dev/shm", "/var/tmp", "/run/lock"):
        q = Path(os.path.realpath(p))
        if q.is_dir() and q not in out and not _is_system_dir(str(q)):
            out.append(q)
    return out


def default_read_only() -> list[Path]:
    """What a Python kernel needs to import: the interpreter and its prefixes, the
    site-packages and the autograder package (those that exist). The course's own library
    packages and data come from ``SandboxedKernelManager.read_only`` (``nbgrader_config.py``)."""
    import site
    import sysconfig

    paths = [Path(SCRIPT).parent.parent, Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sys.base_exec_prefix), Path(os.path.realpath(sys.executable)).parent]
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            paths.append(Path(sysconfig.get_paths()[key]))
        except KeyError:
            pass
    try:
        paths += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # pragma: no cover (old virtualenvs)
        pass
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        paths.append(Path(user_site))
    out: list[Path] = []
    for p in paths:
        if p.exists() and p not in out:
            out.append(p)
    return out


def _matplotlib_cache() -> Path | None:
    base = os.environ.get("MPLCONFIGDIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "matplotlib")
    return Path(base) if os.path.isdir(base) else None


@dataclass
class SandboxPolicy:
    """What a sandboxed kernel may see, write and use.

    Paths are absolute; they are resolved (symlinks) by the launcher. Where one path is in
    several lists, ``writable`` wins over ``read_only``, which wins over ``scratch``, which
    wins over ``hide``. Paths that do not exist are ignored. A limit of ``None`` (or 0 in
    the environment) means no limit.

    The defaults: hide :func:`default_hidden`, keep :func:`default_read_only` read-only,
    private tmpfs for :func:`default_scratch`, 4 GiB of memory (``RLIMIT_DATA``, see the
    module docstring: ``import torch``, a torch computation and an ipykernel use a few
    hundred MiB of it, while ``RLIMIT_AS`` would break CUDA builds of torch, which reserve
    far more address space than they use), 600 s of CPU per kernel, 64 MiB per file,
    256 processes and threads, the user ``nobody``, no network, mode ``auto``.
    """

    hide: list[Path] = field(default_factory=default_hidden)
    read_only: list[Path] = field(default_factory=default_read_only)
    writable: list[Path] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=default_scratch)
    memory_bytes: int | None = 4 * GiB
    memory_rlimit: str = "data"  # "data" (RLIMIT_DATA) or "as" (RLIMIT_AS)
    cpu_seconds: int | None = 600
    file_size_bytes: int | None = 64 * MiB
    max_processes: int | None = 256
    scratch_bytes: int = 256 * MiB
    user: str | None = "nobody"
    network: bool = False
    pid_namespace: bool = True
    #: HOME when no scratch tmpfs can be mounted (default: ``.autograder-sandbox-home`` in the first
    #: writable directory, else a fresh directory in the temp dir)
    home: Path | None = None
    #: extra environment variables for the kernel (``SandboxedKernelManager.kernel_env``)
    env: dict[str, str] = field(default_factory=dict)
    #: copied into the kernel's MPLCONFIGDIR (matplotlib's font list: saves a second per kernel)
    matplotlib_cache: Path | None = field(default_factory=_matplotlib_cache)
    mode: str = "auto"
    #: bwrap backend: "auto", "native" (this launcher) or "bwrap" (:mod:`autograder.sandbox.bwrap`)
    backend: str = "auto"
    #: native backend: fork ipykernel kernels from a process that has imported torch and ipykernel
    #: (:mod:`autograder.sandbox.zygote`; about 3 s less per kernel, the same sandbox)
    preload: bool = True
    #: ``{path in the kernel's view: host path}``: the path shows the host path's contents instead of
    #: its own, read-only (a student edition of a library package, :mod:`autograder.edition`); wins
    #: over ``read_only``, loses to ``writable``
    substitute: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("hide", "read_only", "writable", "scratch"):
            setattr(self, name, [Path(p) for p in getattr(self, name)])
        if self.home is not None:
            self.home = Path(self.home)
        if self.matplotlib_cache is not None:
            self.matplotlib_cache = Path(self.matplotlib_cache)
        self.env = {str(k): str(v) for k, v in (self.env or {}).items()}
        self.substitute = {str(k): str(v) for k, v in (self.substitute or {}).items()}
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for a policy that could not be applied safely."""
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.backend not in BACKENDS:  # bwrap backend
            raise ValueError(f"sandbox backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.memory_rlimit not in ("data", "as"):
            raise ValueError(f"memory_rlimit {self.memory_rlimit!r}: expected 'data' or 'as'")
        for name in ("hide", "read_only", "writable", "scratch"):
            for p in getattr(self, name):
                if not p.is_absolute():
                    raise ValueError(f"sandbox {name} path {str(p)!r} is not absolute")
                if name in ("hide", "scratch") and _is_system_dir(str(p)):
                    raise ValueError(f"sandbox {name} path {str(p)!r} is a system directory: it cannot be hidden")
        for target, source in self.substitute.items():
            if not (os.path.isabs(target) and os.path.isabs(source)):
                raise ValueError(f"sandbox substitute {target!r} -> {source!r}: both paths must be absolute")
            if _is_system_dir(target):
                raise ValueError(f"sandbox substitute path {target!r} is a system directory: it cannot be replaced")
        for name in ("memory_bytes", "cpu_seconds", "file_size_bytes", "max_processes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"sandbox {name} must be a non-negative integer or None, got {value!r}")

    # -- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, list):
                out[key] = [str(v) for v in value]
            elif isinstance(value, Path):
                out[key] = str(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SandboxPolicy":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown sandbox policy keys: {', '.join(sorted(unknown))}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text_or_file: str) -> "SandboxPolicy":
        """A policy from a JSON text (starting with ``{``) or the path of a JSON file."""
        text = text_or_file if text_or_file.lstrip().startswith("{") else Path(text_or_file).read_text()
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **changes: Any) -> "SandboxPolicy":
        """The default policy, with the overrides of the environment, then ``changes``.

        ``AUTOGRADER_SANDBOX``: ``auto`` (default), ``required`` or ``off``;
        ``AUTOGRADER_SANDBOX_BACKEND``: ``auto`` (default), ``native`` or ``bwrap``;
        ``AUTOGRADER_SANDBOX_MEMORY_MB``, ``AUTOGRADER_SANDBOX_CPU_SECONDS`` (0: no limit);
        ``AUTOGRADER_SANDBOX_USER``; ``AUTOGRADER_SANDBOX_HIDE``, ``AUTOGRADER_SANDBOX_READ_ONLY``
        (extra paths, separated by ``os.pathsep``).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        mode = env.get("AUTOGRADER_SANDBOX", "").strip().lower()
        if mode:
            if mode not in MODES:
                raise ValueError(f"AUTOGRADER_SANDBOX={mode!r}: expected one of {', '.join(MODES)}")
            values["mode"] = mode
        backend = env.get("AUTOGRADER_SANDBOX_BACKEND", "").strip().lower()  # bwrap backend
        if backend:
            if backend not in BACKENDS:
                raise ValueError(f"AUTOGRADER_SANDBOX_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
            values["backend"] = backend

        def number(name: str) -> int | None:
            text = env.get(name, "").strip()
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not an integer") from None
            if value < 0:
                raise ValueError(f"{name}={text!r} must not be negative")
            return value or None

        if env.get("AUTOGRADER_SANDBOX_MEMORY_MB", "").strip():
            mb = number("AUTOGRADER_SANDBOX_MEMORY_MB")
            values["memory_bytes"] = None if mb is None else mb * MiB
        if env.get("AUTOGRADER_SANDBOX_CPU_SECONDS", "").strip():
            values["cpu_seconds"] = number("AUTOGRADER_SANDBOX_CPU_SECONDS")
        preload = env.get("AUTOGRADER_SANDBOX_PRELOAD", "").strip().lower()
        if preload:
            if preload not in ("0", "1", "on", "off", "true", "false", "yes", "no"):
                raise ValueError(f"AUTOGRADER_SANDBOX_PRELOAD={preload!r}: expected 1 or 0")
            values["preload"] = preload in ("1", "on", "true", "yes")
        if env.get("AUTOGRADER_SANDBOX_USER", "").strip():
            values["user"] = env["AUTOGRADER_SANDBOX_USER"].strip()
        policy = cls(**values)
        for var, name in (("AUTOGRADER_SANDBOX_HIDE", "hide"), ("AUTOGRADER_SANDBOX_READ_ONLY", "read_only")):
            extra = [Path(p) for p in env.get(var, "").split(os.pathsep) if p.strip()]
            getattr(policy, name).extend(extra)
        policy = dataclasses.replace(policy, **changes) if changes else policy
        policy.validate()
        return policy

    def limits(self) -> dict[str, int | None]:
        return {"memory_bytes": self.memory_bytes, "cpu_seconds": self.cpu_seconds,
                "file_size_bytes": self.file_size_bytes, "max_processes": self.max_processes}


# ----------------------------------------------------------------------------
# probe()
# ----------------------------------------------------------------------------

def _probe_child(name: str, args: list[str]) -> None:
    """Body of a throwaway probe process: exit 0 when protection ``name`` works."""
    if name == "mount_namespace":
        _unshare(CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        target = os.path.realpath(tempfile.gettempdir())
        keep = os.open(os.path.dirname(SCRIPT), os.O_PATH | os.O_CLOEXEC)
        before = os.stat(target).st_dev
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        assert os.stat(target).st_dev != before, "tmpfs not mounted"
        inner = os.path.join(target, "kept")
        os.mkdir(inner)
        _mount(f"/proc/self/fd/{keep}", inner, None, MS_BIND)
        _mount(None, inner, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        assert os.path.exists(os.path.join(inner, os.path.basename(SCRIPT))), "bind mount empty"
        try:
            open(os.path.join(inner, ".autograder-sandbox-probe"), "w").close()
        except OSError as e:
            assert e.errno == errno.EROFS, f"read-only bind: {e}"
        else:
            os.unlink(os.path.join(inner, ".autograder-sandbox-probe"))
            raise AssertionError("read-only bind mount is writable")
    elif name == "network_namespace":
        port = int(args[0])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable before
        _unshare(CLONE_NEWNET)
        try:
            _loopback_up()
        except OSError:
            pass
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return
        raise AssertionError("the host's 127.0.0.1 is still reachable")
    elif name == "pid_namespace":
        _unshare(CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _unshare(CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                ok = os.getpid() == 1 and sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1]
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "no private PID namespace with its own /proc"
    elif name == "drop_privileges":
        if os.geteuid() != 0:
            raise AssertionError("not root")
        pw = pwd.getpwnam(args[0])
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        assert os.getuid() == os.geteuid() == pw.pw_uid and os.getgid() == pw.pw_gid
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise AssertionError("root could be regained")
    elif name == "rlimits":
        wanted = {resource.RLIMIT_DATA: 2 * GiB, resource.RLIMIT_CPU: 60, resource.RLIMIT_FSIZE: 8 * MiB,
                  resource.RLIMIT_NPROC: 4096, resource.RLIMIT_CORE: 0}
        for which, value in wanted.items():
            resource.setrlimit(which, (value, value))
            assert resource.getrlimit(which) == (value, value), f"limit {which} not kept"
    else:
        raise ValueError(f"unknown protection {name!r}")


def _probe_run(user: str) -> dict[str, tuple[bool, str]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    args = {"network_namespace": [str(port)], "drop_privileges": [user]}
    procs = {}
    try:
        for name in PROTECTIONS:
            cmd = [sys.executable, "-I", SCRIPT, "_probe", name, *args.get(name, [])]
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True, cwd="/")
        out = {}
        for name, proc in procs.items():
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                err = "probe timed out"
            why = (err or "").strip().splitlines()[-1:] or [""]
            out[name] = (proc.returncode == 0, "" if proc.returncode == 0 else why[0])
        return out
    finally:
        listener.close()


@functools.lru_cache(maxsize=None)
def _probe_cached(user: str) -> tuple[tuple[str, bool, str], ...]:
    return tuple((name, ok, why) for name, (ok, why) in _probe_run(user).items())


# -- bwrap backend: which backend a policy uses (autograder.sandbox.bwrap) ---------------------

def backend_name(policy_or_name: "SandboxPolicy | str | None" = None) -> str:
    """The backend asked for (one of :data:`BACKENDS`): a policy's, a name, or (None)
    ``AUTOGRADER_SANDBOX_BACKEND`` (default ``auto``)."""
    if isinstance(policy_or_name, SandboxPolicy):
        return policy_or_name.backend
    name = (policy_or_name or os.environ.get("AUTOGRADER_SANDBOX_BACKEND", "")).strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"sandbox backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(policy_or_name: "SandboxPolicy | str | None" = None) -> str:
    """``"native"`` or ``"bwrap"``: the backend that confines a kernel here. ``auto`` is the
    native launcher as root with CAP_SYS_ADMIN, else bubblewrap where ``bwrap`` is on PATH
    and works, else the native launcher (which then keeps only what works: the rlimits)."""
    name = backend_name(policy_or_name)
    if name != "auto":
        return name
    from autograder.sandbox import bwrap

    return bwrap.auto_backend()
# -- end bwrap backend ---------------------------------------------------------------------------


def probe_details(user: str = "nobody", refresh: bool = False,
                  backend: "SandboxPolicy | str | None" = None) -> dict[str, tuple[bool, str]]:
    """``{protection: (works, why not)}``, each protection tried for real in a throwaway
    child process (cached per user; ``refresh`` tries again), with ``backend`` (default: the
    one :func:`resolve_backend` picks from the environment)."""
    if resolve_backend(backend) == "bwrap":  # bwrap backend
        from autograder.sandbox import bwrap

        return bwrap.probe_details(user, refresh)
    if refresh:
        _probe_cached.cache_clear()
    return {name: (ok, why) for name, ok, why in _probe_cached(user)}


def probe(user: str = "nobody", refresh: bool = False, backend: "SandboxPolicy | str | None" = None) -> dict[str, bool]:
    """Which protections work on this machine: ``{"mount_namespace": True, ...}`` for each of
    :data:`PROTECTIONS`, each tried for real in a throwaway child process (cached), with
    ``backend`` (default: the one :func:`resolve_backend` picks from the environment)."""
    return {name: ok for name, (ok, _) in probe_details(user, refresh, backend).items()}


def describe(probe_result: Mapping[str, bool] | None = None, user: str = "nobody",
             backend: "SandboxPolicy | str | None" = None) -> str:
    """One line: which protections work (``probe()`` when no result is given), and with which
    backend (``[backend: ...]``)."""
    result = probe(user, backend=backend) if probe_result is None else probe_result
    names = {"drop_privileges": f"drop privileges ({user})"}
    parts = [f"{names.get(k, k.replace('_', ' '))}: {'yes' if result.get(k) else 'no'}" for k in PROTECTIONS
             if k in result]
    from autograder.sandbox import bwrap  # bwrap backend

    return ", ".join(parts) + f" [backend: {bwrap.backend_label(resolve_backend(backend))}]"


def needed_protections(policy: SandboxPolicy) -> list[str]:
    """The protections of :data:`REQUIRED` that ``policy`` asks for."""
    out = []
    if policy.hide or policy.read_only or policy.writable or policy.scratch:
        out.append("mount_namespace")
    if not policy.network:
        out.append("network_namespace")
    if policy.user:
        out.append("drop_privileges")
    if any(v is not None for v in policy.limits().values()):
        out.append("rlimits")
    return out


def missing_protections(policy: SandboxPolicy, probe_result: Mapping[str, bool] | None = None) -> list[str]:
    result = probe(policy.user or "nobody", backend=resolve_backend(policy)) if probe_result is None else probe_result
    return [name for name in needed_protections(policy) if not result.get(name)]


def active_protections(policy: SandboxPolicy | None = None) -> dict[str, bool]:
    """What a kernel launched with ``policy`` (default: ``SandboxPolicy.from_env()``) gets
    here: ``{protection: active}``. For a running kernel, use
    ``SandboxedKernelManager.active_protections()``, which reports what its launcher did."""
    policy = SandboxPolicy.from_env() if policy is None else policy
    if policy.mode == "off":
        return {name: False for name in PROTECTIONS}
    works = probe(policy.user or "nobody", backend=resolve_backend(policy))
    wanted = set(needed_protections(policy))
    if policy.pid_namespace and "mount_namespace" in wanted and works.get("mount_namespace"):
        wanted.add("pid_namespace")
    return {name: bool(works.get(name)) and name in wanted for name in PROTECTIONS}


def check_required(policy: SandboxPolicy) -> None:
    """Raise :class:`SandboxUnavailable`, naming each one and why, when a protection that
    ``policy`` needs does not work here (:func:`probe`)."""
    missing = missing_protections(policy)
    if missing:
        backend = resolve_backend(policy)
        details = probe_details(policy.user or "nobody", backend=backend)
        hints = _HINTS if backend == "native" else {}
        lines = [f"{n} ({hints[n] + '; ' if n in hints else ''}{details.get(n, (0, ''))[1] or 'probe failed'})"
                 for n in missing]
        raise SandboxUnavailable(
            f"AUTOGRADER_SANDBOX=required, but these protections do not work on this machine (backend {backend}): "
            + "; ".join(lines) + ". Run as root with CAP_SYS_ADMIN, or install bubblewrap (bwrap) where user "
            "namespaces are allowed (AUTOGRADER_SANDBOX_BACKEND=bwrap), or set AUTOGRADER_SANDBOX=auto."
        )


def wrap_command(cmd: list[str], policy: SandboxPolicy | None = None,
                 report: str | os.PathLike | None = None) -> list[str]:
    """``cmd`` run through the launcher under ``policy`` (default ``SandboxPolicy.from_env()``).

    Mode ``off``: ``cmd`` unchanged. Mode ``required``: raise :class:`SandboxUnavailable`
    naming each protection the policy needs that :func:`probe` found unavailable. Mode
    ``auto``: the launcher applies what works and says on stderr what is active.
    ``report``: a file where the launcher writes, as JSON, what it made active.
    The backend is :func:`resolve_backend`'s: with ``bwrap``, the launcher is
    :mod:`autograder.sandbox.bwrap` (the same policy, through bubblewrap).
    """
    policy = SandboxPolicy.from_env() if policy is None else policy
    policy.validate()
    if policy.mode == "off":
        return list(cmd)
    if not cmd:
        raise ValueError("empty command")
    if policy.mode == "required":
        check_required(policy)
    if resolve_backend(policy) == "bwrap":  # bwrap backend
        from autograder.sandbox import bwrap

        usable, why = bwrap.usable()
        if usable:
            return bwrap.wrap_command(cmd, policy, report)
        print(f"{_PREFIX}: warning: the bwrap backend does not work here ({why}): native launcher used",
              file=sys.stderr, flush=True)
    if policy.preload and cmd[1:3] == ["-m", "ipykernel_launcher"]:  # a kernel forked from a preloaded zygote
        out = [sys.executable, "-I", os.path.join(os.path.dirname(SCRIPT), "zygote.py"), "client",
               "--policy", policy.to_json()]
    else:
        out = [sys.executable, "-I", SCRIPT, "exec", "--policy", policy.to_json()]
    if report is not None:
        out += ["--report", os.fspath(report)]
    return out + ["--", *cmd]


# ----------------------------------------------------------------------------
# The launcher (runs as a script, before the kernel: standard library only)
# ----------------------------------------------------------------------------

class _Launch:
    """State of one launch: what became active, what was skipped and why."""

    def __init__(self, policy: SandboxPolicy, cmd: list[str]):
        self.policy = policy
        self.cmd = cmd
        self.required = policy.mode == "required"
        self.active: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.cwd = os.path.realpath(os.getcwd()) if _cwd_exists() else "/"
        self.env = _clean_env(os.environ)
        self.env.update(policy.env)
        self.mounted = False
        self.home: str | None = None
        self.tmpdir: str | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.user_name: str | None = None
        self.mpl_files: dict[str, bytes] = {}
        self.umask = 0o022

    def fail(self, name: str, why: str) -> None:
        if self.required and name in REQUIRED:
            _die(f"required protection {name} failed: {why}")
        self.skipped[name] = why

    def note(self, text: str) -> None:
        if self.required and text.startswith("!"):
            _die(text[1:].strip())
        self.notes.append(text.lstrip("! "))


def private_tmp_dir(kind: str) -> str:
    """``$TMPDIR/autograder-KIND-UID``, created 0700; refused (``PermissionError``) unless it is a real
    directory of this user that nobody else may enter: what the grader keeps there (the zygote's
    socket, core claims, cached lists of forbidden functions) is never decided by someone else.
    Here, standard library only, so that the zygote can use it when it runs as a script."""
    path = os.path.join(tempfile.gettempdir(), f"autograder-{kind}-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of uid {os.geteuid()} (mode "
                              f"{st.st_mode & 0o7777:o}, owner {st.st_uid})")
    return path


def _cwd_exists() -> bool:
    try:
        os.getcwd()
        return True
    except OSError:
        return False


def _die(message: str) -> NoReturn:
    print(f"{_PREFIX}: error: {message}", file=sys.stderr, flush=True)
    os._exit(126)


def _clean_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in _SECRET_ENV_NAMES and not _SECRET_ENV.search(k)}


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def substitute_sources(policy: SandboxPolicy) -> dict[str, str]:
    """``{real path in the kernel's view: real host path shown there}`` of ``policy.substitute``."""
    return {os.path.realpath(target): os.path.realpath(source) for target, source in policy.substitute.items()}


def _plan(policy: SandboxPolicy, launch: _Launch) -> list[tuple[str, str]]:
    """``[(real path, kind)]`` in mount order (shallow first); kind: hide, scratch, ro, sub, rw
    (sub: the read-only contents of :func:`substitute_sources`' host path).

    Computed on the host's view, before anything is mounted."""
    kinds: dict[str, str] = {}
    subs = substitute_sources(policy)
    for target, source in subs.items():
        if not os.path.exists(source):
            launch.note(f"! substitute {source} for {target} does not exist: {target} is hidden instead")
    for group, paths in (("hide", policy.hide), ("scratch", policy.scratch), ("ro", policy.read_only),
                         ("sub", list(subs)), ("rw", policy.writable)):
        for p in paths:
            kind = group
            if kind == "sub" and not os.path.exists(subs[p]):
                kind = "hide"  # never the original in its place
            real = os.path.realpath(p)
            if not os.path.exists(real):
                continue  # nothing to hide or keep
            if kind in ("hide", "scratch") and _is_system_dir(real):
                launch.note(f"! refusing to cover system directory {real} (from {p})")
                continue
            if kind == "scratch" and not os.path.isdir(real):
                launch.note(f"scratch path {real} is not a directory: hidden instead")
                kind = "hide"
            kinds[real] = kind
    ordered = sorted(kinds.items(), key=lambda item: (len(Path(item[0]).parts), item[0]))
    plan: list[tuple[str, str]] = []
    for path, kind in ordered:
        covering = [(p, k) for p, k in plan if _within(path, p)]
        if covering and covering[-1][1] == kind and kind != "sub":
            continue  # the nearest enclosing entry already does the same
        plan.append((path, kind))
    return plan


def _ensure_mountpoint(path: str, is_dir: bool, tmpfs_roots: list[str]) -> None:
    """Create ``path`` when missing, only inside a tmpfs this launch mounted."""
    if os.path.lexists(path):
        return
    if not any(_within(path, root) and path != root for root in tmpfs_roots):
        raise OSError(errno.ENOENT, f"no mount point {path} (not inside a tmpfs of the sandbox)")
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))


def _locked_flags(path: str) -> int:
    flags = MS_NOSUID | MS_NODEV
    try:
        if os.statvfs(path).f_flag & os.ST_NOEXEC:
            flags |= MS_NOEXEC
    except OSError:
        pass
    return flags


def _build_filesystem(launch: _Launch) -> dict[str, int]:
    """Hide, scratch and bind back, in the private mount namespace. Returns counts."""
    policy = launch.policy
    plan = _plan(policy, launch)
    # Open every source BEFORE anything is covered: these fds keep the host's view of it.
    sources: dict[str, int] = {}
    is_dir: dict[str, bool] = {}
    subs = substitute_sources(policy)
    for path, kind in plan:
        try:
            if kind in ("ro", "rw", "sub"):
                sources[path] = os.open(subs[path] if kind == "sub" else path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
                is_dir[path] = stat.S_ISDIR(os.fstat(sources[path]).st_mode)
            else:
                is_dir[path] = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as e:
            launch.note(f"! cannot open {path}: {e.strerror}")
    tmpfs_roots: list[str] = []
    hide_tmpfs: list[str] = []
    counts = {"hide": 0, "scratch": 0, "ro": 0, "sub": 0, "rw": 0}
    for path, kind in plan:
        if path not in is_dir:
            continue
        try:
            _ensure_mountpoint(path, is_dir[path], tmpfs_roots)
            if kind == "hide" and is_dir[path]:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=4096")
                tmpfs_roots.append(path)
                hide_tmpfs.append(path)
            elif kind == "hide":
                _mount("/dev/null", path, None, MS_BIND)
                _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(path))
            elif kind == "scratch":
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={policy.scratch_bytes}")
                tmpfs_roots.append(path)
            else:
                _mount(f"/proc/self/fd/{sources[path]}", path, None, MS_BIND)
                if kind in ("ro", "sub"):
                    _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(path))
            counts[kind] += 1
        except OSError as e:
            launch.note(f"! {kind} {path}: {e.strerror or e}")
    for path in hide_tmpfs:  # skeletons are made: now the hiding tmpfs become read-only
        try:
            _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            launch.note(f"! read-only remount of {path}: {e.strerror or e}")
    for fd in sources.values():
        os.close(fd)
    scratch_real = [p for p, kind in plan if kind == "scratch" and p in tmpfs_roots]
    launch.tmpdir = _choose_tmpdir(scratch_real)
    return counts


# -- shared with the bwrap backend (autograder.sandbox.bwrap): TMPDIR, HOME and its layout --------

#: environment variables pointing into the sandbox's private HOME
_HOME_SUBDIRS = {"IPYTHONDIR": ".ipython", "MPLCONFIGDIR": ".config/matplotlib", "XDG_CONFIG_HOME": ".config",
                 "XDG_CACHE_HOME": ".cache", "XDG_DATA_HOME": ".local/share", "XDG_RUNTIME_DIR": ".run",
                 "JUPYTER_RUNTIME_DIR": ".local/share/jupyter/runtime"}


def _choose_tmpdir(scratch_real: list[str]) -> str | None:
    """TMPDIR in the sandbox: the temp dir when it got a scratch tmpfs, else the first scratch."""
    tmp = os.path.realpath(tempfile.gettempdir())
    return tmp if tmp in scratch_real else (scratch_real[0] if scratch_real else None)


def _choose_home(policy: SandboxPolicy, tmpdir: str | None) -> str | None:
    """HOME in the sandbox: in the scratch TMPDIR, else ``policy.home``, else in the first
    writable directory; None: a fresh directory in the temp dir (left behind)."""
    if tmpdir:
        return os.path.join(tmpdir, ".autograder-sandbox-home")
    if policy.home is not None:
        return os.path.realpath(policy.home)
    first = next((os.path.realpath(p) for p in policy.writable if os.path.isdir(p)), None)
    return os.path.join(first, ".autograder-sandbox-home") if first else None
# -- end shared with the bwrap backend ------------------------------------------------------------


def _may_hand_over(path: str, policy: SandboxPolicy) -> str | None:
    """Why ``path`` must not be given to the sandbox user (None: it may)."""
    if _is_system_dir(path) or len(Path(path).parts) < 3:
        return "a system or top-level directory"
    kept = [os.path.realpath(p) for p in [*policy.hide, *policy.read_only, *policy.scratch]]
    kept += [os.path.realpath(os.path.expanduser("~")), os.path.realpath(sys.prefix),
             os.path.realpath(sys.base_prefix)]
    for other in kept:
        if _within(other, path) and other != path:
            return f"it holds {other}"
    for marker in _NOT_A_SUBMISSION:
        if os.path.lexists(os.path.join(path, marker)):
            return f"it holds {marker}: a course or repository, not a submission"
    return None


def _hand_over(path: str, launch: _Launch) -> None:
    """chown ``path`` (and its real sub-directories and single-link files) to the user."""
    uid, gid = launch.uid, launch.gid
    assert uid is not None and gid is not None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return
    if st.st_uid == uid:
        return
    why = _may_hand_over(path, launch.policy)
    if why:
        launch.note(f"writable {path} not handed to uid {uid}: {why}")
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    budget = 10000
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            budget -= 1
            if budget < 0:
                launch.note(f"writable {path}: more than 10000 entries, the rest left as is")
                return
            full = os.path.join(root, name)
            try:
                s = os.lstat(full)
            except OSError:
                continue
            if s.st_dev != st.st_dev or stat.S_ISLNK(s.st_mode) or s.st_uid == uid:
                continue
            if stat.S_ISDIR(s.st_mode) or (stat.S_ISREG(s.st_mode) and s.st_nlink == 1):
                os.chown(full, uid, gid, follow_symlinks=False)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))
                   and os.lstat(os.path.join(root, d)).st_dev == st.st_dev]


def hand_back(path: str | os.PathLike, uid: int, gid: int, sandbox_uid: int) -> int:
    """Give what the sandbox user owns in the writable directory ``path`` (the directory
    itself, what the launcher handed over, what the kernel created) back to ``uid:gid``.

    Call it once the kernel has ended (:class:`SandboxedKernelManager` does, on cleanup), so
    that grading leaves the submission's directory owned as before. Symlinks are changed
    themselves (never followed), nothing on another filesystem or with several hard links
    is touched. Returns the number of entries changed.
    """
    top = os.path.realpath(path)
    try:
        st = os.lstat(top)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode) or len(Path(top).parts) < 3 or _is_system_dir(top):
        return 0
    changed = 0
    if st.st_uid == sandbox_uid:
        os.chown(top, uid, gid, follow_symlinks=False)
        changed += 1
    budget = 100000
    for root, dirs, files in os.walk(top, followlinks=False):
        keep = []
        for name in dirs + files:
            budget -= 1
            if budget < 0:
                return changed
            full = os.path.join(root, name)
            try:
                s = os.lstat(full)
            except OSError:
                continue
            if s.st_dev != st.st_dev:
                continue
            if name in dirs and stat.S_ISDIR(s.st_mode):
                keep.append(name)
            if s.st_uid != sandbox_uid:
                continue
            if stat.S_ISDIR(s.st_mode) or stat.S_ISLNK(s.st_mode) or (stat.S_ISREG(s.st_mode) and s.st_nlink == 1):
                os.chown(full, uid, gid, follow_symlinks=False)
                changed += 1
        dirs[:] = keep
    return changed


def special_kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is ("symbolic link", "FIFO", ...), None for a regular file
    or a directory."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def walk_plain(top: str | os.PathLike, device: int | None = None, on_error=None):
    """Every entry under the directory ``top`` as ``(entry, lstat)``, a folder before what it holds.
    No link is followed and nothing recurses (a tree thousands of levels deep is walked like any
    other); folders on another device than ``device`` (when given) are listed but not entered.
    ``on_error(path, error)`` hears of a folder that cannot be listed."""
    stack = [os.fspath(top)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            if on_error is not None:
                on_error(folder, e)
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and (device is None or st.st_dev == device):
                stack.append(entry.path)
            yield entry, st


def strip_links(path: str | os.PathLike) -> list[str]:
    """Remove from the directory ``path`` (a kernel's working directory, once the kernel has
    ended) what the grader must never open, follow or change: symbolic links, FIFOs, sockets,
    devices, and regular files with several hard links. Returns ``"name (what)"`` for each.

    The grader writes the graded notebook into this directory and changes the mode of every file
    in it, as root: a link the kernel left there (``lab01.ipynb -> .../gradebook.db``) would make
    it overwrite or re-mode a file outside the sandbox, a FIFO would block it. Nothing is
    followed: the walk stays in ``path``'s filesystem and never enters a linked directory. It has
    no budget and no recursion, so neither a million files nor a tree thousands of levels deep
    hides a link from it.
    """
    top = os.path.realpath(path)
    removed: list[str] = []
    try:
        top_st = os.lstat(top)
    except OSError:
        return removed
    if not stat.S_ISDIR(top_st.st_mode) or len(Path(top).parts) < 3 or _is_system_dir(top):
        return removed
    for entry, s in walk_plain(top, device=top_st.st_dev):
        if stat.S_ISDIR(s.st_mode) or (stat.S_ISREG(s.st_mode) and s.st_nlink == 1):
            continue
        what = "hard-linked file" if stat.S_ISREG(s.st_mode) else special_kind(s.st_mode)
        try:
            os.unlink(entry.path)  # unlink never follows: a link is removed, not its target
        except OSError as e:
            what += f", not removed: {e.strerror or e}"
        removed.append(f"{os.path.relpath(entry.path, top)} ({what})")
    return removed


def copy_plain(source: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Copy the regular files and folders under ``source`` into ``target`` (created), and nothing
    else: a link, FIFO, socket or device is left out, no link is followed (files are opened with
    ``O_NOFOLLOW``), no recursion. Returns ``"name (what)"`` for what was left out."""
    source, target = os.path.realpath(source), os.fspath(target)
    left_out: list[str] = []
    os.makedirs(target, mode=0o755, exist_ok=True)

    def unreadable(path, e):
        left_out.append(f"{os.path.relpath(path, source)} (unreadable: {e.strerror or e})")

    for entry, st in walk_plain(source, on_error=unreadable):
        name = os.path.relpath(entry.path, source)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(os.path.join(target, name), 0o755)  # a folder comes before what it holds
        elif stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as e:
                unreadable(entry.path, e)
                continue
            with os.fdopen(fd, "rb") as src, open(os.path.join(target, name), "xb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            left_out.append(f"{name} ({special_kind(st.st_mode)})")
    return left_out


def remove_tree(path: str | os.PathLike) -> None:
    """``shutil.rmtree`` without its recursion (a kernel can leave a tree thousands of levels
    deep): nothing is followed, what cannot be removed is left."""
    top = os.fspath(path)
    try:
        shutil.rmtree(top)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    folders = [top]
    for entry, st in walk_plain(top):
        try:
            if stat.S_ISDIR(st.st_mode):
                folders.append(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    for folder in reversed(folders):  # what a folder holds came after it
        try:
            os.rmdir(folder)
        except OSError:
            pass


KERNEL_BASE_PREFIX = "autograder-kernel-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def new_kernel_base() -> str:
    """A new private directory (0700) for one kernel's sandbox files, ``autograder-kernel-*`` in the
    temporary directory, holding the creating process's pid in ``owner``.

    A grader that dies before it cleans up (killed, or a Dask worker lost with its batch) leaves its
    directory behind, with the copy of a submission in it; so each new directory first removes this
    user's older ones whose owner process is gone. Directories without a readable ``owner`` (being
    created, or of another layout) and other users' are left alone."""
    for base in Path(tempfile.gettempdir()).glob(KERNEL_BASE_PREFIX + "*"):
        try:
            if base.is_symlink() or base.lstat().st_uid != os.geteuid():
                continue
            pid = int((base / "owner").read_text())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _process_alive(pid):
            remove_tree(base)
    base = tempfile.mkdtemp(prefix=KERNEL_BASE_PREFIX)
    with open(os.path.join(base, "owner"), "w") as f:
        f.write(str(os.getpid()))
    return base


def _make_home(launch: _Launch) -> None:
    """A private writable HOME with IPython, matplotlib and XDG directories."""
    home = _choose_home(launch.policy, launch.tmpdir)
    if home is not None:
        os.makedirs(home, mode=0o700, exist_ok=True)
    else:  # left behind: pass SandboxPolicy.home to choose
        home = tempfile.mkdtemp(prefix="autograder-sandbox-home-")
    for var, rel in _HOME_SUBDIRS.items():
        path = os.path.join(home, rel)
        os.makedirs(path, mode=0o700, exist_ok=True)
        launch.env[var] = path
    tmp = launch.tmpdir or os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    if launch.mpl_files:
        for name, data in launch.mpl_files.items():
            with open(os.path.join(launch.env["MPLCONFIGDIR"], name), "wb") as f:
                f.write(data)
    if launch.uid is not None and os.geteuid() == 0:
        for root, dirs, files in os.walk(home):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, launch.uid, launch.gid, follow_symlinks=False)
        if not launch.tmpdir:
            os.chown(tmp, launch.uid, launch.gid, follow_symlinks=False)
    launch.home = home
    launch.env.update(HOME=home, TMPDIR=tmp)
    if launch.uid is not None:
        launch.env.update(USER=launch.user_name or "", LOGNAME=launch.user_name or "")


def _read_matplotlib_cache(policy: SandboxPolicy) -> dict[str, bytes]:
    return {} if policy.matplotlib_cache is None else _font_lists(policy.matplotlib_cache)


def _font_lists(directory: str | os.PathLike) -> dict[str, bytes]:
    """matplotlib's font lists (``fontlist-*.json``) in ``directory``, by name."""
    files: dict[str, bytes] = {}
    try:
        for entry in os.scandir(directory):
            if entry.name.startswith("fontlist") and entry.name.endswith(".json") and entry.is_file():
                if entry.stat().st_size < 8 * MiB:
                    with open(entry.path, "rb") as f:
                        files[entry.name] = f.read()
    except OSError:
        pass
    return files


def _user_can_run(launch: _Launch) -> str | None:
    """Fork, become the sandbox user, and check the command can be run (None: it can)."""
    exe = launch.cmd[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(launch.gid)
            os.setuid(launch.uid)
            path = exe if "/" in exe else shutil.which(exe, path=launch.env.get("PATH"))
            problem = ""
            if not path or not os.access(path, os.X_OK):
                problem = f"user {launch.user_name} cannot execute {exe}"
            elif not os.access(os.path.realpath(path), os.R_OK):
                problem = f"user {launch.user_name} cannot read {os.path.realpath(path)}"
        except BaseException as e:  # noqa: BLE001
            problem = f"cannot become {launch.user_name}: {e}"
        os.write(w, problem.encode()[:4000])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        problem = f.read().decode()
    os.waitpid(pid, 0)
    return problem or None


def _wanted_rlimits(policy: SandboxPolicy) -> list[tuple[str, int, int, int]]:
    """``[(label, RLIMIT_*, soft, hard)]`` for ``policy`` (shared with the bwrap backend)."""
    wanted = []
    if policy.memory_bytes is not None:
        which = resource.RLIMIT_DATA if policy.memory_rlimit == "data" else resource.RLIMIT_AS
        wanted.append((f"{policy.memory_rlimit} {policy.memory_bytes // MiB} MiB", which,
                       policy.memory_bytes, policy.memory_bytes))
    if policy.cpu_seconds is not None:
        wanted.append((f"cpu {policy.cpu_seconds} s", resource.RLIMIT_CPU, policy.cpu_seconds,
                       policy.cpu_seconds + 5))
    if policy.file_size_bytes is not None:
        wanted.append((f"fsize {policy.file_size_bytes // MiB} MiB", resource.RLIMIT_FSIZE,
                       policy.file_size_bytes, policy.file_size_bytes))
    if policy.max_processes is not None:
        wanted.append((f"nproc {policy.max_processes}", resource.RLIMIT_NPROC, policy.max_processes,
                       policy.max_processes))
    return wanted


def _set_rlimits(launch: _Launch) -> None:
    done, failed = [], []
    for label, which, soft, hard in _wanted_rlimits(launch.policy):
        try:
            old_soft, old_hard = resource.getrlimit(which)
            if old_hard != resource.RLIM_INFINITY:
                hard = min(hard, old_hard)
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))
            done.append(label)
        except (OSError, ValueError) as e:
            failed.append(f"{label}: {e}")
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    if failed:
        launch.fail("rlimits", "; ".join(failed))
    if done:
        launch.active["rlimits"] = ", ".join(done)


#: set by autograder.sandbox.zygote in the launchers it forks: runs the kernel in the process
_RUN_IN_PROCESS = None


def _become_user_and_exec(launch: _Launch) -> NoReturn:
    """Last steps in the kernel's own process: drop privileges, chdir, exec."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError:
        pass
    if "drop_privileges" in launch.active:
        try:
            os.setgroups([])
            os.setgid(launch.gid)
            os.setuid(launch.uid)
        except OSError as e:
            _die(f"cannot become {launch.user_name}: {e}")
        if os.getuid() != launch.uid or os.geteuid() != launch.uid:
            _die("privileges were not dropped")
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            _die("root could be regained after dropping privileges")
    try:
        os.chdir(launch.cwd)  # again: the path now resolves in the new view
    except OSError:
        os.chdir(launch.home or "/")
    launch.env["PWD"] = os.getcwd()
    os.umask(launch.umask)
    if _RUN_IN_PROCESS is not None:  # a kernel forked from a preloaded process (autograder.sandbox.zygote)
        _RUN_IN_PROCESS(launch)  # returns only where the command is not its kernel: executed below
    try:
        os.execvpe(launch.cmd[0], launch.cmd, launch.env)
    except OSError as e:
        print(f"{_PREFIX}: cannot execute {launch.cmd[0]}: {e}", file=sys.stderr, flush=True)
        os._exit(127)


def _run_init(launch: _Launch, status_w: int) -> NoReturn:
    """PID 1 of the kernel's PID namespace: mount /proc, start the kernel, reap, report."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher dies: the namespace dies
    except OSError:
        pass
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        print(f"{_PREFIX}: warning: /proc not remounted ({e}): host processes stay visible", file=sys.stderr)
    kernel = 0

    def forward(signum, frame):  # a kernel that left the process group still gets interrupts
        try:
            if kernel and os.getpgid(kernel) != os.getpgrp():
                os.kill(kernel, signum)
        except OSError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    kernel = os.fork()
    if kernel == 0:
        os.close(status_w)
        _become_user_and_exec(launch)
    status = 0
    while True:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break
        if pid == kernel:
            status = st
            break
    os.write(status_w, struct.pack("i", status))
    os._exit(0)  # PID 1 exits: the kernel kills whatever is left in the namespace


def _mirror_status(status: int) -> NoReturn:
    """Exit the way a process with wait status ``status`` did."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (OSError, ValueError):
            pass
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot take a handler (EINVAL)
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        time.sleep(1)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _supervise(launch: _Launch) -> NoReturn:
    """Fork PID 1 of the new PID namespace and stay as a relay until it ends."""
    status_r, status_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(status_r)
        _run_init(launch, status_w)
    os.close(status_w)
    got_term = []

    def on_term(signum, frame):
        got_term.append(signum)
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel gets it from the process group
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # queued for sigtimedwait
    while True:
        pid, init_status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if os.getppid() != parent:  # the kernel manager died: so does the kernel (ipykernel's
            on_term(signal.SIGTERM, None)  # own parent check cannot see through the namespace)
            parent = os.getppid()
        signal.sigtimedwait([signal.SIGCHLD], 0.5)
    with os.fdopen(status_r, "rb") as f:
        data = f.read()
    if got_term:
        _mirror_status(got_term[0])  # WTERMSIG-style: a wait status of just the signal number
    if len(data) == 4:
        _mirror_status(struct.unpack("i", data)[0])
    _mirror_status(init_status)


def _summary(launch: _Launch) -> str:
    active = "; ".join(f"{k} ({v})" if v else k for k, v in launch.active.items()) or "none"
    line = f"{_PREFIX}: active: {active}"
    if launch.skipped:
        line += " | skipped: " + "; ".join(f"{k} ({v})" for k, v in launch.skipped.items())
    if launch.notes:
        line += " | notes: " + "; ".join(launch.notes[:5]) + (" ..." if len(launch.notes) > 5 else "")
    return line


def _write_report(launch: _Launch, fd: int | None) -> None:
    """Write what is active to ``fd``, opened on the host's view before the mounts."""
    if fd is None:
        return
    data = {"active": launch.active, "skipped": launch.skipped, "notes": launch.notes,
            "protections": {name: name in launch.active for name in PROTECTIONS},
            "limits": launch.policy.limits(), "user": launch.user_name, "launcher_pid": os.getpid(),
            "forked": _RUN_IN_PROCESS is not None}  # the kernel forked from a preloaded zygote
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def launch(policy: SandboxPolicy, cmd: list[str], report: str | None = None) -> NoReturn:
    """Apply ``policy`` to this process and exec ``cmd`` (the body of ``exec``)."""
    if not cmd:
        _die("no command given")
    run = _Launch(policy, cmd)
    if policy.mode == "off":
        os.execvp(cmd[0], cmd)
    run.umask = os.umask(0o022)  # mount points and HOME must be traversable by the sandbox user
    report_fd = None
    if report:  # opened now: once the mounts are made, its directory may be hidden
        try:
            report_fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            _die(f"cannot write the report {report}: {e}")
    run.mpl_files = _read_matplotlib_cache(policy)  # before the grader's home is hidden

    # the sandbox user
    if policy.user:
        try:
            pw = pwd.getpwnam(policy.user)
            run.uid, run.gid, run.user_name = pw.pw_uid, pw.pw_gid, pw.pw_name
        except KeyError:
            run.fail("drop_privileges", f"no user {policy.user!r}")
        if run.uid is not None and os.geteuid() != 0:
            run.fail("drop_privileges", "not root")
            run.uid = run.gid = None

    # namespaces
    wants_mounts = bool(policy.hide or policy.read_only or policy.writable or policy.scratch)
    if wants_mounts:
        try:
            _unshare(CLONE_NEWNS)
            _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
            run.mounted = True
        except OSError as e:
            run.fail("mount_namespace", str(e))
    if not policy.network:
        try:
            _unshare(CLONE_NEWNET)
            try:
                _loopback_up()
            except OSError:
                pass
            run.active["network_namespace"] = "own empty network"
        except OSError as e:
            run.fail("network_namespace", str(e))
    if run.mounted:
        counts = _build_filesystem(run)
        run.active["mount_namespace"] = (f"hidden {counts['hide']}, scratch {counts['scratch']}, "
                                         f"read-only {counts['ro']}, substituted {counts['sub']}, "
                                         f"writable {counts['rw']}")

    # can the sandbox user run the command in this view?
    if run.uid is not None:
        problem = _user_can_run(run)
        if problem:
            run.fail("drop_privileges", problem)
            run.uid = run.gid = None
        else:
            run.active["drop_privileges"] = f"{run.user_name}, uid {run.uid}"

    # writable directories, HOME
    if run.uid is not None:
        for p in policy.writable:
            real = os.path.realpath(p)
            if os.path.isdir(real):
                try:
                    _hand_over(real, run)
                except OSError as e:
                    run.note(f"! cannot hand {real} to uid {run.uid}: {e.strerror or e}")
    try:
        _make_home(run)
    except OSError as e:
        run.note(f"! no private HOME: {e}")

    _set_rlimits(run)

    use_pid = policy.pid_namespace and run.mounted
    if use_pid:
        try:
            _unshare(CLONE_NEWPID)
            run.active["pid_namespace"] = "own /proc"
        except OSError as e:
            run.skipped["pid_namespace"] = str(e)
            use_pid = False

    print(_summary(run), file=sys.stderr, flush=True)
    _write_report(run, report_fd)
    if use_pid:
        # ipykernel exits when its parent is not JPY_PARENT_PID; inside the namespace its
        # parent is PID 1. "1" turns that check off; the launcher watches the real parent
        # instead (see _supervise).
        if "JPY_PARENT_PID" in run.env:
            run.env["JPY_PARENT_PID"] = "1"
        _supervise(run)
    _become_user_and_exec(run)


# ----------------------------------------------------------------------------
# Jupyter integration (created on first access: the launcher must stay light)
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _kernel_manager_class() -> type:
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Any as AnyTrait
    from traitlets import Bool, Dict, Integer, List, Unicode

    class SandboxedKernelManager(AsyncKernelManager):
        """An ``AsyncKernelManager`` whose kernels run in the sandbox of :mod:`autograder.sandbox`.

        The policy is ``sandbox_policy`` (a :class:`SandboxPolicy`) when set, else
        ``SandboxPolicy.from_env()``, with the traits below applied. The kernel works in a copy of
        the directory nbclient passes as ``cwd`` (the submission's autograded directory; regular
        files and folders only, :func:`copy_plain`), made in a per-kernel directory outside the
        course and deleted after the kernel: nbgrader then writes the graded notebook, as root,
        into a directory the kernel never had in its view (``private_copy``). That copy and a
        per-kernel runtime directory (connection file, unix sockets) are the writable paths. With
        ``private_copy = False`` the kernel works in ``cwd`` itself; once it is shut down, what the
        sandbox user owns there is given back to the directory's previous owner (:func:`hand_back`)
        and what it left that is not a regular file or folder is removed (:func:`strip_links`).
        With the network isolated, the kernel is
        reached over ZeroMQ ``ipc`` (unix sockets) in that runtime directory. Interrupts
        (``SIGINT`` to the process group) and shutdown work as usual; killing the kernel
        kills every process it started (its PID namespace ends).
        """

        sandbox_mode = Unicode("", help="auto, required or off (default: AUTOGRADER_SANDBOX, else auto)").tag(config=True)
        hide = List(Unicode(), help="Directories to hide, besides the policy's").tag(config=True)
        read_only = List(Unicode(), help="Paths to keep read-only, besides the policy's (the course's library "
                         "packages and data caches: the kernel imports and reads them)").tag(config=True)
        kernel_env = Dict(Unicode(), help="Extra environment variables for the kernel").tag(config=True)
        writable = List(Unicode(), help="Paths to keep writable, besides the kernel's directory").tag(config=True)
        substitute = Dict(Unicode(), help="{path in the kernel's view: host path shown there instead, read-only}, "
                          "besides the policy's (a student edition of a library package: autograder.edition)"
                          ).tag(config=True)
        memory_mb = Integer(None, allow_none=True, help="Memory cap in MiB (default: policy)").tag(config=True)
        cpu_seconds = Integer(None, allow_none=True, help="CPU seconds per kernel (default: policy)").tag(config=True)
        sandbox_user = Unicode("", help="User the kernel runs as (default: policy, nobody)").tag(config=True)
        sandbox_backend = Unicode("", help="native, bwrap or auto (default: AUTOGRADER_SANDBOX_BACKEND, else auto: "
                                  "native as root with CAP_SYS_ADMIN, else bubblewrap where it works)").tag(config=True)
        sandbox_policy = AnyTrait(None, allow_none=True, help="A SandboxPolicy to start from (not configurable)")
        private_copy = Bool(True, help="Run the kernel in a copy of its working directory (regular files and folders "
                            "only), deleted after it: the directory nbgrader writes the graded notebook into, as "
                            "root, is never writable by the kernel. False: the kernel works in that directory, "
                            "which is handed to the sandbox user and back").tag(config=True)

        _sandbox_base: str | None = None
        _sandbox_policy: SandboxPolicy | None = None
        _sandbox_owners: dict | None = None
        _sandbox_cwd: str | None = None

        def make_policy(self, cwd: str | None) -> SandboxPolicy:
            if isinstance(self.sandbox_policy, SandboxPolicy):
                base = dataclasses.replace(self.sandbox_policy)
                base.hide, base.read_only, base.writable = list(base.hide), list(base.read_only), list(base.writable)
            else:
                base = SandboxPolicy.from_env()
            if self.sandbox_mode:
                base.mode = self.sandbox_mode
            if self.memory_mb is not None:
                base.memory_bytes = self.memory_mb * MiB or None
            if self.cpu_seconds is not None:
                base.cpu_seconds = self.cpu_seconds or None
            if self.sandbox_user:
                base.user = self.sandbox_user
            if self.sandbox_backend:  # bwrap backend
                base.backend = self.sandbox_backend
            base.hide += [Path(p) for p in self.hide]
            base.read_only += [Path(p) for p in self.read_only if os.path.exists(p)]
            base.env = {**base.env, **self.kernel_env}
            base.writable += [Path(p) for p in self.writable]
            base.substitute = {**base.substitute, **self.substitute}
            if cwd:
                base.writable.append(Path(os.path.abspath(cwd)))
            base.validate()
            return base

        def _remember_owners(self, policy: SandboxPolicy) -> None:
            ids = self._sandbox_ids(policy)
            self._sandbox_owners = {}
            if not ids:
                return
            for p in policy.writable:
                try:
                    st = os.lstat(os.path.realpath(p))
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode) and st.st_uid != ids[0]:
                    self._sandbox_owners[os.path.realpath(p)] = (st.st_uid, st.st_gid, ids[0])

        def _give_back(self) -> None:
            for path, (uid, gid, sandbox_uid) in (self._sandbox_owners or {}).items():
                try:
                    hand_back(path, uid, gid, sandbox_uid)
                except (OSError, RecursionError) as e:  # a tree deeper than os.walk's recursion
                    self.log.warning("autograder.sandbox: could not give %s back to uid %s: %s", path, uid, e)
            self._sandbox_owners = {}

        def _sandbox_ids(self, policy: SandboxPolicy) -> tuple[int, int] | None:
            if not policy.user or os.geteuid() != 0:
                return None
            if resolve_backend(policy) == "bwrap":  # bwrap backend: is the kernel another user on the host?
                from autograder.sandbox import bwrap

                if not bwrap.privileged():
                    return None  # a user namespace: the kernel keeps the grader's uid on the host
            try:
                pw = pwd.getpwnam(policy.user)
            except KeyError:
                return None
            return pw.pw_uid, pw.pw_gid

        async def _async_pre_start_kernel(self, **kw: Any):
            # with private_copy the kernel's writable directory is its copy, added below
            policy = self.make_policy(None if self.private_copy else kw.get("cwd"))
            self._sandbox_policy = policy
            self._sandbox_cwd = os.path.realpath(kw["cwd"]) if kw.get("cwd") else None
            if policy.mode == "off":
                return await super()._async_pre_start_kernel(**kw)
            if self._sandbox_owners is None:  # a restart keeps the owners seen first
                self._remember_owners(policy)
            if policy.mode == "required":
                check_required(policy)  # before anything is created
            if not self._sandbox_base or not os.path.isdir(self._sandbox_base):
                self._sandbox_base = new_kernel_base()
            run = os.path.join(self._sandbox_base, "run")
            os.makedirs(run, mode=0o700, exist_ok=True)
            ids = self._sandbox_ids(policy)
            if ids:
                os.chown(run, *ids)
            policy.writable.append(Path(run))
            if self.private_copy and self._sandbox_cwd:
                # The kernel works in a copy of its directory (regular files and folders only): the
                # directory the grader writes the graded notebook into, as root, is never in its view.
                work = os.path.join(self._sandbox_base, "work")
                if not os.path.isdir(work):  # a restarted kernel keeps its files
                    left_out = copy_plain(self._sandbox_cwd, work)
                    if left_out:
                        self.log.warning("autograder.sandbox: not copied for the kernel (not regular files): %s",
                                         ", ".join(left_out[:20]))
                    if ids:
                        os.chown(work, *ids)
                        for entry, _ in walk_plain(work):
                            os.chown(entry.path, *ids, follow_symlinks=False)
                policy.writable.append(Path(work))
                kw["cwd"] = work
            policy.home = Path(run) / "home"
            if not policy.network:
                self.transport = "ipc"
                self.cache_ports = False
                self.ip = os.path.join(run, "ipc")
            if not self.kernel_id:
                import uuid

                self.kernel_id = kw.pop("kernel_id", None) or str(uuid.uuid4())
            kernel_id = self.kernel_id
            if not self._connection_file_written:
                self.connection_file = os.path.join(run, f"kernel-{kernel_id}.json")
            return await super()._async_pre_start_kernel(**kw)

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            policy = self._sandbox_policy
            if policy is None or policy.mode == "off" or not self._sandbox_base:
                return cmd
            ids = self._sandbox_ids(policy)
            if ids and os.path.exists(self.connection_file):
                os.chown(self.connection_file, *ids)  # the kernel reads its own connection file
            report = os.path.join(self._sandbox_base, "report.json")  # outside the sandbox's view
            try:
                os.unlink(report)
            except FileNotFoundError:
                pass
            return wrap_command(cmd, policy, report=report)

        def active_protections(self, timeout: float = 10.0) -> dict[str, Any]:
            """What the launcher of the running kernel made active (its report), e.g.
            ``{"protections": {"mount_namespace": True, ...}, "active": {...}, "skipped": {...}}``.
            Without a sandbox (mode off): every protection False."""
            policy = self._sandbox_policy
            if policy is None or policy.mode == "off" or not self._sandbox_base:
                return {"protections": {name: False for name in PROTECTIONS}, "active": {}, "skipped": {},
                        "mode": "off"}
            path = os.path.join(self._sandbox_base, "report.json")
            deadline = time.monotonic() + timeout
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the sandbox launcher wrote no report {path}")
                time.sleep(0.02)
            with open(path) as f:
                data = json.load(f)
            data["mode"] = policy.mode
            return data

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                policy = self._sandbox_policy
                if self._sandbox_cwd and policy is not None and policy.mode != "off" and not self.private_copy:
                    removed = strip_links(self._sandbox_cwd)
                    if removed:
                        self.log.warning("autograder.sandbox: removed what the kernel left in %s and the grader must not "
                                         "follow: %s", self._sandbox_cwd, ", ".join(removed[:20]))
                self._give_back()
                self._sandbox_owners = None
                if self._sandbox_base:
                    remove_tree(self._sandbox_base)  # the kernel's copy of its directory with it
                    self._sandbox_base = None

        _killing_now = False

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            self._killing_now = bool(now)
            try:
                await super()._async_shutdown_kernel(now=now, restart=restart)
            finally:
                self._killing_now = False

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts a kernel before every shutdown. Before a kill (``now``, the
            # grader's "immediate" shutdown) that interrupt serves nothing, and one that lands while
            # the kernel is still in a message handler (say publishing its last "idle") is logged by
            # ipykernel as "KeyboardInterrupt caught in kernel." in the grader's log: leave it out.
            if self._killing_now:
                return
            await super()._async_interrupt_kernel()

        # AsyncKernelManager binds its public coroutines to the base functions: rebind ours
        pre_start_kernel = _async_pre_start_kernel
        cleanup_resources = _async_cleanup_resources
        shutdown_kernel = _async_shutdown_kernel
        interrupt_kernel = _async_interrupt_kernel

    SandboxedKernelManager.__module__ = __name__
    SandboxedKernelManager.__qualname__ = "SandboxedKernelManager"
    return SandboxedKernelManager


@functools.lru_cache(maxsize=None)
def sandboxed_execute(base: type | None = None) -> type:
    """A subclass of the preprocessor ``base`` (default: nbgrader's ``Execute``) whose kernels
    run in the sandbox (:class:`SandboxedKernelManager`).

    nbgrader's ``Execute`` passes ``kernel_manager_class=AsyncKernelManager`` to nbclient as a
    keyword argument, which overrides ``c.Execute.kernel_manager_class`` from the
    configuration: list ``sandboxed_execute()`` (or ``sandboxed_execute(SomeExecute)`` for a
    subclass of ``Execute``) in ``c.Autograde.autograde_preprocessors`` instead. The subclass
    reads the configuration of ``base`` and of ``Execute`` as well as its own section.
    """
    if base is None:
        from nbgrader.preprocessors import Execute as base
    kernel_manager = _kernel_manager_class()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", kernel_manager)
        base.__init__(self, *args, **kwargs)

    name = f"Sandboxed{base.__name__}"
    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__, "__qualname__": name,
                               "__doc__": f"``{base.__name__}`` with kernels in the sandbox of autograder.sandbox."})
    return cls


def _execute_class() -> type:
    return sandboxed_execute(None)


def __getattr__(name: str) -> Any:
    if name == "SandboxedKernelManager":
        return _kernel_manager_class()
    if name == "SandboxedExecute":
        return _execute_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def main(argv: Iterable[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_probe"]:  # internal: one protection, in a throwaway process
        try:
            _probe_child(argv[1], argv[2:])
        except BaseException as e:  # noqa: BLE001
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        return 0
    parser = argparse.ArgumentParser(prog="python -m autograder.sandbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="which protections work on this machine")
    p.add_argument("--json", action="store_true", help="print {protection: works} as JSON")
    p.add_argument("--user", default=os.environ.get("AUTOGRADER_SANDBOX_USER") or "nobody")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="native, bwrap or auto (default: AUTOGRADER_SANDBOX_BACKEND, else auto)")
    sub.add_parser("policy", help="print the policy from the environment as JSON")
    e = sub.add_parser("exec", help="run a command in the sandbox")
    e.add_argument("--policy", default=None, help="policy as JSON text or a JSON file (default: from the environment)")
    e.add_argument("--report", default=None, help="write what was made active to this JSON file")
    e.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    if args.command == "probe":
        backend = resolve_backend(args.backend)
        details = probe_details(args.user, backend=backend)
        if args.json:
            print(json.dumps({k: v[0] for k, v in details.items()}, indent=1))
        else:
            print(describe({k: v[0] for k, v in details.items()}, user=args.user, backend=backend))
            for name, (ok, why) in details.items():
                if not ok and why:
                    print(f"  {name}: {why}")
            if backend_name(args.backend) == "auto":  # bwrap backend: what the other one would give
                other = "native" if backend == "bwrap" else "bwrap"
                details = probe_details(args.user, backend=other)
                print(f"not used (AUTOGRADER_SANDBOX_BACKEND={other}): "
                      + describe({k: v[0] for k, v in details.items()}, user=args.user, backend=other))
                for name, (ok, why) in details.items():
                    if not ok and why:
                        print(f"  {name}: {why}")
        return 0
    if args.command == "policy":
        print(json.dumps(SandboxPolicy.from_env().to_dict(), indent=1, sort_keys=True))
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        policy = SandboxPolicy.from_json(args.policy) if args.policy else SandboxPolicy.from_env()
    except (OSError, ValueError) as err:
        _die(f"bad policy: {err}")
    launch(policy, cmd, args.report)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
