"""Inputs on which Lab 6's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.

``train_step`` changes the networks and optimizers it is given: each case builds fresh ones (seeded),
and its ``extract`` compares the returned losses, the parameters after the step and the gradients
left in ``.grad`` (the discriminator's hold the generator step's, which its optimizer never applies).
"""
import torch

D64 = torch.float64


def _with_gradient(*positions):
    """extract: the loss and its gradients with respect to the arguments at ``positions``."""

    def extract(result, args, kwargs):
        grads = torch.autograd.grad(result, [args[k] for k in positions])
        return (result.detach(), *grads)

    return extract


def _leaf(values, dtype=D64):
    return torch.as_tensor(values, dtype=dtype).clone().requires_grad_(True)


def _after_step(result, args, kwargs):
    G, D = args[0], args[1]
    nets = [p.detach().clone() for p in (*G.parameters(), *D.parameters())]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in (*G.parameters(), *D.parameters())]
    return result, nets, grads


def _step_case(ns, kind, B=16, B_fake=12, dtype=D64, seed=0, stale_grads=False, ring=False):
    """Fresh seeded networks, optimizers and batches for one train_step."""
    if ring:  # the networks and optimizers of Exercise 5, in float32
        torch.manual_seed(seed)
        G = ns["mlp"](2, [128, 128], 2)
        D = torch.nn.Sequential(ns["mlp"](2, [128, 128], 1), torch.nn.Flatten(0))
    else:
        G, D = ns["small_gan"](seed, dtype=dtype)
    if kind == "sgd":
        opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.05), torch.optim.SGD(D.parameters(), lr=0.1, momentum=0.5)
    else:
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    if stale_grads:  # gradients left over from earlier work: zeroed before each player's backward
        for p in (*G.parameters(), *D.parameters()):
            p.grad = torch.randn_like(p)
    x_real = ns["toy_2d"]("eight_gaussians", B, seed=seed + 1, dtype=dtype)  # (B, 2)
    z_d, z_g = torch.randn(B, 2, dtype=dtype), torch.randn(B_fake, 2, dtype=dtype)
    return (G, D, opt_g, opt_d, x_real, z_d, z_g), {}, _after_step


CASES = {
    "discriminator_loss": [
        # batches of different sizes, float64, with the gradients in both logits
        lambda ns: ((_leaf(3 * torch.randn(7)), _leaf(3 * torch.randn(11))), {}, _with_gradient(0, 1)),
        # confident logits (+-800 in float64, +-200 in float32) and batches of one example
        lambda ns: ((_leaf([800.0, -800.0, 0.0]), _leaf([-800.0, 800.0])), {}, _with_gradient(0, 1)),
        lambda ns: ((_leaf([200.0, -200.0, 1.0], torch.float32), _leaf([-200.0, 200.0], torch.float32)), {}, _with_gradient(0, 1)),
        lambda ns: ((torch.tensor([1.5]), torch.tensor([-0.5])), {}),
    ],
    "minimax_generator_loss": [
        lambda ns: ((_leaf(4 * torch.randn(9)),), {}, _with_gradient(0)),
        lambda ns: ((_leaf([800.0, -800.0, -10.0]),), {}, _with_gradient(0)),
        lambda ns: ((torch.tensor([2.5]),), {}),  # a batch of one
    ],
    "non_saturating_generator_loss": [
        lambda ns: ((_leaf(4 * torch.randn(9)),), {}, _with_gradient(0)),
        lambda ns: ((_leaf([800.0, -800.0, -10.0]),), {}, _with_gradient(0)),
        lambda ns: ((_leaf([200.0, -200.0], torch.float32),), {}, _with_gradient(0)),
        lambda ns: ((torch.tensor([-3.0]),), {}),  # a batch of one
    ],
    "train_step": [
        lambda ns: _step_case(ns, "sgd", seed=4101),  # B = 16, B' = 12, float64
        lambda ns: _step_case(ns, "adam", seed=4102, B=5, B_fake=1, stale_grads=True),  # B' = 1; stale .grad
        lambda ns: _step_case(ns, "adam", seed=0, B=256, B_fake=256, dtype=torch.float32, ring=True),  # Exercise 5's setup
    ],
}
