r"""Chapter 9: denoising diffusion, score matching and flow matching.

**The forward process.** Data :math:`x_0 = x` are blurred into noise by a fixed Markov chain of
:math:`T` Gaussian steps (Sohl-Dickstein et al. 2015; Ho, Jain & Abbeel 2020),

.. math::  q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big),
           \qquad q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
           \qquad \bar\alpha_t = \textstyle\prod_{s\le t} (1-\beta_s),               \tag{ch09:forward}

so :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon` with :math:`\alpha_t^2 = \bar\alpha_t`,
:math:`\sigma_t^2 = 1-\bar\alpha_t` and :math:`\epsilon \sim \mathcal N(0, I)` (:meth:`GaussianDiffusion.q_sample`).
Everything is a function of the signal-to-noise ratio :math:`\mathrm{SNR}_t = \alpha_t^2/\sigma_t^2`;
a *schedule* is a decreasing log-SNR :math:`\lambda(\tau)` on continuous time :math:`\tau \in [0, 1]`
(:func:`log_snr`), and step :math:`t = 1..T` sits at :math:`\tau = t/T`.

**The posterior and the reverse process.** Given :math:`x_0`, Bayes' rule on the two Gaussians gives

.. math::  q(x_{t-1} \mid x_t, x_0) = \mathcal N\big(\tilde\mu_t, \tilde\beta_t I\big),\quad
           \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
                       + \frac{\sqrt{1-\beta_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t,\quad
           \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t,                 \tag{ch09:posterior}

and the model's reverse step :math:`p_\theta(x_{t-1}\mid x_t)` is this posterior with :math:`x_0` replaced by
the network's guess :math:`\hat x_0 = (x_t - \sigma_t \hat\epsilon_\theta(x_t, t))/\alpha_t`
(:meth:`GaussianDiffusion.p_mean_variance`; the network predicts the noise).

**The bound.** :math:`-\log p_\theta(x_0) \le L_T + \sum_{t=2}^{T} L_{t-1} + L_0` with
:math:`L_T = \mathrm{KL}(q(x_T\mid x_0)\,\|\,\mathcal N(0, I))`,
:math:`L_{t-1} = \mathrm{KL}(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))` and
:math:`L_0 = -\log p_\theta(x_0\mid x_1)`. With the posterior's variance every KL is a difference of means,

.. math::  L_{t-1} = \tfrac12\,(\mathrm{SNR}_{t-1} - \mathrm{SNR}_t)\,\lVert x_0 - \hat x_0\rVert^2
                   = \tfrac12\Big(\frac{\mathrm{SNR}_{t-1}}{\mathrm{SNR}_t} - 1\Big)
                     \lVert \epsilon - \hat\epsilon_\theta(x_t, t)\rVert^2 ,                  \tag{ch09:kl-snr}

so Ho et al.'s *simple* loss :math:`\mathbb E\lVert\epsilon-\hat\epsilon\rVert^2` is the bound with the
weights :math:`\mathrm{SNR}_{t-1}/\mathrm{SNR}_t - 1` set to one (``loss(x, weighting="simple")``); with a
log-SNR linear in time (``schedule="loglinear"``, Kingma et al. 2021) the weights are all equal and the
two losses differ by a constant factor only. For images of ``levels`` grey levels scaled to [-1, 1],
:math:`L_0` is a Gaussian integrated over each level's bin (the discretised decoder of Ho et al.), so the
bound is on the negative log-probability of the *discrete* image, in nats, as in Chapters 4-8
(:meth:`GaussianDiffusion.nll_bound`).

**Sampling.** Ancestral sampling (DDPM) runs the reverse chain. DDIM (Song, Meng & Ermon 2021) takes
steps :math:`t \to s < t`,

.. math::  x_s = \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - \eta^2 c^2}\;\hat\epsilon + \eta\, c\, z,\qquad
           c^2 = \frac{\sigma_s^2}{\sigma_t^2}\Big(1 - \frac{\alpha_t^2}{\alpha_s^2}\Big),     \tag{ch09:ddim}

which is DDPM's step for :math:`\eta = 1` and a deterministic map for :math:`\eta = 0`
(:meth:`GaussianDiffusion.ddim_step`).

**Scores and the probability-flow ODE.** The noise prediction is a scaled score,
:math:`\nabla_{x}\log q_t(x) = -\hat\epsilon/\sigma_t` (denoising score matching, Vincent 2011), and
the ODE (Song et al. 2021)

.. math::  \frac{dx}{d\tau} = \dot\alpha\,\hat x_0 + \dot\sigma\,\hat\epsilon
           = \tfrac12\dot\lambda\,\big(\sigma^2 x - \sigma\,\hat\epsilon\big)                 \tag{ch09:pf-ode}

moves samples of :math:`q_\tau` to samples of :math:`q_{\tau'}` for any two times. Integrating it with the
divergence of its velocity gives an exact log-likelihood (:func:`ode_log_prob`,
:meth:`GaussianDiffusion.ode_log_prob`, which integrates in :math:`\lambda` instead of :math:`\tau`).

**Flow matching** (Lipman et al. 2023; Liu, Gong & Liu 2023, "rectified flow") takes the straight path
:math:`x_\tau = (1-\tau) x_0 + \tau\epsilon` and regresses a velocity network on its time derivative,
:math:`\lVert v_\theta(x_\tau, \tau) - (\epsilon - x_0)\rVert^2`: the same ODE view with
:math:`\alpha = 1-\tau`, :math:`\sigma = \tau` (:class:`FlowMatching`).

**Guidance.** Classifier-free guidance (Ho & Salimans 2022) mixes a conditional and an unconditional
prediction of one network, :math:`\hat\epsilon_w = \hat\epsilon(x, \varnothing) + w\,(\hat\epsilon(x, y) -
\hat\epsilon(x, \varnothing))`; classifier guidance (Dhariwal & Nichol 2021) shifts it along a noisy
classifier's gradient, :math:`\hat\epsilon - s\,\sigma_t \nabla_x \log p_\phi(y\mid x_t)`.
:func:`preferred_input` is their ancestor from the course slides (Nguyen et al. 2016): gradient ascent
on a classifier's log-probability through a generator's latent code, or on the pixels.

Conventions
-----------
- The network is an argument: ``model(x_t, tau, y) -> (B, D)`` with ``tau`` ``(B,)`` the continuous time
  in [0, 1] (step ``t`` is ``tau = t / T``) and ``y`` integer labels or ``None``
  (:class:`gmlib.nets.TimeUNet`, :class:`gmlib.nets.TimeMLP`). It predicts the noise
  (:class:`GaussianDiffusion`) or the velocity (:class:`FlowMatching`).
- Data ``x``: ``(B, D)``. With ``levels = L`` they are integers ``0..L-1`` (``gmlib.data.digits(view="int")``),
  scaled inside to [-1, 1]; ``sample`` returns integers in the same form. With ``levels=None`` they are
  continuous (the 2-D densities) and used as given.
- Step indices follow Ho et al.'s code: ``t`` is a ``LongTensor`` of 0-based indices ``0..T-1`` (index
  ``k`` is step ``k+1`` of the maths). Schedules are computed in float64 and registered as buffers.
- ``nll_bound(x) -> (B,)`` and ``ode_log_prob(x) -> (B,)`` are per example, in nats, never averaged;
  ``loss(x)`` is a scalar for :func:`gmlib.train.train`.

Equation labels (``ch09:...``) refer to Chapter 9 of the book.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as nnf

from ._checks import check_int

__all__ = ["SCHEDULES", "log_snr", "tau_from_log_snr", "GaussianDiffusion", "FlowMatching", "normal_kl",
           "square_symmetry", "discretized_gaussian_log_likelihood", "ode_log_prob", "preferred_input"]

SCHEDULES = ("linear", "cosine", "loglinear")
LOG_SNR_LIMITS = (-20.0, 20.0)  # lambda is clamped here: the cosine schedule reaches -inf at tau = 1


def log_snr(tau: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    r"""The log signal-to-noise ratio :math:`\lambda(\tau) = \log(\alpha^2/\sigma^2)` of a schedule, float64.

    - ``"linear"``: Ho et al.'s betas rising linearly from 1e-4 to 0.02 over 1000 steps, in continuous
      time (Song et al. 2021): :math:`\bar\alpha(\tau) = \exp(-0.1\tau - 9.95\tau^2)`.
    - ``"cosine"``: Nichol & Dhariwal (2021),
      :math:`\bar\alpha(\tau) = \cos^2\!\big(\frac{\pi}{2}\frac{\tau+s}{1+s}\big)
      / \cos^2\!\big(\frac{\pi}{2}\frac{s}{1+s}\big)`, :math:`s = 0.008`.
    - ``"loglinear"``: Kingma et al. (2021)'s fixed schedule, :math:`\lambda` falling linearly from 13.3 to -5.

    Values are clamped to [-20, 20].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    tau = torch.as_tensor(tau, dtype=torch.float64)
    if schedule == "linear":
        b = 0.1 * tau + 9.95 * tau**2  # -log alpha-bar
        lam = -torch.log(torch.expm1(b))  # log(abar / (1 - abar)) = -log(exp(b) - 1)
    elif schedule == "cosine":
        s = 0.008
        u = 0.5 * math.pi * (tau + s) / (1 + s)
        abar = (torch.cos(u) / math.cos(0.5 * math.pi * s / (1 + s))) ** 2
        abar = abar.clamp(0.0, 1.0)
        lam = torch.log(abar) - torch.log1p(-abar)
    else:
        lam = 13.3 - 18.3 * tau
    return lam.clamp(*LOG_SNR_LIMITS)


