r"""Chapter 3: hidden Markov models, in log space and batched over sequences.

A hidden Markov model (HMM) over a sequence :math:`x_{1:T}` has a discrete
state :math:`z_t \in \{1,\dots,K\}` at each time step and the joint density

.. math::  p(z_{1:T}, x_{1:T}) = \pi_{z_1}\, p(x_1\mid z_1)
           \prod_{t=2}^{T} A_{z_{t-1} z_t}\, p(x_t\mid z_t)
           \tag{ch03:hmm-joint}

with initial distribution :math:`\pi`, a transition matrix :math:`A` whose row
:math:`i` is :math:`p(z_t\mid z_{t-1}=i)`, and emission densities
:math:`p(x_t\mid z_t)` (Rabiner 1989; Bishop 2006, ch. 13).

The module has two layers:

- a **functional core** (:func:`forward`, :func:`backward`,
  :func:`posterior_marginals`, :func:`viterbi`) that takes precomputed emission
  log-likelihoods ``log_emission[b, t, k]`` :math:`= \log p(x_{b,t}\mid z_t=k)`,
  so it serves any emission model;
- :class:`GaussianHMM`, an HMM with diagonal Gaussian emissions, fitted by
  Baum-Welch (EM; Baum et al. 1970).

Conventions
-----------
- Shapes: ``B`` sequences, ``T`` time steps, ``K`` states, ``D`` observed
  dimensions. Everything is batched over ``B``; the only Python loop is over time.
- Everything is in **log space**: products of probabilities become sums and sums
  become ``torch.logsumexp``, so a sequence of any length neither underflows nor
  needs rescaling (Rabiner's scaling factors are not needed).
- ``log_transition[i, j]`` :math:`= \log A_{ij} = \log p(z_t=j\mid z_{t-1}=i)`:
  rows are the *from* state. Structural zeros (``-inf``) are allowed.
- Log-likelihoods are per sequence, in nats, never averaged; ``fit`` reports
  the mean over sequences.

Equation labels (``ch03:...``) refer to Chapter 3 of the book.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_int, check_sequences, check_tensor
from ._progress import progress_bar
from .mixture import kmeans_plus_plus

__all__ = ["forward", "backward", "posterior_marginals", "viterbi", "GaussianHMM"]

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------


def _norm_atol(dtype: torch.dtype) -> float:
    """How far a normalisation may be from 1 before we call it a mistake."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def _check_log_probs(t, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of log probabilities: ``-inf`` allowed (a zero probability), NaN and ``+inf`` not."""
    check_tensor(t, name, allow_nan=True)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
        raise ValueError(f"{name} contains NaN or +inf values")
    return t


def _check_emission(log_emission) -> torch.Tensor:
    check_tensor(log_emission, "log_emission", allow_nan=True)
    if log_emission.dim() != 3:
        raise ValueError(f"log_emission must have shape (B, T, K), got {tuple(log_emission.shape)}")
    B, T, K = log_emission.shape
    if B < 1 or K < 1:
        raise ValueError(f"log_emission must have B >= 1 sequences and K >= 1 states, got shape {(B, T, K)}")
    if T < 1:
        raise ValueError("log_emission has T = 0 time steps; a sequence needs T >= 1")
    if bool(torch.isnan(log_emission).any()) or bool((log_emission == math.inf).any()):
        raise ValueError("log_emission contains NaN or +inf values")
    return log_emission


def _check_normalised(log_p: torch.Tensor, name: str, what: str) -> None:
    total = torch.logsumexp(log_p, dim=-1).exp()
    worst = float((total - 1).abs().max())
    if worst > _norm_atol(log_p.dtype):
        raise ValueError(f"{name} is not {what}: exp({name}) must sum to 1 along its last dimension "
                         f"(largest deviation {worst:.3g})")


