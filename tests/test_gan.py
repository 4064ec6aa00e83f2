"""Chapter 6: generative adversarial networks (gmlib.gan) and the two-player training loop.

What is checked, and how:
- every loss equals its formula written out by hand with ``math`` on a few numbers;
- the minimax value at the optimal discriminator is -log 4 + 2 JS (JS from SciPy), and
  exactly -log 4 when p_g = p_data (by quadrature and from the losses at logit 0);
- a discriminator trained to convergence on samples of two 1-D Gaussians approaches
  D* = p_data / (p_data + p_g); its family (a logit quadratic in x) contains D*, so the
  remaining error is sampling and optimisation error, bounded by a stated tolerance;
- the gradient penalty equals the formula with gradients from torch.autograd.grad, is zero
  for a linear critic of unit slope and (|w| - 1)^2 for slope w, and is differentiable in
  the critic's parameters (checked against finite differences in float64);
- the generator losses' gradients in the logit are -sigmoid(l) / B (minimax, vanishing
  where D rejects the samples) and -(1 - sigmoid(l)) / B (non-saturating);
- the loop: the discriminator step leaves the generator alone and the generator step leaves
  the discriminator alone; d_steps sets the ratio of updates; a seed reproduces a run.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm
from torch import nn

from gmlib.data import toy_2d, toy_2d_modes
from gmlib.gan import (
    GAN,
    OBJECTIVES,
    GANConfig,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    minimax_value,
    optimal_discriminator,
)
from gmlib.nets import DCDiscriminator, DCGenerator, mlp
from gmlib.train import Player, train

pytestmark = pytest.mark.usefixtures("one_thread")

LOG4 = math.log(4.0)


def _sp(a: float) -> float:  # softplus, log(1 + e^a)
    return math.log1p(math.exp(a))


def _sig(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


REAL = [0.3, -1.2, 2.0]
FAKE = [-0.5, 0.7, 1.5, -2.5]


def _hand_d_loss(objective):
    r, f = REAL, FAKE
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    if objective in ("minimax", "non_saturating"):
        return mean([-math.log(_sig(a)) for a in r]) + mean([-math.log(1 - _sig(a)) for a in f])
    if objective == "least_squares":
        return 0.5 * mean([(a - 1) ** 2 for a in r]) + 0.5 * mean([a**2 for a in f])
    if objective == "hinge":
        return mean([max(0.0, 1 - a) for a in r]) + mean([max(0.0, 1 + a) for a in f])
    return mean(f) - mean(r)


def _hand_g_loss(objective):
    f = FAKE
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    if objective == "minimax":
        return mean([math.log(1 - _sig(a)) for a in f])
    if objective == "non_saturating":
        return mean([-math.log(_sig(a)) for a in f])
    if objective == "least_squares":
        return 0.5 * mean([(a - 1) ** 2 for a in f])
    return -mean(f)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_losses_equal_their_formulas(objective):
    r = torch.tensor(REAL, dtype=torch.float64)
    f = torch.tensor(FAKE, dtype=torch.float64)
    assert float(discriminator_loss(r, f, objective)) == pytest.approx(_hand_d_loss(objective), rel=1e-12)
    assert float(generator_loss(f, objective)) == pytest.approx(_hand_g_loss(objective), rel=1e-12)
    # (B, 1) outputs, as nn.Linear(..., 1) gives them, mean the same
    assert float(discriminator_loss(r[:, None], f[:, None], objective)) == pytest.approx(_hand_d_loss(objective), rel=1e-12)


def test_cross_entropy_losses_are_stable_for_confident_discriminators():
    big = torch.tensor([200.0, -200.0], dtype=torch.float32)
    for objective in ("minimax", "non_saturating"):
        assert torch.isfinite(discriminator_loss(big, big, objective))
        assert torch.isfinite(generator_loss(big, objective))
    # -log sigmoid(-200) = 200 (to float precision), -log(1 - sigmoid(200)) = 200
    assert float(discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0]), "minimax")) == pytest.approx(400.0)
    assert float(generator_loss(torch.tensor([-200.0]), "non_saturating")) == pytest.approx(200.0)


def test_value_at_half_is_minus_log_4():
    """D = 1/2 everywhere (logit 0): V = log 1/2 + log 1/2 = -log 4, the value of the game at p_g = p_data."""
    zeros = torch.zeros(5, dtype=torch.float64)
    assert -float(discriminator_loss(zeros, zeros, "minimax")) == pytest.approx(-LOG4, abs=1e-15)


def _grid(lo=-12.0, hi=12.0, n=200_001):
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return x, float(x[1] - x[0])


def _normal_pdf(x, mu, sd):
    return torch.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def test_minimax_value_is_minus_log_4_at_equal_densities():
    x, dx = _grid()
    p = _normal_pdf(x, 0.3, 1.2)
    assert float(minimax_value(p, p, dx)) == pytest.approx(-LOG4, abs=1e-9)
    assert torch.allclose(optimal_discriminator(p, p), torch.full_like(p, 0.5))


@pytest.mark.parametrize("mu_g, sd_g", [(1.0, 1.0), (-2.0, 0.5), (3.0, 2.0)])
def test_minimax_value_equals_minus_log_4_plus_twice_js(mu_g, sd_g):
    """V(D*, G) = -log 4 + 2 JS(p_data || p_g) (Goodfellow et al. 2014, Theorem 1); JS from SciPy."""
    x, dx = _grid(-30.0, 30.0, 400_001)  # wide enough that both densities' tails are below 1e-20
    p_data, p_g = _normal_pdf(x, 0.0, 1.0), _normal_pdf(x, mu_g, sd_g)
    js = jensenshannon((p_data * dx).numpy(), (p_g * dx).numpy()) ** 2  # SciPy returns the square root, in nats
    value = float(minimax_value(p_data, p_g, dx))
    assert value == pytest.approx(-LOG4 + 2 * js, abs=1e-7)
    assert value > -LOG4
    # D* maximises V for the fixed G: any other discriminator (here D* pushed towards 1/2 or away) scores less
    d_star = optimal_discriminator(p_data, p_g)

    def v(d):
        eps = 1e-300
        return float(((p_data * torch.log(d + eps) + p_g * torch.log(1 - d + eps)).sum() * dx))

    for t in (0.5, 0.9, 1.1):
        other = (0.5 + t * (d_star - 0.5)).clamp(1e-12, 1 - 1e-12)
        assert v(other) < value + 1e-12


class _Quadratic(nn.Module):
    """A discriminator whose logit is a + b x + c x^2: the family that contains D* for two Gaussians."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1, dtype=torch.float64)

    def forward(self, x):
        return self.lin(torch.cat([x, x**2], dim=1))  # (B, 1)


