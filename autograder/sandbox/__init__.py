"""The sandbox a grading kernel runs in (namespaces, an unprivileged user, rlimits).

The implementation is :mod:`autograder.sandbox.launcher`, which also runs as a script: the
grader starts ``python -I launcher.py exec --policy ... -- KERNEL`` and the launcher confines
itself before it executes the kernel. See its docstring for what is enforced and what is not.
``python -m autograder.sandbox probe`` prints what this machine allows. The same policy can
be enforced with bubblewrap instead, without root: :mod:`autograder.sandbox.bwrap`
(``AUTOGRADER_SANDBOX_BACKEND=bwrap``; ``auto`` picks it where the launcher lacks root).
With the native launcher, kernels are forked from a preloaded process instead of executed:
:mod:`autograder.sandbox.zygote`.
"""
from autograder.sandbox.launcher import (
    BACKENDS,
    MODES,
    PROTECTIONS,
    SandboxPolicy,
    SandboxUnavailable,
    active_protections,
    check_required,
    describe,
    hand_back,
    main,
    missing_protections,
    needed_protections,
    probe,
    probe_details,
    resolve_backend,
    sandboxed_execute,
    strip_links,
    wrap_command,
)



def __getattr__(name: str):
    # Built on first use (they import jupyter_client and nbgrader, which the launcher does not need)
    if name in ("SandboxedKernelManager", "SandboxedExecute"):
        from autograder.sandbox import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROTECTIONS", "MODES", "SandboxPolicy", "SandboxUnavailable", "probe", "probe_details", "describe",
    "needed_protections", "missing_protections", "check_required", "active_protections", "wrap_command",
    "hand_back", "strip_links", "sandboxed_execute", "SandboxedKernelManager", "SandboxedExecute", "main",
    "BACKENDS", "resolve_backend",  # bwrap backend
]
