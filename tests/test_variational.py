"""Chapter 2: mean-field variational inference for a Bayesian Gaussian mixture (gmlib.variational).

Identities checked: the ELBO never decreases under coordinate ascent; it is a
lower bound on the exact evidence, computed by enumerating every assignment, for
any variational factors, with equality when the mean-field family contains the
posterior (K = 1); the closed-form ELBO equals a Monte Carlo estimate built from
``torch.distributions``; the exact evidence equals an independent computation
(sequential Student-t predictive densities from SciPy); the updates match
scikit-learn's ``BayesianGaussianMixture`` started from the same
responsibilities; the predictive density is normalised and equals a SciPy
Student-t mixture, and samples pass a goodness-of-fit test against it.
"""
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributions as D
from scipy import integrate, special, stats
from sklearn.mixture import BayesianGaussianMixture as SkBGM

from gmlib.mixture import kmeans_plus_plus_indices
from gmlib.variational import BayesianGaussianMixture, NormalWishartPrior, exact_log_evidence

from contracts import check_density_model

f64 = torch.float64
Z = 4.0  # tolerance of Monte Carlo comparisons, in standard errors


def gen(seed):
    return torch.Generator().manual_seed(seed)


CENTERS = ((3.0, 0.0), (-3.0, 0.0), (0.0, 4.0))


def blobs(n_per=60, centers=CENTERS, scale=0.7, seed=0, labels=False):
    g = gen(seed)
    c = torch.tensor(centers, dtype=f64)
    x = torch.cat([ci + scale * torch.randn(n_per, c.shape[1], generator=g, dtype=f64) for ci in c])
    y = torch.arange(len(c)).repeat_interleave(n_per)
    perm = torch.randperm(x.shape[0], generator=g)
    return (x[perm], y[perm]) if labels else x[perm]


def tiny(n, d, seed):
    """A tiny data set with two loose groups, for exact enumeration."""
    g = gen(seed)
    x = torch.randn(n, d, generator=g, dtype=f64)
    x[: n // 2] += 2.5
    return x


def random_factors(model, d, seed):
    """Overwrite the variational factors with random valid ones (any q must give a lower bound)."""
    g = gen(seed)
    K = model.n_components
    model.alpha = 0.1 + 5 * torch.rand(K, generator=g, dtype=f64)
    model.beta = 0.1 + 5 * torch.rand(K, generator=g, dtype=f64)
    model.m = 2 * torch.randn(K, d, generator=g, dtype=f64)
    A = torch.randn(K, d, d, generator=g, dtype=f64)
    model.W = A @ A.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=f64)
    model.nu = d - 1 + 0.1 + 8 * torch.rand(K, generator=g, dtype=f64)


def random_resp(n, K, seed):
    g = gen(seed)
    return torch.softmax(2 * torch.randn(n, K, generator=g, dtype=f64), dim=1)


def sequential_log_marginal(xk: np.ndarray, m0, beta0, W0, nu0) -> float:
    """log p(X_k) under a Normal-Wishart prior as a product of posterior predictive Student-t
    densities, p(x_1) p(x_2 | x_1) ... (an identity independent of the closed form), with SciPy."""
    d = len(m0)
    m, beta, W_inv, nu = np.array(m0, float), float(beta0), np.linalg.inv(W0), float(nu0)
    total = 0.0
    for xn in xk:
        df = nu + 1 - d
        shape = (1 + beta) / (df * beta) * W_inv  # Bishop (10.82) with L^{-1}
        total += stats.multivariate_t(loc=m, shape=shape, df=df).logpdf(xn)
        diff = xn - m
        W_inv = W_inv + beta / (beta + 1) * np.outer(diff, diff)
        m = (beta * m + xn) / (beta + 1)
        beta, nu = beta + 1, nu + 1
    return total


def resolved_prior(x, **kw):
    p = NormalWishartPrior(**kw).resolve(x)
    return p, p.m0.numpy(), p.W0.numpy()


# --- the exact evidence ---------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2])
def test_exact_evidence_k1_equals_sequential_student_t_product(d):
    x = tiny(7, d, seed=d)
    p, m0, W0 = resolved_prior(x, beta0=0.5)
    want = sequential_log_marginal(x.numpy(), m0, p.beta0, W0, p.nu0)
    assert exact_log_evidence(x, 1, NormalWishartPrior(beta0=0.5)) == pytest.approx(want, abs=1e-10)
    # the order of the points does not matter for the product
    perm = x.numpy()[::-1]
    assert sequential_log_marginal(perm, m0, p.beta0, W0, p.nu0) == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("d,K", [(1, 2), (2, 2), (1, 3)])
