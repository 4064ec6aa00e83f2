"""Observation models of gmlib.likelihoods (Chapter 5, reused by later chapters).

Each log mass or density is compared with an independent implementation
(torch.distributions for Bernoulli, Categorical and Normal; SciPy's logistic CDF
for the discretized logistic); the discretized logistic's masses are summed over
every level by brute force. Sampling is checked against ``mean`` and the masses
within 4 standard errors, seeded. Everything in float64.
"""
import math

import pytest
import scipy.stats
import torch
import torch.distributions as TD

from gmlib.likelihoods import Bernoulli, Categorical, DiscretizedLogistic, Gaussian, Likelihood

f64 = torch.float64
Z = 4.0  # tolerance in standard errors

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=gen(seed), dtype=f64)


def levels_x(*shape, levels, seed=0):
    return torch.randint(0, levels, shape, generator=gen(seed)).to(f64)


# --- agreement with torch.distributions ------------------------------------------------------


def test_bernoulli_matches_torch_and_broadcasts_over_samples():
    logits = randn(3, 5, 7, seed=1, scale=3.0)  # (S, B, D)
    x = (randn(5, 7, seed=2) > 0).to(f64)  # (B, D)
    lik = Bernoulli()
    lp = lik.log_prob(x, logits)
    assert lp.shape == (3, 5)
    torch.testing.assert_close(lp, TD.Bernoulli(logits=logits).log_prob(x.expand(3, 5, 7)).sum(-1))
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))
    assert lik.param_size == 1 and lik.discrete and lik.param_shape(7) == (7,)


def test_bernoulli_sums_to_one_over_all_binary_vectors():
    logits = randn(1, 4, seed=3, scale=2.0)
    X = torch.tensor([[(i >> d) & 1 for d in range(4)] for i in range(16)], dtype=f64)  # (16, 4)
    lp = Bernoulli().log_prob(X, logits.expand(16, 4))
    torch.testing.assert_close(torch.logsumexp(lp, 0), torch.zeros((), dtype=f64))


@pytest.mark.parametrize("levels", [2, 17])
def test_categorical_matches_torch(levels):
    logits = randn(2, 6, 5, levels, seed=4, scale=2.0)  # (S, B, D, K)
    x = levels_x(6, 5, levels=levels, seed=5)
    lik = Categorical(levels)
    lp = lik.log_prob(x, logits)
    assert lp.shape == (2, 6) and lik.param_size == levels and lik.param_shape(5) == (5, levels)
    ref = TD.Categorical(logits=logits).log_prob(x.long().expand(2, 6, 5)).sum(-1)
    torch.testing.assert_close(lp, ref)
    torch.testing.assert_close(lik.mean(logits), (torch.softmax(logits, -1) * torch.arange(levels, dtype=f64)).sum(-1))


def test_gaussian_variants_match_torch_normal():
    mean, log_var = randn(3, 4, 6, seed=6), randn(3, 4, 6, seed=7, scale=0.5)
    x = randn(4, 6, seed=8)
    learned = Gaussian()
    assert learned.param_size == 2 and not learned.discrete
    lp = learned.log_prob(x, torch.stack([mean, log_var], -1))
    torch.testing.assert_close(lp, TD.Normal(mean, torch.exp(0.5 * log_var)).log_prob(x).sum(-1))
    fixed = Gaussian(log_var=-0.7)
    assert fixed.param_size == 1 and list(fixed.parameters()) == []
    ref = TD.Normal(mean, math.exp(-0.35)).log_prob(x).sum(-1)
    torch.testing.assert_close(fixed.log_prob(x, mean), ref)
    shared = Gaussian(log_var=-0.7, learn=True).double()
    torch.testing.assert_close(shared.log_prob(x, mean), ref)
    shared.log_prob(x, mean).sum().backward()  # the shared variance is a trained parameter
    assert shared.log_var.grad is not None and shared.log_var.grad.abs() > 0
    torch.testing.assert_close(learned.mean(torch.stack([mean, log_var], -1)), mean)


# --- the discretized logistic ----------------------------------------------------------------


