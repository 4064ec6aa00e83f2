"""Inputs on which Lab 8's reference versions (labrefs) must agree with the solution notebook.

``CASES[name]`` is a list of functions of the solution namespace ``ns`` returning ``(args, kwargs)``
or ``(args, kwargs, extract)``; ``tests/test_references.py`` seeds torch, builds the inputs and
calls the solution's ``name``, then does the same for the reference, and compares
``extract(result, args, kwargs)`` (default: the result) with ``torch.testing.assert_close``.
The extracts compare the gradients too (Exercise 5 trains through both functions).
"""
import torch

D64 = torch.float64


def _gradients(result, args, kwargs):
    """The values, and the gradients of their sum in every argument that requires one."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return result.detach(), torch.autograd.grad(result.sum(), leaves)


def _conv_case(c_in, c_out, k, mask_type, dtype=D64, bias=True):
    def case(ns):
        h = torch.randn(2, c_in, 6, 5, dtype=dtype).requires_grad_(True)
        weight = torch.randn(c_out, c_in, k, k, dtype=dtype).requires_grad_(True)
        b = torch.randn(c_out, dtype=dtype).requires_grad_(True) if bias else None
        return (h, weight, b, mask_type), {}, _gradients

    return case


def _log_prob_case(B, L, D, dtype=D64, hidden=False, scale=3.0):
    def case(ns):
        logits = (scale * torch.randn(B, L, D, dtype=dtype)).requires_grad_(True)
        x = torch.randint(0, L, (B, D)).to(dtype)
        kwargs = {"hidden": torch.rand(B, D) < 0.5} if hidden else {}
        return (logits, x), kwargs, _gradients

    return case


def _pixelcnn_case(ns):
    """The logits of Exercise 5's network on digits-like inputs, float32, through each version's masked_conv2d."""
    net = ns["make_pixelcnn"](2, 8, 5)
    x = torch.randint(0, 17, (3, 64)).float()
    logits = net(x)
    return (logits, x), {"hidden": ~ns["TOP"].expand(3, 64)}, lambda result, args, kwargs: result.detach()


CASES = {
    "masked_conv2d": [
        _conv_case(1, 4, 5, "A"),
        _conv_case(3, 3, 3, "B"),
        _conv_case(2, 5, 7, "A", bias=False),
        _conv_case(4, 4, 3, "B", dtype=torch.float32),  # float32, as in Exercise 5
    ],
    "ar_log_prob": [
        _log_prob_case(5, 4, 6),
        _log_prob_case(3, 17, 64, hidden=True),
        _log_prob_case(4, 17, 64, dtype=torch.float32),  # float32, as in Exercise 5
        _log_prob_case(2, 6, 5, scale=1e4),  # large logits
        _pixelcnn_case,
    ],
}
