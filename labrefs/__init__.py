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

This is course content, not autograder code: each adapter is plain torch with the lab's
signature, registered in :data:`REFERENCES` by lab. ``nbgrader_config.py`` names this package to
the grader (``GuardedExecute.reference_modules``). In autograde the kernel never has this file: the
sandbox shows it a stub with the same interface and an empty table (:mod:`autograder.edition`), and
the grader puts the adapters that a probe cell's ``reference_versions(...)`` names in front of the
code the kernel runs for that cell, as source, after every test of their own exercise has run
(``tests/test_references.py`` checks the order). So an adapter must be self-contained: it may use
``math``, ``torch`` (this module's imports) and the other functions of this module, which come
with it. A solution cell that calls ``reference_versions`` to pass its own exercise finds nothing
to bind, and the guard refuses the call besides (``ForbiddenCall``).

Adapters for labs whose setup cell has a ``forbidden_calls()`` block (Labs 5 and 6) hold no
module-level reference to the objects that block replaces: it swaps them out in every ``gmlib``
module while the tests run.
"""
from __future__ import annotations

import math
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
# The formulas of gmlib.probability (Chapter 1) in plain torch: a graded kernel's copy of the library
# has none of the functions Lab 1 asks for (autograder.edition), and these adapters reach it as source.


def _lab01_gaussian_log_prob(z, mean, log_var):
    """log N(z | mean, diag exp(log_var)), summed over the last dimension (z may carry sample dimensions)."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (z - mean) ** 2 * torch.exp(-log_var)).sum(-1)


def _lab01_reparameterize(mean, log_var, n):
    """n draws mean + exp(log_var / 2) eps, eps ~ N(0, I) from the global generator: (n, *mean.shape)."""
    eps = torch.randn((n, *mean.shape), dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


REFERENCES["lab01"] = {
    "gaussian_log_prob": _lab01_gaussian_log_prob,  # Exercise 3
    "reparameterize": _lab01_reparameterize,  # Exercise 4
}


# -- Lab 2: Gaussian mixtures, EM and missing data ----------------------------------------------
# Plain torch (gmlib.mixture's GaussianMixture is what the lab forbids; a graded kernel's copy of the
# library does not have it).


def _lab02_log_gaussian(x, means, covariances):
    """log N(x_n | mu_k, Sigma_k), ``(N, K)``, from a Cholesky factor of each Sigma_k."""
    chol = torch.linalg.cholesky(covariances)  # (K, D, D)
    centred = x[None, :, :] - means[:, None, :]  # (K, N, D)
    white = torch.linalg.solve_triangular(chol, centred.mT, upper=False)  # (K, D, N)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    d = x.shape[-1]
    return (-0.5 * (white.pow(2).sum(-2) + log_det[:, None] + d * math.log(2 * math.pi))).T  # (N, K)


def _lab02_e_step(x, weights, means, covariances):
    """Responsibilities ``(N, K)`` and the mean log-likelihood ``()``, in log space (a component of
    weight 0 gets responsibility 0, as in the solution)."""
    log_joint = torch.log(weights) + _lab02_log_gaussian(x, means, covariances)  # (N, K)
    log_px = torch.logsumexp(log_joint, dim=1, keepdim=True)  # (N, 1)
    return torch.exp(log_joint - log_px), log_px.mean()


def _lab02_m_step(x, resp, reg_covar=1e-6):
    """Weights ``(K,)``, means ``(K, D)``, covariances ``(K, D, D)`` (+ reg_covar I) from responsibilities."""
    n, d = x.shape
    nk = resp.sum(0)  # (K,)
    means = (resp.T @ x) / nk[:, None]  # (K, D)
    diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
    covariances = (resp.T[:, :, None] * diff).mT @ diff / nk[:, None, None]  # (K, D, D)
    covariances = covariances + reg_covar * torch.eye(d, dtype=x.dtype, device=x.device)
    return nk / n, means, covariances


def _lab02_condition_gaussian(x, observed, mean, cov):
    """E[x_m | x_o] ``(N, D)`` (observed entries of x unchanged) and log N(x_o | mu_o, Sigma_oo) ``(N,)``
    (exactly 0 for a row with nothing observed), all rows at once: row n's covariance is Sigma with
    its missing rows and columns replaced by those of the identity, so that its Cholesky factor holds
    Sigma_oo's and the missing entries, with a residual of 0, add nothing."""
    d = x.shape[-1]
    pair = observed[:, :, None] & observed[:, None, :]  # (N, D, D)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky(torch.where(pair, cov, eye))  # (N, D, D)
    resid = torch.where(observed, x - mean, torch.zeros_like(x))[..., None]  # (N, D, 1)
    alpha = torch.cholesky_solve(resid, chol)[..., 0]  # (N, D): Sigma_oo^{-1} (x_o - mu_o), 0 where missing
    x_hat = torch.where(observed, x, mean + alpha @ cov)  # missing: mu_m + Sigma_mo Sigma_oo^{-1} (x_o - mu_o)
    white = torch.linalg.solve_triangular(chol, resid, upper=False)[..., 0]  # (N, D)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (N,), log det Sigma_oo
    count = observed.sum(-1).to(x.dtype)  # (N,)
    return x_hat, -0.5 * (white.pow(2).sum(-1) + log_det + count * math.log(2 * math.pi))


REFERENCES["lab02"] = {
    "log_gaussian": _lab02_log_gaussian,  # Exercise 1
    "e_step": _lab02_e_step,  # Exercise 2
    "m_step": _lab02_m_step,  # Exercise 3
    "condition_gaussian": _lab02_condition_gaussian,  # Exercise 5
}


# -- Lab 3: sequences (HMMs, linear dynamical systems) ------------------------------------------
# The Kalman steps as gmlib.lds computes them (Kalman 1960; Bishop 2006, eqs. 13.88-13.92), in plain
# torch: symmetrised covariances, the update in Joseph form, S solved through its Cholesky factor. Like
# the solution cells they accept whatever broadcasts (an unbatched mean and covariance, say) and cast
# nothing. Same return conventions: (mean, cov) and (mean, cov, log_lik). The values agree with the
# solution's to round-off.


def _lab03_kalman_predict(mean, cov, A, Q):
    pred = A @ cov @ A.T + Q  # (B, Z, Z)
    return mean @ A.T, 0.5 * (pred + pred.mT)


def _lab03_kalman_update(mean, cov, x, C, R):
    CP = C @ cov  # (B, X, Z)
    S = CP @ C.T + R
    S = 0.5 * (S + S.mT)  # (B, X, X), the innovation covariance
    chol = torch.linalg.cholesky(S)
    gain = torch.cholesky_solve(CP, chol).mT  # (B, Z, X) = P C^T S^{-1}
    resid = x - mean @ C.T  # (B, X)
    new_mean = mean + (gain @ resid[..., None]).squeeze(-1)  # (B, Z)
    ikc = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device) - gain @ C  # (B, Z, Z)
    new_cov = ikc @ cov @ ikc.mT + gain @ R @ gain.mT  # Joseph form
    white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False).squeeze(-1)  # (B, X)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B,)
    log_lik = -0.5 * (x.shape[-1] * math.log(2 * math.pi) + log_det + white.pow(2).sum(-1))
    return new_mean, 0.5 * (new_cov + new_cov.mT), log_lik


