"""Chapter 5: variational autoencoders.

The central checks use a linear-Gaussian model written as a VAE with linear
encoder and decoder networks, where everything is exact:

    p(z) = N(0, I_L),  p(x | z) = N(W z + mu, s^2 I_D),  log p(x) = log N(x; mu, W W' + s^2 I).

With W = Q diag(d) (orthonormal columns Q) the posterior covariance
(I + W'W / s^2)^-1 is diagonal, so the true posterior is a member of the
encoder's family and a linear encoder computes it exactly. Then the ELBO
integrand is constant and even one sample gives log p(x) to rounding error;
any other encoder gives less, by exactly KL(q || p(z | x)). Monte Carlo
quantities are compared with closed forms within Z = 4 standard errors, every
draw seeded, in float64.
"""
import math

import pytest
import torch
import torch.distributions as TD
from torch import nn

from gmlib.data import digits
from gmlib.likelihoods import Bernoulli, Categorical, Gaussian
from gmlib.nets import ConcatContext, vae_mlps
from gmlib.train import evaluate_loss, train
from gmlib.vae import VAE, ELBOTerms, VAEConfig

from contracts import check_density_model

f64 = torch.float64
Z = 4.0  # tolerance in standard errors

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: see tests/conftest.py

D, L, S2 = 5, 2, 0.5  # data and latent dimensions, noise variance s^2


def gen(seed):
    return torch.Generator().manual_seed(seed)


class LinearGaussian:
    """The exact model: decoder weights W (D, L) with orthogonal columns, offset mu (D,)."""

    def __init__(self, seed=0, n_classes=0):
        g = gen(seed)
        q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=f64))
        self.W = q * torch.tensor([2.0, 0.7], dtype=f64)  # (D, L), W'W = diag(4, 0.49)
        self.mu = torch.randn(D, generator=g, dtype=f64)  # (D,)
        self.M = torch.randn(D, n_classes, generator=g, dtype=f64)  # (D, C) class offsets (conditional model)
        self.post_var = 1.0 / (1.0 + (self.W**2).sum(0) / S2)  # (L,) diagonal posterior covariance
        self.A = self.post_var[:, None] * self.W.T / S2  # (L, D), posterior mean = A (x - mu - M e_y)

    def offset(self, y=None):
        return self.mu if y is None else self.mu + nn.functional.one_hot(y, self.M.shape[1]).to(f64) @ self.M.T

    def log_evidence(self, x, y=None):
        cov = self.W @ self.W.T + S2 * torch.eye(D, dtype=f64)
        return TD.MultivariateNormal(self.offset(y), cov).log_prob(x)

    def posterior(self, x, y=None):
        mean = (x - self.offset(y)) @ self.A.T  # (B, L)
        return mean, torch.log(self.post_var).expand_as(mean)

    def vae(self, config=None, perturb=0.0, seed=1, likelihood=None):
        """A VAE whose encoder is the exact posterior, plus ``perturb`` times random noise."""
        conditional = self.M.shape[1] > 0
        C = self.M.shape[1]
        enc = nn.Linear(D + C, 2 * L).double()
        dec = nn.Linear(L + C, D).double()
        g = gen(seed)
        with torch.no_grad():
            w_enc = torch.zeros(2 * L, D + C, dtype=f64)
            w_enc[:L, :D] = self.A
            w_enc[:L, D:] = -self.A @ self.M
            b_enc = torch.cat([-self.A @ self.mu, torch.log(self.post_var)])
            enc.weight.copy_(w_enc + perturb * torch.randn(w_enc.shape, generator=g, dtype=f64))
            enc.bias.copy_(b_enc + perturb * torch.randn(b_enc.shape, generator=g, dtype=f64))
            dec.weight.copy_(torch.cat([self.W, self.M], 1))
            dec.bias.copy_(self.mu)
        if conditional:
            enc, dec = ConcatContext(enc, C), ConcatContext(dec, C)
            config = config or VAEConfig(conditional=True)
        lik = Gaussian(log_var=math.log(S2)) if likelihood is None else likelihood
        return VAE(enc, dec, lik, L, config, data_dim=D).double()

    def sample_x(self, n, seed=2):
        g = gen(seed)
        z = torch.randn(n, L, generator=g, dtype=f64)
        return z @ self.W.T + self.mu + math.sqrt(S2) * torch.randn(n, D, generator=g, dtype=f64)


