r"""Chapter 7: normalizing flows (invertible models).

A flow writes the data as an invertible, differentiable map of noise. We state the
direction once (STYLE.md): a :class:`Bijection` ``f`` maps **data to noise**,

.. math::  z = f(x), \qquad x = f^{-1}(z), \qquad z \sim p_Z = \mathcal N(0, I_D),

``forward(x) -> (z, logabsdet)`` returns :math:`\log\lvert\det \partial f/\partial x\rvert`
and ``inverse(z) -> (x, logabsdet)`` returns :math:`\log\lvert\det \partial f^{-1}/\partial z\rvert`
(minus the former at the matching point), both of shape ``(B,)``. The change of
variables gives the exact density

.. math::  \log p_X(x) = \log p_Z\big(f(x)\big) + \log\Big\lvert\det \frac{\partial f(x)}{\partial x}\Big\rvert,
           \tag{ch07:change-of-variables}

and a composition :math:`f = f_K\circ\dots\circ f_1` adds the log-determinants,
:math:`\log\lvert\det J_f\rvert = \sum_k \log\lvert\det J_{f_k}\rvert` (:class:`Compose`).
Density evaluation costs one pass of ``forward``, sampling one pass of ``inverse`` (for an
autoregressive layer one of the two is :math:`D` sequential passes). Each layer is built so that
its log-determinant costs :math:`O(D)`, not :math:`O(D^3)`:

- :class:`ElementwiseAffine`: :math:`z = x\odot e^{s} + t`, :math:`\log\lvert\det\rvert = \sum_i s_i`.
- :class:`AdditiveCoupling` (NICE; Dinh et al. 2015) and :class:`AffineCoupling` (Real NVP;
  Dinh et al. 2017) with a binary mask :math:`b` (:func:`half_mask`, :func:`checkerboard_mask`,
  :func:`channel_mask`):

  .. math::  z = b\odot x + (1-b)\odot\big(x\odot e^{s(b\odot x)} + t(b\odot x)\big),
             \qquad \log\lvert\det\rvert = \sum_i (1-b_i)\, s_i(b\odot x),      \tag{ch07:affine-coupling}

  triangular Jacobian (the additive coupling is the case :math:`s = 0`, volume preserving).
  The scale is soft-clamped, :math:`s = a\tanh(\hat s/a)`, for stability.
- :class:`Squeeze` (Dinh et al. 2017): space-to-depth, :math:`(C, H, W)\to(4C, H/2, W/2)`, a
  permutation, :math:`\log\lvert\det\rvert = 0`. :class:`FactorOut` passes some channels straight
  to the base distribution (the multi-scale architecture).
- :class:`ActNorm` (Glow; Kingma & Dhariwal 2018): per channel :math:`z = (x-\mu_c)\,e^{-\log\sigma_c}`,
  :math:`\log\lvert\det\rvert = -HW\sum_c \log\sigma_c`, with :math:`\mu, \sigma` set on the first
  batch to its mean and standard deviation (data-dependent initialisation).
- :class:`Invertible1x1Conv` (Glow): :math:`z_{:,h,w} = W x_{:,h,w}`, :math:`W = P L (U + \operatorname{diag}(s))`
  (LU form, :math:`P` fixed), :math:`\log\lvert\det\rvert = HW\sum_c \log\lvert s_c\rvert`.
- :class:`MaskedAutoregressive` (MAF; Papamakarios et al. 2017) on a :class:`MADE` (Germain et al. 2015):

  .. math::  z_i = \big(x_i - \mu_i(x_{<i})\big)\, e^{-\alpha_i(x_{<i})}, \qquad
             \log\lvert\det\rvert = -\sum_i \alpha_i(x_{<i}),        \tag{ch07:maf}

  one network pass for the density, :math:`D` sequential passes to sample. With ``iaf=True`` the
  same network defines the inverse map (IAF; Kingma et al. 2016): sampling takes one pass,
  the density :math:`D`. IAF's ``forward`` is MAF's ``inverse`` and vice versa (a test).
- :class:`RationalQuadraticSplineCoupling` (Durkan et al. 2019): each transformed coordinate goes
  through a monotone rational-quadratic spline with :math:`K` bins on :math:`[-B, B]` and the identity
  outside (:func:`rational_quadratic_spline`, whose inverse solves a quadratic).
- :class:`Logit`: :math:`z = \operatorname{logit}(\alpha + (1-2\alpha)x)` maps :math:`(0, 1)` to
  :math:`\mathbb R` (Dinh et al. 2017's preprocessing of pixels).

**Discrete data** (Theis et al. 2016; Ho et al. 2019). Fitted to integer-valued data, a continuous
density can pile unbounded density on the integers, and its likelihood means nothing; so a
flow models :math:`y = (x+u)/L \in [0,1)^D` for pixels :math:`x \in \{0..L-1\}^D` and noise
:math:`u \in [0,1)^D` from a dequantizer :math:`q(u\mid x)`. With :math:`P(x) = \int_{[0,1)^D} p_Y((x+u)/L)\,L^{-D}du`,
Jensen's inequality gives

.. math::  \log P(x) \ge \mathbb E_{q(u\mid x)}\Big[\log p_Y\big(\tfrac{x+u}{L}\big) - \log q(u\mid x)\Big] - D\log L,
           \tag{ch07:dequantization-bound}

for :class:`UniformDequantizer` (:math:`q = 1`, the bound of Theis et al. 2016) and
:class:`VariationalDequantizer` (a conditional flow, Flow++; Ho et al. 2019), whose gap
:math:`\mathrm{KL}(q(u\mid x)\,\|\,p(u\mid x))` training shrinks. :meth:`Flow.discrete_log_prob_bound`
returns it in nats per example on the discrete data; :meth:`Flow.discrete_log_prob_estimate`
is the importance-weighted estimate :math:`\log\frac1k\sum_i p_Y(y_i)/q(y_i\mid x)`, a lower bound in
expectation that tends to :math:`\log P(x)` as :math:`k\to\infty` (Burda et al. 2016).

Conventions
-----------
- Inputs are batches ``(B, *event_shape)``: vectors ``(B, D)`` or images ``(B, C, H, W)``; every
  ``logabsdet`` is ``(B,)`` in the input's dtype. Public ``forward``/``inverse`` check their
  inputs and raise ``ValueError``; a wrong event shape is refused.
- A conditioner network is passed in (``conditioner(h) -> params``; :func:`coupling_mlp`,
  :func:`coupling_convnet` build small ones). It receives the masked input, with the
  ``context`` (if any) concatenated along dimension 1, and returns ``P * C`` channels
  (``(B, P * C, *spatial)``), read as ``P`` parameter maps of the event shape.
- ``context`` reaches only layers with ``accepts_context`` (the couplings); :class:`Compose`
  skips the others.
- Results are in nats, per example, never averaged. Sampling methods take an optional
  ``generator`` on the model's device.

Equation labels (``ch07:...``) refer to Chapter 7 of the book.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as nnf

from ._checks import check_int, check_tensor
from .nets import mlp

__all__ = [
    "Bijection", "Compose", "Inverse", "Reshape", "ElementwiseAffine", "Logit", "half_mask", "checkerboard_mask", "channel_mask",
    "AdditiveCoupling", "AffineCoupling", "RationalQuadraticSplineCoupling", "rational_quadratic_spline",
    "Squeeze", "FactorOut", "ActNorm", "Invertible1x1Conv", "MADE", "MaskedAutoregressive",
    "Dequantizer", "UniformDequantizer", "VariationalDequantizer", "Flow", "FlowConfig", "vector_flow", "image_flow",
    "coupling_mlp", "coupling_convnet", "standard_normal_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)
#: Monte Carlo samples of the dequantization bounds are drawn for about this many rows at once.
_CHUNK_ROWS = 4096


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; 0, I)` summed over the event: ``(B, *event) -> (B,)``."""
    d = math.prod(z.shape[1:])
    return -0.5 * (z.pow(2).reshape(z.shape[0], -1).sum(1) + d * _LOG_2PI)


