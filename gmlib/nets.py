"""Small network builders shared by the chapters.

Models take their networks as arguments (the maths lives in the model, the
architecture here), so a chapter can swap an MLP for a convolutional net
without touching the model class.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["mlp"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU, "gelu": nn.GELU}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, activation: str = "relu") -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden[0] -> ... -> out_dim``.

    Linear layers with ``activation`` between them and none after the last.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    sizes = [in_dim, *hidden, out_dim]
    if any((not isinstance(s, int)) or s <= 0 for s in sizes):
        raise ValueError(f"layer sizes must be positive integers, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