def closed_form_elbo(model, x, W, mu, y=None):
    """The ELBO of the linear-Gaussian model for the VAE's encoder, from the formulas alone.

    E_q log N(x; W z + mu, s^2 I) = log N(x; W m + mu, s^2 I) - sum_j v_j ||W_:j||^2 / (2 s^2),
    KL(N(m, v) || N(0, I)) = 1/2 sum_j (v_j + m_j^2 - 1 - log v_j).
    """
    enc = model.encoder.net if isinstance(model.encoder, ConcatContext) else model.encoder
    inp = x if y is None else torch.cat([x, nn.functional.one_hot(y, enc.in_features - D).to(f64)], 1)
    out = inp @ enc.weight.T + enc.bias
    m, lv = out[:, :L], out[:, L:]
    v = torch.exp(lv)
    r = x - m @ W.T - mu
    exp_loglik = -0.5 * (D * math.log(2 * math.pi * S2) + (r**2).sum(1) / S2) - (v * (W**2).sum(0)).sum(1) / (2 * S2)
    kl = 0.5 * (v + m**2 - 1 - lv).sum(1)
    return exp_loglik - kl


def mc_mean_se(values):
    """Mean and standard error over the first dimension."""
    return values.mean(0), values.std(0) / math.sqrt(values.shape[0])


# --- the bound against exact log p(x) -------------------------------------------------------------


def test_elbo_and_iwae_equal_log_evidence_at_the_true_posterior():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(7)
    model = lg.vae()
    exact = lg.log_evidence(x)
    mean, log_var = model.encode(x)
    post_mean, post_log_var = lg.posterior(x)
    torch.testing.assert_close(mean, post_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_var, post_log_var, rtol=0, atol=1e-12)
    # the integrand log p(x, z) - log q(z | x) is constant: one sample is exact
    one = model.elbo(x, n_samples=1, analytic_kl=False, generator=gen(3))
    torch.testing.assert_close(one, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.iwae_bound(x, 1, generator=gen(4)), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.iwae_bound(x, 50, generator=gen(5)), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(closed_form_elbo(model, x, lg.W, lg.mu), exact, rtol=0, atol=1e-10)
    # the estimator with the KL in closed form is not constant, but unbiased
    est, se = mc_mean_se(torch.stack([model.elbo(x, n_samples=20, generator=gen(6 + r)) for r in range(50)]))
    assert ((est - exact).abs() <= Z * se).all()


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 8192])
def test_iwae_chunks_cover_every_sample_and_example_once(chunk):
    # at the true posterior every log weight equals log p(x): a lost or doubled sample, or a
    # misplaced example, would shift the result by log(k' / k) or swap values between rows
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(10)
    model = lg.vae(VAEConfig(iwae_chunk=chunk))
    torch.testing.assert_close(model.iwae_bound(x, 13, generator=gen(7)), lg.log_evidence(x), rtol=0, atol=1e-10)
    lw = model.log_weights(x, 13, generator=gen(8))  # (13, 10): every weight is exact, in its own column
    assert lw.shape == (13, 10)
    torch.testing.assert_close(lw, lg.log_evidence(x).expand(13, -1), rtol=0, atol=1e-10)


def test_log_weights_average_to_the_elbo_and_log_mean_exp_to_iwae():
    lg = LinearGaussian(seed=1)
    x = lg.sample_x(6)
    model = lg.vae()
    with torch.no_grad():  # an encoder away from the posterior, so the weights vary
        for p in model.encoder.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(2), dtype=p.dtype))
    lw = model.log_weights(x, 400, generator=gen(9))  # (400, 6)
    torch.testing.assert_close(model.iwae_bound(x, 400, generator=gen(9)), torch.logsumexp(lw, 0) - math.log(400))
    est, se = mc_mean_se(lw)
    assert ((est - closed_form_elbo(model, x, lg.W, lg.mu)).abs() <= Z * se).all()


