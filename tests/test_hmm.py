"""Chapter 3: hidden Markov models.

Every recursion is checked against brute-force enumeration of all K^T state
paths on small problems (float64): the forward log-likelihood, the posterior
single and pairwise marginals, the Viterbi path. Baum-Welch is checked by its
defining property (the M-step is a stationary point of the expected
complete-data log-likelihood, computed here from brute-force posteriors) and
by monotonicity. Sampling is checked against the transition matrix within
stated numbers of standard errors; every random draw is seeded.
"""
import itertools
import math

import pytest
import torch
import torch.distributions as D

from gmlib import hmm
from gmlib.hmm import GaussianHMM

from contracts import SequencesChannelsFirst, check_density_model

f64 = torch.float64
Z_TOL = 4.5  # tolerance in standard errors for sampling tests


def random_hmm(K, D=2, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    initial = torch.softmax(torch.randn(K, generator=g, dtype=dtype), -1)
    transition = torch.softmax(1.5 * torch.randn(K, K, generator=g, dtype=dtype), -1)
    means = 3 * torch.randn(K, D, generator=g, dtype=dtype)
    variances = 0.5 + torch.rand(K, D, generator=g, dtype=dtype)
    return GaussianHMM(initial, transition, means, variances)


def random_core(B, T, K, seed=0):
    """Random log parameters and emission log-likelihoods for the functional core."""
    g = torch.Generator().manual_seed(seed)
    log_initial = torch.log_softmax(torch.randn(K, generator=g, dtype=f64), -1)
    log_transition = torch.log_softmax(1.5 * torch.randn(K, K, generator=g, dtype=f64), -1)
    log_emission = 2 * torch.randn(B, T, K, generator=g, dtype=f64)
    return log_initial, log_transition, log_emission


def all_paths(T, K):
    return torch.tensor(list(itertools.product(range(K), repeat=T)), dtype=torch.long)  # (K^T, T)


def path_log_joint(log_initial, log_transition, log_emission, paths):
    """log p(z_{1:T}, x_{1:T}) for every path and sequence: (B, P), straight from (ch03:hmm-joint)."""
    B, T, K = log_emission.shape
    lj = log_initial[paths[:, 0]].expand(B, -1).clone()  # (B, P)
    for t in range(T):
        lj = lj + log_emission[:, t, paths[:, t]]
        if t > 0:
            lj = lj + log_transition[paths[:, t - 1], paths[:, t]]
    return lj


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py


CASES = [(1, 3), (2, 2), (4, 3), (5, 3), (6, 2), (6, 3)]  # (T, K)


# --- forward and backward ------------------------------------------------------------


@pytest.mark.parametrize("T,K", CASES)
def test_forward_equals_enumeration_of_all_paths(T, K):
    li, lt, le = random_core(3, T, K, seed=T * 10 + K)
    log_alpha, ll = hmm.forward(li, lt, le)
    paths = all_paths(T, K)
    torch.testing.assert_close(ll, torch.logsumexp(path_log_joint(li, lt, le, paths), -1), rtol=0, atol=1e-10)
    # each alpha_t(k) = p(x_{1:t}, z_t = k): enumerate the prefixes
    for t in range(T):
        prefix = all_paths(t + 1, K)
        lj = path_log_joint(li, lt, le[:, : t + 1], prefix)  # (B, K^{t+1})
        brute = torch.stack([torch.logsumexp(lj[:, prefix[:, t] == k], -1) for k in range(K)], -1)
        torch.testing.assert_close(log_alpha[:, t], brute, rtol=0, atol=1e-10)


@pytest.mark.parametrize("T,K", CASES)
def test_backward_gives_the_likelihood_at_every_step(T, K):
    li, lt, le = random_core(2, T, K, seed=1)
    log_alpha, ll = hmm.forward(li, lt, le)
    log_beta = hmm.backward(lt, le)
    assert torch.equal(log_beta[:, -1], torch.zeros_like(log_beta[:, -1]))
    torch.testing.assert_close(torch.logsumexp(log_alpha + log_beta, -1), ll[:, None].expand(-1, T), rtol=0, atol=1e-10)
    # beta_t(k) = p(x_{t+1:T} | z_t = k): enumerate the suffixes
    paths = all_paths(T, K)
    lj = path_log_joint(li, lt, le, paths)
    for t in range(T):
        for k in range(K):
            sel = paths[:, t] == k
            brute = torch.logsumexp(lj[:, sel], -1) - log_alpha[:, t, k]  # log p(x, z_t=k) - log p(x_{1:t}, z_t=k)
            torch.testing.assert_close(log_beta[:, t, k], brute, rtol=0, atol=1e-10)


def test_forward_handles_structural_zeros():
    """A left-to-right HMM: -inf entries in log_transition and log_initial are exact zeros."""
    K, T = 3, 5
    li = torch.log(torch.tensor([1.0, 0.0, 0.0], dtype=f64))
    lt = torch.log(torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]], dtype=f64))
    le = random_core(2, T, K, seed=3)[2]
    _, ll = hmm.forward(li, lt, le)
    brute = torch.logsumexp(path_log_joint(li, lt, le, all_paths(T, K)), -1)
    torch.testing.assert_close(ll, brute, rtol=0, atol=1e-10)
    gamma, xi, _ = hmm.posterior_marginals(li, lt, le)
    assert torch.isfinite(gamma).all() and torch.isfinite(xi).all()
    assert (xi[:, :, 1, 0] == 0).all() and (gamma[:, 0, 1:] == 0).all()
    path, _ = hmm.viterbi(li, lt, le)
    assert (path[:, 1:] >= path[:, :-1]).all()  # never moves backwards


