"""Chapter 4: restricted Boltzmann machines.

Every identity is checked against brute-force enumeration of all (v, h) pairs of
tiny RBMs in float64: the conditionals are ratios of the joint, the free energy
sums out h, exp(log_prob) sums to one, and both ways of enumerating log Z agree
with the full double sum. AIS, Gibbs sampling and the CD-k gradient are
checked against exact values within stated tolerances; every draw is seeded.
"""
import itertools
import math

import pytest
import torch

from gmlib.rbm import MAX_EXACT_BITS, BernoulliRBM, RBMConfig
from gmlib.train import train

from contracts import check_density_model

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py


def random_rbm(D, H, scale=1.0, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(D, H, generator=g, dtype=f64)
    b = 0.5 * torch.randn(D, generator=g, dtype=f64)
    c = 0.5 * torch.randn(H, generator=g, dtype=f64)
    return BernoulliRBM.from_parameters(W, b, c, **kwargs)


def all_binary(m):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)), dtype=f64)  # (2^m, m)


def brute_joint(model):
    """All pairs and their unnormalised log joint -E(v, h) straight from (ch04:energy): (2^D, 2^H)."""
    V, Hs = all_binary(model.n_visible), all_binary(model.n_hidden)
    W, b, c = model.W.detach(), model.b.detach(), model.c.detach()
    neg_e = V @ W @ Hs.T + (V @ b)[:, None] + (Hs @ c)[None, :]
    return V, Hs, neg_e


def exact_pv(model):
    V, _, neg_e = brute_joint(model)
    return V, torch.softmax(torch.logsumexp(neg_e, 1), 0)  # (2^D,)


# --- energy, free energy, conditionals -----------------------------------------------------


def test_energy_matches_definition_pairwise():
    model = random_rbm(4, 3, seed=1)
    V, Hs, neg_e = brute_joint(model)
    vv = V.repeat_interleave(Hs.shape[0], 0)
    hh = Hs.repeat(V.shape[0], 1)
    torch.testing.assert_close(model.energy(vv, hh), -neg_e.reshape(-1))


def test_free_energy_is_minus_logsumexp_over_h():
    model = random_rbm(4, 3, seed=2)
    V, _, neg_e = brute_joint(model)
    torch.testing.assert_close(model.free_energy(V), -torch.logsumexp(neg_e, 1))


def test_conditionals_are_ratios_of_the_joint():
    model = random_rbm(4, 3, seed=3)
    V, Hs, neg_e = brute_joint(model)
    p = torch.softmax(neg_e.reshape(-1), 0).reshape(neg_e.shape)  # p(v, h)
    p_h_given_v = p / p.sum(1, keepdim=True)  # (2^D, 2^H)
    p_v_given_h = p / p.sum(0, keepdim=True)
    # marginal p(h_j = 1 | v) = sum over h with h_j = 1
    torch.testing.assert_close(model.prob_h_given_v(V), p_h_given_v @ Hs)
    torch.testing.assert_close(model.prob_v_given_h(Hs), p_v_given_h.T @ V)
    # and the conditional factorises: p(h | v) = prod_j Bernoulli(h_j; p_j)
    q = model.prob_h_given_v(V)  # (2^D, H)
    prod = torch.exp(Hs @ torch.log(q).T + (1 - Hs) @ torch.log1p(-q).T).T  # (2^D, 2^H)
    torch.testing.assert_close(prod, p_h_given_v)


def test_sample_conditionals_have_the_right_means():
    model = random_rbm(4, 3, seed=4)
    g = torch.Generator().manual_seed(0)
    v = all_binary(4)[[3, 10]].repeat(20000, 1)  # (40000, 4)
    h = model.sample_h_given_v(v, generator=g)
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    p = model.prob_h_given_v(v[:2]).detach()
    for r in range(2):
        se = (p[r] * (1 - p[r]) / 20000).sqrt()
        assert ((h[r::2].mean(0) - p[r]).abs() <= 4.5 * se + 1e-12).all()
    hv = all_binary(3)[[1, 6]].repeat(20000, 1)
    vs = model.sample_v_given_h(hv, generator=g)
    p = model.prob_v_given_h(hv[:2]).detach()
    for r in range(2):
        se = (p[r] * (1 - p[r]) / 20000).sqrt()
        assert ((vs[r::2].mean(0) - p[r]).abs() <= 4.5 * se + 1e-12).all()


# --- partition function and log_prob -------------------------------------------------------