@pytest.mark.parametrize("perturb_seed", [11, 12, 13])
def test_any_other_encoder_gives_less_by_the_kl_to_the_posterior(perturb_seed):
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(6)
    model = lg.vae(perturb=0.3, seed=perturb_seed)
    exact = lg.log_evidence(x)
    elbo = closed_form_elbo(model, x, lg.W, lg.mu)
    assert (elbo < exact - 1e-6).all()
    # (ch05:elbo-kl-gap): log p(x) - ELBO = KL(q(z | x) || p(z | x)), with torch.distributions
    m, lv = model.encode(x)
    pm, plv = lg.posterior(x)
    q = TD.Independent(TD.Normal(m, torch.exp(0.5 * lv)), 1)
    p = TD.Independent(TD.Normal(pm, torch.exp(0.5 * plv)), 1)
    torch.testing.assert_close(exact - elbo, TD.kl_divergence(q, p), rtol=1e-10, atol=1e-10)
    # both Monte Carlo estimators agree with the closed form
    for analytic in (True, False):
        reps = torch.stack(
            [model.elbo(x, n_samples=50, analytic_kl=analytic, generator=gen(100 + r)) for r in range(40)]
        )
        est, se = mc_mean_se(reps)
        assert ((est - elbo).abs() <= Z * se).all(), analytic


def test_iwae_rises_towards_log_evidence_as_k_grows():
    """Statistical test: for each k the bound is averaged over R = 60 seeds and over the examples;
    consecutive k must not decrease by more than Z combined standard errors, k = 1 must
    match the ELBO and every k stay below log p(x) (within Z se), and the gap at k = 256
    must be below a quarter of the gap at k = 1 (it is about a tenth)."""
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(8)
    model = lg.vae(perturb=0.1, seed=21)  # gap log p(x) - ELBO of about 0.8 nats
    exact = lg.log_evidence(x).mean()
    elbo = closed_form_elbo(model, x, lg.W, lg.mu).mean()
    R, ks = 60, [1, 4, 16, 64, 256]
    g = gen(22)
    with torch.no_grad():
        stats = [mc_mean_se(torch.stack([model.iwae_bound(x, k, generator=g).mean() for _ in range(R)])) for k in ks]
    (m1, se1) = stats[0]
    assert abs(m1 - elbo) <= Z * se1
    for (ma, sa), (mb, sb) in zip(stats[:-1], stats[1:]):
        assert mb >= ma - Z * math.hypot(sa, sb)
        assert mb <= exact + Z * sb
    m_last, se_last = stats[-1]
    assert m_last - m1 > Z * math.hypot(se1, se_last)  # a real rise
    assert exact - m_last < 0.25 * (exact - elbo)


def test_kl_term_matches_torch_distributions():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(9)
    model = lg.vae(perturb=0.5, seed=30)
    terms = model.elbo_terms(x, generator=gen(31))
    assert isinstance(terms, ELBOTerms) and terms.kl_per_dim.shape == (9, L)
    m, lv = model.encode(x)
    q = TD.Independent(TD.Normal(m, torch.exp(0.5 * lv)), 1)
    prior = TD.Independent(TD.Normal(torch.zeros_like(m), torch.ones_like(m)), 1)
    torch.testing.assert_close(terms.kl, TD.kl_divergence(q, prior))
    torch.testing.assert_close(terms.kl_per_dim.sum(1), terms.kl)