def test_forward_on_a_long_sequence_stays_finite_and_matches_rabiner_scaling():
    """Probability-space alpha underflows at T = 2000; the log-space recursion does not and equals
    the independent scaled recursion of Rabiner (1989, section V.A)."""
    model = random_hmm(3, seed=4)
    _, x = model.sample(2, 2000, generator=torch.Generator().manual_seed(0))
    le = model.log_emission(x)  # (2, 2000, 3)
    _, ll = hmm.forward(torch.log(model.initial), torch.log(model.transition), le)
    assert torch.isfinite(ll).all()
    emis = torch.exp(le)
    naive = model.initial * emis[:, 0]
    scaled, log_c = naive / naive.sum(-1, keepdim=True), torch.log(naive.sum(-1))
    for t in range(1, 2000):
        naive = (naive @ model.transition) * emis[:, t]
        a = (scaled @ model.transition) * emis[:, t]
        c = a.sum(-1, keepdim=True)
        scaled, log_c = a / c, log_c + torch.log(c[:, 0])
    assert (naive.sum(-1) == 0).all(), "the unscaled recursion should underflow here"
    torch.testing.assert_close(ll, log_c, rtol=1e-12, atol=1e-8)
    assert ll.abs().min() > 1000  # a genuinely long sequence


# --- posterior marginals ---------------------------------------------------------------


