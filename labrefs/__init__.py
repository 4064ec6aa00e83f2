"""Reference versions of the lab functions that later exercises build on (exercise isolation).

A lab's later exercise often calls the functions written in earlier ones (Lab 1's ``elbo_mc``
draws its samples with the student's ``reparameterize``). Its test cells therefore run inside

    with reference_versions(globals(), "lab01", "reparameterize", "gaussian_log_prob"):
        est, se = elbo_mc(model, x, q_mean, q_log_var, 5000)

which binds each named notebook global to the reference version registered here for that lab
while the block runs, and puts the student's own binding back afterwards (the mechanism is the
autograder's, :mod:`autograder.kernel.references`). So an exercise's score does not depend on any
other exercise's solution: ``tests/test_grading.py`` checks that every exercise scores full marks
with every other exercise left blank, and ``python -m autograder.integrity mutants`` that a
mistake in one exercise changes no other exercise's score under real nbgrader.

This is course content, not autograder code: thin adapters from each lab's signatures onto the
library (``gmlib.probability``, ``gmlib.mixture``, ...), registered in :data:`REFERENCES` by lab.
``nbgrader_config.py`` names this package to the grader (``GuardedExecute.reference_modules``),
which forbids every function here to student code in autograde: a solution cell that calls
``reference_versions`` or an adapter to pass its own exercise raises ``ForbiddenCall``.

Adapters for labs whose setup cell has a ``forbidden_calls()`` block (Labs 5 and 6) hold no
module-level reference to the objects that block replaces: it swaps them out in every ``gmlib``
module while the tests run.
"""
from __future__ import annotations

from typing import Callable, MutableMapping

import torch

from autograder.kernel.references import bind_references

__all__ = ["REFERENCES", "reference_versions"]

#: ``{lab: {name in the notebook: reference function with the lab's signature}}``.
REFERENCES: dict[str, dict[str, Callable]] = {}



def reference_versions(namespace: MutableMapping, lab: str, *names: str):
    """Within the block, ``namespace[name]`` is the reference version of ``name`` in ``lab``.

    ``namespace``: the notebook's globals (``globals()`` in a test cell). The student's own
    bindings (or their absence) are put back when the block ends, however it ends.
    """
    return bind_references(REFERENCES, namespace, lab, *names)


# -- Lab 1: the probability toolkit -------------------------------------------------------------


def _lab01_gaussian_log_prob(z, mean, log_var):
    from gmlib import probability

    return probability.gaussian_log_prob(z, mean, log_var)


def _lab01_reparameterize(mean, log_var, n):
    from gmlib import probability

    return probability.reparameterize(mean, log_var, n)


REFERENCES["lab01"] = {
    "gaussian_log_prob": _lab01_gaussian_log_prob,  # Exercise 3
    "reparameterize": _lab01_reparameterize,  # Exercise 4
}


# -- Lab 2: Gaussian mixtures, EM and missing data ----------------------------------------------


def _lab02_log_gaussian(x, means, covariances):
    """log N(x_n | mu_k, Sigma_k), ``(N, K)``: a mixture's per-component log joint less log pi_k."""
    from gmlib import mixture

    k = means.shape[0]
    weights = means.new_full((k,), 1.0 / k)  # any positive weights: their logs are taken off again
    model = mixture.GaussianMixture(weights, means, covariances)
    return model.log_joint(x) - torch.log(weights)


def _lab02_e_step(x, weights, means, covariances):
    """Responsibilities ``(N, K)`` and the mean log-likelihood ``()``, in log space.

    Takes the weights' logs itself (not through GaussianMixture, which requires positive weights),
    so that a component of weight 0 gets responsibility 0, as in the solution.
    """
    log_joint = torch.log(weights) + _lab02_log_gaussian(x, means, covariances)  # (N, K)
    log_px = torch.logsumexp(log_joint, dim=1, keepdim=True)  # (N, 1)
    return torch.exp(log_joint - log_px), log_px.mean()


def _lab02_m_step(x, resp, reg_covar=1e-6):
    """Weights ``(K,)``, means ``(K, D)``, covariances ``(K, D, D)`` (+ reg_covar I) from responsibilities.

    Plain torch: gmlib.mixture has no M-step from given responsibilities (its EM step computes them,
    and adds 10 eps to N_k).
    """
    n, d = x.shape
    nk = resp.sum(0)  # (K,)
    means = (resp.T @ x) / nk[:, None]  # (K, D)
    diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
    covariances = (resp.T[:, :, None] * diff).mT @ diff / nk[:, None, None]  # (K, D, D)
    covariances = covariances + reg_covar * torch.eye(d, dtype=x.dtype, device=x.device)
    return nk / n, means, covariances