def test_reparameterized_gradients_match_finite_differences_of_the_closed_form():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(4)
    model = lg.vae(perturb=0.3, seed=40)
    params = [model.encoder.weight, model.encoder.bias, model.decoder.weight, model.decoder.bias]

    def closed_form():
        return closed_form_elbo(model, x, model.decoder.weight, model.decoder.bias).sum()

    h = 1e-6
    fd = []
    with torch.no_grad():
        for p in params:
            g = torch.zeros_like(p)
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + h
                up = closed_form()
                p.view(-1)[i] = old - h
                down = closed_form()
                p.view(-1)[i] = old
                g.view(-1)[i] = (up - down) / (2 * h)
            fd.append(g.reshape(-1))
    fd = torch.cat(fd)
    # autograd of the closed form agrees with the finite differences (checks the test's formula)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in torch.autograd.grad(closed_form(), params)]), fd,
                               rtol=1e-6, atol=1e-6)
    g = gen(41)
    reps = []
    for _ in range(40):
        grads = torch.autograd.grad(model.elbo(x, n_samples=100, generator=g).sum(), params)
        reps.append(torch.cat([t.reshape(-1) for t in grads]))
    est, se = mc_mean_se(torch.stack(reps))
    assert ((est - fd).abs() <= Z * se + 1e-6).all()
    assert se.max() > 0  # the estimate is genuinely stochastic


# --- the contract -------------------------------------------------------------------------------


def test_bounds_are_per_example_and_loss_is_minus_their_mean():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(10)
    model = lg.vae()  # noise-free at the true posterior: evaluating halves must give the same numbers
    for f in (lambda t: model.elbo(t, analytic_kl=False), lambda t: model.iwae_bound(t, 5)):
        full = f(x)
        assert full.shape == (10,) and torch.isfinite(full).all()
        torch.testing.assert_close(torch.cat([f(x[:4]), f(x[4:])]), full, rtol=0, atol=1e-10)
    other = lg.vae(perturb=0.3, seed=50)
    other.eval()
    torch.manual_seed(51)
    loss = other.loss(x)
    torch.manual_seed(51)
    torch.testing.assert_close(loss, -other.elbo(x).mean())
    assert loss.dim() == 0
    other.train()  # beta = 1, no warm-up, no free bits: training loss is the same number
    torch.manual_seed(51)
    torch.testing.assert_close(other.loss(x), loss)


class _Density:
    """The VAE at the true posterior seen through the density contract: there its one-sample
    ELBO is log p(x) exactly (its loss uses the closed-form KL, a different estimator)."""

    def __init__(self, model):
        self.model = model

    def log_prob(self, x):
        return self.model.elbo(x, analytic_kl=False)

    def sample(self, n):
        return self.model.sample(n)


def test_density_contract_at_the_true_posterior():
    lg = LinearGaussian(seed=0)
    check_density_model(_Density(lg.vae()), lg.sample_x(10))


def test_sample_reconstruct_and_shapes():
    lg = LinearGaussian(seed=0)
    model = lg.vae(perturb=0.2, seed=60)
    x = lg.sample_x(6)
    s = model.sample(5, generator=gen(61))
    assert s.shape == (5, D) and s.dtype == f64
    assert torch.equal(s, model.sample(5, generator=gen(61)))
    m = model.sample(5, mean=True, generator=gen(61))  # E[x | z] = W z + mu for the same z
    z = torch.randn(5, L, generator=gen(61), dtype=f64)
    torch.testing.assert_close(m, z @ lg.W.T + lg.mu)
    r = model.reconstruct(x)
    torch.testing.assert_close(r, model.encode(x)[0] @ lg.W.T + lg.mu)
    assert model.reconstruct(x, sample_latent=True, generator=gen(62)).shape == (6, D)
    assert model.decode(z).shape == (5, D)