def _check_core(log_initial, log_transition, log_emission, need_initial: bool = True):
    """Validate the functional core's arguments; return them on log_emission's device and dtype."""
    log_emission = _check_emission(log_emission)
    K = log_emission.shape[-1]
    like = dict(device=log_emission.device, dtype=log_emission.dtype)
    log_transition = _check_log_probs(log_transition, "log_transition", (K, K)).to(**like)
    _check_normalised(log_transition, "log_transition", "row-stochastic (each row a distribution over next states)")
    if need_initial:
        log_initial = _check_log_probs(log_initial, "log_initial", (K,)).to(**like)
        _check_normalised(log_initial, "log_initial", "a probability vector")
    return log_initial, log_transition, log_emission


# ----------------------------------------------------------------------------
# Functional core: recursions on emission log-likelihoods
# ----------------------------------------------------------------------------


def _forward(log_initial, log_transition, log_emission):
    B, T, K = log_emission.shape
    log_alpha = log_emission.new_empty(B, T, K)  # (B, T, K)
    log_alpha[:, 0] = log_initial + log_emission[:, 0]
    for t in range(1, T):
        # (B, K, 1) + (K, K) -> (B, K_from, K_to), sum out the "from" state
        log_alpha[:, t] = torch.logsumexp(log_alpha[:, t - 1, :, None] + log_transition, dim=1) + log_emission[:, t]
    return log_alpha, torch.logsumexp(log_alpha[:, -1], dim=-1)  # (B, T, K), (B,)


def _backward(log_transition, log_emission):
    B, T, K = log_emission.shape
    log_beta = log_emission.new_zeros(B, T, K)  # (B, T, K); beta_T = 1
    for t in range(T - 2, -1, -1):
        nxt = (log_emission[:, t + 1] + log_beta[:, t + 1])[:, None, :]  # (B, 1, K_to)
        log_beta[:, t] = torch.logsumexp(log_transition + nxt, dim=-1)  # (B, K_from)
    return log_beta


def forward(log_initial: torch.Tensor, log_transition: torch.Tensor, log_emission: torch.Tensor):
    r"""The forward recursion in log space (Rabiner 1989, eqs. 19-21; Bishop 2006, eq. 13.36).

    With :math:`\alpha_t(k) = p(x_{1:t}, z_t = k)`,

    .. math::  \log\alpha_1(k) = \log\pi_k + \log p(x_1\mid k), \qquad
               \log\alpha_t(k) = \log p(x_t\mid k) + \operatorname{logsumexp}_j
               \big[\log\alpha_{t-1}(j) + \log A_{jk}\big],   \tag{ch03:forward}

    and the log-likelihood :math:`\log p(x_{1:T}) = \operatorname{logsumexp}_k \log\alpha_T(k)`
    (ch03:hmm-loglik).

    ``log_initial``: ``(K,)``; ``log_transition``: ``(K, K)``, rows = from;
    ``log_emission``: ``(B, T, K)``. Returns ``(log_alpha (B, T, K), log_likelihood (B,))``.
    Raises ``ValueError`` for wrong shapes, integer dtypes, ``T < 1`` or
    parameters that are not (log) probability distributions.
    """
    log_initial, log_transition, log_emission = _check_core(log_initial, log_transition, log_emission)
    return _forward(log_initial, log_transition, log_emission)


def backward(log_transition: torch.Tensor, log_emission: torch.Tensor) -> torch.Tensor:
    r"""The backward recursion in log space (Rabiner 1989, eqs. 23-25; Bishop 2006, eq. 13.38).

    With :math:`\beta_t(k) = p(x_{t+1:T}\mid z_t = k)`,

    .. math::  \log\beta_T(k) = 0, \qquad
               \log\beta_t(j) = \operatorname{logsumexp}_k \big[\log A_{jk}
               + \log p(x_{t+1}\mid k) + \log\beta_{t+1}(k)\big].   \tag{ch03:backward}

    ``log_transition``: ``(K, K)``; ``log_emission``: ``(B, T, K)``. Returns
    ``log_beta`` ``(B, T, K)``. For every t, :math:`\operatorname{logsumexp}_k
    [\log\alpha_t(k) + \log\beta_t(k)] = \log p(x_{1:T})`.
    """
    _, log_transition, log_emission = _check_core(None, log_transition, log_emission, need_initial=False)
    return _backward(log_transition, log_emission)