def test_exact_evidence_equals_an_independent_enumeration(d, K):
    x = tiny(5, d, seed=10 + d)
    prior = NormalWishartPrior(alpha0=0.7)
    p, m0, W0 = resolved_prior(x, alpha0=0.7)
    N = x.shape[0]
    xs = x.numpy()
    terms = []
    for z in itertools.product(range(K), repeat=N):
        counts = np.bincount(z, minlength=K)
        # Dirichlet-multinomial probability of one labelled assignment
        log_pz = special.gammaln(K * p.alpha0) - special.gammaln(N + K * p.alpha0)
        log_pz += sum(special.gammaln(c + p.alpha0) - special.gammaln(p.alpha0) for c in counts)
        log_lik = sum(sequential_log_marginal(xs[np.array(z) == k], m0, p.beta0, W0, p.nu0) for k in range(K))
        terms.append(log_pz + log_lik)
    assert exact_log_evidence(x, K, prior) == pytest.approx(special.logsumexp(terms), abs=1e-10)


def test_exact_evidence_monte_carlo_over_the_prior():
    """log p(X) = log E_{theta ~ prior}[p(X | theta)], the mixture likelihood averaged over prior draws."""
    x = tiny(4, 1, seed=3)
    prior = NormalWishartPrior(alpha0=1.0, beta0=0.5, nu0=3.0, m0=torch.zeros(1, dtype=f64), W0=torch.eye(1, dtype=f64))
    K, S = 2, 200_000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pi = D.Dirichlet(torch.ones(K, dtype=f64)).sample((S,))  # (S, K)
        lam = D.Gamma(torch.tensor(1.5, dtype=f64), torch.tensor(0.5, dtype=f64)).sample((S, K))  # Wishart in 1-D
        mu = torch.randn(S, K, dtype=f64) / torch.sqrt(0.5 * lam)
    comp = D.Normal(mu[:, None, :], 1 / torch.sqrt(lam[:, None, :])).log_prob(x[None, :, :])  # (S, N, K)
    loglik = torch.logsumexp(torch.log(pi)[:, None, :] + comp, -1).sum(-1)  # (S,)
    w = torch.exp(loglik - loglik.max())
    est = loglik.max() + torch.log(w.mean())
    se = (w.std() / math.sqrt(S) / w.mean()).item()  # delta method
    assert abs(est.item() - exact_log_evidence(x, K, prior)) < Z * se
    assert se < 0.012  # the check has teeth


def test_exact_evidence_refuses_large_problems():
    with pytest.raises(ValueError, match="assignments"):
        exact_log_evidence(torch.randn(13, 1, dtype=f64), 1)
    with pytest.raises(ValueError, match="assignments"):
        exact_log_evidence(torch.randn(11, 1, dtype=f64), 4)  # 4^11 > 2e6


# --- the ELBO --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,K", [(0, 2), (1, 3), (2, 6), (3, 10)])
def test_elbo_never_decreases(seed, K):
    x = blobs(seed=seed)
    model = BayesianGaussianMixture(K, NormalWishartPrior(alpha0=1e-2), seed=seed)
    hist = np.array(model.fit(x, max_iter=100, tol=1e-12))
    assert len(hist) >= 3
    assert np.all(np.diff(hist) >= -1e-10 * np.abs(hist[1:])), "ELBO decreased"
    assert hist[-1] == pytest.approx(model.elbo(x), abs=1e-9)


@pytest.mark.parametrize("n,d,K", [(6, 1, 2), (8, 1, 2), (7, 2, 2), (6, 2, 3), (8, 1, 3)])
def test_elbo_is_a_lower_bound_on_the_exact_evidence(n, d, K):
    x = tiny(n, d, seed=n + d + K)
    prior = NormalWishartPrior(alpha0=0.5)
    log_px = exact_log_evidence(x, K, prior)
    model = BayesianGaussianMixture(K, prior, seed=1)
    initial = model.fit(x, max_iter=0)
    assert len(initial) == 1 and initial[0] < log_px
    hist = model.fit(x, max_iter=200)
    assert hist[-1] <= log_px
    assert hist[-1] > log_px - 3.0  # and a reasonably tight one
    for s in range(3):  # any factors, any q(Z)
        random_factors(model, d, seed=s)
        assert model.elbo(x) <= log_px
        assert model.elbo(x, resp=random_resp(n, K, seed=s)) <= log_px


