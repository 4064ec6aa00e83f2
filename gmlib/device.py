"""Device selection shared by every model and training function.

Order of preference: an explicit ``device=`` argument, then the environment
variable ``GMLIB_DEVICE`` (e.g. ``GMLIB_DEVICE=cpu`` to force the CPU on a GPU
machine), then CUDA, then Apple MPS, then the CPU.
"""
from __future__ import annotations

import os

import torch

__all__ = ["get_device", "describe_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    ``device`` wins when given; otherwise ``$GMLIB_DEVICE``; otherwise the best
    accelerator present (CUDA, then MPS), falling back to the CPU.

    Raises ``ValueError`` for an unknown device string, and for an accelerator
    that was asked for but is not present (rather than failing later, deep
    inside a model).
    """
    if device is None:
        device = os.environ.get("GMLIB_DEVICE") or None
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was requested but Apple MPS is not available on this machine")
    return dev


def describe_device(device: str | torch.device | None = None) -> str:
    """A one-line human description, e.g. ``'cuda:0 (NVIDIA H100 80GB HBM3)'``."""
    dev = get_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(dev)
