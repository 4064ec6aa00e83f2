r"""Chapter 1: the probability toolkit.

Entropy and KL divergence (categorical and diagonal Gaussian, closed form and
Monte Carlo), the evidence lower bound of a conjugate toy model whose evidence
is exact, and the two gradient estimators every later chapter relies on.

Conventions
-----------
- Everything is in **nats** (natural logarithms).
- A diagonal Gaussian is given by ``mean`` and ``log_var`` (the log of the
  variance, :math:`\log\sigma^2`), both of shape ``(..., D)``; the last
  dimension is the event, earlier ones are batch. Results are per example,
  shape ``(...)``, never averaged.
- A categorical distribution is a probability vector along the last dimension.
- Monte Carlo estimators return ``(estimate, stderr)``: the sample mean and
  its standard error :math:`\hat\sigma/\sqrt{n}`.

Equation labels (``ch01:...``) refer to Chapter 1 of the book.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import check_int, check_probabilities, check_same_shape, check_tensor
from .device import get_device

__all__ = [
    "categorical_entropy",
    "categorical_kl",
    "gaussian_log_prob",
    "gaussian_entropy",
    "gaussian_kl",
    "reparameterize",
    "mc_mean",
    "mc_kl_gaussian",
    "mc_kl_categorical",
    "ConjugateGaussian",
    "reparam_gradients",
    "score_function_gradients",
]

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------
# Entropy and KL divergence in closed form
# ----------------------------------------------------------------------------


def categorical_entropy(probs: torch.Tensor) -> torch.Tensor:
    r"""Entropy of categorical distributions, in nats.

    .. math::  H(p) = -\sum_k p_k \log p_k, \qquad 0 \log 0 = 0.   \tag{ch01:entropy}

    ``probs``: ``(..., K)``, each row a probability vector. Returns ``(...)``.
    """
    check_probabilities(probs, "probs")
    plogp = torch.where(probs > 0, probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny)), 0.0)
    return 0.0 - plogp.sum(-1)  # 0.0 - x rather than -x: a certain outcome has entropy +0.0, not -0.0


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""KL divergence between categorical distributions, in nats.

    .. math::  \mathrm{KL}(p\,\|\,q) = \sum_k p_k \log \frac{p_k}{q_k}.   \tag{ch01:kl}

    Terms with :math:`p_k = 0` contribute 0; a :math:`q_k = 0` where
    :math:`p_k > 0` makes the divergence infinite. ``p``, ``q``: ``(..., K)``.
    """
    check_probabilities(p, "p")
    check_probabilities(q, "q")
    check_same_shape(p=p, q=q)
    tiny = torch.finfo(p.dtype).tiny
    terms = p * (torch.log(p.clamp_min(tiny)) - torch.log(q.clamp_min(tiny)))
    terms = torch.where(p > 0, terms, 0.0)
    terms = torch.where((p > 0) & (q == 0), math.inf, terms)
    return terms.sum(-1)


def _check_gaussian(mean: torch.Tensor, log_var: torch.Tensor, prefix: str = "") -> None:
    check_tensor(mean, prefix + "mean", min_dim=1)
    check_tensor(log_var, prefix + "log_var", min_dim=1)
    check_same_shape(**{prefix + "mean": mean, prefix + "log_var": log_var})


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    r"""Log density of a diagonal Gaussian, summed over the event dimension.

    .. math::  \log \mathcal N(x\mid\mu,\operatorname{diag}\sigma^2)
               = -\tfrac12 \sum_d \Big[\log 2\pi + \log\sigma_d^2 + \frac{(x_d-\mu_d)^2}{\sigma_d^2}\Big].
               \tag{ch01:gauss-logpdf}

    ``x`` may carry extra leading sample dimensions; it broadcasts against
    ``mean`` and ``log_var``, whose last dimension must match its own.
    """
    _check_gaussian(mean, log_var)
    check_tensor(x, "x", min_dim=1)
    if x.shape[-1] != mean.shape[-1]:
        raise ValueError(f"x has event size {x.shape[-1]} but mean has event size {mean.shape[-1]}")
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var)).sum(-1)