def _posterior(log_initial, log_transition, log_emission):
    log_alpha, ll = _forward(log_initial, log_transition, log_emission)  # (B, T, K), (B,)
    log_beta = _backward(log_transition, log_emission)  # (B, T, K)
    gamma = torch.exp(log_alpha + log_beta - ll[:, None, None])  # (B, T, K)
    nxt = (log_emission[:, 1:] + log_beta[:, 1:])[:, :, None, :]  # (B, T-1, 1, K_to)
    log_xi = log_alpha[:, :-1, :, None] + log_transition + nxt - ll[:, None, None, None]  # (B, T-1, K, K)
    return gamma, torch.exp(log_xi), ll


def posterior_marginals(log_initial: torch.Tensor, log_transition: torch.Tensor, log_emission: torch.Tensor):
    r"""Single and pairwise posterior marginals by forward-backward (Baum et al. 1970; Rabiner 1989, eqs. 26-37).

    .. math::  \gamma_t(k) = p(z_t=k\mid x_{1:T}) = \frac{\alpha_t(k)\,\beta_t(k)}{p(x_{1:T})},
               \tag{ch03:gamma}

    .. math::  \xi_t(j, k) = p(z_t=j, z_{t+1}=k\mid x_{1:T})
               = \frac{\alpha_t(j)\,A_{jk}\,p(x_{t+1}\mid k)\,\beta_{t+1}(k)}{p(x_{1:T})},
               \tag{ch03:xi}

    computed in log space and exponentiated at the end. Returns
    ``(gamma (B, T, K), xi (B, T-1, K, K), log_likelihood (B,))``; each
    ``gamma[b, t]`` sums to 1 and ``xi[b, t].sum(-1) == gamma[b, t]``.
    """
    log_initial, log_transition, log_emission = _check_core(log_initial, log_transition, log_emission)
    return _posterior(log_initial, log_transition, log_emission)


def viterbi(log_initial: torch.Tensor, log_transition: torch.Tensor, log_emission: torch.Tensor):
    r"""The most probable state path, by dynamic programming (Viterbi 1967; Rabiner 1989, eqs. 30-35).

    .. math::  \delta_1(k) = \log\pi_k + \log p(x_1\mid k), \qquad
               \delta_t(k) = \log p(x_t\mid k) + \max_j\big[\delta_{t-1}(j) + \log A_{jk}\big],
               \tag{ch03:viterbi}

    with back-pointers :math:`\psi_t(k) = \arg\max_j[\delta_{t-1}(j) + \log A_{jk}]`;
    then :math:`z^*_T = \arg\max_k \delta_T(k)` and :math:`z^*_{t} = \psi_{t+1}(z^*_{t+1})`.

    Returns ``(path (B, T) long, log_prob (B,))`` where ``log_prob`` is the joint
    :math:`\log p(z^*_{1:T}, x_{1:T}) = \max_k \delta_T(k)`. Ties go to the lowest state index.
    """
    log_initial, log_transition, log_emission = _check_core(log_initial, log_transition, log_emission)
    B, T, K = log_emission.shape
    delta = log_initial + log_emission[:, 0]  # (B, K)
    pointers = []
    for t in range(1, T):
        best, arg = torch.max(delta[:, :, None] + log_transition, dim=1)  # (B, K_to) each
        pointers.append(arg)
        delta = best + log_emission[:, t]
    log_prob, last = torch.max(delta, dim=-1)  # (B,), (B,)
    path = last.new_empty(B, T)  # (B, T) long
    path[:, -1] = last
    for t in range(T - 2, -1, -1):
        path[:, t] = pointers[t].gather(1, path[:, t + 1 : t + 2]).squeeze(1)
    return path, log_prob


