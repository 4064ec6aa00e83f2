r"""Chapter 2: mean-field variational inference for a Bayesian Gaussian mixture.

The model (Attias, 2000; Bishop, 2006, section 10.2) puts conjugate priors on
every parameter of a :math:`K`-component Gaussian mixture:

.. math::  \pi \sim \operatorname{Dir}(\alpha_0, \dots, \alpha_0), \qquad
           \Lambda_k \sim \mathcal W(W_0, \nu_0), \qquad
           \mu_k \mid \Lambda_k \sim \mathcal N\big(m_0, (\beta_0\Lambda_k)^{-1}\big),

.. math::  z_n \mid \pi \sim \operatorname{Cat}(\pi), \qquad
           x_n \mid z_n = k \sim \mathcal N(\mu_k, \Lambda_k^{-1}).   \tag{ch02:bgmm}

The posterior over :math:`(Z, \pi, \mu, \Lambda)` is intractable. Mean-field
variational inference picks the factorised family
:math:`q(Z)\,q(\pi)\,q(\mu, \Lambda)` and maximises the evidence lower bound

.. math::  \mathcal L(q) = \mathbb E_q\big[\log p(X, Z, \pi, \mu, \Lambda)\big]
           - \mathbb E_q\big[\log q(Z, \pi, \mu, \Lambda)\big] \le \log p(X)   \tag{ch02:vi-elbo}

by coordinate ascent (CAVI; Blei et al., 2017): each factor in turn is set to
its optimum given the others. Conjugacy makes every optimum closed form:
:math:`q(z_n) = \operatorname{Cat}(r_n)`, :math:`q(\pi) = \operatorname{Dir}(\alpha)`,
:math:`q(\mu_k, \Lambda_k) = \mathcal N(\mu_k \mid m_k, (\beta_k\Lambda_k)^{-1})\,\mathcal W(\Lambda_k\mid W_k, \nu_k)`.
No step can lower :math:`\mathcal L`, which the tests check on every sweep.

Everything is computed in float64 (except on Apple MPS, which lacks it).
:func:`exact_log_evidence` sums over every assignment of a tiny data set, so the
bound :eq:`ch02:vi-elbo` can be checked against the exact :math:`\log p(X)`.
Equation labels ``ch02:...`` refer to Chapter 2; "B10.xx" to Bishop (2006).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._checks import check_int, check_tensor
from ._progress import progress_bar
from .mixture import kmeans_plus_plus_indices

__all__ = ["NormalWishartPrior", "BayesianGaussianMixture", "exact_log_evidence"]

LOG_2PI = math.log(2 * math.pi)


def _work(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the working precision: float64 except on Apple MPS."""
    return x if x.device.type == "mps" else x.to(torch.float64)


def _check_data(x, name: str = "x", dim: int | None = None) -> torch.Tensor:
    check_tensor(x, name, min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the model's dimension), got shape {tuple(x.shape)}")
    return x


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _spd_inverse(a: torch.Tensor) -> torch.Tensor:
    """Inverse of symmetric positive-definite matrices ``(..., D, D)`` via Cholesky."""
    return _sym(torch.cholesky_inverse(torch.linalg.cholesky(a)))


def _logdet(a: torch.Tensor) -> torch.Tensor:
    """log-determinant of SPD matrices ``(..., D, D)`` via Cholesky."""
    return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(a), dim1=-2, dim2=-1)).sum(-1)


def _log_wishart_norm(W: torch.Tensor, nu: torch.Tensor, logdet_W: torch.Tensor | None = None) -> torch.Tensor:
    r"""Log normaliser of the Wishart distribution (B, eq. B.79):

    .. math::  \log B(W, \nu) = -\tfrac\nu2 \log|W| - \tfrac{\nu D}2 \log 2 - \log\Gamma_D(\tfrac\nu2).
    """
    D = W.shape[-1]
    if logdet_W is None:
        logdet_W = _logdet(W)
    return -0.5 * nu * logdet_W - 0.5 * nu * D * math.log(2.0) - torch.mvlgamma(0.5 * nu, D)