def _sum_event(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)  # (B,)


def _spatial(x: torch.Tensor) -> int:
    """Number of positions per channel of ``x`` ``(B, C, *spatial)`` (1 for vectors)."""
    return math.prod(x.shape[2:])


def _check_shape_tuple(shape, name: str) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of positive integers, got {shape!r}") from None
    if not shape or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {shape!r}")
    return shape


def _image_shape(shape, name: str) -> tuple[int, int, int]:
    shape = _check_shape_tuple(shape, name)
    if len(shape) != 3:
        raise ValueError(f"{name} must be (C, H, W), got {shape!r}")
    return shape


def _check_bound(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _soft_clamp(s: torch.Tensor, bound: float) -> torch.Tensor:
    """:math:`a\\tanh(s/a)`: the identity near 0, never beyond :math:`\\pm a`."""
    return bound * torch.tanh(s / bound)


# -- the base class and composition ------------------------------------------------------------


class Bijection(nn.Module):
    r"""An invertible map :math:`f`, from data to noise.

    ``forward(x, context=None) -> (z, logabsdet)``: :math:`z = f(x)` and
    :math:`\log\lvert\det\partial f/\partial x\rvert` ``(B,)``;
    ``inverse(z, context=None) -> (x, logabsdet)``: :math:`x = f^{-1}(z)` and
    :math:`\log\lvert\det\partial f^{-1}/\partial z\rvert` ``(B,)``.

    Subclasses implement ``_forward`` and ``_inverse`` and, where the event shape is not
    fixed by ``event_shape``, ``_check_shape``.
    """

    accepts_context = False  # True for layers whose conditioner reads a context

    def __init__(self, event_shape: Sequence[int] | None = None):
        super().__init__()
        self.event_shape = None if event_shape is None else _check_shape_tuple(event_shape, "event_shape")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, context, "x", inverse=False)
        return self._forward(x, context)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, context, "z", inverse=True)
        return self._inverse(z, context)

    # -- checks ---------------------------------------------------------------------------

    def _check(self, x, context, name: str, inverse: bool, finite: bool = True) -> None:
        check_tensor(x, name, min_dim=2, allow_nan=not finite)
        self._check_shape(x, name, inverse)
        if context is not None:
            if not self.accepts_context:
                raise ValueError(f"{type(self).__name__} takes no context")
            check_tensor(context, "context", min_dim=2, allow_nan=not finite)
            if context.dim() != x.dim() or context.shape[0] != x.shape[0] or context.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"context must have shape (B, C_context, *spatial) matching {name} {tuple(x.shape)} "
                    f"except in dimension 1, got {tuple(context.shape)}"
                )

    def _check_shape(self, x: torch.Tensor, name: str, inverse: bool) -> None:
        if self.event_shape is not None and tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}"
            )

    def _forward(self, x, context):
        raise NotImplementedError

    def _inverse(self, z, context):
        raise NotImplementedError


class Compose(Bijection):
    r""":math:`f = f_K\circ\dots\circ f_1`: ``forward`` applies ``layers`` in order and adds their
    log-determinants; ``inverse`` applies their inverses in reverse order.

    ``Compose(a, b, c)`` or ``Compose([a, b, c])``. ``context`` goes to the layers that accept one.
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers or not all(isinstance(t, Bijection) for t in layers):
            raise ValueError("Compose needs one or more Bijection layers")
        super().__init__(None)
        self.layers = nn.ModuleList(layers)
        self.accepts_context = any(t.accepts_context for t in layers)

    def _check_shape(self, x, name, inverse):
        layer = self.layers[-1] if inverse else self.layers[0]
        layer._check_shape(x, name, inverse)

    def _run(self, x, context, inverse: bool):
        total = x.new_zeros(x.shape[0])  # (B,)
        layers = reversed(self.layers) if inverse else self.layers
        name = "z" if inverse else "x"
        for layer in layers:
            ctx = context if layer.accepts_context else None
            layer._check(x, ctx, name, inverse, finite=False)  # shapes only: the input was checked once
            x, ld = layer._inverse(x, ctx) if inverse else layer._forward(x, ctx)
            total = total + ld
        return x, total

    def _forward(self, x, context):
        return self._run(x, context, inverse=False)

    def _inverse(self, z, context):
        return self._run(z, context, inverse=True)


class Inverse(Bijection):
    r""":math:`f^{-1}` as a bijection: ``forward`` and ``inverse`` of ``bijection`` swapped
    (e.g. ``Inverse(Squeeze(shape))`` unsqueezes)."""

    def __init__(self, bijection: Bijection):
        if not isinstance(bijection, Bijection):
            raise ValueError(f"bijection must be a Bijection, got {type(bijection).__name__}")
        super().__init__(None)
        self.bijection = bijection
        self.accepts_context = bijection.accepts_context

    def _check_shape(self, x, name, inverse):
        self.bijection._check_shape(x, name, not inverse)

    def _forward(self, x, context):
        return self.bijection._inverse(x, context)

    def _inverse(self, z, context):
        return self.bijection._forward(z, context)


class Reshape(Bijection):
    r"""A change of shape, ``(B, *in_shape) -> (B, *out_shape)`` (same number of entries):
    a relabelling of the coordinates, :math:`\log\lvert\det\rvert = 0`. Lets an image flow model
    digits stored as rows of pixels, ``Reshape((64,), (1, 8, 8))``."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__(in_shape)
        self.out_shape = _check_shape_tuple(out_shape, "out_shape")
        if math.prod(self.out_shape) != math.prod(self.event_shape):
            raise ValueError(f"in_shape {self.event_shape} and out_shape {self.out_shape} must have as many "
                             "entries")

    def extra_repr(self) -> str:
        return f"{self.event_shape} -> {self.out_shape}"

    def _check_shape(self, x, name, inverse):
        want = self.out_shape if inverse else self.event_shape
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")

    def _forward(self, x, context):
        return x.reshape(x.shape[0], *self.out_shape), x.new_zeros(x.shape[0])

    def _inverse(self, z, context):
        return z.reshape(z.shape[0], *self.event_shape), z.new_zeros(z.shape[0])


