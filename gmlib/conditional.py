r"""Conditional density models: a network that outputs a distribution.

Chapter 1 opens with the simplest deep probabilistic model, a Gaussian whose
mean *and* variance depend on the input through a network,

.. math::  p_\theta(y \mid x) = \mathcal N\big(y \mid f_\theta(x), \operatorname{diag} e^{g_\theta(x)}\big),
           \tag{ch01:cond-gauss}

fitted by maximum likelihood: minimise the negative log-likelihood
:math:`-\frac1N \sum_n \log p_\theta(y_n\mid x_n)` with SGD. Unlike least
squares, the model learns where the data are noisy (heteroscedasticity).
"""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_tensor
from .device import get_device
from .probability import gaussian_log_prob

__all__ = ["ConditionalGaussian"]


class ConditionalGaussian(nn.Module):
    """:math:`p(y\\mid x)` Gaussian with mean and log-variance from one network.

    Parameters
    ----------
    net: maps inputs ``(B, x_dim)`` to ``(B, 2 * y_dim)``: the mean, then the
        log-variance, of each output dimension.
    x_dim, y_dim: input and output sizes.
    min_log_var, max_log_var: the log-variance is squashed smoothly into this
        range so a point fitted exactly cannot drive the likelihood to infinity.
    device: where the parameters live (default :func:`gmlib.device.get_device`).
    """

    def __init__(
        self,
        net: nn.Module,
        x_dim: int,
        y_dim: int = 1,
        *,
        min_log_var: float = -12.0,
        max_log_var: float = 6.0,
        device: str | torch.device | None = None,
    ):
        super().__init__()
        if min_log_var >= max_log_var:
            raise ValueError("min_log_var must be below max_log_var")
        self.net = net
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.min_log_var, self.max_log_var = float(min_log_var), float(max_log_var)
        self.to(get_device(device))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance, each ``(B, y_dim)``."""
        check_tensor(x, "x", event_shape=(self.x_dim,), min_dim=2)
        out = self.net(x)  # (B, 2 * y_dim)
        if out.shape != (x.shape[0], 2 * self.y_dim):
            raise ValueError(f"net must output shape (B, {2 * self.y_dim}), got {tuple(out.shape)}")
        mean, raw = out[:, : self.y_dim], out[:, self.y_dim :]
        lo, hi = self.min_log_var, self.max_log_var
        log_var = lo + (hi - lo) * torch.sigmoid(raw)  # smooth clamp into [lo, hi]
        return mean, log_var

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(y\mid x)` in nats, one value per example, shape ``(B,)``."""
        check_tensor(y, "y", event_shape=(self.y_dim,), min_dim=2)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows but x has {x.shape[0]}")
        mean, log_var = self(x)
        return gaussian_log_prob(y, mean, log_var)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood of a batch ``(x, y)``, for :func:`gmlib.train`."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError("ConditionalGaussian.loss expects a batch (x, y)")
        x, y = batch
        return -self.log_prob(y, x).mean()

    @torch.no_grad()
    def sample(self, x: torch.Tensor, n: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of ``y`` for each input: shape ``(n, B, y_dim)``."""
        mean, log_var = self(x)
        eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(0.5 * log_var) * eps