@pytest.mark.parametrize("T,K", CASES)
def test_gamma_and_xi_equal_brute_force_marginals(T, K):
    li, lt, le = random_core(3, T, K, seed=7 + T)
    gamma, xi, ll = hmm.posterior_marginals(li, lt, le)
    assert gamma.shape == (3, T, K) and xi.shape == (3, T - 1, K, K)
    paths = all_paths(T, K)
    post = torch.softmax(path_log_joint(li, lt, le, paths), -1)  # (B, P) p(path | x)
    for t in range(T):
        onehot = torch.nn.functional.one_hot(paths[:, t], K).to(f64)  # (P, K)
        torch.testing.assert_close(gamma[:, t], post @ onehot, rtol=0, atol=1e-12)
    for t in range(T - 1):
        pair = torch.nn.functional.one_hot(paths[:, t] * K + paths[:, t + 1], K * K).to(f64)  # (P, K*K)
        torch.testing.assert_close(xi[:, t], (post @ pair).reshape(3, K, K), rtol=0, atol=1e-12)
    # normalisation and consistency
    torch.testing.assert_close(gamma.sum(-1), torch.ones(3, T, dtype=f64), rtol=0, atol=1e-12)
    torch.testing.assert_close(xi.sum(-1), gamma[:, :-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(xi.sum(-2), gamma[:, 1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(ll, hmm.forward(li, lt, le)[1], rtol=0, atol=0)


def test_gradient_of_the_loglik_wrt_emissions_is_gamma():
    """d log p(x) / d log p(x_t | z_t = k) = gamma_t(k): forward-backward is backpropagation
    through the forward recursion (Eisner 2016)."""
    li, lt, le = random_core(3, 6, 3, seed=21)
    le = le.clone().requires_grad_(True)
    _, ll = hmm.forward(li, lt, le)
    (grad,) = torch.autograd.grad(ll.sum(), le)
    gamma, _, _ = hmm.posterior_marginals(li, lt, le.detach())
    torch.testing.assert_close(grad, gamma, rtol=0, atol=1e-12)


# --- Viterbi -------------------------------------------------------------------------------


@pytest.mark.parametrize("T,K", CASES)
def test_viterbi_equals_brute_force_argmax(T, K):
    li, lt, le = random_core(5, T, K, seed=11 + T * K)
    path, log_prob = hmm.viterbi(li, lt, le)
    assert path.dtype == torch.long and path.shape == (5, T)
    paths = all_paths(T, K)
    lj = path_log_joint(li, lt, le, paths)  # (B, P)
    best, arg = lj.max(-1)
    assert torch.equal(path, paths[arg])
    torch.testing.assert_close(log_prob, best, rtol=0, atol=1e-12)


def test_viterbi_differs_from_pointwise_posterior_argmax_when_it_should():
    """The MAP path need not be the sequence of most probable states: with a forbidden
    transition 0 -> 1 the pointwise argmax can be an impossible path; Viterbi never is."""
    li = torch.log(torch.full((3,), 1 / 3, dtype=f64))
    lt = torch.log(torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64))
    le = torch.log(torch.tensor([[[0.5, 0.4, 0.1], [0.4, 0.45, 0.4]]], dtype=f64))
    gamma, _, _ = hmm.posterior_marginals(li, lt, le)
    path, log_prob = hmm.viterbi(li, lt, le)
    assert gamma[0].argmax(-1).tolist() == [0, 1]  # but 0 -> 1 has probability zero
    assert path[0].tolist() == [1, 1]
    assert log_prob.item() == pytest.approx(math.log(1 / 3 * 0.4 * 1.0 * 0.45), abs=1e-12)


# --- the Gaussian HMM ------------------------------------------------------------------------


def test_gaussian_emission_matches_torch_distributions():
    model = random_hmm(3, D=4, seed=2)
    x = torch.randn(2, 5, 4, dtype=f64, generator=torch.Generator().manual_seed(1))
    dist = D.Independent(D.Normal(model.means, model.variances.sqrt()), 1)
    torch.testing.assert_close(model.log_emission(x), dist.log_prob(x[:, :, None, :]))
    le = dist.log_prob(x[:, :, None, :])
    ll = torch.logsumexp(path_log_joint(torch.log(model.initial), torch.log(model.transition), le, all_paths(5, 3)), -1)
    torch.testing.assert_close(model.log_prob(x), ll, rtol=0, atol=1e-10)
    path, lp = model.viterbi(x)
    torch.testing.assert_close(model.posterior(x).sum(-1), torch.ones(2, 5, dtype=f64))
    torch.testing.assert_close(model.loss(x), -ll.mean())


def test_density_contract():
    model = random_hmm(3, D=2, seed=5)
    _, x = model.sample(6, 7, generator=torch.Generator().manual_seed(0))
    check_density_model(SequencesChannelsFirst(model, 7), x.transpose(1, 2))
    # sequences of another length are fine (the model is not tied to one T)
    assert model.log_prob(x[:, :3]).shape == (6,)


def test_sample_transition_frequencies_match_the_transition_matrix():
    model = random_hmm(3, D=2, seed=6)
    n, T = 2000, 50
    states, x = model.sample(n, T, generator=torch.Generator().manual_seed(0))
    assert states.shape == (n, T) and x.shape == (n, T, 2) and states.dtype == torch.long
    # initial state frequencies: binomial standard errors
    freq0 = torch.bincount(states[:, 0], minlength=3).to(f64) / n
    se0 = (model.initial * (1 - model.initial) / n).sqrt()
    assert ((freq0 - model.initial).abs() <= Z_TOL * se0 + 1e-12).all()
    # transitions: row i of the empirical matrix from the N_i visits to i
    pairs = torch.bincount((states[:, :-1] * 3 + states[:, 1:]).reshape(-1), minlength=9).reshape(3, 3).to(f64)
    visits = pairs.sum(-1, keepdim=True)
    emp = pairs / visits
    se = (model.transition * (1 - model.transition) / visits).sqrt()
    assert ((emp - model.transition).abs() <= Z_TOL * se + 1e-12).all(), (emp, model.transition)
    # emissions: per-state sample means within standard errors of the means
    for k in range(3):
        xs = x[states == k]
        se_mu = (model.variances[k] / xs.shape[0]).sqrt()
        assert ((xs.mean(0) - model.means[k]).abs() <= Z_TOL * se_mu).all()
    # the generator makes sampling reproducible
    again = model.sample(n, T, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], states) and torch.equal(again[1], x)


# --- Baum-Welch ------------------------------------------------------------------------------


def expected_complete_loglik(x, gamma, xi, logits_pi, logits_A, means, log_var):
    """Q(theta) = E_{p(z|x, theta_old)}[log p(z, x | theta)] from given posterior marginals."""
    log_pi, log_A = torch.log_softmax(logits_pi, -1), torch.log_softmax(logits_A, -1)
    le = D.Independent(D.Normal(means, torch.exp(0.5 * log_var)), 1).log_prob(x[:, :, None, :])  # (B, T, K)
    return (gamma[:, 0] * log_pi).sum() + (xi * log_A).sum() + (gamma * le).sum()


def test_baum_welch_step_is_the_stationary_point_of_the_expected_complete_loglik():
    """One Baum-Welch step lands where the gradient of Q(theta), built from brute-force
    posteriors under the old parameters, vanishes (Baum et al. 1970; Bishop 2006, eq. 13.17)."""
    model = random_hmm(3, D=2, seed=8)
    _, x = random_hmm(3, D=2, seed=9).sample(4, 5, generator=torch.Generator().manual_seed(1))
    li, lt, le = torch.log(model.initial), torch.log(model.transition), model.log_emission(x)
    paths = all_paths(5, 3)
    post = torch.softmax(path_log_joint(li, lt, le, paths), -1)  # (B, P)
    oh = torch.nn.functional.one_hot(paths, 3).to(f64)  # (P, T, K)
    gamma = torch.einsum("bp,ptk->btk", post, oh)
    xi = torch.einsum("bp,ptj,ptk->btjk", post, oh[:, :-1], oh[:, 1:])
    history = model.fit(x, max_iter=1, tol=-math.inf)
    assert len(history) == 2 and history[1] >= history[0]
    params = [torch.log(model.initial), torch.log(model.transition), model.means.clone(), torch.log(model.variances)]
    params = [p.clone().requires_grad_(True) for p in params]
    q = expected_complete_loglik(x, gamma, xi, *params)
    for g in torch.autograd.grad(q, params):
        assert g.abs().max() < 1e-9
    # and it is a maximum: moving any parameter lowers Q
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(5):
            moved = [p + 0.05 * torch.randn(p.shape, generator=gen, dtype=f64) for p in params]
            assert expected_complete_loglik(x, gamma, xi, *moved) < q


def test_baum_welch_never_decreases_and_recovers_the_means():
    truth = GaussianHMM(
        torch.tensor([0.5, 0.3, 0.2], dtype=f64),
        torch.tensor([[0.90, 0.05, 0.05], [0.10, 0.85, 0.05], [0.05, 0.15, 0.80]], dtype=f64),
        torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]], dtype=f64),
        torch.tensor([[0.5, 0.8], [1.0, 0.4], [0.6, 0.6]], dtype=f64),
    )
    _, x = truth.sample(40, 60, generator=torch.Generator().manual_seed(3))
    model = GaussianHMM.from_data(x, 3, seed=0)
    # a deliberately poor start so that EM has work to do
    model.transition.fill_(1 / 3)
    history = model.fit(x, max_iter=60, tol=1e-10)
    diffs = torch.tensor(history).diff()
    assert (diffs >= -1e-9 * abs(history[0])).all(), diffs.min()
    assert history[-1] > history[0] + 1.0
    # recovered means match the truth up to a relabelling of the states
    cost = torch.cdist(model.means, truth.means)
    perm = cost.argmin(-1)
    assert sorted(perm.tolist()) == [0, 1, 2]
    torch.testing.assert_close(model.means, truth.means[perm], atol=0.15, rtol=0)
    torch.testing.assert_close(model.transition, truth.transition[perm][:, perm], atol=0.05, rtol=0)
    # the fitted model explains the data at least as well as the generating one
    assert history[-1] >= float(truth.log_prob(x).mean()) - 1e-6