@pytest.mark.parametrize("D,H", [(4, 3), (3, 5), (5, 5)])
def test_log_partition_exact_agrees_both_ways_and_with_full_enumeration(D, H):
    model = random_rbm(D, H, scale=1.5, seed=D * 10 + H)
    _, _, neg_e = brute_joint(model)
    full = torch.logsumexp(neg_e.reshape(-1), 0)
    torch.testing.assert_close(model.log_partition_exact("visible"), full)
    torch.testing.assert_close(model.log_partition_exact("hidden"), full)
    torch.testing.assert_close(model.log_partition_exact(), full)


def test_log_prob_sums_to_one_and_matches_enumeration():
    model = random_rbm(5, 3, scale=1.5, seed=5)
    V, p = exact_pv(model)
    lp = model.log_prob(V)
    torch.testing.assert_close(torch.logsumexp(lp, 0), torch.zeros((), dtype=f64), atol=1e-12, rtol=0)
    torch.testing.assert_close(lp.exp(), p)
    # a cached log Z gives the same numbers
    torch.testing.assert_close(model.log_prob(V, log_z=model.log_partition_exact()), lp)
    torch.testing.assert_close(model.log_prob(V, log_z=model.log_partition_exact().item()), lp)


def test_log_partition_exact_chunks_and_refuses_too_many_states():
    model = random_rbm(17, 16, scale=0.3, seed=6)  # 2^16 hidden states: two chunks
    V = all_binary(17)
    vis = torch.logsumexp(-model.free_energy(V), 0)  # 2^17 visible vectors in one go
    torch.testing.assert_close(model.log_partition_exact(), vis)
    big = BernoulliRBM(MAX_EXACT_BITS + 1, MAX_EXACT_BITS + 1)
    with pytest.raises(ValueError, match="ais_log_partition"):
        big.log_partition_exact()
    with pytest.raises(ValueError):
        model.log_partition_exact("both")


def test_ais_within_half_a_nat_of_exact_log_z():
    model = random_rbm(16, 12, scale=1.0, seed=7)
    exact = float(model.log_partition_exact().detach())
    est, spread = model.ais_log_partition(
        n_chains=100, n_betas=1000, generator=torch.Generator().manual_seed(0)
    )
    print(f"AIS log Z {est:.4f} +- {spread:.4f}, exact {exact:.4f}")
    assert abs(est - exact) < 0.5
    assert 0 < spread < 0.5
    # with a data-dependent base rate it works too, and a worse schedule has a larger spread
    data = model.sample(500, k=200, generator=torch.Generator().manual_seed(1))
    b_a = BernoulliRBM.base_rate_visible_bias(data)
    est2, spread2 = model.ais_log_partition(generator=torch.Generator().manual_seed(2), base_visible_bias=b_a)
    assert abs(est2 - exact) < 0.5
    _, spread_short = model.ais_log_partition(n_betas=10, generator=torch.Generator().manual_seed(3))
    assert spread_short > spread


def test_ais_is_exact_for_the_base_model():
    # W = 0 and base bias = b: every importance weight equals Z_B / Z_A exactly
    g = torch.Generator().manual_seed(8)
    b, c = torch.randn(6, generator=g, dtype=f64), torch.randn(4, generator=g, dtype=f64)
    model = BernoulliRBM.from_parameters(torch.zeros(6, 4, dtype=f64), b, c)
    est, spread = model.ais_log_partition(n_chains=5, n_betas=20, base_visible_bias=b, generator=g)
    assert est == pytest.approx(float(model.log_partition_exact().detach()), abs=1e-10)
    assert spread == pytest.approx(0.0, abs=1e-10)


def test_ais_is_consistent_with_a_short_schedule_and_a_poor_base():
    """AIS is a valid importance sampler for any schedule, so with many chains even 4 temperatures
    and a base far from the model (all visible biases +2) give log Z within 5 of the reported
    standard errors (about 0.004 nats here); a Gibbs sweep that did not leave the intermediate
    distributions invariant would miss by about 0.6 nats."""
    model = random_rbm(4, 3, scale=1.5, seed=19)
    exact = model.log_partition_exact().item()
    est, spread = model.ais_log_partition(
        n_chains=100000, n_betas=4, base_visible_bias=torch.full((4,), 2.0, dtype=f64),
        generator=torch.Generator().manual_seed(0),
    )
    assert abs(est - exact) < 5 * spread


def test_log_prob_uses_ais_for_large_models_deterministically():
    model = random_rbm(22, 21, scale=0.05, seed=9)  # min(D, H) = 21 > 20: AIS
    v = torch.bernoulli(torch.full((4, 22), 0.5, dtype=f64), generator=torch.Generator().manual_seed(0))
    lp = model.log_prob(v)
    torch.testing.assert_close(model.log_prob(v), lp)  # seeded internally, so calls agree
    ais, _ = model.ais_log_partition(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lp, model.log_prob(v, log_z=ais))
    exact = model.log_partition_exact()  # 2^21 states: still allowed here
    torch.testing.assert_close(lp, model.log_prob(v, log_z=exact), atol=0.05, rtol=0)


