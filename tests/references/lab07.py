"""Inputs on which Lab 7's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
The networks are built inside the case, after the seed: both calls get the same weights, and the
extracts compare the gradients in the input and in every parameter too (Exercise 5 trains through both).
"""
import torch
from torch import nn

D64 = torch.float64


def _with_gradients(modules):
    """extract: the values, and the gradients of sum(z) + sum(logabsdet) (or of sum(log p)) in the first argument and
    in the parameters of ``modules(args)``."""

    def extract(result, args, kwargs):
        values = result if isinstance(result, tuple) else (result,)
        objective = sum(v.sum() for v in values)
        params = [p for m in modules(args) for p in m.parameters()]
        return tuple(v.detach() for v in values), torch.autograd.grad(objective, [args[0], *params])

    return extract


def _coupling_case(shape, mask, net, dtype=D64):
    """(x, mask, net) with x a leaf of the given shape."""

    def case(ns):
        x = (2 * torch.randn(shape, dtype=dtype)).requires_grad_(True)
        return (x, mask().to(dtype), net().to(dtype)), {}, _with_gradients(lambda args: [args[2]])

    return case


def _flow_case(ns, shape, dtype=D64, coupling=False, n_layers=3):
    """(x, layers): gmlib's elementwise affine layers and the lab's couplings (through the solution's
    affine_coupling_forward, as Exercise 5 calls it), with random parameters."""
    x = (1.5 * torch.randn(shape, dtype=dtype)).requires_grad_(True)
    modules = []
    for _ in range(n_layers):
        layer = ns["ElementwiseAffine"](tuple(shape[1:])).to(dtype)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(0.5 * torch.randn(p.shape, dtype=dtype))
        modules.append(layer)
    layers = list(modules)
    if coupling:  # the flow of Exercise 5, its conditioners no longer the identity
        flow = ns["make_flow"](4, (16, 16)).to(dtype)
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.3 * torch.randn(p.shape, dtype=dtype))
        modules.append(flow)
        layers += flow.layers(ns["affine_coupling_forward"])
    return (x, layers), {}, _with_gradients(lambda args: modules)


CASES = {
    "affine_coupling_forward": [
        _coupling_case((5, 4), lambda: torch.tensor([1.0, 0.0, 1.0, 0.0]), lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8))),
        _coupling_case((3, 2, 4, 4), lambda: (torch.arange(4)[:, None] + torch.arange(4)[None, :]).remainder(2).float().expand(2, 4, 4),
                       lambda: nn.Conv2d(2, 4, 3, padding=1)),  # images, a checkerboard mask
        _coupling_case((6, 2), lambda: torch.tensor([0.0, 1.0]), lambda: nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 4)),
                       dtype=torch.float32),  # float32, as in Exercise 5
    ],
    "flow_log_prob": [
        lambda ns: _flow_case(ns, (7, 3)),
        lambda ns: _flow_case(ns, (2, 2, 3, 3), n_layers=2),  # images
        lambda ns: _flow_case(ns, (9, 2), dtype=torch.float32, coupling=True),  # Exercise 5's flow, float32
        lambda ns: ((torch.randn(4, 5, dtype=D64).requires_grad_(True), []), {}, _with_gradients(lambda args: [])),  # no layer
    ],
}
