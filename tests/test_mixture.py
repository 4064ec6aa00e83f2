"""Chapter 2: Gaussian mixtures, EM in log space, and EM with missing data.

Every test compares gmlib with an independent computation: scikit-learn's
``GaussianMixture`` (one EM step from the same parameters), ``torch.distributions``
(log densities), and per-example brute force with the textbook conditional-Gaussian
formulas (marginals, conditional means and covariances, the missing-data M-step).
Statistical tests are seeded and use wide, stated tolerances.
"""
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
import torch.distributions as TD

from gmlib.mixture import GaussianMixture, kmeans_plus_plus

from contracts import check_density_model

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py


# --- fixtures ---------------------------------------------------------------------------


def clustered(n=150, d=4, k=3, seed=0, dtype=f64):
    """Points around k well-separated centres, with correlated noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(k, d, generator=g, dtype=dtype)
    label = torch.randint(k, (n,), generator=g)
    mix = torch.randn(k, d, d, generator=g, dtype=dtype) / math.sqrt(d) + torch.eye(d, dtype=dtype)
    noise = torch.randn(n, d, generator=g, dtype=dtype)
    return centres[label] + (mix[label] @ noise[:, :, None])[:, :, 0]


def random_mixture(k=3, d=4, covariance_type="full", seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(k, generator=g, dtype=dtype), 0)
    means = 3.0 * torch.randn(k, d, generator=g, dtype=dtype)
    if covariance_type == "full":
        a = torch.randn(k, d, d, generator=g, dtype=dtype)
        covs = a @ a.mT / d + 0.3 * torch.eye(d, dtype=dtype)
    else:
        covs = torch.exp(0.5 * torch.randn(k, d, generator=g, dtype=dtype))
    return GaussianMixture(weights, means, covs)


def random_mask(shape, p_missing=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) >= p_missing


def with_nan(x, observed):
    return torch.where(observed, x, torch.full_like(x, float("nan")))


def dense_covariances(model):
    c = model.covariances
    return c if model.covariance_type == "full" else torch.diag_embed(c)


def brute_log_joint(model, x, observed):
    """log pi_k + log N(x_o | mu_k,o, Sigma_k,oo), one example at a time, by torch.distributions."""
    covs = dense_covariances(model)
    out = torch.empty(x.shape[0], model.n_components, dtype=x.dtype)
    for n in range(x.shape[0]):
        o = observed[n]
        for k in range(model.n_components):
            lp = torch.log(model.weights[k])
            if o.any():
                sub = TD.MultivariateNormal(model.means[k][o], covs[k][o][:, o])
                lp = lp + sub.log_prob(x[n][o])
            out[n, k] = lp
    return out


def conditional(mean, cov, x, o):
    """The Gaussian conditional of the missing block: E[x_m | x_o] (full vector) and Cov (D, D, zero outside m)."""
    m = ~o
    mi, oi = m.nonzero().squeeze(1), o.nonzero().squeeze(1)
    xhat, c = x.clone(), torch.zeros_like(cov)
    if len(mi) == 0:
        return xhat, c
    s_mo, s_oo = cov[mi][:, oi], cov[oi][:, oi]
    if len(oi) > 0:
        xhat[mi] = mean[mi] + s_mo @ torch.linalg.solve(s_oo, x[oi] - mean[oi])
        c[mi[:, None], mi[None, :]] = cov[mi][:, mi] - s_mo @ torch.linalg.solve(s_oo, s_mo.T)
    else:
        xhat[mi] = mean[mi]
        c[mi[:, None], mi[None, :]] = cov[mi][:, mi]
    return xhat, c


# --- densities ------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_prob_matches_torch_distributions(covariance_type):
    model = random_mixture(covariance_type=covariance_type, seed=1)
    x = clustered(seed=2)
    if covariance_type == "full":
        comp = TD.MultivariateNormal(model.means, covariance_matrix=model.covariances)
    else:
        comp = TD.Independent(TD.Normal(model.means, model.covariances.sqrt()), 1)
    ref = TD.MixtureSameFamily(TD.Categorical(probs=model.weights), comp)
    torch.testing.assert_close(model.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(
        model.log_joint(x), comp.log_prob(x[:, None]) + torch.log(model.weights), rtol=1e-12, atol=1e-10
    )
    r = model.responsibilities(x)
    torch.testing.assert_close(r.sum(1), torch.ones(x.shape[0], dtype=f64))
    torch.testing.assert_close(r, torch.softmax(comp.log_prob(x[:, None]) + torch.log(model.weights), 1))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_prob_with_missing_entries_is_the_brute_force_marginal(covariance_type):
    model = random_mixture(k=3, d=5, covariance_type=covariance_type, seed=3)
    x = clustered(n=40, d=5, seed=4)
    observed = random_mask(x.shape, 0.4, seed=5)
    observed[0] = False  # nothing observed: p(x_o) = 1
    observed[1] = True  # nothing missing
    observed[2] = torch.arange(5) == 3  # one coordinate observed
    ref = brute_log_joint(model, x, observed)
    xn = with_nan(x, observed)
    torch.testing.assert_close(model.log_joint(xn, observed), ref, rtol=1e-12, atol=1e-10)
    lp = model.log_prob(xn, observed)
    torch.testing.assert_close(lp, torch.logsumexp(ref, 1), rtol=1e-12, atol=1e-10)
    assert lp[0].item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(model.responsibilities(xn, observed)[0], model.weights)


def test_missing_entries_never_poison_the_result():
    model = random_mixture(seed=6)
    x = clustered(n=30, seed=7)
    observed = random_mask(x.shape, 0.3, seed=8)
    garbage = torch.where(observed, x, 1e6 * torch.randn(x.shape, dtype=f64))
    nan = with_nan(x, observed)
    inf = torch.where(observed, x, torch.full_like(x, float("inf")))
    for other in (nan, inf):
        torch.testing.assert_close(model.log_prob(other, observed), model.log_prob(garbage, observed), rtol=0, atol=0)
        torch.testing.assert_close(model.impute(other, observed), model.impute(garbage, observed), rtol=0, atol=0)
    a, b = random_mixture(seed=6), random_mixture(seed=6)
    a.em_step(nan, observed)
    b.em_step(garbage, observed)
    for name in ("weights", "means", "covariances"):
        assert torch.isfinite(getattr(a, name)).all()
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


# --- EM: monotone, and equal to scikit-learn ---------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_log_likelihood_never_decreases(covariance_type, missing, seed):
    x = clustered(n=120, d=4, k=3, seed=seed)
    observed = random_mask(x.shape, 0.3, seed=seed + 10) if missing else None
    if missing:
        x = with_nan(x, observed)
    model = GaussianMixture.from_data(x, 3, covariance_type, seed=seed, observed=observed)
    start = model.log_prob(x, observed).mean().item()
    # reg_covar = 0 is exact EM, for which Dempster et al. (1977) prove monotonicity
    history = model.fit(x, observed, max_iter=25, tol=-1.0, reg_covar=0.0)
    assert len(history) == 26
    assert history[0] == pytest.approx(start, abs=1e-12)
    assert history[-1] == pytest.approx(model.log_prob(x, observed).mean().item(), abs=1e-12)
    rises = np.diff(history)
    assert (rises >= -1e-10).all(), rises.min()
    assert history[-1] > history[0] + 0.1  # and EM did something


def test_fit_stops_when_the_rise_falls_below_tol():
    x = clustered(n=150, seed=3)
    model = GaussianMixture.from_data(x, 3, seed=0)
    history = model.fit(x, max_iter=500, tol=1e-3)
    rises = np.diff(history)
    assert len(history) < 501
    assert rises[-2] < 1e-3 and (rises[:-2] >= 1e-3).all()
    assert model.fit(x, max_iter=0) == pytest.approx([model.log_prob(x).mean().item()])


def sklearn_one_step(model, x, reg_covar):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGMM

    covs = model.covariances.numpy()
    precisions = np.linalg.inv(covs) if model.covariance_type == "full" else 1.0 / covs
    sk = SkGMM(
        model.n_components, covariance_type=model.covariance_type, reg_covar=reg_covar, max_iter=1,
        weights_init=model.weights.numpy(), means_init=model.means.numpy(), precisions_init=precisions,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    return sk


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("reg_covar", [1e-6, 0.05])
def test_one_em_step_matches_scikit_learn(covariance_type, reg_covar):
    x = clustered(n=200, d=4, k=3, seed=11)
    model = random_mixture(k=3, d=4, covariance_type=covariance_type, seed=12)
    sk = sklearn_one_step(model, x, reg_covar)
    # scikit-learn's lower bound of a one-step fit is the mean log-likelihood at the initial parameters
    ll = model.em_step(x, reg_covar=reg_covar)
    assert ll == pytest.approx(sk.lower_bound_, rel=1e-10, abs=1e-6)
    tight = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.weights, torch.from_numpy(sk.weights_), **tight)
    torch.testing.assert_close(model.means, torch.from_numpy(sk.means_), **tight)
    torch.testing.assert_close(model.covariances, torch.from_numpy(sk.covariances_), **tight)
    # and the next log-likelihood agrees with scikit-learn's score at the new parameters
    assert model.log_prob(x).mean().item() == pytest.approx(sk.score(x.numpy()), rel=1e-10)
    torch.testing.assert_close(model.log_joint(x), torch.from_numpy(sk._estimate_weighted_log_prob(x.numpy())), **tight)


def test_missing_data_path_with_nothing_missing_is_the_complete_data_step():
    x = clustered(n=100, seed=13)
    for covariance_type in ("full", "diag"):
        a = random_mixture(covariance_type=covariance_type, seed=14)
        b = random_mixture(covariance_type=covariance_type, seed=14)
        everything = torch.ones_like(x, dtype=torch.bool)
        torch.testing.assert_close(a.log_prob(x, everything), a.log_prob(x), rtol=1e-14, atol=1e-12)
        la, lb = a.em_step(x), b.em_step(x, everything)
        assert la == pytest.approx(lb, rel=1e-14)
        for name in ("weights", "means", "covariances"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_missing_data_m_step_uses_expected_sufficient_statistics(covariance_type):
    """One step equals the Ghahramani & Jordan (1994) M-step assembled example by example."""
    d, k, reg = 4, 3, 1e-3
    x = clustered(n=40, d=d, k=k, seed=15)
    observed = random_mask(x.shape, 0.35, seed=16)
    observed[0] = False
    model = random_mixture(k=k, d=d, covariance_type=covariance_type, seed=17)
    covs = dense_covariances(model)
    log_joint = brute_log_joint(model, x, observed)
    r = torch.softmax(log_joint, 1)  # (N, K)
    xhat = torch.empty(k, x.shape[0], d, dtype=f64)
    cond = torch.empty(k, x.shape[0], d, d, dtype=f64)
    for n in range(x.shape[0]):
        for j in range(k):
            xo = torch.where(observed[n], x[n], 0.0)
            xhat[j, n], cond[j, n] = conditional(model.means[j], covs[j], xo, observed[n])
    nk = r.sum(0)
    means = torch.einsum("nk,knd->kd", r, xhat) / nk[:, None]
    diff = xhat - means[:, None]
    second = torch.einsum("nk,knd,kne->kde", r, diff, diff) + torch.einsum("nk,knde->kde", r, cond)
    covs_new = second / nk[:, None, None] + reg * torch.eye(d, dtype=f64)
    if covariance_type == "diag":
        covs_new = torch.diagonal(covs_new, dim1=-2, dim2=-1)
    ll = model.em_step(with_nan(x, observed), observed, reg_covar=reg)
    assert ll == pytest.approx(torch.logsumexp(log_joint, 1).mean().item(), rel=1e-12)
    torch.testing.assert_close(model.weights, nk / nk.sum(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.means, means, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.covariances, covs_new, rtol=1e-10, atol=1e-10)


def test_missing_data_em_is_not_mean_filling():
    """Marginalising beats filling with column means: a higher observed-data likelihood."""
    x = clustered(n=200, d=4, k=3, seed=18)
    observed = random_mask(x.shape, 0.3, seed=19)
    xn = with_nan(x, observed)
    proper = GaussianMixture.from_data(xn, 3, seed=0, observed=observed)
    filled = GaussianMixture.from_data(xn, 3, seed=0, observed=observed)
    proper.fit(xn, observed, max_iter=20, tol=-1.0)
    col_mean = torch.where(observed, x, 0.0).sum(0) / observed.sum(0)
    filled.fit(torch.where(observed, x, col_mean), max_iter=20, tol=-1.0)
    # (about -5.53 against -6.04 nats per example)
    assert proper.log_prob(xn, observed).mean() > filled.log_prob(xn, observed).mean() + 0.2


# --- imputation -----------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_impute_is_the_conditional_mean(covariance_type):
    model = random_mixture(k=3, d=5, covariance_type=covariance_type, seed=20)
    x = clustered(n=30, d=5, seed=21)
    observed = random_mask(x.shape, 0.4, seed=22)
    observed[0] = False
    observed[1] = True
    xn = with_nan(x, observed)
    out = model.impute(xn, observed)
    covs = dense_covariances(model)
    r = torch.softmax(brute_log_joint(model, x, observed), 1)
    expected = torch.empty_like(x)
    for n in range(x.shape[0]):
        xo = torch.where(observed[n], x[n], 0.0)
        expected[n] = sum(r[n, j] * conditional(model.means[j], covs[j], xo, observed[n])[0] for j in range(3))
    torch.testing.assert_close(out[~observed], expected[~observed], rtol=1e-10, atol=1e-10)
    assert torch.equal(out[observed], x[observed])  # bitwise
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], model.weights @ model.means)  # nothing observed: the mixture mean


def test_impute_with_one_component_is_the_gaussian_conditional_mean():
    g = torch.Generator().manual_seed(23)
    a = torch.randn(6, 6, generator=g, dtype=f64)
    cov = a @ a.T + 0.5 * torch.eye(6, dtype=f64)
    mean = torch.randn(6, generator=g, dtype=f64)
    model = GaussianMixture(torch.ones(1, dtype=f64), mean[None], cov[None])
    x = torch.randn(20, 6, generator=g, dtype=f64)
    observed = random_mask(x.shape, 0.5, seed=24)
    out = model.impute(with_nan(x, observed), observed)
    for n in range(20):
        o, m = observed[n], ~observed[n]
        if m.any() and o.any():
            want = mean[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], x[n, o] - mean[o])
            torch.testing.assert_close(out[n, m], want, rtol=1e-10, atol=1e-10)
    assert torch.equal(out[observed], x[observed])


def test_imputation_beats_mean_filling_on_correlated_data():
    x = clustered(n=400, d=5, k=3, seed=25)
    observed = random_mask(x.shape, 0.3, seed=26)
    xn = with_nan(x, observed)
    model = GaussianMixture.from_data(xn, 3, seed=0, observed=observed)
    model.fit(xn, observed, max_iter=20)
    col_mean = torch.where(observed, x, 0.0).sum(0) / observed.sum(0)
    err_model = (model.impute(xn, observed) - x)[~observed].square().mean()
    err_mean = (col_mean.expand_as(x) - x)[~observed].square().mean()
    assert err_model < 0.25 * err_mean  # (about 2.7 against 16.7)


# --- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_sample_moments_and_goodness_of_fit(covariance_type):
    model = random_mixture(k=3, d=3, covariance_type=covariance_type, seed=27)
    n = 40000
    torch.manual_seed(0)
    s = model.sample(n)
    assert s.shape == (n, 3) and s.dtype == f64
    covs = dense_covariances(model)
    mean = model.weights @ model.means
    second = torch.einsum("k,kij->ij", model.weights, covs + model.means[:, :, None] * model.means[:, None, :])
    cov = second - torch.outer(mean, mean)
    # each sample-mean coordinate within 4.5 standard errors
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((s.mean(0) - mean).abs() < 4.5 * se_mean).all()
    # each sample-covariance entry within 4.5 standard errors (estimated from the fourth moments)
    c = s - mean
    prods = c[:, :, None] * c[:, None, :]  # (n, D, D)
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((prods.mean(0) - cov).abs() < 4.5 * se_cov).all()
    # a random 1-D projection is a 1-D Gaussian mixture: Kolmogorov-Smirnov test against its CDF
    a = torch.tensor([0.6, -0.3, 0.74], dtype=f64)
    loc, scale = (model.means @ a).numpy(), torch.einsum("i,kij,j->k", a, covs, a).sqrt().numpy()
    w = model.weights.numpy()
    cdf = lambda t: (w * scipy.stats.norm.cdf((t[:, None] - loc) / scale)).sum(1)  # noqa: E731
    p = scipy.stats.kstest((s @ a).numpy(), cdf).pvalue
    assert p > 1e-3


def test_sample_with_a_generator_is_reproducible():
    model = random_mixture(seed=28)
    a = model.sample(50, generator=torch.Generator().manual_seed(3))
    b = model.sample(50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- construction, contract, validation, dtypes and devices ------------------------------------


def test_from_data_builds_the_documented_starting_point():
    x = clustered(n=100, seed=29)
    model = GaussianMixture.from_data(x, 4, "full", seed=5, reg_covar=1e-3)
    assert model.covariance_type == "full" and model.n_components == 4 and model.dim == 4
    # means are rows of x, distinct, reproducible under the seed and not under another seed
    dist = torch.cdist(model.means, x)
    assert (dist.min(1).values == 0).all()
    assert len({tuple(m.tolist()) for m in model.means}) == 4
    assert torch.equal(GaussianMixture.from_data(x, 4, seed=5).means, model.means)
    assert not torch.equal(GaussianMixture.from_data(x, 4, seed=6).means, model.means)
    data_cov = torch.cov(x.T, correction=0) + 1e-3 * torch.eye(4, dtype=f64)
    torch.testing.assert_close(model.covariances, data_cov.expand(4, 4, 4))
    torch.testing.assert_close(model.weights, torch.full((4,), 0.25, dtype=f64))
    diag = GaussianMixture.from_data(x, 2, "diag", reg_covar=0.0)
    torch.testing.assert_close(diag.covariances, x.var(0, unbiased=False).expand(2, 4))


def test_kmeans_plus_plus_picks_distinct_far_rows():
    # two tight far-apart clusters: two centres always land one in each
    x = torch.cat([torch.zeros(50, 2, dtype=f64), 100 + torch.zeros(50, 2, dtype=f64)])
    x = x + 0.01 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    for seed in range(5):
        c = kmeans_plus_plus(x, 2, torch.Generator().manual_seed(seed))
        assert sorted((c[:, 0] > 50).tolist()) == [False, True]
    same = torch.ones(5, 2, dtype=f64)  # identical rows: no division by zero
    assert torch.equal(kmeans_plus_plus(same, 3, torch.Generator().manual_seed(0)), torch.ones(3, 2, dtype=f64))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_density_contract(covariance_type):
    check_density_model(random_mixture(covariance_type=covariance_type, seed=30), clustered(n=20, seed=31))


def test_input_validation():
    model = random_mixture(seed=32)
    x = clustered(n=10, seed=33)
    obs = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(ValueError, match="event shape"):
        model.log_prob(x[:, :3])
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(x[None])
    with pytest.raises(ValueError, match="floating"):
        model.log_prob(x.long())
    with pytest.raises(ValueError, match="dtype"):
        model.log_prob(x.float())
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(with_nan(x, random_mask(x.shape, seed=1)))  # NaN needs a mask saying it is missing
    with pytest.raises(ValueError, match="observed must have dtype torch.bool"):
        model.log_prob(x, obs.float())
    with pytest.raises(ValueError, match="observed has shape"):
        model.log_prob(x, obs[:, :3])
    with pytest.raises(ValueError, match="observed entries"):
        model.log_prob(with_nan(x, ~obs), obs)  # NaN where the mask claims an observation
    with pytest.raises(ValueError, match="observed is required"):
        model.impute(x, None)
    with pytest.raises(ValueError, match="reg_covar"):
        model.em_step(x, reg_covar=-1.0)
    with pytest.raises(ValueError, match="at least one row"):
        model.em_step(x[:0])
    with pytest.raises(ValueError, match="max_iter"):
        model.fit(x, max_iter=-1)
    with pytest.raises(ValueError, match="tol"):
        model.fit(x, tol=float("nan"))
    with pytest.raises(ValueError, match="number of samples"):
        model.sample(0)
    # constructor
    w, m, c = model.weights, model.means, model.covariances
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(2 * w, m, c)
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture(w, m[:2], c)
    with pytest.raises(ValueError, match="full covariances"):
        GaussianMixture(w, m, c[:, :3, :3])
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(w, m, c + torch.triu(torch.ones(4, 4, dtype=f64), 1))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(w, m, c - 100 * torch.eye(4, dtype=f64))
    with pytest.raises(ValueError, match="variances"):
        GaussianMixture(w, m, -torch.ones(3, 4, dtype=f64))
    with pytest.raises(ValueError, match="share one dtype"):
        GaussianMixture(w, m.float(), c)
    with pytest.raises(ValueError, match="floating"):
        GaussianMixture(w, m.long(), c)
    # from_data
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture.from_data(x, 2, "spherical")
    with pytest.raises(ValueError, match="exceeds"):
        GaussianMixture.from_data(x, 11)
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture.from_data(x, 0)


def test_a_row_with_nothing_observed_contributes_log_one():
    model = random_mixture(seed=34)
    x = torch.full((2, 4), float("nan"), dtype=f64)
    none = torch.zeros(2, 4, dtype=torch.bool)
    torch.testing.assert_close(model.log_prob(x, none), torch.zeros(2, dtype=f64), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.impute(x, none), (model.weights @ model.means).expand(2, 4))


def test_float32_works_and_agrees_with_float64():
    x64 = clustered(n=200, seed=35)
    obs = random_mask(x64.shape, 0.2, seed=36)
    m64 = GaussianMixture.from_data(x64, 3, seed=0)
    m32 = GaussianMixture.from_data(x64.float(), 3, seed=0)
    assert m32.means.dtype == torch.float32
    h64 = m64.fit(x64, max_iter=10, tol=-1.0)
    h32 = m32.fit(x64.float(), max_iter=10, tol=-1.0)
    assert h32 == pytest.approx(h64, rel=1e-4)
    torch.testing.assert_close(m32.log_prob(x64.float(), obs), m64.log_prob(x64, obs).float(), rtol=1e-4, atol=1e-4)
    assert m32.impute(with_nan(x64, obs).float(), obs).dtype == torch.float32
    assert m32.sample(5).dtype == torch.float32


def test_parameters_are_buffers_that_move_with_the_module():
    model = random_mixture(seed=37)
    assert set(dict(model.named_buffers())) == {"weights", "means", "covariances"}
    assert list(model.parameters()) == []
    x = clustered(n=20, seed=38)
    lp = model.log_prob(x)
    m32 = random_mixture(seed=37).to(torch.float32)
    assert m32.covariances.dtype == torch.float32
    torch.testing.assert_close(m32.log_prob(x.float()), lp.float(), rtol=1e-5, atol=1e-5)
    copy = random_mixture(seed=0)
    copy.load_state_dict(model.state_dict())
    torch.testing.assert_close(copy.log_prob(x), lp, rtol=0, atol=0)


def test_progress_bar_goes_to_stdout(capfd):
    x = clustered(n=50, seed=39)
    GaussianMixture.from_data(x, 2).fit(x, max_iter=3, progress=True, desc="gmm-em")
    out, err = capfd.readouterr()
    assert "gmm-em" in out and err == ""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = clustered(n=300, d=6, k=3, seed=40)
    obs = random_mask(x.shape, 0.3, seed=41)
    xn = with_nan(x, obs)
    cpu = GaussianMixture.from_data(xn, 3, seed=0, observed=obs)
    gpu = GaussianMixture.from_data(xn, 3, seed=0, observed=obs).to("cuda")
    assert gpu.means.device.type == "cuda"
    torch.testing.assert_close(gpu.means.cpu(), cpu.means)
    h_cpu = cpu.fit(xn, obs, max_iter=10, tol=-1.0)
    h_gpu = gpu.fit(xn.cuda(), obs.cuda(), max_iter=10, tol=-1.0)
    assert h_gpu == pytest.approx(h_cpu, rel=1e-9)
    torch.testing.assert_close(gpu.impute(xn.cuda(), obs.cuda()).cpu(), cpu.impute(xn, obs), rtol=1e-8, atol=1e-8)
    assert gpu.sample(10).device.type == "cuda"
    with pytest.raises(ValueError, match="on cuda"):
        gpu.log_prob(x)