def test_kl_warmup_beta_and_free_bits():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(8)
    model = lg.vae(VAEConfig(beta=0.5, warmup_steps=4), perturb=0.3, seed=70)

    def terms():
        torch.manual_seed(71)
        return model.elbo_terms(x)

    expected_w = [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    for t, w in enumerate(expected_w):
        assert int(model.step) == t and model.kl_weight == pytest.approx(w)
        tr = terms()
        torch.manual_seed(71)
        torch.testing.assert_close(model.loss(x), -tr.log_likelihood.mean() + w * tr.kl.mean())
    model.eval()  # eval: the plain negative ELBO, and the step counter stays put
    torch.manual_seed(71)
    torch.testing.assert_close(model.loss(x), -(tr.log_likelihood - tr.kl).mean())
    assert int(model.step) == len(expected_w)
    assert "step" in model.state_dict()

    lam = 1.5
    fb = lg.vae(VAEConfig(free_bits=lam), perturb=0.3, seed=70)
    torch.manual_seed(71)
    tr = fb.elbo_terms(x)
    per_dim = tr.kl_per_dim.mean(0)  # (L,) batch-averaged KL of each latent dimension
    low, high = int(torch.argmin(per_dim)), int(torch.argmax(per_dim))
    assert per_dim[low] < lam < per_dim[high]  # one dimension under the floor, one over
    torch.manual_seed(71)
    loss = fb.loss(x)
    torch.testing.assert_close(loss, -tr.log_likelihood.mean() + lam + per_dim[high])
    # under the floor a dimension's KL exerts no gradient; over it, the full KL gradient
    bias = fb.encoder.bias  # (2L,): mean biases, then log-variance biases
    g_loss = torch.autograd.grad(loss, bias)[0]
    g_rec = torch.autograd.grad(-tr.log_likelihood.mean(), bias, retain_graph=True)[0]
    g_kl = torch.autograd.grad(per_dim[high], bias)[0]
    for j in (low, L + low):
        torch.testing.assert_close(g_loss[j], g_rec[j])
    for j in (high, L + high):
        torch.testing.assert_close(g_loss[j], g_rec[j] + g_kl[j])
    assert g_kl[L + high].abs() > 1e-3


def test_active_units_is_the_variance_of_the_posterior_mean():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(200)
    model = lg.vae()
    with torch.no_grad():
        model.encoder.weight[1].zero_()  # latent 1 ignores the data: a collapsed unit
    activity, n_active = model.active_units(x)
    mean = x @ model.encoder.weight[:L].T + model.encoder.bias[:L]
    torch.testing.assert_close(activity, mean.var(0, unbiased=False))
    assert activity[1] == 0 and activity[0] > 0.1 and n_active == 1
    assert model.active_units(x, threshold=10.0)[1] == 0


# --- completing missing pixels --------------------------------------------------------------------


def small_categorical_vae(seed=0, levels=17, conditional=False):
    torch.manual_seed(seed)
    enc, dec = vae_mlps(64, 3, (16,), param_size=levels, n_classes=10 if conditional else None)
    return VAE(enc, dec, Categorical(levels), 3, VAEConfig(conditional=conditional), data_dim=64).double()


@pytest.mark.parametrize("method", ["metropolis", "pseudo-gibbs"])
def test_complete_leaves_observed_pixels_unchanged(method):
    model = small_categorical_vae()
    x = digits("test", "int", dtype=f64)[:12]
    mask = torch.rand(x.shape, generator=gen(80)) < 0.6
    mask[:4, :32] = True  # top half observed
    mask[:4, 32:] = False
    holes = torch.where(mask, x, torch.full_like(x, float("nan")))  # missing pixels may hold anything
    for mean in (False, True):
        out = model.complete(holes, mask, n_iter=6, method=method, mean=mean, generator=gen(81))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.equal(out[mask], x[mask])  # bit for bit
        miss = out[~mask]
        assert torch.isfinite(miss).all() and (miss >= 0).all() and (miss <= 16).all()
        if not mean:
            assert torch.equal(miss, miss.round())  # draws are valid levels


def test_metropolis_within_gibbs_targets_the_exact_conditional():
    """Many independent chains for one x with a deliberately wrong encoder: the final states of the
    missing coordinates must have the exact conditional mean of p(x_mis | x_obs) (Z se)."""
    lg = LinearGaussian(seed=0)
    model = lg.vae(perturb=0.3, seed=90)
    x = lg.sample_x(1, seed=91)
    mask = torch.tensor([[True, True, False, True, False]])
    n = 4000
    out = model.complete(x.expand(n, D), mask.expand(n, D), n_iter=30, generator=gen(92))
    cov = lg.W @ lg.W.T + S2 * torch.eye(D, dtype=f64)
    o, m = mask[0], ~mask[0]
    cond_mean = lg.mu[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], x[0, o] - lg.mu[o])
    est, se = mc_mean_se(out[:, m])
    assert ((est - cond_mean).abs() <= Z * se).all()
    # the test has power: pseudo-Gibbs, exact only with the exact posterior, misses by about 8 se
    out = model.complete(x.expand(n, D), mask.expand(n, D), n_iter=30, method="pseudo-gibbs", generator=gen(92))
    est, se = mc_mean_se(out[:, m])
    assert ((est - cond_mean).abs() > Z * se).any()


