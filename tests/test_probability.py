"""Chapter 1 toolkit: entropy, KL, Monte Carlo, the ELBO, gradient estimators.

Statistical tests compare a Monte Carlo estimate with the exact value and pass
when they agree within 4 standard errors (a false alarm rate of about 6e-5 per
comparison for a normal estimate); every one is seeded, so results are
reproducible.
"""
import math

import pytest
import torch
import torch.distributions as D

from gmlib import probability as P

from contracts import check_density_model

Z = 4.0  # tolerance in standard errors
f64 = torch.float64


def rand_probs(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(*shape, generator=g, dtype=f64), -1)


def rand_gauss(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=f64), 0.8 * torch.randn(*shape, generator=g, dtype=f64)


# --- categorical -----------------------------------------------------------------


def test_categorical_entropy_matches_torch_and_bounds():
    p = rand_probs(6, 5)
    h = P.categorical_entropy(p)
    torch.testing.assert_close(h, D.Categorical(probs=p).entropy())
    assert (h >= 0).all() and (h <= math.log(5) + 1e-12).all()
    uniform = torch.full((5,), 0.2, dtype=f64)
    assert P.categorical_entropy(uniform).item() == pytest.approx(math.log(5), abs=1e-12)


def test_categorical_entropy_zero_log_zero():
    onehot = torch.tensor([0.0, 1.0, 0.0], dtype=f64)
    assert math.copysign(1.0, P.categorical_entropy(onehot).item()) == 1.0  # +0.0, not -0.0
    p = torch.tensor([0.5, 0.5, 0.0], dtype=f64)
    assert P.categorical_entropy(p).item() == pytest.approx(math.log(2), abs=1e-12)


def test_categorical_kl_matches_torch_nonnegative_and_zero_iff_equal():
    p, q = rand_probs(8, 4, seed=1), rand_probs(8, 4, seed=2)
    kl = P.categorical_kl(p, q)
    torch.testing.assert_close(kl, D.kl_divergence(D.Categorical(probs=p), D.Categorical(probs=q)))
    assert (kl > 0).all()
    assert torch.equal(P.categorical_kl(p, p), torch.zeros(8, dtype=f64))
    # asymmetric in general
    assert not torch.allclose(kl, P.categorical_kl(q, p))


def test_categorical_kl_support():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=f64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=f64)
    assert P.categorical_kl(p, q).item() == pytest.approx(math.log(2), abs=1e-12)  # p_k = 0 terms vanish
    assert P.categorical_kl(q, p).item() == math.inf  # q puts mass where p has none


# --- Gaussian ----------------------------------------------------------------------


def test_gaussian_log_prob_and_entropy_match_torch():
    mean, log_var = rand_gauss(7, 3)
    x = torch.randn(7, 3, dtype=f64, generator=torch.Generator().manual_seed(5))
    dist = D.Independent(D.Normal(mean, torch.exp(0.5 * log_var)), 1)
    torch.testing.assert_close(P.gaussian_log_prob(x, mean, log_var), dist.log_prob(x))
    torch.testing.assert_close(P.gaussian_entropy(mean, log_var), dist.entropy())


def test_gaussian_kl_matches_torch_nonnegative_zero_iff_equal():
    mq, lq = rand_gauss(10, 4, seed=1)
    mp, lp = rand_gauss(10, 4, seed=2)
    kl = P.gaussian_kl(mq, lq, mp, lp)
    q = D.Independent(D.Normal(mq, torch.exp(0.5 * lq)), 1)
    p = D.Independent(D.Normal(mp, torch.exp(0.5 * lp)), 1)
    torch.testing.assert_close(kl, D.kl_divergence(q, p))
    assert (kl > 0).all()
    torch.testing.assert_close(P.gaussian_kl(mq, lq, mq, lq), torch.zeros(10, dtype=f64), atol=1e-12, rtol=0)
    # the standard-normal default is N(0, I)
    torch.testing.assert_close(P.gaussian_kl(mq, lq), P.gaussian_kl(mq, lq, torch.zeros_like(mq), torch.zeros_like(lq)))
    # differing only in the mean, or only in the variance, is still > 0
    assert (P.gaussian_kl(mq + 0.1, lq, mq, lq) > 0).all()
    assert (P.gaussian_kl(mq, lq + 0.1, mq, lq) > 0).all()


def test_kl_equals_cross_entropy_minus_entropy():
    # KL(q||p) = E_q[-log p] - H(q), with the cross-entropy by quadrature in 1-D
    mq, lq, mp, lp = 0.3, math.log(0.5), -0.4, math.log(2.0)
    z = torch.linspace(-12, 12, 200001, dtype=f64).unsqueeze(-1)
    qz = torch.exp(P.gaussian_log_prob(z, torch.tensor([mq], dtype=f64), torch.tensor([lq], dtype=f64)))
    log_pz = P.gaussian_log_prob(z, torch.tensor([mp], dtype=f64), torch.tensor([lp], dtype=f64))
    cross = -torch.trapezoid(qz * log_pz, z.squeeze(-1))
    h = P.gaussian_entropy(torch.tensor([mq], dtype=f64), torch.tensor([lq], dtype=f64))
    kl = P.gaussian_kl(*(torch.tensor([v], dtype=f64) for v in (mq, lq, mp, lp)))
    assert (cross - h).item() == pytest.approx(kl.item(), abs=1e-8)


