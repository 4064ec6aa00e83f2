"""What every benchmark script shares: device syncs, thread limits, and the header it prints."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import platform

import torch

from ..data import digits, load_mnist
from ..device import describe_device, get_device


def image_splits(side: int, levels: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer images as rows ``(N, side * side)``: the digits' train / val / test splits (8, 17), or
    MNIST's first 50 000 / last 10 000 training images and its test set (28, 256; the files must be
    in ``gmlib.data.cache_dir()``). ``ValueError`` for any other size."""
    if side == 8 and levels == 17:
        return tuple(digits(s, "int", device=device) for s in ("train", "val", "test"))
    if side == 28 and levels == 256:
        train_all = (load_mnist("train", download=False) * 255).round()  # (60000, 784)
        test = (load_mnist("test", download=False) * 255).round()
        return train_all[:50000].to(device), train_all[50000:].to(device), test.to(device)
    raise ValueError(f"no data set with side {side} and {levels} levels (digits: 8, 17; MNIST: 28, 256)")


def mean_se(t: torch.Tensor) -> tuple[float, float]:
    """The mean of ``t`` and its standard error (sample standard deviation over the square root of n)."""
    t = t.double()
    return float(t.mean()), float(t.std() / math.sqrt(t.numel()))


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def blas_threads() -> str:
    """The thread counts of the BLAS libraries loaded so far, e.g. ``openblas:2`` (informative only)."""
    try:
        from threadpoolctl import threadpool_info

        info = [f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()]
        return ", ".join(info) if info else "unknown"
    except Exception:  # threadpoolctl missing or failing: the figure is informative only
        return "unknown"


def numpy_threads(n: int):
    """A context in which the BLAS libraries loaded so far (numpy's, SciPy's) use ``n`` threads, like torch."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()


def print_header(title: str, device: torch.device, rows: list[tuple[str, str]] = ()) -> None:
    """Print the title, the date, the versions, the threads, the device, then ``rows`` (label, value)."""
    lines = [
        ("date", datetime.datetime.now().isoformat(timespec="seconds")),
        ("torch", f"{torch.__version__}   python {platform.python_version()}"),
        ("threads", f"torch {torch.get_num_threads()}; BLAS {blas_threads()}"),
        ("device", describe_device(device)),
        *rows,
    ]
    width = max(len(label) for label, _ in lines) + 2
    print(title)
    for label, value in lines:
        print(f"{label:<{width}}{value}")
    print()


def add_device_arguments(parser) -> None:
    """The ``--device`` and ``--threads`` options every script takes."""
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: gmlib.device.get_device())")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run_on_device(args, run):
    """Apply ``--threads``, pick ``--device``, and call ``run(args, device)`` with numpy's BLAS
    limited to torch's thread count, so a baseline library gets the same threads as gmlib."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    with numpy_threads(torch.get_num_threads()):
        return run(args, device)


def with_settings(recipe, settings: list[str]):
    """``recipe`` (a frozen dataclass) with ``--set FIELD=VALUE`` changes, each value converted to the
    field's type; ``ValueError`` naming the fields when one is unknown or a value does not convert."""
    fields = [f.name for f in dataclasses.fields(recipe)]
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        recipe = dataclasses.replace(recipe, **{name: _convert(item, getattr(recipe, name), value)})
    return recipe


def _convert(item: str, current, value: str):
    """``value`` as the type of the field's ``current`` value: a tuple from comma-separated items,
    ``true``/``false`` for a bool, ``none`` or a number where the field is optional (now None)."""
    if isinstance(current, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(current, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"--set {item!r}: {value!r} is not true or false")
        return value.lower() == "true"
    if current is None or value.lower() == "none":
        if value.lower() == "none":
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        raise ValueError(f"--set {item!r}: {value!r} is neither a number nor none")
    kind = type(current)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"--set {item!r}: {value!r} is not a {kind.__name__}") from None
