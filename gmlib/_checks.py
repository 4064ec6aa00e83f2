"""Input validation used at the public boundary of gmlib.

Every public function checks its tensor arguments with these helpers and raises
``ValueError`` naming the argument and the problem, so that a mistake surfaces
where it was made instead of as a shape error deep inside autograd.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_tensor", "check_same_shape", "check_probabilities", "check_int", "check_sequences"]


def check_tensor(
    x,
    name: str,
    *,
    event_shape: Sequence[int] | None = None,
    min_dim: int = 0,
    floating: bool = True,
    allow_nan: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a tensor fit for computation and return it.

    - ``floating``: the dtype must be a floating-point type (integer pixel
      tensors must be converted explicitly, so no precision is lost silently);
    - ``event_shape``: the trailing dimensions must equal this;
    - ``min_dim``: at least this many dimensions;
    - ``allow_nan``: NaN and infinite entries are refused unless allowed.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise ValueError(
            f"{name} must have a floating-point dtype, got {x.dtype}; convert it with {name}.float() or .double()"
        )
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if event_shape is not None:
        event_shape = tuple(event_shape)
        k = len(event_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k:]) != event_shape:
            raise ValueError(
                f"{name} must end in event shape {event_shape}, got shape {tuple(x.shape)}"
            )
    if not allow_nan and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise ValueError(f"{name} contains {bad} values")
    return x


def check_same_shape(**tensors: torch.Tensor) -> None:
    """All keyword tensors must have the same shape (no silent broadcasting)."""
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.shape != t0.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {name0} has shape {tuple(t0.shape)}; they must match"
            )


def check_probabilities(p: torch.Tensor, name: str, *, atol: float = 1e-5) -> torch.Tensor:
    """A probability vector along the last dimension: entries in [0, 1] summing to 1."""
    check_tensor(p, name, min_dim=1)
    if bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError(f"{name} must have entries in [0, 1]")
    total = p.sum(-1)
    if not torch.allclose(total, torch.ones_like(total), atol=atol):
        worst = (total - 1).abs().max().item()
        raise ValueError(f"{name} must sum to 1 along its last dimension (largest deviation {worst:.3g})")
    return p


def check_int(value, name: str, minimum: int = 1) -> int:
    """An integer (not a bool) of at least ``minimum``; returns it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def check_sequences(x, name: str, dim: int, dim_name: str = "D") -> torch.Tensor:
    """A floating batch of sequences ``(B, T, dim)`` with ``B, T >= 1``; returns it."""
    check_tensor(x, name, event_shape=(dim,))
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, T, {dim_name}={dim}), got {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must hold B >= 1 sequences of T >= 1 steps, got shape {tuple(x.shape)}")
    return x
