"""Plausible mistakes in Lab 8, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

_EX1_HIDDEN = "masks.append((degrees[:, None] >= previous[None, :]).float())  # (h, previous)"
_EX1_OUTPUT = "masks.append((inputs[:, None] > previous[None, :]).float())  # (D, h_L): strictly earlier variables only"
_EX1_DEGREES = "degrees = torch.arange(h) % (D - 1) + 1  # (h,): 1, 2, ..., D-1, 1, 2, ..."
_EX2_CONV = "return F.conv2d(h, weight * conv_mask(k, mask_type).to(weight.dtype), bias, padding=k // 2)"
_EX3_GATHER = "per_position = torch.log_softmax(logits, dim=1).gather(1, x.long().unsqueeze(1)).squeeze(1)  # (B, D)"
_EX4_PROBS = "probs = torch.softmax(net(out)[:, :, d], dim=1)  # (B, L)"
_EX4_NEW = "new = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(out.dtype)  # (B,)"
_EX5_BATCH = "x = x_train[torch.randint(0, x_train.shape[0], (64,), generator=g)]  # (64, 64)"
_EX5_LOSS = "loss = -ar_log_prob(net(x), x).mean()  # nats per digit"

MUTANTS = [
    # Exercise 1: MADE's masks
    ("hidden degrees 0..D-2 (the + 1 forgotten: units of degree 0 see nothing)", "ex1_solution", [
        (_EX1_DEGREES, "degrees = torch.arange(h) % (D - 1)")]),
    ("hidden degrees cycling through 1..D (units of degree D serve no output)", "ex1_solution", [
        (_EX1_DEGREES, "degrees = torch.arange(h) % D + 1")]),
    ("output mask with >= (each output sees its own input)", "ex1_solution", [
        (_EX1_OUTPUT, "masks.append((inputs[:, None] >= previous[None, :]).float())")]),
    ("hidden mask with > (a unit of degree k misses the input of degree k)", "ex1_solution", [
        (_EX1_HIDDEN, "masks.append((degrees[:, None] > previous[None, :]).float())")]),
    ("input degrees read from the ordering itself, not its inverse", "ex1_solution", [
        ("inputs[torch.tensor(order)] = torch.arange(1, D + 1)", "inputs[:] = torch.tensor(order) + 1")]),
    ("masks transposed, (in, out)", "ex1_solution", [
        (_EX1_HIDDEN, "masks.append((degrees[None, :] >= previous[:, None]).float())"),
        (_EX1_OUTPUT, "masks.append((inputs[None, :] > previous[:, None]).float())")]),
    ("masks as booleans, not float32", "ex1_solution", [
        (_EX1_HIDDEN, "masks.append(degrees[:, None] >= previous[None, :])"),
        (_EX1_OUTPUT, "masks.append(inputs[:, None] > previous[None, :])")]),
    ("every hidden layer compared with the input degrees", "ex1_solution", [
        ("        previous = degrees\n", "")]),
    ("random hidden degrees (the paper's choice, not the lab's)", "ex1_solution", [
        (_EX1_DEGREES, "degrees = torch.randint(1, D, (h,))")]),
    # Exercise 2: masked convolutions
    ("type A keeps the centre", "ex2_solution", [('if mask_type == "B":', 'if mask_type in ("A", "B"):')]),
    ("type B leaves out the centre", "ex2_solution", [('if mask_type == "B":', "if False:")]),
    ("the whole centre row kept", "ex2_solution", [("mask[h, :h] = 1", "mask[h, :] = 1")]),
    ("the rows below the centre instead of above", "ex2_solution", [("mask[:h] = 1  # the rows above", "mask[h + 1:] = 1")]),
    ("mask transposed (the columns left of the centre, and the pixels above it)", "ex2_solution", [
        ("    return mask\n", "    return mask.T\n")]),
    ("convolution without padding", "ex2_solution", [(_EX2_CONV, _EX2_CONV.replace("padding=k // 2", "padding=0"))]),
    ("weight masked in place", "ex2_solution", [
        (_EX2_CONV, "weight.data.mul_(conv_mask(k, mask_type).to(weight.dtype))\n"
                    "    return F.conv2d(h, weight, bias, padding=k // 2)")]),
    ("masked_conv2d always of type B", "ex2_solution", [("conv_mask(k, mask_type).to", 'conv_mask(k, "B").to')]),
    ("bias left out", "ex2_solution", [(_EX2_CONV, _EX2_CONV.replace(", bias,", ", None,"))]),
    ("mask without its gradient path: the weight detached", "ex2_solution", [
        (_EX2_CONV, _EX2_CONV.replace("weight * conv_mask", "weight.detach() * conv_mask"))]),
    # Exercise 3: the log-likelihood
    ("log of softmax (underflows to -inf for large logits)", "ex3_solution", [
        ("torch.log_softmax(logits, dim=1)", "torch.log(torch.softmax(logits, dim=1))")]),
    ("softmax over the positions, not the values", "ex3_solution", [
        ("torch.log_softmax(logits, dim=1)", "torch.log_softmax(logits, dim=2)")]),
    ("hidden ignored", "ex3_solution", [
        ("        per_position = per_position * hidden.to(per_position.dtype)\n", "        pass\n")]),
    ("hidden read the other way round (True = observed)", "ex3_solution", [
        ("per_position * hidden.to(per_position.dtype)", "per_position * (~hidden).to(per_position.dtype)")]),
    ("mean over the positions, not the sum", "ex3_solution", [("return per_position.sum(1)", "return per_position.mean(1)")]),
    ("logits detached (no gradient to train through)", "ex3_solution", [
        ("torch.log_softmax(logits, dim=1)", "torch.log_softmax(logits.detach(), dim=1)")]),
    ("summed over the batch too", "ex3_solution", [("return per_position.sum(1)", "return per_position.sum()")]),
    ("always float32", "ex3_solution", [("return per_position.sum(1)", "return per_position.sum(1).float()")]),
    ("probability of the value x - 1 (an off-by-one index)", "ex3_solution", [
        (_EX3_GATHER, "per_position = torch.log_softmax(logits, dim=1).gather(1, (x.long() - 1).clamp(min=0).unsqueeze(1)).squeeze(1)")]),
    # Exercise 4: the sampler
    ("the most probable value instead of a draw", "ex4_solution", [(_EX4_NEW, "new = probs.argmax(1).to(out.dtype)")]),
    ("every position's logits from the input x, not from the values drawn so far", "ex4_solution", [
        (_EX4_PROBS, "probs = torch.softmax(net(x)[:, :, d], dim=1)")]),
    ("draws without the generator", "ex4_solution", [(_EX4_NEW, _EX4_NEW.replace(", generator=generator", ""))]),
    ("observed values overwritten", "ex4_solution", [
        ("out[:, d] = torch.where(hidden[:, d], new, out[:, d])", "out[:, d] = new")]),
    ("a pass of the network at every position, hidden or not", "ex4_solution", [
        ("            if not bool(hidden[:, d].any()):\n                continue  # nothing to draw here: no pass of the network\n", "")]),
    ("x changed in place", "ex4_solution", [("out = x.clone()", "out = x")]),
    ("softmax over the batch, not the values", "ex4_solution", [(_EX4_PROBS, "probs = torch.softmax(net(out)[:, :, d], dim=0)")]),
    ("logits halved (a temperature of 2)", "ex4_solution", [(_EX4_PROBS, "probs = torch.softmax(net(out)[:, :, d] / 2, dim=1)")]),
    ("positions drawn in reverse order", "ex4_solution", [
        ("for d in range(x.shape[1]):", "for d in reversed(range(x.shape[1])):")]),
    # Exercise 5: training the completer
    ("network trained for 20 steps", "ex5_solution", [("for step in range(350):", "for step in range(20):")]),
    ("network trained with a learning rate of 0", "ex5_solution", [("lr=4e-3", "lr=0.0")]),
    ("network trained to minimise the likelihood (the loss's sign)", "ex5_solution", [
        (_EX5_LOSS, "loss = ar_log_prob(net(x), x).mean()")]),
    ("network trained on the top half only (the hidden mask the wrong way round)", "ex5_solution", [
        (_EX5_LOSS, "loss = -ar_log_prob(net(x), x, TOP.expand(x.shape[0], D)).mean()")]),
    ("a fresh, untrained network returned", "ex5_solution", [
        ("return net.eval()", "return make_pixelcnn(n_layers=3, channels=32, first_kernel=5).eval()")]),
    ("optimizer over the first layer's parameters only", "ex5_solution", [
        ("torch.optim.Adam(net.parameters()", "torch.optim.Adam(net.input.parameters()")]),
    ("network trained on the first 64 digits at every step (no sampling)", "ex5_solution", [(_EX5_BATCH, "x = x_train[:64]")]),
]

# The first three mistakes of the training exercise run in process on every test run (tests/test_grading.py); all
# of them are autograded by `python -m autograder.integrity mutants --labs lab08`.
IN_PROCESS = {"ex5_solution": 3}