# --- training and the conditional variant ----------------------------------------------------------


def test_loss_decreases_when_trained_with_the_generic_loop():
    torch.manual_seed(0)
    x_train, x_val = digits("train", "binary")[:300], digits("val", "binary")[:100]
    enc, dec = vae_mlps(64, 4, (32,))
    model = VAE(enc, dec, Bernoulli(), 4, VAEConfig(warmup_steps=20))
    before = evaluate_loss(model, x_val)
    hist = train(model, x_train, x_val, epochs=12, batch_size=32, lr=3e-3, progress=False, seed=1)
    after = evaluate_loss(model, x_val)
    assert after < before - 10.0  # nats per image
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert int(model.step) > 20 and model.kl_weight == 1.0


def test_conditional_vae_bound_is_exact_for_log_p_x_given_y_and_trains():
    lg = LinearGaussian(seed=0, n_classes=3)
    x = lg.sample_x(9)
    y = torch.arange(9) % 3
    model = lg.vae()
    exact = lg.log_evidence(x, y)
    torch.testing.assert_close(model.elbo(x, y, analytic_kl=False, generator=gen(100)), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.iwae_bound(x, 7, y, generator=gen(101)), exact, rtol=0, atol=1e-10)
    other = (y + 1) % 3  # the context reaches both networks: the bound follows log p(x | y)
    other_exact = lg.log_evidence(x, other)
    assert ((other_exact - exact).abs() > 1e-2).all()
    torch.testing.assert_close(model.iwae_bound(x, 7, other, generator=gen(102)), other_exact, rtol=0, atol=1e-10)
    model.eval()
    torch.manual_seed(103)
    loss = model.loss((x, y))
    torch.manual_seed(103)
    torch.testing.assert_close(loss, -model.elbo(x, y).mean())
    ys = torch.tensor([0, 1, 2, 0, 1, 2])
    s = model.sample(6, ys, mean=True, generator=gen(104))  # E[x | z, y] = W z + mu + M e_y
    z = torch.randn(6, L, generator=gen(104), dtype=f64)
    torch.testing.assert_close(s, z @ lg.W.T + lg.offset(ys))
    # trained through the generic loop on tuple data, digit classes as the context
    cvae = small_categorical_vae(conditional=True)
    xs, ys = digits("train", "int", labels=True, dtype=f64)
    xs, ys = xs[:200], ys[:200]
    before = evaluate_loss(cvae, (xs, ys))
    train(cvae, (xs, ys), epochs=3, batch_size=50, lr=1e-2, progress=False)
    assert evaluate_loss(cvae, (xs, ys)) < before
    assert cvae.sample(10, torch.arange(10)).shape == (10, 64)
    mask = torch.ones_like(xs[:3], dtype=torch.bool)
    mask[:, 40:] = False
    out = cvae.complete(xs[:3], mask, ys[:3], n_iter=3)
    assert torch.equal(out[mask], xs[:3][mask])


