"""Inputs on which Lab 5's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
The networks of the ELBO cases are built inside the case, after the seed: both calls get the same
weights, and the extracts compare the gradients in every parameter too.
"""
import math

import torch
from torch import nn

D64 = torch.float64


def _gaussian(shape, seed, dtype=D64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    mu, log_var = 2 * torch.randn(shape, generator=g, dtype=dtype), 2 * torch.randn(shape, generator=g, dtype=dtype)
    return mu.requires_grad_(requires_grad), log_var.requires_grad_(requires_grad)


def _with_grads(result, args, kwargs):
    """The value and the gradients of its sum in mu and log_var (the first two arguments)."""
    grads = torch.autograd.grad(result.sum(), [args[0], args[1]])
    return result.detach(), grads


def _networks(D, L, H=16, dtype=D64):
    enc_net = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 2 * L)).to(dtype)
    dec_net = nn.Sequential(nn.Linear(L, H), nn.Tanh(), nn.Linear(H, D)).to(dtype)
    return enc_net, dec_net


def _vae_case(B, S, dtype=D64, gaussian=False):
    """(x, encoder, decoder, eps[, log_likelihood]) on binary digits-like data, and an extract with the gradients."""

    def case(ns):
        D, L = 12, 3
        enc_net, dec_net = _networks(D, L, dtype=dtype)
        encoder = lambda x: tuple(enc_net(x).chunk(2, dim=-1))
        x = (torch.rand(B, D) < 0.4).to(dtype)
        eps = torch.randn(S, B, L, dtype=dtype)
        args = (x, encoder, dec_net, eps)
        kwargs = {}
        if gaussian:  # a Gaussian decoder with unit variance, passed as log_likelihood
            kwargs["log_likelihood"] = lambda x, mean: -0.5 * (math.log(2 * math.pi) + (x - mean) ** 2).sum(-1)
        params = [*enc_net.parameters(), *dec_net.parameters()]

        def extract(result, args, kwargs):
            return result.detach(), torch.autograd.grad(result.sum(), params)

        return args, kwargs, extract

    return case


CASES = {
    "reparameterize": [
        lambda ns: ((*_gaussian((4, 3), 1, requires_grad=True), torch.randn(6, 4, 3, dtype=D64)), {}, _with_grads),
        lambda ns: ((*_gaussian((4, 3), 2, requires_grad=True), torch.randn(4, 3, dtype=D64)), {}, _with_grads),  # eps (B, L)
        lambda ns: ((*_gaussian((1, 2), 3, dtype=torch.float32), torch.randn(2, 5, 1, 2)), {}),  # (S1, S2, B, L), float32
    ],
    "kl_per_dimension": [
        lambda ns: (_gaussian((7, 5), 4, requires_grad=True), {}, _with_grads),
        lambda ns: ((torch.zeros(1, 2, dtype=D64), torch.tensor([[-40.0, 40.0]], dtype=D64)), {}),  # extreme log-variances
        lambda ns: (_gaussian((1, 1), 5, dtype=torch.float32), {}),
    ],
    "gaussian_kl": [
        lambda ns: (_gaussian((6, 4), 6, requires_grad=True), {}, _with_grads),
        lambda ns: ((torch.zeros(3, 4, dtype=D64), torch.zeros(3, 4, dtype=D64)), {}),  # q = the prior: 0
        lambda ns: ((torch.zeros(1, 2, dtype=D64), torch.tensor([[-40.0, 40.0]], dtype=D64)), {}),
        lambda ns: (_gaussian((3, 100), 7, dtype=torch.float32), {}),
    ],
    "bernoulli_log_likelihood": [
        lambda ns: (((torch.rand(20, 64) < 0.3).double(), 3 * torch.randn(4, 20, 64, dtype=D64)), {}),  # (S, B, D)
        lambda ns: ((torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=D64),
                     torch.tensor([[40.0, -40.0, 200.0, -200.0]], dtype=D64)), {}),  # (B, D), extreme logits
        lambda ns: (((torch.rand(5, 8) < 0.5).float(), 20 * torch.randn(2, 5, 8)), {}),  # float32
    ],
    "elbo": [
        _vae_case(B=8, S=1),
        _vae_case(B=5, S=4),
        _vae_case(B=1, S=3, gaussian=True),  # a batch of one, the log_likelihood argument
        _vae_case(B=6, S=2, dtype=torch.float32),
    ],
    "vae_loss": [
        _vae_case(B=8, S=1),
        _vae_case(B=5, S=4, gaussian=True),
        _vae_case(B=1, S=1),
        _vae_case(B=50, S=1, dtype=torch.float32),  # a training step of Exercise 5
    ],
}