def gaussian_entropy(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    r"""Differential entropy of a diagonal Gaussian, in nats.

    .. math::  H = \tfrac12 \sum_d \big(\log 2\pi e + \log \sigma_d^2\big).   \tag{ch01:gauss-entropy}

    It does not depend on the mean; ``mean`` is taken to fix the shape.
    """
    _check_gaussian(mean, log_var)
    return 0.5 * (LOG_2PI + 1.0 + log_var).sum(-1)


def gaussian_kl(
    mean_q: torch.Tensor,
    log_var_q: torch.Tensor,
    mean_p: torch.Tensor | None = None,
    log_var_p: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""KL divergence between diagonal Gaussians, in nats.

    .. math::  \mathrm{KL}(q\,\|\,p) = \tfrac12 \sum_d \Big[\log\frac{\sigma_{p,d}^2}{\sigma_{q,d}^2}
               + \frac{\sigma_{q,d}^2 + (\mu_{q,d}-\mu_{p,d})^2}{\sigma_{p,d}^2} - 1\Big].
               \tag{ch01:gauss-kl}

    Leave out ``mean_p`` and ``log_var_p`` for the standard normal
    :math:`p = \mathcal N(0, I)`, the prior of most latent-variable models.
    All arguments ``(..., D)`` of one shape; returns ``(...)``.
    """
    _check_gaussian(mean_q, log_var_q, "q: ")
    if (mean_p is None) != (log_var_p is None):
        raise ValueError("give both mean_p and log_var_p, or neither (for a standard normal p)")
    if mean_p is None:
        mean_p, log_var_p = torch.zeros_like(mean_q), torch.zeros_like(log_var_q)
    else:
        _check_gaussian(mean_p, log_var_p, "p: ")
        check_same_shape(mean_q=mean_q, mean_p=mean_p)
    return 0.5 * (
        log_var_p - log_var_q + (torch.exp(log_var_q) + (mean_q - mean_p) ** 2) * torch.exp(-log_var_p) - 1.0
    ).sum(-1)


# ----------------------------------------------------------------------------
# Sampling and Monte Carlo
# ----------------------------------------------------------------------------


def reparameterize(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    n: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Samples :math:`z = \mu + \sigma \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`.

    .. math::  z = \mu + \exp(\tfrac12 \log\sigma^2) \odot \varepsilon.   \tag{ch01:reparam}

    Gradients flow to ``mean`` and ``log_var``. With ``n`` given the result has
    shape ``(n, *mean.shape)``, else ``mean.shape``.
    """
    _check_gaussian(mean, log_var)
    shape = mean.shape if n is None else (_check_n(n), *mean.shape)
    eps = torch.randn(shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


def _check_n(n: int, minimum: int = 1) -> int:
    return check_int(n, "the number of samples n", minimum)


def mc_mean(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monte Carlo mean over the first dimension and its standard error.

    .. math::  \hat I = \frac1n \sum_{s=1}^n f(z_s), \qquad
               \widehat{\mathrm{se}} = \frac{\hat\sigma_f}{\sqrt n}.   \tag{ch01:mc}

    ``values``: ``(n, ...)`` with ``n >= 2``. Returns ``(estimate, stderr)``, each ``(...)``.
    """
    check_tensor(values, "values", min_dim=1, allow_nan=False)
    n = values.shape[0]
    if n < 2:
        raise ValueError("a standard error needs at least 2 samples")
    return values.mean(0), values.std(0, unbiased=True) / math.sqrt(n)


def mc_kl_gaussian(
    mean_q: torch.Tensor,
    log_var_q: torch.Tensor,
    mean_p: torch.Tensor,
    log_var_p: torch.Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monte Carlo estimate of :math:`\mathrm{KL}(q\|p) = \mathbb E_q[\log q(z) - \log p(z)]`.

    Returns ``(estimate, stderr)`` of shape ``mean_q.shape[:-1]``; compare with
    :func:`gaussian_kl`.
    """
    _check_n(n, 2)
    _check_gaussian(mean_p, log_var_p, "p: ")
    z = reparameterize(mean_q, log_var_q, n, generator=generator)  # (n, ..., D)
    log_ratio = gaussian_log_prob(z, mean_q, log_var_q) - gaussian_log_prob(z, mean_p, log_var_p)  # (n, ...)
    return mc_mean(log_ratio)


def mc_kl_categorical(
    p: torch.Tensor, q: torch.Tensor, n: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monte Carlo estimate of :math:`\mathrm{KL}(p\|q) = \mathbb E_{k\sim p}[\log p_k - \log q_k]`.

    ``p``, ``q``: ``(K,)`` or ``(B, K)``. Returns ``(estimate, stderr)``.
    """
    _check_n(n, 2)
    check_probabilities(p, "p")
    check_probabilities(q, "q")
    check_same_shape(p=p, q=q)
    p2, q2 = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])  # (B, K)
    k = torch.multinomial(p2, n, replacement=True, generator=generator).T  # (n, B)
    log_ratio = torch.log(p2.gather(1, k.T)).T - torch.log(q2.gather(1, k.T)).T  # (n, B)
    est, se = mc_mean(log_ratio)
    return est.reshape(p.shape[:-1]), se.reshape(p.shape[:-1])


# ----------------------------------------------------------------------------
# A conjugate model whose evidence is exact
# ----------------------------------------------------------------------------


def _isotropic_log_prob(x: torch.Tensor, mean: torch.Tensor | float, var: float) -> torch.Tensor:
    r""":math:`\log \mathcal N(x \mid \text{mean}, \text{var}\, I)` summed over the last dimension (one scalar
    variance): the toy model's own densities, so that it works without the functions Lab 1 asks students to
    write (the lab's graded kernel imports a copy of this module without them, :mod:`autograder.edition`)."""
    return -0.5 * (((x - mean) ** 2).sum(-1) / var + x.shape[-1] * (LOG_2PI + math.log(var)))


class ConjugateGaussian:
    r"""The linear-Gaussian toy model of Chapter 1.

    .. math::  z \sim \mathcal N(\mu_0, s_0^2 I_D), \qquad x \mid z \sim \mathcal N(z, s^2 I_D).

    Everything is Gaussian, so the evidence and the posterior are exact:

    .. math::  p(x) = \mathcal N(x \mid \mu_0, (s_0^2 + s^2) I), \qquad
               p(z\mid x) = \mathcal N\Big(\mu_0 + \frac{s_0^2}{s_0^2+s^2}(x-\mu_0),\;
               \frac{s_0^2 s^2}{s_0^2+s^2} I\Big).   \tag{ch01:conjugate}

    Any Gaussian :math:`q(z) = \mathcal N(m, \operatorname{diag} v)` gives the
    evidence lower bound (ELBO)

    .. math::  \mathcal L(q) = \mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q\,\|\,p(z))
               = \log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x)) \le \log p(x),   \tag{ch01:elbo}

    with equality exactly when :math:`q` is the posterior. ``x`` has shape
    ``(B, D)``; each row has its own latent :math:`z`.
    """

    def __init__(
        self,
        dim: int = 1,
        prior_mean: float = 0.0,
        prior_var: float = 1.0,
        noise_var: float = 0.5,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = "cpu",
    ):
        check_int(dim, "dim")
        if not (prior_var > 0 and noise_var > 0):
            raise ValueError(f"prior_var and noise_var must be positive, got {prior_var!r} and {noise_var!r}")
        self.dim = dim
        self.device = get_device(device)
        self.dtype = dtype
        self.prior_mean = float(prior_mean)
        self.prior_var = float(prior_var)
        self.noise_var = float(noise_var)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        return check_tensor(x, "x", event_shape=(self.dim,), min_dim=2)

    def _full(self, like: torch.Tensor, value: float) -> torch.Tensor:
        return torch.full_like(like, value)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(z, x)``, each ``(n, D)``, from the joint."""
        _check_n(n)
        shape = (n, self.dim)
        z = self.prior_mean + math.sqrt(self.prior_var) * torch.randn(
            shape, generator=generator, dtype=self.dtype, device=self.device
        )
        x = z + math.sqrt(self.noise_var) * torch.randn(shape, generator=generator, dtype=self.dtype, device=self.device)
        return z, x

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x, z) = \log p(z) + \log p(x\mid z)`; ``z`` may have leading sample dims."""
        self._check_x(x)
        check_tensor(z, "z", event_shape=(self.dim,))
        return _isotropic_log_prob(z, self.prior_mean, self.prior_var) + _isotropic_log_prob(x, z, self.noise_var)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(x)`, shape ``(B,)``."""
        self._check_x(x)
        return _isotropic_log_prob(x, self.prior_mean, self.prior_var + self.noise_var)

    log_prob = log_evidence

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean and log-variance of the exact posterior :math:`p(z\mid x)`, each ``(B, D)``."""
        self._check_x(x)
        gain = self.prior_var / (self.prior_var + self.noise_var)
        mean = self.prior_mean + gain * (x - self.prior_mean)
        log_var = self._full(x, math.log(gain * self.noise_var))
        return mean, log_var

    def elbo(self, x: torch.Tensor, q_mean: torch.Tensor, q_log_var: torch.Tensor) -> torch.Tensor:
        r"""The ELBO :eq:`ch01:elbo` in closed form, shape ``(B,)``.

        .. math::  \mathbb E_q[\log p(x\mid z)] = -\tfrac D2 \log 2\pi s^2
                   - \frac{\lVert x - m\rVert^2 + \sum_d v_d}{2 s^2}.
        """
        self._check_x(x)
        _check_gaussian(q_mean, q_log_var, "q_")
        check_same_shape(x=x, q_mean=q_mean)
        s2 = self.noise_var
        expected_loglik = -0.5 * (
            self.dim * (LOG_2PI + math.log(s2)) + (((x - q_mean) ** 2) + torch.exp(q_log_var)).sum(-1) / s2
        )
        kl = gaussian_kl(q_mean, q_log_var, self._full(q_mean, self.prior_mean), self._full(q_mean, math.log(self.prior_var)))
        return expected_loglik - kl

    def elbo_mc(
        self,
        x: torch.Tensor,
        q_mean: torch.Tensor,
        q_log_var: torch.Tensor,
        n: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Monte Carlo ELBO, :math:`\frac1n\sum_s [\log p(x, z_s) - \log q(z_s)]`, ``z_s ~ q``.

        Returns ``(estimate, stderr)``, each ``(B,)``.
        """
        self._check_x(x)
        _check_gaussian(q_mean, q_log_var, "q_")
        check_same_shape(x=x, q_mean=q_mean)
        _check_n(n, 2)
        z = reparameterize(q_mean, q_log_var, n, generator=generator)  # (n, B, D)
        values = self.log_joint(x, z) - gaussian_log_prob(z, q_mean, q_log_var)  # (n, B)
        return mc_mean(values)


# ----------------------------------------------------------------------------
# Gradient estimators
# ----------------------------------------------------------------------------


def _gradient_setup(mean: torch.Tensor, log_std: torch.Tensor, n: int):
    check_tensor(mean, "mean", min_dim=1)
    check_tensor(log_std, "log_std", min_dim=1)
    check_same_shape(mean=mean, log_std=log_std)
    _check_n(n)
    mean_e = mean.detach().expand(n, *mean.shape).clone().requires_grad_(True)  # (n, D)
    log_std_e = log_std.detach().expand(n, *log_std.shape).clone().requires_grad_(True)  # (n, D)
    return mean_e, log_std_e


def _call_f(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, n: int) -> torch.Tensor:
    values = f(z)
    if not isinstance(values, torch.Tensor) or values.shape != (n,):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"f must map samples of shape {tuple(z.shape)} to values of shape ({n},), got {got}")
    return values


def reparam_gradients(
    f: Callable[[torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    log_std: torch.Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` independent reparameterization (pathwise) gradient estimates.

    For :math:`F(\mu,\log\sigma) = \mathbb E_{z\sim\mathcal N(\mu,\sigma^2)}[f(z)]`,

    .. math::  \nabla_\theta F = \mathbb E_{\varepsilon\sim\mathcal N(0,I)}
               \big[\nabla_\theta f(\mu + \sigma\varepsilon)\big].   \tag{ch01:reparam-grad}

    ``f`` maps samples ``(n, D)`` to values ``(n,)`` and must be differentiable.
    Returns per-sample estimates ``(grad_mean, grad_log_std)``, each ``(n, D)``;
    their mean over the first dimension is the usual estimator.
    """
    mean_e, log_std_e = _gradient_setup(mean, log_std, n)
    eps = torch.randn(mean_e.shape, generator=generator, dtype=mean_e.dtype, device=mean_e.device)
    z = mean_e + torch.exp(log_std_e) * eps  # (n, D)
    values = _call_f(f, z, n)
    g_mean, g_log_std = torch.autograd.grad(values.sum(), [mean_e, log_std_e])
    return g_mean, g_log_std


def score_function_gradients(
    f: Callable[[torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    log_std: torch.Tensor,
    n: int,
    *,
    baseline: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``n`` score-function (REINFORCE) gradient estimates.

    .. math::  \nabla_\theta F = \mathbb E_{z\sim q_\theta}\big[(f(z) - b)\,\nabla_\theta \log q_\theta(z)\big],
               \tag{ch01:score-grad}

    with :math:`\nabla_\mu \log q = (z-\mu)/\sigma^2` and
    :math:`\nabla_{\log\sigma} \log q = (z-\mu)^2/\sigma^2 - 1`. ``f`` need not
    be differentiable. With ``baseline=True``, :math:`b` is the mean of the
    *other* ``n - 1`` values (leave-one-out), which keeps the estimator unbiased
    and lowers its variance. Returns ``(grad_mean, grad_log_std)``, each ``(n, D)``.
    """
    mean_e, log_std_e = _gradient_setup(mean, log_std, n)
    mean_d, std_d = mean_e.detach(), torch.exp(log_std_e.detach())
    eps = torch.randn(mean_d.shape, generator=generator, dtype=mean_d.dtype, device=mean_d.device)
    z = mean_d + std_d * eps  # (n, D), no gradient path through z
    with torch.no_grad():
        values = _call_f(f, z, n)  # (n,)
        if baseline:
            if n < 2:
                raise ValueError("a leave-one-out baseline needs n >= 2")
            values = values - (values.sum() - values) / (n - 1)
    score_mean = (z - mean_d) / std_d**2  # (n, D)
    score_log_std = ((z - mean_d) / std_d) ** 2 - 1.0  # (n, D)
    w = values.unsqueeze(-1)  # (n, 1)
    return w * score_mean, w * score_log_std