# -- elementwise maps --------------------------------------------------------------------------


class ElementwiseAffine(Bijection):
    r"""Learned scale and shift per coordinate: :math:`z = x\odot e^{s} + t`,
    :math:`\log\lvert\det\rvert = \sum_i s_i` (NICE's final scaling layer, Dinh et al. 2015).
    ``log_scale`` :math:`s` and ``shift`` :math:`t` have the event shape and start at zero."""

    def __init__(self, event_shape: Sequence[int]):
        super().__init__(event_shape)
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))
        self.shift = nn.Parameter(torch.zeros(self.event_shape))

    def _forward(self, x, context):
        ld = self.log_scale.sum().expand(x.shape[0])  # (B,)
        return x * self.log_scale.exp() + self.shift, ld

    def _inverse(self, z, context):
        ld = (-self.log_scale.sum()).expand(z.shape[0])
        return (z - self.shift) * (-self.log_scale).exp(), ld


class Logit(Bijection):
    r""":math:`z = \operatorname{logit}\big(\alpha + (1-2\alpha)x\big)` for :math:`x\in(0,1)` (Dinh et al. 2017):

    .. math::  \log\lvert\det\rvert = \sum_i \big[\log(1-2\alpha) - \log p_i - \log(1-p_i)\big],
               \quad p = \alpha + (1-2\alpha)x.

    ``alpha`` in :math:`[0, 1/2)` keeps the ends finite (:math:`\alpha > 0` admits :math:`x\in[0,1]`).
    """

    def __init__(self, alpha: float = 0.0, event_shape: Sequence[int] | None = None):
        super().__init__(event_shape)
        if not isinstance(alpha, (int, float)) or not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be a number in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)

    def _forward(self, x, context):
        outside = (x < 0) | (x > 1) if self.alpha > 0 else (x <= 0) | (x >= 1)
        if bool(outside.any()):
            raise ValueError("x must lie in (0, 1) for Logit ([0, 1] when alpha > 0)")
        p = self.alpha + (1 - 2 * self.alpha) * x
        ld = _sum_event(math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p))
        return torch.log(p) - torch.log1p(-p), ld

    def _inverse(self, z, context):
        x = (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        ld = _sum_event(nnf.logsigmoid(z) + nnf.logsigmoid(-z) - math.log(1 - 2 * self.alpha))
        return x, ld


# -- coupling layers ---------------------------------------------------------------------------


def _check_parity(parity) -> None:
    if parity not in (0, 1) or isinstance(parity, bool):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")


def half_mask(features: int, parity: int = 0) -> torch.Tensor:
    """``(D,)``: ones on the first ``ceil(D/2)`` coordinates (``parity=0``) or on the rest (``parity=1``)."""
    check_int(features, "features", minimum=2)
    _check_parity(parity)
    m = (torch.arange(features) < (features + 1) // 2).to(torch.get_default_dtype())
    return m if parity == 0 else 1 - m


def checkerboard_mask(shape: Sequence[int], parity: int = 0) -> torch.Tensor:
    """``(C, H, W)``: ones where ``(h + w) % 2 == parity``, in every channel (Dinh et al. 2017)."""
    c, h, w = _image_shape(shape, "shape")
    _check_parity(parity)
    grid = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == parity  # (H, W)
    return grid.expand(c, h, w).to(torch.get_default_dtype()).clone()


def channel_mask(shape: Sequence[int], parity: int = 0) -> torch.Tensor:
    """``(C, H, W)``: ones on the first ``C // 2`` channels (``parity=0``) or on the others (Dinh et al. 2017)."""
    c, h, w = _image_shape(shape, "shape")
    if c < 2:
        raise ValueError(f"shape must be (C, H, W) with C >= 2, got {shape!r}")
    _check_parity(parity)
    m = (torch.arange(c) < c // 2).to(torch.get_default_dtype())[:, None, None].expand(c, h, w).clone()
    return m if parity == 0 else 1 - m


class _Coupling(Bijection):
    """A coupling layer: the masked coordinates (``mask == 1``) pass unchanged and condition the
    transform of the others. ``conditioner(b * x [, context]) -> (B, P * C, *spatial)``."""

    accepts_context = True
    n_params = 1  # P, parameter maps per coordinate

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module):
        check_tensor(mask, "mask", min_dim=1)
        if not bool(((mask == 0) | (mask == 1)).all()) or bool((mask == 0).all()) or bool((mask == 1).all()):
            raise ValueError("mask must hold zeros and ones, with at least one of each")
        if not callable(conditioner):
            raise ValueError(f"conditioner must be a callable network, got {type(conditioner).__name__}")
        super().__init__(tuple(mask.shape))
        self.register_buffer("mask", mask.to(torch.get_default_dtype()).clone())
        self.conditioner = conditioner

    def _params(self, x: torch.Tensor, context) -> torch.Tensor:
        """Conditioner output read as ``(B, P, C, *spatial)``."""
        h = self.mask * x  # (B, C, *spatial)
        out = self.conditioner(h if context is None else torch.cat([h, context], dim=1))
        b, c, rest = x.shape[0], x.shape[1], tuple(x.shape[2:])
        want = (b, self.n_params * c, *rest)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the conditioner must return shape {want} ({self.n_params} per coordinate), got {got}")
        return out.reshape(b, self.n_params, c, *rest)


class AdditiveCoupling(_Coupling):
    r"""NICE's additive coupling (Dinh et al. 2015): :math:`z = x + (1-b)\odot t(b\odot x)`,
    :math:`\log\lvert\det\rvert = 0`. ``conditioner`` returns :math:`t`, ``(B, C, *spatial)``."""

    n_params = 1

    def _forward(self, x, context):
        t = self._params(x, context)[:, 0]
        return x + (1 - self.mask) * t, x.new_zeros(x.shape[0])

    def _inverse(self, z, context):
        t = self._params(z, context)[:, 0]
        return z - (1 - self.mask) * t, z.new_zeros(z.shape[0])


class AffineCoupling(_Coupling):
    r"""Real NVP's affine coupling (Dinh et al. 2017), :eq:`ch07:affine-coupling`.

    ``conditioner`` returns ``(B, 2C, *spatial)``: :math:`\hat s` then :math:`t`; the scale is
    :math:`s = a\tanh(\hat s / a)` with :math:`a` = ``scale_bound``.
    """

    n_params = 2

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module, *, scale_bound: float = 2.0):
        super().__init__(mask, conditioner)
        self.scale_bound = _check_bound(scale_bound, "scale_bound")

    def _scale_shift(self, x, context):
        p = self._params(x, context)  # (B, 2, C, *spatial)
        s = (1 - self.mask) * _soft_clamp(p[:, 0], self.scale_bound)
        return s, (1 - self.mask) * p[:, 1]

    def _forward(self, x, context):
        s, t = self._scale_shift(x, context)
        return x * s.exp() + t, _sum_event(s)

    def _inverse(self, z, context):
        s, t = self._scale_shift(z, context)  # b * z == b * x: the same parameters
        return (z - t) * (-s).exp(), -_sum_event(s)


def _knots(unnormalised: torch.Tensor, min_size: float, bound: float) -> torch.Tensor:
    """``K`` bin sizes (softmax, each at least ``min_size`` of the interval) -> ``K + 1`` knots on [-B, B]."""
    k = unnormalised.shape[-1]
    sizes = min_size + (1 - min_size * k) * torch.softmax(unnormalised, dim=-1)
    inner = 2 * bound * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    ends = inner.new_full(inner.shape[:-1] + (1,), bound)
    return torch.cat([-ends, inner, ends], dim=-1)  # (..., K + 1), exactly -B and B at the ends


def rational_quadratic_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A monotone rational-quadratic spline on :math:`[-B, B]`, the identity outside (Durkan et al. 2019).

    ``widths`` and ``heights`` ``(*x.shape, K)`` are unnormalised bin sizes (softmax), ``derivatives``
    ``(*x.shape, K - 1)`` unnormalised derivatives at the inner knots (softplus, shifted so that 0
    gives 1; the outer knots have derivative 1, so the spline joins the identity tails smoothly).
    In bin :math:`k` with knots :math:`(x_k, y_k)`, slope :math:`s_k = (y_{k+1}-y_k)/(x_{k+1}-x_k)`,
    derivatives :math:`\delta_k, \delta_{k+1}` and :math:`\xi = (x - x_k)/(x_{k+1}-x_k)`,

    .. math::  g(x) = y_k + \frac{(y_{k+1}-y_k)\,[s_k\xi^2 + \delta_k\xi(1-\xi)]}
                               {s_k + (\delta_{k+1}+\delta_k-2s_k)\,\xi(1-\xi)},          \tag{ch07:rq-spline}

    .. math::  g'(x) = \frac{s_k^2\,[\delta_{k+1}\xi^2 + 2s_k\xi(1-\xi) + \delta_k(1-\xi)^2]}
                            {[s_k + (\delta_{k+1}+\delta_k-2s_k)\,\xi(1-\xi)]^2} > 0.

    The inverse solves :math:`a\xi^2 + b\xi + c = 0` for :math:`\xi\in[0,1]` with the stable root
    :math:`\xi = 2c/(-b-\sqrt{b^2-4ac})`. Returns ``(y, log_derivative)``, both of ``x``'s shape:
    :math:`\log g'(x)` forward, :math:`\log (g^{-1})'(x)` with ``inverse=True``.
    """
    k = widths.shape[-1]
    if heights.shape != widths.shape or derivatives.shape[-1] != k - 1 or widths.shape[:-1] != x.shape:
        raise ValueError(
            f"widths and heights must have shape (*x.shape, K) and derivatives (*x.shape, K - 1); got x "
            f"{tuple(x.shape)}, widths {tuple(widths.shape)}, heights {tuple(heights.shape)}, "
            f"derivatives {tuple(derivatives.shape)}"
        )
    if not (0 <= min_bin_width * k < 1 and 0 <= min_bin_height * k < 1):
        raise ValueError("min_bin_width and min_bin_height must be >= 0 and below 1 / (number of bins)")
    if not 0 <= min_derivative < 1:
        raise ValueError(f"min_derivative must lie in [0, 1), got {min_derivative!r}")
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)  # the spline is evaluated everywhere; outside, where() keeps x
    xk = _knots(widths, min_bin_width, bound)  # (..., K + 1)
    yk = _knots(heights, min_bin_height, bound)
    shift = math.log(math.expm1(1 - min_derivative))  # softplus(0 + shift) + min_derivative = 1
    inner_d = min_derivative + nnf.softplus(derivatives + shift)  # (..., K - 1)
    ones = inner_d.new_ones(inner_d.shape[:-1] + (1,))
    d = torch.cat([ones, inner_d, ones], dim=-1)  # (..., K + 1)

    knots = yk if inverse else xk
    idx = (xc[..., None] >= knots[..., 1:-1]).sum(-1, keepdim=True)  # (..., 1) bin index in 0..K-1
    x0, x1 = xk.gather(-1, idx)[..., 0], xk.gather(-1, idx + 1)[..., 0]
    y0, y1 = yk.gather(-1, idx)[..., 0], yk.gather(-1, idx + 1)[..., 0]
    d0, d1 = d.gather(-1, idx)[..., 0], d.gather(-1, idx + 1)[..., 0]
    w, h = x1 - x0, y1 - y0
    s = h / w
    if not inverse:
        xi = (xc - x0) / w
    else:
        r = xc - y0
        a = h * (s - d0) + r * (d0 + d1 - 2 * s)
        b = h * d0 - r * (d0 + d1 - 2 * s)
        c = -s * r
        disc = (b.pow(2) - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - disc.sqrt())
    t = xi * (1 - xi)
    denom = s + (d0 + d1 - 2 * s) * t
    log_deriv = 2 * s.log() + torch.log(d1 * xi.pow(2) + 2 * s * t + d0 * (1 - xi).pow(2)) - 2 * denom.log()
    if not inverse:
        y = y0 + h * (s * xi.pow(2) + d0 * t) / denom
    else:
        y, log_deriv = x0 + xi * w, -log_deriv
    return torch.where(inside, y, x), torch.where(inside, log_deriv, torch.zeros_like(log_deriv))


class RationalQuadraticSplineCoupling(_Coupling):
    r"""A coupling layer whose transform is a monotone rational-quadratic spline per coordinate
    (:func:`rational_quadratic_spline`; Durkan et al. 2019),
    :math:`\log\lvert\det\rvert = \sum_i (1-b_i)\log g_i'(x_i)`.

    ``conditioner`` returns ``(B, (3K - 1) C, *spatial)``: ``K`` widths, ``K`` heights, ``K - 1``
    derivatives per coordinate (unnormalised; all zeros give the identity).
    """

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module, *, num_bins: int = 8, bound: float = 3.0,
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        super().__init__(mask, conditioner)
        self.num_bins = check_int(num_bins, "num_bins", minimum=2)
        self.n_params = 3 * num_bins - 1
        self.bound = _check_bound(bound, "bound")
        self.spline_kwargs = dict(bound=self.bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                                  min_derivative=min_derivative)

    def _spline(self, x, context, inverse: bool):
        p = self._params(x, context).movedim(1, -1)  # (B, C, *spatial, 3K - 1)
        k = self.num_bins
        y, log_d = rational_quadratic_spline(x, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], inverse=inverse,
                                             **self.spline_kwargs)
        keep = self.mask
        return keep * x + (1 - keep) * y, _sum_event((1 - keep) * log_d)

    def _forward(self, x, context):
        return self._spline(x, context, inverse=False)

    def _inverse(self, z, context):
        return self._spline(z, context, inverse=True)


# -- image layers: squeeze, factor-out, ActNorm, 1x1 convolution --------------------------------


class Squeeze(Bijection):
    r"""Space-to-depth (Dinh et al. 2017): each 2x2 block of a ``(B, C, H, W)`` input becomes 4
    channels, ``(B, 4C, H/2, W/2)``; a permutation, :math:`\log\lvert\det\rvert = 0`.

    ``event_shape`` ``(C, H, W)``, if given, is the input shape ``forward`` accepts.
    """

    def __init__(self, event_shape: Sequence[int] | None = None):
        super().__init__(event_shape)
        if self.event_shape is not None and (len(self.event_shape) != 3 or self.event_shape[1] % 2
                                             or self.event_shape[2] % 2):
            raise ValueError(f"event_shape must be (C, H, W) with even H and W, got {event_shape!r}")

    def _check_shape(self, x, name, inverse):
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
        c, h, w = x.shape[1:]
        if self.event_shape is not None:
            want = self.event_shape
            if inverse:
                want = (4 * want[0], want[1] // 2, want[2] // 2)
            if tuple(x.shape[1:]) != want:
                raise ValueError(f"{name} must have shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        elif inverse and c % 4:
            raise ValueError(f"{name} must have a multiple of 4 channels to unsqueeze, got {tuple(x.shape)}")
        elif not inverse and (h % 2 or w % 2):
            raise ValueError(f"{name} must have even height and width to squeeze, got {tuple(x.shape)}")

    def _forward(self, x, context):
        b, c, h, w = x.shape
        z = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(b)

    def _inverse(self, z, context):
        b, c4, h2, w2 = z.shape
        c = c4 // 4
        x = z.reshape(b, c, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h2, 2 * w2)
        return x, z.new_zeros(b)


class FactorOut(Bijection):
    r"""The multi-scale architecture (Dinh et al. 2017): the first ``channels`` channels of
    ``(B, C, *spatial)`` go through ``bijection``; the others are *factored out*, passed unchanged
    to the base distribution. :math:`\log\lvert\det\rvert` is the inner one's. ``event_shape``,
    if given, is the whole input's shape ``(C, *spatial)``."""

    def __init__(self, bijection: Bijection, channels: int, event_shape: Sequence[int] | None = None):
        if not isinstance(bijection, Bijection):
            raise ValueError(f"bijection must be a Bijection, got {type(bijection).__name__}")
        super().__init__(event_shape)
        self.bijection, self.channels = bijection, check_int(channels, "channels")
        self.accepts_context = bijection.accepts_context
        if self.event_shape is not None and self.event_shape[0] <= self.channels:
            raise ValueError(f"event_shape must have more than channels={channels} channels, got {event_shape!r}")

    def _check_shape(self, x, name, inverse):
        super()._check_shape(x, name, inverse)
        if x.shape[1] <= self.channels:
            raise ValueError(f"{name} must have more than {self.channels} channels, got {tuple(x.shape)}")

    def _run(self, x, context, inverse):
        keep, out = x[:, :self.channels], x[:, self.channels:]
        self.bijection._check(keep, context, "z" if inverse else "x", inverse, finite=False)
        y, ld = self.bijection._inverse(keep, context) if inverse else self.bijection._forward(keep, context)
        return torch.cat([y, out], dim=1), ld

    def _forward(self, x, context):
        return self._run(x, context, inverse=False)

    def _inverse(self, z, context):
        return self._run(z, context, inverse=True)


class _ChannelLayer(Bijection):
    """A layer on ``(B, C, *spatial)`` with a fixed number of channels ``C`` (vectors: ``(B, C)``)."""

    def __init__(self, num_channels: int):
        super().__init__(None)
        self.num_channels = check_int(num_channels, "num_channels")

    def _check_shape(self, x, name, inverse):
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"{name} must have shape (B, {self.num_channels}, *spatial) ({self.num_channels} channels), "
                f"got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


class ActNorm(_ChannelLayer):
    r"""Activation normalisation (Glow; Kingma & Dhariwal 2018): per channel

    .. math::  z = (x - \mu_c)\,e^{-\log\sigma_c}, \qquad \log\lvert\det\rvert = -N_\text{spatial}\sum_c\log\sigma_c.
               \tag{ch07:actnorm}

    On the first call of ``forward`` (buffer ``initialized`` false) :math:`\mu_c` and
    :math:`\sigma_c^2` are set to that batch's per-channel mean and (population) variance, so the
    output has zero mean and unit variance per channel on it. ``inverse`` never initialises.
    """

    def __init__(self, num_channels: int):
        super().__init__(num_channels)
        self.loc = nn.Parameter(torch.zeros(num_channels))  # mu (C,)
        self.log_scale = nn.Parameter(torch.zeros(num_channels))  # log sigma (C,)
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.reshape(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation on the batch ``x`` ``(B, C, *spatial)``."""
        self._check(x, None, "x", inverse=False)
        if x.shape[0] * _spatial(x) < 2:
            raise ValueError("ActNorm's data-dependent initialisation needs at least two values per channel")
        dims = [0, *range(2, x.dim())]
        self.loc.copy_(x.mean(dims))
        self.log_scale.copy_(0.5 * x.var(dims, correction=0).clamp_min(1e-12).log())
        self.initialized.fill_(True)

    def _forward(self, x, context):
        if not bool(self.initialized):
            self.initialize(x.detach())
        z = (x - self._view(self.loc, x)) * self._view((-self.log_scale).exp(), x)
        return z, (-self.log_scale.sum() * _spatial(x)).expand(x.shape[0])

    def _inverse(self, z, context):
        x = z * self._view(self.log_scale.exp(), z) + self._view(self.loc, z)
        return x, (self.log_scale.sum() * _spatial(z)).expand(z.shape[0])


class Invertible1x1Conv(_ChannelLayer):
    r"""Glow's invertible 1x1 convolution (Kingma & Dhariwal 2018), LU-parameterised:

    .. math::  z_{:,p} = W x_{:,p}, \quad
               W = P\,L\,\big(U + \operatorname{diag}(\operatorname{sign}(s)\,e^{\log\lvert s\rvert})\big),
               \qquad \log\lvert\det\rvert = N_\text{spatial}\sum_c \log\lvert s_c\rvert,      \tag{ch07:lu-conv}

    :math:`P` a fixed permutation, :math:`L` unit lower triangular, :math:`U` strictly upper
    triangular, the signs of :math:`s` fixed. Starts at a random rotation (``generator`` on the CPU).
    On vectors ``(B, C)`` it is an invertible linear layer.
    """

    def __init__(self, num_channels: int, *, generator: torch.Generator | None = None):
        super().__init__(num_channels)
        c = num_channels
        q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        self.register_buffer("permutation", p.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_abs_s = nn.Parameter(s.abs().log().to(dtype))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.diag(self.log_abs_s.new_ones(self.num_channels))
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * self.log_abs_s.exp())
        return lower, upper

    @property
    def weight(self) -> torch.Tensor:
        """:math:`W = PLU`, ``(C, C)``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        r""":math:`W^{-1} = U^{-1}L^{-1}P^\top` by two triangular solves, ``(C, C)``."""
        lower, upper = self._factors()
        li = torch.linalg.solve_triangular(lower, self.permutation.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, li, upper=True)

    def _forward(self, x, context):
        z = torch.einsum("ij,bj...->bi...", self.weight, x)
        return z, (self.log_abs_s.sum() * _spatial(x)).expand(x.shape[0])

    def _inverse(self, z, context):
        x = torch.einsum("ij,bj...->bi...", self.inverse_weight(), z)
        return x, (-self.log_abs_s.sum() * _spatial(z)).expand(z.shape[0])


# -- autoregressive flows ----------------------------------------------------------------------


class _MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nnf.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015): an MLP whose
    output for coordinate :math:`i` depends only on the coordinates before it in ``order``.

    Degrees: input :math:`i` has :math:`m(i)` = its position in ``order`` plus one; hidden units
    :math:`m(k) = (k \bmod (D-1)) + 1`; a weight from degree :math:`m'` to hidden degree :math:`m`
    exists iff :math:`m \ge m'`, and to the outputs of coordinate :math:`i` iff :math:`m(i) > m`.
    ``forward(x (B, D)) -> (B, params_per_feature, D)``. With ``zero_init`` the output layer starts
    at zero (a flow built on it starts as the identity).
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), *, params_per_feature: int = 2,
                 order: Sequence[int] | None = None, activation: type[nn.Module] = nn.ReLU, zero_init: bool = True):
        super().__init__()
        d = check_int(features, "features")
        self.params_per_feature = check_int(params_per_feature, "params_per_feature")
        order = list(range(d)) if order is None else [int(i) for i in order]
        if sorted(order) != list(range(d)):
            raise ValueError(f"order must be a permutation of 0..{d - 1}, got {order!r}")
        hidden = [check_int(h, "hidden sizes") for h in hidden]
        degrees = torch.empty(d, dtype=torch.long)
        degrees[torch.tensor(order)] = torch.arange(1, d + 1)
        self.register_buffer("degrees", degrees)  # (D,) m(i)
        layers: list[nn.Module] = []
        prev = degrees
        for h in hidden:
            deg = torch.arange(h) % max(d - 1, 1) + 1  # (h,)
            layers += [_MaskedLinear(len(prev), h, deg[:, None] >= prev[None, :]), activation()]
            prev = deg
        out_deg = degrees.repeat(self.params_per_feature)  # output p * D + i has degree m(i)
        last = _MaskedLinear(len(prev), d * self.params_per_feature, out_deg[:, None] > prev[None, :])
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0], self.params_per_feature, self.features)  # (B, P, D)


