"""Inputs on which Lab 4's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.

None of Lab 4's functions draws random numbers (the uniforms of a Gibbs sweep are arguments); the
``_draws_nothing`` extracts check that the global RNG is left where it was, as the solution leaves it.
"""
import torch

D64 = torch.float64


def _rbm(ns, D, H, scale=1.0, seed=0):
    return ns["random_rbm"](D, H, scale=scale, seed=seed)


def _binary(B, D, dtype=D64):
    return (torch.rand(B, D) < 0.5).to(dtype)


def _draws_nothing(result, args, kwargs):
    """The result and the next draw of the global RNG: the same only if the function drew nothing."""
    return result, torch.rand(3)


CASES = {
    "free_energy": [
        lambda ns: ((_binary(6, 5), *_rbm(ns, 5, 3, seed=1)), {}, _draws_nothing),  # D > H, binary rows
        lambda ns: ((torch.rand(1, 4, dtype=D64), *_rbm(ns, 4, 7, seed=2)), {}),  # a batch of 1, grey levels, D < H
        # weights 1000 times larger: softplus of inputs where exp overflows, in float64
        lambda ns: ((_binary(5, 8), *(lambda W, b, c: (1000 * W, b, c))(*_rbm(ns, 8, 6, scale=0.1, seed=3))), {}),
        # the same in float32
        lambda ns: ((_binary(5, 8, torch.float32), *(t.float() for t in (lambda W, b, c: (1000 * W, b, c))(
            *_rbm(ns, 8, 6, scale=0.1, seed=3)))), {}),
        lambda ns: ((ns["binary_states"](4), *_rbm(ns, 4, 1, seed=4)), {}),  # every visible vector, H = 1
    ],
    "prob_h_given_v": [
        lambda ns: ((_binary(6, 5), *(lambda W, b, c: (W, c))(*_rbm(ns, 5, 3, scale=1.5, seed=5))), {}, _draws_nothing),
        lambda ns: ((torch.rand(1, 3, dtype=D64), *(lambda W, b, c: (W, c))(*_rbm(ns, 3, 8, scale=40.0, seed=6))), {}),
        lambda ns: ((ns["binary_states"](6), *(lambda W, b, c: (W, c))(*_rbm(ns, 6, 1, seed=7))), {}),  # (64, 6), H = 1
    ],
    "prob_v_given_h": [
        lambda ns: ((_binary(6, 3), *(lambda W, b, c: (W, b))(*_rbm(ns, 5, 3, scale=1.5, seed=8))), {}, _draws_nothing),
        lambda ns: ((torch.rand(1, 8, dtype=D64), *(lambda W, b, c: (W, b))(*_rbm(ns, 3, 8, scale=40.0, seed=9))), {}),
        lambda ns: ((ns["binary_states"](5), *(lambda W, b, c: (W, b))(*_rbm(ns, 1, 5, seed=10))), {}),  # D = 1
    ],
    "gibbs_sweep": [
        # uniforms from the seeded global RNG, as the tests draw them
        lambda ns: ((_binary(7, 6), *_rbm(ns, 6, 4, seed=11), torch.rand(7, 4, dtype=D64), torch.rand(7, 6, dtype=D64)),
                    {}, _draws_nothing),
        # a batch of 1, and the Exercise 2 visible example worked by hand: h = 1, v' = (0, 1)
        lambda ns: ((torch.tensor([[1.0, 0.0]], dtype=D64), torch.tensor([[1.0986122886681098], [0.0]], dtype=D64),
                     torch.tensor([0.0, -1.0986122886681098], dtype=D64), torch.tensor([0.0], dtype=D64),
                     torch.tensor([[0.7]], dtype=D64), torch.tensor([[0.8, 0.2]], dtype=D64)), {}),
        # uniforms equal to 0 and 1 (the edges of [0, 1)): units forced on where u = 0, off where u = 1
        lambda ns: ((_binary(4, 5), *_rbm(ns, 5, 5, scale=0.5, seed=12),
                     (torch.rand(4, 5) < 0.5).to(D64), (torch.rand(4, 5) < 0.5).to(D64)), {}),
        # float32 chains: the samples keep the dtype of v
        lambda ns: ((_binary(3, 4, torch.float32), *(t.float() for t in _rbm(ns, 4, 2, seed=13)),
                     torch.rand(3, 2), torch.rand(3, 4)), {}),
    ],
    "log_partition": [
        lambda ns: (_rbm(ns, 6, 4, seed=14), {}, _draws_nothing),  # H < D: the hidden layer enumerated
        lambda ns: (_rbm(ns, 3, 9, seed=15), {}),  # D < H: the visible layer enumerated
        lambda ns: (_rbm(ns, 5, 5, seed=16), {}),  # D = H
        lambda ns: (_rbm(ns, 1, 1, seed=17), {}),  # single units
        lambda ns: (_rbm(ns, 10, 6, scale=300.0, seed=18), {}),  # Z overflows float64, log Z does not
        lambda ns: (_rbm(ns, 64, 16, scale=0.3, seed=19), {}),  # a digit-sized RBM, 2^16 hidden vectors
        lambda ns: ((torch.zeros(3, 2, dtype=D64), torch.tensor([0.5, -1.0, 2.0], dtype=D64),
                     torch.tensor([1.0, 0.0], dtype=D64)), {}),  # W = 0
    ],
}