# --- checks --------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors():
    lg = LinearGaussian(seed=0)
    model = lg.vae()
    x = lg.sample_x(4)
    with pytest.raises(ValueError, match="floating"):
        model.elbo(x.long())
    with pytest.raises(ValueError, match="columns"):
        model.elbo(x[:, :3])
    with pytest.raises(ValueError, match="shape"):
        model.elbo(x[0])
    with pytest.raises(ValueError, match="NaN"):
        model.iwae_bound(torch.full_like(x, float("nan")), 3)
    with pytest.raises(ValueError, match="k"):
        model.iwae_bound(x, 0)
    with pytest.raises(ValueError, match="n_samples"):
        model.elbo(x, n_samples=0)
    with pytest.raises(ValueError):
        model.sample(0)
    with pytest.raises(ValueError, match="not conditional"):
        model.elbo(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        model.loss((x, x))
    with pytest.raises(ValueError, match="mask"):
        model.complete(x, torch.ones(4, D))
    with pytest.raises(ValueError, match="mask"):
        model.complete(x, torch.ones(4, D - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="method"):
        model.complete(x, torch.ones(4, D, dtype=torch.bool), method="gibbs")
    with pytest.raises(ValueError, match="observed"):
        model.complete(torch.full_like(x, float("nan")), torch.ones(4, D, dtype=torch.bool))
    with pytest.raises(ValueError, match="z"):
        model.decode(torch.zeros(3, L + 1, dtype=f64))
    for bad in (dict(beta=-1.0), dict(warmup_steps=-1), dict(free_bits=float("nan")), dict(n_samples=0),
                dict(iwae_chunk=0), dict(conditional=1)):
        with pytest.raises(ValueError):
            VAE(nn.Linear(D, 2 * L), nn.Linear(L, D), Gaussian(0.0), L, VAEConfig(**bad))
    with pytest.raises(ValueError, match="likelihood"):
        VAE(nn.Linear(D, 2 * L), nn.Linear(L, D), TD.Normal, L)
    # networks whose outputs do not fit
    with pytest.raises(ValueError, match="encoder"):
        VAE(nn.Linear(D, L), nn.Linear(L, D), Gaussian(0.0), L).elbo(x.float())
    with pytest.raises(ValueError, match="decoder"):
        VAE(nn.Linear(D, 2 * L), nn.Linear(L, D), Gaussian(), L).elbo(x.float())
    with pytest.raises(ValueError, match="binary"):
        VAE(nn.Linear(D, 2 * L), nn.Linear(L, D), Bernoulli(), L).elbo(x.float())
    # a conditional model needs its context
    cvae = LinearGaussian(seed=0, n_classes=3).vae()
    with pytest.raises(ValueError, match="context"):
        cvae.elbo(x)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        cvae.loss(x)
    with pytest.raises(ValueError, match="rows"):
        cvae.sample(4, torch.arange(3))
    with pytest.raises(ValueError, match="labels"):
        cvae.elbo(x, torch.tensor([0, 1, 2, 3]))


def test_data_dim_is_learned_from_the_decoder_and_repr():
    enc, dec = vae_mlps(64, 2, (8,), param_size=17)
    model = VAE(enc, dec, Categorical(17), 2)
    assert model.data_dim is None
    x = digits("val", "int")[:5]
    assert model.elbo(x).shape == (5,) and model.data_dim == 64
    with pytest.raises(ValueError, match="columns"):
        model.elbo(torch.zeros(5, 63))
    assert "latent_dim=2" in repr(model) and "levels=17" in repr(model)
    assert model.sample(3).shape == (3, 64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    lg = LinearGaussian(seed=0)
    x = lg.sample_x(6)
    cpu = lg.vae()
    gpu = lg.vae().to("cuda")
    xg = x.cuda()
    exact = lg.log_evidence(x)
    torch.testing.assert_close(gpu.elbo(xg, analytic_kl=False).cpu(), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(gpu.iwae_bound(xg, 100).cpu(), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(gpu.reconstruct(xg).cpu(), cpu.reconstruct(x))
    assert gpu.sample(4).device.type == "cuda"
    mask = torch.ones_like(xg, dtype=torch.bool)
    mask[:, 0] = False
    out = gpu.complete(xg, mask, n_iter=5)
    assert torch.equal(out[mask], xg[mask])
    gpu.train()
    gpu.loss(xg).backward()
    cat = small_categorical_vae().to("cuda")
    xd = digits("test", "int", dtype=f64, device="cuda")[:20]
    assert torch.isfinite(cat.iwae_bound(xd, 50)).all()
    assert cat.sample(3).device.type == "cuda"
    assert cat.active_units(xd)[0].device.type == "cuda"