def _log_dirichlet_norm(alpha: torch.Tensor) -> torch.Tensor:
    r""":math:`\log C(\alpha) = \log\Gamma(\sum_k\alpha_k) - \sum_k \log\Gamma(\alpha_k)` (B, eq. B.23)."""
    return torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)


# ----------------------------------------------------------------------------
# Prior
# ----------------------------------------------------------------------------


@dataclass
class NormalWishartPrior:
    r"""Hyperparameters of :eq:`ch02:bgmm` in Bishop's (2006, section 10.2) notation.

    Fields left as ``None`` are set from the data by :meth:`resolve` (the same
    defaults as scikit-learn, except that ``W0`` is scaled by ``1/nu0`` so that
    the prior mean of each precision, :math:`\nu_0 W_0`, is the inverse data covariance).
    """

    alpha0: float = 1e-2  # Dirichlet concentration of every weight; small values switch components off
    beta0: float = 1.0  # prior precision scale of the means, in units of Lambda_k
    nu0: float | None = None  # Wishart degrees of freedom, > D - 1 (None -> D)
    m0: torch.Tensor | None = None  # prior mean of the means, (D,) (None -> data mean)
    W0: torch.Tensor | None = None  # Wishart scale matrix, (D, D) SPD (None -> inverse data covariance / nu0)

    def resolve(self, x: torch.Tensor) -> "NormalWishartPrior":
        """A copy with every field set and checked, tensors in float64 on ``x``'s device.

        The data covariance is the unbiased sample covariance (divided by ``N - 1``),
        as in scikit-learn; it needs ``N >= 2`` unless ``W0`` is given.
        """
        _check_data(x)
        xw = _work(x)
        N, D = xw.shape
        if not (isinstance(self.alpha0, (int, float)) and self.alpha0 > 0):
            raise ValueError(f"prior.alpha0 must be a positive number, got {self.alpha0!r}")
        if not (isinstance(self.beta0, (int, float)) and self.beta0 > 0):
            raise ValueError(f"prior.beta0 must be a positive number, got {self.beta0!r}")
        nu0 = float(D) if self.nu0 is None else self.nu0
        if not (isinstance(nu0, (int, float)) and nu0 > D - 1):
            raise ValueError(f"prior.nu0 must be a number greater than D - 1 = {D - 1}, got {nu0!r}")
        if self.m0 is None:
            m0 = xw.mean(0)
        else:
            check_tensor(self.m0, "prior.m0")
            if tuple(self.m0.shape) != (D,):
                raise ValueError(f"prior.m0 must have shape ({D},), got {tuple(self.m0.shape)}")
            m0 = self.m0.to(xw)
        if self.W0 is None:
            if N < 2:
                raise ValueError("the default prior.W0 needs at least 2 data points (a sample covariance)")
            xc = xw - xw.mean(0)
            cov = xc.T @ xc / (N - 1)  # (D, D)
            W0 = _spd_inverse(cov) / nu0
        else:
            check_tensor(self.W0, "prior.W0")
            if tuple(self.W0.shape) != (D, D):
                raise ValueError(f"prior.W0 must have shape ({D}, {D}), got {tuple(self.W0.shape)}")
            W0 = self.W0.to(xw)
            if not torch.allclose(W0, W0.T, rtol=1e-10, atol=1e-12 * float(W0.abs().max())):
                raise ValueError("prior.W0 must be symmetric")
            W0 = _sym(W0)
        if torch.linalg.cholesky_ex(W0).info.item() != 0:
            raise ValueError("prior.W0 must be positive definite (for the default, the data covariance must be)")
        return replace(self, alpha0=float(self.alpha0), beta0=float(self.beta0), nu0=float(nu0), m0=m0, W0=W0)


# ----------------------------------------------------------------------------
# k-means++ seeding
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# The variational Bayesian Gaussian mixture
# ----------------------------------------------------------------------------


