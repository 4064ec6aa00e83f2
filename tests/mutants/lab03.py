"""Plausible mistakes in Lab 3, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

MUTANTS = [
    # Exercise 1: the forward algorithm in log space
    ("forward with the transition matrix transposed (j -> i)", "ex1_solution", [
        ("scores = log_alpha[-1][:, :, None] + log_transition", "scores = log_alpha[-1][:, :, None] + log_transition.T")]),
    ("forward without the initial distribution", "ex1_solution", [
        ("log_alpha = [log_initial + log_emission[:, 0]]", "log_alpha = [log_emission[:, 0]]")]),
    ("forward with the emission one step late", "ex1_solution", [
        ("+ log_emission[:, t])", "+ log_emission[:, t - 1])")]),
    ("forward with a sum of logs instead of logsumexp", "ex1_solution", [
        ("torch.logsumexp(scores, dim=1)", "scores.sum(dim=1)")]),
    ("forward with max instead of logsumexp", "ex1_solution", [
        ("torch.logsumexp(scores, dim=1)", "scores.amax(dim=1)")]),
    ("forward with logsumexp over the destination state", "ex1_solution", [
        ("torch.logsumexp(scores, dim=1)", "torch.logsumexp(scores, dim=2)")]),
    ("forward in probability space (underflows on long sequences)", "ex1_solution", [
        ("torch.logsumexp(scores, dim=1)", "torch.log(torch.exp(scores).sum(dim=1))")]),
    ("log-likelihood from the first step", "ex1_solution", [
        ("torch.logsumexp(log_alpha[:, -1], dim=-1)", "torch.logsumexp(log_alpha[:, 0], dim=-1)")]),
    ("log-likelihood as a sum over time of the per-step normalisers of alpha", "ex1_solution", [
        ("torch.logsumexp(log_alpha[:, -1], dim=-1)", "torch.logsumexp(log_alpha, dim=-1).sum(-1)")]),
    # Exercise 2: Viterbi
    ("viterbi with the transition matrix transposed (j -> i)", "ex2_solution", [
        ("scores = delta[:, :, None] + log_transition", "scores = delta[:, :, None] + log_transition.T")]),
    ("viterbi without the initial distribution", "ex2_solution", [
        ("delta = log_initial + log_emission[:, 0]", "delta = log_emission[:, 0]")]),
    ("viterbi with the emission one step late", "ex2_solution", [
        ("delta = best + log_emission[:, t]", "delta = best + log_emission[:, t - 1]")]),
    ("viterbi with logsumexp instead of max", "ex2_solution", [
        ("best, psi = scores.max(dim=1)", "best, psi = torch.logsumexp(scores, dim=1), scores.argmax(dim=1)")]),
    ("viterbi maximising over the destination state", "ex2_solution", [
        ("best, psi = scores.max(dim=1)", "best, psi = scores.max(dim=2)")]),
    ("viterbi path returned in reverse time order", "ex2_solution", [
        ("torch.stack(path[::-1], dim=1)", "torch.stack(path, dim=1)")]),
    ("viterbi backtracking with the backpointers in forward order", "ex2_solution", [
        ("for psi in reversed(backpointers):", "for psi in backpointers:")]),
    ("viterbi backtracking off by one (starts from psi_{T-1})", "ex2_solution", [
        ("for psi in reversed(backpointers):", "for psi in reversed(backpointers[:-1]):")]),
    ("viterbi in probability space (underflows on long sequences)", "ex2_solution", [
        ("delta = log_initial + log_emission[:, 0]", "delta = torch.exp(log_initial + log_emission[:, 0])"),
        ("scores = delta[:, :, None] + log_transition", "scores = delta[:, :, None] * torch.exp(log_transition)"),
        ("delta = best + log_emission[:, t]", "delta = best * torch.exp(log_emission[:, t])"),
        ("return torch.stack(path[::-1], dim=1), log_prob", "return torch.stack(path[::-1], dim=1), torch.log(log_prob)")]),
    # Exercise 3: Kalman predict
    ("predict without the process noise Q", "ex3_solution", [
        ("cov_pred = A @ cov @ A.T + Q", "cov_pred = A @ cov @ A.T")]),
    ("predict with A P A instead of A P A^T", "ex3_solution", [
        ("cov_pred = A @ cov @ A.T + Q", "cov_pred = A @ cov @ A + Q")]),
    ("predict with A^T P A", "ex3_solution", [
        ("cov_pred = A @ cov @ A.T + Q", "cov_pred = A.T @ cov @ A + Q")]),
    ("predict with the noise added before the dynamics", "ex3_solution", [
        ("cov_pred = A @ cov @ A.T + Q", "cov_pred = A @ (cov + Q) @ A.T")]),
    ("predicted mean A^T m", "ex3_solution", [("mean_pred = mean @ A.T", "mean_pred = mean @ A")]),
    # Exercise 4: Kalman update
    ("gain with the observation noise R instead of S", "ex4_solution", [
        ("gain = cov @ C.T @ torch.linalg.inv(S)", "gain = cov @ C.T @ torch.linalg.inv(R)")]),
    ("gain without the predicted covariance", "ex4_solution", [
        ("gain = cov @ C.T @ torch.linalg.inv(S)", "gain = C.T @ torch.linalg.inv(S)")]),
    ("S without the observation noise", "ex4_solution", [("S = C @ cov @ C.T + R", "S = C @ cov @ C.T")]),
    ("residual with the wrong sign", "ex4_solution", [("residual = x - mean @ C.T", "residual = mean @ C.T - x")]),
    ("covariance update with the wrong sign", "ex4_solution", [
        ("new_cov = cov - gain @ S @ gain.mT", "new_cov = cov + gain @ S @ gain.mT")]),
    ("covariance not updated", "ex4_solution", [("new_cov = cov - gain @ S @ gain.mT", "new_cov = cov")]),
    ("covariance update with K R K^T instead of K S K^T", "ex4_solution", [
        ("new_cov = cov - gain @ S @ gain.mT", "new_cov = cov - gain @ R @ gain.mT")]),
    ("log-likelihood without the 1/2", "ex4_solution", [
        ("log_lik = -0.5 * (x.shape[-1] * LOG_2PI", "log_lik = -(x.shape[-1] * LOG_2PI")]),
    ("log-likelihood without log 2 pi", "ex4_solution", [
        ("(x.shape[-1] * LOG_2PI + torch.logdet(S)", "(torch.logdet(S)")]),
    ("log-likelihood with log 2 pi not multiplied by the dimension", "ex4_solution", [
        ("x.shape[-1] * LOG_2PI", "LOG_2PI")]),
    ("log-likelihood without the log-determinant", "ex4_solution", [
        ("LOG_2PI + torch.logdet(S) + mahalanobis", "LOG_2PI + mahalanobis")]),
    ("log-likelihood with the observation noise R instead of S", "ex4_solution", [
        ("torch.logdet(S) + mahalanobis", "torch.logdet(R) + mahalanobis"),
        ("torch.linalg.solve(S, residual[..., None])", "torch.linalg.solve(R, residual[..., None])")]),
    ("log-likelihood with the prior covariance's determinant, log det P", "ex4_solution", [
        ("torch.logdet(S) + mahalanobis", "torch.logdet(cov) + mahalanobis")]),
    # Exercise 5: Kalman filter
    ("filter predicts before the first observation", "ex5_solution", [("if t > 0:", "if True:")]),
    ("filter uses the previous observation", "ex5_solution", [("x[:, t], C, R)", "x[:, t - 1], C, R)")]),
    ("filter keeps the filtered covariance instead of the predicted one", "ex5_solution", [
        ("mean, cov = kalman_predict(mean, cov, A, Q)", "mean, _ = kalman_predict(mean, cov, A, Q)")]),
    ("filter predicts from the prior at every step", "ex5_solution", [
        ("mean, cov = kalman_predict(mean, cov, A, Q)", "mean, cov = kalman_predict(mu0.expand(B, -1), P0.expand(B, -1, -1), A, Q)")]),
    ("filter never uses the updated distribution", "ex5_solution", [
        ("mean, cov, log_lik = kalman_update(mean, cov, x[:, t], C, R)", "_, _, log_lik = kalman_update(mean, cov, x[:, t], C, R)")]),
    ("filter averages the increments over time", "ex5_solution", [
        ("torch.stack(covs, dim=1), log_likelihood", "torch.stack(covs, dim=1), log_likelihood / T")]),
    ("filter keeps only the last increment", "ex5_solution", [
        ("log_likelihood = log_likelihood + log_lik", "log_likelihood = log_lik")]),
]
