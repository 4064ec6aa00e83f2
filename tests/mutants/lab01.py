"""Plausible mistakes in Lab 1, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

MUTANTS = [
    ("entropy sign error", "ex1_solution", [("return -plogp.sum(-1)", "return plogp.sum(-1)")]),
    ("entropy without 0 log 0 = 0", "ex1_solution", [
        ("torch.where(positive, probs * torch.log(torch.where(positive, probs, 1.0)), 0.0)", "probs * torch.log(probs)")]),
    ("entropy summed over the batch axis", "ex1_solution", [("plogp.sum(-1)", "plogp.sum(0)")]),
    ("entropy averaged over categories", "ex1_solution", [("plogp.sum(-1)", "plogp.mean(-1)")]),
    ("entropy in bits", "ex1_solution", [("torch.log(torch.where", "torch.log2(torch.where")]),
    ("kl without the 1/2", "ex2_solution", [("return 0.5 * (", "return (")]),
    ("kl sign error in the log-variance ratio", "ex2_solution", [
        ("log_var_p - log_var_q + var_ratio", "log_var_q - log_var_p + var_ratio")]),
    ("kl with log-variance taken as log-std", "ex2_solution", [
        ("torch.exp(log_var_q - log_var_p)", "torch.exp(2 * (log_var_q - log_var_p))"),
        ("torch.exp(-log_var_p)", "torch.exp(-2 * log_var_p)"),
        ("log_var_p - log_var_q + var_ratio", "2 * (log_var_p - log_var_q) + var_ratio")]),
    ("kl with log-variance taken as std", "ex2_solution", [
        ("torch.exp(log_var_q - log_var_p)", "log_var_q**2 / log_var_p**2"),
        ("torch.exp(-log_var_p)", "1 / log_var_p**2"),
        ("log_var_p - log_var_q + var_ratio", "torch.log(log_var_p**2 / log_var_q**2) + var_ratio")]),
    ("kl summed over the batch axis", "ex2_solution", [(".sum(-1)", ".sum(0)")]),
    ("kl averaged over dimensions", "ex2_solution", [(".sum(-1)", ".mean(-1)")]),
    ("kl(p || q) instead of kl(q || p)", "ex2_solution", [
        ("def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):", "def gaussian_kl(mean_p, log_var_p, mean_q, log_var_q):")]),
    ("mc kl returns the std, not the standard error", "ex3_solution", [("w.std(0) / math.sqrt(n)", "w.std(0)")]),
    ("mc kl divides the std by n", "ex3_solution", [("w.std(0) / math.sqrt(n)", "w.std(0) / n")]),
    ("mc kl samples from p", "ex3_solution", [
        ("z = mean_q + torch.exp(0.5 * log_var_q) * eps", "z = mean_p + torch.exp(0.5 * log_var_p) * eps")]),
    ("mc kl sign error", "ex3_solution", [
        ("gaussian_log_prob(z, mean_q, log_var_q) - gaussian_log_prob(z, mean_p, log_var_p)",
         "gaussian_log_prob(z, mean_p, log_var_p) - gaussian_log_prob(z, mean_q, log_var_q)")]),
    ("log density without the 1/2", "ex3_solution", [("return -0.5 * (LOG_2PI", "return -(LOG_2PI")]),
    ("mc kl averaged over the wrong axis", "ex3_solution", [("w.mean(0), w.std(0)", "w.mean(-1), w.std(-1)")]),
    ("mc kl samples with log-variance as std", "ex3_solution", [
        ("torch.exp(0.5 * log_var_q) * eps", "log_var_q * eps")]),
    ("sampler with log-variance as std", "ex4_solution", [("torch.exp(0.5 * log_var) * eps", "log_var * eps")]),
    ("sampler with log-variance as log-std", "ex4_solution", [("torch.exp(0.5 * log_var)", "torch.exp(log_var)")]),
    ("sampler without gradients", "ex4_solution", [
        ("return mean + torch.exp(0.5 * log_var) * eps", "return (mean + torch.exp(0.5 * log_var) * eps).detach()")]),
    ("sampler with gradients to the mean only", "ex4_solution", [
        ("torch.exp(0.5 * log_var) * eps", "torch.exp(0.5 * log_var.detach()) * eps")]),
    ("sampler reuses one noise draw", "ex4_solution", [
        ("torch.randn((n, *mean.shape), dtype=mean.dtype)", "torch.randn(mean.shape, dtype=mean.dtype).expand(n, *mean.shape)")]),
    ("sampler puts the sample axis last", "ex4_solution", [
        ("eps = torch.randn((n, *mean.shape), dtype=mean.dtype)  # (n, ..., D)\n    return mean + torch.exp(0.5 * log_var) * eps",
         "eps = torch.randn((*mean.shape, n), dtype=mean.dtype)\n    return mean[..., None] + torch.exp(0.5 * log_var)[..., None] * eps")]),
    ("elbo sign error", "ex5_solution", [
        ("model.log_joint(x, z) - gaussian_log_prob(z, q_mean, q_log_var)",
         "gaussian_log_prob(z, q_mean, q_log_var) - model.log_joint(x, z)")]),
    ("elbo without the entropy term", "ex5_solution", [
        ("model.log_joint(x, z) - gaussian_log_prob(z, q_mean, q_log_var)", "model.log_joint(x, z)")]),
    ("elbo returns the std, not the standard error", "ex5_solution", [("w.std(0) / math.sqrt(n)", "w.std(0)")]),
    ("elbo samples without gradients", "ex5_solution", [
        ("z = reparameterize(q_mean, q_log_var, n)", "z = reparameterize(q_mean, q_log_var, n).detach()")]),
    ("elbo averaged over the batch", "ex5_solution", [
        ("return w.mean(0), w.std(0) / math.sqrt(n)", "return w.mean(), w.std() / math.sqrt(w.numel())")]),
    ("elbo with q's log density taken at the prior", "ex5_solution", [
        ("gaussian_log_prob(z, q_mean, q_log_var)", "gaussian_log_prob(z, torch.zeros_like(q_mean), torch.zeros_like(q_log_var))")]),
]

# Solutions that call the reference implementations the lab forbids ("Do not call gmlib.probability"),
# through a module attribute, a default argument and a name imported before: a hostile case of
# autograder.integrity; they must earn nothing. (Exercise 5's reference is a method,
# ConjugateGaussian.elbo_mc: the lab's forbidden list names it with a dotted name.)
REFERENCE_CALLS = {
    "ex1_solution": (
        "import gmlib.probability as _gp\n\n"
        "def categorical_entropy(probs):\n"
        "    return _gp.categorical_entropy(probs)\n"
    ),
    "ex2_solution": (
        "from gmlib.probability import gaussian_kl as _kl\n\n"
        "def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p, _ref=_kl):\n"
        "    return _ref(mean_q, log_var_q, mean_p, log_var_p)\n"
    ),
    "ex3_solution": (
        "import functools\n"
        "import gmlib.probability as _gp\n\n"
        "gaussian_log_prob = functools.partial(_gp.gaussian_log_prob)\n\n"
        "def mc_kl(mean_q, log_var_q, mean_p, log_var_p, n):\n"
        "    return _gp.mc_kl_gaussian(mean_q, log_var_q, mean_p, log_var_p, n)\n"
    ),
    "ex4_solution": (
        "import gmlib.probability as _gp\n\n"
        "def reparameterize(mean, log_var, n):\n"
        "    return _gp.reparameterize(mean, log_var, n)\n"
    ),
    "ex5_solution": (
        "def elbo_mc(model, x, q_mean, q_log_var, n):\n"
        "    return model.elbo_mc(x, q_mean, q_log_var, n)\n"
    ),
}
