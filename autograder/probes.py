r"""Hidden tests that probe in the student's kernel and decide in a trusted process.

A hidden test cell written in three sections (inside nbgrader's hidden-test markers)::

    ### BEGIN HIDDEN TESTS
    ### INPUTS
    g = torch.Generator().manual_seed(GRADER_SEED)   # the grader's secret seed for this submission
    ps = [torch.softmax(torch.randn(7, 5, dtype=DTYPE, generator=g), -1)]
    ### PROBE
    H = [categorical_entropy(p) for p in ps]          # the student's code, on the grader's inputs
    ### CHECK
    for p, h in zip(ps, H):                           # decides the points: never in the kernel
        assert torch.allclose(h, ref.categorical_entropy(p))
    ### END HIDDEN TESTS

is graded in two processes:

- the **student's kernel** (sandboxed, as every cell) runs ``GRADER_SEED = S``, INPUTS and PROBE,
  then sends the values of the names PROBE binds and CHECK reads, **as data**
  (:func:`export_code`): numbers, strings, ``None``, lists, tuples, dicts with string keys, and
  tensors and arrays as dtype, shape and raw bytes; nothing that runs code when read;
- the **checker** (:mod:`autograder.checker`, a separate process that never loads student code)
  runs the lab's setup cell, INPUTS with the same ``S``, binds the decoded values, and runs CHECK.
  The cell passes when CHECK raises nothing. Its outputs are replaced by the checker's verdict
  (:func:`verdict_outputs`): what the kernel printed while probing never reaches the feedback.

``S`` is drawn afresh for every submission (``secrets``; ``AUTOGRADER_SEED`` fixes it, to
reproduce a grade), so a submission cannot know its inputs before it is graded, and whatever
the kernel does to its own copy of the inputs (or to the code that encodes the values) cannot
change what the checker compares them with: a forged value passes only if it is the right
answer. A name bound by INPUTS is never taken from the kernel.
"""
from __future__ import annotations

import ast
import base64
import json
import math
import os
import re
import secrets

__all__ = [
    "MIME", "ProbeCell", "ProbeError", "decode", "export_code", "find_payload", "parse", "seed_for",
    "submission_seed", "verdict_outputs",
]

#: the MIME type of the kernel's one display_data output that carries the probed values
MIME = "application/vnd.autograder.probe+json"
MAX_PAYLOAD = 32 << 20  # bytes of JSON one probe may send
MAX_DEPTH = 32
SEED_ENV = "AUTOGRADER_SEED"

_MARK = re.compile(r"^[ \t]*### (INPUTS|PROBE|CHECK)[ \t]*$", re.M)
_HIDDEN = re.compile(r"^[ \t]*### (BEGIN|END) HIDDEN TESTS[^\n]*$", re.M)
#: dtypes that cross, by name: the same name in torch and numpy
DTYPES = ("float16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32", "int64",
          "uint8", "bool")


class ProbeError(ValueError):
    """A probe cell that cannot be split, or a payload that is not plain data (one line)."""


class ProbeCell:
    """The three sections of a probe cell, and the names that cross from the kernel."""

    def __init__(self, inputs: str, probe: str, check: str, exported: list[str]):
        self.inputs, self.probe, self.check, self.exported = inputs, probe, check, exported

    def kernel_code(self, seed: int, nonce: str, prelude: str = "") -> str:
        """What the student's kernel runs: the grader's ``prelude`` (the reference versions the cell
        binds, :func:`autograder.edition.injection_source`), the seed, INPUTS, PROBE, then the export."""
        return (f"{prelude}GRADER_SEED = {int(seed)}\n{self.inputs}\n{self.probe}\n"
                + export_code(self.exported, nonce))


def _sections(source: str) -> dict[str, str] | None:
    body = _HIDDEN.sub("", source)
    marks = list(_MARK.finditer(body))
    if not marks:
        return None
    found: dict[str, str] = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(body)
        name = m.group(1).lower()
        if name in found:
            raise ProbeError(f"the section ### {m.group(1)} appears twice")
        found[name] = body[m.end():end].strip("\n") + "\n"
    if list(found) != [n for n in ("inputs", "probe", "check") if n in found]:
        raise ProbeError("the sections must come in the order ### INPUTS, ### PROBE, ### CHECK")
    if "probe" not in found or "check" not in found:
        raise ProbeError("a probe cell needs a ### PROBE and a ### CHECK section (### INPUTS is optional)")
    found.setdefault("inputs", "\n")
    # what comes before the first marker (comments, the cell's title) belongs to no section
    if body[: marks[0].start()].strip() and any(not line.lstrip().startswith("#")
                                                for line in body[: marks[0].start()].strip().splitlines()):
        raise ProbeError("code before the first ### INPUTS / ### PROBE marker: put it in a section")
    return found


