"""Plausible mistakes in Lab 7, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

_EX1_MASK_FORWARD = "s, t = (1 - mask) * s, (1 - mask) * t  # only the transformed coordinates"
_EX1_LOGDET_FORWARD = "return z, s.flatten(1).sum(1)  # (B, ...), (B,)"
_EX1_INVERSE = "x = mask * z + (1 - mask) * (z - t) * torch.exp(-s)"
_EX2_INIT = """    if not bool(layer.initialized):  # data-dependent initialisation, on the first batch only
        with torch.no_grad():
            layer.loc.copy_(x.mean(dims))
            layer.log_scale.copy_(0.5 * torch.log(x.var(dims, correction=0)))
            layer.initialized.fill_(True)
    shape = (1, -1) + (1,) * (x.dim() - 2)  # (1, C) or (1, C, 1, 1)
    z = (x - layer.loc.reshape(shape)) * torch.exp(-layer.log_scale).reshape(shape)
"""
_EX2_LOGDET_FORWARD = "logabsdet = -math.prod(x.shape[2:]) * layer.log_scale.sum()"
_EX2_INVERSE_SHAPE = "    shape = (1, -1) + (1,) * (z.dim() - 2)\n"
_EX3_BASE = "log_base = -0.5 * (z.flatten(1) ** 2).sum(1) - 0.5 * d * LOG_2PI"
_EX4_BOUND = "bound = log_p.mean(0) - d * math.log(levels)"
_EX4_RETURN = "return -bound / (d * math.log(2.0))"
_EX4_Y = "y = (x + u) / levels"
_EX5_BATCH = "x = x_train[torch.randint(0, x_train.shape[0], (256,), generator=g)]"

MUTANTS = [
    # Exercise 1: the affine coupling layer
    ("coupling whose log-determinant sums s over every coordinate (s not masked)", "ex1_solution", [
        (_EX1_MASK_FORWARD, "t = (1 - mask) * t  # only the transformed coordinates")]),
    ("coupling whose network reads the whole input x, not b x", "ex1_solution", [
        ("net(mask * x)", "net(x)")]),
    ("coupling whose network reads the whole input in both directions", "ex1_solution", [
        ("net(mask * x)", "net(x)"), ("net(mask * z)", "net(z)")]),
    ("inverse coupling returning the forward map's log-determinant", "ex1_solution", [
        ("return x, -s.flatten(1).sum(1)", "return x, s.flatten(1).sum(1)")]),
    ("inverse coupling multiplying by exp(s) instead of exp(-s)", "ex1_solution", [
        (_EX1_INVERSE, "x = mask * z + (1 - mask) * (z - t) * torch.exp(s)")]),
    ("inverse coupling scaling before it removes the shift", "ex1_solution", [
        (_EX1_INVERSE, "x = mask * z + (1 - mask) * (z * torch.exp(-s) - t)")]),
    ("coupling log-determinant summed over dimension 1 only (per row of an image)", "ex1_solution", [
        (_EX1_LOGDET_FORWARD, "return z, s.sum(1)  # (B, ...), (B,)")]),
    ("coupling log-determinant as the sum of the scales exp(s), not of their logs", "ex1_solution", [
        (_EX1_LOGDET_FORWARD, "return z, torch.exp(s).flatten(1).sum(1)  # (B, ...), (B,)")]),
    ("coupling log-determinant averaged over the coordinates", "ex1_solution", [
        (_EX1_LOGDET_FORWARD, "return z, s.flatten(1).mean(1)  # (B, ...), (B,)")]),
    ("coupling with s and t swapped (t the first half of the network's output)", "ex1_solution", [
        ("s, t = net(mask * x).chunk(2, dim=1)", "t, s = net(mask * x).chunk(2, dim=1)"),
        ("s, t = net(mask * z).chunk(2, dim=1)", "t, s = net(mask * z).chunk(2, dim=1)")]),
    ("coupling with the scale detached (no gradient through s)", "ex1_solution", [
        ("(x * torch.exp(s) + t)", "(x * torch.exp(s.detach()) + t)")]),
    # Exercise 2: ActNorm
    ("ActNorm initialised with the sample variance (divides by BHW - 1)", "ex2_solution", [
        ("x.var(dims, correction=0)", "x.var(dims)")]),
    ("ActNorm's log_scale set to the log of the variance, not of the standard deviation", "ex2_solution", [
        ("layer.log_scale.copy_(0.5 * torch.log(", "layer.log_scale.copy_(torch.log(")]),
    ("ActNorm statistics over the whole batch, one for all channels", "ex2_solution", [
        ("layer.loc.copy_(x.mean(dims))", "layer.loc.copy_(x.mean())"),
        ("x.var(dims, correction=0)", "x.var(correction=0)")]),
    ("ActNorm statistics over the batch dimension only (per channel and position)", "ex2_solution", [
        ("dims = [0, *range(2, x.dim())]", "dims = [0]")]),
    ("ActNorm initialising on every forward pass (initialized never set)", "ex2_solution", [
        ("            layer.initialized.fill_(True)\n", "")]),
    ("ActNorm log-determinant without the factor H W", "ex2_solution", [
        (_EX2_LOGDET_FORWARD, "logabsdet = -layer.log_scale.sum()")]),
    ("ActNorm log-determinant with the wrong sign", "ex2_solution", [
        (_EX2_LOGDET_FORWARD, "logabsdet = math.prod(x.shape[2:]) * layer.log_scale.sum()")]),
    ("ActNorm's inverse initialising a fresh layer on z (copied from the forward pass)", "ex2_solution", [
        (_EX2_INVERSE_SHAPE, _EX2_INVERSE_SHAPE + "    if not bool(layer.initialized):\n        with torch.no_grad():\n"
         "            dims = [0, *range(2, z.dim())]\n            layer.loc.copy_(z.mean(dims))\n"
         "            layer.log_scale.copy_(0.5 * torch.log(z.var(dims, correction=0)))\n"
         "            layer.initialized.fill_(True)\n")]),
    ("ActNorm's inverse scaling by exp(-log sigma)", "ex2_solution", [
        ("x = z * torch.exp(layer.log_scale)", "x = z * torch.exp(-layer.log_scale)")]),
    ("ActNorm's inverse returning the forward log-determinant", "ex2_solution", [
        ("logabsdet = math.prod(z.shape[2:]) * layer.log_scale.sum()", "logabsdet = -math.prod(z.shape[2:]) * layer.log_scale.sum()")]),
    ("ActNorm normalising the first batch through its statistics, with gradients through them", "ex2_solution", [
        (_EX2_INIT, """    shape = (1, -1) + (1,) * (x.dim() - 2)  # (1, C) or (1, C, 1, 1)
    if not bool(layer.initialized):  # data-dependent initialisation, on the first batch only
        mean, log_std = x.mean(dims), 0.5 * torch.log(x.var(dims, correction=0))
        layer.loc.data.copy_(mean)
        layer.log_scale.data.copy_(log_std)
        layer.initialized.fill_(True)
        z = (x - mean.reshape(shape)) * torch.exp(-log_std).reshape(shape)
    else:
        z = (x - layer.loc.reshape(shape)) * torch.exp(-layer.log_scale).reshape(shape)