class MaskedAutoregressive(Bijection):
    r"""A masked autoregressive flow layer (MAF; Papamakarios et al. 2017), :eq:`ch07:maf`, or with
    ``iaf=True`` its inverse (IAF; Kingma et al. 2016).

    ``made`` is a :class:`MADE` with 2 parameters per feature, read as :math:`\mu` and
    :math:`\hat\alpha`, :math:`\alpha = a\tanh(\hat\alpha/a)` (``scale_bound``). Writing
    :math:`g(y) = (y - \mu(y))\,e^{-\alpha(y)}` (one pass) and :math:`g^{-1}` (:math:`D` passes:
    :math:`y \leftarrow w\,e^{\alpha(y)} + \mu(y)`, after pass :math:`k` the coordinates of degree
    :math:`\le k` are exact), MAF has ``forward`` :math:`= g` (fast density) and ``inverse``
    :math:`= g^{-1}` (sequential sampling); IAF has ``forward`` :math:`= g^{-1}` (sequential density)
    and ``inverse`` :math:`= g` (fast sampling: :math:`x = (z - \mu(z))e^{-\alpha(z)}`, the noise
    conditions the network).
    """

    def __init__(self, made: MADE, *, iaf: bool = False, scale_bound: float = 3.0):
        if not isinstance(made, MADE) or made.params_per_feature != 2:
            raise ValueError("made must be a MADE with params_per_feature=2")
        super().__init__((made.features,))
        self.made, self.iaf = made, bool(iaf)
        self.scale_bound = _check_bound(scale_bound, "scale_bound")

    def extra_repr(self) -> str:
        return f"iaf={self.iaf}"

    def _mu_alpha(self, y):
        out = self.made(y)  # (B, 2, D)
        return out[:, 0], _soft_clamp(out[:, 1], self.scale_bound)

    def _direct(self, y):
        """:math:`g(y)` in one pass, with :math:`\\log\\lvert\\det\\partial g/\\partial y\\rvert`."""
        mu, alpha = self._mu_alpha(y)
        return (y - mu) * (-alpha).exp(), -alpha.sum(1)

    def _sequential(self, w):
        """:math:`g^{-1}(w)` in :math:`D` passes, with :math:`\\log\\lvert\\det\\partial g^{-1}/\\partial w\\rvert`."""
        y = w
        for _ in range(self.made.features):
            mu, alpha = self._mu_alpha(y)
            y = w * alpha.exp() + mu  # exact in the coordinates of degree <= pass number
        return y, alpha.sum(1)  # the last pass saw the final y in every coordinate alpha depends on

    def _forward(self, x, context):
        return self._sequential(x) if self.iaf else self._direct(x)

    def _inverse(self, z, context):
        return self._direct(z) if self.iaf else self._sequential(z)