# --- Monte Carlo ---------------------------------------------------------------------


def test_mc_kl_gaussian_within_4_se():
    mq, lq = rand_gauss(6, 3, seed=3)
    mp, lp = rand_gauss(6, 3, seed=4)
    est, se = P.mc_kl_gaussian(mq, lq, mp, lp, 20000, generator=torch.Generator().manual_seed(0))
    exact = P.gaussian_kl(mq, lq, mp, lp)
    assert ((est - exact).abs() < Z * se).all(), (est, exact, se)
    assert (se > 0).all()


def test_mc_kl_categorical_within_4_se():
    p, q = rand_probs(5, 6, seed=7), rand_probs(5, 6, seed=8)
    est, se = P.mc_kl_categorical(p, q, 20000, generator=torch.Generator().manual_seed(1))
    exact = P.categorical_kl(p, q)
    assert ((est - exact).abs() < Z * se).all(), (est, exact, se)


def test_mc_standard_error_shrinks_like_one_over_sqrt_n():
    mq, lq = rand_gauss(1, 2, seed=3)
    mp, lp = rand_gauss(1, 2, seed=4)
    _, se1 = P.mc_kl_gaussian(mq, lq, mp, lp, 1000, generator=torch.Generator().manual_seed(0))
    _, se2 = P.mc_kl_gaussian(mq, lq, mp, lp, 100000, generator=torch.Generator().manual_seed(0))
    assert (se1 / se2).item() == pytest.approx(10.0, rel=0.15)


def test_reparameterize_moments_and_gradients():
    mean = torch.tensor([1.0, -2.0], dtype=f64, requires_grad=True)
    log_var = torch.tensor([0.5, -1.0], dtype=f64, requires_grad=True)
    z = P.reparameterize(mean, log_var, 50000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (50000, 2)
    m, se = P.mc_mean(z.detach())
    assert ((m - mean.detach()).abs() < Z * se).all()
    var = z.detach().var(0)
    torch.testing.assert_close(var, torch.exp(log_var.detach()), rtol=0.03, atol=0)
    # dz/dmean = 1 and dz/dlog_var = 0.5 sigma eps = 0.5 (z - mean): gradients flow
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.full((2,), 50000.0, dtype=f64))
    torch.testing.assert_close(log_var.grad, 0.5 * (z.detach() - mean.detach()).sum(0))


# --- the conjugate model and its ELBO -------------------------------------------------


@pytest.fixture
def model():
    return P.ConjugateGaussian(dim=3, prior_mean=0.5, prior_var=2.0, noise_var=0.7)


def test_conjugate_evidence_matches_multivariate_normal(model):
    _, x = model.sample(6, generator=torch.Generator().manual_seed(0))
    cov = (model.prior_var + model.noise_var) * torch.eye(3, dtype=f64)
    mvn = D.MultivariateNormal(torch.full((3,), model.prior_mean, dtype=f64), cov)
    torch.testing.assert_close(model.log_evidence(x), mvn.log_prob(x))


def test_bayes_rule_identity(model):
    # log p(x) = log p(x, z) - log p(z | x) for every z
    _, x = model.sample(4, generator=torch.Generator().manual_seed(1))
    z = torch.randn(4, 3, dtype=f64, generator=torch.Generator().manual_seed(2))
    pm, plv = model.posterior(x)
    torch.testing.assert_close(model.log_joint(x, z) - P.gaussian_log_prob(z, pm, plv), model.log_evidence(x))


def test_elbo_bound_equality_and_gap_is_kl_to_posterior(model):
    _, x = model.sample(8, generator=torch.Generator().manual_seed(3))
    log_px = model.log_evidence(x)
    pm, plv = model.posterior(x)
    torch.testing.assert_close(model.elbo(x, pm, plv), log_px, atol=1e-12, rtol=0)
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        qm = pm + torch.randn(pm.shape, generator=g, dtype=f64)
        qlv = plv + torch.randn(plv.shape, generator=g, dtype=f64)
        elbo = model.elbo(x, qm, qlv)
        assert (elbo < log_px).all()
        torch.testing.assert_close(log_px - elbo, P.gaussian_kl(qm, qlv, pm, plv))