def _lab02_condition_gaussian(x, observed, mean, cov):
    """E[x_m | x_o] ``(N, D)`` (observed entries of x unchanged) and log N(x_o | mu_o, Sigma_oo) ``(N,)``.

    A one-component gmlib.mixture.GaussianMixture: its imputation is the Gaussian conditional mean
    (the responsibility of the single component is exactly 1) and its log joint, with log 1 = 0,
    the log density of the observed entries (set to exactly 0, as in the solution, for a row with
    nothing observed: the library's Schur-complement route leaves a rounding error there).
    """
    from gmlib import mixture

    model = mixture.GaussianMixture(mean.new_ones(1), mean[None], cov[None])
    log_marginal = model.log_joint(x, observed)[:, 0]  # (N,)
    return model.impute(x, observed), torch.where(observed.any(-1), log_marginal, 0.0)


REFERENCES["lab02"] = {
    "log_gaussian": _lab02_log_gaussian,  # Exercise 1
    "e_step": _lab02_e_step,  # Exercise 2
    "m_step": _lab02_m_step,  # Exercise 3
    "condition_gaussian": _lab02_condition_gaussian,  # Exercise 5
}


# -- Lab 3: sequences (HMMs, linear dynamical systems) ------------------------------------------
# The Kalman steps of gmlib.lds, through its unchecked helpers ``_predict`` and ``_update``: the public
# ``kalman_predict``/``kalman_update`` insist on a batched state (mean (B, Z), cov (B, Z, Z)) and cast
# to mean's dtype, where the lab's solution cells accept whatever broadcasts (an unbatched mu0 and P0,
# say) and cast nothing; the helpers do neither, so a kalman_filter that works with the solution's steps
# works with these. Same return conventions as the solution cells: (mean, cov) and (mean, cov, log_lik).
# The values agree to round-off (gmlib symmetrises the covariances, updates them in Joseph form and
# solves with a Cholesky factor of S where the solution inverts it).


def _lab03_kalman_predict(mean, cov, A, Q):
    from gmlib import lds

    return lds._predict(mean, cov, A, Q)


def _lab03_kalman_update(mean, cov, x, C, R):
    from gmlib import lds

    return lds._update(mean, cov, x, C, R)


REFERENCES["lab03"] = {
    "kalman_predict": _lab03_kalman_predict,  # Exercise 3
    "kalman_update": _lab03_kalman_update,  # Exercise 4
}


# -- Lab 4: restricted Boltzmann machines -------------------------------------------------------
# Adapters onto gmlib.rbm.BernoulliRBM (the lab forbids it to student code, not to the library).
# The lab's functions draw no random numbers (the uniforms are passed in), and neither do these:
# building the model draws its initial weights from the global RNG (init_std = 0 makes them zero,
# but the draw happens), so it is built under fork_rng. Results are detached (the model copies the
# parameters), in the dtype of W; the solution's functions are only ever called on plain tensors.


def _lab04_rbm(W, b, c):
    """A BernoulliRBM holding copies of W (D, H), b (D,), c (H,), built without touching the global RNG."""
    from gmlib import rbm

    with torch.random.fork_rng(devices=[]):
        return rbm.BernoulliRBM.from_parameters(W, b, c)


def _lab04_free_energy(v, W, b, c):
    with torch.no_grad():
        return _lab04_rbm(W, b, c).free_energy(v)  # (B,)


def _lab04_prob_h_given_v(v, W, c):
    b = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)  # p(h | v) does not involve b
    with torch.no_grad():
        return _lab04_rbm(W, b, c).prob_h_given_v(v)  # (B, H)


def _lab04_prob_v_given_h(h, W, b):
    c = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)  # p(v | h) does not involve c
    with torch.no_grad():
        return _lab04_rbm(W, b, c).prob_v_given_h(h)  # (B, D)


def _lab04_gibbs_sweep(v, W, b, c, u_h, u_v):
    model = _lab04_rbm(W, b, c)
    with torch.no_grad():
        h = (u_h < model.prob_h_given_v(v)).to(v.dtype)  # (B, H), from the given uniforms
        v_new = (u_v < model.prob_v_given_h(h)).to(v.dtype)  # (B, D), from the sampled h
    return h, v_new


def _lab04_log_partition(W, b, c):
    with torch.no_grad():
        return _lab04_rbm(W, b, c).log_partition_exact()  # 0-dim, the smaller layer enumerated


REFERENCES["lab04"] = {
    "free_energy": _lab04_free_energy,  # Exercise 1
    "prob_h_given_v": _lab04_prob_h_given_v,  # Exercise 2
    "prob_v_given_h": _lab04_prob_v_given_h,  # Exercise 2
    "gibbs_sweep": _lab04_gibbs_sweep,  # Exercise 2
    "log_partition": _lab04_log_partition,  # Exercise 4
}