def dl_params(n, seed, extreme=False):
    mu = randn(n, seed=seed, scale=0.8)
    log_s = randn(n, seed=seed + 1, scale=1.0) - 2.0
    if extreme:  # very sharp, very flat, and centred far outside [-1, 1]
        mu = torch.cat([mu, torch.tensor([0.0, 0.1, -5.0, 5.0, 1.0, -1.0], dtype=f64)])
        log_s = torch.cat([log_s, torch.tensor([-12.0, 6.0, -3.0, -3.0, -9.0, -9.0], dtype=f64)])
    return torch.stack([mu, log_s], -1)  # (n, 2)


def independent_dl_probs(params, levels):
    """Masses from the logistic CDF (SciPy), bin edges at +-infinity for the outer levels: (n, K)."""
    mu, s = params[:, 0].numpy(), torch.exp(params[:, 1]).numpy()
    h = 1.0 / (levels - 1)
    centres = [2.0 * k / (levels - 1) - 1.0 for k in range(levels)]
    cols = []
    for k, c in enumerate(centres):
        upper = 1.0 if k == levels - 1 else scipy.stats.logistic.cdf((c + h - mu) / s)
        lower = 0.0 if k == 0 else scipy.stats.logistic.cdf((c - h - mu) / s)
        cols.append(torch.as_tensor(upper - lower, dtype=f64))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("levels", [2, 5, 17, 256])
def test_discretized_logistic_masses_sum_to_one_and_match_cdf_differences(levels):
    lik = DiscretizedLogistic(levels)
    params = dl_params(20, seed=10, extreme=True)  # (n, 2): one pixel per row
    n = params.shape[0]
    # brute force over levels through the public log_prob, one pixel (D = 1) per row
    pixel = params[:, None, :]  # (n, 1, 2)
    lp = torch.stack([lik.log_prob(torch.full((n, 1), float(k), dtype=f64), pixel) for k in range(levels)], -1)
    assert torch.isfinite(lp).all()
    # 1e-10: with a scale of e^-12 a bin edge's rounding error (1e-16) is magnified 1.6e5 times
    torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(n, dtype=f64), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.exp(lp), independent_dl_probs(params, levels), atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(lik.log_prob_levels(pixel)[:, 0], lp)
    expected_level = (torch.exp(lp) * torch.arange(levels, dtype=f64)).sum(-1)
    torch.testing.assert_close(lik.mean(pixel)[:, 0], expected_level)


def test_discretized_logistic_middle_bins_keep_precision_where_cdfs_round_together():
    # far in a tail both CDF values round to the same float; the stable formula still gives the mass
    lik = DiscretizedLogistic(17)
    params = torch.tensor([[[-0.9, math.log(0.01)]]], dtype=f64)  # sharp, near level 0
    lp = lik.log_prob(torch.tensor([[12.0]], dtype=f64), params)
    a, b = (0.5 + 1 / 16 + 0.9) / 0.01, (0.5 - 1 / 16 + 0.9) / 0.01  # standardised edges of level 12
    exact = -b - math.log1p(math.exp(-b)) + math.log(-math.expm1(-(a - b))) - math.log1p(math.exp(-a))
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, torch.tensor([exact], dtype=f64), rtol=1e-12, atol=0)
    # gradients stay finite at extreme parameters
    p = dl_params(4, seed=12, extreme=True)[:, None, :].clone().requires_grad_(True)
    x = torch.tensor([[0.0], [16.0], [8.0], [3.0], [0.0], [16.0], [5.0], [11.0], [16.0], [0.0]], dtype=f64)
    lik.log_prob(x, p).sum().backward()
    assert torch.isfinite(p.grad).all()


# --- sampling ------------------------------------------------------------------------------------


def frequencies_match(draws, probs):
    """Each level's frequency within Z standard errors of its mass; draws (n, m), probs (m, K)."""
    n = draws.shape[0]
    K = probs.shape[-1]
    freq = torch.stack([(draws == k).to(f64).mean(0) for k in range(K)], -1)  # (m, K)
    se = torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() <= Z * se + 1e-12).all(), (freq - probs).abs().max()