# -- dequantizers ------------------------------------------------------------------------------


class Dequantizer(nn.Module):
    """Maps integer data ``x`` in ``0..levels-1`` to ``y = (x + u) / levels`` in ``[0, 1)``.

    ``dequantize(x) -> (y, log_q)``: ``log_q`` ``(B,)`` is the log density of ``y`` given ``x``,
    :math:`\\log q(u\\mid x) + D\\log L`, so that ``log p_Y(y) - log_q`` is a one-sample estimate of
    :eq:`ch07:dequantization-bound`. ``quantize(y)`` maps back: ``floor(levels * y)``.
    """

    def __init__(self, levels: int):
        super().__init__()
        self.levels = check_int(levels, "levels", minimum=2)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def check_x(self, x, name: str = "x") -> torch.Tensor:
        check_tensor(x, name, min_dim=2)
        if bool((x != x.round()).any()) or bool(((x < 0) | (x > self.levels - 1)).any()):
            raise ValueError(f"{name} must hold integers in 0..{self.levels - 1} (as a floating tensor)")
        return x

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None):
        self.check_x(x)
        return self._dequantize(x, generator)

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.levels).floor().clamp(0, self.levels - 1)


class UniformDequantizer(Dequantizer):
    r""":math:`u\sim\mathcal U[0,1)^D`, :math:`y = (x+u)/L` (Theis et al. 2016; Uria et al. 2013):
    :math:`\log q = D\log L`, giving the lower bound :math:`\mathbb E_u[\log p_Y(y)] - D\log L \le \log P(x)`."""

    def _dequantize(self, x, generator):
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        d = math.prod(x.shape[1:])
        return (x + u) / self.levels, x.new_full((x.shape[0],), d * math.log(self.levels))


