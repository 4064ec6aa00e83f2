"""Chapter 2: probabilistic PCA and factor analysis (gmlib.linear_gaussian).

Identities checked: the closed-form PPCA maximum likelihood against an
independent eigendecomposition and against the log-likelihood's gradient; EM
against the closed form; log densities against ``torch.distributions``; the
latent posterior against the Gaussian conditional of the joint of (z, x) built
by brute force; factor analysis against scikit-learn's implementation of the
same maximum-likelihood problem. Everything is seeded and in float64.
"""
import math

import numpy as np
import pytest
import torch
import torch.distributions as D
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

from gmlib.linear_gaussian import FactorAnalysis, LinearGaussian, PPCA

from contracts import check_density_model

f64 = torch.float64
SPECTRUM = (4.0, 3.0, 1.5, 1.0, 0.7, 0.5)  # eigenvalues of the sample covariance of `exact_spectrum_data`


def gen(seed):
    return torch.Generator().manual_seed(seed)


def exact_spectrum_data(n=400, spectrum=SPECTRUM, seed=0):
    """Data whose ML sample covariance is exactly Q diag(spectrum) Q^T (Q a random rotation)."""
    g = gen(seed)
    d = len(spectrum)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))
    z = torch.randn(n, d, generator=g, dtype=f64)
    z = z - z.mean(0)
    L = torch.linalg.cholesky(z.T @ z / n)
    z = torch.linalg.solve_triangular(L, z.T, upper=False).T  # sample covariance exactly I
    mu = torch.randn(d, generator=g, dtype=f64)
    x = z @ (Q * torch.tensor(spectrum, dtype=f64).sqrt()).T + mu
    return x, Q, mu


def fa_data(n=1500, d=6, m=2, seed=0):
    """Data from a factor-analysis model whose noise variances differ fivefold."""
    g = gen(seed)
    W = 2.0 * torch.randn(d, m, generator=g, dtype=f64)
    psi = torch.linspace(0.3, 1.5, d, dtype=f64)
    z = torch.randn(n, m, generator=g, dtype=f64)
    x = z @ W.T + 1.0 + psi.sqrt() * torch.randn(n, d, generator=g, dtype=f64)
    return x


def random_model(d=5, m=2, seed=0, cls=LinearGaussian):
    g = gen(seed)
    W = torch.randn(d, m, generator=g, dtype=f64)
    mean = torch.randn(d, generator=g, dtype=f64)
    noise = 0.2 + torch.rand(d, generator=g, dtype=f64) if cls is not PPCA else torch.tensor(0.3, dtype=f64)
    return cls(W, mean, noise)


def mean_loglik(x, W, noise_var, mean):
    """Mean log-likelihood from torch.distributions (an independent implementation)."""
    C = W @ W.T + torch.diag(noise_var)
    return D.MultivariateNormal(mean, covariance_matrix=C).log_prob(x).mean()


# --- PPCA maximum likelihood in closed form -----------------------------------------------


def test_ppca_fit_ml_equals_the_eigendecomposition_closed_form():
    g = gen(1)
    x = torch.randn(300, 7, generator=g, dtype=f64) @ torch.randn(7, 7, generator=g, dtype=f64)
    for M in (1, 3, 6):
        model = PPCA.fit_ml(x, M)
        # independent closed form (Tipping & Bishop 1999, eqs. 7-8) with NumPy
        xn = x.numpy()
        S = np.cov(xn.T, bias=True)
        lam, U = np.linalg.eigh(S)
        lam, U = lam[::-1], U[:, ::-1]
        s2 = lam[M:].mean()
        WWt = U[:, :M] @ np.diag(lam[:M] - s2) @ U[:, :M].T  # W is only determined up to a rotation
        np.testing.assert_allclose(model.sigma2, s2, rtol=1e-12)
        np.testing.assert_allclose((model.W @ model.W.T).numpy(), WWt, atol=1e-10)
        np.testing.assert_allclose(model.mean.numpy(), xn.mean(0), atol=1e-12)
        # our W has orthogonal columns (R = I): W^T W = diag(lambda_j - sigma^2)
        np.testing.assert_allclose((model.W.T @ model.W).numpy(), np.diag(lam[:M] - s2), atol=1e-10)
        assert torch.all(model.noise_var == model.noise_var[0])


def test_ppca_fit_ml_on_a_known_spectrum():
    x, Q, mu = exact_spectrum_data()
    model = PPCA.fit_ml(x, 2)
    s2 = sum(SPECTRUM[2:]) / 4
    assert model.sigma2 == pytest.approx(s2, rel=1e-12)
    WWt = Q[:, :2] @ torch.diag(torch.tensor(SPECTRUM[:2], dtype=f64) - s2) @ Q[:, :2].T
    torch.testing.assert_close(model.W @ model.W.T, WWt, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.mean, mu, rtol=0, atol=1e-12)