def tau_from_log_snr(lam: torch.Tensor, schedule: str = "cosine") -> torch.Tensor:
    """The inverse of :func:`log_snr` on its unclamped range: the time ``tau`` (float64) at which the schedule
    has log-SNR ``lam``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    lam = torch.as_tensor(lam, dtype=torch.float64)
    if schedule == "linear":
        b = nnf.softplus(-lam)  # -log alpha-bar
        return (-0.1 + torch.sqrt(0.01 + 4 * 9.95 * b)) / (2 * 9.95)
    if schedule == "cosine":
        s = 0.008
        c = torch.sqrt(torch.sigmoid(lam)) * math.cos(0.5 * math.pi * s / (1 + s))
        return torch.arccos(c) * 2 * (1 + s) / math.pi - s
    return (13.3 - lam) / 18.3


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu_1, e^{v_1}) \,\|\, \mathcal N(\mu_2, e^{v_2}))`, nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b``, accurate in both tails (float64 inside)."""
    a, b = a.double(), b.double()
    flip = (a + b) > 0  # far in the upper tail, use Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        levels: int) -> torch.Tensor:
    r"""Elementwise :math:`\log P(x)` of pixels ``x`` (integers ``0..levels-1``) under
    :math:`\mathcal N(\text{mean}, e^{2\,\text{log\_scale}})` on the [-1, 1] scale, integrated over each
    level's bin :math:`[v - \delta, v + \delta]`, :math:`v = 2x/(L-1) - 1`, :math:`\delta = 1/(L-1)`, the
    outer bins extended to :math:`\pm\infty` (Ho et al. 2020's decoder). Float64; the probabilities of the
    ``levels`` values sum to one."""
    delta = 1.0 / (levels - 1)
    v = 2.0 * x.double() / (levels - 1) - 1.0
    inv = torch.exp(-log_scale.double())
    lo = torch.where(x <= 0, torch.full_like(v, -math.inf), (v - delta - mean.double()) * inv)
    hi = torch.where(x >= levels - 1, torch.full_like(v, math.inf), (v + delta - mean.double()) * inv)
    return _log_ndtr_diff(lo, hi)


def _stratified(n: int, device) -> torch.Tensor:
    """``n`` times in [0, 1), each uniform, spread evenly over the interval: :math:`(u + i/n) \bmod 1` with one
    uniform :math:`u` (Kingma et al. 2021's low-discrepancy sampler). Each example's loss is unbiased as with
    independent draws; the batch's mean varies less."""
    return (torch.rand((), device=device) + torch.arange(n, device=device) / n) % 1.0


def square_symmetry(x: torch.Tensor, k: torch.Tensor, side: int) -> torch.Tensor:
    """Each row of ``x`` ``(B, side * side)`` (an image, row-major) moved by one of the eight symmetries of the
    square, ``k`` ``(B,)`` in 0..7: 0 the identity, 1-3 quarter turns, 4 and 5 the two mirror images, 6 and 7
    the transpose and the anti-transpose."""
    grid = torch.arange(side * side, device=x.device).reshape(side, side)
    maps = [grid, grid.rot90(1), grid.rot90(2), grid.rot90(3), grid.flip(1), grid.flip(0), grid.T,
            grid.rot90(2).T]
    perms = torch.stack([m.reshape(-1) for m in maps])  # (8, D): where each output pixel comes from
    return x.gather(1, perms[k.long()])