def test_elbo_mc_agrees_with_closed_form(model):
    _, x = model.sample(5, generator=torch.Generator().manual_seed(5))
    qm, qlv = torch.zeros_like(x), torch.zeros_like(x)
    est, se = model.elbo_mc(x, qm, qlv, 20000, generator=torch.Generator().manual_seed(6))
    exact = model.elbo(x, qm, qlv)
    assert ((est - exact).abs() < Z * se).all()
    # at the true posterior log p(x,z) - log q(z) is constant: zero variance
    pm, plv = model.posterior(x)
    est, se = model.elbo_mc(x, pm, plv, 100, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(est, model.log_evidence(x))
    assert (se < 1e-10).all()


def test_conjugate_model_contract(model):
    _, x = model.sample(10, generator=torch.Generator().manual_seed(8))
    check_density_model(model, x)


# --- gradient estimators -----------------------------------------------------------


def _sin_objective(mean, log_std):
    # F = E[sum sin z] = sum sin(mu) exp(-sigma^2 / 2)
    s2 = torch.exp(2 * log_std)
    damp = torch.exp(-s2 / 2)
    return torch.cos(mean) * damp, -s2 * torch.sin(mean) * damp  # dF/dmu, dF/dlog_sigma


def _square_objective(mean, log_std):
    # F = E[sum z^2] = sum mu^2 + sigma^2
    return 2 * mean, 2 * torch.exp(2 * log_std)


@pytest.mark.parametrize(
    "f,exact",
    [(lambda z: (z**2).sum(-1), _square_objective), (lambda z: torch.sin(z).sum(-1), _sin_objective)],
    ids=["square", "sin"],
)
@pytest.mark.parametrize("estimator", ["reparam", "score", "score+baseline"])
def test_gradient_estimators_unbiased(f, exact, estimator):
    mean = torch.tensor([0.7, -0.3], dtype=f64)
    log_std = torch.tensor([-0.2, 0.3], dtype=f64)
    g = torch.Generator().manual_seed(11)
    n = 40000
    if estimator == "reparam":
        gm, gs = P.reparam_gradients(f, mean, log_std, n, generator=g)
    else:
        gm, gs = P.score_function_gradients(f, mean, log_std, n, baseline=estimator.endswith("baseline"), generator=g)
    want_m, want_s = exact(mean, log_std)
    for got, want in ((gm, want_m), (gs, want_s)):
        est, se = P.mc_mean(got)
        assert ((est - want).abs() < Z * se).all(), (estimator, est, want, se)


def test_reparam_has_lower_variance_than_score_function():
    f = lambda z: (z**2).sum(-1)  # noqa: E731
    mean = torch.tensor([0.7, -0.3], dtype=f64)
    log_std = torch.tensor([-0.2, 0.3], dtype=f64)
    n = 20000
    rm, rs = P.reparam_gradients(f, mean, log_std, n, generator=torch.Generator().manual_seed(0))
    sm, ss = P.score_function_gradients(f, mean, log_std, n, generator=torch.Generator().manual_seed(0))
    bm, bs = P.score_function_gradients(f, mean, log_std, n, baseline=True, generator=torch.Generator().manual_seed(0))
    for r, s, b in ((rm, sm, bm), (rs, ss, bs)):
        assert (r.var(0) < b.var(0)).all()
        assert (b.var(0) < s.var(0)).all()  # the baseline helps
        assert (r.var(0) * 3 < s.var(0)).all()


def test_score_function_works_for_non_differentiable_f():
    # f(z) = 1[z > 0]: F = Phi(mu / sigma); reparameterization has no gradient here
    f = lambda z: (z > 0).double().sum(-1)  # noqa: E731
    mean, log_std = torch.tensor([0.3], dtype=f64), torch.tensor([0.0], dtype=f64)
    gm, _ = P.score_function_gradients(f, mean, log_std, 50000, baseline=True, generator=torch.Generator().manual_seed(2))
    est, se = P.mc_mean(gm)
    want = torch.exp(D.Normal(0.0, 1.0).log_prob(mean))  # d/dmu Phi(mu) = phi(mu)
    assert ((est - want).abs() < Z * se).all()


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: P.gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 3)), "shape"),
        (lambda: P.gaussian_kl(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 2)), "floating-point"),
        (lambda: P.gaussian_kl(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2)), "NaN"),
        (lambda: P.gaussian_log_prob(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 2)), "event size"),
        (lambda: P.categorical_entropy(torch.tensor([0.5, 0.6])), "sum to 1"),
        (lambda: P.categorical_entropy(torch.tensor([1, 0])), "floating-point"),
        (lambda: P.categorical_kl(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5])), "shape"),
        (lambda: P.mc_kl_gaussian(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 1), "n must"),
        (lambda: P.reparameterize(torch.zeros(2), torch.zeros(2), n=0), "n must"),
        (lambda: P.ConjugateGaussian(dim=2).log_evidence(torch.zeros(4, 3, dtype=f64)), "event shape"),
        (lambda: P.ConjugateGaussian(dim=2, noise_var=0.0), "positive"),
        (lambda: P.reparam_gradients(lambda z: z, torch.zeros(2), torch.zeros(2), 5), "values of shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
