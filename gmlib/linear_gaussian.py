r"""Chapter 2: linear-Gaussian latent-variable models (probabilistic PCA and factor analysis).

Both models explain a :math:`D`-dimensional observation by :math:`M < D`
Gaussian factors pushed through a linear map, plus independent noise
(Roweis & Ghahramani, 1999, call this the static linear-Gaussian model):

.. math::  z \sim \mathcal N(0, I_M), \qquad
           x \mid z \sim \mathcal N(W z + \mu, \Psi), \qquad \Psi = \operatorname{diag}(\psi_1, \dots, \psi_D).
           \tag{ch02:lg-model}

- **Probabilistic PCA** (Tipping & Bishop, 1999): isotropic noise, :math:`\Psi = \sigma^2 I`.
  Maximum likelihood has a closed form (the top eigenvectors of the sample
  covariance) and EM reaches the same solution.
- **Factor analysis** (Rubin & Thayer, 1982; Ghahramani & Hinton, 1996): one
  noise variance per coordinate; no closed form, fitted by EM.

Integrating out :math:`z` gives a Gaussian with a low-rank-plus-diagonal covariance,

.. math::  p(x) = \mathcal N(x \mid \mu, C), \qquad C = W W^\top + \Psi.   \tag{ch02:lg-marginal}

Everything here works with the :math:`M \times M` matrix
:math:`\mathbf M = I_M + W^\top \Psi^{-1} W` instead of the :math:`D\times D`
matrix :math:`C` (the Woodbury identity and the matrix determinant lemma), so
``log_prob`` costs :math:`O(B D M)` and never factorises :math:`C`.

Conventions: ``x`` is ``(..., D)`` (usually ``(B, D)``); results are per
example, in nats; ``W`` is ``(D, M)``; ``mean`` and ``noise_var`` are ``(D,)``.
The parameters are buffers (fitted by closed form or EM, not by gradients), so
``.to(device)`` moves the model. Fitting computes in float64 (on devices that
have it) and stores the result in the dtype of the data. Equation labels
``ch02:...`` refer to Chapter 2 of the book.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_int, check_tensor
from ._progress import progress_bar

__all__ = ["LinearGaussian", "PPCA", "FactorAnalysis"]

LOG_2PI = math.log(2 * math.pi)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for fitting, except on Apple MPS, which has no float64."""
    return x.dtype if x.device.type == "mps" else torch.float64