def test_ppca_ml_log_likelihood_is_the_maximum():
    x, _, _ = exact_spectrum_data(seed=3)
    N, Dm = x.shape
    M = 2
    model = PPCA.fit_ml(x, M)
    ll = model.log_prob(x).mean()
    # the maximised value in closed form (ch02:ppca-ml-loglik)
    lam = sorted(SPECTRUM, reverse=True)
    s2 = sum(lam[M:]) / (Dm - M)
    closed = -0.5 * (Dm * math.log(2 * math.pi) + sum(math.log(v) for v in lam[:M]) + (Dm - M) * math.log(s2) + Dm)
    assert ll.item() == pytest.approx(closed, abs=1e-12)
    # stationary: the gradient of the log-likelihood in (W, log sigma^2, mean) vanishes
    W = model.W.clone().requires_grad_(True)
    log_s2 = torch.tensor(math.log(model.sigma2), dtype=f64, requires_grad=True)
    mean = model.mean.clone().requires_grad_(True)
    obj = mean_loglik(x, W, torch.exp(log_s2).expand(Dm), mean)
    grads = torch.autograd.grad(obj, [W, log_s2, mean])
    assert max(gr.abs().max().item() for gr in grads) < 1e-10
    # a maximum, not a saddle: no random perturbation increases it
    g = gen(4)
    for _ in range(50):
        dW = 1e-2 * torch.randn(Dm, M, generator=g, dtype=f64)
        ds = 1e-2 * torch.randn((), generator=g, dtype=f64)
        dm = 1e-2 * torch.randn(Dm, generator=g, dtype=f64)
        with torch.no_grad():
            pert = mean_loglik(x, model.W + dW, torch.exp(log_s2 + ds).expand(Dm), model.mean + dm)
        assert pert.item() < ll.item()


# --- PPCA by EM ------------------------------------------------------------------------------


