r"""Chapter 2: Gaussian mixtures fitted by EM, with missing data.

A Gaussian mixture with :math:`K` components in :math:`D` dimensions,

.. math::  p(x) = \sum_{k=1}^K \pi_k\, \mathcal N(x \mid \mu_k, \Sigma_k),   \tag{ch02:gmm}

is fitted by expectation-maximisation (EM; Dempster, Laird & Rubin 1977;
Bishop 2006, section 9.2). Everything is computed in log space: component log
densities come from the Cholesky factor :math:`L_k` of each covariance (its
log-determinant, and :math:`L_k^{-1}` from a triangular solve, which whitens
every example in one matrix product), and responsibilities from ``logsumexp``.
No covariance goes through a general matrix inverse; the one place that needs
the entries of a precision matrix (its missing block, below) builds it as
:math:`L_k^{-\top} L_k^{-1}`.

**Missing data** (Ghahramani & Jordan 1994; Little & Rubin 2019).
An ``observed`` mask ``(B, D)`` marks the entries of ``x`` that were seen;
the others are ignored (they may be NaN). The E-step marginalises the missing
coordinates, so each example contributes :math:`\log p(x_o)`, and the M-step
uses the expected sufficient statistics :math:`\mathbb E[x]` and
:math:`\mathbb E[x x^\top]` under the posterior of the missing block, including
its conditional covariance. This is maximum likelihood for the observed data
(when the data are missing at random), not mean filling.

Conventions
-----------
- ``x``: ``(B, D)``; ``observed``: bool ``(B, D)``, ``True`` where seen, ``None``
  for "everything observed". Results are per example, in nats, never averaged,
  except the log-likelihoods that :meth:`GaussianMixture.em_step` and
  :meth:`GaussianMixture.fit` report, which are means per example.
- Parameters are buffers (EM, not gradients): ``weights`` ``(K,)``, ``means``
  ``(K, D)``, ``covariances`` ``(K, D, D)`` (``"full"``) or ``(K, D)``
  (``"diag"``, the variances). ``model.to(device)`` and ``model.double()`` work.
- Internally component-major tensors ``(K, B, ...)`` are used; public results
  are example-major ``(B, K)``.

Equation labels (``ch02:...``) refer to Chapter 2 of the book.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ._checks import check_int, check_probabilities, check_tensor
from ._progress import progress_bar

__all__ = ["GaussianMixture", "kmeans_plus_plus", "kmeans_plus_plus_indices"]

LOG_2PI = math.log(2 * math.pi)

#: The missing-data E-step works on batches of rows holding at most about this many
#: matrix entries (K * rows * (M * M + D)), so memory stays bounded for large data sets.
_CHUNK_ENTRIES = 2**24


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def _serial_cpu(device: torch.device):
    """Run a stretch of small batched operations with one CPU thread.

    The missing-data E-step makes a few dozen batched calls on many tiny
    matrices per step. PyTorch loops over such a batch serially and hands each
    tiny matrix to a threaded LAPACK, and every multi-threaded call pays a
    thread start-up that costs more than its work (tens of milliseconds per
    call on a busy shared machine). The previous thread count is restored on
    exit; nothing changes on a GPU.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def kmeans_plus_plus_indices(x: torch.Tensor, n_centers: int, generator: torch.Generator) -> torch.Tensor:
    r"""k-means++ seeding (Arthur & Vassilvitskii 2007): the indices of ``n_centers`` rows of ``x``.

    The first centre is a row drawn uniformly; each next one is a row drawn
    with probability proportional to its squared distance to the nearest
    centre chosen so far,

    .. math::  P(\text{pick } x_n) = \frac{d_n^2}{\sum_m d_m^2}, \qquad
               d_n = \min_{j<k} \lVert x_n - c_j \rVert.   \tag{ch02:kmeanspp}

    ``x``: ``(N, D)``; ``generator``: a CPU ``torch.Generator`` (the draws are
    made on the CPU in float64, so a seed gives the same centres on every
    device). Returns a long tensor ``(n_centers,)`` on ``x``'s device. Every
    model of the book that starts from k-means++ (mixtures, the variational
    mixture, HMMs) calls this one function.
    """
    check_tensor(x, "x", min_dim=2)
    n = x.shape[0]
    check_int(n_centers, "n_centers")
    if n_centers > n:
        raise ValueError(f"cannot choose {n_centers} centres from {n} rows")
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    d2 = (x - x[first]).square().sum(1)  # (N,)
    for _ in range(1, n_centers):
        p = d2.detach().to("cpu", torch.float64)
        total = float(p.sum())
        p = p / total if total > 0 else torch.full_like(p, 1.0 / n)  # all rows equal: any row will do
        nxt = int(torch.multinomial(p, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, (x - x[nxt]).square().sum(1))
    return torch.tensor(chosen, dtype=torch.long, device=x.device)  # (n_centers,)


def kmeans_plus_plus(x: torch.Tensor, n_centers: int, generator: torch.Generator) -> torch.Tensor:
    """The rows :func:`kmeans_plus_plus_indices` picks: ``(n_centers, D)``, on ``x``'s device and dtype."""
    return x[kmeans_plus_plus_indices(x, n_centers, generator)].clone()  # (n_centers, D)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


class GaussianMixture(nn.Module):
    r"""Gaussian mixture :eq:`ch02:gmm` with full or diagonal covariances, fitted by EM.

    Parameters
    ----------
    weights: ``(K,)`` mixing proportions :math:`\pi_k`, positive, summing to 1.
    means: ``(K, D)`` component means :math:`\mu_k`.
    covariances: ``(K, D, D)`` symmetric positive definite matrices
        (``covariance_type == "full"``) or ``(K, D)`` positive variances
        (``"diag"``, :math:`\Sigma_k = \operatorname{diag}\sigma_k^2`).

    All three must share a floating dtype and a device; they are copied into
    buffers. :meth:`from_data` builds a starting point from data.

    The log-likelihood of the observed entries of an example :math:`x` with
    observed coordinates :math:`o` and missing ones :math:`m` is

    .. math::  \log p(x_o) = \log \sum_k \pi_k\, \mathcal N(x_o \mid \mu_{k,o}, \Sigma_{k,oo}),
               \tag{ch02:marginal}

    the mixture of the marginals of the components (a Gaussian's marginal is
    the Gaussian of the sub-vector). A row with nothing observed has
    :math:`p(x_o) = 1`: its ``log_prob`` is 0 and its responsibilities are the
    weights.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
        super().__init__()
        check_tensor(weights, "weights", min_dim=1)
        check_tensor(means, "means", min_dim=2)
        check_tensor(covariances, "covariances", min_dim=2)
        if weights.dim() != 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(weights.shape)}")
        if means.dim() != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(
                f"means must have shape (K, D) = ({weights.shape[0]}, D), got {tuple(means.shape)}"
            )
        k, d = means.shape
        if d < 1:
            raise ValueError("means must have at least one column (D >= 1)")
        for name, t in (("means", means), ("covariances", covariances)):
            if t.dtype != weights.dtype or t.device != weights.device:
                raise ValueError(
                    f"{name} is {t.dtype} on {t.device} but weights is {weights.dtype} on {weights.device};"
                    " all parameters must share one dtype and device"
                )
        check_probabilities(weights, "weights", atol=1e-5)
        if bool((weights <= 0).any()):
            raise ValueError("weights must be positive")
        if covariances.dim() == 3:
            if tuple(covariances.shape) != (k, d, d):
                raise ValueError(
                    f"full covariances must have shape (K, D, D) = {(k, d, d)}, got {tuple(covariances.shape)}"
                )
            scale = covariances.abs().amax(dim=(-2, -1), keepdim=True)
            asym = (covariances - covariances.mT).abs() / scale
            if bool((asym > 1e3 * torch.finfo(covariances.dtype).eps).any()):
                raise ValueError("covariances must be symmetric")
            if bool((torch.linalg.cholesky_ex(covariances).info != 0).any()):
                raise ValueError("covariances must be positive definite")
            self.covariance_type = "full"
        elif covariances.dim() == 2:
            if tuple(covariances.shape) != (k, d):
                raise ValueError(
                    f"diagonal covariances must have shape (K, D) = {(k, d)}, got {tuple(covariances.shape)}"
                )
            if bool((covariances <= 0).any()):
                raise ValueError("diagonal covariances (variances) must be positive")
            self.covariance_type = "diag"
        else:
            raise ValueError(
                f"covariances must be (K, D, D) for 'full' or (K, D) for 'diag', got shape {tuple(covariances.shape)}"
            )
        self.register_buffer("weights", weights.detach().clone())  # (K,)
        self.register_buffer("means", means.detach().clone())  # (K, D)
        self.register_buffer("covariances", covariances.detach().clone())  # (K, D, D) or (K, D)

    # -- sizes ----------------------------------------------------------------

    @property
    def n_components(self) -> int:
        """The number of components ``K``."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """The data dimension ``D``."""
        return self.means.shape[1]

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, dim={self.dim}, covariance_type={self.covariance_type!r}"

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_data(
        cls,
        x: torch.Tensor,
        n_components: int,
        covariance_type: str = "full",
        seed: int = 0,
        reg_covar: float = 1e-6,
        *,
        observed: torch.Tensor | None = None,
    ) -> "GaussianMixture":
        r"""A starting point for EM: k-means++ means, the data covariance, uniform weights.

        The means are :func:`kmeans_plus_plus` rows of ``x`` (seeded by ``seed``
        through a ``torch.Generator``); every component gets the covariance of
        the whole data set (``/N``), plus ``reg_covar`` on its diagonal (for
        ``"diag"``, the per-coordinate variances); the weights are :math:`1/K`.

        ``observed`` (keyword only, an addition to the book's API) lets ``x``
        have missing entries: for this starting point only they are filled with
        their column's observed mean (a column with nothing observed gets 0).
        EM then treats them properly.
        """
        check_int(n_components, "n_components")
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        _check_reg(reg_covar)
        check_tensor(x, "x", min_dim=2, allow_nan=observed is not None)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
        o = _check_observed(x, observed)
        if n_components > x.shape[0]:
            raise ValueError(f"n_components = {n_components} exceeds the number of rows of x ({x.shape[0]})")
        if o is not None:  # fill with observed column means, for the starting point only
            x0 = torch.where(o, x, 0.0)
            col_mean = x0.sum(0) / o.sum(0).clamp_min(1)  # (D,)
            x = torch.where(o, x, col_mean)
        gen = torch.Generator().manual_seed(seed)
        means = kmeans_plus_plus(x, n_components, gen)  # (K, D)
        centred = x - x.mean(0)  # (N, D)
        n, d = x.shape
        if covariance_type == "full":
            cov = centred.mT @ centred / n  # (D, D)
            cov = 0.5 * (cov + cov.mT) + reg_covar * torch.eye(d, dtype=x.dtype, device=x.device)
            covs = cov.expand(n_components, d, d).clone()  # (K, D, D)
        else:
            covs = (centred.square().mean(0) + reg_covar).expand(n_components, d).clone()  # (K, D)
        weights = x.new_full((n_components,), 1.0 / n_components)  # (K,)
        return cls(weights, means, covs)

    # -- input checks ----------------------------------------------------------

    def _check_x(self, x: torch.Tensor, observed: torch.Tensor | None, name: str = "x"):
        check_tensor(x, name, event_shape=(self.dim,), min_dim=2, allow_nan=observed is not None)
        if x.dim() != 2:
            raise ValueError(f"{name} must have shape (B, D) = (B, {self.dim}), got {tuple(x.shape)}")
        if x.dtype != self.means.dtype:
            raise ValueError(
                f"{name} has dtype {x.dtype} but the model holds {self.means.dtype}; "
                f"convert one of them ({name}.to(model.means.dtype) or model.to({x.dtype}))"
            )
        if x.device != self.means.device:
            raise ValueError(
                f"{name} is on {x.device} but the model is on {self.means.device}; move one with .to(device)"
            )
        return _check_observed(x, observed, name)

    # -- the E-step ------------------------------------------------------------

    def _whitening(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Inverse Cholesky factors and log-determinants of the full covariances.

        With :math:`\Sigma_k = L_k L_k^\top`, returns :math:`L_k^{-1}` ``(K, D, D)``
        (lower triangular, one triangular solve against the identity per
        component) and :math:`\log|\Sigma_k| = 2 \sum_i \log (L_k)_{ii}` ``(K,)``:

        .. math::  \log \mathcal N(x \mid \mu_k, \Sigma_k) = -\tfrac12 \big[D \log 2\pi + \log|\Sigma_k|
                   + \lVert L_k^{-1}(x - \mu_k) \rVert^2\big].   \tag{ch02:gauss-chol}

        Forming :math:`L_k^{-1}` once (as scikit-learn does) lets one batched
        matrix product whiten every example, which is faster than a triangular
        solve with ``B`` right-hand sides (and as accurate: a triangular inverse
        is backward stable).
        """
        chol = self._cholesky()  # (K, D, D)
        eye = torch.eye(self.dim, dtype=chol.dtype, device=chol.device).expand_as(chol)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False)  # (K, D, D): L_k^{-1}
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        return whiten, logdet

    def _cholesky(self) -> torch.Tensor:
        """Lower Cholesky factors of the full covariances, ``(K, D, D)``."""
        chol, info = torch.linalg.cholesky_ex(self.covariances)
        if bool((info != 0).any()):
            bad = torch.nonzero(info).flatten().tolist()
            raise ValueError(
                f"the covariances of components {bad} are not positive definite; "
                "increase reg_covar or use fewer components"
            )
        return chol

    def _e_step(self, x: torch.Tensor, o: torch.Tensor | None, level: int):
        r"""The per-component quantities of one E-step.

        ``level`` 0: ``log_joint`` only; 1: also the conditional means
        ``xhat``; 2: also the responsibility-weighted conditional covariances
        ``csum``. Returns ``(log_joint (B, K), xhat (K, B, D) | None, csum | None)``,
        with ``xhat`` ``None`` when nothing is missing (it is then ``x`` itself)
        and ``csum`` ``(K, D, D)`` or ``(K, D)`` (``None`` when nothing is missing).
        """
        if self.covariance_type == "full":
            return self._e_step_full(x, o, level)
        return self._e_step_diag(x, o, level)

    def _e_step_diag(self, x, o, level):
        var = self.covariances  # (K, D)
        log_w = torch.log(self.weights)  # (K,)
        if o is None:
            diff = x[None] - self.means[:, None]  # (K, B, D)
            quad = (diff.square() / var[:, None]).sum(-1)  # (K, B)
            logdet = torch.log(var).sum(-1)[:, None]  # (K, 1)
            n_obs = float(self.dim)
        else:
            x0 = torch.where(o, x, 0.0)  # (B, D), NaN-free
            diff = torch.where(o, x0[None] - self.means[:, None], 0.0)  # (K, B, D)
            quad = (diff.square() / var[:, None]).sum(-1)  # (K, B)
            logdet = torch.log(var) @ o.to(x.dtype).mT  # (K, B): sum of log variances over observed coordinates
            n_obs = o.sum(1).to(x.dtype)  # (B,)
        log_joint = (log_w[:, None] - 0.5 * (n_obs * LOG_2PI + logdet + quad)).mT  # (B, K)
        xhat = csum = None
        if o is not None and level >= 1:
            # independent coordinates: the missing block's conditional is its prior, N(mu_km, sigma_km^2)
            xhat = torch.where(o, x0, self.means[:, None])  # (K, B, D)
            if level >= 2:
                r = torch.softmax(log_joint, 1)  # (B, K)
                csum = (r.mT @ (~o).to(x.dtype)) * var  # (K, D): sum_n r_nk [d missing] sigma_kd^2
        return log_joint, xhat, csum

    def _e_step_full(self, x, o, level):
        whiten, logdet = self._whitening()  # (K, D, D), (K,)
        log_w = torch.log(self.weights)  # (K,)
        k, d = self.n_components, self.dim
        if o is None:
            # L_k^{-1}(x - mu_k) = L_k^{-1}(x - a) - L_k^{-1}(mu_k - a) for all k in one matrix product;
            # the shift a (the mixture mean) keeps both terms small, so little cancels
            shift = self.weights @ self.means  # (D,)
            stacked = whiten.mT.permute(1, 0, 2).reshape(d, k * d)  # (D, K*D): block k is L_k^{-T}
            offset = ((self.means - shift)[:, None] @ whiten.mT).reshape(k * d)  # (K*D,)
            y = torch.addmm(offset, x - shift, stacked, beta=-1.0)  # (B, K*D): block k is L_k^{-1}(x_n - mu_k)
            quad = y.square_().view(-1, k, d).sum(-1)  # (B, K)
            log_joint = log_w - 0.5 * (d * LOG_2PI + logdet + quad)  # (B, K)
            return log_joint, None, None
        x0 = torch.where(o, x, 0.0)  # (B, D), NaN-free
        diff = torch.where(o, x0[None] - self.means[:, None], 0.0)  # (K, B, D): (x_o - mu_o, 0)
        y = diff @ whiten.mT  # (K, B, D)
        quad = y.square().sum(-1)  # (K, B): d^T Lambda d = d_o^T Lambda_oo d_o
        counts = (~o).sum(1)  # (B,) number of missing entries per row
        n_obs = (d - counts).to(x.dtype)  # (B,)
        # rows with nothing missing keep these values; the others are overwritten below
        log_joint = (log_w[:, None] - 0.5 * (n_obs * LOG_2PI + logdet[:, None] + quad)).mT.contiguous()  # (B, K)
        xhat = torch.where(o, x0, self.means[:, None]) if level >= 1 else None  # (K, B, D), corrected below
        csum = x.new_zeros(k, d * d) if level >= 2 else None
        if bool((counts > 0).any()):
            # precision matrices Lambda_k = L_k^{-T} L_k^{-1}: their missing blocks are needed entry by entry
            prec = whiten.mT @ whiten  # (K, D, D)
            g = y @ whiten  # (K, B, D): rows Lambda_k d
            # a stable sort on the mask lists each row's missing coordinates first, in order
            order = torch.sort(o.to(torch.uint8), dim=1, stable=True).indices  # (B, D)
            with _serial_cpu(x.device):  # many small batched operations: threads cost more than they save
                for m in torch.unique(counts).tolist():  # rows grouped by their number of missing entries
                    if m == 0:
                        continue
                    rows = torch.nonzero(counts == m).squeeze(1)  # (b,)
                    step = max(1, _CHUNK_ENTRIES // (k * (m * m + d)))  # bound the memory of one batch
                    for start in range(0, rows.shape[0], step):
                        sel = rows[start : start + step]  # (b,)
                        self._missing_block(
                            prec, g[:, sel], quad[:, sel], logdet, log_w, sel, order[sel, :m], level,
                            log_joint, xhat, csum,
                        )
        if level >= 2:
            csum = csum.view(k, d, d)
        return log_joint, xhat, csum

    def _missing_block(self, prec, g, quad, logdet, log_w, sel, idx, level, log_joint, xhat, csum):
        r"""Marginal log densities and conditionals of rows ``sel``, which miss ``idx`` ``(b, M)``.

        With :math:`\Lambda = \Sigma^{-1}` and :math:`d = (x_o - \mu_o, 0)`, the
        partitioned inverse (Bishop 2006, section 2.3.1) and the Schur-complement
        determinant :math:`|\Sigma| = |\Sigma_{oo}|\,|\Lambda_{mm}|^{-1}` give

        .. math::  d_o^\top \Sigma_{oo}^{-1} d_o = d^\top \Lambda d - g_m^\top \Lambda_{mm}^{-1} g_m,
                   \quad g = \Lambda d, \qquad
                   \log|\Sigma_{oo}| = \log|\Sigma| + \log|\Lambda_{mm}|,   \tag{ch02:schur}

        .. math::  \mathbb E[x_m \mid x_o, k] = \mu_m - \Lambda_{mm}^{-1} g_m
                   = \mu_m + \Sigma_{mo}\Sigma_{oo}^{-1}(x_o - \mu_o), \qquad
                   \operatorname{Cov}[x_m \mid x_o, k] = \Lambda_{mm}^{-1}
                   = \Sigma_{mm} - \Sigma_{mo}\Sigma_{oo}^{-1}\Sigma_{om}.   \tag{ch02:cond-gauss}

        So only the missing block :math:`\Lambda_{mm}` is factorised, once per
        (example, component), by one batched Cholesky of ``(K, b, M, M)``
        matrices; rows are grouped by their number ``M`` of missing entries, so
        no padding is needed. Writes into ``log_joint`` ``(B, K)``, ``xhat``
        ``(K, B, D)`` and ``csum`` ``(K, D*D)`` in place.
        """
        k, b, d = g.shape
        m = idx.shape[1]
        flat = (idx[:, :, None] * d + idx[:, None, :]).reshape(-1)  # (b*M*M,) positions in a (D, D) matrix
        a = prec.reshape(k, d * d).index_select(1, flat).view(k, b, m, m)  # (K, b, M, M): Lambda_k[m_n, m_n]
        gm = torch.gather(g, 2, idx.expand(k, b, m))  # (K, b, M): Lambda_mo d_o
        r_chol, info = torch.linalg.cholesky_ex(a)  # (K, b, M, M)
        if bool((info != 0).any()):
            raise ValueError(
                "a block of a precision matrix is numerically singular; increase reg_covar or use float64"
            )
        v = torch.linalg.solve_triangular(r_chol, gm[..., None], upper=False)  # (K, b, M, 1)
        if level >= 1:
            w = torch.linalg.solve_triangular(r_chol.mT, v, upper=True)[..., 0]  # (K, b, M): Lambda_mm^{-1} g_m
        if level >= 2:
            cov_m = torch.cholesky_inverse(r_chol)  # (K, b, M, M): Cov[x_m | x_o, k]
        quad_o = quad - v.square().sum((-2, -1))  # (K, b)
        logdet_o = logdet[:, None] + 2.0 * torch.log(torch.diagonal(r_chol, dim1=-2, dim2=-1)).sum(-1)  # (K, b)
        lj = (log_w[:, None] - 0.5 * ((d - m) * LOG_2PI + logdet_o + quad_o)).mT  # (b, K)
        log_joint[sel] = lj
        if level >= 1:
            pos = (sel[:, None] * d + idx).reshape(-1)  # (b*M,) positions in a flattened (B, D) row block
            xhat.view(k, -1).index_add_(1, pos, w.reshape(k, -1), alpha=-1.0)
        if level >= 2:
            resp = torch.softmax(lj, 1)  # (b, K)
            csum.index_add_(1, flat, (cov_m * resp.mT[:, :, None, None]).reshape(k, -1))

    # -- public densities -------------------------------------------------------

    def log_joint(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        r"""Per-component joint log densities, ``(B, K)``.

        .. math::  \ell_{nk} = \log \pi_k + \log \mathcal N(x_{n,o} \mid \mu_{k,o}, \Sigma_{k,oo}).
                   \tag{ch02:log-joint}

        ``x``: ``(B, D)``; ``observed``: bool ``(B, D)`` or ``None`` (all observed).
        """
        o = self._check_x(x, observed)
        return self._e_step(x, o, 0)[0]

    def log_prob(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        r"""Log density of the observed entries :eq:`ch02:marginal`, ``(B,)`` in nats.

        .. math::  \log p(x_{n,o}) = \operatorname{logsumexp}_k\, \ell_{nk}.   \tag{ch02:log-lik}
        """
        return torch.logsumexp(self.log_joint(x, observed), 1)

    def responsibilities(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        r"""E-step: posterior component probabilities, ``(B, K)``, rows summing to 1.

        .. math::  r_{nk} = p(z_n = k \mid x_{n,o}) = \exp\big(\ell_{nk} - \operatorname{logsumexp}_j \ell_{nj}\big).
                   \tag{ch02:resp}
        """
        return torch.softmax(self.log_joint(x, observed), 1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the mean log-likelihood of complete data, a scalar."""
        return -self.log_prob(x).mean()

    # -- EM ---------------------------------------------------------------------

    @torch.no_grad()
    def em_step(self, x: torch.Tensor, observed: torch.Tensor | None = None, reg_covar: float = 1e-6) -> float:
        r"""One E-step and one M-step, in place; returns the mean log-likelihood *before* the step.

        E-step: responsibilities :eq:`ch02:resp` and, for missing entries, the
        conditional means :math:`\hat x_{nk} = \mathbb E[x_n \mid x_{n,o}, k]` and
        covariances :math:`C_{nk} = \operatorname{Cov}[x_n \mid x_{n,o}, k]`
        (zero on observed coordinates) of :eq:`ch02:cond-gauss`. M-step with the
        expected sufficient statistics (Ghahramani & Jordan 1994; with nothing
        missing, :math:`\hat x_{nk} = x_n`, :math:`C_{nk} = 0` and this is Bishop
        2006, section 9.2.2):

        .. math::  N_k = \sum_n r_{nk}, \quad \pi_k = \frac{N_k}{N}, \quad
                   \mu_k = \frac1{N_k} \sum_n r_{nk} \hat x_{nk},   \tag{ch02:mstep}

        .. math::  \Sigma_k = \frac1{N_k} \sum_n r_{nk} \big[(\hat x_{nk} - \mu_k)(\hat x_{nk} - \mu_k)^\top
                   + C_{nk}\big] + \epsilon I.   \tag{ch02:mstep-cov}

        :math:`\epsilon` = ``reg_covar`` is added to the diagonal as scikit-learn's
        ``GaussianMixture`` does (and, like it, :math:`10\,\varepsilon_{\text{mach}}`
        is added to :math:`N_k` so an empty component does not divide by zero),
        so a step matches scikit-learn's from the same parameters. With
        ``reg_covar = 0`` the step cannot lower the log-likelihood (Dempster et
        al. 1977); a positive ``reg_covar`` is a slight departure from exact EM.

        ``x``: ``(B, D)`` with ``B >= 1``; ``observed``: bool ``(B, D)`` or ``None``.
        """
        o = self._check_x(x, observed)
        _check_reg(reg_covar)
        if x.shape[0] == 0:
            raise ValueError("x must have at least one row for an EM step")
        return self._em_step(x, o, reg_covar)

    def _em_step(self, x, o, reg_covar) -> float:
        log_joint, xhat, csum = self._e_step(x, o, 2)  # (B, K), (K, B, D) | None, ...
        log_norm = torch.logsumexp(log_joint, 1)  # (B,)
        resp = torch.exp(log_joint - log_norm[:, None])  # (B, K)
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # (K,)
        if xhat is None:
            means = resp.mT @ x / nk[:, None]  # (K, D)
            diff = x[None] - means[:, None]  # (K, B, D)
        else:
            means = (resp.mT[:, None, :] @ xhat)[:, 0] / nk[:, None]  # (K, D)
            diff = xhat - means[:, None]  # (K, B, D)
        if self.covariance_type == "full":
            w = diff.mul_(resp.mT.sqrt()[:, :, None])  # (K, B, D): sqrt(r_nk) (x_n - mu_k), in place
            scatter = w.mT @ w  # (K, D, D): sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
            scatter = 0.5 * (scatter + scatter.mT)
            if csum is not None:
                scatter = scatter + csum
            covs = scatter / nk[:, None, None]
            covs.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
        else:
            scatter = (diff.square() * resp.mT[:, :, None]).sum(1)  # (K, D)
            if csum is not None:
                scatter = scatter + csum
            covs = scatter / nk[:, None] + reg_covar
        self.weights = nk / nk.sum()
        self.means = means
        self.covariances = covs
        return float(log_norm.mean())

    def fit(
        self,
        x: torch.Tensor,
        observed: torch.Tensor | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        reg_covar: float = 1e-6,
        progress: bool = False,
        desc: str | None = None,
    ) -> list[float]:
        r"""Run EM until the mean log-likelihood rises by less than ``tol``.

        Returns the mean log-likelihoods per example (nats): entry 0 at the
        initial parameters, entry ``i`` after ``i`` steps, the last one at the
        parameters the model holds on return (one E-step more than the steps
        taken). EM never lowers it (Dempster et al. 1977; exactly so with
        ``reg_covar = 0``, see :meth:`em_step`).

        Stops after ``max_iter`` steps, or once a step has raised the mean
        log-likelihood by less than ``tol``. That rise is known only at the
        E-step of the following step, so the model then holds the parameters
        one step later, and the list ends with two small rises. A negative
        ``tol`` runs all ``max_iter`` steps. ``progress`` shows a text bar on
        stdout; ``desc`` labels it.
        """
        o = self._check_x(x, observed)
        check_int(max_iter, "max_iter", minimum=0)
        _check_reg(reg_covar)
        if not isinstance(tol, (int, float)) or math.isnan(tol):
            raise ValueError(f"tol must be a number, got {tol!r}")
        if x.shape[0] == 0:
            raise ValueError("x must have at least one row to fit")
        history: list[float] = []
        bar = progress_bar(max_iter, desc or "EM", progress)
        with torch.no_grad():
            for _ in bar:
                history.append(self._em_step(x, o, reg_covar))  # log-likelihood before this step
                bar.set_postfix({"loglik": f"{history[-1]:.6g}"}, refresh=False)
                if len(history) >= 2 and history[-1] - history[-2] < tol:
                    break
            bar.close()
            history.append(float(torch.logsumexp(self._e_step(x, o, 0)[0], 1).mean()))
        return history

    # -- imputation and sampling -------------------------------------------------

    @torch.no_grad()
    def impute(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        r"""Conditional-mean imputation of the missing entries, ``(B, D)``.

        .. math::  \mathbb E[x_m \mid x_o] = \sum_k r_k(x_o)\,
                   \big(\mu_{k,m} + \Sigma_{k,mo}\Sigma_{k,oo}^{-1}(x_o - \mu_{k,o})\big),
                   \tag{ch02:impute}

        the posterior-weighted conditional means :eq:`ch02:cond-gauss` of the
        components (Ghahramani & Jordan 1994). Observed entries are returned
        unchanged (bitwise); missing ones of ``x`` may hold anything, NaN included.
        """
        if observed is None:
            raise ValueError("observed is required: a bool (B, D) mask, True where x is observed")
        o = self._check_x(x, observed)
        log_joint, xhat, _ = self._e_step(x, o, 1)  # xhat: (K, B, D), observed entries are x's
        resp = torch.softmax(log_joint, 1)  # (B, K)
        filled = (resp.mT[:, :, None] * xhat).sum(0)  # (B, D)
        return torch.where(o, x, filled)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` draws, ``(n, D)``: :math:`z \sim \operatorname{Cat}(\pi)`, then
        :math:`x = \mu_z + L_z \varepsilon` with :math:`L_z L_z^\top = \Sigma_z`,
        :math:`\varepsilon \sim \mathcal N(0, I)`.

        ``generator`` (optional, an addition to the book's API) must live on the
        model's device.
        """
        check_int(n, "the number of samples n")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        if self.covariance_type == "diag":
            return self.means[comp] + self.covariances[comp].sqrt() * eps
        chol = self._cholesky()  # (K, D, D)
        out = self.means[comp].clone()  # (n, D)
        for k in range(self.n_components):  # a loop over components, not examples
            sel = comp == k
            out[sel] += eps[sel] @ chol[k].mT
        return out


def _check_reg(reg_covar) -> None:
    if not isinstance(reg_covar, (int, float)) or isinstance(reg_covar, bool) or not reg_covar >= 0:
        raise ValueError(f"reg_covar must be a non-negative number, got {reg_covar!r}")


def _check_observed(x: torch.Tensor, observed, name: str = "x") -> torch.Tensor | None:
    """Validate a mask for ``x``; return it on ``x``'s device (``None`` stays ``None``)."""
    if observed is None:
        return None
    if not isinstance(observed, torch.Tensor):
        raise ValueError(f"observed must be a bool torch.Tensor, got {type(observed).__name__}")
    if observed.dtype != torch.bool:
        raise ValueError(f"observed must have dtype torch.bool (True where {name} is observed), got {observed.dtype}")
    if observed.shape != x.shape:
        raise ValueError(f"observed has shape {tuple(observed.shape)} but {name} has shape {tuple(x.shape)}")
    observed = observed.to(x.device)
    if not bool(torch.isfinite(torch.where(observed, x, 0.0)).all()):
        raise ValueError(f"{name} has NaN or infinite values at observed entries")
    return observed
