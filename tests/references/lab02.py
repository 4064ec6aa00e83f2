"""Inputs on which Lab 2's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
"""
import torch

D64 = torch.float64
NAN = float("nan")


def _data(n, d, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g, dtype=D64)


def _mixture(ns, k, d, seed):
    return ns["random_mixture"](k, d, seed=seed)  # weights (K,), means (K, D), covariances (K, D, D)


def _with_zero_weight(ns):
    weights, means, covariances = _mixture(ns, 3, 4, 21)
    return (torch.cat([weights, weights.new_zeros(1)]), torch.cat([means, means[:1] + 1.0]),
            torch.cat([covariances, covariances[:1]]))


def _resp(n, k, seed, hard=False):
    g = torch.Generator().manual_seed(seed)
    if hard:
        return torch.nn.functional.one_hot(torch.arange(n) % k, k).to(D64)
    return torch.softmax(2.0 * torch.randn(n, k, generator=g, dtype=D64), dim=1)


def _masked(n, d, seed, p=0.6):
    """x with NaN where not observed, the mask, and one complete row and one empty row."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, d, generator=g, dtype=D64)
    observed = torch.rand(n, d, generator=g) < p
    observed[0], observed[1] = True, False
    return torch.where(observed, x, NAN), observed


def _one_gaussian(ns, d, seed):
    _, means, covariances = _mixture(ns, 1, d, seed)
    return means[0], covariances[0]


CASES = {
    "log_gaussian": [
        lambda ns: ((_data(20, 4, 1), *_mixture(ns, 3, 4, 1)[1:]), {}),
        lambda ns: ((_data(1, 1, 2), *_mixture(ns, 1, 1, 2)[1:]), {}),  # a single point, K = D = 1
        lambda ns: ((_data(8, 5, 3, scale=100.0), *_mixture(ns, 3, 5, 3)[1:]), {}),  # far away: log densities < -800
    ],
    "e_step": [
        lambda ns: ((_data(30, 4, 4), *_mixture(ns, 3, 4, 4)), {}),
        lambda ns: ((_data(8, 5, 5, scale=100.0), *_mixture(ns, 3, 5, 5)), {}),  # densities underflow: log space
        lambda ns: ((_data(12, 4, 6), *_with_zero_weight(ns)), {}),  # a component of weight 0
        lambda ns: ((_data(1, 2, 7), *_mixture(ns, 1, 2, 7)), {}),  # one point, one component
    ],
    "m_step": [
        lambda ns: ((_data(40, 3, 8), _resp(40, 4, 8)), {"reg_covar": 1e-3}),
        lambda ns: ((_data(10, 2, 9), _resp(10, 2, 9, hard=True)), {"reg_covar": 0.0}),  # hard responsibilities
        lambda ns: ((_data(25, 3, 10), _resp(25, 3, 10)), {}),  # the default reg_covar
        lambda ns: ((_data(1, 2, 11), _resp(1, 1, 11)), {"reg_covar": 0.5}),  # one point, one component
    ],
    "condition_gaussian": [
        lambda ns: ((*_masked(30, 5, 12), *_one_gaussian(ns, 5, 12)), {}),  # random patterns, a complete and an empty row
        lambda ns: ((*_masked(2, 1, 13), *_one_gaussian(ns, 1, 13)), {}),  # D = 1: one complete row, one empty
        lambda ns: ((torch.full((3, 4), NAN, dtype=D64), torch.zeros(3, 4, dtype=torch.bool),
                     *_one_gaussian(ns, 4, 14)), {}),  # nothing observed at all: the mean, log density 0
        lambda ns: ((_data(4, 3, 15), torch.ones(4, 3, dtype=torch.bool), *_one_gaussian(ns, 3, 15)), {}),  # all observed
    ],
}
