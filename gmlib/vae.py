r"""Chapter 5: variational autoencoders.

A latent-variable model :math:`p_\theta(x, z) = p(z)\,p_\theta(x \mid z)` with a
standard normal prior :math:`p(z) = \mathcal N(0, I_L)` and a *decoder* network
whose output parameterises an observation model :math:`p_\theta(x\mid z)`
(:mod:`gmlib.likelihoods`). Its evidence :math:`p_\theta(x) = \int p(z)\,p_\theta(x\mid z)\,dz`
and posterior :math:`p_\theta(z\mid x)` are intractable. An *encoder* network gives
an amortised Gaussian approximation
:math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))`
(the recognition model of the Helmholtz machine, Dayan et al. 1995, here trained jointly
with the generative model on one objective; Kingma & Welling 2014; Rezende et al. 2014).

**The evidence lower bound.** By Jensen's inequality,

.. math::  \log p_\theta(x) \ge \mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x, z) - \log q_\phi(z\mid x)\big]
           = \mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]
             - \mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)
           =: \mathcal L(x),       \tag{ch05:elbo}

and the gap is exactly the divergence from the true posterior,

.. math::  \log p_\theta(x) - \mathcal L(x) = \mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p_\theta(z\mid x)\big) \ge 0.
           \tag{ch05:elbo-kl-gap}

When :math:`q_\phi(z\mid x) = p_\theta(z\mid x)` the integrand of :eq:`ch05:elbo` is the
constant :math:`\log p_\theta(x)`, so even a one-sample estimate is exact (the tests use this).

**Reparameterisation.** Samples are a differentiable function of noise,

.. math::  z = \mu_\phi(x) + \sigma_\phi(x) \odot \varepsilon, \qquad \varepsilon \sim \mathcal N(0, I_L),
           \tag{ch05:reparam}

so :math:`\nabla_\phi \mathbb E_q[f(z)] = \mathbb E_\varepsilon[\nabla_\phi f(\mu_\phi + \sigma_\phi\odot\varepsilon)]`
(:func:`gmlib.probability.reparameterize`). The KL term has the closed form

.. math::  \mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2)\,\|\,\mathcal N(0, I)\big)
           = \tfrac12 \sum_{j=1}^L \big(\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2\big)
           \tag{ch05:kl-gauss}

(:func:`gmlib.probability.gaussian_kl`), so only the reconstruction term is estimated
by Monte Carlo (Kingma & Welling 2014's second estimator).

**Importance weighting.** With :math:`k` samples :math:`z_i \sim q_\phi(z\mid x)` (Burda et al. 2016),

.. math::  \mathcal L_k(x) = \mathbb E\Big[\log \frac1k \sum_{i=1}^k \frac{p_\theta(x, z_i)}{q_\phi(z_i\mid x)}\Big],
           \qquad \mathcal L = \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p_\theta(x),
           \tag{ch05:iwae}

and :math:`\mathcal L_k \to \log p_\theta(x)` as :math:`k\to\infty` (when the weights are
bounded): :meth:`VAE.iwae_bound` with :math:`k = 1000` is the usual estimate of the
test log-likelihood.

**Training objective.** :meth:`VAE.loss` minimises, in training mode,

.. math::  -\frac1B\sum_{n=1}^B \mathbb E_q\big[\log p_\theta(x_n\mid z)\big]
           + \omega_\mathrm{KL}(t) \sum_{j=1}^{L} \max\Big(\tau,\ \frac1B\sum_{n=1}^B \mathrm{KL}_j(x_n)\Big),
           \qquad \omega_\mathrm{KL}(t) = \omega_\mathrm{KL} \min\big(1, t / T_\text{warm-up}\big),     \tag{ch05:loss}

where :math:`\mathrm{KL}_j` is the :math:`j`-th term of :eq:`ch05:kl-gauss`, :math:`t` the
number of training steps taken so far, :math:`\omega_\mathrm{KL}` (``beta``) the KL weight, whose
values above 1 make the :math:`\beta`-VAE (Higgins et al. 2017), the rise of the weight from 0 the "KL annealing"
of Bowman et al. (2016) in the linear "warm-up" form of Sønderby et al. (2016), and
:math:`\tau` (``free_bits``) the "free bits" of Kingma et al. (2016), who write :math:`\lambda` (nats per latent
dimension that are not penalised, on the batch average). With :math:`\omega_\mathrm{KL} = 1`, no warm-up and
:math:`\tau = 0` this is
the negative ELBO. In eval mode :meth:`VAE.loss` is always the plain negative ELBO,
so a validation loss (early stopping in :func:`gmlib.train.train`) compares like with like.

**Conditional VAE** (Sohn et al. 2015). With ``config.conditional = True`` encoder and
decoder receive a context :math:`y` (e.g. the digit class), ``encoder(x, y)`` and
``decoder(z, y)`` (:class:`gmlib.nets.ConcatContext` concatenates a one-hot code),
and every bound is of :math:`\log p_\theta(x \mid y)`:

.. math::  \log p_\theta(x\mid y) \ge \mathbb E_{q_\phi(z\mid x, y)}\big[\log p_\theta(x\mid z, y)\big]
           - \mathrm{KL}\big(q_\phi(z\mid x, y)\,\|\,p(z)\big).     \tag{ch05:cvae}

The prior stays :math:`\mathcal N(0, I)` (Sohn et al. also allow a learned :math:`p(z\mid y)`).

Conventions
-----------
- ``x``: ``(B, D)`` floating point, values the likelihood supports (binary for
  :class:`~gmlib.likelihoods.Bernoulli`, integers for
  :class:`~gmlib.likelihoods.Categorical`); it is cast to the model's dtype.
- ``encoder(x) -> (B, 2L)``, read as ``(mean, log_var)`` of :math:`q`;
  ``decoder(z) -> params`` for ``z`` ``(N, L)``, ``params`` in the likelihood's shape
  (``(N, D)`` or ``(N, D, P)``). Both networks always see 2-D inputs: sample
  dimensions are folded into the batch.
- Results are per example ``(B,)``, in nats, never averaged.
- Sampling methods take an optional ``generator`` on the model's device; without one
  the global torch RNG is used (seeded by :func:`gmlib.train.train`).

Equation labels (``ch05:...``) refer to Chapter 5 of the book.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_int, check_tensor
from .likelihoods import Likelihood
from .probability import gaussian_kl, gaussian_log_prob, reparameterize

__all__ = ["VAEConfig", "VAE", "ELBOTerms"]


@dataclass
class VAEConfig:
    """Settings of a :class:`VAE`: the training objective :eq:`ch05:loss` and evaluation."""

    beta: float = 1.0  # weight of the KL term in loss() (Higgins et al. 2017); 1 gives the ELBO
    # the KL weight rises linearly from 0 to beta over this many training steps (KL warm-up,
    # Bowman et al. 2016; Sønderby et al. 2016); 0: no warm-up
    warmup_steps: int = 0
    # nats per latent dimension not penalised, on the batch-averaged KL (free bits, Kingma et al. 2016); 0: off
    free_bits: float = 0.0
    n_samples: int = 1  # Monte Carlo samples of z per example in elbo() and loss()
    conditional: bool = False  # encoder(x, y) and decoder(z, y) take a context y (Sohn et al. 2015)
    iwae_chunk: int = 512  # at most this many (sample, example) pairs are decoded at once in log_weights() (small batches are fastest on CPU)


class ELBOTerms(NamedTuple):
    """The two terms of :eq:`ch05:elbo`; ``elbo = log_likelihood - kl``."""

    log_likelihood: torch.Tensor  # (B,) Monte Carlo estimate of E_q[log p(x | z)]
    kl: torch.Tensor  # (B,) KL(q(z | x) || p(z)) in closed form (ch05:kl-gauss)
    kl_per_dim: torch.Tensor  # (B, L) its terms, one per latent dimension


def _check_positive_number(value, name: str, allow_zero: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        want = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {want} finite number, got {value!r}")


class VAE(nn.Module):
    r"""A variational autoencoder with a standard normal prior :eq:`ch05:elbo`.

    Parameters
    ----------
    encoder: ``nn.Module``, ``x (B, D) -> (B, 2 * latent_dim)``: mean and log-variance
        of :math:`q_\phi(z\mid x)` (``encoder(x, y)`` when conditional).
    decoder: ``nn.Module``, ``z (N, latent_dim) -> params`` of ``likelihood``
        (``decoder(z, y)`` when conditional).
    likelihood: a :class:`gmlib.likelihoods.Likelihood`, the observation model :math:`p_\theta(x\mid z)`.
    latent_dim: :math:`L`.
    config: a :class:`VAEConfig` (default: the plain ELBO).
    data_dim: :math:`D`, if known: ``x`` is then checked before it reaches the encoder.
        Otherwise it is read from the decoder's output the first time the model decodes.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        config: VAEConfig | None = None,
        *,
        data_dim: int | None = None,
    ):
        super().__init__()
        config = VAEConfig() if config is None else config
        if not isinstance(config, VAEConfig):
            raise ValueError(f"config must be a VAEConfig, got {type(config).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise ValueError(f"likelihood must be a gmlib.likelihoods.Likelihood, got {type(likelihood).__name__}")
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if not callable(net):
                raise ValueError(f"{name} must be a callable network (an nn.Module), got {type(net).__name__}")
        check_int(latent_dim, "latent_dim")
        _check_positive_number(config.beta, "beta")
        check_int(config.warmup_steps, "warmup_steps", minimum=0)
        _check_positive_number(config.free_bits, "free_bits")
        check_int(config.n_samples, "n_samples")
        check_int(config.iwae_chunk, "iwae_chunk")
        if not isinstance(config.conditional, bool):
            raise ValueError(f"conditional must be a bool, got {config.conditional!r}")
        if data_dim is not None:
            check_int(data_dim, "data_dim")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.config = config
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training steps taken by loss()

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, data_dim={self.data_dim}, " + ", ".join(
            f"{k}={v}" for k, v in asdict(self.config).items()
        )

    # -- checks ------------------------------------------------------------------------------

    def _reference(self) -> torch.Tensor:
        """A floating tensor on the model's device and dtype (its first floating parameter or buffer)."""
        for t in self.parameters():
            if t.is_floating_point():
                return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return self.step.new_zeros((), dtype=torch.get_default_dtype())

    def _check_x(self, x, name: str = "x", allow_nan: bool = False) -> torch.Tensor:
        check_tensor(x, name, allow_nan=allow_nan)
        if x.dim() != 2 or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape (B, D) with B >= 1, got {tuple(x.shape)}")
        if self.data_dim is not None and x.shape[1] != self.data_dim:
            raise ValueError(f"{name} must have {self.data_dim} columns (the model's D), got shape {tuple(x.shape)}")
        ref = self._reference()
        return x.to(dtype=ref.dtype)

    def _check_y(self, y, batch: int):
        if not self.config.conditional:
            if y is not None:
                raise ValueError("this VAE is not conditional (config.conditional=False): do not pass y")
            return None
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"a conditional VAE needs a context tensor y, got {type(y).__name__}")
        if y.dim() < 1 or y.shape[0] != batch:
            raise ValueError(f"y must have {batch} rows (one context per example), got shape {tuple(y.shape)}")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or infinite values")
        return y

    def _check_values(self, x: torch.Tensor) -> None:
        self.likelihood.check_x(x, data_dim=self.data_dim)

    # -- networks ----------------------------------------------------------------------------

    def _encode(self, x: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(x) if y is None else self.encoder(x, y)
        L = self.latent_dim
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], 2 * L):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the encoder must return (B, 2 * latent_dim) = ({x.shape[0]}, {2 * L}), got {got}")
        return out[:, :L], out[:, L:]  # (B, L) mean, (B, L) log_var

    def _decode(self, z: torch.Tensor, y) -> torch.Tensor:
        """Decoder output for ``z`` ``(*S, N, L)``, shape ``(*S, N, D[, P])``; ``y`` ``(N, ...)`` is repeated."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)  # (prod S * N, L)
        if y is None:
            out = self.decoder(flat)
        else:
            reps = flat.shape[0] // y.shape[0]
            out = self.decoder(flat, y.repeat(reps, *([1] * (y.dim() - 1))))  # row s * N + n gets y[n]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the decoder must return a tensor, got {type(out).__name__}")
        try:
            _, D = self.likelihood.check_params(out, values=False)  # shapes only: runs on every decode
        except ValueError as err:
            raise ValueError(f"the decoder's output does not fit the likelihood {self.likelihood}: {err}") from None
        if out.shape[0] != flat.shape[0] or out.shape[1:] != self.likelihood.param_shape(D):
            raise ValueError(
                f"the decoder must return ({flat.shape[0]}, *{self.likelihood.param_shape(D)}) "
                f"for {self.likelihood}, got {tuple(out.shape)}"
            )
        if self.data_dim is None:
            self.data_dim = D
        elif D != self.data_dim:
            raise ValueError(f"the decoder describes {D} pixels but the model has data_dim = {self.data_dim}")
        return out.reshape(*lead, *out.shape[1:])

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean and log-variance of :math:`q_\phi(z\mid x)`, each ``(B, L)``."""
        x = self._check_x(x)
        return self._encode(x, self._check_y(y, x.shape[0]))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r"""Likelihood parameters of :math:`p_\theta(x\mid z)` for ``z`` ``(N, L)``: ``(N, D[, P])``."""
        check_tensor(z, "z", event_shape=(self.latent_dim,))
        if z.dim() != 2:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self._decode(z.to(self._reference().dtype), self._check_y(y, z.shape[0]))

    # -- bounds ------------------------------------------------------------------------------

    def _log_weights(self, x, y, mean, log_var, k: int, generator) -> torch.Tensor:
        r"""Log importance weights :math:`\log p(x, z_i) - \log q(z_i\mid x)`, ``(k, B)``."""
        z = reparameterize(mean, log_var, k, generator=generator)  # (k, B, L)
        params = self._decode(z, y)  # (k, B, D[, P])
        log_lik = self.likelihood._log_prob(x, params)  # (k, B)
        zeros = z.new_zeros(self.latent_dim)
        log_prior = gaussian_log_prob(z, zeros, zeros)  # (k, B), log N(z; 0, I)
        return log_lik + log_prior - gaussian_log_prob(z, mean, log_var)

    def _terms(self, x, y, n: int, generator) -> ELBOTerms:
        mean, log_var = self._encode(x, y)
        z = reparameterize(mean, log_var, n, generator=generator)  # (n, B, L)
        log_lik = self.likelihood._log_prob(x, self._decode(z, y)).mean(0)  # (B,)
        kl_per_dim = gaussian_kl(mean.unsqueeze(-1), log_var.unsqueeze(-1))  # (B, L)   (ch05:kl-gauss)
        return ELBOTerms(log_lik, kl_per_dim.sum(-1), kl_per_dim)

    def _n(self, n_samples) -> int:
        return self.config.n_samples if n_samples is None else check_int(n_samples, "n_samples")

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ELBOTerms:
        r"""Reconstruction term, KL and KL per latent dimension of :eq:`ch05:elbo` (see :class:`ELBOTerms`).

        :math:`\mathrm{KL}_j(x)` near 0 for every ``x`` marks a collapsed (inactive) latent dimension.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        self._check_values(x)
        return self._terms(x, y, self._n(n_samples), generator)

    def elbo(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_samples: int | None = None,
        analytic_kl: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Monte Carlo estimate of the ELBO :eq:`ch05:elbo` of every example, ``(B,)``, in nats.

        ``n_samples`` (default ``config.n_samples``) draws of :math:`z` per example.
        ``analytic_kl=True``: :math:`\frac1S\sum_s \log p(x\mid z_s) - \mathrm{KL}` with the KL
        in closed form :eq:`ch05:kl-gauss`; ``False``: :math:`\frac1S\sum_s [\log p(x, z_s) - \log q(z_s\mid x)]`,
        which has zero variance when :math:`q` is the exact posterior. Both are unbiased,
        and differentiable through :eq:`ch05:reparam`.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        self._check_values(x)
        n = self._n(n_samples)
        if analytic_kl:
            terms = self._terms(x, y, n, generator)
            return terms.log_likelihood - terms.kl
        mean, log_var = self._encode(x, y)
        return self._log_weights(x, y, mean, log_var, n, generator).mean(0)

    def log_weights(
        self,
        x: torch.Tensor,
        k: int,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""``k`` log importance weights per example, ``(k, B)``:
        :math:`\log w_i = \log p_\theta(x, z_i) - \log q_\phi(z_i\mid x)`, :math:`z_i \sim q_\phi(z\mid x)`.

        Their mean is an unbiased estimate of the ELBO :eq:`ch05:elbo`; their log-mean-exp is
        :meth:`iwae_bound`. All ``k`` samples are decoded in batches of at most
        ``config.iwae_chunk`` (sample, example) pairs, so memory stays bounded for ``k = 1000``.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        self._check_values(x)
        check_int(k, "k")
        mean, log_var = self._encode(x, y)
        B, chunk = x.shape[0], self.config.iwae_chunk
        columns = []
        for start in range(0, B, chunk):  # examples in groups of at most `chunk`
            sl = slice(start, min(B, start + chunk))
            per = max(1, chunk // (sl.stop - sl.start))  # samples per decoding pass
            ys = None if y is None else y[sl]
            columns.append(torch.cat([
                self._log_weights(x[sl], ys, mean[sl], log_var[sl], min(per, k - s), generator)  # (k', b)
                for s in range(0, k, per)
            ], 0))  # (k, b)
        return torch.cat(columns, 1)  # (k, B)

    def iwae_bound(
        self,
        x: torch.Tensor,
        k: int,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Estimate of the importance-weighted bound :math:`\mathcal L_k` :eq:`ch05:iwae`, ``(B,)``, in nats.

        .. math::  \hat{\mathcal L}_k(x) = \operatorname{logsumexp}_{i=1}^k
                   \big[\log p_\theta(x, z_i) - \log q_\phi(z_i\mid x)\big] - \log k,

        with the weights of :meth:`log_weights` (decoded in bounded batches). Differentiable
        (the IWAE training objective); wrap evaluation in ``torch.no_grad()``.
        """
        return torch.logsumexp(self.log_weights(x, k, y, generator=generator), 0) - math.log(k)  # (B,)

    # -- training ----------------------------------------------------------------------------

    @property
    def kl_weight(self) -> float:
        r"""The current weight :math:`w_t = \beta\min(1, t/T_\text{warm-up})` of :eq:`ch05:loss`."""
        c = self.config
        if c.warmup_steps == 0:
            return float(c.beta)
        return float(c.beta) * min(1.0, int(self.step) / c.warmup_steps)

    def _split_batch(self, batch):
        if isinstance(batch, torch.Tensor):
            if self.config.conditional:
                raise ValueError("a conditional VAE's loss needs a batch (x, y)")
            return batch, None
        if isinstance(batch, (tuple, list)):
            if self.config.conditional and len(batch) == 2:
                return batch[0], batch[1]
            if not self.config.conditional and len(batch) == 1:
                return batch[0], None
        want = "(x, y)" if self.config.conditional else "x (a tensor)"
        got = type(batch).__name__
        if isinstance(batch, (tuple, list)):
            got = f"a {got} of length {len(batch)}"
        raise ValueError(f"loss expects a batch {want}, got {got}")

    def loss(self, batch) -> torch.Tensor:
        r"""The scalar :func:`gmlib.train.train` minimises.

        Training mode: :eq:`ch05:loss` with the config's :math:`\beta`, warm-up and free bits,
        and the step counter :math:`t` (buffer ``step``) advances by one. Eval mode: the plain
        negative ELBO :math:`-\frac1B\sum_n \mathcal L(x_n)`, equal to ``-elbo(x, y).mean()``
        under the same random numbers, and no side effect. ``batch``: ``x`` or, for a
        conditional VAE, ``(x, y)``.
        """
        x, y = self._split_batch(batch)
        terms = self.elbo_terms(x, y)
        if not self.training:
            return -(terms.log_likelihood - terms.kl).mean()
        c = self.config
        w = self.kl_weight
        if c.free_bits > 0:  # sum_j max(tau, batch mean of KL_j)
            kl = terms.kl_per_dim.mean(0).clamp_min(c.free_bits).sum()
        else:
            kl = terms.kl.mean()
        self.step += 1
        return -terms.log_likelihood.mean() + w * kl

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: torch.Tensor | None = None,
        *,
        mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""``n`` draws :math:`z \sim \mathcal N(0, I)`, :math:`x \sim p_\theta(x\mid z)`: ``(n, D)``.

        ``mean=True`` returns :math:`\mathbb E[x\mid z]` instead of a draw of :math:`x` (smoother
        pictures). A conditional VAE needs ``y`` with ``n`` rows (e.g. ``torch.arange(10)``).
        """
        check_int(n, "the number of samples n")
        y = self._check_y(y, n)
        ref = self._reference()
        z = torch.randn((n, self.latent_dim), generator=generator, dtype=ref.dtype, device=ref.device)  # (n, L)
        params = self._decode(z, y)
        return self.likelihood._mean(params) if mean else self.likelihood._sample(params, generator)

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sample_latent: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r""":math:`\mathbb E[x\mid z]` at :math:`z = \mu_\phi(x)` (or a draw :math:`z\sim q_\phi(z\mid x)`
        with ``sample_latent=True``): ``(B, D)``."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        self._check_values(x)
        mean, log_var = self._encode(x, y)
        z = reparameterize(mean, log_var, generator=generator) if sample_latent else mean
        return self.likelihood._mean(self._decode(z, y))

    @torch.no_grad()
    def complete(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_iter: int = 50,
        method: str = "metropolis",
        mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Fill the missing pixels of ``x`` (``mask`` ``True`` = observed), ``(B, D)``.

        Observed pixels are returned unchanged, bit for bit; missing ones may hold
        anything (NaN included). Both methods run a Markov chain on
        :math:`(z, x_\text{mis})` started at :math:`x_\text{mis} = 0`:

        - ``"metropolis"`` (default; Mattei & Frellsen 2018): Metropolis-within-Gibbs.
          Propose :math:`z' \sim q_\phi(z\mid \tilde x)` with :math:`\tilde x = (x_\text{obs}, x_\text{mis})`,
          accept with probability

          .. math::  \min\Big(1, \frac{p_\theta(\tilde x\mid z')\,p(z')\,q_\phi(z\mid\tilde x)}
                     {p_\theta(\tilde x\mid z)\,p(z)\,q_\phi(z'\mid\tilde x)}\Big),   \tag{ch05:mwg}

          then draw :math:`x_\text{mis} \sim p_\theta(x_\text{mis}\mid z)`. Its stationary
          distribution is the model's exact conditional :math:`p_\theta(x_\text{mis}\mid x_\text{obs})`.
        - ``"pseudo-gibbs"`` (Rezende et al. 2014): :math:`z \sim q_\phi(z\mid\tilde x)`, then
          :math:`x_\text{mis} \sim p_\theta(x_\text{mis}\mid z)`, always accepted. Simpler, but it
          converges to the exact conditional only if :math:`q_\phi` is the exact posterior.

        Returns the chain's state after ``n_iter`` sweeps (a draw of the missing pixels), or
        with ``mean=True`` the average of :math:`\mathbb E[x_\text{mis}\mid z_t]` over the second
        half of the sweeps, an estimate of :math:`\mathbb E[x_\text{mis}\mid x_\text{obs}]`.
        """
        x_in = x
        check_tensor(x_in, "x", allow_nan=True)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x_in.shape:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of the shape of x {tuple(x_in.shape)}, got {got}")
        if method not in ("metropolis", "pseudo-gibbs"):
            raise ValueError(f"method must be 'metropolis' or 'pseudo-gibbs', got {method!r}")
        check_int(n_iter, "n_iter")
        mask = mask.to(x_in.device)
        x = torch.where(mask, x_in, torch.zeros_like(x_in))  # missing pixels start at 0
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or infinite values in observed pixels")
        x = self._check_x(x)
        self._check_values(x)
        y = self._check_y(y, x.shape[0])
        lik = self.likelihood
        zeros = x.new_zeros(self.latent_dim)

        def log_joint(x_full, z):  # log p(x | z) + log p(z), (B,)
            return lik._log_prob(x_full, self._decode(z, y)) + gaussian_log_prob(z, zeros, zeros)

        mean_q, log_var_q = self._encode(x, y)
        z = reparameterize(mean_q, log_var_q, generator=generator)  # (B, L)
        lj = log_joint(x, z)
        total, count = torch.zeros_like(x), 0
        for t in range(n_iter):
            mean_q, log_var_q = self._encode(x, y)
            z_new = reparameterize(mean_q, log_var_q, generator=generator)  # (B, L)
            if method == "metropolis":
                lj_new = log_joint(x, z_new)
                log_q_old = gaussian_log_prob(z, mean_q, log_var_q)  # (B,) q(z | x~) of the current z
                log_ratio = (lj_new - lj) + log_q_old - gaussian_log_prob(z_new, mean_q, log_var_q)  # (ch05:mwg)
                u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
                accept = torch.log(u) < log_ratio  # (B,)
                z = torch.where(accept[:, None], z_new, z)
            else:
                z = z_new
            params = self._decode(z, y)
            x = torch.where(mask, x, lik._sample(params, generator))  # Gibbs step for x_mis
            if method == "metropolis":
                lj = log_joint(x, z)
            if mean and t >= n_iter // 2:
                total += lik._mean(params)
                count += 1
        out = total / count if mean else x
        return torch.where(mask, x_in, out.to(x_in.dtype))

    @torch.no_grad()
    def active_units(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, threshold: float = 1e-2
    ) -> tuple[torch.Tensor, int]:
        r"""The activity of each latent dimension (Burda et al. 2016) and the number of active ones.

        .. math::  A_j = \operatorname{Cov}_x\big(\mathbb E_{q_\phi(z\mid x)}[z_j]\big), \qquad
                   j \text{ active} \iff A_j > \text{threshold} \ (10^{-2}).     \tag{ch05:active-units}

        A dimension whose posterior mean does not move with the data carries no information
        about it (posterior collapse). Returns ``(A (L,), n_active)``; ``x`` should hold many
        examples (the variance is over its rows, population form).
        """
        _check_positive_number(threshold, "threshold")
        mean, _ = self.encode(x, y)  # (B, L)
        activity = mean.var(0, unbiased=False)  # (L,)
        return activity, int((activity > threshold).sum())