def test_from_data_is_seeded_and_valid():
    _, x = random_hmm(3, seed=12).sample(10, 20, generator=torch.Generator().manual_seed(0))
    a, b = GaussianHMM.from_data(x, 3, seed=1), GaussianHMM.from_data(x, 3, seed=1)
    for name in ("initial", "transition", "means", "variances"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    torch.testing.assert_close(a.transition.sum(-1), torch.ones(3, dtype=f64))
    assert (a.variances > 0).all() and (a.transition > 0).all()
    assert set(dict(a.named_buffers())) == {"initial", "transition", "means", "variances"}


def test_fit_progress_bar_goes_to_stdout(capsys):
    model = random_hmm(2, seed=13)
    _, x = model.sample(5, 10, generator=torch.Generator().manual_seed(0))
    model.fit(x, max_iter=3, progress=True, desc="bw")
    out, err = capsys.readouterr()
    assert "bw" in out and err == ""


def test_float32_agrees_with_float64():
    model = random_hmm(4, D=3, seed=14)
    _, x = model.sample(8, 300, generator=torch.Generator().manual_seed(0))
    m32 = GaussianHMM(*(t.float() for t in (model.initial, model.transition, model.means, model.variances)))
    lp32 = m32.log_prob(x.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), model.log_prob(x), rtol=1e-5, atol=1e-3)
    assert torch.equal(m32.viterbi(x.float())[0], model.viterbi(x)[0])