@pytest.mark.parametrize("d", [1, 2])
def test_elbo_equals_the_evidence_when_q_is_the_exact_posterior(d):
    # K = 1: q(mu, Lambda) is the conjugate Normal-Wishart posterior, so the bound is tight
    x = tiny(9, d, seed=20 + d)
    model = BayesianGaussianMixture(1)
    hist = model.fit(x)
    assert hist[-1] == pytest.approx(exact_log_evidence(x, 1), abs=1e-9)
    random_factors(model, d, seed=0)  # any other q is strictly worse
    assert model.elbo(x) < hist[-1] - 1e-3


def test_elbo_equals_monte_carlo_with_torch_distributions():
    x = tiny(6, 2, seed=5)
    K, d = 2, 2
    model = BayesianGaussianMixture(K, NormalWishartPrior(alpha0=1.0))
    model.fit(x, max_iter=0)
    r = random_resp(x.shape[0], K, seed=7)
    model.update_parameters(x, r)  # a q(pi, mu, Lambda) fitted to a random q(Z): generic, yet concentrated
    model.m = model.m + 0.3  # and moved off that optimum
    model.alpha = model.alpha * 1.5
    closed = model.elbo(x, resp=r)
    S = 8000
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Singular sample", category=UserWarning)  # torch resamples those
        torch.manual_seed(0)
        q_pi = D.Dirichlet(model.alpha)
        q_lam = D.Wishart(df=model.nu, covariance_matrix=model.W)  # Bishop's W(Lambda | W, nu)
        pi = q_pi.sample((S,))  # (S, K)
        lam = q_lam.sample((S,))  # (S, K, d, d)
        q_mu = D.MultivariateNormal(model.m, precision_matrix=model.beta[:, None, None] * lam)
        mu = q_mu.sample()  # (S, K, d)
    p_pi = D.Dirichlet(torch.full((K,), model.alpha0, dtype=f64))
    p_lam = D.Wishart(df=torch.tensor(model.nu0, dtype=f64), covariance_matrix=model.W0)
    p_mu = D.MultivariateNormal(model.m0, precision_matrix=model.beta0 * lam)
    log_p_theta = p_pi.log_prob(pi) + (p_lam.log_prob(lam) + p_mu.log_prob(mu)).sum(-1)
    log_q_theta = q_pi.log_prob(pi) + (q_lam.log_prob(lam) + q_mu.log_prob(mu)).sum(-1)
    comp = D.MultivariateNormal(mu[:, None], precision_matrix=lam[:, None]).log_prob(x[None, :, None, :])  # (S, N, K)
    # E over q(Z) in closed form (Rao-Blackwellised), E over q(pi, mu, Lambda) by sampling
    log_xz = (r * (torch.log(pi)[:, None, :] + comp - torch.log(r))).sum((-1, -2))  # (S,)
    values = log_xz + log_p_theta - log_q_theta
    est, se = values.mean().item(), values.std().item() / math.sqrt(S)
    assert abs(est - closed) < Z * se
    assert se < 0.02  # the check has teeth: 4 se is about 0.03 nats


def test_each_cavi_update_is_the_coordinate_optimum():
    x = blobs(n_per=15, seed=4)
    K, d = 3, 2
    model = BayesianGaussianMixture(K, seed=0)
    model.fit(x, max_iter=3)
    # q(Z): the responsibilities beat any other q(Z) for the same factors
    best = model.elbo(x)
    assert model.elbo(x, resp=model.responsibilities(x)) == pytest.approx(best, abs=1e-9)
    for s in range(5):
        assert model.elbo(x, resp=random_resp(x.shape[0], K, seed=s)) < best
    # q(pi) q(mu, Lambda): after the update, every small perturbation lowers the ELBO
    r = random_resp(x.shape[0], K, seed=9)
    model.update_parameters(x, r)
    opt = model.elbo(x, resp=r)
    state = {k: getattr(model, k).clone() for k in ("alpha", "beta", "m", "W", "nu")}
    g = gen(3)
    for _ in range(20):
        model.alpha = state["alpha"] * torch.exp(1e-2 * torch.randn(K, generator=g, dtype=f64))
        model.beta = state["beta"] * torch.exp(1e-2 * torch.randn(K, generator=g, dtype=f64))
        model.m = state["m"] + 1e-2 * torch.randn(K, d, generator=g, dtype=f64)
        E = 1e-2 * torch.randn(K, d, d, generator=g, dtype=f64)
        model.W = state["W"] + state["W"] @ (E + E.transpose(1, 2)) @ state["W"]
        model.nu = state["nu"] + 1e-2 * torch.randn(K, generator=g, dtype=f64)
        assert model.elbo(x, resp=r) < opt