""")]),
    # Exercise 3: the log-density of a flow
    ("flow log-density without the log-determinants", "ex3_solution", [
        ("total = total + logabsdet", "total = total")]),
    ("flow log-density subtracting the log-determinants", "ex3_solution", [
        ("total = total + logabsdet", "total = total - logabsdet")]),
    ("flow log-density with the last layer's log-determinant only", "ex3_solution", [
        ("total = total + logabsdet", "total = logabsdet")]),
    ("flow layers applied in reverse order", "ex3_solution", [
        ("for layer in layers:", "for layer in reversed(layers):")]),
    ("base density without its normalising constant", "ex3_solution", [
        (_EX3_BASE, "log_base = -0.5 * (z.flatten(1) ** 2).sum(1)")]),
    ("base density with log 2 pi counted once, not once per coordinate", "ex3_solution", [
        (_EX3_BASE, "log_base = -0.5 * (z.flatten(1) ** 2).sum(1) - 0.5 * LOG_2PI")]),
    ("base density without the 1/2 of the square", "ex3_solution", [
        (_EX3_BASE, "log_base = -(z.flatten(1) ** 2).sum(1) - 0.5 * d * LOG_2PI")]),
    ("base density at the input x instead of the noise z", "ex3_solution", [
        (_EX3_BASE, "log_base = -0.5 * (x.flatten(1) ** 2).sum(1) - 0.5 * d * LOG_2PI")]),
    ("base density summed over the last dimension only (images)", "ex3_solution", [
        (_EX3_BASE, "log_base = -0.5 * (z ** 2).sum(-1) - 0.5 * d * LOG_2PI")]),
    ("flow log-density averaged over the batch", "ex3_solution", [
        ("return log_base + total", "return (log_base + total).mean()")]),
    # Exercise 4: the dequantization bound in bits per dimension
    ("bound without the -D log L of the change of scale", "ex4_solution", [(_EX4_BOUND, "bound = log_p.mean(0)")]),
    ("dequantized points not scaled to [0, 1): y = x + u", "ex4_solution", [(_EX4_Y, "y = x + u")]),
    ("dequantized points scaled by L - 1", "ex4_solution", [
        (_EX4_Y, "y = (x + u) / (levels - 1)"), (_EX4_BOUND, "bound = log_p.mean(0) - d * math.log(levels - 1)")]),
    ("noise added after scaling: y = x / L + u", "ex4_solution", [(_EX4_Y, "y = x / levels + u")]),
    ("bits per example, not per dimension", "ex4_solution", [(_EX4_RETURN, "return -bound / math.log(2.0)")]),
    ("nats per dimension, not bits", "ex4_solution", [(_EX4_RETURN, "return -bound / d")]),
    ("the bound itself, not its negative", "ex4_solution", [(_EX4_RETURN, "return bound / (d * math.log(2.0))")]),
    ("D log2 L subtracted from a bound in nats (mixed units)", "ex4_solution", [
        (_EX4_BOUND, "bound = log_p.mean(0) - d * math.log2(levels)")]),
    ("the importance-weighted estimate (log-mean-exp over the samples), not the bound", "ex4_solution", [
        ("bound = log_p.mean(0)", "bound = torch.logsumexp(log_p, 0) - math.log(n_samples)")]),
    ("Gaussian noise instead of uniform", "ex4_solution", [
        ("u = torch.rand((n_samples", "u = torch.randn((n_samples")]),
    # Exercise 5: training on two moons
    ("flow trained with a learning rate of 0", "ex5_solution", [("lr=3e-3", "lr=0.0")]),
    ("flow trained for 20 steps", "ex5_solution", [("for step in range(1000):", "for step in range(20):")]),
    ("flow trained to minimise the likelihood (the loss's sign)", "ex5_solution", [
        ("loss = -flow_log_prob(", "loss = flow_log_prob(")]),
    ("flow trained on the first 256 points at every step (no sampling: one moon only)", "ex5_solution", [
        (_EX5_BATCH, "x = x_train[:256]")]),
    ("flow trained on standardised points, graded on the data", "ex5_solution", [
        (_EX5_BATCH, "x = ((x_train - x_train.mean(0)) / x_train.std(0))[torch.randint(0, x_train.shape[0], (256,), generator=g)]")]),
    ("optimizer over the first coupling's parameters only", "ex5_solution", [
        ("torch.optim.Adam(flow.parameters()", "torch.optim.Adam(flow.conditioners[0].parameters()")]),
    ("flow trained through its inverse layers (the noise-to-data direction)", "ex5_solution", [
        ("flow.layers(affine_coupling_forward)", "flow.inverse_layers(affine_coupling_inverse)")]),
]

# The first three mistakes of the training exercise run in process on every test run (tests/test_grading.py); all
# of them are autograded by `python -m autograder.integrity mutants --labs lab07`.
IN_PROCESS = {"ex5_solution": 3}