class VariationalDequantizer(Dequantizer):
    r"""Variational dequantization (Flow++; Ho et al. 2019): :math:`u = \sigma(v)`,
    :math:`v = h^{-1}(\varepsilon; c(x))`, :math:`\varepsilon\sim\mathcal N(0, I)`, for a conditional
    flow ``bijection`` :math:`h` (data-to-noise direction, like every :class:`Bijection`):

    .. math::  \log q(u\mid x) = \log\mathcal N(\varepsilon)
               - \log\Big\lvert\det\frac{\partial h^{-1}}{\partial\varepsilon}\Big\rvert
               - \sum_i \log\sigma'(v_i), \qquad \log\sigma'(v) = \log\sigma(v) + \log\sigma(-v).

    The context :math:`c(x)` is ``context_net(x')`` (or :math:`x'` itself) for :math:`x' = 2x/(L-1) - 1`,
    concatenated to the conditioners' inputs along dimension 1.
    """

    def __init__(self, levels: int, bijection: Bijection, context_net: nn.Module | None = None):
        super().__init__(levels)
        if not isinstance(bijection, Bijection) or not bijection.accepts_context:
            raise ValueError("bijection must be a Bijection that accepts a context (e.g. a Compose of couplings)")
        self.bijection, self.context_net = bijection, context_net

    def context(self, x: torch.Tensor) -> torch.Tensor:
        c = 2 * x / (self.levels - 1) - 1
        return c if self.context_net is None else self.context_net(c)

    def _dequantize(self, x, generator):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        v, ld = self.bijection.inverse(eps, context=self.context(x))  # ld = log|det dv/deps|
        log_q_u = standard_normal_log_prob(eps) - ld - _sum_event(nnf.logsigmoid(v) + nnf.logsigmoid(-v))
        u = torch.sigmoid(v)
        d = math.prod(x.shape[1:])
        return (x + u) / self.levels, log_q_u + d * math.log(self.levels)