def test_ppca_em_converges_to_the_ml_solution():
    x, _, _ = exact_spectrum_data(seed=5)
    ml = PPCA.fit_ml(x, 2)
    em, hist = PPCA.fit_em(x, 2, max_iter=1000, tol=1e-14, seed=0)
    assert len(hist) < 1001  # stopped by the tolerance
    h = np.array(hist)
    assert np.all(np.diff(h) >= -1e-12), "EM log-likelihood decreased"
    assert hist[-1] == pytest.approx(em.log_prob(x).mean().item(), abs=1e-12)  # history is the mean log-lik
    assert hist[-1] == pytest.approx(ml.log_prob(x).mean().item(), abs=1e-11)
    torch.testing.assert_close(em.W @ em.W.T, ml.W @ ml.W.T, rtol=0, atol=1e-6)
    assert em.sigma2 == pytest.approx(ml.sigma2, abs=1e-7)
    torch.testing.assert_close(em.mean, ml.mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppca_em_log_likelihood_never_decreases_and_stays_below_the_maximum(seed):
    g = gen(10 + seed)
    x = torch.randn(200, 5, generator=g, dtype=f64) @ torch.randn(5, 5, generator=g, dtype=f64)
    _, hist = PPCA.fit_em(x, 2, max_iter=60, tol=0.0, seed=seed)
    h = np.array(hist)
    assert len(h) <= 61 and h[-1] > h[0] + 0.1
    assert np.all(np.diff(h) >= -1e-12 * np.abs(h[1:]))
    assert h.max() <= PPCA.fit_ml(x, 2).log_prob(x).mean().item() + 1e-12


# --- densities, posterior, reconstruction, sampling ----------------------------------------------


@pytest.mark.parametrize("cls", [LinearGaussian, PPCA, FactorAnalysis])
def test_log_prob_equals_multivariate_normal(cls):
    model = random_model(cls=cls, seed=2)
    x = torch.randn(3, 4, 5, generator=gen(3), dtype=f64)  # extra batch dimensions are fine
    ref = D.MultivariateNormal(model.mean, covariance_matrix=model.W @ model.W.T + torch.diag(model.noise_var))
    torch.testing.assert_close(model.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.covariance, ref.covariance_matrix, rtol=0, atol=1e-14)


@pytest.mark.parametrize("cls", [LinearGaussian, PPCA])
def test_posterior_equals_the_conditional_of_the_joint_gaussian(cls):
    model = random_model(d=6, m=3, cls=cls, seed=4)
    W, mu, Psi = model.W, model.mean, torch.diag(model.noise_var)
    M = W.shape[1]
    # joint of (z, x): mean (0, mu), covariance [[I, W^T], [W, W W^T + Psi]]
    Szz, Szx, Sxx = torch.eye(M, dtype=f64), W.T, W @ W.T + Psi
    x = torch.randn(9, 6, generator=gen(5), dtype=f64) * 2
    K = Szx @ torch.linalg.inv(Sxx)  # (M, D)
    want_mean = (x - mu) @ K.T
    want_cov = Szz - K @ Szx.T
    mean, cov = model.posterior(x)
    torch.testing.assert_close(mean, want_mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cov, want_cov, rtol=1e-10, atol=1e-10)
    if cls is PPCA:  # Tipping & Bishop's form: M = W^T W + sigma^2 I
        s2 = model.sigma2
        Mtb = W.T @ W + s2 * torch.eye(M, dtype=f64)
        torch.testing.assert_close(mean, (x - mu) @ torch.linalg.solve(Mtb, W.T).T, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(cov, s2 * torch.linalg.inv(Mtb), rtol=1e-10, atol=1e-10)


def test_reconstruct_is_the_conditional_mean_of_the_noise_free_signal():
    model = random_model(d=6, m=2, seed=6, cls=FactorAnalysis)
    W, mu = model.W, model.mean
    C = model.covariance
    x = torch.randn(7, 6, generator=gen(7), dtype=f64)
    # E[W z + mu | x] = mu + Cov(Wz, x) C^{-1} (x - mu) = mu + W W^T C^{-1} (x - mu)
    want = mu + (x - mu) @ torch.linalg.solve(C, W @ W.T)
    torch.testing.assert_close(model.reconstruct(x), want, rtol=1e-10, atol=1e-10)
    # a vanishing noise makes PPCA reconstruction the orthogonal projection onto the principal subspace
    ppca = PPCA(W, mu, 1e-10)
    P = W @ torch.linalg.solve(W.T @ W, W.T)
    torch.testing.assert_close(ppca.reconstruct(x), mu + (x - mu) @ P, rtol=0, atol=1e-7)


def test_samples_follow_the_model():
    model = random_model(d=4, m=2, seed=8, cls=FactorAnalysis)
    n = 40000
    z, x = model.sample(n, generator=gen(9), return_latent=True)
    assert z.shape == (n, 2) and x.shape == (n, 4)
    # E[log p(x)] = -H[p] within 4 standard errors
    lp = model.log_prob(x)
    entropy = D.MultivariateNormal(model.mean, covariance_matrix=model.covariance).entropy()
    assert abs(lp.mean().item() + entropy.item()) < 4 * lp.std().item() / math.sqrt(n)
    # sample covariance within 5 standard errors, entry by entry
    C = model.covariance
    Shat = torch.cov(x.T)
    se = torch.sqrt((torch.outer(C.diagonal(), C.diagonal()) + C**2) / n)
    assert torch.all((Shat - C).abs() < 5 * se)
    # the latent draws are standard normal and x - W z - mu is the noise
    resid = x - z @ model.W.T - model.mean
    torch.testing.assert_close(resid.var(0), model.noise_var, rtol=0.05, atol=0)
    # the same generator seed reproduces the draws
    torch.testing.assert_close(model.sample(5, generator=gen(1)), model.sample(5, generator=gen(1)), rtol=0, atol=0)


# --- factor analysis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fa_fit():
    x = fa_data()
    fa, hist = FactorAnalysis.fit_em(x, 2, max_iter=3000, tol=1e-13, seed=0)
    return x, fa, hist


def test_factor_analysis_em_never_decreases_and_matches_sklearn(fa_fit):
    x, fa, hist = fa_fit
    h = np.array(hist)
    assert len(h) < 3001  # stopped by the tolerance
    assert np.all(np.diff(h) >= -1e-12), "EM log-likelihood decreased"
    assert hist[-1] == pytest.approx(fa.log_prob(x).mean().item(), abs=1e-12)
    sk = SkFactorAnalysis(n_components=2, tol=1e-12, max_iter=20000, svd_method="lapack").fit(x.numpy())
    # the same maximum-likelihood problem: the same optimum value and the same marginal covariance
    # (the likelihood is flat near the optimum, so parameters agree to about the square root of the
    # stopping tolerance while the log-likelihoods agree to far more)
    assert hist[-1] == pytest.approx(sk.score(x.numpy()), abs=1e-9)
    np.testing.assert_allclose(fa.covariance.numpy(), sk.get_covariance(), atol=2e-5)
    np.testing.assert_allclose(fa.noise_var.numpy(), sk.noise_variance_, rtol=1e-4)
    # unequal noise: factor analysis beats the best isotropic model (PPCA) by a clear margin
    assert hist[-1] > PPCA.fit_ml(x, 2).log_prob(x).mean().item() + 0.05


def test_factor_analysis_solution_is_stationary(fa_fit):
    x, fa, _ = fa_fit
    W = fa.W.clone().requires_grad_(True)
    log_psi = torch.log(fa.noise_var).requires_grad_(True)
    obj = mean_loglik(x, W, torch.exp(log_psi), fa.mean)
    gW, gpsi = torch.autograd.grad(obj, [W, log_psi])
    assert gW.abs().max().item() < 1e-6 and gpsi.abs().max().item() < 1e-6
    # and a maximum: random perturbations of (W, log psi) lower the log-likelihood
    g = gen(2)
    with torch.no_grad():
        for _ in range(30):
            pert = mean_loglik(
                x, fa.W + 1e-2 * torch.randn(6, 2, generator=g, dtype=f64),
                fa.noise_var * torch.exp(1e-2 * torch.randn(6, generator=g, dtype=f64)), fa.mean,
            )
            assert pert.item() < obj.item()


# --- contracts, dtypes, progress, validation ---------------------------------------------------------


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_density_model_contract(cls):
    x = fa_data(n=64)
    model = cls.fit_ml(x, 2) if cls is PPCA else cls.fit_em(x, 2, max_iter=50)[0]
    check_density_model(model, x)
    assert model.sample(3).shape == (3, 6)


def test_float32_fit_agrees_with_float64():
    x = fa_data(n=300)
    m64 = PPCA.fit_ml(x, 2)
    m32 = PPCA.fit_ml(x.float(), 2)
    assert m32.W.dtype == torch.float32 and m32.log_prob(x.float()).dtype == torch.float32
    torch.testing.assert_close((m32.W @ m32.W.T).double(), m64.W @ m64.W.T, rtol=1e-4, atol=1e-4)
    fa32, _ = FactorAnalysis.fit_em(x.float(), 2, max_iter=30, tol=0.0)
    fa64, _ = FactorAnalysis.fit_em(x, 2, max_iter=30, tol=0.0)
    torch.testing.assert_close(fa32.covariance.double(), fa64.covariance, rtol=1e-4, atol=1e-4)
    assert m64.double().W.dtype == f64 and m64.float().noise_var.dtype == torch.float32  # buffers follow .to()


def test_progress_bar_is_text_on_stdout(capsys):
    x = fa_data(n=100)
    PPCA.fit_em(x, 2, max_iter=5, tol=0.0, progress=True, desc="ppca-em")
    out, err = capsys.readouterr()
    assert "ppca-em" in out and err == ""
    FactorAnalysis.fit_em(x, 2, max_iter=5, tol=0.0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_input_validation():
    x = fa_data(n=50)
    with pytest.raises(ValueError, match="n_latent"):
        PPCA.fit_ml(x, 6)  # M must be < D
    with pytest.raises(ValueError, match="n_latent"):
        FactorAnalysis.fit_em(x, 0)
    with pytest.raises(ValueError, match="floating"):
        PPCA.fit_ml(x.long(), 2)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        PPCA.fit_em(bad, 2)
    with pytest.raises(ValueError, match="x"):
        PPCA.fit_ml(x[0], 2)  # 1-D
    with pytest.raises(ValueError, match="max_iter"):
        PPCA.fit_em(x, 2, max_iter=-1)
    with pytest.raises(ValueError, match="tol"):
        FactorAnalysis.fit_em(x, 2, tol=-1.0)
    W = torch.randn(6, 2, dtype=f64)
    with pytest.raises(ValueError, match="mean"):
        LinearGaussian(W, torch.zeros(5, dtype=f64), 1.0)
    with pytest.raises(ValueError, match="noise_var"):
        LinearGaussian(W, torch.zeros(6, dtype=f64), torch.tensor([1.0, 1, 1, 1, 1, -1], dtype=f64))
    with pytest.raises(ValueError, match="isotropic"):
        PPCA(W, torch.zeros(6, dtype=f64), torch.linspace(1, 2, 6, dtype=f64))
    model = PPCA(W, torch.zeros(6, dtype=f64), 0.5)
    with pytest.raises(ValueError, match="event shape"):
        model.log_prob(torch.zeros(3, 5, dtype=f64))
    with pytest.raises(ValueError, match="n"):
        model.sample(0)
