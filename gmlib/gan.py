r"""Chapter 6: generative adversarial networks.

A GAN (Goodfellow et al. 2014) is an *implicit* model: a sample is a noise vector
:math:`z \sim p(z) = \mathcal N(0, I)` pushed through a generator network,
:math:`x = G(z)`. There is no density to evaluate, so the generator is trained
against a second network, the discriminator (or critic) :math:`D`, that learns to
tell data from samples.

Conventions of this module
--------------------------
- The discriminator network returns one **raw** score per example, ``(B,)`` or
  ``(B, 1)``: a logit :math:`\ell(x)` for the minimax and non-saturating objectives
  (:math:`D(x) = \sigma(\ell(x))`), a real-valued output for least squares, and a
  critic value for the hinge and Wasserstein objectives.
- Losses are **minimised** and averaged over the batch (scalars). The loss
  functions of each objective take the scores of real and generated examples, so
  they can be checked by hand; :class:`GAN` draws the noise and calls them.
- The generator's samples live in the space of the data it is trained on (e.g.
  digits scaled to [-1, 1] for a ``tanh`` output layer); scaling is the caller's.

Objectives (:data:`OBJECTIVES`), discriminator loss / generator loss, with
:math:`\ell_r = \ell(x)`, :math:`\ell_f = \ell(G(z))` and the softplus
:math:`\zeta(a) = \log(1 + e^{a})` (so :math:`-\log\sigma(a) = \zeta(-a)`):

==================  ==========================================================  ================================
objective           discriminator                                               generator
==================  ==========================================================  ================================
``minimax``         :math:`\mathbb E\,\zeta(-\ell_r) + \mathbb E\,\zeta(\ell_f)`    :math:`-\mathbb E\,\zeta(\ell_f)`
``non_saturating``  same as minimax                                             :math:`\mathbb E\,\zeta(-\ell_f)`
``least_squares``   :math:`\tfrac12\mathbb E(\ell_r - 1)^2 + \tfrac12\mathbb E\,\ell_f^2`  :math:`\tfrac12\mathbb E(\ell_f - 1)^2`
``hinge``           :math:`\mathbb E\,[1 - \ell_r]_+ + \mathbb E\,[1 + \ell_f]_+`    :math:`-\mathbb E\,\ell_f`
``wgan_gp``         :math:`\mathbb E\,\ell_f - \mathbb E\,\ell_r + \omega_\mathrm{GP}\,\mathrm{GP}`   :math:`-\mathbb E\,\ell_f`
==================  ==========================================================  ================================

(minimax and non-saturating: Goodfellow et al. 2014, eq. ch06:value and
ch06:nonsat; least squares with targets a=0, b=c=1: Mao et al. 2017; hinge: Lim &
Ye 2017, Miyato et al. 2018; Wasserstein with gradient penalty: Arjovsky et al.
2017, Gulrajani et al. 2017, eq. ch06:gp.)

Training uses the one loop of the book, :func:`gmlib.train.train`: a GAN lists two
players, the discriminator (updated every mini-batch) and the generator (updated
every ``d_steps`` mini-batches), each with its own Adam optimizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int
from .train import Player

__all__ = [
    "OBJECTIVES",
    "GANConfig",
    "GAN",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "optimal_discriminator",
    "minimax_value",
]

OBJECTIVES = ("minimax", "non_saturating", "least_squares", "hinge", "wgan_gp")


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown GAN objective {objective!r}; choose one of {list(OBJECTIVES)}")


def _scores(out: torch.Tensor, name: str) -> torch.Tensor:
    """Discriminator outputs as a float vector ``(B,)`` (accepts ``(B, 1)``)."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of discriminator outputs, got "
                         f"{getattr(out, 'dtype', type(out).__name__)}")
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 1 or out.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B,) or (B, 1) with B >= 1, got {tuple(out.shape)}")
    return out


def discriminator_loss(real_out: torch.Tensor, fake_out: torch.Tensor, objective: str = "non_saturating") -> torch.Tensor:
    r"""The discriminator's loss (a scalar to minimise) from its raw outputs on real and generated examples.

    ``real_out`` ``(B,)`` and ``fake_out`` ``(B',)`` (or ``(B, 1)``). For ``minimax`` and
    ``non_saturating`` the outputs are logits and the loss is the binary cross-entropy
    with labels 1 for data and 0 for samples, the negative of the value function

    .. math:: V(D, G) = \mathbb E_{p_\text{data}}\log D(x) + \mathbb E_{p_z}\log(1 - D(G(z))). \tag{ch06:value}

    For ``wgan_gp`` this is the critic's loss *without* the gradient penalty (add
    ``gp_weight * gradient_penalty(...)``, as :meth:`GAN.discriminator_loss` does).
    See the module docstring for every objective.
    """
    _check_objective(objective)
    r, f = _scores(real_out, "real_out"), _scores(fake_out, "fake_out")
    if objective in ("minimax", "non_saturating"):
        return F.softplus(-r).mean() + F.softplus(f).mean()  # -E log D(x) - E log(1 - D(G(z)))
    if objective == "least_squares":
        return 0.5 * ((r - 1.0) ** 2).mean() + 0.5 * (f**2).mean()
    if objective == "hinge":
        return F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    return f.mean() - r.mean()  # wgan_gp: the negative of the Wasserstein estimate