REFERENCES["lab03"] = {
    "kalman_predict": _lab03_kalman_predict,  # Exercise 3
    "kalman_update": _lab03_kalman_update,  # Exercise 4
}


# -- Lab 4: restricted Boltzmann machines -------------------------------------------------------
# The formulas of gmlib.rbm.BernoulliRBM (which the lab forbids) in plain torch. The lab's functions
# draw no random numbers (the uniforms are passed in), and neither do these. Results are detached, as
# the library's model (which copies the parameters) gave them.


def _lab04_free_energy(v, W, b, c):
    with torch.no_grad():
        return -(v @ b) - torch.nn.functional.softplus(v @ W + c).sum(-1)  # (B,)


def _lab04_prob_h_given_v(v, W, c):
    with torch.no_grad():
        return torch.sigmoid(v @ W + c)  # (B, H)


def _lab04_prob_v_given_h(h, W, b):
    with torch.no_grad():
        return torch.sigmoid(h @ W.T + b)  # (B, D)


def _lab04_gibbs_sweep(v, W, b, c, u_h, u_v):
    with torch.no_grad():
        h = (u_h < torch.sigmoid(v @ W + c)).to(v.dtype)  # (B, H), from the given uniforms
        v_new = (u_v < torch.sigmoid(h @ W.T + b)).to(v.dtype)  # (B, D), from the sampled h
    return h, v_new