# -- Lab 5: variational autoencoders ------------------------------------------------------------
#
# Lab 5's tests run the student's functions inside the setup cell's forbidden_calls(), which blocks
# gmlib.vae.VAE, gmlib.likelihoods' classes, the Gaussian helpers of gmlib.probability
# (reparameterize, gaussian_kl, ...) and torch.distributions in every gmlib module: these
# adapters are plain tensor code, the same operations in the same order as the lab's solution
# cells (so the values, the gradients and a seeded training run are the same to the last bit).


def _lab05_reparameterize(mu, log_var, eps):
    """z = mu + exp(log_var / 2) eps; mu, log_var (B, L), eps (*S, B, L) -> (*S, B, L)."""
    return mu + torch.exp(0.5 * log_var) * eps


def _lab05_kl_per_dimension(mu, log_var):
    """KL_j = (exp(log_var_j) + mu_j^2 - 1 - log_var_j) / 2, (B, L)."""
    return 0.5 * (torch.exp(log_var) + mu**2 - 1.0 - log_var)


def _lab05_gaussian_kl(mu, log_var):
    """KL(N(mu, diag exp(log_var)) || N(0, I)) of every row, (B,)."""
    return _lab05_kl_per_dimension(mu, log_var).sum(-1)


def _lab05_bernoulli_log_likelihood(x, logits):
    """sum_d [x_d l_d - softplus(l_d)]; x (B, D), logits (*S, B, D) -> (*S, B)."""
    return (x * logits - torch.nn.functional.softplus(logits)).sum(-1)


def _lab05_elbo(x, encoder, decoder, eps, log_likelihood=None):
    """(1/S) sum_s log p(x | z_s) - KL(q || N(0, I)) of every example, (B,).

    ``log_likelihood=None`` is the lab's default, the Bernoulli log-likelihood (computed here
    rather than through a default argument holding another adapter).
    """
    mu, log_var = encoder(x)  # (B, L) each
    z = mu + torch.exp(0.5 * log_var) * eps  # (S, B, L)
    params = decoder(z)  # (S, B, D)
    if log_likelihood is None:
        log_lik = (x * params - torch.nn.functional.softplus(params)).sum(-1)  # (S, B)
    else:
        log_lik = log_likelihood(x, params)
    return log_lik.mean(0) - (0.5 * (torch.exp(log_var) + mu**2 - 1.0 - log_var)).sum(-1)  # (B,)


def _lab05_vae_loss(x, encoder, decoder, eps, log_likelihood=None):
    """-(1/B) sum_n ELBO(x_n), shape (); ``log_likelihood=None`` is the Bernoulli default."""
    return -_lab05_elbo(x, encoder, decoder, eps, log_likelihood).mean()


REFERENCES["lab05"] = {
    "reparameterize": _lab05_reparameterize,  # Exercise 1
    "kl_per_dimension": _lab05_kl_per_dimension,  # Exercise 2
    "gaussian_kl": _lab05_gaussian_kl,  # Exercise 2
    "bernoulli_log_likelihood": _lab05_bernoulli_log_likelihood,  # Exercise 3
    "elbo": _lab05_elbo,  # Exercise 3
    "vae_loss": _lab05_vae_loss,  # Exercise 3
}


# -- Lab 6: generative adversarial networks -----------------------------------------------------
# Plain torch: the setup cell's forbidden_calls() blocks gmlib.gan's losses and PyTorch's binary
# cross-entropy in every gmlib module while the tests run. The same operations in the same order
# as the solution cells, so that the values (and a seeded training run) are the same; no random draws.


def _lab06_discriminator_loss(real_logits, fake_logits):
    from torch.nn import functional as nnf

    return nnf.softplus(-real_logits).mean() + nnf.softplus(fake_logits).mean()


def _lab06_minimax_generator_loss(fake_logits):
    from torch.nn import functional as nnf

    return -nnf.softplus(fake_logits).mean()


def _lab06_non_saturating_generator_loss(fake_logits):
    from torch.nn import functional as nnf

    return nnf.softplus(-fake_logits).mean()


def _lab06_train_step(G, D, opt_g, opt_d, x_real, z_d, z_g):
    # The losses written out rather than calling the two adapters above: each call of a function of
    # this module from library code goes through the guard's check, and Exercise 5 calls this 2000
    # times under a time budget.
    from torch.nn import functional as nnf

    fake = G(z_d).detach()  # (B, d): no gradient reaches G in the discriminator step
    d_loss = nnf.softplus(-D(x_real)).mean() + nnf.softplus(D(fake)).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = nnf.softplus(-D(G(z_g))).mean()  # non-saturating, through the updated D
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


REFERENCES["lab06"] = {
    "discriminator_loss": _lab06_discriminator_loss,  # Exercise 1
    "minimax_generator_loss": _lab06_minimax_generator_loss,  # Exercise 2
    "non_saturating_generator_loss": _lab06_non_saturating_generator_loss,  # Exercise 2
    "train_step": _lab06_train_step,  # Exercise 4
}