def generator_loss(fake_out: torch.Tensor, objective: str = "non_saturating") -> torch.Tensor:
    r"""The generator's loss (a scalar to minimise) from the discriminator's raw outputs on its samples.

    ``minimax`` minimises :math:`\mathbb E\log(1 - D(G(z))) = -\mathbb E\,\zeta(\ell_f)`, whose
    gradient vanishes where the discriminator confidently rejects the samples;
    ``non_saturating`` minimises :math:`-\mathbb E\log D(G(z)) = \mathbb E\,\zeta(-\ell_f)` instead
    (Goodfellow et al. 2014, section 3):

    .. math:: \frac{\partial}{\partial \ell}\log(1 - \sigma(\ell)) = -\sigma(\ell), \qquad
              \frac{\partial}{\partial \ell}\bigl(-\log \sigma(\ell)\bigr) = -(1 - \sigma(\ell)). \tag{ch06:nonsat}

    ``least_squares``: :math:`\tfrac12\mathbb E(\ell_f - 1)^2`; ``hinge`` and ``wgan_gp``:
    :math:`-\mathbb E\,\ell_f`.
    """
    _check_objective(objective)
    f = _scores(fake_out, "fake_out")
    if objective == "minimax":
        return -F.softplus(f).mean()  # E log(1 - sigmoid(f))
    if objective == "non_saturating":
        return F.softplus(-f).mean()  # -E log sigmoid(f)
    if objective == "least_squares":
        return 0.5 * ((f - 1.0) ** 2).mean()
    return -f.mean()  # hinge, wgan_gp