def _lab04_log_partition(W, b, c):
    """log Z, a 0-dim tensor, by enumerating the smaller layer (the other one summed out)."""
    d, h = W.shape
    m = min(d, h)
    states = ((torch.arange(2**m)[:, None] >> torch.arange(m)) & 1).to(W.dtype)  # (2^m, m)
    with torch.no_grad():
        if h <= d:  # c^T h + sum_i softplus(b_i + W_i: h)
            scores = states @ c + torch.nn.functional.softplus(states @ W.T + b).sum(-1)
        else:  # -F(v)
            scores = states @ b + torch.nn.functional.softplus(states @ W + c).sum(-1)
        return torch.logsumexp(scores, dim=0)


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


# -- Lab 7: normalizing flows ---------------------------------------------------------------------
# Plain torch: the setup cell's forbidden_calls() blocks gmlib.flows' AffineCoupling, Compose, Flow and
# standard_normal_log_prob (and torch.distributions' Gaussians) in every gmlib module while the tests run. The
# same operations in the same order as the solution cells, so that the values, the gradients and a seeded training
# run are the same; no random draws.


def _lab07_affine_coupling_forward(x, mask, net):
    """z = b x + (1 - b)(x exp(s) + t), (s, t) = net(b x) split along dimension 1; (z, sum of (1 - b) s) with (B,)."""
    s, t = net(mask * x).chunk(2, dim=1)
    s, t = (1 - mask) * s, (1 - mask) * t
    z = mask * x + (1 - mask) * (x * torch.exp(s) + t)
    return z, s.flatten(1).sum(1)


def _lab07_flow_log_prob(x, layers):
    """log N(z_K; 0, I) + sum_k logabsdet_k for z_k = layer_k(z_{k-1}), z_0 = x: (B,)."""
    z, total = x, x.new_zeros(x.shape[0])
    for layer in layers:
        z, logabsdet = layer(z)
        total = total + logabsdet
    d = z[0].numel()
    return -0.5 * (z.flatten(1) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi) + total


REFERENCES["lab07"] = {
    "affine_coupling_forward": _lab07_affine_coupling_forward,  # Exercise 1
    "flow_log_prob": _lab07_flow_log_prob,  # Exercise 3
}


# -- Lab 8: autoregressive models -----------------------------------------------------------------
# Plain torch: the setup cell's forbidden_calls() blocks gmlib.autoregressive's models and masked convolution,
# gmlib.flows.MADE and torch.distributions' categoricals while the tests run. The same operations in the same order as
# the solution cells, so that the values, the gradients and a seeded training run are the same; no random draws.


def _lab08_masked_conv2d(h, weight, bias, mask_type):
    """conv2d of h with weight * M (PixelCNN's mask: rows above the centre, left of it, type "B" the centre too),
    padding k // 2: (B, C_out, H, W)."""
    k = weight.shape[-1]
    c = k // 2
    mask = torch.zeros(k, k)
    mask[:c] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return torch.nn.functional.conv2d(h, weight * mask.to(weight.dtype), bias, padding=c)


def _lab08_ar_log_prob(logits, x, hidden=None):
    """sum over the positions (those where hidden is True) of log softmax(logits)[x]: (B,)."""
    per_position = torch.log_softmax(logits, dim=1).gather(1, x.long().unsqueeze(1)).squeeze(1)  # (B, D)
    if hidden is not None:
        per_position = per_position * hidden.to(per_position.dtype)
    return per_position.sum(1)


REFERENCES["lab08"] = {
    "masked_conv2d": _lab08_masked_conv2d,  # Exercise 2
    "ar_log_prob": _lab08_ar_log_prob,  # Exercise 3
}