# --- input validation ---------------------------------------------------------------------


def test_clear_errors():
    li, lt, le = random_core(2, 4, 3)
    with pytest.raises(ValueError, match="log_transition.*row-stochastic"):
        hmm.forward(li, lt + 0.1, le)
    with pytest.raises(ValueError, match="log_initial"):
        hmm.forward(li + 0.1, lt, le)
    with pytest.raises(ValueError, match="shape"):
        hmm.forward(li, lt, le[..., :2])
    with pytest.raises(ValueError, match="shape"):
        hmm.viterbi(li, lt, le[0])
    with pytest.raises(ValueError, match="T >= 1"):
        hmm.posterior_marginals(li, lt, le[:, :0])
    with pytest.raises(ValueError, match="floating-point"):
        hmm.backward(lt, le.long())
    with pytest.raises(ValueError, match="NaN"):
        hmm.forward(li, lt, torch.full_like(le, math.nan))
    model = random_hmm(3, D=2)
    with pytest.raises(ValueError, match="floating-point"):
        model.log_prob(torch.zeros(2, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="event shape"):
        model.log_prob(torch.zeros(2, 4, 3, dtype=f64))
    with pytest.raises(ValueError, match=r"\(B, T, D"):
        model.log_prob(torch.zeros(4, 2, dtype=f64))
    with pytest.raises(ValueError, match="T >= 1"):
        model.log_prob(torch.zeros(2, 0, 2, dtype=f64))
    with pytest.raises(ValueError, match="row-stochastic"):
        GaussianHMM(model.initial, model.transition * 2, model.means, model.variances)
    with pytest.raises(ValueError, match="variances must be positive"):
        GaussianHMM(model.initial, model.transition, model.means, -model.variances)
    with pytest.raises(ValueError, match="transition must have shape"):
        GaussianHMM(model.initial, model.transition[:2], model.means, model.variances)
    with pytest.raises(ValueError, match="n_states"):
        GaussianHMM.from_data(torch.zeros(1, 2, 2, dtype=f64), 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = random_hmm(3, D=2, seed=15)
    _, x = model.sample(16, 50, generator=torch.Generator().manual_seed(0))
    ref_ll, (ref_path, _) = model.log_prob(x), model.viterbi(x)
    gpu = random_hmm(3, D=2, seed=15).to("cuda")
    assert gpu.means.device.type == "cuda"
    torch.testing.assert_close(gpu.log_prob(x.cuda()).cpu(), ref_ll)
    assert torch.equal(gpu.viterbi(x.cuda())[0].cpu(), ref_path)
    states, xs = gpu.sample(4, 10, generator=torch.Generator("cuda").manual_seed(0))
    assert states.device.type == "cuda" and xs.device.type == "cuda"
    history = gpu.fit(x.cuda(), max_iter=5)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:]))