def gradient_penalty(
    critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""The gradient penalty of WGAN-GP (Gulrajani et al. 2017, their eq. 3):

    .. math:: \mathrm{GP} = \mathbb E_{\hat x}\bigl(\lVert\nabla_{\hat x} D(\hat x)\rVert_2 - 1\bigr)^2,
              \qquad \hat x = u x + (1 - u)\tilde x,\ u \sim U[0, 1], \tag{ch06:gp}

    one :math:`u` (``eps``) per pair of a real example ``x`` and a generated one ``x~``
    (``real`` and ``fake``, both ``(B, *event)``). ``critic(x_hat)`` returns ``(B,)`` or
    ``(B, 1)``. The gradient is taken with ``create_graph=True`` so the penalty can
    itself be differentiated with respect to the critic's parameters. ``eps`` ``(B,)``
    fixes the mixing weights (for tests); otherwise they are drawn with ``generator``.
    A scalar; zero for a critic that is linear with a unit-norm slope.
    """
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise ValueError(f"{name} must be a floating tensor of shape (B, *event), got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    b = real.shape[0]
    if eps is None:
        eps = torch.rand(b, generator=generator, dtype=real.dtype, device="cpu" if generator is not None else real.device)
        eps = eps.to(real.device)
    elif eps.shape != (b,):
        raise ValueError(f"eps must have shape ({b},), got {tuple(eps.shape)}")
    eps = eps.to(dtype=real.dtype).view(b, *([1] * (real.dim() - 1)))
    with torch.enable_grad():  # the penalty is made of gradients: it needs autograd even under no_grad
        x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, *event)
        out = _scores(critic(x_hat), "critic(x_hat)")
        # rows are independent, so the gradient of the sum gives d out_b / d x_hat_b in row b
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norms = grad.reshape(b, -1).norm(dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    r"""The discriminator that maximises ch06:value for a fixed generator (Goodfellow et al. 2014, Prop. 1):

    .. math:: D^*(x) = \frac{p_\text{data}(x)}{p_\text{data}(x) + p_g(x)}. \tag{ch06:dstar}

    ``p_data`` and ``p_g`` are densities at the same points (same shape, non-negative, not
    both zero). Returns :math:`D^*` elementwise.
    """
    if not (isinstance(p_data, torch.Tensor) and isinstance(p_g, torch.Tensor)) or p_data.shape != p_g.shape:
        raise ValueError("p_data and p_g must be tensors of the same shape")
    if bool((p_data < 0).any()) or bool((p_g < 0).any()):
        raise ValueError("densities must be non-negative")
    total = p_data + p_g
    if bool((total <= 0).any()):
        raise ValueError("D* is undefined where both densities are zero")
    return p_data / total


def minimax_value(p_data: torch.Tensor, p_g: torch.Tensor, dx: float) -> torch.Tensor:
    r"""The value :math:`V(D^*, G) = -\log 4 + 2\,\mathrm{JS}(p_\text{data}\,\Vert\,p_g)` (ch06:js), by quadrature.

    ``p_data`` and ``p_g`` are densities on an even grid of spacing ``dx`` (1-D, or any shape
    whose cells all have volume ``dx``) that covers the mass of both. Points where a density
    is zero contribute nothing (the limit of :math:`p\log p`).
    """
    optimal_discriminator(p_data, p_g)  # checks the densities
    total = p_data + p_g
    # p log D* = p log p - p log(p + q), with 0 log 0 = 0 (xlogy); in this form a tiny p never meets log 0
    a = torch.xlogy(p_data, p_data) - torch.xlogy(p_data, total)
    b = torch.xlogy(p_g, p_g) - torch.xlogy(p_g, total)
    return (a + b).sum() * dx


@dataclass
class GANConfig:
    """Settings of a :class:`GAN` and its two-player training."""

    objective: str = "non_saturating"  # one of OBJECTIVES
    d_steps: int = 1  # discriminator updates per generator update (5 in Gulrajani et al. 2017)
    gp_weight: float = 10.0  # omega_GP, the gradient penalty's weight (wgan_gp only)
    lr_d: float = 2e-4  # the discriminator's Adam step size
    lr_g: float = 2e-4  # the generator's Adam step size
    betas: tuple = (0.5, 0.999)  # Adam's (beta1, beta2) for both players (Radford et al. 2016)

    def __post_init__(self):
        _check_objective(self.objective)
        check_int(self.d_steps, "d_steps")
        if not self.gp_weight >= 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight!r}")
        for name in ("lr_d", "lr_g"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")


class GAN(nn.Module):
    r"""A generator and a discriminator, and the losses of one objective.

    ``generator``: ``(N, latent_dim) -> (N, *event)``; ``discriminator``:
    ``(B, *event) -> (B,)`` or ``(B, 1)`` raw scores (see the module docstring). Noise is
    :math:`z \sim \mathcal N(0, I_{\text{latent\_dim}})`, drawn with the global torch RNG unless a
    ``generator`` (a ``torch.Generator``) is given.

    Training: ``gmlib.train.train(gan, data, epochs=..., batch_size=...)`` alternates
    the two players of :meth:`players`; there is no validation loss (``val_data=None``).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int,
                 config: GANConfig | None = None):
        super().__init__()
        check_int(latent_dim, "latent_dim")
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise ValueError("generator and discriminator must be torch.nn.Module instances")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = latent_dim
        self.config = config if config is not None else GANConfig()

    # -- sampling ------------------------------------------------------------------
    def _device_dtype(self):
        p = next(self.generator.parameters(), None)
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.get_default_dtype())

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise ``z`` ``(n, latent_dim)`` from N(0, I), on the generator's device and dtype."""
        check_int(n, "n")
        device, dtype = self._device_dtype()
        if generator is not None:
            return torch.randn(n, self.latent_dim, generator=generator, dtype=dtype).to(device)
        return torch.randn(n, self.latent_dim, dtype=dtype, device=device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)`` ``(N, *event)``, differentiable (the generator's forward pass)."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(getattr(z, 'shape', ()))}")
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *event)`` (no gradient).

        The generator runs in eval mode (its mode is restored afterwards): batch normalization
        uses its running statistics, so a sample does not depend on the others drawn with it,
        and sampling never changes those statistics.
        """
        z = self.prior_sample(n, generator)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generate(z)
        finally:
            self.generator.train(was_training)

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's raw scores ``(B,)`` (logits for minimax / non-saturating)."""
        return _scores(self.discriminator(x), "the discriminator's output")

    # -- losses --------------------------------------------------------------------
    def _real(self, batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"the data batch must be a floating tensor (B, *event), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        return x

    def discriminator_loss(self, batch) -> torch.Tensor:
        """The discriminator's loss on a real batch and as many fresh samples (detached from G);
        for ``wgan_gp`` plus ``gp_weight`` times :func:`gradient_penalty`."""
        x = self._real(batch)
        with torch.no_grad():
            fake = self.generate(self.prior_sample(x.shape[0]))  # (B, *event)
        cfg = self.config
        loss = discriminator_loss(self.critic(x), self.critic(fake), cfg.objective)
        if cfg.objective == "wgan_gp" and cfg.gp_weight > 0:
            loss = loss + cfg.gp_weight * gradient_penalty(self.critic, x, fake)
        return loss

    def generator_loss(self, batch) -> torch.Tensor:
        """The generator's loss on as many fresh samples as the batch has rows."""
        n = self._real(batch).shape[0]
        fake = self.generate(self.prior_sample(n))
        return generator_loss(self.critic(fake), self.config.objective)

    def players(self) -> list[Player]:
        """The discriminator, then the generator (every ``d_steps`` mini-batches), for :func:`gmlib.train.train`."""
        cfg = self.config
        return [
            Player("discriminator", list(self.discriminator.parameters()), self.discriminator_loss,
                   every=1, lr=cfg.lr_d, betas=cfg.betas),
            Player("generator", list(self.generator.parameters()), self.generator_loss,
                   every=cfg.d_steps, lr=cfg.lr_g, betas=cfg.betas),
        ]