# -- the model ---------------------------------------------------------------------------------


class Flow(nn.Module):
    r"""A normalizing flow :eq:`ch07:change-of-variables`: base :math:`\mathcal N(0, I)` of shape
    ``latent_shape`` (default ``event_shape``; it differs when the bijection ends in a
    :class:`Squeeze`), a :class:`Bijection` from data to noise, an optional dequantizer.

    - ``log_prob(x) -> (B,)``: the continuous log density in nats (of ``y``, the dequantized
      variable, when there is a dequantizer).
    - ``loss(x)``: ``-log_prob(x).mean()``; with a dequantizer ``x`` is integer data and the loss
      is ``-discrete_log_prob_bound(x).mean()`` (a one-sample estimate of minus the bound).
    - ``sample(n)``: ``(n, *event_shape)``; with a dequantizer, quantized to ``0..levels-1``
      unless ``quantize=False``.
    - ``encode(x)`` / ``decode(z)``: the exact latent code and back.
    """

    def __init__(self, bijection: Bijection, event_shape: Sequence[int], dequantizer: Dequantizer | None = None, *,
                 latent_shape: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(bijection, Bijection):
            raise ValueError(f"bijection must be a Bijection, got {type(bijection).__name__}")
        if dequantizer is not None and not isinstance(dequantizer, Dequantizer):
            raise ValueError(f"dequantizer must be a UniformDequantizer or VariationalDequantizer, got "
                             f"{type(dequantizer).__name__}")
        self.bijection, self.dequantizer = bijection, dequantizer
        self.event_shape = _check_shape_tuple(event_shape, "event_shape")
        self.latent_shape = (self.event_shape if latent_shape is None
                             else _check_shape_tuple(latent_shape, "latent_shape"))
        if math.prod(self.latent_shape) != math.prod(self.event_shape):
            raise ValueError(f"latent_shape {self.latent_shape} must have as many entries as event_shape "
                             f"{self.event_shape}")
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # follows .to(device, dtype)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"

    def _check_x(self, x, name: str = "x") -> torch.Tensor:
        check_tensor(x, name, event_shape=self.event_shape)
        if x.dim() != len(self.event_shape) + 1 or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.event_shape))}), got "
                             f"{tuple(x.shape)}")
        return x.to(dtype=self._ref.dtype)

    # -- density --------------------------------------------------------------------------

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density :eq:`ch07:change-of-variables` in nats, ``(B,)``."""
        return self._log_prob(self._check_x(x))

    def _log_prob(self, x):
        z, ld = self.bijection(x)
        return standard_normal_log_prob(z) + ld

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.dequantizer is None:
            return -self.log_prob(x).mean()
        return -self.discrete_log_prob_bound(x).mean()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code :math:`z = f(x)`, ``(B, *latent_shape)``."""
        return self.bijection(self._check_x(x))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`x = f^{-1}(z)`, ``(B, *event_shape)``."""
        check_tensor(z, "z", event_shape=self.latent_shape)
        return self.bijection.inverse(z.to(dtype=self._ref.dtype))[0]

    # -- sampling -------------------------------------------------------------------------

    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               quantize: bool | None = None) -> torch.Tensor:
        r"""``n`` samples ``(n, *event_shape)``: :math:`x = f^{-1}(T\varepsilon)`,
        :math:`\varepsilon\sim\mathcal N(0, I)`, :math:`T` = ``temperature``."""
        check_int(n, "n")
        if not isinstance(temperature, (int, float)) or not temperature >= 0:
            raise ValueError(f"temperature must be a non-negative number, got {temperature!r}")
        if quantize and self.dequantizer is None:
            raise ValueError("quantize=True needs a dequantizer")
        return self._sample(n, generator, float(temperature), self.dequantizer is not None and quantize is not False)

    def _sample(self, n, generator, temperature, quantize):
        ref = self._ref
        z = torch.randn((n, *self.latent_shape), generator=generator, dtype=ref.dtype, device=ref.device)
        x, _ = self.bijection.inverse(temperature * z)
        return self.dequantizer.quantize(x) if quantize else x

    # -- discrete data --------------------------------------------------------------------

    def _discrete_x(self, x) -> torch.Tensor:
        if self.dequantizer is None:
            raise ValueError("this Flow has no dequantizer: give it one to evaluate discrete data")
        x = self._check_x(x)
        self.dequantizer.check_x(x)
        return x

    def _log_weights(self, x, k: int, generator) -> torch.Tensor:
        r"""``k`` draws of :math:`\log p_Y(y) - \log q(y\mid x)` per example, ``(k, B)``, in batches of
        about ``_CHUNK_ROWS`` rows (``x`` repeated)."""
        b = x.shape[0]
        per = max(1, _CHUNK_ROWS // b)
        out = []
        for start in range(0, k, per):
            m = min(per, k - start)
            xr = x.repeat(m, *([1] * (x.dim() - 1)))  # (m * B, *event)
            y, log_q = self.dequantizer._dequantize(xr, generator)
            out.append((self._log_prob(y) - log_q).reshape(m, b))
        return torch.cat(out)

    def discrete_log_prob_bound(self, x: torch.Tensor, *, n_samples: int = 1,
                                generator: torch.Generator | None = None) -> torch.Tensor:
        """:eq:`ch07:dequantization-bound` per example in nats, ``(B,)``: the average of
        ``n_samples`` one-sample estimates (unbiased for the bound) on integer data ``x``."""
        x = self._discrete_x(x)
        check_int(n_samples, "n_samples")
        return self._log_weights(x, n_samples, generator).mean(0)

    def discrete_log_prob_estimate(self, x: torch.Tensor, k: int = 100, *,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
        r"""The importance-weighted **estimate** :math:`\log\frac1k\sum_{i=1}^k p_Y(y_i)/q(y_i\mid x)`, ``(B,)``
        in nats: below :math:`\log P(x)` in expectation, tending to it as :math:`k\to\infty`."""
        x = self._discrete_x(x)
        check_int(k, "k")
        return torch.logsumexp(self._log_weights(x, k, generator), 0) - math.log(k)


# -- small conditioners and ready-made architectures --------------------------------------------


def coupling_mlp(features: int, out_features: int, hidden: Sequence[int] = (64, 64), *, context_features: int = 0,
                 activation: str = "relu") -> nn.Sequential:
    """An MLP conditioner ``(B, features + context_features) -> (B, out_features)`` whose last
    layer starts at zero (every coupling then starts as the identity)."""
    net = mlp(features + context_features, list(hidden), out_features, activation=activation)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def coupling_convnet(channels: int, out_channels: int, hidden: int = 64, *, context_channels: int = 0) -> nn.Sequential:
    """A convolutional conditioner (Real NVP / Glow style): 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv
    started at zero; ``(B, channels + context_channels, H, W) -> (B, out_channels, H, W)``."""
    net = nn.Sequential(
        nn.Conv2d(channels + context_channels, hidden, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1),
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


@dataclass
class FlowConfig:
    """Architecture of :func:`vector_flow` and :func:`image_flow`."""

    coupling: str = "affine"  # "additive" (NICE), "affine" (Real NVP), "spline" (Durkan et al. 2019)
    n_layers: int = 4  # coupling layers (per scale in image_flow), masks alternating
    hidden: int = 64  # width of each conditioner's hidden layers (two for MLPs; channels for convnets)
    actnorm: bool = True  # an ActNorm before each coupling (Glow)
    mix: bool = True  # an Invertible1x1Conv before each coupling (Glow); else masks alternate only
    num_bins: int = 8  # K, spline bins ("spline")
    bound: float = 3.0  # B, the spline acts on [-B, B] ("spline")
    scale_bound: float = 2.0  # a, soft clamp of the affine log-scale ("affine")
    n_scales: int = 2  # image_flow: squeeze steps; after each but the last, half the channels are factored out


def _coupling(config: FlowConfig, mask: torch.Tensor, net) -> Bijection:
    if config.coupling == "additive":
        return AdditiveCoupling(mask, net)
    if config.coupling == "affine":
        return AffineCoupling(mask, net, scale_bound=config.scale_bound)
    return RationalQuadraticSplineCoupling(mask, net, num_bins=config.num_bins, bound=config.bound)


def _n_params(config: FlowConfig) -> int:
    if config.coupling not in ("additive", "affine", "spline"):
        raise ValueError(f"coupling must be 'additive', 'affine' or 'spline', got {config.coupling!r}")
    return {"additive": 1, "affine": 2, "spline": 3 * config.num_bins - 1}[config.coupling]


def vector_flow(features: int, config: FlowConfig | None = None, *, context_features: int = 0,
                generator: torch.Generator | None = None) -> Compose:
    """Couplings with alternating half masks on ``(B, features)``, each preceded by ActNorm and an
    LU linear layer when the config asks; MLP conditioners (``context_features`` extra inputs)."""
    config = FlowConfig() if config is None else config
    p = _n_params(config)
    check_int(features, "features", minimum=2)
    layers: list[Bijection] = []
    for i in range(check_int(config.n_layers, "n_layers")):
        if config.actnorm:
            layers.append(ActNorm(features))
        if config.mix:
            layers.append(Invertible1x1Conv(features, generator=generator))
        net = coupling_mlp(features, p * features, (config.hidden, config.hidden), context_features=context_features)
        layers.append(_coupling(config, half_mask(features, i % 2), net))
    return Compose(layers)


def image_flow(event_shape: Sequence[int], config: FlowConfig | None = None, *,
               generator: torch.Generator | None = None) -> Compose:
    """A multi-scale flow on ``(B, C, H, W)`` (Dinh et al. 2017): at each scale ``n_layers`` checkerboard
    couplings, a :class:`Squeeze`, ``n_layers`` channel couplings (each preceded by ActNorm and a 1x1
    convolution when the config asks); then half the channels are factored out and the next scale
    works on the rest. Each scale ends by undoing its squeeze, so :math:`z` has the shape of :math:`x`
    (a fixed permutation of Real NVP's factored-out latents)."""
    config = FlowConfig() if config is None else config
    p = _n_params(config)
    c, h, w = _image_shape(event_shape, "event_shape")
    n_scales = check_int(config.n_scales, "n_scales")
    if h % 2 ** n_scales or w % 2 ** n_scales:
        raise ValueError(f"H and W must be divisible by 2**n_scales = {2 ** n_scales}, got {event_shape!r}")

    def step(shape, mask):
        out: list[Bijection] = []
        if config.actnorm:
            out.append(ActNorm(shape[0]))
        if config.mix:
            out.append(Invertible1x1Conv(shape[0], generator=generator))
        out.append(_coupling(config, mask, coupling_convnet(shape[0], p * shape[0], config.hidden)))
        return out

    def scale(shape, level):
        shape_in = shape
        layers: list[Bijection] = []
        for i in range(config.n_layers):
            layers += step(shape, checkerboard_mask(shape, i % 2))
        layers.append(Squeeze(shape))
        shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
        for i in range(config.n_layers):
            layers += step(shape, channel_mask(shape, i % 2))
        if level + 1 < n_scales:
            keep = shape[0] // 2
            layers.append(FactorOut(scale((keep, shape[1], shape[2]), level + 1), keep, shape))
        layers.append(Inverse(Squeeze(shape_in)))  # back to (C, H, W): z has the data's shape
        return Compose(layers)

    return scale((c, h, w), 0)
