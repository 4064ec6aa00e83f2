"""Chapter 9: the diffusion and flow-matching maths of gmlib.diffusion, against closed forms.

For Gaussian data N(mu, Sigma) everything is known: x_t = alpha x_0 + sigma eps is Gaussian with
covariance C = alpha^2 Sigma + sigma^2 I, the optimal noise prediction is E[eps | x_t] =
sigma C^{-1}(x_t - alpha mu), and the probability-flow ODE of that predictor transports the exact
marginals. Those predictors, plugged into the library's samplers and likelihoods, must reproduce the
data distribution and its log-density.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from gmlib.diffusion import (FlowMatching, GaussianDiffusion, SCHEDULES, discretized_gaussian_log_likelihood, log_snr,
                             normal_kl, preferred_input, tau_from_log_snr)
from gmlib.nets import DCGenerator, TimeMLP, TimeUNet

MU = torch.tensor([0.8, -0.4], dtype=torch.float64)
SIGMA = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


class OptimalNoise(nn.Module):
    """E[eps | x_tau] for Gaussian data under a diffusion schedule (float64)."""

    def __init__(self, schedule: str, mu=MU, cov=SIGMA):
        super().__init__()
        self.schedule = schedule
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))  # sets the model's dtype

    def forward(self, x, tau, y=None):
        lam = log_snr(tau.double(), self.schedule)
        a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
        c = a2[:, None, None] * self.cov + s2[:, None, None] * torch.eye(len(self.mu), dtype=torch.float64)
        r = (x.double() - a2.sqrt()[:, None] * self.mu).unsqueeze(-1)
        return s2.sqrt()[:, None] * torch.linalg.solve(c, r).squeeze(-1) + 0 * self.dummy


class OptimalVelocity(nn.Module):
    """E[eps - x_0 | x_tau] on the straight path x_tau = (1 - tau) x_0 + tau eps, Gaussian data."""

    def __init__(self, mu=MU, cov=SIGMA):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, tau, y=None):
        a, s = 1 - tau.double(), tau.double()
        c = a[:, None, None] ** 2 * self.cov + s[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)
        r = torch.linalg.solve(c, (x.double() - a[:, None] * self.mu).unsqueeze(-1)).squeeze(-1)
        eps = s[:, None] * r
        x0 = self.mu + a[:, None] * (self.cov @ r.unsqueeze(-1)).squeeze(-1)
        return eps - x0


def gaussian_samples(n, seed=0):
    return MultivariateNormal(MU, SIGMA).sample((n,)) if seed is None else \
        MU + torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) @ \
        torch.linalg.cholesky(SIGMA).T


def assert_moments(samples, *, z=5.0, slack=0.0):
    """Sample mean and covariance of ``samples`` match MU and SIGMA within ``z`` standard errors."""
    n = samples.shape[0]
    mean = samples.mean(0)
    se_mean = (SIGMA.diagonal() / n).sqrt()
    assert ((mean - MU).abs() <= z * se_mean + slack).all(), (mean, MU)
    cov = torch.cov(samples.T)
    se_cov = ((SIGMA**2 + torch.outer(SIGMA.diagonal(), SIGMA.diagonal())) / n).sqrt()  # Gaussian: Var(S_ij)
    assert ((cov - SIGMA).abs() <= z * se_cov + slack).all(), (cov, SIGMA)


# ---- schedules and the forward process ----------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_buffers_are_float64_and_consistent(schedule):
    d = GaussianDiffusion(TimeMLP(2, 2, (8,)), 2, timesteps=200, schedule=schedule)
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance", "log_snr"):
        assert getattr(d, name).dtype == torch.float64 and name in dict(d.named_buffers())
    assert torch.allclose(torch.cumprod(d.alphas, 0), d.alphas_cumprod, rtol=1e-10)
    assert (d.betas > 0).all() and (d.betas < 1).all()
    assert (d.log_snr[1:] < d.log_snr[:-1]).all()  # the signal-to-noise ratio falls
    assert torch.allclose(d.sqrt_one_minus_alphas_cumprod ** 2, 1 - d.alphas_cumprod, rtol=1e-9, atol=1e-15)


def test_linear_schedule_matches_ho_et_al_betas():
    d = GaussianDiffusion(TimeMLP(2, 2, (8,)), 2, timesteps=1000, schedule="linear")
    ho = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(d.betas, ho, rtol=0.02, atol=2e-5)


def test_q_sample_closed_form_equals_iterating_the_chain():
    d = GaussianDiffusion(OptimalNoise("cosine"), 2, timesteps=100, schedule="cosine")
    g = torch.Generator().manual_seed(1)
    n, x0 = 40000, torch.tensor([[0.9, -0.7]], dtype=torch.float64)
    for t in (0, 9, 49, 99):
        x = x0.expand(n, 2).clone()
        for k in range(t + 1):  # x_k = sqrt(1 - beta_k) x_{k-1} + sqrt(beta_k) eps
            x = d.alphas[k].sqrt() * x + d.betas[k].sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
        mean, var, log_var = d.q_mean_variance(x0.expand(n, 2), torch.full((n,), t))
        assert torch.allclose(log_var, var.log())
        # the chain's sample mean and variance against the closed form: 5 standard errors
        assert ((x.mean(0) - mean[0]).abs() <= 5 * (var[0] / n).sqrt()).all()
        assert ((x.var(0) - var[0]).abs() <= 5 * var[0] * math.sqrt(2 / (n - 1))).all()
        direct = d.q_sample(x0.expand(n, 2), torch.full((n,), t), torch.randn(n, 2, generator=g, dtype=torch.float64))
        ks = stats.ks_2samp(direct[:, 0].numpy(), x[:, 0].numpy())
        assert ks.pvalue > 1e-4


def test_posterior_is_bayes_rule_on_the_two_gaussians():
    d = GaussianDiffusion(OptimalNoise("linear"), 2, timesteps=50, schedule="linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(50, 2, generator=g, dtype=torch.float64)
    xt = torch.randn(50, 2, generator=g, dtype=torch.float64)
    t = torch.arange(50)
    mean, var, _ = d.q_posterior_mean_variance(x0, xt, t)
    # prior q(x_{t-1} | x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev); likelihood q(x_t | x_{t-1}) = N(sqrt(alpha) x, beta)
    abar_prev, alpha, beta = d.alphas_cumprod_prev[t, None], d.alphas[t, None], d.betas[t, None]
    precision = 1 / (1 - abar_prev) + alpha / beta
    bayes_mean = (abar_prev.sqrt() * x0 / (1 - abar_prev) + alpha.sqrt() * xt / beta) / precision
    bayes_var = 1 / precision
    assert torch.allclose(mean[1:], bayes_mean[1:], rtol=1e-9, atol=1e-12)
    assert torch.allclose(var[1:].expand(-1, 2), bayes_var[1:].expand(-1, 2), rtol=1e-9)
    # the first step's posterior is the data itself (no noise before it)
    assert torch.allclose(mean[0], x0[0], atol=1e-12) and float(var[0]) == 0.0


# ---- the bound ---------------------------------------------------------------------------------------


def test_bound_terms_are_gaussian_kls_and_the_snr_form():
    torch.manual_seed(0)
    net = TimeMLP(2, 2, (16, 16), zero_out=False).double()
    d = GaussianDiffusion(net, 2, timesteps=100, schedule="cosine")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 100, (64,), generator=g)
    noise = torch.randn(64, 2, generator=g, dtype=torch.float64)
    terms = d.vb_term(x, t, noise=noise)
    x_t = d.q_sample(x, t, noise)
    true_mean, true_var, _ = d.q_posterior_mean_variance(x, x_t, t)
    model = d.p_mean_variance(x_t, t, clip_denoised=False)
    reference = kl_divergence(Normal(true_mean, true_var.sqrt().expand_as(true_mean)),
                              Normal(model["mean"], model["variance"].sqrt().expand_as(true_mean))).sum(1)
    assert torch.allclose(terms, reference, rtol=1e-7, atol=1e-10)
    # (ch09:kl-snr): 1/2 (SNR_{t-1} / SNR_t - 1) ||eps - eps_hat||^2
    w = 0.5 * torch.expm1(d.log_snr[t - 1] - d.log_snr[t])
    assert torch.allclose(terms, w * (noise - model["eps"]).pow(2).sum(1), rtol=1e-6)
    assert torch.allclose(normal_kl(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(3)),
                          torch.full((3,), 0.5))


def test_discretized_decoder_is_a_distribution_over_the_levels():
    levels = 17
    mean = torch.tensor([-1.3, -0.2, 0.0, 0.61, 0.97, 1.4], dtype=torch.float64)
    for log_scale in (-6.0, -2.0, 0.0):
        grid = torch.arange(levels, dtype=torch.float64)[:, None].expand(levels, len(mean))
        logp = discretized_gaussian_log_likelihood(grid, mean.expand_as(grid), torch.full_like(grid, log_scale), levels)
        assert torch.allclose(logp.exp().sum(0), torch.ones(len(mean), dtype=torch.float64), atol=1e-12)
        # against SciPy's CDF on the inner bins
        edges = np.linspace(-1, 1, levels)
        k = 7
        m, sd = mean.numpy(), math.exp(log_scale)
        upper = edges[k] > m  # the bin above the mean: a difference of survival functions is accurate there
        ref = np.where(upper, stats.norm.sf(edges[k] - 1 / 16, m, sd) - stats.norm.sf(edges[k] + 1 / 16, m, sd),
                       stats.norm.cdf(edges[k] + 1 / 16, m, sd) - stats.norm.cdf(edges[k] - 1 / 16, m, sd))
        assert np.allclose(logp[k].exp().numpy(), ref, rtol=1e-8, atol=1e-300)
    # far in a tail: finite and accurate where 1 - Phi rounds to 0
    far = discretized_gaussian_log_likelihood(torch.tensor([10.0]), torch.tensor([-0.9]), torch.tensor([-5.0]), 17)
    ref = stats.norm.logsf((2 * 10 / 16 - 1 - 1 / 16 + 0.9) / math.exp(-5.0)) + math.log(
        -math.expm1(stats.norm.logsf((2 * 10 / 16 - 1 + 1 / 16 + 0.9) / math.exp(-5.0))
                    - stats.norm.logsf((2 * 10 / 16 - 1 - 1 / 16 + 0.9) / math.exp(-5.0))))
    assert math.isfinite(float(far)) and abs(float(far) - ref) < 1e-6 * abs(ref)


def test_bound_estimate_and_vlb_loss_are_unbiased():
    torch.manual_seed(1)
    net = TimeMLP(2, 2, (16,), zero_out=False).double()
    d = GaussianDiffusion(net, 2, timesteps=40, schedule="linear")
    x = gaussian_samples(8, seed=2)
    g = torch.Generator().manual_seed(4)
    full = torch.stack([d.nll_bound(x, generator=g) for _ in range(50)])  # (50, 8): noise only
    sampled = torch.stack([d.nll_bound(x, t_samples=4, generator=g) for _ in range(400)])  # noise and steps
    diff = sampled.mean(0) - full.mean(0)
    se = (sampled.var(0) / 400 + full.var(0) / 50).sqrt()
    assert (diff.abs() <= 5 * se).all(), (diff, se)
    torch.manual_seed(5)
    with torch.no_grad():
        losses = torch.stack([d.loss(x, weighting="vlb") for _ in range(3000)])
    z = (losses.mean() - full.mean()) / (losses.std() / math.sqrt(3000))
    assert abs(float(z)) < 5


def expected_slack(d: GaussianDiffusion) -> float:
    """E[bound] - E[-log p(x)] for Gaussian data and the optimal denoiser, in closed form: the reverse steps
    have the right means but the posterior's variance beta~_t instead of the true reverse variance
    beta~_t + c_t^2 Var(x_0 | x_t) (c_t = posterior_mean_coef1), the decoder has variance 1/SNR_1 instead
    of Var(x_0 | x_1), and q(x_T) is not quite N(0, I). Per eigenvalue s of Sigma, Var(x_0 | x_t) =
    1 / (1/s + SNR_t)."""
    def kl_var(v_true, v_model):  # KL(N(m, v_true) || N(m, v_model))
        r = v_true / v_model
        return 0.5 * (r - 1 - torch.log(r))

    snr = torch.exp(d.log_snr)
    total = 0.0
    for s in torch.linalg.eigvalsh(SIGMA):
        post = 1 / (1 / s + snr)  # (T,)
        steps = kl_var(d.posterior_variance[1:] + d.posterior_mean_coef1[1:] ** 2 * post[1:], d.posterior_variance[1:])
        decoder = kl_var(post[0], 1 / snr[0])
        total += float(steps.sum() + decoder)
    a2 = d.alphas_cumprod[-1]
    q_T = MultivariateNormal(a2.sqrt() * MU, a2 * SIGMA + (1 - a2) * torch.eye(2, dtype=torch.float64))
    return total + float(kl_divergence(q_T, MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                                 torch.eye(2, dtype=torch.float64))))


def test_bound_exceeds_the_exact_nll_by_the_closed_form_slack():
    """With the optimal denoiser the bound's slack is known (:func:`expected_slack`): where the signal
    dominates, about (Delta lambda)^2 / 4 per step and dimension. Kingma et al.'s log-linear schedule
    (Delta lambda = 0.018 per step) leaves a tenth of a nat on this 2-D Gaussian; the cosine schedule's
    first steps jump by about one unit of log-SNR and leave most of a nat."""
    x = gaussian_samples(1000, seed=7)
    exact = -MultivariateNormal(MU, SIGMA).log_prob(x)
    gaps = {}
    for schedule in ("loglinear", "cosine"):
        d = GaussianDiffusion(OptimalNoise(schedule), 2, timesteps=1000, schedule=schedule)
        gap = d.nll_bound(x, generator=torch.Generator().manual_seed(0)) - exact
        se = float(gap.std() / math.sqrt(len(gap)))
        gaps[schedule] = expected = expected_slack(d)
        assert expected > 0 and abs(float(gap.mean()) - expected) < 4 * se, (schedule, float(gap.mean()), expected, se)
    assert gaps["loglinear"] < 0.2 < 0.5 < gaps["cosine"], gaps


# ---- sampling ------------------------------------------------------------------------------------------


def test_ddpm_with_the_optimal_denoiser_reproduces_the_data_distribution():
    d = GaussianDiffusion(OptimalNoise("linear"), 2, timesteps=1000, schedule="linear")
    x = d.sample(20000, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64
    assert_moments(x, slack=0.01)
    # and the deterministic sampler, 100 steps
    xd = d.sample(20000, steps=100, sampler="ddim", generator=torch.Generator().manual_seed(1))
    assert_moments(xd, slack=0.01)


def test_ddim_with_eta_one_is_the_ddpm_step():
    torch.manual_seed(0)
    d = GaussianDiffusion(TimeMLP(2, 2, (16,), zero_out=False).double(), 2, timesteps=100, schedule="cosine")
    x = torch.randn(32, 2, dtype=torch.float64)
    for t in (1, 40, 99):
        tt = torch.full((32,), t)
        a = d.ddim_step(x, tt, t - 1, eta=1.0, generator=torch.Generator().manual_seed(9))
        b = d.p_sample(x, tt, generator=torch.Generator().manual_seed(9))
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        # the step's variance, read off two draws' difference, is the posterior's
        g = torch.Generator().manual_seed(2)
        draws = torch.stack([d.ddim_step(x[:1].expand(4000, 2), torch.full((4000,), t), t - 1, eta=1.0, generator=g)])
        var = draws[0].var(0)
        assert torch.allclose(var, d.posterior_variance[t].expand(2), rtol=0.1)
    # eta = 0 is deterministic
    tt = torch.full((32,), 50)
    assert torch.equal(d.ddim_step(x, tt, 10, eta=0.0), d.ddim_step(x, tt, 10, eta=0.0))


def test_ddim_inversion_error_shrinks_with_the_step_count():
    d = GaussianDiffusion(OptimalNoise("cosine"), 2, timesteps=1000, schedule="cosine")
    x0 = gaussian_samples(500, seed=3)
    errors = []
    for steps in (10, 40, 160):
        x_T = d.ddim_invert(x0, steps)
        back = d.sample(500, steps=steps, sampler="ddim", x_T=x_T)
        errors.append(float((back - x0).abs().max()))
    # first order: four times the steps, about a quarter of the error
    assert errors[1] < errors[0] / 2.5 and errors[2] < errors[1] / 2.5 and errors[2] < 0.05, errors


def test_probability_flow_ode_gives_the_exact_gaussian_log_density():
    x = gaussian_samples(200, seed=5)
    tau0 = 1e-3
    for schedule in SCHEDULES:
        d = GaussianDiffusion(OptimalNoise(schedule), 2, timesteps=1000, schedule=schedule)

        def marginal(tau):  # q_tau = N(alpha mu, alpha^2 Sigma + sigma^2 I)
            lam = log_snr(torch.tensor(tau), schedule)
            a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
            return MultivariateNormal(a2.sqrt() * MU, a2 * SIGMA + s2 * torch.eye(2, dtype=torch.float64))

        exact = marginal(tau0).log_prob(x)
        logp = d.ode_log_prob(x, steps=100, tau0=tau0, prior_log_prob=marginal(1.0).log_prob)
        assert torch.allclose(logp, exact, atol=1e-5), (schedule, float((logp - exact).abs().max()))
        if schedule == "cosine":  # alpha_1^2 = 2e-9: the default prior N(0, I) is the marginal
            assert torch.allclose(d.ode_log_prob(x, steps=100, tau0=tau0), exact, atol=5e-4)
    # Hutchinson's estimate is unbiased: its mean over probes is the same
    est = d.ode_log_prob(x[:100], steps=50, tau0=tau0, hutchinson=1, generator=torch.Generator().manual_seed(0),
                         prior_log_prob=marginal(1.0).log_prob)
    z = (est - exact[:100]).mean() / ((est - exact[:100]).std() / math.sqrt(100))
    assert abs(float(z)) < 5 and float((est - exact[:100]).abs().max()) > 1e-3  # noisy, not exact


def test_inverse_schedule():
    tau = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for schedule in SCHEDULES:
        assert torch.allclose(tau_from_log_snr(log_snr(tau, schedule), schedule), tau, atol=1e-9)


def test_flow_matching_with_the_optimal_velocity_samples_and_scores_exactly():
    fm = FlowMatching(OptimalVelocity(), 2)
    x = fm.sample(20000, steps=50, sampler="heun", generator=torch.Generator().manual_seed(0))
    assert_moments(x, slack=0.01)
    data = gaussian_samples(200, seed=6)
    logp = fm.ode_log_prob(data, steps=100)
    assert torch.allclose(logp, MultivariateNormal(MU, SIGMA).log_prob(data), atol=1e-4)
    # Euler with few steps is visibly worse than Heun with as many network passes
    e = fm.sample(4000, steps=8, sampler="euler", generator=torch.Generator().manual_seed(1))
    h = fm.sample(4000, steps=4, sampler="heun", generator=torch.Generator().manual_seed(1))
    assert (torch.cov(h.T) - SIGMA).abs().max() < (torch.cov(e.T) - SIGMA).abs().max()


def test_flow_matching_loss_is_smallest_at_the_optimal_velocity():
    torch.manual_seed(0)
    x = gaussian_samples(4000, seed=8)
    best = FlowMatching(OptimalVelocity(), 2)
    other = FlowMatching(OptimalVelocity(mu=MU + 0.3), 2)
    torch.manual_seed(1)
    a = torch.stack([best.loss(x) for _ in range(5)]).mean()
    torch.manual_seed(1)
    b = torch.stack([other.loss(x) for _ in range(5)]).mean()
    assert a < b


# ---- conditioning --------------------------------------------------------------------------------------


def test_classifier_free_guidance_scales():
    torch.manual_seed(0)
    net = TimeMLP(2, 2, (16,), n_classes=3, zero_out=False)
    d = GaussianDiffusion(net, 2, timesteps=50, n_classes=3, p_uncond=0.2)
    x, t, y = torch.randn(10, 2), torch.randint(0, 50, (10,)), torch.randint(0, 3, (10,))
    tau = d.tau(t)
    cond, uncond = net(x, tau, y), net(x, tau, None)
    assert torch.allclose(d.predict_noise(x, t, y, guidance=0.0), uncond)
    assert torch.allclose(d.predict_noise(x, t, y, guidance=1.0), cond)
    assert torch.allclose(d.predict_noise(x, t, y, guidance=3.0), uncond + 3 * (cond - uncond), atol=1e-6)
    # the label is dropped for a fraction p_uncond of the training examples
    seen = []
    net.cond[0].label.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    torch.manual_seed(3)
    d.loss(torch.randn(4000, 2), torch.randint(0, 3, (4000,)))
    frac = float((seen[0] == 3).float().mean())
    assert abs(frac - 0.2) < 5 * math.sqrt(0.2 * 0.8 / 4000)


def test_classifier_guidance_shifts_along_the_classifier_gradient():
    torch.manual_seed(0)
    d = GaussianDiffusion(TimeMLP(2, 2, (16,), zero_out=False), 2, timesteps=50)
    w = torch.randn(3, 2)

    def classifier(x, tau):
        return x @ w.T  # logits: grad log p(y|x) = w_y - sum_k p_k w_k

    x, t = torch.randn(6, 2), torch.randint(0, 50, (6,))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = d.predict_noise(x, t)
    guided = d.predict_noise(x, t, y, classifier=classifier, classifier_scale=2.0)
    p = torch.softmax(x @ w.T, 1)
    grad = w[y] - p @ w
    sigma = d.sqrt_one_minus_alphas_cumprod[t].float()[:, None]
    assert torch.allclose(guided, plain - 2.0 * sigma * grad, atol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        d.predict_noise(x, t, classifier=classifier, classifier_scale=1.0)


def test_preferred_input_ascends_monotonically_and_stays_on_the_generators_range():
    torch.manual_seed(0)
    gen = DCGenerator(4, 8, channels=8).eval()
    clf = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    z0 = torch.randn(5, 4)
    out = preferred_input(clf, 3, z0, generator=gen, steps=60, lr=0.05)
    lp = out["log_probs"]
    assert lp.shape == (61, 5)
    assert (lp[1:] - lp[:-1] >= -1e-6).all() and (lp[-1] > lp[0]).all()
    assert torch.allclose(out["x"], gen(out["u"]), atol=1e-6)  # an image of the generator
    assert out["x"].abs().max() <= 1
    pix = preferred_input(clf, 3, torch.rand(5, 64), steps=60, lr=0.05, clamp=(0.0, 1.0))
    assert (pix["log_probs"][1:] - pix["log_probs"][:-1] >= -1e-6).all()
    assert pix["x"].min() >= 0 and pix["x"].max() <= 1


# ---- contract and errors --------------------------------------------------------------------------------


def test_image_contract_levels_and_errors():
    torch.manual_seed(0)
    d = GaussianDiffusion(TimeUNet(8, channels=8), 64, timesteps=20, levels=17, schedule="loglinear")
    x = torch.randint(0, 17, (5, 64)).float()
    assert d.loss(x).shape == ()
    b = d.nll_bound(x, t_samples=2)
    assert b.shape == (5,) and b.dtype == torch.float64 and torch.isfinite(b).all()
    s = d.sample(3, steps=5)
    assert s.shape == (3, 64) and torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 16
    with pytest.raises(ValueError, match="integers 0..16"):
        d.loss(x + 0.5)
    with pytest.raises(ValueError, match=r"shape \(B, 64\)"):
        d.loss(x[:, :10])
    with pytest.raises(ValueError, match="unconditional"):
        d.loss(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="step indices"):
        d.q_sample(d.to_model_space(x), torch.full((5,), 20))
    with pytest.raises(ValueError, match="schedule"):
        GaussianDiffusion(TimeMLP(2, 2), 2, schedule="quadratic")
    with pytest.raises(ValueError, match="sampler"):
        d.sample(2, sampler="euler")


def test_importance_sampled_loss_keeps_its_expectation():
    """Steps drawn from a skewed proposal and weighted by uniform / proposal: the same mean loss."""
    class Skewed(nn.Module):  # an error that grows with the noise level
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(4.0))

        def forward(self, x, tau, y=None):
            return self.scale * tau[:, None] ** 2 * x

    net = Skewed()
    d = GaussianDiffusion(net, 2, timesteps=100, schedule="loglinear", importance_bins=10)
    x = gaussian_samples(512, seed=1).float()
    with torch.no_grad():
        for _ in range(30):  # warm up the bins' statistics
            d.loss(x)
        proposal = d.step_proposal()
        assert proposal is not None and abs(float(proposal.sum()) - 1) < 1e-12
        assert float(proposal.max()) > 2 * float(proposal.min())  # skewed
        torch.manual_seed(1)
        weighted = torch.stack([d.loss(x[:64]) for _ in range(1000)])
        weighted_vlb = torch.stack([d.loss(x[:64], weighting="vlb") for _ in range(1000)])
        d.eval()  # evaluation draws steps uniformly
        assert d.step_proposal() is not None and d._draw_steps(8, "cpu")[1] is None
        torch.manual_seed(2)
        uniform = torch.stack([d.loss(x[:64]) for _ in range(1000)])
        uniform_vlb = torch.stack([d.loss(x[:64], weighting="vlb") for _ in range(1000)])
    for a, b in ((weighted, uniform), (weighted_vlb, uniform_vlb)):  # the simple loss and the bound
        z = (a.mean() - b.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(float(z)) < 5, float(z)
    with pytest.raises(ValueError, match="divide"):
        GaussianDiffusion(net, 2, timesteps=100, importance_bins=7)


def test_square_symmetries_and_the_augmented_loss():
    from gmlib.diffusion import square_symmetry

    x = torch.arange(64.0).reshape(1, 64).repeat(8, 1)
    images = square_symmetry(x, torch.arange(8), 8).view(8, 8, 8)
    base = x[0].view(8, 8)
    expected = [base, base.rot90(1), base.rot90(2), base.rot90(3), base.flip(1), base.flip(0), base.T,
                base.rot90(2).T]
    assert all(torch.equal(images[k], expected[k]) for k in range(8))
    # the eight are the dihedral group: distinct, and each a permutation of the pixels
    assert len({tuple(r.tolist()) for r in images.view(8, 64)}) == 8
    assert all(torch.equal(r.sort().values, x[0]) for r in images.view(8, 64))
    # training shows the network turned images with their label; evaluation never does
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, tau, y=None, aug=None):
            seen.append(aug)
            return self.w * x

    d = GaussianDiffusion(Recorder(), 64, timesteps=10, levels=17, symmetry_p=0.5)
    xs = torch.randint(0, 17, (4000, 64)).float()
    torch.manual_seed(0)
    d.loss(xs)
    frac = float((seen[-1] > 0).float().mean())
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / 4000) and int(seen[-1].max()) == 7
    d.eval()
    d.loss(xs[:10])
    d.nll_bound(xs[:3], t_samples=1)
    d.sample(2, steps=2)
    assert all(a is None for a in seen[1:])
    with pytest.raises(ValueError, match="square"):
        GaussianDiffusion(Recorder(), 10, symmetry_p=0.5)
    with pytest.raises(ValueError, match="no aug"):
        TimeUNet(8, channels=8)(torch.zeros(2, 64), torch.zeros(2), aug=torch.zeros(2))