def _index_vector(value, n: int, limit: int, name: str, what: str, device) -> torch.Tensor:
    """``value`` (an int or ``(n,)`` integers) as a ``LongTensor (n,)`` on ``device``, each in ``0..limit-1``;
    ``ValueError`` naming ``name`` and ``what`` otherwise."""
    v = torch.as_tensor(value, device=device)
    if v.dim() == 0:
        v = v.expand(n)
    if v.is_floating_point() or v.shape != (n,):
        raise ValueError(f"{name} must be integer {what} of shape ({n},), got {v.dtype} {tuple(v.shape)}")
    if bool(((v < 0) | (v >= limit)).any()):
        raise ValueError(f"{what} must lie in 0..{limit - 1}")
    return v.long()


def _gather(buffer: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``buffer[t]`` shaped to broadcast against ``like`` ``(B, ...)``, in ``like``'s dtype."""
    return buffer[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _check_data(x: torch.Tensor, levels: int | None, dim: int | None, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or (dim is not None and x.shape[1] != dim):
        raise ValueError(f"{name} must have shape (B, {dim if dim is not None else 'D'}), got {tuple(x.shape)}")
    if levels is None:
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has NaN or infinite values")
        return
    xf = x.double()
    bad = ~torch.isfinite(xf) | (xf != xf.round()) | (xf < 0) | (xf > levels - 1)
    if bool(bad.any()):
        raise ValueError(f"{name} must hold integers 0..{levels - 1} (the 'int' view of the digits), got values in "
                         f"[{float(xf.min()):.4g}, {float(xf.max()):.4g}]")


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """The log-density of the standard normal per row ``(B,)``, float64."""
    return -0.5 * (z.double() ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def _trace_jacobian(velocity: torch.Tensor, x: torch.Tensor, probes: torch.Tensor | None) -> torch.Tensor:
    """The divergence of ``velocity`` (computed from ``x`` with a graph) per row: exact with one
    vector-Jacobian product per dimension when ``probes`` is None, else Hutchinson's estimate
    :math:`\\mathbb E[v^\\top (\\partial f/\\partial x) v]` with the given Rademacher probes ``(K, B, D)``."""
    if probes is None:
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(x.shape[1]):
            (g,) = torch.autograd.grad(velocity[:, i].sum(), x, retain_graph=True)
            div = div + g[:, i]
        return div
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for v in probes:
        (g,) = torch.autograd.grad(velocity, x, grad_outputs=v, retain_graph=True)
        total = total + (g * v).sum(1)
    return total / len(probes)


def ode_log_prob(velocity: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, *, tau0: float,
                 tau1: float, steps: int, prior_log_prob: Callable[[torch.Tensor], torch.Tensor],
                 hutchinson: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Exact (``hutchinson=None``) or estimated log-density ``(B,)`` of ``x`` at time ``tau0`` under an ODE
    :math:`dx/d\tau = v(x, \tau)` whose marginal at ``tau1`` is ``prior_log_prob``: the instantaneous change
    of variables (Chen et al. 2018), :math:`\log p_{\tau_0}(x) = \log p_{\tau_1}(x_{\tau_1})
    + \int_{\tau_0}^{\tau_1} \nabla\!\cdot v\, d\tau`, integrated with ``steps`` steps of the classical
    fourth-order Runge-Kutta method. With ``hutchinson=K`` the divergence is estimated with ``K``
    Rademacher probes per row, drawn once (Grathwohl et al. 2019): unbiased, and cheaper in high dimension.
    """
    check_int(steps, "steps")
    h = (tau1 - tau0) / steps
    probes = None
    if hutchinson is not None:
        check_int(hutchinson, "hutchinson")
        probes = torch.randint(0, 2, (hutchinson, *x.shape), generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def field(z, tau):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            v = velocity(z, tau)
            div = _trace_jacobian(v, z, probes)
        return v.detach(), div.detach()

    z = x.detach()
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k in range(steps):
        tau = tau0 + k * h
        v1, d1 = field(z, tau)
        v2, d2 = field(z + 0.5 * h * v1, tau + 0.5 * h)
        v3, d3 = field(z + 0.5 * h * v2, tau + 0.5 * h)
        v4, d4 = field(z + h * v3, tau + h)
        z = z + h / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
        delta = delta + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4).double()
    return prior_log_prob(z).double() + delta


class _Denoising(nn.Module):
    """What the two families share: the data contract, scaling of integer images, label dropout."""

    def __init__(self, model: nn.Module, dim: int, *, levels: int | None, n_classes: int | None, p_uncond: float,
                 symmetry_p: float = 0.0):
        super().__init__()
        if not 0.0 <= symmetry_p < 1.0:
            raise ValueError(f"symmetry_p must lie in [0, 1), got {symmetry_p}")
        side = math.isqrt(dim)
        if symmetry_p > 0 and side * side != dim:
            raise ValueError(f"symmetry_p needs square images; dim = {dim} is not a square")
        self.symmetry_p, self._side = float(symmetry_p), side
        self.model = model
        self.dim = check_int(dim, "dim")
        if levels is not None:
            check_int(levels, "levels", minimum=2)
        if n_classes is not None:
            check_int(n_classes, "n_classes", minimum=2)
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond}")
        self.levels, self.n_classes, self.p_uncond = levels, n_classes, float(p_uncond)

    @property
    def _device(self) -> torch.device:
        return next(self.buffers()).device

    def _dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            return p.dtype
        return torch.float32

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images to [-1, 1] (``levels`` set), continuous data unchanged; in the network's dtype."""
        x = x.to(self._dtype())
        return x if self.levels is None else 2.0 * x / (self.levels - 1) - 1.0

    def to_data_space(self, x0: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_model_space`, rounded to the nearest level for images."""
        if self.levels is None:
            return x0
        return ((x0.clamp(-1, 1) + 1) * (self.levels - 1) / 2).round()

    def _labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if y is None:
            return None
        if self.n_classes is None:
            raise ValueError("this model is unconditional (n_classes=None); it takes no labels y")
        return _index_vector(y, n, self.n_classes, "y", "labels", self._device)

    def _augment(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """In training with ``symmetry_p > 0``: each image turned or flipped by a random non-identity symmetry
        of the square with probability ``symmetry_p``, and the keyword ``aug`` telling the network which
        (:class:`gmlib.nets.TimeUNet` with ``symmetries=True``); otherwise the images and no keyword."""
        if self.symmetry_p == 0.0 or not self.training:
            return x, {}
        n = x.shape[0]
        k = torch.randint(1, 8, (n,), device=x.device)
        k = torch.where(torch.rand(n, device=x.device) < self.symmetry_p, k, torch.zeros_like(k))
        return square_symmetry(x, k, self._side), {"aug": k}

    def _training_batch(self, x, y):
        """A training batch checked and prepared: ``(x, x0, y, aug)``, the data (turned or flipped when
        ``symmetry_p`` says so), the same on the model's scale, the labels with a fraction ``p_uncond`` dropped,
        and the keywords for the network."""
        x, y = self._split_batch(x, y)
        _check_data(x, self.levels, self.dim)
        y = self._drop_labels(self._labels(y, x.shape[0]))
        x, aug = self._augment(x)
        return x, self.to_model_space(x), y, aug

    @staticmethod
    def _split_batch(x, y):
        """``loss((x, y))``, as :func:`gmlib.train.train` passes a batch of two tensors, is ``loss(x, y)``."""
        if isinstance(x, (tuple, list)):
            if len(x) != 2 or y is not None:
                raise ValueError("pass a batch as x, as (x, y), or as x and y")
            return x[0], x[1]
        return x, y

    def _drop_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Training labels with a fraction ``p_uncond`` replaced by "no label" (index ``n_classes``)."""
        if y is None or self.p_uncond == 0.0:
            return y
        drop = torch.rand(y.shape, device=y.device) < self.p_uncond
        return torch.where(drop, torch.full_like(y, self.n_classes), y)

    def _guided(self, x: torch.Tensor, tau: torch.Tensor, y: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The network's output, with classifier-free guidance of scale ``guidance`` when labels are given:
        ``f(x, none) + w (f(x, y) - f(x, none))`` (``w = 0``: unconditional; ``w = 1``: conditional)."""
        if y is None or guidance == 1.0:
            return self.model(x, tau, y)
        if guidance == 0.0:
            return self.model(x, tau, None)
        both = self.model(torch.cat([x, x]), torch.cat([tau, tau]),
                          torch.cat([y, torch.full_like(y, self.n_classes)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)


class GaussianDiffusion(_Denoising):
    r"""A denoising diffusion model (Ho et al. 2020) around a noise-predicting network.

    Parameters
    ----------
    model: ``model(x_t, tau, y) -> eps_hat`` ``(B, D)`` (see the module's conventions).
    dim: the data dimension ``D``.
    timesteps: ``T``, the number of steps of the chain (1000 as Ho et al.).
    schedule: a name in :data:`SCHEDULES` (:func:`log_snr`).
    levels: grey levels of integer images (17 for the digits), or ``None`` for continuous data.
    n_classes: for a class-conditional network; ``p_uncond`` is the fraction of training labels replaced by
        "no label", so that one network also makes the unconditional prediction (Ho & Salimans 2022).
    weighting: the default of :meth:`loss`: ``"simple"`` (Ho et al.'s unweighted noise regression) or
        ``"vlb"`` (an unbiased estimate of the bound itself, in nats per example).
    importance_bins: when set, training draws its steps from a proposal instead of uniformly and weights
        each example by the ratio of the two, so that the loss keeps its expectation (Nichol & Dhariwal
        2021's importance sampling): the steps are cut into this many bins, each bin drawn with
        probability proportional to the root mean square of its recent losses (a tenth of the mass kept
        uniform, and uniform until every bin was seen ten times). Steps where the network is already
        right (nearly clean images, once it snaps pixels to their level) are then drawn less often.
    symmetry_p: in training, the fraction of images turned or flipped by a random symmetry of the square, the
        network told which (``aug``; see :class:`gmlib.nets.TimeUNet`); sampling and the bound use the
        untouched images only (``aug=None``), so the model stays a model of upright digits.
    clip_denoised: clip :math:`\hat x_0` to [-1, 1] when sampling images (never in the bound).
    """

    def __init__(self, model: nn.Module, dim: int, *, timesteps: int = 1000, schedule: str = "cosine",
                 levels: int | None = None, n_classes: int | None = None, p_uncond: float = 0.0,
                 weighting: str = "simple", clip_denoised: bool = True, importance_bins: int | None = None,
                 symmetry_p: float = 0.0):
        super().__init__(model, dim, levels=levels, n_classes=n_classes, p_uncond=p_uncond, symmetry_p=symmetry_p)
        self.num_timesteps = check_int(timesteps, "timesteps", minimum=2)
        if importance_bins is not None:
            check_int(importance_bins, "importance_bins")
            if timesteps % importance_bins:
                raise ValueError(f"importance_bins must divide timesteps = {timesteps}, got {importance_bins}")
            # the running mean square of each bin's loss, and how often it was seen (training state only)
            self.register_buffer("_loss_sq", torch.zeros(importance_bins, dtype=torch.float64), persistent=False)
            self.register_buffer("_loss_seen", torch.zeros(importance_bins, dtype=torch.long), persistent=False)
        self.importance_bins = importance_bins
        if weighting not in ("simple", "vlb"):
            raise ValueError(f"weighting must be 'simple' or 'vlb', got {weighting!r}")
        self.schedule, self.weighting, self.clip_denoised = schedule, weighting, bool(clip_denoised)
        lam = log_snr(torch.arange(0, timesteps + 1, dtype=torch.float64) / timesteps, schedule)  # (T+1,)
        abar_all = torch.sigmoid(lam)
        abar_all[0] = 1.0  # tau = 0 is the data itself
        abar, abar_prev = abar_all[1:], abar_all[:-1]
        betas = 1.0 - abar / abar_prev
        reg = lambda name, value: self.register_buffer(name, value.to(torch.float64))  # noqa: E731
        reg("log_snr", lam[1:])
        reg("betas", betas)
        reg("alphas", 1.0 - betas)
        reg("alphas_cumprod", abar)
        reg("alphas_cumprod_prev", abar_prev)
        reg("sqrt_alphas_cumprod", abar.sqrt())
        reg("sqrt_one_minus_alphas_cumprod", torch.sigmoid(-lam[1:]).sqrt())  # accurate where abar is near 1
        reg("posterior_variance", betas * (1.0 - abar_prev) / (1.0 - abar))
        # the posterior variance is 0 at the first step; Ho et al. clip its log to the second step's
        reg("posterior_log_variance_clipped", torch.log(torch.cat([self.posterior_variance[1:2],
                                                                   self.posterior_variance[1:]])))
        reg("posterior_mean_coef1", betas * abar_prev.sqrt() / (1.0 - abar))
        reg("posterior_mean_coef2", (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar))

    # ---- the forward process -------------------------------------------------------------------
    def _check_t(self, t, n: int) -> torch.Tensor:
        return _index_vector(t, n, self.num_timesteps, "t", "step indices", self.betas.device)

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        """The continuous time of step indices ``t``: ``(t + 1) / T``, float32, what the network sees."""
        return (t.float() + 1.0) / self.num_timesteps

    def q_mean_variance(self, x_start, t):
        """``(mean, variance, log_variance)`` of :math:`q(x_t\\mid x_0)` (ch09:forward), on the [-1, 1] scale."""
        t = self._check_t(t, x_start.shape[0])
        var = _gather(1.0 - self.alphas_cumprod, t, x_start)
        return _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start, var, torch.log(var)

    def q_sample(self, x_start: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of :math:`x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon`
        (ch09:forward)."""
        t = self._check_t(t, x_start.shape[0])
        if noise is None:
            noise = torch.randn_like(x_start)
        return (_gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """``(mean, variance, log_variance_clipped)`` of :math:`q(x_{t-1}\\mid x_t, x_0)` (ch09:posterior)."""
        t = self._check_t(t, x_t.shape[0])
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x_start + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    # ---- the reverse process -------------------------------------------------------------------
    def predict_start_from_noise(self, x_t, t, noise):
        r""":math:`\hat x_0 = (x_t - \sigma_t\hat\epsilon)/\alpha_t`."""
        return (x_t - _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * noise) / _gather(
            self.sqrt_alphas_cumprod, t, x_t)

    def predict_noise(self, x_t: torch.Tensor, t, y=None, *, guidance: float = 1.0, classifier=None,
                      classifier_scale: float = 0.0) -> torch.Tensor:
        r"""The network's :math:`\hat\epsilon(x_t, t)`: with labels ``y``, classifier-free guidance of scale
        ``guidance``; with ``classifier(x_t, tau) -> logits`` and ``classifier_scale = s``, classifier guidance
        :math:`\hat\epsilon - s\,\sigma_t\nabla_{x_t}\log p(y\mid x_t)` (``y`` required)."""
        n = x_t.shape[0]
        t = self._check_t(t, n)
        tau = self.tau(t)
        # the labels are the network's when it has classes; an unconditional network steered by a classifier
        # gets none (they are the classifier's)
        model_y = self._labels(y, n) if self.n_classes is not None or classifier is None else None
        if classifier is None or classifier_scale == 0.0:
            return self._guided(x_t, tau, model_y, guidance)
        if y is None:
            raise ValueError("classifier guidance needs the labels y to steer towards")
        target = torch.as_tensor(y, device=x_t.device).long().expand(n)
        eps = self._guided(x_t, tau, model_y, guidance)
        with torch.enable_grad():
            xg = x_t.detach().requires_grad_(True)
            log_p = nnf.log_softmax(classifier(xg, tau), dim=-1).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return eps - classifier_scale * _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * grad

    def p_mean_variance(self, x_t: torch.Tensor, t, y=None, *, clip_denoised: bool | None = None, **guide) -> dict:
        r"""The reverse step :math:`p_\theta(x_{t-1}\mid x_t)`: the posterior (ch09:posterior) at
        :math:`\hat x_0`. Returns ``mean``, ``variance``, ``log_variance`` (the posterior's, clipped as
        Ho et al.), ``pred_xstart`` and ``eps``. ``guide``: ``guidance``, ``classifier``, ``classifier_scale``
        of :meth:`predict_noise`."""
        t = self._check_t(t, x_t.shape[0])
        eps = self.predict_noise(x_t, t, y, **guide)
        x0 = self.predict_start_from_noise(x_t, t, eps)
        clip = self.clip_denoised if clip_denoised is None else clip_denoised
        if clip and self.levels is not None:
            x0 = x0.clamp(-1, 1)
        mean, var, log_var = self.q_posterior_mean_variance(x0, x_t, t)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_xstart": x0, "eps": eps}

    def p_sample(self, x_t, t, y=None, *, generator=None, **guide) -> torch.Tensor:
        """One ancestral step :math:`x_{t-1} \\sim p_\\theta(x_{t-1}\\mid x_t)` (no noise at the last step)."""
        t = self._check_t(t, x_t.shape[0])
        out = self.p_mean_variance(x_t, t, y, **guide)
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        nonzero = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    def _abar(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`\\bar\\alpha` at indices ``t``, where index -1 is the data (1)."""
        return torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones_like(self.alphas_cumprod[0:1]))

    def ddim_step(self, x_t, t, s, y=None, *, eta: float = 0.0, generator=None, clip_denoised=None,
                  **guide) -> torch.Tensor:
        r"""One DDIM step (ch09:ddim) from indices ``t`` to earlier indices ``s`` (``-1``: the data). ``eta = 1``
        with ``s = t - 1`` is DDPM's step, with its posterior variance; ``eta = 0`` is deterministic."""
        t = self._check_t(t, x_t.shape[0])
        s = torch.as_tensor(s, device=t.device).long().expand_as(t)
        if bool((s >= t).any()) or bool((s < -1).any()):
            raise ValueError("DDIM steps go back in time: need -1 <= s < t")
        eps = self.predict_noise(x_t, t, y, **guide)
        x0 = self.predict_start_from_noise(x_t, t, eps)
        clip = self.clip_denoised if clip_denoised is None else clip_denoised
        if clip and self.levels is not None:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - _gather(self.sqrt_alphas_cumprod, t, x_t) * x0) / _gather(
                self.sqrt_one_minus_alphas_cumprod, t, x_t)
        abar_t, abar_s = self._abar(t), self._abar(s)
        c2 = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        shape = (-1, *([1] * (x_t.dim() - 1)))
        sigma = (eta * c2.sqrt()).to(x_t.dtype).reshape(shape)
        dir_coef = (1 - abar_s - eta**2 * c2).clamp(min=0).sqrt().to(x_t.dtype).reshape(shape)
        x_s = abar_s.sqrt().to(x_t.dtype).reshape(shape) * x0 + dir_coef * eps
        if eta > 0:
            x_s = x_s + sigma * torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return x_s

    def step_indices(self, steps: int | None) -> list[int]:
        """The indices a sampler of ``steps`` steps visits, from ``T-1`` down, evenly spaced (all when None)."""
        if steps is None:
            return list(range(self.num_timesteps - 1, -1, -1))
        check_int(steps, "steps")
        if steps > self.num_timesteps:
            raise ValueError(f"steps must be at most T = {self.num_timesteps}, got {steps}")
        grid = torch.linspace(self.num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()
        return [int(i) for i in torch.unique_consecutive(grid)]

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, sampler: str = "ddpm", *, y=None, eta: float | None = None,
               generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
               return_trajectory: bool = False, data_space: bool = True, **guide):
        r"""``n`` samples ``(n, D)``: the reverse chain from :math:`x_T \sim \mathcal N(0, I)` (or ``x_T``).

        ``sampler="ddpm"``: ancestral steps (with ``steps < T``, DDIM's step with ``eta = 1`` on the evenly
        spaced sub-sequence, which is DDPM's respaced chain); ``"ddim"``: deterministic (``eta = 0``) unless
        ``eta`` is given. ``y``: labels (an int or ``(n,)``) for a conditional model; ``guide``: see
        :meth:`predict_noise`. Images come back as integer levels (``data_space=False``: the [-1, 1]
        values); ``return_trajectory`` also returns the states ``(len(steps) + 1, n, D)``, first the noise.
        """
        check_int(n, "n")
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        eta = (1.0 if sampler == "ddpm" else 0.0) if eta is None else float(eta)
        device, dtype = self._device, self._dtype()
        if self.n_classes is not None or guide.get("classifier") is None:
            y = self._labels(y, n)
        elif y is not None:  # an unconditional model steered by a classifier: the labels are the classifier's
            y = torch.as_tensor(y, device=device).long().expand(n)
        if x_T is None:
            x = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype)
        else:
            x = x_T.to(device=device, dtype=dtype)
        indices = self.step_indices(steps)
        trajectory = [x]
        for i, t in enumerate(indices):
            s = indices[i + 1] if i + 1 < len(indices) else -1
            tt = torch.full((n,), t, device=device, dtype=torch.long)
            if sampler == "ddpm" and eta == 1.0 and s == t - 1:
                x = self.p_sample(x, tt, y, generator=generator, **guide)
            else:
                x = self.ddim_step(x, tt, s, y, eta=eta, generator=generator, **guide)
            if return_trajectory:
                trajectory.append(x)
        out = self.to_data_space(x) if data_space else x
        return (out, torch.stack(trajectory)) if return_trajectory else out

    @torch.no_grad()
    def ddim_invert(self, x: torch.Tensor, steps: int | None = None, y=None, **guide) -> torch.Tensor:
        """The deterministic DDIM map run forwards: data (model space, [-1, 1] for images) to :math:`x_T`.
        ``sample(..., sampler="ddim", x_T=ddim_invert(x0), data_space=False)`` gives back ``x0`` up to the
        discretisation error of ``steps`` steps."""
        indices = self.step_indices(steps)[::-1]  # ascending, from index 0 to T-1
        n = x.shape[0]
        z, prev = x.to(self._dtype()), -1
        for t in indices:
            # the DDIM map from index prev to t, with the noise predicted at prev (at the first index from
            # the data, where any prediction gives x0_hat = x)
            k = torch.full((n,), prev if prev >= 0 else t, device=z.device, dtype=torch.long)
            eps = self.predict_noise(z, k, y, **guide)
            abar_p = self._abar(torch.tensor([prev], device=z.device)).to(z.dtype)
            abar_t = self.alphas_cumprod[t].to(z.dtype)
            x0 = (z - (1 - abar_p).sqrt() * eps) / abar_p.sqrt()
            z, prev = abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * eps, t
        return z

    # ---- training and the bound ----------------------------------------------------------------
    def _terms_weight(self, t: torch.Tensor) -> torch.Tensor:
        r"""(ch09:kl-snr)'s factor :math:`\tfrac12(\mathrm{SNR}_{t-1}/\mathrm{SNR}_t - 1)` for indices ``t >= 1``."""
        return 0.5 * torch.expm1(self.log_snr[(t - 1).clamp(min=0)] - self.log_snr[t])

    def loss(self, x: torch.Tensor, y=None, *, weighting: str | None = None) -> torch.Tensor:
        """The training loss of a batch ``x`` (and labels ``y``): ``"simple"``, the mean over examples of
        :math:`\\lVert\\epsilon-\\hat\\epsilon\\rVert^2/D` at a uniform step; ``"vlb"``, an unbiased estimate of the
        mean bound (nats per example) from one uniform step per example. The batch's steps are stratified
        (:func:`_stratified`)."""
        weighting = weighting or self.weighting
        x, x0, y, aug = self._training_batch(x, y)
        n = x0.shape[0]
        t, weight = self._draw_steps(n, x0.device)
        noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        eps = self.model(x_t, self.tau(t), y, **aug)
        sq = (noise - eps).pow(2).sum(1)  # (B,)
        self._record(t, sq.detach())
        if weighting == "simple":
            terms = sq / self.dim
        else:  # the bound: T times the term of a uniform step; step 0 is L_0, the others (ch09:kl-snr)
            w = self._terms_weight(t).to(sq.dtype)
            is_first = t == 0
            terms = torch.where(is_first, torch.zeros_like(sq), w * sq)
            if bool(is_first.any()):
                l0 = self._decoder_nll(x, x0, x_t, eps, t).to(sq.dtype)
                terms = torch.where(is_first, l0, terms)
            terms = self.num_timesteps * terms
        if weight is not None:  # importance sampling: uniform probability over proposal probability
            terms = terms * weight.to(terms.dtype)
        if weighting == "simple":
            return terms.mean()
        return (terms + self.prior_kl(x0).to(sq.dtype)).mean()  # plus L_T

    def step_proposal(self) -> torch.Tensor | None:
        """The probability of each importance bin ``(bins,)`` (float64), or None when steps are drawn
        uniformly (no bins, or a bin seen fewer than ten times)."""
        if self.importance_bins is None or bool((self._loss_seen < 10).any()):
            return None
        p = self._loss_sq.sqrt()
        p = p / p.sum()
        return 0.9 * p + 0.1 / self.importance_bins

    def _draw_steps(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step indices ``(n,)`` for a training batch, stratified (:func:`_stratified`), and each example's
        weight (uniform probability over proposal probability; None when uniform)."""
        u = _stratified(n, device)
        T = self.num_timesteps
        proposal = self.step_proposal() if self.training else None
        if proposal is None:
            return (u * T).long().clamp(max=T - 1), None
        bins = self.importance_bins
        cdf = torch.cumsum(proposal, 0)
        b = torch.searchsorted(cdf, u.double() * float(cdf[-1])).clamp(max=bins - 1)  # (n,) bins
        width = T // bins
        t = b * width + torch.randint(0, width, (n,), device=device)
        return t, (1.0 / bins) / proposal[b]

    @torch.no_grad()
    def _record(self, t: torch.Tensor, sq: torch.Tensor) -> None:
        """Fold a batch's unweighted losses into the running mean squares of their bins."""
        if self.importance_bins is None or not self.training:
            return
        b = t // (self.num_timesteps // self.importance_bins)
        for k in torch.unique(b).tolist():
            mean_sq = float((sq[b == k].double() ** 2).mean())
            seen = int(self._loss_seen[k])
            decay = min(0.9, seen / (seen + 1))  # a plain mean at first, then a moving average
            self._loss_sq[k] = decay * self._loss_sq[k] + (1 - decay) * mean_sq
            self._loss_seen[k] += int((b == k).sum())

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        r""":math:`L_T = \mathrm{KL}(q(x_T\mid x_0)\,\|\,\mathcal N(0, I))` per example, nats, float64."""
        abar = self.alphas_cumprod[-1]
        mean = abar.sqrt() * x0.double()
        return normal_kl(mean, torch.log1p(-abar), torch.zeros_like(mean), torch.zeros_like(mean)).sum(1)

    def _decoder_nll(self, x, x0, x_t, eps, t) -> torch.Tensor:
        r""":math:`L_0 = -\log p(x_0\mid x_1)` per example (nats, float64) from the network's ``eps`` at index 0:
        the discretised Gaussian for images, the Gaussian density for continuous data, with mean
        :math:`\hat x_0` and the variance :math:`\sigma_1^2/\alpha_1^2`."""
        x0_hat = self.predict_start_from_noise(x_t, torch.zeros_like(t), eps).double()
        log_scale = 0.5 * (-self.log_snr[0]) * torch.ones_like(x0_hat)
        if self.levels is not None:
            return -discretized_gaussian_log_likelihood(x, x0_hat, log_scale, self.levels).sum(1)
        z = (x0.double() - x0_hat) * torch.exp(-log_scale)
        return (0.5 * z**2 + log_scale + 0.5 * math.log(2 * math.pi)).sum(1)

    @torch.no_grad()
    def vb_term(self, x: torch.Tensor, t, y=None, *, noise=None) -> torch.Tensor:
        r"""One term of the bound per example, nats, float64: :math:`L_{t-1}` (a Gaussian KL computed from
        the two means and variances, ch09:posterior) for indices ``t >= 1``, :math:`L_0` for ``t = 0``."""
        _check_data(x, self.levels, self.dim)
        x0 = self.to_model_space(x)
        t = self._check_t(t, x0.shape[0])
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = self.p_mean_variance(x_t, t, y, clip_denoised=False)
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        kl = normal_kl(true_mean.double(), true_log_var.double(), out["mean"].double(),
                       out["log_variance"].double()).sum(1)
        first = self._decoder_nll(x, x0, x_t, out["eps"], t)
        return torch.where(t == 0, first, kl)

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, y=None, *, t_samples: int | None = None, generator=None,
                  batch_steps: int = 50, return_terms: bool = False):
        r"""The variational bound on :math:`-\log p(x)` per example ``(B,)``, nats, float64:
        :math:`L_T + \sum_{t\ge 2} L_{t-1} + L_0`. Every term is computed with one noise draw
        (``t_samples=None``, ``T`` network passes), or the sum over steps is estimated without bias from
        ``t_samples`` steps per example drawn uniformly. ``return_terms`` also returns the ``(B, T)`` terms
        (``t_samples=None`` only), ``[:, k]`` being the term of index ``k``."""
        _check_data(x, self.levels, self.dim)
        x0 = self.to_model_space(x)
        n, T = x0.shape[0], self.num_timesteps
        y = self._labels(y, n)
        if t_samples is None:
            terms = []
            for start in range(0, T, batch_steps):
                ks = torch.arange(start, min(start + batch_steps, T), device=x0.device)
                tt = ks.repeat_interleave(n)
                xx = x.repeat(len(ks), 1)
                yy = None if y is None else y.repeat(len(ks))
                noise = torch.randn(xx.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                terms.append(self.vb_term(xx, tt, yy, noise=noise).reshape(len(ks), n).T)
            terms = torch.cat(terms, 1)  # (B, T)
            total = terms.sum(1) + self.prior_kl(x0)
            return (total, terms) if return_terms else total
        check_int(t_samples, "t_samples")
        acc = torch.zeros(n, dtype=torch.float64, device=x0.device)
        for _ in range(t_samples):
            tt = torch.randint(0, T, (n,), generator=generator, device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            acc += self.vb_term(x, tt, y, noise=noise)
        return T * acc / t_samples + self.prior_kl(x0)

    # ---- the probability-flow ODE ----------------------------------------------------------------
    def ode_velocity(self, x: torch.Tensor, lam: float, y=None, guidance: float = 1.0) -> torch.Tensor:
        r"""The probability-flow velocity in log-SNR time, :math:`dx/d\lambda = \tfrac12(\sigma^2 x -
        \sigma\hat\epsilon)` (ch09:pf-ode divided by :math:`\dot\lambda`), with the network evaluated at
        the time ``tau`` where the schedule has log-SNR ``lam``. In :math:`\lambda` the ODE has no
        singularity at either end of the schedule, which :math:`\tau` has for the cosine schedule."""
        lam = float(lam)
        sigma2 = 1.0 / (1.0 + math.exp(lam))
        tau = float(tau_from_log_snr(torch.tensor(lam), self.schedule))
        tau_b = torch.full((x.shape[0],), tau, device=x.device, dtype=x.dtype)
        eps = self._guided(x, tau_b, self._labels(y, x.shape[0]), guidance)
        return 0.5 * (sigma2 * x - math.sqrt(sigma2) * eps)

    def ode_log_prob(self, x: torch.Tensor, *, steps: int = 100, tau0: float | None = None,
                     hutchinson: int | None = None, generator=None, y=None, prior_log_prob=None) -> torch.Tensor:
        r"""The log-density ``(B,)`` at time ``tau0`` (default the first step, ``1/T``) of continuous data ``x``
        (model space) under the probability-flow ODE (ch09:pf-ode), integrated in log-SNR from
        :math:`\lambda(\tau_0)` to :math:`\lambda(1)` in ``steps`` equal steps, with ``prior_log_prob`` at
        :math:`\tau = 1` (default :math:`\mathcal N(0, I)`, exact up to :math:`\alpha_1^2`); see
        :func:`ode_log_prob`."""
        tau0 = 1.0 / self.num_timesteps if tau0 is None else float(tau0)
        lam0, lam1 = (float(log_snr(torch.tensor(v), self.schedule)) for v in (tau0, 1.0))
        if prior_log_prob is None:
            prior_log_prob = _standard_normal_log_prob
        return ode_log_prob(lambda z, lam: self.ode_velocity(z, lam, y), x.to(self._dtype()), tau0=lam0, tau1=lam1,
                            steps=steps, prior_log_prob=prior_log_prob, hutchinson=hutchinson, generator=generator)


class FlowMatching(_Denoising):
    r"""Flow matching on the straight path (Lipman et al. 2023; Liu et al. 2023, rectified flow):
    :math:`x_\tau = (1-\tau)x_0 + \tau\epsilon`, the network ``model(x_tau, tau, y)`` regressed on
    :math:`\epsilon - x_0`. Sampling integrates :math:`dx/d\tau = v` from :math:`\tau = 1` (noise) to 0 with
    Euler or Heun steps; :meth:`ode_log_prob` gives the exact log-density by the same ODE.
    ``levels``, ``n_classes``, ``p_uncond`` as in :class:`GaussianDiffusion`.
    """

    def __init__(self, model: nn.Module, dim: int, *, levels: int | None = None, n_classes: int | None = None,
                 p_uncond: float = 0.0, symmetry_p: float = 0.0):
        super().__init__(model, dim, levels=levels, n_classes=n_classes, p_uncond=p_uncond, symmetry_p=symmetry_p)
        self.register_buffer("_anchor", torch.zeros(()))  # marks the device the model lives on

    def loss(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Mean over examples of :math:`\\lVert v_\\theta(x_\\tau,\\tau) - (\\epsilon - x_0)\\rVert^2 / D`,
        :math:`\\tau` uniform on [0, 1]."""
        _, x0, y, aug = self._training_batch(x, y)
        n = x0.shape[0]
        tau = _stratified(n, x0.device).to(x0.dtype)
        noise = torch.randn_like(x0)
        x_tau = (1 - tau[:, None]) * x0 + tau[:, None] * noise
        return (self.model(x_tau, tau, y, **aug) - (noise - x0)).pow(2).sum(1).mean() / self.dim

    def velocity(self, x: torch.Tensor, tau: float, y=None, guidance: float = 1.0) -> torch.Tensor:
        tau_b = torch.full((x.shape[0],), float(tau), device=x.device, dtype=x.dtype)
        return self._guided(x, tau_b, self._labels(y, x.shape[0]), guidance)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, sampler: str = "heun", *, y=None, guidance: float = 1.0,
               generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
               return_trajectory: bool = False, data_space: bool = True):
        """``n`` samples ``(n, D)`` by ``steps`` Euler (``sampler="euler"``, one network pass a step) or Heun
        (``"heun"``, two passes a step but the last) steps from :math:`\\tau = 1` to 0; images as levels."""
        check_int(n, "n")
        check_int(steps, "steps")
        if sampler not in ("euler", "heun"):
            raise ValueError(f"sampler must be 'euler' or 'heun', got {sampler!r}")
        device, dtype = self._device, self._dtype()
        x = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype) if x_T is None \
            else x_T.to(device=device, dtype=dtype)
        taus = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
        trajectory = [x]
        for a, b in zip(taus[:-1], taus[1:]):
            v = self.velocity(x, a, y, guidance)
            x_next = x + (b - a) * v
            if sampler == "heun" and b > 0:
                x_next = x + (b - a) * 0.5 * (v + self.velocity(x_next, b, y, guidance))
            x = x_next
            if return_trajectory:
                trajectory.append(x)
        out = self.to_data_space(x) if data_space else x
        return (out, torch.stack(trajectory)) if return_trajectory else out

    def ode_log_prob(self, x: torch.Tensor, *, steps: int = 100, tau0: float = 0.0, hutchinson: int | None = None,
                     generator=None, y=None) -> torch.Tensor:
        """The model's log-density ``(B,)`` of continuous data ``x`` (model space) by the ODE, with
        :math:`\\mathcal N(0, I)` at :math:`\\tau = 1`; see :func:`ode_log_prob`."""
        return ode_log_prob(lambda z, tau: self.velocity(z, tau, y), x.to(self._dtype()), tau0=tau0, tau1=1.0,
                            steps=steps, prior_log_prob=_standard_normal_log_prob, hutchinson=hutchinson,
                            generator=generator)

    def dequantized_bound(self, x: torch.Tensor, *, steps: int = 50, hutchinson: int | None = 1,
                          generator=None) -> torch.Tensor:
        r"""A bound on :math:`-\log P(x)` of integer images ``(B,)``, nats: uniform dequantisation inside each
        level's bin of width :math:`2/(L-1)` on the [-1, 1] scale, :math:`-\log P(x) \le
        -\mathbb E_u \log p(v + u) - D\log\frac{2}{L-1}`, with one draw of ``u`` and the ODE's log-density
        (Hutchinson's estimate by default: unbiased, so the mean over images stays a bound estimate)."""
        if self.levels is None:
            raise ValueError("dequantized_bound is for integer images (levels set)")
        _check_data(x, self.levels, self.dim)
        width = 2.0 / (self.levels - 1)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32) - 0.5
        v = self.to_model_space(x) + width * u.to(self._dtype())
        return -self.ode_log_prob(v, steps=steps, hutchinson=hutchinson, generator=generator) \
            - self.dim * math.log(width)


def preferred_input(classifier: Callable[[torch.Tensor], torch.Tensor], target: int, start: torch.Tensor, *,
                    generator: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 200,
                    lr: float = 0.1, l2: float = 0.0, clamp: tuple[float, float] | None = None) -> dict:
    r"""Synthesise inputs a classifier prefers for class ``target`` by plain gradient ascent with a fixed step
    on :math:`\log p(\text{target}\mid x) - \tfrac{l_2}{2}\lVert u\rVert^2` over a variable ``u`` started at
    ``start`` ``(B, ...)``: the pixels themselves (``generator=None``; optionally clamped to ``clamp`` after
    each step) or a generator's latent code, :math:`x = G(u)` (Nguyen et al. 2016). Returns ``x`` (the final
    inputs), ``u``, and ``log_probs`` ``(steps + 1, B)``, the target's log-probability along the way."""
    check_int(steps, "steps", minimum=0)
    u = start.detach().clone().requires_grad_(True)
    labels = torch.full((start.shape[0],), int(target), dtype=torch.long, device=start.device)
    history = []
    decode = generator if generator is not None else (lambda v: v)
    for k in range(steps + 1):
        x = decode(u)
        log_p = nnf.log_softmax(classifier(x), dim=-1).gather(1, labels[:, None]).squeeze(1)
        history.append(log_p.detach())
        if k == steps:
            break
        objective = log_p.sum() - 0.5 * l2 * u.pow(2).sum()
        (g,) = torch.autograd.grad(objective, u)
        with torch.no_grad():
            u += lr * g
            if clamp is not None and generator is None:
                u.clamp_(*clamp)
    return {"x": decode(u).detach(), "u": u.detach(), "log_probs": torch.stack(history)}
