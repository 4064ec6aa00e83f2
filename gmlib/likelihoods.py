r"""Observation models :math:`p(x \mid \text{decoder output})` for latent-variable models.

A decoder network (of a VAE in Chapter 5, of an autoregressive model or a flow
later) outputs *parameters*; an observation model turns them into a
distribution over the pixels, which are conditionally independent given the
parameters:

.. math::  \log p(x \mid \eta) = \sum_{d=1}^{D} \log p(x_d \mid \eta_d),   \tag{ch05:factorised-lik}

in nats, summed over the :math:`D` pixels. Choose the model that fits the data:

========================  ===========================  ===============  ===========================
class                     data ``x``                   ``param_size``   parameters per pixel
========================  ===========================  ===============  ===========================
:class:`Bernoulli`        binary, 0 or 1               1                logit
:class:`Categorical`      integers 0 .. levels-1       ``levels``       one logit per level
:class:`DiscretizedLogistic`  integers 0 .. levels-1   2                mean, log-scale
:class:`Gaussian`         real numbers                 1 or 2           mean (, log-variance)
========================  ===========================  ===============  ===========================

The first three are probability *masses* (``discrete = True``): their
:math:`-\log p(x)` is a code length and can be compared across models of the
same data. :class:`Gaussian` is a *density*; its values depend on the units of
:math:`x` and are not comparable with a mass (Theis et al. 2016).

Shapes
------
- Parameters ``params``: ``(*S, D)`` when ``param_size == 1``, else
  ``(*S, D, param_size)`` (parameters of one pixel are contiguous; a flat MLP
  output ``(N, D * P)`` becomes this shape with ``nn.Unflatten(-1, (D, P))``,
  see :meth:`Likelihood.param_shape`).
- Data ``x``: ``(*T, D)``, where ``T`` is a suffix of ``S``: ``x`` broadcasts
  over leading sample dimensions of ``params`` (e.g. ``(k, B, D, P)`` decoded
  from ``k`` latent samples per example against ``x`` of shape ``(B, D)``).
- ``log_prob(x, params) -> (*S,)``; ``sample(params)`` and ``mean(params) -> (*S, D)``.

Integer-valued data are given as floating-point tensors (integer dtypes are
refused, as everywhere in gmlib). Every public method checks its inputs and
raises ``ValueError``; subclasses implement the unchecked ``_log_prob``,
``_sample`` and ``_mean``, which models call in their inner loops after
checking once.

Equation labels (``ch05:...``) refer to Chapter 5 of the book.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as nnf

from ._checks import check_int, check_tensor

__all__ = ["Likelihood", "Bernoulli", "Categorical", "DiscretizedLogistic", "Gaussian"]

LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module):
    """Base class of the observation models (an ``nn.Module``, so that a learned
    parameter, e.g. a shared Gaussian variance, trains with the model it belongs to).

    Subclasses set ``param_size`` and ``discrete`` and implement ``_check_values``,
    ``_log_prob``, ``_sample`` and ``_mean``.
    """

    param_size: int = 1  # parameters the decoder outputs per pixel
    discrete: bool = True  # a probability mass (True) or a density (False)

    def param_shape(self, data_dim: int) -> tuple[int, ...]:
        """Trailing shape of ``params`` for ``data_dim`` pixels: ``(D,)`` or ``(D, param_size)``."""
        check_int(data_dim, "data_dim")
        return (data_dim,) if self.param_size == 1 else (data_dim, self.param_size)

    # -- checks ---------------------------------------------------------------------------

    def check_params(self, params: torch.Tensor, *, values: bool = True) -> tuple[torch.Size, int]:
        """Check ``params`` and return its sample shape ``S`` and the number of pixels ``D``.

        ``values=False`` checks the type and shape only, not that every entry is finite
        (that scan costs as much as a small decoder; :class:`gmlib.vae.VAE` skips it on
        every decode, and a non-finite loss is caught by :func:`gmlib.train.train`)."""
        check_tensor(params, "params", allow_nan=not values)
        P = self.param_size
        if P == 1:
            if params.dim() < 1:
                raise ValueError(f"params must have shape (*S, D), got {tuple(params.shape)}")
            return params.shape[:-1], params.shape[-1]
        if params.dim() < 2 or params.shape[-1] != P:
            raise ValueError(
                f"params of {type(self).__name__} must have shape (*S, D, {P}) (param_size = {P} per pixel), "
                f"got {tuple(params.shape)}; reshape a flat (N, D * {P}) output with nn.Unflatten(-1, (D, {P}))"
            )
        return params.shape[:-2], params.shape[-2]

    def check_x(
        self, x: torch.Tensor, sample_shape: torch.Size | None = None, data_dim: int | None = None
    ) -> torch.Tensor:
        """Check data ``x`` ``(*T, D)``: floating, finite, values the model supports, and
        (when given) ``D == data_dim`` and ``T`` a suffix of ``sample_shape``."""
        check_tensor(x, "x", min_dim=1)
        if data_dim is not None and x.shape[-1] != data_dim:
            raise ValueError(f"x has {x.shape[-1]} pixels (last dimension) but params describe {data_dim}")
        if sample_shape is not None:
            t = tuple(x.shape[:-1])
            s = tuple(sample_shape)
            if len(t) > len(s) or s[len(s) - len(t):] != t:
                raise ValueError(
                    f"x of shape {tuple(x.shape)} does not match params with sample shape {s} "
                    f"(x's leading dimensions must equal the last ones of params')"
                )
        self._check_values(x)
        return x

    def _check_values(self, x: torch.Tensor) -> None:  # overridden by discrete models
        pass

    # -- public, checked -------------------------------------------------------------------

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x \mid \eta)` :eq:`ch05:factorised-lik`, summed over pixels, in nats: ``(*S,)``."""
        S, D = self.check_params(params)
        self.check_x(x, S, D)
        return self._log_prob(x.to(params.dtype), params)

    def sample(self, params: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of every pixel, ``(*S, D)``, in the dtype of ``params``."""
        self.check_params(params)
        with torch.no_grad():
            return self._sample(params, generator)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        r"""The expected value :math:`\mathbb E[x \mid \eta]` of every pixel, ``(*S, D)``."""
        self.check_params(params)
        return self._mean(params)

    # -- implemented by subclasses -----------------------------------------------------------

    def _log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, params: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def _mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _check_levels_values(x: torch.Tensor, levels: int, name: str) -> None:
    if bool((x != torch.round(x)).any()) or bool(((x < 0) | (x > levels - 1)).any()):
        raise ValueError(
            f"{name} with {levels} levels needs x with integer values in 0..{levels - 1} "
            f"(as a floating-point tensor), got values in [{x.min().item():g}, {x.max().item():g}]"
        )


def _uniform(like: torch.Tensor, shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------
# Bernoulli
# ----------------------------------------------------------------------------


class Bernoulli(Likelihood):
    r"""Binary pixels, one logit :math:`\ell_d` each:

    .. math::  \log p(x_d \mid \ell_d) = x_d \ell_d - \operatorname{softplus}(\ell_d)
               = x_d \log\sigma(\ell_d) + (1 - x_d)\log\big(1-\sigma(\ell_d)\big).   \tag{ch05:bernoulli}

    ``x`` must be binary (0 or 1): on grey levels in :math:`(0, 1)` the formula is
    not a probability (it does not sum to one over the data space), so it is refused.
    """

    param_size = 1
    discrete = True

    def _check_values(self, x):
        if bool(((x != 0) & (x != 1)).any()):
            raise ValueError("Bernoulli needs binary x (entries 0 or 1); binarise grey levels first")

    def _log_prob(self, x, logits):
        return (x * logits - nnf.softplus(logits)).sum(-1)

    def _sample(self, logits, generator):
        return (_uniform(logits, logits.shape, generator) < torch.sigmoid(logits)).to(logits.dtype)

    def _mean(self, logits):
        return torch.sigmoid(logits)


# ----------------------------------------------------------------------------
# Categorical
# ----------------------------------------------------------------------------


class Categorical(Likelihood):
    r"""Pixels with ``levels`` integer values :math:`0, \dots, K-1`, one logit per level:

    .. math::  \log p(x_d = k \mid \ell_{d,:}) = \ell_{d,k} - \log\sum_{j=0}^{K-1} e^{\ell_{d,j}}.
               \tag{ch05:categorical}

    The most flexible choice for few levels (e.g. the 17 grey levels of the digits,
    ``gmlib.data.digits(split, "int")``): it assumes no order between levels, so a
    pixel may put its mass on 0 and 16 at once. ``params``: ``(*S, D, levels)``.
    """

    discrete = True

    def __init__(self, levels: int):
        super().__init__()
        self.levels = check_int(levels, "levels", minimum=2)
        self.param_size = self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def _check_values(self, x):
        _check_levels_values(x, self.levels, "Categorical")

    def _log_prob(self, x, logits):
        idx = x.long().expand(logits.shape[:-1]).unsqueeze(-1)  # (*S, D, 1)
        # log_softmax then gather: about twice as fast on CPU as gather minus logsumexp
        return torch.log_softmax(logits, -1).gather(-1, idx).squeeze(-1).sum(-1)

    def _sample(self, logits, generator):
        cdf = torch.softmax(logits, -1).cumsum(-1)  # (*S, D, K)
        u = _uniform(logits, logits.shape[:-1] + (1,), generator)  # (*S, D, 1)
        k = (cdf < u).sum(-1).clamp_max(self.levels - 1)  # inverse CDF; clamp guards rounding at the top
        return k.to(logits.dtype)

    def _mean(self, logits):
        values = torch.arange(self.levels, dtype=logits.dtype, device=logits.device)  # (K,)
        return torch.softmax(logits, -1) @ values


# ----------------------------------------------------------------------------
# Discretized logistic
# ----------------------------------------------------------------------------


class DiscretizedLogistic(Likelihood):
    r"""The discretized logistic of PixelCNN++ (Salimans et al. 2017) for ``levels`` integer values.

    Level :math:`k \in \{0, \dots, K-1\}` is mapped to the centre
    :math:`c_k = 2k/(K-1) - 1 \in [-1, 1]` of a bin of half-width :math:`h = 1/(K-1)`;
    a logistic with mean :math:`\mu` and scale :math:`s` (parameters ``(mu, log s)``
    per pixel, on the same :math:`[-1, 1]` scale) gives each bin its mass, the two
    outer bins taking the tails:

    .. math::  p(x = k \mid \mu, s) = \begin{cases}
               \sigma\big(\tfrac{c_0 + h - \mu}{s}\big) & k = 0, \\
               \sigma\big(\tfrac{c_k + h - \mu}{s}\big) - \sigma\big(\tfrac{c_k - h - \mu}{s}\big) & 0 < k < K-1, \\
               1 - \sigma\big(\tfrac{c_{K-1} - h - \mu}{s}\big) & k = K-1,
               \end{cases}     \tag{ch05:disc-logistic}

    so the masses of all levels sum to one. Unlike :class:`Categorical` it assumes
    neighbouring levels have similar probabilities, with 2 parameters per pixel
    whatever the number of levels. The middle case is computed without cancellation as

    .. math::  \log\big(\sigma(a) - \sigma(b)\big) = \log\sigma(a) + \log\sigma(-b)
               + \log\big(1 - e^{-(a - b)}\big), \qquad a > b,

    which stays finite where the two CDF values round to the same float (PixelCNN++
    switches to a density approximation there instead). ``params``: ``(*S, D, 2)``.
    """

    param_size = 2
    discrete = True

    def __init__(self, levels: int):
        super().__init__()
        self.levels = check_int(levels, "levels", minimum=2)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def _check_values(self, x):
        _check_levels_values(x, self.levels, "DiscretizedLogistic")

    def _log_prob(self, x, params):
        mu, log_s = params[..., 0], params[..., 1]  # (*S, D) each
        K = self.levels
        h = 1.0 / (K - 1)
        c = x * (2.0 / (K - 1)) - 1.0  # (*T, D), bin centres in [-1, 1]
        inv_s = torch.exp(-log_s)
        a = (c + h - mu) * inv_s  # upper edge, standardised
        b = (c - h - mu) * inv_s  # lower edge
        middle = nnf.logsigmoid(a) + nnf.logsigmoid(-b) + torch.log(-torch.expm1(-(2.0 * h) * inv_s))
        lp = torch.where(x == 0, nnf.logsigmoid(a), torch.where(x == K - 1, nnf.logsigmoid(-b), middle))
        return lp.sum(-1)

    def _sample(self, params, generator):
        mu, log_s = params[..., 0], params[..., 1]
        tiny = torch.finfo(params.dtype).eps
        u = _uniform(params, mu.shape, generator).clamp(tiny, 1 - tiny)
        y = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))  # logistic draw on [-1, 1] scale
        return torch.round((y + 1.0) * (self.levels - 1) / 2.0).clamp(0, self.levels - 1)

    def log_prob_levels(self, params: torch.Tensor) -> torch.Tensor:
        r"""Log masses of every level, ``(*S, D, levels)`` (they sum to one along the last dimension)."""
        self.check_params(params)
        levels = torch.arange(self.levels, dtype=params.dtype, device=params.device)  # (K,)
        p = params.unsqueeze(-2)  # (*S, D, 1, 2)
        # one "pixel" per (d, k): reuse _log_prob with a trailing singleton pixel dimension
        x = levels.expand(*params.shape[:-1], self.levels).unsqueeze(-1)  # (*S, D, K, 1)
        return self._log_prob(x, p.expand(*params.shape[:-1], self.levels, 2).unsqueeze(-2))

    def _mean(self, params):
        levels = torch.arange(self.levels, dtype=params.dtype, device=params.device)
        return torch.exp(self.log_prob_levels(params)) @ levels


# ----------------------------------------------------------------------------
# Gaussian
# ----------------------------------------------------------------------------


class Gaussian(Likelihood):
    r"""Real-valued pixels, a Gaussian density per pixel:

    .. math::  \log p(x_d \mid \mu_d, \sigma_d^2) = -\tfrac12\Big[\log 2\pi + \log\sigma_d^2
               + \frac{(x_d - \mu_d)^2}{\sigma_d^2}\Big].   \tag{ch05:gauss-lik}

    Three variants:

    - ``Gaussian()``: the decoder outputs mean and log-variance of every pixel,
      ``params`` ``(*S, D, 2)`` (``param_size = 2``);
    - ``Gaussian(log_var=c)``: a fixed variance :math:`e^c`, ``params`` = the mean ``(*S, D)``;
    - ``Gaussian(log_var=c, learn=True)``: one shared log-variance, an ``nn.Parameter``
      initialised at ``c`` and trained with the model.

    A density, not a mass (``discrete = False``): on discrete pixels it can grow
    without bound as a variance shrinks, and its values are not comparable with
    those of :class:`Bernoulli` or :class:`Categorical`.
    """

    discrete = False

    def __init__(self, log_var: float | None = None, *, learn: bool = False):
        super().__init__()
        if log_var is None:
            if learn:
                raise ValueError("learn=True needs an initial log_var")
            self.param_size = 2
            self.log_var = None
        else:
            if not (isinstance(log_var, (int, float)) and math.isfinite(log_var)):
                raise ValueError(f"log_var must be a finite number or None, got {log_var!r}")
            self.param_size = 1
            # fixed: a Python float, exact in every dtype; learned: a parameter of the default dtype
            self.log_var = nn.Parameter(torch.tensor(float(log_var))) if learn else float(log_var)
        self.learn = bool(learn)

    def extra_repr(self) -> str:
        if self.log_var is None:
            return "log_var=from decoder"
        return f"log_var={float(self.log_var):.4g}, learn={self.learn}"

    def _split(self, params):
        if self.log_var is None:
            return params[..., 0], params[..., 1]
        if isinstance(self.log_var, float):
            return params, torch.full_like(params, self.log_var)
        return params, self.log_var.to(params.dtype).expand(params.shape)

    def _log_prob(self, x, params):
        mean, log_var = self._split(params)
        return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var)).sum(-1)

    def _sample(self, params, generator):
        mean, log_var = self._split(params)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(0.5 * log_var) * eps

    def _mean(self, params):
        return self._split(params)[0]
