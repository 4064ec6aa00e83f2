"""Inputs on which Lab 1's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
"""
import torch

D64 = torch.float64


def _gaussian(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=D64), torch.randn(shape, generator=g, dtype=D64)


CASES = {
    "gaussian_log_prob": [
        lambda ns: ((torch.randn(7, 4, 3, dtype=D64), *_gaussian((4, 3), 1)), {}),  # (n, B, D) against (B, D)
        lambda ns: ((torch.randn(5, dtype=D64), *_gaussian((5,), 2)), {}),  # a single D-vector
    ],
    "reparameterize": [
        lambda ns: ((*_gaussian((4, 3), 3), 6), {}),  # same seed: the same noise, (6, 4, 3)
        lambda ns: ((*_gaussian((2,), 4), 1), {}),
    ],
}
