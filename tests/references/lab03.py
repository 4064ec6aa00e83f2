"""Inputs on which Lab 3's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
"""
import torch

D64 = torch.float64


def _spd(*batch, D, seed, jitter=0.3):
    """Symmetric positive definite matrices (*batch, D, D)."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(*batch, D, D, generator=g, dtype=D64)
    return M @ M.mT / D + jitter * torch.eye(D, dtype=D64)


def _randn(*shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=D64)


CASES = {
    "kalman_predict": [
        # a batch of B = 4 with Z = 3
        lambda ns: ((_randn(4, 3, seed=1), _spd(4, D=3, seed=2), _randn(3, 3, seed=3), _spd(D=3, seed=4)), {}),
        # B = 1, Z = 1 (the scalar case of the visible tests)
        lambda ns: ((_randn(1, 1, seed=5), _spd(1, D=1, seed=6), _randn(1, 1, seed=7), _spd(D=1, seed=8)), {}),
        # the prior of z_1 unbatched, as a kalman_filter may pass it: mean (Z,), cov (Z, Z) broadcast
        lambda ns: ((_randn(2, seed=9), _spd(D=2, seed=10), _randn(2, 2, seed=11), _spd(D=2, seed=12)), {}),
        # a large, nearly singular covariance and an expanded (non-contiguous) batch
        lambda ns: ((_randn(3, 2, seed=13, scale=1e3), (1e6 * _spd(D=2, seed=14, jitter=1e-9)).expand(3, 2, 2),
                     _randn(2, 2, seed=15), _spd(D=2, seed=16)), {}),
    ],
    "kalman_update": [
        # fewer observed dimensions than states: B = 4, Z = 3, X = 2
        lambda ns: ((_randn(4, 3, seed=21), _spd(4, D=3, seed=22), _randn(4, 2, seed=23, scale=2.0),
                     _randn(2, 3, seed=24), _spd(D=2, seed=25)), {}),
        # more observed dimensions than states, B = 1: Z = 2, X = 3
        lambda ns: ((_randn(1, 2, seed=26), _spd(1, D=2, seed=27), _randn(1, 3, seed=28),
                     _randn(3, 2, seed=29), _spd(D=3, seed=30)), {}),
        # the scalar case of the visible tests: prior N(0, 1), x = 2, C = R = 1
        lambda ns: ((torch.zeros(1, 1, dtype=D64), torch.ones(1, 1, 1, dtype=D64), torch.full((1, 1), 2.0, dtype=D64),
                     torch.ones(1, 1, dtype=D64), torch.ones(1, 1, dtype=D64)), {}),
        # the unbatched prior of z_1 with a batch of observations (broadcast), an expanded P0
        lambda ns: ((_randn(2, seed=31), _spd(D=2, seed=32), _randn(3, 1, seed=33), _randn(1, 2, seed=34),
                     _spd(D=1, seed=35)), {}),
        lambda ns: ((_randn(3, 2, seed=36), _spd(D=2, seed=37).expand(3, 2, 2), _randn(3, 2, seed=38),
                     _randn(2, 2, seed=39), _spd(D=2, seed=40)), {}),
        # nearly noiseless observations (R = 1e-4 I) far from the prediction: the gain is almost C^+
        lambda ns: ((_randn(2, 2, seed=41), _spd(2, D=2, seed=42), _randn(2, 2, seed=43, scale=50.0),
                     torch.eye(2, dtype=D64) + 0.1 * _randn(2, 2, seed=44), 1e-4 * torch.eye(2, dtype=D64)), {}),
    ],
}