class BayesianGaussianMixture(nn.Module):
    r"""Variational posterior of the Bayesian Gaussian mixture :eq:`ch02:bgmm`, fitted by CAVI.

    Parameters
    ----------
    n_components: :math:`K`; with a small ``alpha0`` surplus components end up
        with expected weights near zero.
    prior: :class:`NormalWishartPrior` (default: all defaults, set from the data in :meth:`fit`).
    seed: seeds the k-means++ initialisation.

    After :meth:`fit`, the buffers hold the variational factors (Bishop's notation):
    ``alpha (K,)`` of :math:`q(\pi)`; ``beta (K,)``, ``m (K, D)``, ``W (K, D, D)``,
    ``nu (K,)`` of :math:`q(\mu_k, \Lambda_k)`; and the resolved prior ``m0 (D,)``,
    ``W0 (D, D)`` (floats ``alpha0``, ``beta0``, ``nu0``). :math:`q(Z)` is not
    stored: for any data set it is taken at its optimum given the other factors,
    :meth:`responsibilities`.
    """

    def __init__(self, n_components: int, prior: NormalWishartPrior | None = None, seed: int = 0):
        super().__init__()
        self.n_components = check_int(n_components, "n_components")
        if prior is not None and not isinstance(prior, NormalWishartPrior):
            raise ValueError(f"prior must be a NormalWishartPrior or None, got {type(prior).__name__}")
        self.prior = prior if prior is not None else NormalWishartPrior()
        self.seed = check_int(seed, "seed", 0)
        for name in ("alpha", "beta", "m", "W", "nu", "m0", "W0"):
            self.register_buffer(name, None)
        self.alpha0 = self.beta0 = self.nu0 = None

    # -- state ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        self._check_fitted()
        return self.m.shape[1]

    def _check_fitted(self) -> None:
        if self.alpha is None:
            raise RuntimeError("the model has no variational factors yet: call fit(x) first")

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return _check_data(x, dim=self.m.shape[1]).to(self.m)

    def _set_prior(self, x: torch.Tensor) -> None:
        p = self.prior.resolve(x)
        self.alpha0, self.beta0, self.nu0 = p.alpha0, p.beta0, p.nu0
        self.m0, self.W0 = p.m0, p.W0

    @property
    def expected_weights(self) -> torch.Tensor:
        r""":math:`\mathbb E_q[\pi_k] = \alpha_k / \sum_j \alpha_j`, ``(K,)``."""
        self._check_fitted()
        return self.alpha / self.alpha.sum()

    @property
    def means(self) -> torch.Tensor:
        r"""Posterior means of the component means, :math:`\mathbb E_q[\mu_k] = m_k`, ``(K, D)``."""
        self._check_fitted()
        return self.m

    @property
    def covariances(self) -> torch.Tensor:
        r""":math:`\mathbb E_q[\Lambda_k]^{-1} = (\nu_k W_k)^{-1}`, ``(K, D, D)``."""
        self._check_fitted()
        return _spd_inverse(self.nu[:, None, None] * self.W)

    # -- the two kinds of CAVI update --------------------------------------------------------

    def initial_responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot ``(N, K)``: every point assigned to its nearest k-means++ seed (seeded by ``seed``)."""
        x = _check_data(x)
        xw = _work(x)
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        seeds = xw[kmeans_plus_plus_indices(xw, self.n_components, g)]  # (K, D)
        nearest = torch.cdist(xw, seeds).argmin(1)  # (N,)
        return torch.nn.functional.one_hot(nearest, self.n_components).to(xw.dtype)

    def _expectations(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r""":math:`\log\tilde\pi_k`, :math:`\log\tilde\Lambda_k`, :math:`\log|W_k|` (each ``(K,)``)
        and the Cholesky factors :math:`W_k = C_k C_k^\top` ``(K, D, D)``.

        .. math::  \log\tilde\pi_k = \psi(\alpha_k) - \psi\big(\textstyle\sum_j\alpha_j\big), \qquad
                   \log\tilde\Lambda_k = \sum_{i=1}^D \psi\Big(\frac{\nu_k+1-i}{2}\Big) + D\log 2 + \log|W_k|.
                   \tag{ch02:vi-expect}

        (B10.66 and B10.65.)
        """
        D = self.m.shape[1]
        log_pi = torch.digamma(self.alpha) - torch.digamma(self.alpha.sum())
        C = torch.linalg.cholesky(self.W)  # (K, D, D)
        logdet_W = 2.0 * torch.log(torch.diagonal(C, dim1=-2, dim2=-1)).sum(-1)
        i = torch.arange(1, D + 1, dtype=self.nu.dtype, device=self.nu.device)
        log_lam = torch.digamma(0.5 * (self.nu[:, None] + 1 - i)).sum(1) + D * math.log(2.0) + logdet_W
        return log_pi, log_lam, logdet_W, C

    def _expected_log_gauss(self, x: torch.Tensor, log_lam: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb E_q[\log\mathcal N(x_n\mid\mu_k,\Lambda_k^{-1})]`, ``(N, K)``, using (B10.64)

        .. math::  \mathbb E_q[(x_n-\mu_k)^\top\Lambda_k(x_n-\mu_k)] = \frac D{\beta_k}
                   + \nu_k (x_n - m_k)^\top W_k (x_n - m_k).
        """
        D = x.shape[1]
        diff = x[:, None, :] - self.m[None]  # (N, K, D)
        y = torch.einsum("nkd,kde->nke", diff, C)  # C^T (x - m)
        quad = D / self.beta + self.nu * (y * y).sum(-1)  # (N, K)
        return 0.5 * (log_lam - D * LOG_2PI - quad)

    def _log_rho(self, x: torch.Tensor) -> torch.Tensor:
        log_pi, log_lam, _, C = self._expectations()
        return log_pi + self._expected_log_gauss(x, log_lam, C)  # (N, K)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        r"""The optimal :math:`q(z_n) = \operatorname{Cat}(r_n)` given the other factors, ``(N, K)``:

        .. math::  \log\rho_{nk} = \log\tilde\pi_k + \tfrac12\log\tilde\Lambda_k - \tfrac D2\log 2\pi
                   - \tfrac12\mathbb E_q[(x_n-\mu_k)^\top\Lambda_k(x_n-\mu_k)], \qquad
                   r_{nk} = \frac{\rho_{nk}}{\sum_j\rho_{nj}}.   \tag{ch02:vi-resp}

        (B10.46, B10.49.) Rows sum to 1; returned in ``x``'s dtype.
        """
        xw = self._check_x(x)
        return torch.softmax(self._log_rho(xw), dim=1).to(x.dtype)

    def update_parameters(self, x: torch.Tensor, resp: torch.Tensor) -> None:
        r"""The optimal :math:`q(\pi)\,q(\mu,\Lambda)` given :math:`q(Z)` (responsibilities ``(N, K)``), in place.

        With :math:`N_k = \sum_n r_{nk}`, :math:`\bar x_k = \frac1{N_k}\sum_n r_{nk}x_n` and
        :math:`S_k = \frac1{N_k}\sum_n r_{nk}(x_n-\bar x_k)(x_n-\bar x_k)^\top` (B10.51-10.53):

        .. math::  \alpha_k = \alpha_0 + N_k, \quad \beta_k = \beta_0 + N_k, \quad
                   m_k = \frac{\beta_0 m_0 + N_k\bar x_k}{\beta_k}, \quad \nu_k = \nu_0 + N_k,

        .. math::  W_k^{-1} = W_0^{-1} + N_k S_k
                   + \frac{\beta_0 N_k}{\beta_0 + N_k}(\bar x_k - m_0)(\bar x_k - m_0)^\top.
                   \tag{ch02:vi-params}

        (B10.58, B10.60-10.63.) The prior must already be set (by :meth:`fit`).
        """
        if self.m0 is None:
            raise RuntimeError("the prior is not set: call fit(x) first")
        xw = _check_data(x, dim=self.m0.shape[0]).to(self.m0)
        r = self._check_resp(resp, xw.shape[0])
        Nk = r.sum(0)  # (K,)
        xbar = (r.T @ xw) / Nk.clamp_min(torch.finfo(xw.dtype).tiny)[:, None]  # (K, D)
        diff = xw[:, None, :] - xbar[None]  # (N, K, D)
        NS = torch.einsum("nk,nkd,nke->kde", r, diff, diff)  # (K, D, D)  N_k S_k
        dm = xbar - self.m0  # (K, D)
        W0_inv = _spd_inverse(self.W0)
        W_inv = W0_inv + NS + (self.beta0 * Nk / (self.beta0 + Nk))[:, None, None] * dm[:, :, None] * dm[:, None, :]
        self.alpha = self.alpha0 + Nk
        self.beta = self.beta0 + Nk
        self.m = (self.beta0 * self.m0 + Nk[:, None] * xbar) / self.beta[:, None]
        self.nu = self.nu0 + Nk
        self.W = _spd_inverse(_sym(W_inv))

    def _check_resp(self, resp: torch.Tensor, n: int) -> torch.Tensor:
        check_tensor(resp, "resp", min_dim=2)
        if tuple(resp.shape) != (n, self.n_components):
            raise ValueError(f"resp must have shape ({n}, {self.n_components}), got {tuple(resp.shape)}")
        r = resp.to(self.m0)
        if bool((r < 0).any()) or not torch.allclose(r.sum(1), torch.ones_like(r[:, 0]), atol=1e-6):
            raise ValueError("resp must be non-negative with rows summing to 1")
        return r

    # -- the evidence lower bound --------------------------------------------------------------

    def elbo(self, x: torch.Tensor, resp: torch.Tensor | None = None) -> float:
        r"""The evidence lower bound :eq:`ch02:vi-elbo` of the whole data set, in nats (a total, not a mean).

        .. math::  \mathcal L = \mathbb E[\log p(X\mid Z,\mu,\Lambda)] + \mathbb E[\log p(Z\mid\pi)]
                   + \mathbb E[\log p(\pi)] + \mathbb E[\log p(\mu,\Lambda)]
                   - \mathbb E[\log q(Z)] - \mathbb E[\log q(\pi)] - \mathbb E[\log q(\mu,\Lambda)],
                   \tag{ch02:vi-elbo-terms}

        each term in closed form (B10.70-10.77; the first is written per point,
        :math:`\sum_{n,k} r_{nk}\,\mathbb E_q[\log\mathcal N(x_n\mid\mu_k,\Lambda_k^{-1})]`,
        which equals B10.71). ``resp`` ``(N, K)`` is :math:`q(Z)`; by default
        the optimal one, :meth:`responsibilities`. It is a lower bound on
        :math:`\log p(X)` for *any* ``resp`` and any current factors.
        """
        xw = self._check_x(x)
        r = None if resp is None else self._check_resp(resp, xw.shape[0])
        return float(self._elbo(xw, r)[0])

    def _elbo(self, xw: torch.Tensor, r: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`elbo` on checked float64 data; also returns the q(Z) used, ``(N, K)``."""
        N, D = xw.shape
        K = self.n_components
        log_pi, log_lam, logdet_W, C = self._expectations()
        e_loggauss = self._expected_log_gauss(xw, log_lam, C)  # (N, K)
        if r is None:
            log_r = torch.log_softmax(log_pi + e_loggauss, dim=1)
            r = log_r.exp()
        else:
            log_r = torch.log(r.clamp_min(torch.finfo(r.dtype).tiny))
        rlogr = torch.where(r > 0, r * log_r, torch.zeros_like(r))
        # E[log p(X|Z,mu,Lambda)] + E[log p(Z|pi)] - E[log q(Z)]     (B10.71, B10.72, B10.75)
        data = (r * (e_loggauss + log_pi)).sum() - rlogr.sum()
        # E[log p(pi)] - E[log q(pi)]                                 (B10.73, B10.76)
        alpha0 = self.alpha.new_full((K,), self.alpha0)
        weights = _log_dirichlet_norm(alpha0) - _log_dirichlet_norm(self.alpha) + ((alpha0 - self.alpha) * log_pi).sum()
        # E[log p(mu, Lambda)]                                        (B10.74)
        dm = self.m - self.m0  # (K, D)
        quad0 = torch.einsum("kd,kde,ke->k", dm, self.W, dm)
        W0_inv = _spd_inverse(self.W0)
        trace0 = torch.einsum("de,ked->k", W0_inv, self.W)
        logB0 = _log_wishart_norm(self.W0, self.m0.new_tensor(self.nu0))
        e_log_prior = (
            0.5 * (
                D * math.log(self.beta0 / (2 * math.pi)) + log_lam - D * self.beta0 / self.beta
                - self.beta0 * self.nu * quad0
            ).sum()
            + K * logB0
            + 0.5 * (self.nu0 - D - 1) * log_lam.sum()
            - 0.5 * (self.nu * trace0).sum()
        )
        # E[log q(mu, Lambda)]                                        (B10.77, with the Wishart entropy B.82)
        entropy_lam = (
            -_log_wishart_norm(self.W, self.nu, logdet_W) - 0.5 * (self.nu - D - 1) * log_lam + 0.5 * self.nu * D
        )  # H[q(Lambda_k)], (K,)
        e_log_q = (0.5 * log_lam + 0.5 * D * torch.log(self.beta / (2 * math.pi)) - 0.5 * D - entropy_lam).sum()
        return data + weights + e_log_prior - e_log_q, r

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        x: torch.Tensor,
        max_iter: int = 200,
        tol: float = 1e-8,
        progress: bool = False,
        desc: str | None = None,
        init_resp: torch.Tensor | None = None,
    ) -> list[float]:
        r"""Coordinate ascent variational inference (CAVI).

        Sets the prior from ``x`` (fields left ``None``), sets :math:`q(\pi)q(\mu,\Lambda)`
        from the initial responsibilities (``init_resp`` ``(N, K)``, default
        :meth:`initial_responsibilities`), then repeats sweeps of

        1. :math:`q(Z)` :eq:`ch02:vi-resp` given :math:`q(\pi)q(\mu,\Lambda)`;
        2. :math:`q(\pi)q(\mu,\Lambda)` :eq:`ch02:vi-params` given :math:`q(Z)`.

        Returns the ELBO (total over the data set, nats) after each sweep, with
        the initial factors first: ``history[0]`` at the start, ``history[i]``
        after ``i`` sweeps. It never decreases. Stops when a sweep raises it by
        less than ``tol * max(1, |ELBO|)`` (relative), or after ``max_iter`` sweeps.
        """
        x = _check_data(x)
        check_int(max_iter, "max_iter", 0)
        if not tol >= 0:
            raise ValueError(f"tol must be non-negative, got {tol!r}")
        xw = _work(x)
        self._set_prior(xw)
        r = self.initial_responsibilities(xw) if init_resp is None else init_resp
        self.update_parameters(xw, r)
        value, r = self._elbo(xw, None)  # the ELBO and the optimal q(Z) for the current factors
        history = [float(value)]
        bar = progress_bar(max_iter, desc, progress)
        for _ in bar:
            # r is already the q(Z) update given the current factors (step 1)
            self.update_parameters(xw, r)  # step 2: q(pi) q(mu, Lambda)
            value, r = self._elbo(xw, None)  # evaluates L and computes the next q(Z) (step 1)
            history.append(float(value))
            bar.set_postfix(elbo=f"{history[-1]:.4f}", refresh=False)
            if history[-1] - history[-2] < tol * max(1.0, abs(history[-1])):
                break
        bar.close()
        return history

    # -- the posterior predictive ------------------------------------------------------------------

    def predictive(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Parameters of the posterior predictive, a mixture of Student-t (B10.81-10.82):

        .. math::  p(\hat x\mid X) \approx \sum_k \frac{\alpha_k}{\hat\alpha}\,
                   \mathrm{St}\big(\hat x \mid m_k, \Sigma_k, \nu_k + 1 - D\big), \qquad
                   \Sigma_k = \frac{1+\beta_k}{(\nu_k+1-D)\beta_k}\,W_k^{-1}.   \tag{ch02:vi-predictive}

        Returns ``(weights (K,), loc (K, D), scale (K, D, D), df (K,))``; ``scale`` is
        the Student-t shape matrix :math:`\Sigma_k` (the inverse of Bishop's :math:`L_k`).
        """
        self._check_fitted()
        D = self.m.shape[1]
        df = self.nu + 1 - D
        scale = ((1 + self.beta) / (df * self.beta))[:, None, None] * _spd_inverse(self.W)
        return self.expected_weights, self.m, scale, df

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Log posterior predictive density :eq:`ch02:vi-predictive` of each row, ``(N,)``, nats.

        .. math::  \log\mathrm{St}(x\mid m,\Sigma,\nu) = \log\frac{\Gamma(\frac{\nu+D}2)}{\Gamma(\frac\nu2)}
                   - \tfrac D2\log(\nu\pi) - \tfrac12\log|\Sigma|
                   - \tfrac{\nu+D}2\log\Big(1 + \tfrac1\nu (x-m)^\top\Sigma^{-1}(x-m)\Big).
        """
        xw = self._check_x(x)
        D = xw.shape[1]
        w, loc, scale, df = self.predictive()
        C = torch.linalg.cholesky(scale)  # (K, D, D)
        diff = (xw[:, None, :] - loc[None]).unsqueeze(-1)  # (N, K, D, 1)
        y = torch.linalg.solve_triangular(C.unsqueeze(0), diff, upper=False).squeeze(-1)  # (N, K, D)
        maha = (y * y).sum(-1)  # (N, K)
        logdet = 2.0 * torch.log(torch.diagonal(C, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_t = (
            torch.lgamma(0.5 * (df + D)) - torch.lgamma(0.5 * df) - 0.5 * D * torch.log(df * math.pi)
            - 0.5 * logdet - 0.5 * (df + D) * torch.log1p(maha / df)
        )  # (N, K)
        return torch.logsumexp(torch.log(w) + log_t, dim=1).to(x.dtype)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log predictive density (the density-model contract)."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` draws ``(n, D)`` from the posterior predictive :eq:`ch02:vi-predictive`.

        A component :math:`k \sim \operatorname{Cat}(\alpha/\hat\alpha)`, then
        :math:`x = m_k + \sqrt{\nu/g}\,C_k\varepsilon` with :math:`\Sigma_k = C_kC_k^\top`,
        :math:`\varepsilon\sim\mathcal N(0,I)` and :math:`g\sim\chi^2_\nu` (a Gaussian scale mixture).
        ``generator`` is a CPU ``torch.Generator``; the draws are made on the CPU
        and moved to the model's device.
        """
        check_int(n, "n")
        w, loc, scale, df = self.predictive()
        dev = loc.device
        k = torch.multinomial(w.to("cpu"), n, replacement=True, generator=generator).to(dev)  # (n,)
        eps = torch.randn((n, loc.shape[1]), generator=generator, dtype=torch.float64).to(loc)  # (n, D)
        g = 2.0 * _standard_gamma(0.5 * df[k].to("cpu", torch.float64), generator).to(loc)  # (n,) chi2
        C = torch.linalg.cholesky(scale)[k]  # (n, D, D)
        return loc[k] + torch.sqrt(df[k] / g)[:, None] * (C @ eps[:, :, None]).squeeze(-1)


def _standard_gamma(a: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    r"""Gamma(a, 1) draws for a CPU float64 tensor of shapes ``a`` (Marsaglia & Tsang, 2000).

    Rejection sampling with :math:`d = a - 1/3`, :math:`v = (1 + z/\sqrt{9d})^3`;
    for :math:`a < 1`, a Gamma(a + 1) draw times :math:`U^{1/a}`. Uses ``generator``
    throughout, which ``torch.distributions.Gamma`` cannot.
    """
    boost = a < 1
    a1 = torch.where(boost, a + 1, a)
    d = a1 - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.arange(a.numel())
    while todo.numel() > 0:
        z = torch.randn(todo.numel(), generator=generator, dtype=a.dtype)
        u = torch.rand(todo.numel(), generator=generator, dtype=a.dtype)
        v = (1 + c[todo] * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d[todo] * (1 - v + torch.log(v.clamp_min(1e-300))))
        out[todo[ok]] = (d[todo] * v)[ok]
        todo = todo[~ok]
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype)
    return torch.where(boost, out * u ** (1.0 / a), out)


# ----------------------------------------------------------------------------
# Exact evidence on tiny data sets
# ----------------------------------------------------------------------------


def exact_log_evidence(x: torch.Tensor, n_components: int, prior: NormalWishartPrior | None = None) -> float:
    r"""The exact :math:`\log p(X)` of :eq:`ch02:bgmm`, summing over all :math:`K^N` assignments.

    .. math::  p(X) = \sum_{z} p(z) \prod_{k=1}^K p(X_k), \qquad
               p(z) = \frac{\Gamma(K\alpha_0)}{\Gamma(N + K\alpha_0)}
                      \prod_k\frac{\Gamma(N_k+\alpha_0)}{\Gamma(\alpha_0)},
               \tag{ch02:exact-evidence}

    with :math:`p(z)` the Dirichlet-multinomial probability of one labelled
    assignment and :math:`p(X_k)` the Normal-Wishart marginal likelihood of the
    :math:`N_k` points assigned to :math:`k` (Murphy, 2007; Murphy, 2012, section 4.6.3),
    written with Bishop's Wishart scale :math:`W` (the inverse of Murphy's inverse-Wishart scale):

    .. math::  \log p(X_k) = -\tfrac{N_k D}2\log\pi + \tfrac D2\log\frac{\beta_0}{\beta_N}
               + \log\frac{\Gamma_D(\nu_N/2)}{\Gamma_D(\nu_0/2)}
               - \tfrac{\nu_0}2\log|W_0| + \tfrac{\nu_N}2\log|W_N|,   \tag{ch02:nw-marginal}

    where :math:`\beta_N, \nu_N, W_N` are the posterior values :eq:`ch02:vi-params`
    with hard assignments. ``prior`` fields left ``None`` are set from ``x`` as in
    :meth:`BayesianGaussianMixture.fit`. Refuses ``N > 12`` or :math:`K^N > 2\cdot 10^6`.
    """
    x = _check_data(x)
    check_int(n_components, "n_components")
    N, D = x.shape
    K = n_components
    if N > 12 or K**N > 2_000_000:
        raise ValueError(f"exact_log_evidence enumerates K^N = {K}^{N} assignments; use N <= 12 and K^N <= 2e6")
    p = (prior if prior is not None else NormalWishartPrior()).resolve(x)
    xw = _work(x) - p.m0  # centred at m0, so m0 = 0 below
    W0_inv = _spd_inverse(p.W0)
    logdet_W0 = _logdet(p.W0)
    outer = xw[:, :, None] * xw[:, None, :]  # (N, D, D)
    log_terms = []
    total = K**N
    chunk = 1 << 15
    powers = K ** torch.arange(N - 1, -1, -1, device=xw.device)  # (N,)
    for start in range(0, total, chunk):
        codes = torch.arange(start, min(start + chunk, total), device=xw.device)  # (A,)
        z = torch.div(codes[:, None], powers, rounding_mode="floor") % K  # (A, N) assignment digits
        onehot = torch.nn.functional.one_hot(z, K).to(xw.dtype)  # (A, N, K)
        Nk = onehot.sum(1)  # (A, K)
        sx = torch.einsum("ank,nd->akd", onehot, xw)  # (A, K, D)
        sxx = torch.einsum("ank,nde->akde", onehot, outer)  # (A, K, D, D)
        betaN = p.beta0 + Nk
        nuN = p.nu0 + Nk
        WN_inv = W0_inv + sxx - sx[..., :, None] * sx[..., None, :] / betaN[..., None, None]
        log_ml = (
            -0.5 * Nk * D * math.log(math.pi)
            + 0.5 * D * torch.log(p.beta0 / betaN)
            + torch.mvlgamma(0.5 * nuN, D) - torch.mvlgamma(xw.new_tensor(0.5 * p.nu0), D)
            - 0.5 * p.nu0 * logdet_W0 - 0.5 * nuN * _logdet(_sym(WN_inv))
        )  # (A, K)
        log_pz = (
            math.lgamma(K * p.alpha0) - math.lgamma(N + K * p.alpha0)
            + (torch.lgamma(Nk + p.alpha0) - math.lgamma(p.alpha0)).sum(1)
        )  # (A,)
        log_terms.append(log_pz + log_ml.sum(1))
    return float(torch.logsumexp(torch.cat(log_terms), 0))