# --- agreement with scikit-learn ------------------------------------------------------------------


class _SkFromResp(SkBGM):
    """scikit-learn's variational mixture started from given responsibilities (``resp0``)."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp0)


@pytest.mark.parametrize("sweeps", [1, 5, 40])
def test_matches_sklearn_from_the_same_initial_responsibilities(sweeps):
    x = blobs(seed=6)
    K = 5
    model = BayesianGaussianMixture(K, NormalWishartPrior(alpha0=0.05, beta0=0.5), seed=2)
    model.fit(x, max_iter=sweeps, tol=0.0)
    sk = _SkFromResp(
        n_components=K, covariance_type="full", weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=0.05, mean_precision_prior=0.5, mean_prior=model.m0.numpy(),
        degrees_of_freedom_prior=model.nu0, covariance_prior=np.linalg.inv(model.W0.numpy()),
        reg_covar=0.0, tol=0.0, max_iter=sweeps,
    )
    sk.resp0 = model.initial_responsibilities(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: we stop it on purpose
        sk.fit(x.numpy())
    atol = 1e-12 if sweeps < 10 else 1e-8  # scikit-learn adds 10 * eps to each N_k
    np.testing.assert_allclose(model.expected_weights.numpy(), sk.weights_, atol=atol)
    np.testing.assert_allclose(model.means.numpy(), sk.means_, atol=atol * 10)
    np.testing.assert_allclose(model.covariances.numpy(), sk.covariances_, atol=atol * 10)
    np.testing.assert_allclose(model.nu.numpy(), sk.degrees_of_freedom_, atol=atol * 10)
    np.testing.assert_allclose(model.responsibilities(x).numpy(), sk.predict_proba(x.numpy()), atol=atol * 10)


def test_redundant_components_are_switched_off():
    x, y = blobs(n_per=80, scale=0.4, seed=7, labels=True)
    K = 8
    model = BayesianGaussianMixture(K, NormalWishartPrior(alpha0=1e-3), seed=0)
    model.fit(x, max_iter=300)
    w = model.expected_weights
    top = torch.argsort(w, descending=True)
    assert w[top[:3]].sum() > 0.995 and torch.all(w[top[3:]] < 1e-3)
    # each surviving component is the conjugate posterior of one true cluster (the clusters are
    # so far apart that the responsibilities are one-hot to within 1e-9), computed independently
    p = model.prior.resolve(x)
    for k in top[:3]:
        c = torch.cdist(model.means[k : k + 1], torch.tensor(CENTERS, dtype=f64)).argmin().item()
        xc = x[y == c]
        n, xbar = xc.shape[0], xc.mean(0)
        S = torch.cov(xc.T, correction=0)
        m_post = (p.beta0 * p.m0 + n * xbar) / (p.beta0 + n)
        W_inv = torch.linalg.inv(p.W0) + n * S + p.beta0 * n / (p.beta0 + n) * torch.outer(xbar - p.m0, xbar - p.m0)
        torch.testing.assert_close(model.means[k], m_post, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.covariances[k], W_inv / (p.nu0 + n), rtol=0, atol=1e-6)
        assert w[k].item() == pytest.approx((p.alpha0 + n) / (K * p.alpha0 + x.shape[0]), abs=1e-6)


def test_kmeans_plusplus_follows_the_d2_rule():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=f64)
    runs = 4000
    pairs = [tuple(kmeans_plus_plus_indices(x, 2, gen(s)).tolist()) for s in range(runs)]
    # P(first = i, second = j) = 1/N * d(i, j)^2 / sum_l d(i, l)^2
    d2 = torch.cdist(x, x) ** 2
    prob = (d2 / d2.sum(1, keepdim=True) / 4).numpy()
    cells = [(i, j) for i in range(4) for j in range(4) if i != j]
    observed = np.array([pairs.count(c) for c in cells])
    expected = np.array([prob[c] * runs for c in cells])
    assert observed.sum() == runs  # a seed is never picked twice
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert torch.equal(kmeans_plus_plus_indices(x, 3, gen(5)), kmeans_plus_plus_indices(x, 3, gen(5)))  # seeded


def test_kmeans_plusplus_spreads_the_seeds():
    x = blobs(scale=0.1, seed=8)
    centers = torch.tensor(CENTERS, dtype=f64)
    clusters_hit = [set(torch.cdist(x[kmeans_plus_plus_indices(x, 3, gen(s))], centers).argmin(1).tolist()) for s in range(20)]
    hits = sum(len(c) == 3 for c in clusters_hit)
    assert hits >= 19


# --- the posterior predictive ----------------------------------------------------------------------


def test_predictive_is_normalised_in_1d():
    x = torch.cat([
        torch.randn(30, 1, generator=gen(1), dtype=f64) - 2,
        0.5 * torch.randn(20, 1, generator=gen(2), dtype=f64) + 2,
    ])
    model = BayesianGaussianMixture(3, seed=0)
    model.fit(x)
    # substitute t = s + c tan(theta) to map the real line onto (-pi/2, pi/2), then Simpson's rule
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 200_001, dtype=f64)[1:-1]
    c = 2.0
    t = x.mean() + c * torch.tan(theta)
    integrand = torch.exp(model.log_prob(t[:, None])) * c / torch.cos(theta) ** 2
    total = integrate.simpson(integrand.numpy(), x=theta.numpy())
    assert total == pytest.approx(1.0, abs=1e-7)
    # adaptive quadrature of the density over [-3, 0] equals the difference of the SciPy mixture CDF
    w, loc, scale, df = (a.numpy() for a in model.predictive())

    def density(v):
        return math.exp(model.log_prob(torch.tensor([[v]], dtype=f64)).item())

    def cdf(v):
        return sum(w[k] * stats.t.cdf(v, df[k], loc[k, 0], math.sqrt(scale[k, 0, 0])) for k in range(3))

    assert integrate.quad(density, -3, 0)[0] == pytest.approx(cdf(0.0) - cdf(-3.0), abs=1e-9)


def test_predictive_equals_a_scipy_student_t_mixture():
    x = blobs(n_per=30, seed=9)
    model = BayesianGaussianMixture(4, seed=1)
    model.fit(x)
    w, loc, scale, df = (t.numpy() for t in model.predictive())
    t = torch.randn(25, 2, generator=gen(3), dtype=f64) * 4
    dens = sum(w[k] * stats.multivariate_t(loc=loc[k], shape=scale[k], df=df[k]).pdf(t.numpy()) for k in range(4))
    np.testing.assert_allclose(model.log_prob(t).numpy(), np.log(dens), rtol=0, atol=1e-10)
    # Bishop (10.82): Student-t precision L_k = (nu_k + 1 - D) beta_k / (1 + beta_k) W_k
    L = (model.nu + 1 - 2) * model.beta / (1 + model.beta)
    torch.testing.assert_close(torch.linalg.inv(torch.from_numpy(scale)), L[:, None, None] * model.W)


@pytest.mark.parametrize("d", [1, 2])
def test_samples_pass_a_goodness_of_fit_test(d):
    x = blobs(n_per=4, seed=10) if d == 2 else tiny(8, 1, seed=4)  # few points: heavy predictive tails
    model = BayesianGaussianMixture(3, seed=0)
    model.fit(x)
    s = model.sample(4000, generator=gen(11))
    assert s.shape == (4000, d)
    w, loc, scale, df = (t.numpy() for t in model.predictive())
    u = np.ones(d) / math.sqrt(d)  # a projection of a multivariate t is a univariate t
    proj = s.numpy() @ u

    def cdf(v):
        return sum(
            w[k] * stats.t.cdf(v, df=df[k], loc=loc[k] @ u, scale=math.sqrt(u @ scale[k] @ u)) for k in range(len(w))
        )

    assert stats.kstest(proj, cdf).pvalue > 1e-3


def test_heavy_tailed_predictive_samples():
    # one point and a vague prior: the predictive is a Student-t with df = nu0 + N + 1 - D = 1.3 < 2,
    # which exercises the chi-square draws of shape df / 2 < 1
    x = torch.tensor([[0.5]], dtype=f64)
    prior = NormalWishartPrior(nu0=0.3, m0=torch.zeros(1, dtype=f64), W0=torch.eye(1, dtype=f64))
    model = BayesianGaussianMixture(1, prior)
    model.fit(x)
    _, loc, scale, df = model.predictive()
    assert df.item() == pytest.approx(1.3)
    s = model.sample(4000, generator=gen(12)).squeeze(1).numpy()
    ref = stats.t(df=df.item(), loc=loc.item(), scale=math.sqrt(scale.item()))
    assert stats.kstest(s, ref.cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [0.3, 0.65, 1.0, 2.5, 40.0])
def test_gamma_draws_behind_the_student_t_sampler(shape):
    from gmlib.variational import _standard_gamma

    a = torch.full((20000,), shape, dtype=f64)
    draws = _standard_gamma(a, gen(13)).numpy()
    assert stats.kstest(draws, stats.gamma(shape).cdf).pvalue > 1e-3
    torch.testing.assert_close(_standard_gamma(a[:5], gen(1)), _standard_gamma(a[:5], gen(1)), rtol=0, atol=0)


def test_exact_predictive_when_k_is_one():
    # K = 1: the predictive is exact, log p(x_new | X) = log p(X, x_new) - log p(X)
    x = tiny(6, 2, seed=12)
    prior = NormalWishartPrior(beta0=0.3, nu0=2.5, m0=torch.zeros(2, dtype=f64), W0=0.5 * torch.eye(2, dtype=f64))
    model = BayesianGaussianMixture(1, prior)
    model.fit(x)
    x_new = torch.tensor([[0.3, -1.0], [4.0, 2.0]], dtype=f64)
    lp = model.log_prob(x_new)
    for i in range(2):
        want = exact_log_evidence(torch.cat([x, x_new[i : i + 1]]), 1, prior) - exact_log_evidence(x, 1, prior)
        assert lp[i].item() == pytest.approx(want, abs=1e-10)


# --- contracts, dtypes, progress, validation -----------------------------------------------------------


def test_density_model_contract_and_properties():
    x = blobs(n_per=20, seed=13)
    model = BayesianGaussianMixture(3, seed=0)
    model.fit(x)
    check_density_model(model, x)
    assert model.expected_weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(model.responsibilities(x).sum(1), torch.ones(x.shape[0], dtype=f64))
    torch.testing.assert_close(model.covariances, torch.linalg.inv(model.nu[:, None, None] * model.W))
    assert model.means is model.m and model.dim == 2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(state) == {"alpha", "beta", "m", "W", "nu", "m0", "W0"}


def test_fit_is_reproducible_and_float32_works():
    x = blobs(n_per=20, seed=14)
    h1 = BayesianGaussianMixture(4, seed=3).fit(x)
    h2 = BayesianGaussianMixture(4, seed=3).fit(x)
    assert h1 == h2
    m32 = BayesianGaussianMixture(4, seed=3)
    h32 = m32.fit(x.float())
    assert h32[-1] == pytest.approx(h1[-1], rel=1e-6)  # float64 inside
    assert m32.log_prob(x.float()).dtype == torch.float32


def test_progress_bar_is_text_on_stdout(capsys):
    x = blobs(n_per=10, seed=15)
    BayesianGaussianMixture(3).fit(x, max_iter=3, tol=0.0, progress=True, desc="cavi")
    out, err = capsys.readouterr()
    assert "cavi" in out and err == ""


def test_input_validation():
    x = blobs(n_per=10, seed=16)
    with pytest.raises(ValueError, match="n_components"):
        BayesianGaussianMixture(0)
    with pytest.raises(ValueError, match="prior"):
        BayesianGaussianMixture(2, prior={"alpha0": 1.0})
    with pytest.raises(ValueError, match="nu0"):
        BayesianGaussianMixture(2, NormalWishartPrior(nu0=0.5)).fit(x)  # needs nu0 > D - 1 = 1
    with pytest.raises(ValueError, match="alpha0"):
        BayesianGaussianMixture(2, NormalWishartPrior(alpha0=0.0)).fit(x)
    with pytest.raises(ValueError, match="W0"):
        BayesianGaussianMixture(2, NormalWishartPrior(W0=-torch.eye(2, dtype=f64))).fit(x)
    with pytest.raises(ValueError, match="m0"):
        BayesianGaussianMixture(2, NormalWishartPrior(m0=torch.zeros(3, dtype=f64))).fit(x)
    model = BayesianGaussianMixture(2)
    with pytest.raises(RuntimeError, match="fit"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="floating"):
        model.fit(x.long())
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad)
    model.fit(x)
    with pytest.raises(ValueError, match="columns"):
        model.log_prob(torch.zeros(4, 3, dtype=f64))
    with pytest.raises(ValueError, match="resp"):
        model.elbo(x, resp=torch.ones(x.shape[0], 2, dtype=f64))  # rows do not sum to 1
    with pytest.raises(ValueError, match="max_iter"):
        model.fit(x, max_iter=-1)
