"""Plausible mistakes in Lab 4, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

MUTANTS = [
    # Exercise 1: the free energy
    ("free energy with the sign of the energy flipped", "ex1_solution", [
        ("return -(v @ b) - nnf.softplus(hidden_input).sum(-1)", "return (v @ b) + nnf.softplus(hidden_input).sum(-1)")]),
    ("free energy without the visible bias", "ex1_solution", [
        ("return -(v @ b) - nnf.softplus(hidden_input).sum(-1)", "return -nnf.softplus(hidden_input).sum(-1)")]),
    ("free energy without the hidden bias", "ex1_solution", [("hidden_input = v @ W + c", "hidden_input = v @ W")]),
    ("free energy with log(1 + exp(x)) (overflows for large inputs)", "ex1_solution", [
        ("nnf.softplus(hidden_input)", "torch.log(1 + torch.exp(hidden_input))")]),
    ("free energy with max(0, x) in place of softplus", "ex1_solution", [
        ("nnf.softplus(hidden_input)", "torch.relu(hidden_input)")]),
    ("free energy averaging over the hidden units instead of summing", "ex1_solution", [
        ("nnf.softplus(hidden_input).sum(-1)", "nnf.softplus(hidden_input).mean(-1)")]),
    ("free energy summed over the batch instead of the hidden units", "ex1_solution", [
        ("nnf.softplus(hidden_input).sum(-1)", "nnf.softplus(hidden_input).sum(0)")]),
    ("free energy averaged over the batch (a scalar)", "ex1_solution", [
        ("return -(v @ b) - nnf.softplus(hidden_input).sum(-1)", "return (-(v @ b) - nnf.softplus(hidden_input).sum(-1)).mean()")]),
    ("free energy with W transposed", "ex1_solution", [("hidden_input = v @ W + c", "hidden_input = v @ W.T + c")]),
    # Exercise 2: the conditionals and a Gibbs sweep
    ("p(h | v) without the hidden bias", "ex2_solution", [
        ("return torch.sigmoid(v @ W + c)", "return torch.sigmoid(v @ W)")]),
    ("p(v | h) without the visible bias", "ex2_solution", [
        ("return torch.sigmoid(h @ W.T + b)", "return torch.sigmoid(h @ W.T)")]),
    ("p(h | v) with the sign of the energy flipped", "ex2_solution", [
        ("return torch.sigmoid(v @ W + c)", "return torch.sigmoid(-(v @ W + c))")]),
    ("p(v | h) with W instead of W^T", "ex2_solution", [
        ("return torch.sigmoid(h @ W.T + b)", "return torch.sigmoid(h @ W + b)")]),
    ("p(h | v) with a softmax over the hidden units", "ex2_solution", [
        ("return torch.sigmoid(v @ W + c)", "return torch.softmax(v @ W + c, dim=-1)")]),
    ("Gibbs sweep with the unit on when u > p", "ex2_solution", [
        ("h = (u_h < prob_h_given_v(v, W, c))", "h = (u_h > prob_h_given_v(v, W, c))")]),
    ("Gibbs sweep returning the probabilities of v instead of a sample", "ex2_solution", [
        ("v_new = (u_v < prob_v_given_h(h, W, b)).to(v.dtype)", "v_new = prob_v_given_h(h, W, b)")]),
    ("Gibbs sweep computing v from p(h | v) instead of the sampled h", "ex2_solution", [
        ("v_new = (u_v < prob_v_given_h(h, W, b))", "v_new = (u_v < prob_v_given_h(prob_h_given_v(v, W, c), W, b))")]),
    # Exercise 3: one CD-1 update
    ("CD-1 with the sampled h0 instead of p(h | v0) in the weight statistics", "ex3_solution", [
        ("grad_W = (v0.T @ p_h0 - v1.T @ p_h1) / B", "grad_W = (v0.T @ h0 - v1.T @ p_h1) / B")]),
    ("CD-1 with the sampled h0 in the hidden-bias statistics", "ex3_solution", [
        ("grad_c = (p_h0 - p_h1).mean(0)", "grad_c = (h0 - p_h1).mean(0)")]),
    ("CD-1 with the data and model terms swapped", "ex3_solution", [
        ("grad_W = (v0.T @ p_h0 - v1.T @ p_h1) / B", "grad_W = (v1.T @ p_h1 - v0.T @ p_h0) / B"),
        ("grad_b = (v0 - v1).mean(0)", "grad_b = (v1 - v0).mean(0)"),
        ("grad_c = (p_h0 - p_h1).mean(0)", "grad_c = (p_h1 - p_h0).mean(0)")]),
    ("CD-1 summing the weight statistics over the batch instead of averaging", "ex3_solution", [
        ("grad_W = (v0.T @ p_h0 - v1.T @ p_h1) / B", "grad_W = v0.T @ p_h0 - v1.T @ p_h1")]),
    ("CD-1 summing the bias statistics over the batch", "ex3_solution", [
        ("grad_b = (v0 - v1).mean(0)", "grad_b = (v0 - v1).sum(0)"),
        ("grad_c = (p_h0 - p_h1).mean(0)", "grad_c = (p_h0 - p_h1).sum(0)")]),
    ("CD-1 with the probabilities p(v | h0) as the reconstruction", "ex3_solution", [
        ("h0, v1 = gibbs_sweep(v0, W, b, c, u_h, u_v)", "h0, _ = gibbs_sweep(v0, W, b, c, u_h, u_v)\n    v1 = prob_v_given_h(h0, W, b)")]),
    ("CD-1 reconstructing from p(h | v0) instead of the sampled h0", "ex3_solution", [
        ("h0, v1 = gibbs_sweep(v0, W, b, c, u_h, u_v)",
         "h0 = (u_h < p_h0).to(v0.dtype)\n    v1 = (u_v < prob_v_given_h(p_h0, W, b)).to(v0.dtype)")]),
    ("CD-1 with sampled hidden states in the negative statistics", "ex3_solution", [
        ("p_h1 = prob_h_given_v(v1, W, c)", "p_h1 = (u_h < prob_h_given_v(v1, W, c)).to(v1.dtype)")]),
    ("CD-1 with the negative hidden probabilities taken from the data", "ex3_solution", [
        ("p_h1 = prob_h_given_v(v1, W, c)", "p_h1 = prob_h_given_v(v0, W, c)")]),
    ("CD-1 with the weight decay of the wrong sign", "ex3_solution", [
        ("grad_W - weight_decay * W", "grad_W + weight_decay * W")]),
    ("CD-1 with weight decay on the biases too", "ex3_solution", [
        ("b + lr * grad_b, c + lr * grad_c", "b + lr * (grad_b - weight_decay * b), c + lr * (grad_c - weight_decay * c)")]),
    ("CD-1 with the weight decay not multiplied by the learning rate", "ex3_solution", [
        ("W + lr * (grad_W - weight_decay * W)", "W + lr * grad_W - weight_decay * W")]),
    ("CD-1 updating W in place", "ex3_solution", [
        ("return W + lr * (grad_W - weight_decay * W), b + lr * grad_b, c + lr * grad_c",
         "W += lr * (grad_W - weight_decay * W)\n    return W, b + lr * grad_b, c + lr * grad_c")]),
    # Exercise 4: exact log Z
    ("log Z enumerating the larger layer", "ex4_solution", [("if H <= D:", "if H > D:")]),
    ("log Z always enumerating the visible layer", "ex4_solution", [("if H <= D:", "if False:")]),
    ("log Z always enumerating the hidden layer", "ex4_solution", [("if H <= D:", "if True:")]),
    ("log Z forgetting the hidden bias in the hidden-side sum", "ex4_solution", [
        ("scores = h @ c + nnf.softplus(h @ W.T + b).sum(-1)", "scores = nnf.softplus(h @ W.T + b).sum(-1)")]),
    ("log Z forgetting the visible bias inside the softplus", "ex4_solution", [
        ("nnf.softplus(h @ W.T + b)", "nnf.softplus(h @ W.T)")]),
    ("log Z with W instead of W^T on the hidden side", "ex4_solution", [("h @ W.T + b", "h @ W + b")]),
    ("log Z in probability space (overflows)", "ex4_solution", [
        ("return torch.logsumexp(scores, dim=0)", "return torch.log(torch.exp(scores).sum(0))")]),
    ("log Z with the largest term only (max instead of logsumexp)", "ex4_solution", [
        ("return torch.logsumexp(scores, dim=0)", "return scores.max()")]),
    ("log Z with +F(v) on the visible side", "ex4_solution", [
        ("scores = -free_energy(v, W, b, c)", "scores = free_energy(v, W, b, c)")]),
    ("log Z with log(1 + exp(x)) on the hidden side (overflows)", "ex4_solution", [
        ("nnf.softplus(h @ W.T + b)", "torch.log(1 + torch.exp(h @ W.T + b))")]),
    ("log Z as a mean over the states instead of a sum", "ex4_solution", [
        ("return torch.logsumexp(scores, dim=0)", "return torch.logsumexp(scores, dim=0) - math.log(scores.shape[0])")]),
    # Exercise 5: the exact gradient
    ("exact gradient with unnormalised weights exp(-F(v))", "ex5_solution", [
        ("torch.exp(-free_energy(states, W, b, c) - log_partition(W, b, c))", "torch.exp(-free_energy(states, W, b, c))")]),
    ("exact gradient with p(v) proportional to exp(+F(v))", "ex5_solution", [
        ("torch.exp(-free_energy(states, W, b, c) - log_partition(W, b, c))",
         "torch.softmax(free_energy(states, W, b, c), dim=0)")]),
    ("exact gradient with a uniform average over the states in the model term", "ex5_solution", [
        ("(states * p_model[:, None]).T @ p_h_model", "states.T @ p_h_model / states.shape[0]")]),
    ("exact gradient with the data term summed instead of averaged", "ex5_solution", [
        ("v.T @ p_h_data / v.shape[0]", "v.T @ p_h_data")]),
    ("exact gradient with the model term of W as a product of expectations", "ex5_solution", [
        ("(states * p_model[:, None]).T @ p_h_model", "torch.outer(p_model @ states, p_model @ p_h_model)")]),
    ("exact gradient with sigmoid(b) as the model mean of v", "ex5_solution", [
        ("grad_b = v.mean(0) - p_model @ states", "grad_b = v.mean(0) - torch.sigmoid(b)")]),
    ("exact gradient with sigmoid(c) as the model mean of p(h | v)", "ex5_solution", [
        ("grad_c = p_h_data.mean(0) - p_model @ p_h_model", "grad_c = p_h_data.mean(0) - torch.sigmoid(c)")]),
    ("exact gradient of the negative log-likelihood (descent direction)", "ex5_solution", [
        ("return grad_W, grad_b, grad_c", "return -grad_W, -grad_b, -grad_c")]),
]
