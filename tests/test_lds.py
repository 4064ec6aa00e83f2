"""Chapter 3: linear dynamical systems.

The reference for every check is the joint Gaussian of all latents and all
observations of a short sequence, built explicitly as a linear map of
independent noise (float64). The Kalman log-likelihood must equal its
marginal log density of x_{1:T}; filtered, predicted and smoothed moments
(and the lag-one cross-covariances) must equal its conditionals. EM is
checked by its defining property (the M-step is a stationary point of the
expected complete-data log-likelihood, with moments from the joint) and by
monotonicity. Sampling tests use stated numbers of standard errors; every
random draw is seeded.
"""
import math

import pytest
import torch
import torch.distributions as Dist

from gmlib import lds as L
from gmlib.lds import LDS

from contracts import SequencesChannelsFirst, check_density_model

f64 = torch.float64
Z_TOL = 4.5  # tolerance in standard errors for sampling tests


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py


def spd(n, gen, scale=1.0):
    m = torch.randn(n, n, generator=gen, dtype=f64)
    return scale * (m @ m.T / n + 0.3 * torch.eye(n, dtype=f64))


def random_lds(Z=3, X=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(Z, Z, generator=g, dtype=f64)
    A = 0.9 * A / torch.linalg.matrix_norm(A, ord=2)  # stable dynamics
    C = torch.randn(X, Z, generator=g, dtype=f64)
    return LDS(A, spd(Z, g, 0.3), C, spd(X, g, 0.5), torch.randn(Z, generator=g, dtype=f64), spd(Z, g))


def joint(model: LDS, T: int):
    """Mean and covariance of v = (z_1, ..., z_T, x_1, ..., x_T), of size T*(Z+X).

    v = mean + M e with independent e = (z_1 - mu0, w_2, ..., w_T, v_1, ..., v_T),
    Cov(e) = blockdiag(P0, Q, ..., Q, R, ..., R), so Cov(v) = M Cov(e) M^T.
    """
    Z, X = model.state_dim, model.obs_dim
    powers = [torch.eye(Z, dtype=f64)]
    for _ in range(T):
        powers.append(model.A @ powers[-1])
    Mz = torch.zeros(T * Z, T * Z, dtype=f64)
    for t in range(T):
        for s in range(t + 1):
            Mz[t * Z : (t + 1) * Z, s * Z : (s + 1) * Z] = powers[t - s]
    Cb = torch.block_diag(*[model.C] * T)  # (T*X, T*Z)
    M = torch.cat([torch.cat([Mz, torch.zeros(T * Z, T * X, dtype=f64)], 1), torch.cat([Cb @ Mz, torch.eye(T * X, dtype=f64)], 1)], 0)
    cov_e = torch.block_diag(model.P0, *[model.Q] * (T - 1), *[model.R] * T)
    mean_z = torch.cat([powers[t] @ model.mu0 for t in range(T)])
    mean = torch.cat([mean_z, Cb @ mean_z])
    return mean, M @ cov_e @ M.T


def condition(mean, cov, target, given, values):
    """Gaussian conditioning: moments of v[target] given v[given] = values (B, len(given))."""
    if len(given) == 0:
        return mean[target].expand(values.shape[0], -1), cov[target][:, target]
    S_gg = cov[given][:, given]
    S_tg = cov[target][:, given]
    gain = torch.linalg.solve(S_gg, S_tg.T).T
    cmean = mean[target] + (values - mean[given]) @ gain.T
    ccov = cov[target][:, target] - gain @ S_tg.T
    return cmean, ccov


def z_idx(t, Z):
    return list(range(t * Z, (t + 1) * Z))


def x_idx(ts, Z, X, T):
    return [T * Z + t * X + i for t in ts for i in range(X)]


# --- one filter step ------------------------------------------------------------------


def test_kalman_predict_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    B, Z = 4, 3
    mean = torch.randn(B, Z, generator=g, dtype=f64)
    cov = torch.stack([spd(Z, g) for _ in range(B)])
    A, Q = torch.randn(Z, Z, generator=g, dtype=f64), spd(Z, g)
    m, P = L.kalman_predict(mean, cov, A, Q)
    for b in range(B):
        torch.testing.assert_close(m[b], A @ mean[b])
        torch.testing.assert_close(P[b], A @ cov[b] @ A.T + Q)
    assert torch.equal(P, P.transpose(-1, -2))


def test_kalman_update_matches_information_form_and_the_predictive_density():
    g = torch.Generator().manual_seed(1)
    B, Z, X = 5, 3, 2
    mean = torch.randn(B, Z, generator=g, dtype=f64)
    cov = torch.stack([spd(Z, g) for _ in range(B)])
    x = torch.randn(B, X, generator=g, dtype=f64)
    C, R = torch.randn(X, Z, generator=g, dtype=f64), spd(X, g, 0.5)
    m, P, ll = L.kalman_update(mean, cov, x, C, R)
    Rinv = torch.linalg.inv(R)
    for b in range(B):
        # posterior in information form: P'^{-1} = P^{-1} + C^T R^{-1} C, P'^{-1} m' = P^{-1} m + C^T R^{-1} x
        info = torch.linalg.inv(cov[b]) + C.T @ Rinv @ C
        torch.testing.assert_close(P[b], torch.linalg.inv(info))
        torch.testing.assert_close(m[b], torch.linalg.solve(info, torch.linalg.solve(cov[b], mean[b]) + C.T @ Rinv @ x[b]))
        pred = Dist.MultivariateNormal(C @ mean[b], C @ cov[b] @ C.T + R)
        torch.testing.assert_close(ll[b], pred.log_prob(x[b]))
    assert torch.equal(P, P.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(P) > 0).all()


# --- filter, smoother, likelihood against the joint Gaussian ------------------------------


@pytest.mark.parametrize("T", [1, 2, 6])
def test_kalman_loglik_equals_the_joint_gaussian_density(T):
    model = random_lds(seed=T)
    _, x = model.sample(4, T, generator=torch.Generator().manual_seed(0))
    mean, cov = joint(model, T)
    Z, X = model.state_dim, model.obs_dim
    xi = x_idx(range(T), Z, X, T)
    ref = Dist.MultivariateNormal(mean[xi], cov[xi][:, xi]).log_prob(x.reshape(4, T * X))
    torch.testing.assert_close(model.log_prob(x), ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(model.loss(x), -ref.mean())


def test_filtered_and_predicted_moments_equal_the_joint_conditionals():
    T = 5
    model = random_lds(Z=3, X=2, seed=10)
    _, x = model.sample(3, T, generator=torch.Generator().manual_seed(1))
    Z, X = model.state_dim, model.obs_dim
    mean, cov = joint(model, T)
    f = model.filter(x)
    values = x.reshape(3, T * X)
    for t in range(T):
        given = x_idx(range(t + 1), Z, X, T)
        m, P = condition(mean, cov, z_idx(t, Z), given, values[:, : (t + 1) * X])
        torch.testing.assert_close(f.means[:, t], m, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(f.covs[:, t], P.expand(3, Z, Z), rtol=1e-10, atol=1e-10)
        given = x_idx(range(t), Z, X, T)
        m, P = condition(mean, cov, z_idx(t, Z), given, values[:, : t * X])
        torch.testing.assert_close(f.pred_means[:, t], m, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(f.pred_covs[:, t], P.expand(3, Z, Z), rtol=1e-10, atol=1e-10)


def test_rts_smoother_equals_the_joint_conditionals_given_all_observations():
    T = 6
    model = random_lds(Z=3, X=2, seed=11)
    _, x = model.sample(3, T, generator=torch.Generator().manual_seed(2))
    Z, X = model.state_dim, model.obs_dim
    mean, cov = joint(model, T)
    s = model.smooth(x)
    assert s.cross_covs.shape == (3, T - 1, Z, Z)
    all_x = x_idx(range(T), Z, X, T)
    zs = list(range(T * Z))
    m, P = condition(mean, cov, zs, all_x, x.reshape(3, T * X))  # p(z_{1:T} | x_{1:T})
    torch.testing.assert_close(s.means, m.reshape(3, T, Z), rtol=1e-10, atol=1e-10)
    for t in range(T):
        torch.testing.assert_close(s.covs[:, t], P[t * Z : (t + 1) * Z, t * Z : (t + 1) * Z].expand(3, Z, Z), rtol=1e-10, atol=1e-10)
    for t in range(T - 1):  # Cov(z_{t+1}, z_t | x_{1:T})
        ref = P[(t + 1) * Z : (t + 2) * Z, t * Z : (t + 1) * Z]
        torch.testing.assert_close(s.cross_covs[:, t], ref.expand(3, Z, Z), rtol=1e-10, atol=1e-10)
    # the last smoothed step is the last filtered step, and the likelihoods agree
    f = model.filter(x)
    torch.testing.assert_close(s.means[:, -1], f.means[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(s.log_likelihood, f.log_likelihood, rtol=0, atol=0)


def test_smoother_handles_a_singular_process_noise():
    """A constant-velocity tracker: noise enters only through the velocity (Q is rank 1)."""
    dt = 1.0
    A = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=f64)
    Q = torch.tensor([[0.0, 0.0], [0.0, 0.1]], dtype=f64)
    model = LDS(A, Q, torch.tensor([[1.0, 0.0]], dtype=f64), torch.tensor([[0.5]], dtype=f64),
                torch.zeros(2, dtype=f64), torch.eye(2, dtype=f64))
    T = 5
    _, x = model.sample(2, T, generator=torch.Generator().manual_seed(3))
    mean, cov = joint(model, T)
    ref = Dist.MultivariateNormal(mean[x_idx(range(T), 2, 1, T)], cov[T * 2 :, T * 2 :]).log_prob(x.reshape(2, T))
    torch.testing.assert_close(model.log_prob(x), ref, rtol=1e-12, atol=1e-10)
    m, _ = condition(mean, cov, list(range(T * 2)), x_idx(range(T), 2, 1, T), x.reshape(2, T))
    torch.testing.assert_close(model.smooth(x).means, m.reshape(2, T, 2), rtol=1e-9, atol=1e-9)


# --- sampling ----------------------------------------------------------------------------


def test_sample_moments_match_the_joint_gaussian():
    T, n = 4, 20000
    model = random_lds(Z=2, X=2, seed=12)
    z, x = model.sample(n, T, generator=torch.Generator().manual_seed(4))
    assert z.shape == (n, T, 2) and x.shape == (n, T, 2)
    mean, cov = joint(model, T)
    v = torch.cat([z.reshape(n, -1), x.reshape(n, -1)], 1)  # (n, T*(Z+X)) in the joint's order
    emp_mean = v.mean(0)
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((emp_mean - mean).abs() <= Z_TOL * se_mean).all()
    emp_cov = torch.cov(v.T)
    var = torch.diagonal(cov)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()  # Gaussian sample covariance
    assert ((emp_cov - cov).abs() <= Z_TOL * se_cov).all(), ((emp_cov - cov).abs() / se_cov).max()
    again = model.sample(n, T, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[1], x)


def test_density_contract():
    model = random_lds(seed=13)
    _, x = model.sample(6, 5, generator=torch.Generator().manual_seed(0))
    check_density_model(SequencesChannelsFirst(model, 5), x.transpose(1, 2))


# --- EM ------------------------------------------------------------------------------------


def expected_complete_loglik(M, S, x, A, Qs, C, Rs, mu0, P0s):
    """E[log p(z, x | theta)] under z | x ~ N(M (B, T*Z), S (T*Z, T*Z)) (ch03:lds-em).

    Qs, Rs, P0s are unconstrained square matrices whose symmetric parts are the covariances.
    """
    Q, R, P0 = (0.5 * (m + m.T) for m in (Qs, Rs, P0s))
    B, T, X = x.shape
    Z = A.shape[0]
    m = M.reshape(B, T, Z)
    blk = lambda s, t: S[s * Z : (s + 1) * Z, t * Z : (t + 1) * Z]  # noqa: E731
    Ezz = lambda b, s, t: blk(s, t) + torch.outer(m[b, s], m[b, t])  # noqa: E731  E[z_s z_t^T]

    def gauss(cov, second_moment):  # E log N(u | 0, cov) given E[u u^T]
        return -0.5 * (cov.shape[0] * math.log(2 * math.pi) + torch.logdet(cov) + torch.trace(torch.linalg.solve(cov, second_moment)))

    total = 0.0
    for b in range(B):
        d0 = m[b, 0] - mu0
        total = total + gauss(P0, blk(0, 0) + torch.outer(d0, d0))
        for t in range(1, T):
            e = Ezz(b, t, t) - A @ Ezz(b, t - 1, t) - Ezz(b, t, t - 1) @ A.T + A @ Ezz(b, t - 1, t - 1) @ A.T
            total = total + gauss(Q, e)
        for t in range(T):
            Ez = m[b, t]
            e = torch.outer(x[b, t], x[b, t]) - C @ torch.outer(Ez, x[b, t]) - torch.outer(x[b, t], Ez) @ C.T + C @ Ezz(b, t, t) @ C.T
            total = total + gauss(R, e)
    return total


def test_em_step_is_the_stationary_point_of_the_expected_complete_loglik():
    """One EM step lands where the gradient of Q(theta) vanishes, Q built from the exact
    posterior of the joint Gaussian under the old parameters (Shumway & Stoffer 1982)."""
    T, B = 4, 3
    model = random_lds(Z=2, X=2, seed=14)
    _, x = random_lds(Z=2, X=2, seed=15).sample(B, T, generator=torch.Generator().manual_seed(5))
    Z, X = 2, 2
    mean, cov = joint(model, T)
    M, S = condition(mean, cov, list(range(T * Z)), x_idx(range(T), Z, X, T), x.reshape(B, T * X))
    history = model.fit(x, max_iter=1, tol=-math.inf)
    assert len(history) == 2 and history[1] >= history[0]
    params = [p.clone().requires_grad_(True) for p in (model.A, model.Q, model.C, model.R, model.mu0, model.P0)]
    q = expected_complete_loglik(M, S, x, *params)
    for name, g in zip(("A", "Q", "C", "R", "mu0", "P0"), torch.autograd.grad(q, params)):
        assert g.abs().max() < 1e-8, (name, g)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _ in range(5):
            moved = [p + 0.02 * torch.randn(p.shape, generator=gen, dtype=f64) for p in params]
            assert expected_complete_loglik(M, S, x, *moved) < q


def test_em_never_decreases_and_improves_a_lot():
    truth = random_lds(Z=2, X=3, seed=16)
    _, x = truth.sample(20, 40, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(8)
    start = LDS(0.5 * torch.eye(2, dtype=f64), torch.eye(2, dtype=f64), torch.randn(3, 2, generator=g, dtype=f64),
                torch.eye(3, dtype=f64), torch.zeros(2, dtype=f64), torch.eye(2, dtype=f64))
    history = start.fit(x, max_iter=40, tol=0.0)
    diffs = torch.tensor(history).diff()
    assert (diffs >= -1e-9 * abs(history[0])).all(), diffs.min()
    assert history[-1] > history[0] + 10
    assert history[-1] > float(truth.log_prob(x).mean()) - 2.0  # close to the generating model
    torch.testing.assert_close(torch.tensor(history[-1], dtype=f64), start.log_prob(x).mean(), rtol=0, atol=1e-9)


def test_em_with_some_parameters_held_fixed():
    truth = random_lds(Z=2, X=2, seed=17)
    _, x = truth.sample(10, 30, generator=torch.Generator().manual_seed(9))
    model = LDS(truth.A, torch.eye(2, dtype=f64), truth.C, torch.eye(2, dtype=f64), truth.mu0, truth.P0)
    history = model.fit(x, max_iter=20, learn=("Q", "R"), tol=0.0)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:]))
    assert torch.equal(model.A, truth.A) and torch.equal(model.C, truth.C) and torch.equal(model.P0, truth.P0)
    assert not torch.equal(model.Q, torch.eye(2, dtype=f64))
    with pytest.raises(ValueError, match="learn"):
        model.fit(x, learn=("B",))


def test_fit_progress_bar_goes_to_stdout(capsys):
    model = random_lds(seed=18)
    _, x = model.sample(4, 10, generator=torch.Generator().manual_seed(0))
    model.fit(x, max_iter=2, progress=True, desc="lds-em")
    out, err = capsys.readouterr()
    assert "lds-em" in out and err == ""


def test_float32_agrees_with_float64():
    model = random_lds(Z=3, X=2, seed=19)
    _, x = model.sample(4, 100, generator=torch.Generator().manual_seed(0))
    m32 = LDS(*(t.float() for t in (model.A, model.Q, model.C, model.R, model.mu0, model.P0)))
    lp32 = m32.log_prob(x.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), model.log_prob(x), rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(m32.smooth(x.float()).means.double(), model.smooth(x).means, rtol=1e-3, atol=1e-3)


# --- input validation ---------------------------------------------------------------------


def test_clear_errors():
    model = random_lds(Z=3, X=2)
    A, Q, C, R, mu0, P0 = model.A, model.Q, model.C, model.R, model.mu0, model.P0
    with pytest.raises(ValueError, match="Q must be positive semi-definite"):
        LDS(A, -Q, C, R, mu0, P0)
    with pytest.raises(ValueError, match="R must be symmetric"):
        LDS(A, Q, C, R + torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=f64), mu0, P0)
    with pytest.raises(ValueError, match="C must have shape"):
        LDS(A, Q, C.T, R, mu0, P0)
    with pytest.raises(ValueError, match="mu0"):
        LDS(A, Q, C, R, mu0[:2], P0)
    with pytest.raises(ValueError, match="floating-point"):
        model.log_prob(torch.zeros(2, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="event shape"):
        model.filter(torch.zeros(2, 3, 3, dtype=f64))
    with pytest.raises(ValueError, match="T >= 1"):
        model.smooth(torch.zeros(2, 0, 2, dtype=f64))
    mean, cov = torch.zeros(4, 3, dtype=f64), torch.eye(3, dtype=f64).expand(4, 3, 3)
    with pytest.raises(ValueError, match="A must have shape"):
        L.kalman_predict(mean, cov, A[:2], Q)
    with pytest.raises(ValueError, match="cov must have shape"):
        L.kalman_predict(mean, cov[:2], A, Q)
    with pytest.raises(ValueError, match="x must have shape"):
        L.kalman_update(mean, cov, torch.zeros(3, 2, dtype=f64), C, R)
    with pytest.raises(ValueError, match="not positive definite"):
        L.kalman_update(mean, cov, torch.zeros(4, 2, dtype=f64), C, -10 * R)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = random_lds(seed=20)
    _, x = model.sample(16, 30, generator=torch.Generator().manual_seed(0))
    ref = model.smooth(x)
    gpu = random_lds(seed=20).to("cuda")
    assert gpu.A.device.type == "cuda"
    s = gpu.smooth(x.cuda())
    torch.testing.assert_close(s.means.cpu(), ref.means)
    torch.testing.assert_close(s.log_likelihood.cpu(), ref.log_likelihood)
    z, xs = gpu.sample(4, 10, generator=torch.Generator("cuda").manual_seed(0))
    assert xs.device.type == "cuda"
    history = gpu.fit(x.cuda(), max_iter=5)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:]))
