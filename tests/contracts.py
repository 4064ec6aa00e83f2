"""Contract checks shared by every model's tests (see STYLE.md, "One contract").

Each later chapter calls these on its models, so the interface every chapter
relies on is checked in one place.
"""
from __future__ import annotations

import pytest
import torch


def check_density_model(model, x: torch.Tensor, *, context: torch.Tensor | None = None, sample_n: int = 5):
    """``log_prob`` is per example, finite and never averaged; ``loss`` is minus its
    mean; ``sample`` has the event shape; a wrong event shape raises ``ValueError``.

    For a conditional model pass ``context``: then ``log_prob(x, context)``,
    ``loss((context, x))`` and ``sample(context)`` are checked instead.
    """
    args = (context,) if context is not None else ()
    lp = model.log_prob(x, *args)
    assert lp.shape == (x.shape[0],), f"log_prob must return (B,), got {tuple(lp.shape)}"
    assert torch.isfinite(lp).all()
    # per example: evaluating halves separately gives the same numbers
    h = x.shape[0] // 2
    parts = torch.cat(
        [
            model.log_prob(x[:h], *(a[:h] for a in args)),
            model.log_prob(x[h:], *(a[h:] for a in args)),
        ]
    )
    torch.testing.assert_close(parts, lp, rtol=1e-5, atol=1e-6)
    if hasattr(model, "loss"):
        batch = (context, x) if context is not None else x
        torch.testing.assert_close(model.loss(batch), -lp.mean(), rtol=1e-6, atol=1e-6)
    if hasattr(model, "sample"):
        s = model.sample(context) if context is not None else model.sample(sample_n)
        if isinstance(s, tuple):  # joint samplers return (latent, observed)
            s = s[-1]
        assert s.shape[-x.dim() + 1:] == x.shape[1:], f"sample has shape {tuple(s.shape)}"
    bad = torch.cat([x, x[:, :1]], dim=1)  # one extra event dimension
    with pytest.raises(ValueError):
        model.log_prob(bad, *args)


class SequencesChannelsFirst:
    """A sequence model (HMM, LDS) seen as a density on ``(B, D, T)`` arrays, for
    :func:`check_density_model`.

    The contract's wrong-shape probe appends one entry along dimension 1. On
    ``(B, T, D)`` data that would lengthen every sequence, which is legitimate;
    on this ``(B, D, T)`` view it adds an observed dimension, which the model
    must refuse. ``model.sample(n, T)`` returns ``(latents, x)``.
    """

    def __init__(self, model, T: int):
        self.model, self.T = model, T

    def log_prob(self, x):
        return self.model.log_prob(x.transpose(1, 2))

    def loss(self, x):
        return self.model.loss(x.transpose(1, 2))

    def sample(self, n):
        latents, x = self.model.sample(n, self.T)
        return latents, x.transpose(1, 2)