def test_categorical_and_discretized_logistic_samples_follow_their_masses():
    n = 20000
    logits = randn(3, 5, seed=13, scale=1.5)  # (D, K)
    cat = Categorical(5)
    draws = cat.sample(logits.expand(n, 3, 5), generator=gen(14))  # (n, D)
    assert draws.dtype == f64 and draws.shape == (n, 3)
    frequencies_match(draws, torch.softmax(logits, -1))

    dl = DiscretizedLogistic(6)
    params = dl_params(4, seed=15)  # (D, 2)
    draws = dl.sample(params.expand(n, 4, 2), generator=gen(16))
    frequencies_match(draws, torch.exp(dl.log_prob_levels(params)))


@pytest.mark.parametrize(
    "lik, params",
    [
        (Bernoulli(), randn(6, seed=20)),
        (Categorical(4), randn(6, 4, seed=21)),
        (DiscretizedLogistic(9), dl_params(6, seed=22)),
        (Gaussian(), torch.stack([randn(6, seed=23), randn(6, seed=24, scale=0.3)], -1)),
        (Gaussian(log_var=0.4), randn(6, seed=25)),
    ],
)
def test_sample_means_agree_with_mean(lik, params):
    n = 20000
    draws = lik.sample(params.expand(n, *params.shape), generator=gen(26))  # (n, D)
    assert draws.shape == (n, 6)
    est, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    # + 4 / n: a pixel whose rare levels were never drawn has an empirical standard error of 0
    assert ((est - lik.mean(params)).abs() <= Z * se + 4.0 / n).all()
    # samples are valid data: log_prob accepts them
    assert torch.isfinite(lik.log_prob(draws[:10], params.expand(10, *params.shape))).all()


def test_sampling_is_reproducible_with_a_generator():
    logits = randn(4, 7, seed=27)
    a = Categorical(7).sample(logits, generator=gen(1))
    b = Categorical(7).sample(logits, generator=gen(1))
    assert torch.equal(a, b)


# --- checks ------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors():
    x = torch.tensor([[0.0, 1.0, 1.0]], dtype=f64)
    with pytest.raises(ValueError, match="binary"):
        Bernoulli().log_prob(x * 0.5, randn(1, 3))
    with pytest.raises(ValueError, match="floating"):
        Bernoulli().log_prob(x.long(), randn(1, 3))
    with pytest.raises(ValueError, match="pixels"):
        Bernoulli().log_prob(x, randn(1, 4))
    with pytest.raises(ValueError, match="sample shape"):
        Bernoulli().log_prob(x.expand(2, 3), randn(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        Bernoulli().log_prob(x, torch.full((1, 3), float("nan"), dtype=f64))
    with pytest.raises(ValueError, match="integer values"):
        Categorical(3).log_prob(x + 0.5, randn(1, 3, 3))
    with pytest.raises(ValueError, match="integer values"):
        Categorical(3).log_prob(x + 2, randn(1, 3, 3))
    with pytest.raises(ValueError, match="integer values"):
        DiscretizedLogistic(3).log_prob(-x, randn(1, 3, 2))
    with pytest.raises(ValueError, match="param_size"):
        Categorical(3).log_prob(x, randn(1, 3, 4))
    with pytest.raises(ValueError, match="param_size"):
        DiscretizedLogistic(3).sample(randn(1, 3))
    with pytest.raises(ValueError, match="param_size"):
        Gaussian().mean(randn(1, 3))
    with pytest.raises(ValueError, match="levels"):
        Categorical(1)
    with pytest.raises(ValueError, match="levels"):
        DiscretizedLogistic(2.5)
    with pytest.raises(ValueError, match="log_var"):
        Gaussian(learn=True)
    with pytest.raises(ValueError, match="log_var"):
        Gaussian(log_var=float("inf"))
    with pytest.raises(ValueError, match="data_dim"):
        Bernoulli().param_shape(0)
    assert isinstance(Gaussian(), Likelihood)
    assert "levels=17" in repr(Categorical(17))
