"""Plausible mistakes in Lab 2 (Gaussian mixtures, EM, missing data), each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

MUTANTS = [
    # Exercise 1: log N(x | mu_k, Sigma_k) through a Cholesky factor
    ("log density with the full log-determinant (no 1/2)", "ex1_solution", [
        ("return -0.5 * (D * LOG_2PI + mahalanobis) - half_log_det",
         "return -0.5 * (D * LOG_2PI + mahalanobis) - 2 * half_log_det")]),
    ("log density without log 2 pi", "ex1_solution", [("-0.5 * (D * LOG_2PI + mahalanobis)", "-0.5 * mahalanobis")]),
    ("log 2 pi not multiplied by D", "ex1_solution", [("D * LOG_2PI", "LOG_2PI")]),
    ("quadratic form without the 1/2", "ex1_solution", [
        ("-0.5 * (D * LOG_2PI + mahalanobis)", "-0.5 * D * LOG_2PI - mahalanobis")]),
    ("triangular solve with L transposed", "ex1_solution", [
        ("torch.linalg.solve_triangular(L, diff, upper=False)", "torch.linalg.solve_triangular(L.mT, diff, upper=True)")]),
    ("covariance used as a precision", "ex1_solution", [
        ("z = torch.linalg.solve_triangular(L, diff, upper=False)", "z = L.mT @ diff")]),
    ("log-determinant from the diagonal of Sigma, not of L", "ex1_solution", [
        ("torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)",
         "0.5 * torch.log(torch.diagonal(covariances, dim1=-2, dim2=-1)).sum(-1)")]),
    # Exercise 2: the E-step in log space
    ("logsumexp over the examples, not the components", "ex2_solution", [
        ("torch.logsumexp(log_joint, dim=1, keepdim=True)", "torch.logsumexp(log_joint, dim=0, keepdim=True)")]),
    ("e-step without the mixing weights", "ex2_solution", [
        ("log_joint = torch.log(weights) + log_gaussian", "log_joint = log_gaussian")]),
    ("mixing weights added without the log", "ex2_solution", [
        ("log_joint = torch.log(weights) + log_gaussian", "log_joint = weights + log_gaussian")]),
    ("normalised with densities instead of logsumexp", "ex2_solution", [
        ("log_px = torch.logsumexp(log_joint, dim=1, keepdim=True)",
         "log_px = torch.log(torch.exp(log_joint).sum(1, keepdim=True))")]),
    ("total instead of mean log-likelihood", "ex2_solution", [("return resp, log_px.mean()", "return resp, log_px.sum()")]),
    ("returns log-responsibilities", "ex2_solution", [
        ("resp = torch.exp(log_joint - log_px)", "resp = log_joint - log_px")]),
    ("log-likelihood of the best component only", "ex2_solution", [
        ("return resp, log_px.mean()", "return resp, log_joint.max(1).values.mean()")]),
    # Exercise 3: the M-step
    ("means divided by N instead of N_k", "ex3_solution", [("(resp.T @ x) / nk[:, None]", "(resp.T @ x) / N")]),
    ("covariances divided by N instead of N_k", "ex3_solution", [("weighted.mT @ diff / nk[:, None, None]", "weighted.mT @ diff / N")]),
    ("unbiased covariances (N_k - 1)", "ex3_solution", [
        ("weighted.mT @ diff / nk[:, None, None]", "weighted.mT @ diff / (nk[:, None, None] - 1)")]),
    ("without reg_covar", "ex3_solution", [
        ("covariances = covariances + reg_covar * torch.eye(D, dtype=x.dtype, device=x.device)", "")]),
    ("reg_covar added to every entry", "ex3_solution", [
        ("reg_covar * torch.eye(D, dtype=x.dtype, device=x.device)", "reg_covar")]),
    ("uncentred second moments", "ex3_solution", [
        ("diff = x[None, :, :] - means[:, None, :]", "diff = x[None, :, :].expand(resp.shape[1], -1, -1)")]),
    ("weights not normalised", "ex3_solution", [("weights = nk / N", "weights = nk")]),
    # Exercise 4: the EM loop
    ("one step short (no entry for the last parameters)", "ex4_solution", [
        ("for step in range(max_iter + 1):", "for step in range(max_iter):")]),
    ("stopping test reversed", "ex4_solution", [
        ("history[-1] - history[-2] < tol", "history[-1] - history[-2] > tol")]),
    ("M-step on the first responsibilities only", "ex4_solution", [
        ("history = []", "history = []\n    resp, _ = e_step(x, weights, means, covariances)"),
        ("resp, mean_loglik = e_step(x, weights, means, covariances)", "_, mean_loglik = e_step(x, weights, means, covariances)")]),
    ("total instead of mean log-likelihood in the history", "ex4_solution", [
        ("history.append(mean_loglik.item())", "history.append(mean_loglik.item() * x.shape[0])")]),
    ("parameters never updated", "ex4_solution", [
        ("weights, means, covariances = m_step(x, resp, reg_covar)", "new_parameters = m_step(x, resp, reg_covar)")]),
    ("reg_covar not passed to the M-step", "ex4_solution", [("m_step(x, resp, reg_covar)", "m_step(x, resp)")]),
    ("no entry for the starting parameters", "ex4_solution", [
        ("history.append(mean_loglik.item())", "if step > 0:\n            history.append(mean_loglik.item())"),
        ("if step == max_iter or (step > 0 and history[-1] - history[-2] < tol):",
         "if step == max_iter or (len(history) > 1 and history[-1] - history[-2] < tol):")]),
    # Exercise 5: conditioning a Gaussian
    ("mean imputation instead of the conditional mean", "ex5_solution", [
        ("conditional = mean + a @ cov", "conditional = mean.expand_as(x)")]),
    ("masking by multiplication lets NaN through", "ex5_solution", [
        ("resid = torch.where(observed, x - mean, 0.0)", "resid = (x - mean) * observed")]),
    ("sign error in the conditional mean", "ex5_solution", [("conditional = mean + a @ cov", "conditional = mean - a @ cov")]),
    ("regression without Sigma_oo^{-1}", "ex5_solution", [("conditional = mean + a @ cov", "conditional = mean + resid @ cov")]),
    ("observed entries recomputed, not copied", "ex5_solution", [
        ("x_hat = torch.where(observed, x, conditional)", "x_hat = conditional")]),
    ("log 2 pi counted for every coordinate", "ex5_solution", [("n_observed * LOG_2PI", "D * LOG_2PI")]),
    ("full covariance instead of Sigma_oo", "ex5_solution", [
        ("S = torch.where(both, cov, eye)", "S = cov.expand(x.shape[0], D, D)")]),
    ("observed count left as an integer tensor (float32 result)", "ex5_solution", [
        ("n_observed = observed.sum(-1).to(x.dtype)", "n_observed = observed.sum(-1)")]),
    # Exercise 6: imputation under the mixture
    ("prior weights instead of responsibilities", "ex6_solution", [
        ("resp = torch.softmax(log_joint, dim=1)", "resp = weights.expand(x.shape[0], -1)")]),
    ("responsibilities without the mixing weights", "ex6_solution", [
        ("log_joint = torch.log(weights) + torch.stack(log_marginals, dim=1)", "log_joint = torch.stack(log_marginals, dim=1)")]),
    ("responsibilities normalised over the examples", "ex6_solution", [
        ("torch.softmax(log_joint, dim=1)", "torch.softmax(log_joint, dim=0)")]),
    ("hard assignment to the most probable component", "ex6_solution", [
        ("resp = torch.softmax(log_joint, dim=1)",
         "resp = torch.nn.functional.one_hot(log_joint.argmax(1), weights.shape[0]).to(x.dtype)")]),
    ("responsibilities from the zero-filled vector", "ex6_solution", [
        ("log_joint = torch.log(weights) + torch.stack(log_marginals, dim=1)",
         "log_joint = torch.log(e_step(torch.where(observed, x, 0.0), weights, means, covariances)[0])")]),
    ("unnormalised responsibilities", "ex6_solution", [
        ("resp = torch.softmax(log_joint, dim=1)", "resp = torch.exp(log_joint)")]),
    ("observed entries recomputed as the weighted sum", "ex6_solution", [
        ("return torch.where(observed, x, x_hat)", "return x_hat")]),
]
