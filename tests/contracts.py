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


def check_bijection(t, x: torch.Tensor, *, context: torch.Tensor | None = None, atol: float = 1e-10,
                    rtol: float = 1e-8, n_jacobian: int = 3):
    """A bijection's contract (STYLE.md: ``forward(x) -> (z, logabsdet)`` maps data to noise).

    - ``logabsdet`` of ``forward`` and ``inverse`` is per example, shape ``(B,)``;
    - ``inverse(forward(x)) == x`` and the inverse's ``logabsdet`` is minus the forward's;
    - ``logabsdet`` equals ``log|det J|`` of the flattened Jacobian from
      ``torch.autograd.functional.jacobian``, for the first ``n_jacobian`` examples, one at a
      time (so it is also per example), of both ``forward`` at ``x`` and ``inverse`` at ``z``;
    - an input with one extra entry along dimension 1 raises ``ValueError`` in both directions.

    Give ``x`` (and the bijection) in float64 for the default tolerances.
    """
    from torch.autograd.functional import jacobian

    kw = {} if context is None else {"context": context}
    B = x.shape[0]
    z, ld = t.forward(x, **kw)
    assert ld.shape == (B,), f"forward's logabsdet must have shape (B,) = ({B},), got {tuple(ld.shape)}"
    assert z.shape[0] == B and z.numel() == x.numel(), f"forward maps {tuple(x.shape)} to {tuple(z.shape)}"
    x_back, ld_inv = t.inverse(z, **kw)
    assert ld_inv.shape == (B,), f"inverse's logabsdet must have shape (B,), got {tuple(ld_inv.shape)}"
    assert x_back.shape == x.shape
    torch.testing.assert_close(x_back, x, atol=atol, rtol=rtol, msg="inverse(forward(x)) != x")
    torch.testing.assert_close(ld_inv, -ld, atol=atol, rtol=rtol, msg="inverse's logabsdet != -forward's")
    n = x[0].numel()
    for b in range(min(n_jacobian, B)):
        ctx = {} if context is None else {"context": context[b:b + 1]}
        for fn, at, want in ((t.forward, x, ld), (t.inverse, z, ld_inv)):
            J = jacobian(lambda v: fn(v, **ctx)[0].reshape(-1), at[b:b + 1]).reshape(n, n)
            sign, logabs = torch.linalg.slogdet(J)
            assert sign != 0, "the Jacobian is singular"
            torch.testing.assert_close(logabs, want[b], atol=max(atol, 1e-9), rtol=max(rtol, 1e-7),
                                       msg=f"logabsdet of {fn.__name__} != log|det J| (example {b})")
    for fn, at in ((t.forward, x), (t.inverse, z)):
        bad = torch.cat([at, at[:, :1]], dim=1)  # one extra entry along dimension 1
        with pytest.raises(ValueError):
            fn(bad, **kw)
    return z, ld
