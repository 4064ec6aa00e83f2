r"""Chapter 3: linear dynamical systems (linear-Gaussian state-space models).

The latent state :math:`z_t \in \mathbb R^Z` follows linear-Gaussian dynamics and
is observed through a linear-Gaussian measurement :math:`x_t \in \mathbb R^X`:

.. math::  z_1 \sim \mathcal N(\mu_0, P_0), \qquad
           z_t = A z_{t-1} + w_t,\; w_t \sim \mathcal N(0, Q), \qquad
           x_t = C z_t + v_t,\; v_t \sim \mathcal N(0, R).   \tag{ch03:lds}

Every joint, marginal and conditional is Gaussian, so filtering (Kalman 1960),
smoothing (Rauch, Tung & Striebel 1965) and the exact log-likelihood are
closed-form recursions; EM fits all parameters (Shumway & Stoffer 1982;
Ghahramani & Hinton 1996; Bishop 2006, section 13.3).

Conventions
-----------
- Shapes: ``B`` sequences, ``T`` time steps, latent size ``Z``, observed size
  ``X``. Everything is batched over ``B``; the only Python loop is over time.
- Linear solves use Cholesky factors (never an explicit inverse), and every
  covariance update is written in a form that stays symmetric positive
  semi-definite in floating point (Joseph form, then symmetrised).
- Log-likelihoods are per sequence, in nats; ``fit`` reports the mean over sequences.

Equation labels (``ch03:...``) refer to Chapter 3 of the book.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ._checks import check_int, check_sequences, check_tensor
from ._progress import progress_bar

__all__ = ["kalman_predict", "kalman_update", "LDS", "FilterResult", "SmootherResult"]

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _sym(m: torch.Tensor) -> torch.Tensor:
    r"""The symmetric part, :math:`(M + M^\top)/2`: removes round-off asymmetry."""
    return 0.5 * (m + m.transpose(-1, -2))


def _cholesky(m: torch.Tensor, what: str) -> torch.Tensor:
    try:
        return torch.linalg.cholesky(m)
    except RuntimeError as err:  # torch.linalg.LinAlgError
        raise ValueError(f"{what} is not positive definite (Cholesky failed); check that the covariances are PSD "
                         "and that the innovation covariance C P C^T + R is non-singular") from err


def _solve_spd(S: torch.Tensor, rhs: torch.Tensor, what: str) -> torch.Tensor:
    r""":math:`S^{-1}\,\mathrm{rhs}` for symmetric positive definite ``S`` by a Cholesky solve."""
    return torch.cholesky_solve(rhs, _cholesky(S, what))


def _check_matrix(m, name: str, shape: tuple[int, int]) -> torch.Tensor:
    check_tensor(m, name)
    if tuple(m.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(m.shape)}")
    return m


def _check_psd(m: torch.Tensor, name: str) -> None:
    """Symmetric and positive semi-definite, up to round-off (an eigenvalue check on a small matrix)."""
    scale = float(m.abs().max()) or 1.0
    eps = 1e3 * torch.finfo(m.dtype).eps * scale
    if float((m - m.T).abs().max()) > eps * 10:
        raise ValueError(f"{name} must be symmetric")
    if float(torch.linalg.eigvalsh(_sym(m)).min()) < -eps * m.shape[0]:
        raise ValueError(f"{name} must be positive semi-definite (it has a negative eigenvalue)")


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    """A factor ``L`` with ``L @ L.T == m`` for a PSD ``m``, singular allowed (via eigh)."""
    w, V = torch.linalg.eigh(_sym(m))
    return V * w.clamp_min(0).sqrt()


def _check_state(mean, cov, Z: int | None = None):
    check_tensor(mean, "mean")
    check_tensor(cov, "cov")
    if mean.dim() != 2:
        raise ValueError(f"mean must have shape (B, Z), got {tuple(mean.shape)}")
    B, Zm = mean.shape
    if Z is not None and Zm != Z:
        raise ValueError(f"mean has state size {Zm} but the model's is {Z}")
    if tuple(cov.shape) != (B, Zm, Zm):
        raise ValueError(f"cov must have shape (B, Z, Z) = {(B, Zm, Zm)} to match mean, got {tuple(cov.shape)}")
    return B, Zm


# ----------------------------------------------------------------------------
# One step of the Kalman filter
# ----------------------------------------------------------------------------


def _predict(mean, cov, A, Q):
    return mean @ A.T, _sym(A @ cov @ A.T + Q)  # (B, Z), (B, Z, Z)


def _update(mean, cov, x, C, R):
    X = x.shape[-1]
    CP = C @ cov  # (B, X, Z)
    S = _sym(CP @ C.T + R)  # (B, X, X) innovation covariance
    L = _cholesky(S, "the innovation covariance C P C^T + R")
    gain = torch.cholesky_solve(CP, L).transpose(-1, -2)  # (B, Z, X) = P C^T S^{-1}
    resid = x - mean @ C.T  # (B, X) innovation
    new_mean = mean + (gain @ resid[..., None]).squeeze(-1)  # (B, Z)
    IKC = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device) - gain @ C  # (B, Z, Z)
    new_cov = _sym(IKC @ cov @ IKC.transpose(-1, -2) + gain @ R @ gain.transpose(-1, -2))  # Joseph form
    white = torch.linalg.solve_triangular(L, resid[..., None], upper=False).squeeze(-1)  # (B, X) = L^{-1} r
    log_det = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (B,)
    log_lik = -0.5 * (X * LOG_2PI + log_det + (white**2).sum(-1))  # (B,)
    return new_mean, new_cov, log_lik


def kalman_predict(mean: torch.Tensor, cov: torch.Tensor, A: torch.Tensor, Q: torch.Tensor):
    r"""The time update of the Kalman filter (Kalman 1960; Bishop 2006, eq. 13.88):

    .. math::  m_{t\mid t-1} = A\, m_{t-1\mid t-1}, \qquad
               P_{t\mid t-1} = A\, P_{t-1\mid t-1} A^\top + Q.   \tag{ch03:kalman-predict}

    ``mean``: ``(B, Z)``; ``cov``: ``(B, Z, Z)``; ``A``, ``Q``: ``(Z, Z)``. Returns
    ``(mean (B, Z), cov (B, Z, Z))``; the covariance is symmetrised.
    """
    B, Z = _check_state(mean, cov)
    _check_matrix(A, "A", (Z, Z))
    _check_matrix(Q, "Q", (Z, Z))
    return _predict(mean, cov, A.to(mean), Q.to(mean))


def kalman_update(mean: torch.Tensor, cov: torch.Tensor, x: torch.Tensor, C: torch.Tensor, R: torch.Tensor):
    r"""The measurement update of the Kalman filter (Kalman 1960; Bishop 2006, eqs. 13.89-13.92).

    With the innovation :math:`r = x - C m` and its covariance :math:`S = C P C^\top + R`,

    .. math::  K = P C^\top S^{-1}, \qquad m' = m + K r, \qquad
               P' = (I - K C)\, P\, (I - K C)^\top + K R K^\top,   \tag{ch03:kalman-update}

    where the last line is the Joseph form: algebraically equal to
    :math:`(I-KC)P` but symmetric positive semi-definite in floating point. The
    gain comes from a Cholesky solve with :math:`S`. Also returns the predictive
    log density of the measurement,

    .. math::  \log p(x\mid\text{past}) = \log\mathcal N(x\mid C m,\, C P C^\top + R),
               \tag{ch03:kalman-loglik}

    whose sum over t is the log-likelihood of a sequence. ``mean`` ``(B, Z)``,
    ``cov`` ``(B, Z, Z)``, ``x`` ``(B, X)``, ``C`` ``(X, Z)``, ``R`` ``(X, X)``.
    Returns ``(mean (B, Z), cov (B, Z, Z), log_lik (B,))``. Raises ``ValueError``
    when shapes disagree or :math:`S` is not positive definite.
    """
    B, Z = _check_state(mean, cov)
    check_tensor(x, "x")
    if x.dim() != 2 or x.shape[0] != B:
        raise ValueError(f"x must have shape (B, X) with B={B} to match mean, got {tuple(x.shape)}")
    X = x.shape[1]
    _check_matrix(C, "C", (X, Z))
    _check_matrix(R, "R", (X, X))
    return _update(mean, cov, x.to(mean), C.to(mean), R.to(mean))


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


class FilterResult(NamedTuple):
    """Output of :meth:`LDS.filter`; all conditioned on :math:`x_{1:t}` (or :math:`x_{1:t-1}` for ``pred_*``)."""

    means: torch.Tensor  # (B, T, Z)    m_{t|t}
    covs: torch.Tensor  # (B, T, Z, Z)  P_{t|t}
    pred_means: torch.Tensor  # (B, T, Z)  m_{t|t-1}; m_{1|0} = mu0
    pred_covs: torch.Tensor  # (B, T, Z, Z)  P_{t|t-1}; P_{1|0} = P0
    log_likelihood: torch.Tensor  # (B,)  log p(x_{1:T})


class SmootherResult(NamedTuple):
    """Output of :meth:`LDS.smooth`; all conditioned on the whole sequence :math:`x_{1:T}`."""

    means: torch.Tensor  # (B, T, Z)  E[z_t | x_{1:T}]
    covs: torch.Tensor  # (B, T, Z, Z)  Cov(z_t | x_{1:T})
    cross_covs: torch.Tensor  # (B, T-1, Z, Z)  Cov(z_{t+1}, z_t | x_{1:T})
    log_likelihood: torch.Tensor  # (B,)


_ALL = ("A", "Q", "C", "R", "mu0", "P0")


class LDS(nn.Module):
    r"""A linear dynamical system (ch03:lds) with parameters held as buffers.

    ``A`` ``(Z, Z)`` dynamics, ``Q`` ``(Z, Z)`` process noise covariance, ``C``
    ``(X, Z)`` observation matrix, ``R`` ``(X, X)`` observation noise covariance,
    ``mu0`` ``(Z,)`` and ``P0`` ``(Z, Z)`` the prior of :math:`z_1`. The model
    computes in the dtype and on the device of ``A``; data are moved there.
    ``Q`` and ``P0`` may be singular (PSD); ``R`` must keep :math:`C P C^\top + R`
    positive definite.
    """

    def __init__(self, A, Q, C, R, mu0, P0):
        super().__init__()
        check_tensor(A, "A")
        if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ValueError(f"A must be a square (Z, Z) matrix, got shape {tuple(A.shape)}")
        Z = A.shape[0]
        check_tensor(C, "C")
        if C.dim() != 2 or C.shape[1] != Z or C.shape[0] < 1:
            raise ValueError(f"C must have shape (X, Z={Z}), got {tuple(C.shape)}")
        X = C.shape[0]
        _check_matrix(Q, "Q", (Z, Z))
        _check_matrix(R, "R", (X, X))
        _check_matrix(P0, "P0", (Z, Z))
        check_tensor(mu0, "mu0")
        if tuple(mu0.shape) != (Z,):
            raise ValueError(f"mu0 must have shape ({Z},), got {tuple(mu0.shape)}")
        like = dict(device=A.device, dtype=A.dtype)
        Q, C, R, mu0, P0 = (t.to(**like) for t in (Q, C, R, mu0, P0))
        for name, m in (("Q", Q), ("R", R), ("P0", P0)):
            _check_psd(m, name)
        for name, t in (("A", A), ("Q", Q), ("C", C), ("R", R), ("mu0", mu0), ("P0", P0)):
            self.register_buffer(name, t.clone())

    @property
    def state_dim(self) -> int:
        return self.A.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.C.shape[0]

    def _check_x(self, x) -> torch.Tensor:
        check_sequences(x, "x", self.obs_dim, "X")
        return x.to(device=self.A.device, dtype=self.A.dtype)

    # --- inference -------------------------------------------------------------------

    def _filter(self, x: torch.Tensor) -> FilterResult:
        B, T, _ = x.shape
        Z = self.state_dim
        means, covs = x.new_empty(B, T, Z), x.new_empty(B, T, Z, Z)
        pred_means, pred_covs = x.new_empty(B, T, Z), x.new_empty(B, T, Z, Z)
        ll = x.new_zeros(B)
        m, P = self.mu0.expand(B, Z), self.P0.expand(B, Z, Z)  # prior of z_1
        for t in range(T):
            if t > 0:
                m, P = _predict(m, P, self.A, self.Q)
            pred_means[:, t], pred_covs[:, t] = m, P
            m, P, step_ll = _update(m, P, x[:, t], self.C, self.R)
            means[:, t], covs[:, t] = m, P
            ll = ll + step_ll
        return FilterResult(means, covs, pred_means, pred_covs, ll)

    def filter(self, x: torch.Tensor) -> FilterResult:
        r"""The Kalman filter over each sequence of ``x`` ``(B, T, X)``: alternate
        (ch03:kalman-predict) and (ch03:kalman-update) from :math:`m_{1\mid 0}=\mu_0`,
        :math:`P_{1\mid 0}=P_0`. The log-likelihood is the sum of the one-step
        predictive log densities (prediction error decomposition):

        .. math::  \log p(x_{1:T}) = \sum_{t=1}^T \log\mathcal N\big(x_t\mid C m_{t\mid t-1},\,
                   C P_{t\mid t-1} C^\top + R\big).   \tag{ch03:lds-loglik}

        Returns a :class:`FilterResult`.
        """
        return self._filter(self._check_x(x))

    def _smooth(self, x: torch.Tensor) -> SmootherResult:
        f = self._filter(x)
        B, T, Z = f.means.shape
        means, covs = f.means.clone(), f.covs.clone()  # (B, T, Z), (B, T, Z, Z)
        cross = x.new_empty(B, T - 1, Z, Z)
        for t in range(T - 2, -1, -1):
            Pf = f.covs[:, t]  # P_{t|t}
            Pp = f.pred_covs[:, t + 1]  # P_{t+1|t}
            # smoother gain J_t = P_{t|t} A^T P_{t+1|t}^{-1}, from J_t^T = P_{t+1|t}^{-1} A P_{t|t}
            J = _solve_spd(Pp, self.A @ Pf, "the predicted covariance P_{t+1|t}").transpose(-1, -2)  # (B, Z, Z)
            means[:, t] = f.means[:, t] + (J @ (means[:, t + 1] - f.pred_means[:, t + 1])[..., None]).squeeze(-1)
            covs[:, t] = _sym(Pf + J @ (covs[:, t + 1] - Pp) @ J.transpose(-1, -2))
            cross[:, t] = covs[:, t + 1] @ J.transpose(-1, -2)  # Cov(z_{t+1}, z_t | x_{1:T})
        return SmootherResult(means, covs, cross, f.log_likelihood)

    def smooth(self, x: torch.Tensor) -> SmootherResult:
        r"""The Rauch-Tung-Striebel smoother (Rauch, Tung & Striebel 1965; Bishop 2006, eqs. 13.100-13.104).

        After the filter, backwards for :math:`t = T-1, \dots, 1`:

        .. math::  J_t = P_{t\mid t} A^\top P_{t+1\mid t}^{-1}, \qquad
                   \hat m_t = m_{t\mid t} + J_t(\hat m_{t+1} - m_{t+1\mid t}), \qquad
                   \hat P_t = P_{t\mid t} + J_t(\hat P_{t+1} - P_{t+1\mid t}) J_t^\top,
                   \tag{ch03:rts}

        and the lag-one cross-covariances that the EM M-step needs,

        .. math::  \operatorname{Cov}(z_{t+1}, z_t\mid x_{1:T}) = \hat P_{t+1} J_t^\top
                   \tag{ch03:lag-one}

        (equivalent to the recursion of Shumway & Stoffer 1982; Bishop 2006, eq. 13.104; Särkkä 2013).
        Returns a :class:`SmootherResult`; ``cross_covs`` is ``(B, T-1, Z, Z)``.
        """
        return self._smooth(self._check_x(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_{1:T})` of each sequence (ch03:lds-loglik), shape ``(B,)``."""
        return self.filter(x).log_likelihood

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the mean log-likelihood per sequence (a scalar)."""
        return -self.log_prob(x).mean()

    # --- learning ----------------------------------------------------------------------

    @torch.no_grad()
    def _m_step(self, x: torch.Tensor, s: SmootherResult, learn: set[str]) -> None:
        B, T, _ = x.shape
        m = s.means  # (B, T, Z)
        Ezz = s.covs + m[..., :, None] * m[..., None, :]  # (B, T, Z, Z)  E[z_t z_t^T]
        # observation block: C = (sum x E[z]^T)(sum E[z z^T])^{-1}, R = mean of E[(x - C z)(x - C z)^T]
        Sxx = torch.einsum("bti,btj->ij", x, x)
        Sxz = torch.einsum("bti,btj->ij", x, m)  # (X, Z)
        Szz = Ezz.sum((0, 1))  # (Z, Z)
        if "C" in learn:
            self.C.copy_(_solve_spd(Szz, Sxz.T, "sum_t E[z_t z_t^T]").T)
        if "R" in learn:
            C = self.C
            CSzx = C @ Sxz.T
            self.R.copy_(_sym(Sxx - CSzx - CSzx.T + C @ Szz @ C.T) / (B * T))
        # dynamics block: A = (sum E[z_t z_{t-1}^T])(sum E[z_{t-1} z_{t-1}^T])^{-1}
        if T > 1:
            S10 = (s.cross_covs + m[:, 1:, :, None] * m[:, :-1, None, :]).sum((0, 1))  # sum_t E[z_{t+1} z_t^T]
            S00 = Ezz[:, :-1].sum((0, 1))
            S11 = Ezz[:, 1:].sum((0, 1))
            if "A" in learn:
                self.A.copy_(_solve_spd(S00, S10.T, "sum_t E[z_t z_t^T]").T)
            if "Q" in learn:
                A = self.A
                AS01 = A @ S10.T
                self.Q.copy_(_sym(S11 - AS01 - AS01.T + A @ S00 @ A.T) / (B * (T - 1)))
        # initial state
        if "mu0" in learn:
            self.mu0.copy_(m[:, 0].mean(0))
        if "P0" in learn:
            d = m[:, 0] - self.mu0  # (B, Z)
            self.P0.copy_(_sym(s.covs[:, 0].mean(0) + d.T @ d / B))

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        max_iter: int = 100,
        tol: float = 1e-6,
        progress: bool = False,
        desc: str | None = None,
        *,
        learn: Sequence[str] = _ALL,
    ) -> list[float]:
        r"""EM for all parameters, in place (Shumway & Stoffer 1982; Ghahramani & Hinton 1996;
        Bishop 2006, eqs. 13.110-13.116).

        E-step: the RTS smoother gives :math:`\hat m_t`, :math:`\hat P_t` and the
        lag-one covariances (ch03:lag-one), hence :math:`\mathbb E[z_t]`,
        :math:`\mathbb E[z_t z_t^\top]` and :math:`\mathbb E[z_{t+1} z_t^\top]`.
        M-step (sums over sequences ``b`` and time):

        .. math::  C = \Big(\sum x_t \mathbb E[z_t]^\top\Big)\Big(\sum \mathbb E[z_t z_t^\top]\Big)^{-1},
                   \qquad R = \frac{1}{BT}\sum \mathbb E\big[(x_t - C z_t)(x_t - C z_t)^\top\big],

        .. math::  A = \Big(\sum_{t\ge2} \mathbb E[z_t z_{t-1}^\top]\Big)\Big(\sum_{t\ge2}
                   \mathbb E[z_{t-1} z_{t-1}^\top]\Big)^{-1}, \qquad
                   Q = \frac{1}{B(T-1)}\sum_{t\ge2} \mathbb E\big[(z_t - A z_{t-1})(z_t - A z_{t-1})^\top\big],

        .. math::  \mu_0 = \frac1B\sum_b \mathbb E[z_{b1}], \qquad
                   P_0 = \frac1B\sum_b \Big(\hat P_{b1} + (\hat m_{b1} - \mu_0)(\hat m_{b1} - \mu_0)^\top\Big).
                   \tag{ch03:lds-em}

        The three blocks decouple, so ``learn`` (a subset of
        ``("A", "Q", "C", "R", "mu0", "P0")``) may hold some parameters fixed and
        every step still maximises the expected complete-data log-likelihood
        over the rest. With ``T = 1``, ``A`` and ``Q`` are left unchanged.
        Returns the mean log-likelihood per sequence: entry 0 at the initial
        parameters, entry ``i`` after ``i`` steps; non-decreasing. Stops after
        ``max_iter`` steps or when the rise is below ``tol``.
        """
        x = self._check_x(x)
        check_int(max_iter, "max_iter", 0)
        learn = set(learn)
        unknown = learn - set(_ALL)
        if unknown:
            raise ValueError(f"learn may only name {_ALL}, got {sorted(unknown)}")
        s = self._smooth(x)
        history = [float(s.log_likelihood.mean())]
        bar = progress_bar(max_iter, desc or "LDS EM", progress)
        for _ in bar:
            self._m_step(x, s, learn)
            s = self._smooth(x)
            history.append(float(s.log_likelihood.mean()))
            bar.set_postfix({"loglik": f"{history[-1]:.6g}"}, refresh=False)
            if history[-1] - history[-2] < tol:
                break
        bar.close()
        return history

    # --- sampling ----------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, T: int, generator: torch.Generator | None = None):
        """Ancestral sampling from (ch03:lds): ``(z (n, T, Z), x (n, T, X))``.

        Noise is drawn with ``generator`` (optional; it must live on the model's
        device) and shaped by symmetric square roots of ``P0``, ``Q`` and ``R``,
        so singular (PSD) covariances are fine.
        """
        check_int(n, "n")
        check_int(T, "T")
        Z, X = self.state_dim, self.obs_dim
        like = dict(device=self.A.device, dtype=self.A.dtype)
        ez = torch.randn(n, T, Z, generator=generator, **like)
        ex = torch.randn(n, T, X, generator=generator, **like)
        LP0, LQ, LR = _psd_sqrt(self.P0), _psd_sqrt(self.Q), _psd_sqrt(self.R)
        z = self.A.new_empty(n, T, Z)  # (n, T, Z)
        z[:, 0] = self.mu0 + ez[:, 0] @ LP0.T
        for t in range(1, T):
            z[:, t] = z[:, t - 1] @ self.A.T + ez[:, t] @ LQ.T
        x = z @ self.C.T + ex @ LR.T  # (n, T, X)
        return z, x