def _bound(code: str, what: str) -> set[str]:
    from autograder.kernel.guard import bound_names

    names = bound_names(code)
    if names is None:
        raise ProbeError(f"the {what} section is not valid Python")
    return set(names)


def _read(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise ProbeError(f"the CHECK section is not valid Python: {err.msg} (line {err.lineno})") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def parse(source: str) -> ProbeCell | None:
    """The probe cell in ``source``, or ``None`` for a cell without section markers (an ordinary
    hidden test, run in the kernel). Raises :class:`ProbeError` for a malformed one."""
    found = _sections(source)
    if found is None:
        return None
    inputs = _bound(found["inputs"], "INPUTS")
    probed = _bound(found["probe"], "PROBE")
    clash = sorted(inputs & probed)
    if clash:
        raise ProbeError(f"PROBE rebinds {', '.join(clash)}, bound by INPUTS: the checker never takes an input "
                         "from the kernel; give the probed value another name")
    exported = sorted(probed & _read(found["check"]))
    return ProbeCell(found["inputs"], found["probe"], found["check"], exported)


# ----------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------

def submission_seed() -> int:
    """A fresh secret seed for one submission (``$AUTOGRADER_SEED`` when set: to reproduce a grade)."""
    fixed = os.environ.get(SEED_ENV, "").strip()
    if fixed:
        try:
            return int(fixed) % (1 << 31)
        except ValueError:
            raise ProbeError(f"{SEED_ENV}={fixed!r} is not an integer") from None
    return secrets.randbelow(1 << 31)


def seed_for(submission: int, grade_id: str) -> int:
    """The seed of one probe cell: a different one per cell, all from the submission's."""
    import hashlib

    digest = hashlib.sha256(f"{submission}:{grade_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ----------------------------------------------------------------------------
# The kernel side: values -> data (runs in the student's kernel, so it is untrusted by design)
# ----------------------------------------------------------------------------

_EXPORT = r'''
def _autograder_payload(names, namespace, nonce):
    import base64, json, sys
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")

    def encode(value, depth):
        if depth > 32:
            raise TypeError("nested more than 32 levels deep")
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind in (list, tuple):
            items = [encode(v, depth + 1) for v in value]
            return items if kind is list else {"tuple": items}
        if kind is dict:
            if not all(type(k) is str for k in value):
                raise TypeError("a dict whose keys are not all strings")
            return {"dict": [[k, encode(v, depth + 1)] for k, v in value.items()]}
        if torch is not None and isinstance(value, torch.Tensor):
            t = value.detach()
            if t.layout != torch.strided:
                raise TypeError(f"a {t.layout} tensor: send a dense one")
            device = str(t.device)
            t = t.cpu().contiguous()
            dtype = str(t.dtype).replace("torch.", "")
            raw = t.numpy().tobytes() if t.numel() else b""
            return {"tensor": {"dtype": dtype, "shape": list(t.shape), "device": device,
                               "requires_grad": bool(value.requires_grad),
                               "data": base64.b64encode(raw).decode("ascii")}}
        if torch is not None and kind is torch.Size:
            return {"tuple": [int(v) for v in value]}
        if torch is not None and kind is torch.dtype:
            return {"dtype": str(value).replace("torch.", "")}
        if numpy is not None and isinstance(value, numpy.ndarray):
            a = numpy.ascontiguousarray(value)
            return {"ndarray": {"dtype": str(a.dtype), "shape": list(a.shape),
                                "data": base64.b64encode(a.tobytes()).decode("ascii")}}
        if numpy is not None and isinstance(value, numpy.generic):
            return encode(value.item(), depth + 1)
        raise TypeError(f"a value of type {kind.__module__}.{kind.__qualname__}")

    values, problems = {}, {}
    for name in names:
        if name not in namespace:
            problems[name] = "not defined"
            continue
        try:
            values[name] = encode(namespace[name], 0)
        except Exception as err:
            problems[name] = f"cannot be sent as data: {err}"
    return json.dumps({"nonce": nonce, "values": values, "problems": problems})
'''


def export_code(names: list[str], nonce: str) -> str:
    """The code the kernel runs after PROBE: it sends ``names``' values as one display_data
    output of type :data:`MIME`, then forgets its helper."""
    return (_EXPORT + "\nfrom IPython.display import publish_display_data as _autograder_publish\n"
            f"_autograder_publish({{{MIME!r}: _autograder_payload({names!r}, globals(), {nonce!r})}})\n"
            "del _autograder_payload, _autograder_publish\n")


def find_payload(found: list, nonce: str) -> tuple[dict | None, str | None]:
    """``(payload, None)`` from the :data:`MIME` data a probe cell's kernel sent (in the order it
    came), or ``(None, why)``: there must be exactly one, and it must carry this cell's nonce."""
    if not found:
        return None, "the probe sent no values (the cell stopped before its end, or its output was removed)"
    if len(found) > 1:
        return None, f"the probe's output appeared {len(found)} times: refused"
    text = found[0]
    if not isinstance(text, str):
        text = json.dumps(text)
    if len(text) > MAX_PAYLOAD:
        return None, f"the probe sent {len(text)} bytes, more than {MAX_PAYLOAD}"
    try:
        payload = json.loads(text)
    except ValueError:
        return None, "the probe's output is not JSON"
    if not isinstance(payload, dict) or payload.get("nonce") != nonce:
        return None, "the probe's output does not belong to this cell"
    if not isinstance(payload.get("values"), dict) or not isinstance(payload.get("problems", {}), dict):
        return None, "the probe's output is malformed"
    return payload, None


# ----------------------------------------------------------------------------
# The trusted side: data -> values (runs in the checker, validates everything)
# ----------------------------------------------------------------------------

def decode(value, depth: int = 0):
    """A kernel-sent value as plain Python, torch tensors and numpy arrays. Raises
    :class:`ProbeError` for anything else. Strict: an unknown tag, a dtype outside
    :data:`DTYPES`, a shape that does not match the bytes, all refused."""
    if depth > MAX_DEPTH:
        raise ProbeError("a value nested too deeply")
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return value
    if type(value) is list:
        return [decode(v, depth + 1) for v in value]
    if type(value) is not dict or len(value) != 1:
        raise ProbeError(f"not a value the probe protocol knows: {type(value).__name__}")
    (tag, body), = value.items()
    if tag == "tuple" and type(body) is list:
        return tuple(decode(v, depth + 1) for v in body)
    if tag == "dict" and type(body) is list:
        out = {}
        for item in body:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not str:
                raise ProbeError("a malformed dict")
            out[item[0]] = decode(item[1], depth + 1)
        return out
    if tag == "dtype" and body in DTYPES:
        import torch

        return getattr(torch, body)
    if tag in ("tensor", "ndarray") and type(body) is dict:
        return _array(tag, body)
    raise ProbeError(f"not a value the probe protocol knows: {tag!r}")


def _array(tag: str, body: dict):
    import numpy as np

    dtype, shape, data = body.get("dtype"), body.get("shape"), body.get("data")
    if dtype not in DTYPES:
        raise ProbeError(f"a {tag} of dtype {dtype!r}: only {', '.join(DTYPES)} cross")
    if type(shape) is not list or not all(type(n) is int and 0 <= n for n in shape) or len(shape) > 16:
        raise ProbeError(f"a {tag} with a malformed shape")
    if type(data) is not str:
        raise ProbeError(f"a {tag} without its data")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ProbeError(f"a {tag} whose data is not base64") from None
    np_dtype = np.dtype(dtype)
    count = math.prod(shape)
    if len(raw) != count * np_dtype.itemsize:
        raise ProbeError(f"a {tag} of shape {tuple(shape)} and dtype {dtype} with {len(raw)} bytes of data")
    array = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
    if tag == "ndarray":
        return array
    import torch

    tensor = torch.from_numpy(array)
    device = body.get("device", "cpu")
    if type(device) is not str:
        raise ProbeError("a tensor with a malformed device")
    # a plain tensor (no subclass: the checker's comparisons are torch's own); the device it was on
    # in the kernel and its autograd flag are kept as attributes, for checks that ask
    tensor.sent_device = device
    tensor.sent_requires_grad = bool(body.get("requires_grad", False))
    return tensor


# ----------------------------------------------------------------------------
# The verdict, as the cell's outputs
# ----------------------------------------------------------------------------

def verdict_outputs(passed: bool, message: str | None) -> list[dict]:
    """The outputs a probe cell keeps: nothing when it passed, one error (the checker's words,
    never the kernel's) when it failed."""
    if passed:
        return []
    text = message or "a hidden check failed"
    ename, _, evalue = text.partition(": ")
    if not evalue or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", ename):
        ename, evalue = "HiddenTestFailed", text
    return [{"output_type": "error", "ename": ename, "evalue": evalue,
             "traceback": [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"]}]