# ----------------------------------------------------------------------------
# HMM with diagonal Gaussian emissions
# ----------------------------------------------------------------------------


def _kmeans(x: torch.Tensor, k: int, generator: torch.Generator, n_iter: int = 20) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd iterations; returns labels ``(N,)``."""
    centers = kmeans_plus_plus(x, k, generator)  # (k, D)
    for _ in range(n_iter):
        labels = torch.cdist(x, centers).argmin(-1)  # (N,)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # (N, k)
        counts = onehot.sum(0)  # (k,)
        new = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        new = torch.where(counts[:, None] > 0, new, centers)  # an empty cluster keeps its centre
        if torch.equal(new, centers):
            break
        centers = new
    return torch.cdist(x, centers).argmin(-1)


class GaussianHMM(nn.Module):
    r"""An HMM whose emissions are diagonal Gaussians:

    .. math::  p(x_t\mid z_t = k) = \mathcal N\big(x_t \mid \mu_k, \operatorname{diag}\sigma_k^2\big).
               \tag{ch03:gauss-emission}

    Buffers (EM, not gradients): ``initial`` :math:`\pi` ``(K,)``, ``transition``
    :math:`A` ``(K, K)`` (rows = from), ``means`` ``(K, D)``, ``variances`` ``(K, D)``.
    Data ``x`` are ``(B, T, D)``: ``B`` sequences of a common length ``T``. The
    model computes in the dtype and on the device of ``means``; ``x`` is moved there.
    """

    def __init__(self, initial: torch.Tensor, transition: torch.Tensor, means: torch.Tensor, variances: torch.Tensor):
        super().__init__()
        check_tensor(means, "means")
        if means.dim() != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        like = dict(device=means.device, dtype=means.dtype)
        for name, t, shape in (("initial", initial, (K,)), ("transition", transition, (K, K)), ("variances", variances, (K, D))):
            check_tensor(t, name)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (K={K} states, D={D} dims), got {tuple(t.shape)}")
        initial, transition, variances = (t.to(**like) for t in (initial, transition, variances))
        atol = _norm_atol(means.dtype)
        if bool((initial < 0).any()) or abs(float(initial.sum()) - 1) > atol:
            raise ValueError("initial must be a probability vector: non-negative entries summing to 1")
        if bool((transition < 0).any()) or float((transition.sum(-1) - 1).abs().max()) > atol:
            raise ValueError("transition must be row-stochastic: non-negative entries, each row summing to 1")
        if bool((variances <= 0).any()):
            raise ValueError("variances must be positive")
        self.register_buffer("initial", initial.clone())
        self.register_buffer("transition", transition.clone())
        self.register_buffer("means", means.clone())
        self.register_buffer("variances", variances.clone())

    @property
    def n_states(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _check_x(self, x) -> torch.Tensor:
        check_sequences(x, "x", self.dim, "D")
        return x.to(device=self.means.device, dtype=self.means.dtype)

    @classmethod
    def from_data(cls, x: torch.Tensor, n_states: int, seed: int = 0, *, min_variance: float = 1e-6) -> "GaussianHMM":
        """An initial model for Baum-Welch, from k-means on all frames of ``x`` ``(B, T, D)``.

        k-means++ seeding under ``torch.Generator().manual_seed(seed)`` followed by
        Lloyd iterations gives a state label per frame; each state's mean and
        variance are those of its cluster (floored at ``min_variance``; an empty
        cluster gets the data variance), and ``initial`` and ``transition`` are the
        label frequencies at t = 1 and of consecutive label pairs, plus one
        pseudo-count each so that no probability starts at zero.
        """
        check_int(n_states, "n_states")
        check_tensor(x, "x")
        if x.dim() != 3 or min(x.shape) < 1:
            raise ValueError(f"x must have shape (B, T, D) with every size >= 1, got {tuple(x.shape)}")
        B, T, D = x.shape
        if n_states > B * T:
            raise ValueError(f"n_states={n_states} exceeds the number of frames B*T={B * T}")
        gen = torch.Generator().manual_seed(seed)
        frames = x.reshape(B * T, D)  # (N, D)
        labels = _kmeans(frames, n_states, gen)  # (N,)
        onehot = torch.nn.functional.one_hot(labels, n_states).to(x.dtype)  # (N, K)
        counts = onehot.sum(0)  # (K,)
        means = (onehot.T @ frames) / counts.clamp_min(1)[:, None]  # (K, D)
        sq = (onehot.T @ frames**2) / counts.clamp_min(1)[:, None] - means**2
        variances = torch.where(counts[:, None] > 1, sq, frames.var(0, unbiased=False)).clamp_min(min_variance)
        lab = labels.reshape(B, T)
        initial = torch.bincount(lab[:, 0], minlength=n_states).to(x.dtype) + 1.0  # (K,)
        pairs = lab[:, :-1] * n_states + lab[:, 1:]  # (B, T-1) flattened (from, to)
        trans = torch.bincount(pairs.reshape(-1), minlength=n_states * n_states).to(x.dtype).reshape(n_states, n_states) + 1.0
        return cls(initial / initial.sum(), trans / trans.sum(-1, keepdim=True), means, variances)

    # --- inference -------------------------------------------------------------------

    def _log_emission(self, x: torch.Tensor) -> torch.Tensor:
        diff = x[:, :, None, :] - self.means  # (B, T, K, D)
        return -0.5 * (LOG_2PI + torch.log(self.variances) + diff**2 / self.variances).sum(-1)  # (B, T, K)

    def _log_params(self):
        return torch.log(self.initial), torch.log(self.transition)

    def log_emission(self, x: torch.Tensor) -> torch.Tensor:
        r"""``log_emission[b, t, k]`` :math:`= \log\mathcal N(x_{bt}\mid\mu_k, \operatorname{diag}\sigma^2_k)`
        (ch03:gauss-emission), shape ``(B, T, K)``."""
        return self._log_emission(self._check_x(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_{1:T})` of each sequence by the forward recursion (ch03:forward), shape ``(B,)``."""
        x = self._check_x(x)
        return _forward(*self._log_params(), self._log_emission(x))[1]

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        r"""The smoothed state marginals :math:`\gamma_t(k) = p(z_t = k\mid x_{1:T})` (ch03:gamma), ``(B, T, K)``."""
        x = self._check_x(x)
        return _posterior(*self._log_params(), self._log_emission(x))[0]

    def viterbi(self, x: torch.Tensor):
        """The most probable state path and its joint log probability (ch03:viterbi): ``(path (B, T), log_prob (B,))``."""
        x = self._check_x(x)
        return viterbi(*self._log_params(), self._log_emission(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the mean log-likelihood per sequence (a scalar)."""
        return -self.log_prob(x).mean()

    # --- learning ----------------------------------------------------------------------

    def _e_step(self, x: torch.Tensor):
        return _posterior(*self._log_params(), self._log_emission(x))

    @torch.no_grad()
    def _m_step(self, x: torch.Tensor, gamma: torch.Tensor, xi: torch.Tensor, min_variance: float) -> None:
        tiny = torch.finfo(x.dtype).tiny
        self.initial.copy_(gamma[:, 0].mean(0))
        if x.shape[1] > 1:
            num = xi.sum((0, 1))  # (K, K) expected transition counts
            den = num.sum(-1, keepdim=True)  # (K, 1) expected visits to each "from" state
            self.transition.copy_(torch.where(den > tiny, num / den.clamp_min(tiny), self.transition))
        occ = gamma.sum((0, 1))[:, None]  # (K, 1)
        seen = occ > tiny
        means = torch.einsum("btk,btd->kd", gamma, x) / occ.clamp_min(tiny)  # (K, D)
        diff2 = (x[:, :, None, :] - means) ** 2  # (B, T, K, D)
        var = torch.einsum("btk,btkd->kd", gamma, diff2) / occ.clamp_min(tiny)
        self.means.copy_(torch.where(seen, means, self.means))
        self.variances.copy_(torch.where(seen, var.clamp_min(min_variance), self.variances))

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        max_iter: int = 100,
        tol: float = 1e-6,
        progress: bool = False,
        desc: str | None = None,
        *,
        min_variance: float = 1e-6,
    ) -> list[float]:
        r"""Baum-Welch (EM) in place (Baum et al. 1970; Rabiner 1989, eqs. 40a-c; Bishop 2006, eqs. 13.18-13.21).

        E-step: :math:`\gamma`, :math:`\xi` by forward-backward (ch03:gamma, ch03:xi). M-step:

        .. math::  \pi_k = \frac1B\sum_b \gamma_{b1}(k), \qquad
                   A_{jk} = \frac{\sum_{b,t} \xi_{bt}(j,k)}{\sum_{b,t}\sum_{k'} \xi_{bt}(j,k')},
                   \qquad \mu_k = \frac{\sum_{b,t}\gamma_{bt}(k)\,x_{bt}}{\sum_{b,t}\gamma_{bt}(k)},
                   \qquad \sigma^2_{kd} = \frac{\sum_{b,t}\gamma_{bt}(k)(x_{btd}-\mu_{kd})^2}{\sum_{b,t}\gamma_{bt}(k)}.
                   \tag{ch03:baum-welch}

        Variances are floored at ``min_variance`` (the constrained maximiser, so
        the likelihood still never decreases); a state that receives no
        posterior mass keeps its parameters. Returns the mean log-likelihood per
        sequence (nats): entry 0 at the initial parameters, entry ``i`` after
        ``i`` steps; non-decreasing. Stops after ``max_iter`` steps or when the
        rise is below ``tol``. ``progress`` shows a text bar on stdout.
        """
        x = self._check_x(x)
        check_int(max_iter, "max_iter", 0)
        if not min_variance > 0:
            raise ValueError(f"min_variance must be positive, got {min_variance!r}")
        gamma, xi, ll = self._e_step(x)
        history = [float(ll.mean())]
        bar = progress_bar(max_iter, desc or "Baum-Welch", progress)
        for _ in bar:
            self._m_step(x, gamma, xi, min_variance)
            gamma, xi, ll = self._e_step(x)
            history.append(float(ll.mean()))
            bar.set_postfix({"loglik": f"{history[-1]:.6g}"}, refresh=False)
            if history[-1] - history[-2] < tol:
                break
        bar.close()
        return history

    # --- sampling ----------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, T: int, generator: torch.Generator | None = None):
        r"""Ancestral sampling from (ch03:hmm-joint): ``(states (n, T) long, x (n, T, D))``.

        States are drawn by inverting the cumulative distribution of
        :math:`\pi` and of the rows of :math:`A` at uniform draws. ``generator``
        (optional) must live on the model's device.
        """
        check_int(n, "n")
        check_int(T, "T")
        like = dict(device=self.means.device, dtype=self.means.dtype)
        u = torch.rand(n, T, generator=generator, **like)  # (n, T)
        eps = torch.randn(n, T, self.dim, generator=generator, **like)  # (n, T, D)
        K = self.n_states

        def draw(probs, ut):  # probs (n, K), ut (n,) -> (n,) index of the first cdf entry above u
            return (torch.cumsum(probs, -1) <= ut[:, None]).sum(-1).clamp_max(K - 1)

        states = torch.empty(n, T, dtype=torch.long, device=self.means.device)  # (n, T)
        states[:, 0] = draw(self.initial.expand(n, K), u[:, 0])
        for t in range(1, T):
            states[:, t] = draw(self.transition[states[:, t - 1]], u[:, t])
        x = self.means[states] + torch.sqrt(self.variances[states]) * eps  # (n, T, D)
        return states, x