# --- sampling ------------------------------------------------------------------------------


def test_long_gibbs_chains_match_exact_marginal():
    model = random_rbm(4, 3, scale=1.0, seed=10)
    V, p = exact_pv(model)
    s = model.sample(40000, k=100, generator=torch.Generator().manual_seed(0))  # (40000, 4)
    idx = (s @ (2.0 ** torch.arange(3, -1, -1, dtype=f64))).long()  # row index in all_binary order
    freq = torch.bincount(idx, minlength=16).to(f64) / s.shape[0]
    tv = 0.5 * (freq - p).abs().sum()
    print(f"total variation {tv:.4f}")
    assert tv < 0.02


def test_gibbs_is_reproducible_and_binary():
    model = random_rbm(4, 3, seed=11)
    v = all_binary(4)
    a = model.gibbs(v, 5, generator=torch.Generator().manual_seed(0))
    b = model.gibbs(v, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.shape == v.shape and set(a.unique().tolist()) <= {0.0, 1.0}


# --- learning ------------------------------------------------------------------------------


def exact_nll_grad(model, data):
    nll = -model.log_prob(data).mean()
    return torch.autograd.grad(nll, [model.W, model.b, model.c])


def test_cd_gradient_with_large_k_approaches_exact_gradient_and_cd1_is_biased():
    """With every data vector repeated R times each gets its own chain, so the Monte Carlo error
    of the model term is about sd / sqrt(6 R) ~ 0.0015; CD-50 must be within 0.01 of the exact
    gradient (max abs over all entries) while CD-1, whose chains stay near the data, is off by > 0.03."""
    model = random_rbm(5, 3, scale=1.5, seed=2)
    data = torch.bernoulli(torch.full((6, 5), 0.5, dtype=f64), generator=torch.Generator().manual_seed(3))
    exact = exact_nll_grad(model, data)
    rep = data.repeat(20000, 1)
    errs = {}
    for k in (1, 50):
        model.config.cd_k = k
        torch.manual_seed(0)
        cd = torch.autograd.grad(model.loss(rep), [model.W, model.b, model.c])
        errs[k] = max(float((a - b).abs().max()) for a, b in zip(exact, cd))
    print(errs)
    assert errs[50] < 0.01
    assert errs[1] > 0.03


def test_loss_gradient_is_data_term_minus_detached_negative_term():
    model = random_rbm(4, 3, seed=12, cd_k=3)
    v = all_binary(4)
    torch.manual_seed(5)
    loss = model.loss(v)
    grads = torch.autograd.grad(loss, [model.W, model.b, model.c])
    torch.manual_seed(5)
    v_neg = model.gibbs(v, 3)
    surrogate = model.free_energy(v).mean() - model.free_energy(v_neg).mean()
    torch.testing.assert_close(loss, surrogate)
    for a, b in zip(grads, torch.autograd.grad(surrogate, [model.W, model.b, model.c])):
        torch.testing.assert_close(a, b)


def test_pcd_keeps_persistent_chains_between_calls():
    model = random_rbm(4, 3, seed=13, cd_k=2, persistent=True, n_chains=7)
    assert model.persistent_chains is None
    v = all_binary(4)
    torch.manual_seed(0)
    model.loss(v)
    first = model.persistent_chains.clone()
    assert first.shape == (7, 4)
    torch.manual_seed(1)
    model.loss(v)
    torch.manual_seed(1)
    expected = model.gibbs(first, 2)  # the chains continue from where they were
    torch.testing.assert_close(model.persistent_chains, expected)
    # in eval mode the chains are untouched (no side effects when evaluating a loss)
    model.eval()
    kept = model.persistent_chains.clone()
    model.loss(v)
    torch.testing.assert_close(model.persistent_chains, kept)
    model.reset_chains()
    assert model.persistent_chains is None


@pytest.mark.parametrize("persistent", [False, True])
def test_training_increases_exact_log_likelihood(persistent):
    teacher = random_rbm(6, 3, scale=2.0, seed=14)
    data = teacher.sample(1000, k=200, generator=torch.Generator().manual_seed(0))
    student = BernoulliRBM(6, 4, cd_k=1, persistent=persistent, n_chains=50,
                           generator=torch.Generator().manual_seed(1)).double()
    before = student.log_prob(data).mean().item()
    hist = train(student, data, epochs=15, batch_size=50, lr=0.05, progress=False, seed=0)
    after = student.log_prob(data).mean().item()
    best = teacher.log_prob(data).mean().item()  # roughly the attainable value
    print(f"persistent={persistent}: {before:.3f} -> {after:.3f} (teacher {best:.3f})")
    assert hist.epochs_run == 15
    assert after > before + 0.5
    assert after > best - 0.3
    if persistent:
        assert student.persistent_chains.shape == (50, 6)


def test_reconstruction_error_is_not_the_likelihood():
    data = random_rbm(6, 3, scale=2.0, seed=14).sample(1000, k=200, generator=torch.Generator().manual_seed(0))
    # A: W = 10 I, b = c = -5. Each v_i is copied to h_i and back almost surely, so reconstructions are
    # nearly perfect, yet every v has the same free energy: p(v) is uniform, log p(v) = -6 log 2.
    copier = BernoulliRBM.from_parameters(10 * torch.eye(6, dtype=f64), torch.full((6,), -5.0, dtype=f64),
                                          torch.full((6,), -5.0, dtype=f64))
    # B: no weights, visible biases at the data's log-odds: the best independent model, which
    # reconstructs every v by the marginals.
    base = BernoulliRBM.from_parameters(torch.zeros(6, 6, dtype=f64), BernoulliRBM.base_rate_visible_bias(data),
                                        torch.zeros(6, dtype=f64))
    err_a, err_b = copier.reconstruction_error(data).mean(), base.reconstruction_error(data).mean()
    ll_a, ll_b = copier.log_prob(data).mean(), base.log_prob(data).mean()
    torch.testing.assert_close(ll_a, torch.tensor(-6 * math.log(2), dtype=f64), atol=1e-3, rtol=0)
    assert err_a < 0.01 < 0.5 < err_b  # A reconstructs far better ...
    assert ll_b > ll_a + 0.3  # ... and is the worse density model
    # the monitor is the squared error of the mean-field reconstruction
    p_v = base.prob_v_given_h(base.prob_h_given_v(data))
    torch.testing.assert_close(base.reconstruction_error(data), ((data - p_v) ** 2).sum(-1))


# --- contract and validation ---------------------------------------------------------------


class _Density:
    """The RBM seen through the density contract: its loss is a CD surrogate, not -log_prob."""

    def __init__(self, model):
        self.model = model

    def log_prob(self, x):
        return self.model.log_prob(x)

    def sample(self, n):
        return self.model.sample(n, k=10)


def test_density_contract():
    model = random_rbm(5, 3, seed=16)
    check_density_model(_Density(model), all_binary(5))


def test_config_and_defaults():
    model = BernoulliRBM(config=RBMConfig(n_visible=5, n_hidden=2, cd_k=3, persistent=True, n_chains=9))
    assert model.W.shape == (5, 2) and model.b.shape == (5,) and model.c.shape == (2,)
    assert (model.n_visible, model.n_hidden, model.config.cd_k) == (5, 2, 3)
    assert "persistent=True" in repr(model)


def test_input_validation():
    model = random_rbm(4, 3, seed=17)
    v = all_binary(4)
    with pytest.raises(ValueError, match="floating"):
        model.free_energy(v.long())
    with pytest.raises(ValueError, match="shape"):
        model.free_energy(v[:, :3])
    with pytest.raises(ValueError, match="shape"):
        model.free_energy(v[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.free_energy(v * 2)
    with pytest.raises(ValueError, match="NaN"):
        model.free_energy(v.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(v * 0.5)
    with pytest.raises(ValueError, match="shape"):
        model.prob_v_given_h(v)
    with pytest.raises(ValueError, match="batch size"):
        model.energy(v, all_binary(3))
    with pytest.raises(ValueError):
        model.gibbs(v, 0)
    with pytest.raises(ValueError):
        model.sample(0)
    with pytest.raises(ValueError):
        model.ais_log_partition(n_chains=1)
    with pytest.raises(ValueError, match="base_visible_bias"):
        model.ais_log_partition(base_visible_bias=torch.zeros(3, dtype=f64))
    with pytest.raises(ValueError, match="log_z"):
        model.log_prob(v, log_z=float("inf"))
    with pytest.raises(ValueError):
        BernoulliRBM(4, 0)
    with pytest.raises(ValueError):
        BernoulliRBM(4, 3, cd_k=0)
    # probabilities in [0, 1] are accepted where they make sense
    assert torch.isfinite(model.free_energy(v * 0.5)).all()
    assert torch.isfinite(model.loss(v * 0.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = random_rbm(6, 4, seed=18)
    V = all_binary(6)
    gpu = model.to("cuda")
    torch.testing.assert_close(gpu.log_prob(V.cuda()).cpu(), random_rbm(6, 4, seed=18).log_prob(V))
    est, _ = gpu.ais_log_partition(generator=torch.Generator(device="cuda").manual_seed(0))
    assert abs(est - gpu.log_partition_exact().item()) < 0.5