class _DiscriminatorOnly(nn.Module):
    """A GAN whose generator stays fixed: only the discriminator plays (one player)."""

    def __init__(self, gan):
        super().__init__()
        self.gan = gan

    def players(self):
        return [Player("discriminator", list(self.gan.discriminator.parameters()), self.gan.discriminator_loss, lr=0.05)]


def test_discriminator_trained_to_convergence_approaches_d_star():
    """p_data = N(0, 1), p_g = N(1.5, 0.7^2) (the generator x = 1.5 + 0.7 z, fixed). A discriminator
    trained by the minimax loss on 40 000 real examples converges to D*. Tolerance: 0.03 in D on
    [-2, 3], where both densities carry mass (the sampling error of a 3-parameter logistic fit on
    40 000 + 40 000 points is about 0.01 there)."""
    torch.manual_seed(0)
    gen = nn.Linear(1, 1, dtype=torch.float64)
    with torch.no_grad():
        gen.weight.fill_(0.7)
        gen.bias.fill_(1.5)
    gen.requires_grad_(False)
    gan = GAN(gen, _Quadratic(), 1, GANConfig(objective="minimax"))
    x = torch.randn(40_000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hist = train(_DiscriminatorOnly(gan), x, epochs=60, batch_size=2000, progress=False, seed=0)
    assert hist.player_loss["discriminator"][-1] < hist.player_loss["discriminator"][0]
    grid = torch.linspace(-2.0, 3.0, 101, dtype=torch.float64)
    d_star = optimal_discriminator(torch.as_tensor(norm.pdf(grid.numpy(), 0, 1)), torch.as_tensor(norm.pdf(grid.numpy(), 1.5, 0.7)))
    with torch.no_grad():
        d = torch.sigmoid(gan.critic(grid[:, None]))
    assert float((d - d_star).abs().max()) < 0.03
    # and the generator really was left alone
    assert float(gen.weight) == 0.7 and float(gen.bias) == 1.5


def _critic_mlp():
    torch.manual_seed(3)
    return mlp(3, [16, 16], 1, activation="tanh").double()


def test_gradient_penalty_equals_formula_with_autograd():
    critic = _critic_mlp()
    g = torch.Generator().manual_seed(0)
    real = torch.randn(6, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.rand(6, generator=g, dtype=torch.float64)
    expected = 0.0
    for b in range(6):  # one example at a time: the norm of d critic(x_hat_b) / d x_hat_b
        xh = (eps[b] * real[b] + (1 - eps[b]) * fake[b]).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(xh[None]).sum(), xh)
        expected += (float(grad.norm()) - 1.0) ** 2 / 6
    assert float(gradient_penalty(critic, real, fake, eps=eps).detach()) == pytest.approx(expected, rel=1e-12)
    # the same with eps drawn from a seeded generator
    a = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    b = gradient_penalty(critic, real, fake, eps=torch.rand(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-14)


def test_gradient_penalty_of_linear_critics():
    real = torch.randn(8, 4, dtype=torch.float64)
    fake = torch.randn(8, 4, dtype=torch.float64)
    for slope in (1.0, 0.3, 2.5):
        w = torch.randn(4, dtype=torch.float64)
        w = slope * w / w.norm()
        critic = lambda x, w=w: x @ w + 0.7  # noqa: E731
        gp = float(gradient_penalty(critic, real, fake).detach())
        assert gp == pytest.approx((slope - 1.0) ** 2, abs=1e-14)
    # a 1-Lipschitz linear critic of unit slope has no penalty, whatever the batch
    lin = nn.Linear(4, 1, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.6, 0.0, -0.8, 0.0]]))
    assert float(gradient_penalty(lin, real, fake).detach()) == pytest.approx(0.0, abs=1e-14)


