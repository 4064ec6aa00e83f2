r"""Chapter 4: restricted Boltzmann machines with binary units.

A Boltzmann machine (Hinton & Sejnowski 1986) is an energy-based model: a
density proportional to :math:`\exp(-E)`. The *restricted* Boltzmann machine
(Smolensky 1986, "harmonium"; Hinton 2002) has a layer of :math:`D` binary
visible units :math:`v` and a layer of :math:`H` binary hidden units :math:`h`,
with connections only *between* the layers:

.. math::  E(v, h) = -v^\top W h - b^\top v - c^\top h, \qquad
           p(v, h) = \frac{e^{-E(v, h)}}{Z}, \qquad
           Z = \sum_{v, h} e^{-E(v, h)}.          \tag{ch04:energy}

Because no two units of one layer interact, both conditionals factorise:

.. math::  p(h_j = 1 \mid v) = \sigma\big(c_j + v^\top W_{:j}\big), \qquad
           p(v_i = 1 \mid h) = \sigma\big(b_i + W_{i:} h\big),   \tag{ch04:conditionals}

and the hidden layer can be summed out in closed form, giving the free energy

.. math::  F(v) = -\log \sum_h e^{-E(v, h)}
                = -b^\top v - \sum_{j=1}^H \operatorname{softplus}\big(c_j + v^\top W_{:j}\big),
           \qquad p(v) = \frac{e^{-F(v)}}{Z}.          \tag{ch04:free-energy}

**Learning.** The gradient of the log-likelihood is a data term minus a model term,

.. math::  -\nabla_\theta \log p(v) = \nabla_\theta F(v)
            - \mathbb E_{p(v')}\big[\nabla_\theta F(v')\big].      \tag{ch04:grad}

The model expectation is intractable; contrastive divergence (CD-k; Hinton
2002) replaces it by samples after :math:`k` steps of block Gibbs sampling
started at the data, persistent CD (PCD; Tieleman 2008) by samples of Markov
chains that are kept from one parameter update to the next. :meth:`BernoulliRBM.loss`
returns the surrogate

.. math::  \mathcal L = \frac1B \sum_{n} F(v_n) - \frac1M \sum_{m} F(\tilde v_m),
           \qquad \tilde v_m \text{ detached},        \tag{ch04:cd-surrogate}

whose gradient is exactly the CD-k / PCD estimate of (ch04:grad), so the
generic loop :func:`gmlib.train.train` trains an RBM like any other model
(its ``weight_decay`` is the usual L2 penalty). The *value* of the surrogate is
not the negative log-likelihood; neither is :meth:`BernoulliRBM.reconstruction_error`.

**Evaluation.** :math:`\log Z` is computed exactly by enumerating the smaller
layer (:meth:`BernoulliRBM.log_partition_exact`, :math:`2^{\min(D, H)}` terms)
and otherwise estimated by annealed importance sampling (AIS; Neal 2001;
Salakhutdinov & Murray 2008, :meth:`BernoulliRBM.ais_log_partition`).

Conventions
-----------
- ``v``: ``(B, D)``, ``h``: ``(B, H)``, floating point (integer tensors are
  refused: convert explicitly). Parameters: ``W`` ``(D, H)``, ``b`` ``(D,)``
  (visible bias), ``c`` ``(H,)`` (hidden bias).
- Energies, free energies and conditionals accept entries anywhere in
  :math:`[0, 1]` (probabilities, e.g. grey-level pixels used as mean-field
  inputs, as is common practice when training); :meth:`BernoulliRBM.log_prob`
  is a probability mass only on binary vectors and refuses anything else.
- Every sampling method takes an optional ``generator`` living on the model's
  device; without one the global torch RNG is used (seeded by ``train``).
- Results are per example, in nats, never averaged.

Equation labels (``ch04:...``) refer to Chapter 4 of the book.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as nnf

from ._checks import check_int, check_tensor

__all__ = ["RBMConfig", "BernoulliRBM", "MAX_EXACT_BITS"]

#: :meth:`BernoulliRBM.log_partition_exact` refuses to enumerate more than 2**MAX_EXACT_BITS states.
MAX_EXACT_BITS = 22
#: :meth:`BernoulliRBM.log_prob` uses the exact log Z up to 2**_AUTO_EXACT_BITS states, AIS above.
_AUTO_EXACT_BITS = 20
#: Enumerated states are processed in chunks of this many rows (bounded memory).
_CHUNK = 2**15


@dataclass
class RBMConfig:
    """Settings of a :class:`BernoulliRBM`."""

    n_visible: int  # D, number of visible units
    n_hidden: int  # H, number of hidden units
    cd_k: int = 1  # Gibbs steps per negative sample in loss() (the k of CD-k / PCD-k)
    persistent: bool = False  # False: CD-k (chains start at the data); True: PCD (chains persist)
    n_chains: int = 100  # number of persistent chains (PCD only)
    init_std: float = 0.01  # W ~ N(0, init_std^2) at construction; b = c = 0 (Hinton 2010)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return nnf.softplus(x)


class BernoulliRBM(nn.Module):
    r"""A binary-binary RBM :eq:`ch04:energy` trained by CD-k or PCD.

    Parameters
    ----------
    n_visible, n_hidden: :math:`D` and :math:`H`.
    cd_k: Gibbs steps per parameter update (CD-k, or PCD-k when ``persistent``).
    persistent: keep ``n_chains`` Markov chains across calls of :meth:`loss` (PCD).
    n_chains: number of persistent chains.
    init_std: standard deviation of the initial weights.
    generator: optional CPU generator for the initial weights.
    config: an :class:`RBMConfig` to build from instead of the keyword arguments.

    ``model.config`` holds the settings. ``model.persistent_chains`` (``(n_chains, D)``
    or ``None`` before the first PCD update) is a non-persistent buffer: it follows
    ``model.to(...)`` but is not saved in the ``state_dict``.
    """

    def __init__(
        self,
        n_visible: int | None = None,
        n_hidden: int | None = None,
        *,
        cd_k: int = 1,
        persistent: bool = False,
        n_chains: int = 100,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        config: RBMConfig | None = None,
    ):
        super().__init__()
        if config is None:
            config = RBMConfig(n_visible, n_hidden, cd_k, persistent, n_chains, init_std)
        check_int(config.n_visible, "n_visible")
        check_int(config.n_hidden, "n_hidden")
        check_int(config.cd_k, "cd_k")
        check_int(config.n_chains, "n_chains")
        if not isinstance(config.persistent, bool):
            raise ValueError(f"persistent must be a bool, got {config.persistent!r}")
        if not (isinstance(config.init_std, (int, float)) and config.init_std >= 0):
            raise ValueError(f"init_std must be a non-negative number, got {config.init_std!r}")
        self.config = config
        D, H = config.n_visible, config.n_hidden
        self.W = nn.Parameter(config.init_std * torch.randn(D, H, generator=generator))  # (D, H)
        self.b = nn.Parameter(torch.zeros(D))  # (D,) visible bias
        self.c = nn.Parameter(torch.zeros(H))  # (H,) hidden bias
        self.register_buffer("persistent_chains", None, persistent=False)  # (n_chains, D) once used

    @classmethod
    def from_parameters(cls, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, **kwargs) -> "BernoulliRBM":
        """An RBM with the given ``W (D, H)``, ``b (D,)``, ``c (H,)`` (copied; dtype and device kept)."""
        check_tensor(W, "W")
        check_tensor(b, "b")
        check_tensor(c, "c")
        if W.dim() != 2 or b.shape != (W.shape[0],) or c.shape != (W.shape[1],):
            raise ValueError(
                f"need W (D, H), b (D,), c (H,); got {tuple(W.shape)}, {tuple(b.shape)}, {tuple(c.shape)}"
            )
        kwargs.setdefault("init_std", 0.0)
        model = cls(W.shape[0], W.shape[1], **kwargs).to(device=W.device, dtype=W.dtype)
        with torch.no_grad():
            model.W.copy_(W)
            model.b.copy_(b)
            model.c.copy_(c)
        return model

    @property
    def n_visible(self) -> int:
        return self.config.n_visible

    @property
    def n_hidden(self) -> int:
        return self.config.n_hidden

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())

    # -- validation -------------------------------------------------------------------

    def _check_units(self, x, name: str, size: int, layer: str, binary: bool = False) -> torch.Tensor:
        check_tensor(x, name)
        if x.dim() != 2 or x.shape[1] != size:
            raise ValueError(f"{name} must have shape (B, {size}) ({layer} units), got {tuple(x.shape)}")
        if binary:
            if bool(((x != 0) & (x != 1)).any()):
                raise ValueError(f"{name} must be binary (entries 0 or 1) for a probability mass")
        elif bool(((x < 0) | (x > 1)).any()):
            raise ValueError(f"{name} must have entries in [0, 1]")
        return x.to(self.W.dtype)

    def _v(self, v, name: str = "v", binary: bool = False) -> torch.Tensor:
        return self._check_units(v, name, self.n_visible, "visible", binary)

    def _h(self, h, name: str = "h") -> torch.Tensor:
        return self._check_units(h, name, self.n_hidden, "hidden")

    # -- energy and conditionals --------------------------------------------------------

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r"""Energy :eq:`ch04:energy` of each pair, ``(B,)``: :math:`-v^\top W h - b^\top v - c^\top h`."""
        v, h = self._v(v), self._h(h)
        if v.shape[0] != h.shape[0]:
            raise ValueError(f"v and h must have the same batch size, got {v.shape[0]} and {h.shape[0]}")
        return -((v @ self.W) * h).sum(-1) - v @ self.b - h @ self.c  # (B,)

    def _free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -(v @ self.b) - _softplus(v @ self.W + self.c).sum(-1)  # (B,)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        r"""Free energy :eq:`ch04:free-energy`, ``(B,)``:
        :math:`F(v) = -\log\sum_h e^{-E(v,h)} = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j})`.
        """
        return self._free_energy(self._v(v))

    def prob_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`p(h_j = 1 \mid v) = \sigma(c_j + v^\top W_{:j})` :eq:`ch04:conditionals`, ``(B, H)``."""
        return torch.sigmoid(self._v(v) @ self.W + self.c)

    def prob_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h)` :eq:`ch04:conditionals`, ``(B, D)``."""
        return torch.sigmoid(self._h(h) @ self.W.T + self.b)

    def sample_h_given_v(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A binary draw ``(B, H)`` from :math:`p(h \\mid v)`, all hidden units at once."""
        return torch.bernoulli(self.prob_h_given_v(v), generator=generator)

    def sample_v_given_h(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A binary draw ``(B, D)`` from :math:`p(v \\mid h)`, all visible units at once."""
        return torch.bernoulli(self.prob_v_given_h(h), generator=generator)

    def _gibbs(self, v: torch.Tensor, k: int, generator) -> torch.Tensor:
        W, b, c = self.W.detach(), self.b.detach(), self.c.detach()
        for _ in range(k):
            h = torch.bernoulli(torch.sigmoid(v @ W + c), generator=generator)  # (B, H)
            v = torch.bernoulli(torch.sigmoid(h @ W.T + b), generator=generator)  # (B, D)
        return v

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, k: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``k`` sweeps of block Gibbs sampling from ``v``; returns :math:`v_k`, ``(B, D)``, binary.

        One sweep: :math:`h \sim p(h \mid v)`, then :math:`v \sim p(v \mid h)` :eq:`ch04:conditionals`.
        The chain leaves :math:`p(v)` invariant. No gradient flows through it.
        """
        check_int(k, "k")
        return self._gibbs(self._v(v), k, generator)

    @torch.no_grad()
    def sample(self, n: int, k: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` approximate draws from :math:`p(v)`, ``(n, D)``: the ends of ``n`` independent
        chains of ``k`` Gibbs sweeps, each started from :math:`v_i \sim \operatorname{Bernoulli}(\sigma(b_i))`.
        """
        check_int(n, "the number of samples n")
        check_int(k, "k")
        v0 = torch.bernoulli(torch.sigmoid(self.b.detach()).expand(n, -1), generator=generator)  # (n, D)
        return self._gibbs(v0, k, generator)

    # -- training --------------------------------------------------------------------------

    def reset_chains(self) -> None:
        """Forget the persistent chains; the next PCD update starts new ones from its data batch."""
        self.persistent_chains = None

    def negative_samples(self, v: torch.Tensor) -> torch.Tensor:
        r"""The negative samples :math:`\tilde v` of :eq:`ch04:cd-surrogate`, detached.

        CD-k: ``cd_k`` Gibbs sweeps started at each row of ``v`` (Hinton 2002), ``(B, D)``.
        PCD in training mode: ``cd_k`` sweeps of the persistent chains, which are
        updated in place (Tieleman 2008), ``(n_chains, D)``; on the first call they
        start from rows of ``v`` drawn at random. PCD in eval mode behaves like CD-k and
        leaves the chains untouched, so evaluating a loss has no side effects.
        """
        v = self._v(v)
        k = self.config.cd_k
        with torch.no_grad():
            if self.config.persistent and self.training:
                chains = self.persistent_chains
                if chains is None or chains.shape != (self.config.n_chains, self.n_visible) or chains.dtype != v.dtype:
                    idx = torch.randint(v.shape[0], (self.config.n_chains,), device=v.device)
                    chains = torch.bernoulli(v[idx])  # (n_chains, D); binary even for grey-level v
                new = self._gibbs(chains, k, None)
                if self.persistent_chains is not None and self.persistent_chains.shape == new.shape \
                        and self.persistent_chains.dtype == new.dtype:
                    self.persistent_chains.copy_(new)
                else:
                    self.persistent_chains = new
                return new.clone()
            return self._gibbs(v, k, None)

    def loss(self, v: torch.Tensor) -> torch.Tensor:
        r"""The CD-k / PCD surrogate :eq:`ch04:cd-surrogate`, a scalar:
        :math:`\overline{F(v)} - \overline{F(\tilde v)}` with the negative samples detached.

        Its gradient is the CD-k (Hinton 2002) or PCD (Tieleman 2008) estimate of the
        gradient :eq:`ch04:grad` of the mean negative log-likelihood; its value is *not*
        the negative log-likelihood (for that use :meth:`log_prob`), so do not early-stop
        on it (call :func:`gmlib.train.train` without ``val_data`` or with ``patience=None``).
        Sampling uses the global torch RNG.
        """
        v = self._v(v)
        v_neg = self.negative_samples(v)
        return self._free_energy(v).mean() - self._free_energy(v_neg).mean()

    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        r"""Squared error of a deterministic one-step reconstruction, ``(B,)`` (a monitor, not a likelihood):
        :math:`\lVert v - \mathbb E[v \mid h = \mathbb E[h \mid v]] \rVert^2`, with the
        conditional means :eq:`ch04:conditionals`.
        """
        v = self._v(v)
        with torch.no_grad():
            p_h = torch.sigmoid(v @ self.W + self.c)  # (B, H)
            p_v = torch.sigmoid(p_h @ self.W.T + self.b)  # (B, D)
            return ((v - p_v) ** 2).sum(-1)

    # -- partition function and likelihood -------------------------------------------------

    def _states(self, m: int, start: int, stop: int) -> torch.Tensor:
        """Binary vectors ``start..stop-1`` of length ``m`` (bit i of the index is unit i), ``(stop-start, m)``."""
        idx = torch.arange(start, stop, device=self.W.device)
        bits = torch.arange(m, device=self.W.device)
        return ((idx[:, None] >> bits) & 1).to(self.W.dtype)

    def log_partition_exact(self, over: str | None = None) -> torch.Tensor:
        r"""Exact :math:`\log Z` by enumeration, a 0-dim tensor (differentiable).

        ``over="visible"`` sums :math:`-F(v)` :eq:`ch04:free-energy` over all :math:`2^D`
        visible vectors; ``over="hidden"`` sums the hidden-side free energy over all
        :math:`2^H` hidden vectors,

        .. math::  \log Z = \operatorname{logsumexp}_h \Big[c^\top h + \sum_{i=1}^D
                   \operatorname{softplus}\big(b_i + W_{i:} h\big)\Big];   \tag{ch04:logz-hidden}

        the default enumerates the smaller layer. Raises ``ValueError`` above
        :math:`2^{22}` states (use :meth:`ais_log_partition`).
        """
        if over is None:
            over = "hidden" if self.n_hidden <= self.n_visible else "visible"
        if over not in ("visible", "hidden"):
            raise ValueError(f"over must be 'visible', 'hidden' or None, got {over!r}")
        m = self.n_visible if over == "visible" else self.n_hidden
        if m > MAX_EXACT_BITS:
            raise ValueError(
                f"exact log Z would enumerate 2^{m} {over} states (limit 2^{MAX_EXACT_BITS}); "
                "use ais_log_partition()"
            )
        parts = []
        for start in range(0, 2**m, _CHUNK):
            s = self._states(m, start, min(2**m, start + _CHUNK))  # (chunk, m)
            if over == "visible":
                parts.append(torch.logsumexp(-self._free_energy(s), 0))
            else:
                parts.append(torch.logsumexp(s @ self.c + _softplus(s @ self.W.T + self.b).sum(-1), 0))
        return torch.logsumexp(torch.stack(parts), 0)

    @staticmethod
    def base_rate_visible_bias(v: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
        r"""Visible biases of the "base-rate" model (Salakhutdinov & Murray 2008), ``(D,)``:
        :math:`b^A_i = \log \hat p_i - \log(1 - \hat p_i)`, with the smoothed marginals
        :math:`\hat p_i = (\sum_n v_{ni} + s) / (N + 2s)` of the training data ``v`` ``(N, D)``.
        """
        check_tensor(v, "v")
        if v.dim() != 2:
            raise ValueError(f"v must have shape (N, D), got {tuple(v.shape)}")
        if not smoothing > 0:
            raise ValueError(f"smoothing must be positive, got {smoothing!r}")
        p = (v.sum(0) + smoothing) / (v.shape[0] + 2 * smoothing)
        return torch.log(p) - torch.log1p(-p)

    @torch.no_grad()
    def ais_log_partition(
        self,
        n_chains: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
        base_visible_bias: torch.Tensor | None = None,
    ) -> tuple[float, float]:
        r"""Annealed importance sampling estimate of :math:`\log Z` (Neal 2001;
        Salakhutdinov & Murray 2008). Returns ``(estimate, spread)`` as floats.

        The base model has :math:`W = 0`, visible biases :math:`b^A` (``base_visible_bias``,
        default zero: the uniform distribution; :meth:`base_rate_visible_bias` gives the
        better, data-dependent choice) and
        :math:`\log Z_A = \sum_i \operatorname{softplus}(b^A_i) + H \log 2`. For
        :math:`0 = \beta_0 < \dots < \beta_K = 1` (``n_betas`` = K + 1, linear), the
        intermediate unnormalised marginals are

        .. math::  \log p^*_\beta(v) = (1-\beta)\, {b^A}^\top v + \beta\, b^\top v
                   + \sum_j \operatorname{softplus}\big(\beta (c_j + v^\top W_{:j})\big).   \tag{ch04:ais-path}

        Each chain starts with an exact draw :math:`v_1 \sim p_A`, moves by one block Gibbs sweep
        that leaves :math:`p_{\beta_k}` invariant, and accumulates the log importance weight
        :math:`\log w = \sum_{k=1}^{K} \log p^*_{\beta_k}(v_k) - \log p^*_{\beta_{k-1}}(v_k)`. Then

        .. math::  \widehat{\log Z} = \log Z_A + \log \frac1M \sum_{m=1}^M w_m.   \tag{ch04:ais}

        :math:`\hat Z` is unbiased, so :math:`\widehat{\log Z}` is biased *downwards* (Jensen):
        it tends to underestimate :math:`\log Z` and so to overestimate log-likelihoods.
        The spread is the delta-method standard error of :math:`\widehat{\log Z}`,
        :math:`\operatorname{sd}(w) / (\bar w \sqrt M)`, a guide to reliability, not a bound.
        """
        check_int(n_chains, "n_chains", minimum=2)
        check_int(n_betas, "n_betas", minimum=2)
        W, b, c = self.W.detach(), self.b.detach(), self.c.detach()
        D, H = W.shape
        if base_visible_bias is None:
            b_a = b.new_zeros(D)  # (D,)
        else:
            check_tensor(base_visible_bias, "base_visible_bias")
            if base_visible_bias.shape != (D,):
                raise ValueError(f"base_visible_bias must have shape ({D},), got {tuple(base_visible_bias.shape)}")
            b_a = base_visible_bias.to(device=b.device, dtype=b.dtype)
        betas = torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64).tolist()
        log_z_a = float(_softplus(b_a).sum()) + H * math.log(2.0)

        def log_p_star(beta: float, v: torch.Tensor) -> torch.Tensor:  # (ch04:ais-path), (M,)
            return (1 - beta) * (v @ b_a) + beta * (v @ b) + _softplus(beta * (v @ W + c)).sum(-1)

        v = torch.bernoulli(torch.sigmoid(b_a).expand(n_chains, D).contiguous(), generator=generator)  # (M, D)
        log_w = v.new_zeros(n_chains)  # (M,)
        for k in range(1, n_betas):
            beta, prev = betas[k], betas[k - 1]
            log_w += log_p_star(beta, v) - log_p_star(prev, v)
            if k < n_betas - 1:  # one Gibbs sweep leaving p_beta invariant
                h = torch.bernoulli(torch.sigmoid(beta * (v @ W + c)), generator=generator)  # (M, H)
                v = torch.bernoulli(torch.sigmoid((1 - beta) * b_a + beta * (h @ W.T + b)), generator=generator)
        log_w = log_w.double() if log_w.device.type != "mps" else log_w
        estimate = log_z_a + float(torch.logsumexp(log_w, 0)) - math.log(n_chains)
        w = torch.exp(log_w - log_w.max())  # (M,), rescaled weights
        spread = float(w.std() / (w.mean() * math.sqrt(n_chains)))
        return estimate, spread

    def log_prob(self, v: torch.Tensor, log_z: float | torch.Tensor | None = None) -> torch.Tensor:
        r"""Log probability :math:`\log p(v) = -F(v) - \log Z` of binary ``v`` ``(B, D)``, ``(B,)`` in nats.

        :math:`\log Z` is, in order: ``log_z`` if given (pass a cached value: computing
        it is the expensive part); **exact** by :meth:`log_partition_exact` when
        :math:`\min(D, H) \le 20` (then ``log_prob`` is differentiable and
        :math:`\sum_v p(v) = 1`); otherwise an **AIS estimate** from
        :meth:`ais_log_partition` with its defaults and a generator seeded with 0
        (so repeated calls agree), which tends to overestimate :math:`\log p(v)`.
        ``v`` must be binary.
        """
        v = self._v(v, binary=True)
        if log_z is None:
            if min(self.n_visible, self.n_hidden) <= _AUTO_EXACT_BITS:
                log_z = self.log_partition_exact()
            else:
                gen = torch.Generator(device=self.W.device).manual_seed(0)
                log_z = self.ais_log_partition(generator=gen)[0]
        elif isinstance(log_z, torch.Tensor):
            if log_z.numel() != 1 or not bool(torch.isfinite(log_z).all()):
                raise ValueError("log_z must be a finite scalar")
            log_z = log_z.reshape(())
        elif not (isinstance(log_z, (int, float)) and math.isfinite(log_z)):
            raise ValueError(f"log_z must be a finite number or a 0-dim tensor, got {log_z!r}")
        return -self._free_energy(v) - log_z