def _sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean ``(D,)`` and maximum-likelihood covariance ``(D, D)`` (divided by N)."""
    mean = x.mean(0)  # (D,)
    xc = x - mean  # (N, D)
    S = xc.T @ xc / x.shape[0]  # (D, D)
    return mean, 0.5 * (S + S.T)


def _check_fit_args(x: torch.Tensor, n_latent: int, max_iter: int | None = None) -> torch.Tensor:
    check_tensor(x, "x", min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows to estimate a covariance, got {x.shape[0]}")
    D = x.shape[1]
    check_int(n_latent, "n_latent")
    if n_latent >= D:
        raise ValueError(f"n_latent must be smaller than the data dimension D = {D}, got {n_latent}")
    if max_iter is not None:
        check_int(max_iter, "max_iter", 0)
    return x


class LinearGaussian(nn.Module):
    r"""The linear-Gaussian model :eq:`ch02:lg-model` with diagonal noise.

    Parameters
    ----------
    W: loading matrix ``(D, M)``.
    mean: :math:`\mu`, ``(D,)``.
    noise_var: the diagonal of :math:`\Psi`, ``(D,)``, all positive. A Python
        float or a 0-d tensor is broadcast to every coordinate.

    Attributes ``W``, ``mean``, ``noise_var`` are buffers; ``dim`` is :math:`D`
    and ``n_latent`` is :math:`M`.
    """

    def __init__(self, W: torch.Tensor, mean: torch.Tensor, noise_var: torch.Tensor | float):
        super().__init__()
        check_tensor(W, "W", min_dim=2)
        if W.dim() != 2:
            raise ValueError(f"W must have shape (D, M), got {tuple(W.shape)}")
        D, M = W.shape
        check_tensor(mean, "mean")
        if tuple(mean.shape) != (D,):
            raise ValueError(
                f"mean must have shape ({D},) to match W of shape {tuple(W.shape)}, got {tuple(mean.shape)}"
            )
        if not isinstance(noise_var, torch.Tensor):
            noise_var = W.new_full((), float(noise_var))
        check_tensor(noise_var, "noise_var")
        if noise_var.dim() == 0:
            noise_var = noise_var.expand(D)
        if tuple(noise_var.shape) != (D,):
            raise ValueError(f"noise_var must have shape ({D},) or be a scalar, got {tuple(noise_var.shape)}")
        if not bool((noise_var > 0).all()):
            raise ValueError("noise_var must be positive in every coordinate")
        self.register_buffer("W", W.detach().clone())  # (D, M)
        self.register_buffer("mean", mean.detach().to(W).clone())  # (D,)
        self.register_buffer("noise_var", noise_var.detach().to(W).clone().contiguous())  # (D,)

    # -- sizes and the marginal covariance -------------------------------------------

    @property
    def dim(self) -> int:
        return self.W.shape[0]

    @property
    def n_latent(self) -> int:
        return self.W.shape[1]

    @property
    def covariance(self) -> torch.Tensor:
        r"""The marginal covariance :math:`C = W W^\top + \Psi`, ``(D, D)`` :eq:`ch02:lg-marginal`."""
        return self.W @ self.W.T + torch.diag(self.noise_var)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", event_shape=(self.dim,), min_dim=1)
        return x.to(self.W)

    def _latent_precision(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(Psi^{-1} W (D, M), chol(I + W^T Psi^{-1} W) (M, M))``."""
        Wp = self.W / self.noise_var[:, None]  # (D, M)  Psi^{-1} W
        Mmat = torch.eye(self.n_latent, dtype=self.W.dtype, device=self.W.device) + self.W.T @ Wp  # (M, M)
        return Wp, torch.linalg.cholesky(Mmat)

    # -- density -------------------------------------------------------------------------

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Log marginal density :math:`\log \mathcal N(x\mid\mu, W W^\top + \Psi)`, in nats, shape ``(...)``.

        With :math:`r = x - \mu` and :math:`\mathbf M = I + W^\top\Psi^{-1}W = L L^\top`,
        the Woodbury identity and the matrix determinant lemma give

        .. math::  r^\top C^{-1} r = r^\top \Psi^{-1} r - \lVert L^{-1} W^\top \Psi^{-1} r \rVert^2, \qquad
                   \log|C| = \sum_d \log\psi_d + 2\sum_m \log L_{mm},   \tag{ch02:lg-woodbury}

        .. math::  \log p(x) = -\tfrac12\big(D \log 2\pi + \log|C| + r^\top C^{-1} r\big).
        """
        x = self._check_x(x)
        return self._log_prob(x)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        Wp, L = self._latent_precision()
        r = x - self.mean  # (..., D)
        a = r @ Wp  # (..., M)  W^T Psi^{-1} r
        v = torch.linalg.solve_triangular(L, a.reshape(-1, self.n_latent).T, upper=False).T  # (B*, M)
        v = v.reshape(a.shape)
        maha = (r * r / self.noise_var).sum(-1) - (v * v).sum(-1)  # (...)
        logdet = torch.log(self.noise_var).sum() + 2.0 * torch.log(torch.diagonal(L)).sum()
        return -0.5 * (self.dim * LOG_2PI + logdet + maha)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood, the scalar :func:`gmlib.train.train` minimises."""
        return -self.log_prob(x).mean()

    # -- latent posterior and reconstruction ----------------------------------------------

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The exact posterior :math:`p(z\mid x) = \mathcal N(z \mid m(x), \Sigma_z)`.

        .. math::  \Sigma_z = (I_M + W^\top \Psi^{-1} W)^{-1}, \qquad
                   m(x) = \Sigma_z W^\top \Psi^{-1} (x - \mu).   \tag{ch02:lg-posterior}

        For PPCA (:math:`\Psi = \sigma^2 I`) this is Tipping & Bishop's (1999)
        :math:`m(x) = (W^\top W + \sigma^2 I)^{-1} W^\top (x-\mu)`,
        :math:`\Sigma_z = \sigma^2 (W^\top W + \sigma^2 I)^{-1}`. The covariance
        does not depend on :math:`x`. Returns ``mean (..., M)`` and ``cov (M, M)``.
        """
        x = self._check_x(x)
        Wp, L = self._latent_precision()
        a = (x - self.mean) @ Wp  # (..., M)
        flat = a.reshape(-1, self.n_latent).T  # (M, B*)
        mean = torch.cholesky_solve(flat, L).T.reshape(a.shape)  # (..., M)
        eye = torch.eye(self.n_latent, dtype=L.dtype, device=L.device)
        cov = torch.cholesky_solve(eye, L)  # (M, M)
        return mean, 0.5 * (cov + cov.T)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        r"""The denoised reconstruction :math:`\hat x = W\,\mathbb E[z\mid x] + \mu`, ``(..., D)``.

        It is the posterior mean of the noise-free signal :math:`Wz + \mu` given :math:`x`.
        """
        mean, _ = self.posterior(x)
        return mean @ self.W.T + self.mean

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, return_latent: bool = False):
        r"""Ancestral samples: :math:`z\sim\mathcal N(0,I)`, then :math:`x = Wz + \mu + \varepsilon`.

        Returns ``x`` of shape ``(n, D)``, or ``(z, x)`` with ``return_latent=True``.
        The noise is drawn on ``generator``'s device and moved to the model's.
        """
        check_int(n, "n")
        dev = generator.device if generator is not None else self.W.device
        opts = dict(generator=generator, dtype=self.W.dtype, device=dev)
        z = torch.randn((n, self.n_latent), **opts).to(self.W.device)  # (n, M)
        eps = torch.randn((n, self.dim), **opts).to(self.W.device) * self.noise_var.sqrt()  # (n, D)
        x = z @ self.W.T + self.mean + eps  # (n, D)
        return (z, x) if return_latent else x

    # -- fitting helpers shared by PPCA and factor analysis ----------------------------------------

    @staticmethod
    def _em_step(S: torch.Tensor, W: torch.Tensor, psi: torch.Tensor, isotropic: bool, floor: float):
        r"""One EM step for factor analysis (``isotropic=False``) or PPCA (``True``).

        Returns ``(loglik, W_new, psi_new)``, where ``loglik`` is the mean
        log-likelihood per example at the parameters *before* the step (with
        :math:`\mu` the sample mean), a by-product of the E-step:

        .. math::  \frac1N \sum_n \log p(x_n) = -\tfrac12\big(D\log 2\pi + \log|C|
                   + \operatorname{tr}(C^{-1} S)\big), \qquad
                   \operatorname{tr}(C^{-1}S) = \operatorname{tr}(\Psi^{-1}S) - \operatorname{tr}(\beta S \Psi^{-1} W).
                   \tag{ch02:lg-loglik}

        E-step, with :math:`\beta = (I + W^\top\Psi^{-1}W)^{-1} W^\top \Psi^{-1}` (``(M, D)``),
        the averaged expected sufficient statistics are
        :math:`\frac1N\sum_n \mathbb E[z_n] (x_n-\mu)^\top = \beta S` and
        :math:`\frac1N\sum_n \mathbb E[z_n z_n^\top] = I - \beta W + \beta S \beta^\top`.
        M-step (Rubin & Thayer, 1982; Ghahramani & Hinton, 1996):

        .. math::  W^{\text{new}} = S\beta^\top\big(I - \beta W + \beta S \beta^\top\big)^{-1}, \qquad
                   \Psi^{\text{new}} = \operatorname{diag}\big(S - W^{\text{new}} \beta S\big).   \tag{ch02:fa-em}

        PPCA averages the diagonal instead,
        :math:`\sigma^2_{\text{new}} = \frac1D \operatorname{tr}(S - W^{\text{new}}\beta S)`,
        which is Tipping & Bishop's (1999) EM update for PPCA written with :math:`\beta`.
        """
        D, M = W.shape
        eye = torch.eye(M, dtype=W.dtype, device=W.device)
        Wp = W / psi[:, None]  # (D, M)  Psi^{-1} W
        L = torch.linalg.cholesky(eye + W.T @ Wp)  # (M, M)
        beta = torch.cholesky_solve(Wp.T, L)  # (M, D)
        SB = S @ beta.T  # (D, M)  S beta^T = (beta S)^T
        trace = (torch.diagonal(S) / psi).sum() - (SB * Wp).sum()  # tr(C^{-1} S)
        logdet = torch.log(psi).sum() + 2.0 * torch.log(torch.diagonal(L)).sum()  # log|C|
        loglik = float(-0.5 * (D * LOG_2PI + logdet + trace))
        Ezz = eye - beta @ W + beta @ SB  # (M, M)
        Ezz = 0.5 * (Ezz + Ezz.T)
        W_new = torch.linalg.solve(Ezz, SB.T).T  # (D, M)
        diag = torch.diagonal(S) - (W_new * SB).sum(1)  # (D,)  diag(S - W_new beta S)
        if isotropic:
            diag = diag.mean().expand_as(psi)
        return loglik, W_new, diag.clamp_min(floor).contiguous()

    @classmethod
    def _fit_em(cls, x, n_latent, max_iter, tol, seed, progress, desc, isotropic):
        _check_fit_args(x, n_latent, max_iter)
        check_int(seed, "seed", 0)
        if not tol >= 0:
            raise ValueError(f"tol must be non-negative, got {tol!r}")
        wd = _work_dtype(x)
        mean, S = _sample_moments(x.to(wd))
        D = x.shape[1]
        scale = torch.diagonal(S)  # (D,)
        floor = float(1e-12 * scale.max().clamp_min(torch.finfo(wd).tiny))
        # seeded initial state: random loadings of the data's scale, noise half the variance
        g = torch.Generator(device="cpu").manual_seed(seed)
        W = torch.randn((D, n_latent), generator=g, dtype=wd).to(x.device)
        W = W * (scale.mean() / n_latent).sqrt()
        psi = (0.5 * scale.mean()).expand(D).clone() if isotropic else 0.5 * scale.clamp_min(floor)
        # each call evaluates the log-likelihood at its input and proposes the next parameters
        loglik, W_next, psi_next = cls._em_step(S, W, psi, isotropic, floor)
        history = [loglik]
        bar = progress_bar(max_iter, desc, progress)
        for _ in bar:
            W, psi = W_next, psi_next
            loglik, W_next, psi_next = cls._em_step(S, W, psi, isotropic, floor)
            history.append(loglik)  # at (W, psi), after len(history) - 1 steps
            bar.set_postfix(loglik=f"{loglik:.6f}", refresh=False)
            if history[-1] - history[-2] < tol:
                break
        bar.close()
        return W.to(x.dtype), mean.to(x.dtype), psi.to(x.dtype), history


class PPCA(LinearGaussian):
    r"""Probabilistic PCA (Tipping & Bishop, 1999): :eq:`ch02:lg-model` with :math:`\Psi = \sigma^2 I`.

    ``PPCA(W, mean, sigma2)`` takes a scalar noise variance (or a ``(D,)``
    tensor whose entries are all equal). Fit it with :meth:`fit_ml` (closed form)
    or :meth:`fit_em`.
    """

    def __init__(self, W: torch.Tensor, mean: torch.Tensor, noise_var: torch.Tensor | float):
        super().__init__(W, mean, noise_var)
        if not bool((self.noise_var == self.noise_var[0]).all()):
            raise ValueError("PPCA needs isotropic noise: every entry of noise_var must be equal")

    @property
    def sigma2(self) -> float:
        r"""The isotropic noise variance :math:`\sigma^2`."""
        return float(self.noise_var[0])

    @classmethod
    def fit_ml(cls, x: torch.Tensor, n_latent: int) -> "PPCA":
        r"""Closed-form maximum likelihood (Tipping & Bishop, 1999, eqs. 7-8).

        With :math:`S = \frac1N\sum_n (x_n-\bar x)(x_n-\bar x)^\top` and its
        eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_D` (eigenvectors :math:`U`),

        .. math::  \mu = \bar x, \qquad
                   \sigma^2_{\text{ML}} = \frac1{D-M}\sum_{j=M+1}^D \lambda_j, \qquad
                   W_{\text{ML}} = U_M\,(\Lambda_M - \sigma^2_{\text{ML}} I)^{1/2}\,R.   \tag{ch02:ppca-ml}

        :math:`R` is any rotation; we take :math:`R = I` and make the largest
        entry of each column of :math:`U_M` positive, so the result is
        deterministic. The maximised log-likelihood is

        .. math::  \frac1N\log p(X) = -\tfrac12\Big(D\log 2\pi + \sum_{j\le M}\log\lambda_j
                   + (D-M)\log\sigma^2_{\text{ML}} + D\Big).   \tag{ch02:ppca-ml-loglik}
        """
        _check_fit_args(x, n_latent)
        wd = _work_dtype(x)
        mean, S = _sample_moments(x.to(wd))
        evals, evecs = torch.linalg.eigh(S)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)  # descending
        sigma2 = evals[n_latent:].mean().clamp_min(torch.finfo(wd).tiny)
        U = evecs[:, :n_latent]  # (D, M)
        sign = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))  # (1, M)
        U = U * torch.where(sign == 0, torch.ones_like(sign), sign)
        W = U * (evals[:n_latent] - sigma2).clamp_min(0.0).sqrt()  # (D, M)
        return cls(W.to(x.dtype), mean.to(x.dtype), sigma2.to(x.dtype))

    @classmethod
    def fit_em(
        cls,
        x: torch.Tensor,
        n_latent: int,
        max_iter: int = 500,
        tol: float = 1e-8,
        seed: int = 0,
        progress: bool = False,
        desc: str | None = None,
    ) -> tuple["PPCA", list[float]]:
        r"""Maximum likelihood by EM (Tipping & Bishop, 1999; Roweis & Ghahramani, 1999).

        Each step is :eq:`ch02:fa-em` with the noise variances averaged, so it
        costs :math:`O(D^2 M)` once :math:`S` is formed and never
        eigendecomposes :math:`S`. Starts from seeded random loadings.

        Returns ``(model, history)``: ``history[0]`` is the mean log-likelihood
        per example (nats) at the initial parameters and ``history[i]`` after
        ``i`` steps; it never decreases. Stops when one step raises it by less
        than ``tol`` or after ``max_iter`` steps. ``progress=True`` shows a text
        bar on stdout.
        """
        W, mean, psi, hist = cls._fit_em(x, n_latent, max_iter, tol, seed, progress, desc, isotropic=True)
        return cls(W, mean, psi[0]), hist


class FactorAnalysis(LinearGaussian):
    r"""Factor analysis: :eq:`ch02:lg-model` with a separate noise variance per coordinate.

    Unlike PPCA, it is invariant to rescaling individual coordinates, and its
    noise model can absorb coordinate-specific variance. Fit with :meth:`fit_em`.
    """

    @classmethod
    def fit_em(
        cls,
        x: torch.Tensor,
        n_latent: int,
        max_iter: int = 500,
        tol: float = 1e-8,
        seed: int = 0,
        progress: bool = False,
        desc: str | None = None,
    ) -> tuple["FactorAnalysis", list[float]]:
        r"""Maximum likelihood by EM :eq:`ch02:fa-em` (Rubin & Thayer, 1982; Ghahramani & Hinton, 1996).

        :math:`\mu` is the sample mean (its ML value in closed form); ``W`` starts
        from seeded random loadings and :math:`\Psi` from half the coordinate
        variances. Noise variances are floored at :math:`10^{-12}` times the
        largest coordinate variance, which only matters for Heywood cases (a
        coordinate explained exactly by the factors).

        Returns ``(model, history)`` as :meth:`PPCA.fit_em` does: mean
        log-likelihood per example in nats, non-decreasing.
        """
        W, mean, psi, hist = cls._fit_em(x, n_latent, max_iter, tol, seed, progress, desc, isotropic=False)
        return cls(W, mean, psi), hist