def test_gradient_penalty_is_differentiable_in_the_critic_parameters():
    """WGAN-GP backpropagates through the penalty (double backprop): its gradient in a critic
    weight matches a central finite difference (float64)."""
    critic = _critic_mlp()
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    eps = torch.rand(5, generator=g, dtype=torch.float64)
    w = critic[0].weight
    (grad,) = torch.autograd.grad(gradient_penalty(critic, real, fake, eps=eps), w)
    h = 1e-6
    for idx in [(0, 0), (3, 1), (7, 2)]:
        with torch.no_grad():
            w[idx] += h
            up = float(gradient_penalty(critic, real, fake, eps=eps).detach())
            w[idx] -= 2 * h
            down = float(gradient_penalty(critic, real, fake, eps=eps).detach())
            w[idx] += h
        assert float(grad[idx]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_generator_gradients_saturate_only_for_minimax():
    """d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -(1 - sigmoid(l)) (ch06:nonsat):
    when D confidently rejects a sample (l << 0) the minimax gradient vanishes, the non-saturating one does not."""
    logits = torch.tensor([-8.0, -2.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    (g_mm,) = torch.autograd.grad(generator_loss(logits, "minimax"), logits)
    (g_ns,) = torch.autograd.grad(generator_loss(logits, "non_saturating"), logits)
    s = torch.sigmoid(logits.detach())
    assert torch.allclose(g_mm, -s / 4, rtol=1e-12)
    assert torch.allclose(g_ns, -(1 - s) / 4, rtol=1e-12)
    assert abs(float(g_mm[0])) < 1e-4 < abs(float(g_ns[0]))  # at l = -8: 3e-4/4 vs ~1/4


def _toy_gan(objective="non_saturating", d_steps=1):
    torch.manual_seed(0)
    return GAN(mlp(4, [32, 32], 2), mlp(2, [32, 32], 1), 4,
               GANConfig(objective=objective, d_steps=d_steps, lr_d=1e-3, lr_g=1e-3))


def test_each_loss_reaches_only_its_own_network():
    gan = _toy_gan()
    x = toy_2d("eight_gaussians", 64, seed=0)
    gan.discriminator_loss(x).backward()
    assert all(p.grad is None for p in gan.generator.parameters())  # the fake batch is detached
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in gan.discriminator.parameters())
    gan.zero_grad(set_to_none=True)
    gan.generator_loss(x).backward()  # flows through D into G (train() passes inputs= G's parameters only)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in gan.generator.parameters())


def test_discriminator_parameters_after_a_step_equal_a_hand_written_step():
    """train() with two players equals: Adam step of D on its loss, then Adam step of G on its loss
    (with D's new weights), with the noise drawn in that order from the seeded global RNG."""
    x = toy_2d("eight_gaussians", 32, seed=1)
    gan = _toy_gan()
    ref = _toy_gan()
    train(gan, x, epochs=1, batch_size=32, progress=False, seed=4)

    torch.manual_seed(4)
    opt_d = torch.optim.Adam(ref.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(ref.generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    order = torch.randperm(32, generator=torch.Generator().manual_seed(4))
    batch = x[order]
    fake = ref.generator(torch.randn(32, 4)).detach()
    d_loss = nn.functional.softplus(-ref.discriminator(batch)).mean() + nn.functional.softplus(ref.discriminator(fake)).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = nn.functional.softplus(-ref.discriminator(ref.generator(torch.randn(32, 4)))).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    for a, b in zip(gan.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7), "the two-player loop differs from the hand-written alternating step"


def test_d_steps_sets_the_ratio_of_updates():
    calls = {"discriminator": 0, "generator": 0}
    gan = _toy_gan(d_steps=3)
    players = gan.players()

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.gan = gan

        def players(self):
            out = []
            for p in players:
                def loss(batch, p=p):
                    calls[p.name] += 1
                    return p.loss(batch)
                out.append(Player(p.name, p.parameters, loss, every=p.every, lr=p.lr, betas=p.betas))
            return out

    x = toy_2d("eight_gaussians", 20 * 16, seed=0)
    hist = train(Counting(), x, epochs=2, batch_size=16, progress=False)  # 40 mini-batches
    assert calls == {"discriminator": 40, "generator": 14}  # batches 0, 3, ..., 39
    assert set(hist.player_loss) == {"discriminator", "generator"}
    assert hist.train_loss == hist.player_loss["discriminator"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_training_is_reproducible_and_finite(objective):
    x = toy_2d("eight_gaussians", 256, seed=0)
    runs = []
    for _ in range(2):
        gan = _toy_gan(objective)
        hist = train(gan, x, epochs=3, batch_size=64, progress=False, seed=2)
        assert all(math.isfinite(v) for vals in hist.player_loss.values() for v in vals)
        runs.append(torch.cat([p.detach().flatten() for p in gan.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_a_trained_toy_gan_moves_its_samples_towards_the_modes():
    """400 steps of the non-saturating GAN on the ring (2x32 MLPs, lr 2e-3): the median distance of a
    sample to its nearest mode falls from about 1.8 (the untrained generator puts its samples near the
    centre) to under half that (0.33 to 0.93 over seeds 0-4). A learning check, not a benchmark: mode
    counts after so short a run vary too much with the seed to assert."""
    x = toy_2d("eight_gaussians", 256 * 20, seed=0)
    centers, _ = toy_2d_modes("eight_gaussians")
    torch.manual_seed(0)
    gan = GAN(mlp(4, [32, 32], 2), mlp(2, [32, 32], 1), 4, GANConfig(lr_d=2e-3, lr_g=2e-3))

    def median_distance(g):
        s = g.sample(1000, torch.Generator().manual_seed(0)).double()
        return float(torch.cdist(s, centers).min(1).values.median())

    before = median_distance(gan)
    train(gan, x, epochs=20, batch_size=256, progress=False, seed=0)
    after = median_distance(gan)
    assert before > 1.5 and after < 0.5 * before, (before, after)


def test_sample_and_dcgan_networks():
    gan = GAN(DCGenerator(16, 8, channels=8), DCDiscriminator(8, channels=8), 16)
    s = gan.sample(5, torch.Generator().manual_seed(0))
    assert s.shape == (5, 64) and not s.requires_grad
    assert float(s.abs().max()) < 1.0  # tanh output
    assert torch.equal(s, gan.sample(5, torch.Generator().manual_seed(0)))
    assert gan.critic(s).shape == (5,)
    # the discriminator scores each image alone (no batch statistics), as the gradient penalty needs
    assert torch.allclose(gan.critic(s)[:2], gan.critic(s[:2]), atol=1e-6)
    # sampling uses the batch-norm running statistics and leaves them (and the mode) alone
    bn = gan.generator.fc[1]
    gan.train()
    before = bn.running_mean.clone()
    assert torch.allclose(gan.sample(3, torch.Generator().manual_seed(0)), s[:3], atol=1e-6)
    assert torch.equal(bn.running_mean, before) and gan.generator.training


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="unknown GAN objective"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), "wasserstein")
    with pytest.raises(ValueError, match="unknown GAN objective"):
        GANConfig(objective="nonsaturating")
    with pytest.raises(ValueError, match=r"shape \(B,\) or \(B, 1\)"):
        generator_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="floating"):
        generator_loss(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="eps must have shape"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(3, 2), eps=torch.zeros(2))
    with pytest.raises(ValueError, match="d_steps"):
        GANConfig(d_steps=0)
    with pytest.raises(ValueError, match="betas"):
        GANConfig(betas=(0.5, 1.0))
    gan = _toy_gan()
    with pytest.raises(ValueError, match=r"z must have shape \(N, 4\)"):
        gan.generate(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="data batch must be a floating tensor"):
        gan.discriminator_loss(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="val_data needs"):
        train(gan, torch.zeros(8, 2), torch.zeros(4, 2), epochs=1, progress=False)
    with pytest.raises(ValueError, match="both densities are zero"):
        optimal_discriminator(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        optimal_discriminator(torch.tensor([-1.0]), torch.tensor([1.0]))


def test_train_rejects_malformed_players():
    class NoPlayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def players(self):
            return []

    with pytest.raises(ValueError, match="non-empty list of gmlib.train.Player"):
        train(NoPlayers(), torch.zeros(4, 1), epochs=1, progress=False)

    class Twice(NoPlayers):
        def players(self):
            return [Player("a", [self.w], lambda b: self.w.sum()), Player("a", [self.w], lambda b: self.w.sum())]

    with pytest.raises(ValueError, match="distinct"):
        train(Twice(), torch.zeros(4, 1), epochs=1, progress=False)

    class Vector(NoPlayers):
        def players(self):
            return [Player("a", [self.w], lambda b: self.w * b.sum())]

    with pytest.raises(ValueError, match="'a' must be a scalar tensor"):
        train(Vector(), torch.zeros(4, 1), epochs=1, progress=False)


def test_callback_sees_every_epoch():
    seen = []
    gan = _toy_gan()
    x = toy_2d("eight_gaussians", 128, seed=0)
    train(gan, x, epochs=3, batch_size=64, progress=False,
          callback=lambda epoch, model, hist: seen.append((epoch, model is gan, len(hist.player_loss["generator"]),
                                                           torch.is_grad_enabled())))
    assert seen == [(0, True, 1, False), (1, True, 2, False), (2, True, 3, False)]
    with pytest.raises(ValueError, match="callback must be callable"):
        train(gan, x, epochs=1, progress=False, callback=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_and_penalty_on_cuda_match_cpu():
    x = toy_2d("eight_gaussians", 64, seed=0, dtype=torch.float64)
    cpu, gpu = _toy_gan().double(), _toy_gan().double().cuda()
    eps = torch.rand(64, dtype=torch.float64)
    a = gradient_penalty(cpu.critic, x, x.flip(0), eps=eps)
    b = gradient_penalty(gpu.critic, x.cuda(), x.flip(0).cuda(), eps=eps.cuda())
    assert float(a) == pytest.approx(float(b), rel=1e-9)
    for objective in OBJECTIVES:
        assert float(discriminator_loss(cpu.critic(x), cpu.critic(x.flip(0)), objective)) == pytest.approx(
            float(discriminator_loss(gpu.critic(x.cuda()), gpu.critic(x.flip(0).cuda()), objective)), rel=1e-9)
    assert gpu.sample(3).device.type == "cuda"
    hist = train(gpu, x, epochs=2, batch_size=32, progress=False, device="cuda")
    assert all(math.isfinite(v) for v in hist.player_loss["generator"])
