"""Plausible mistakes in Lab 5, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

MUTANTS = [
    # Exercise 1: the reparameterized sampler
    ("sampler scaling the noise by the variance exp(log_var) instead of the standard deviation", "ex1_solution", [
        ("std = torch.exp(0.5 * log_var)", "std = torch.exp(log_var)")]),
    ("sampler scaling the noise by log_var / 2 (the exp forgotten)", "ex1_solution", [
        ("std = torch.exp(0.5 * log_var)", "std = 0.5 * log_var")]),
    ("sampler with exp(-log_var / 2), the inverse standard deviation", "ex1_solution", [
        ("std = torch.exp(0.5 * log_var)", "std = torch.exp(-0.5 * log_var)")]),
    ("sampler with sqrt(log_var), the log-variance read as a variance", "ex1_solution", [
        ("std = torch.exp(0.5 * log_var)", "std = torch.sqrt(log_var)")]),
    ("sampler with the variance halved, exp(log_var) / 2", "ex1_solution", [
        ("std = torch.exp(0.5 * log_var)", "std = 0.5 * torch.exp(log_var)")]),
    ("sampler detaching the mean (no gradient to mu)", "ex1_solution", [
        ("return mu + std * eps", "return mu.detach() + std * eps")]),
    ("sampler detaching the standard deviation (no gradient to log_var)", "ex1_solution", [
        ("return mu + std * eps", "return mu + std.detach() * eps")]),
    ("sampler computed under torch.no_grad()", "ex1_solution", [
        ("return mu + std * eps", "with torch.no_grad():\n        return mu + std * eps")]),
    ("sample_latent with uniform noise (torch.rand)", "ex1_solution", [
        ("eps = torch.randn((n_samples", "eps = torch.rand((n_samples")]),
    ("sample_latent ignoring the generator", "ex1_solution", [("generator=generator, dtype", "dtype")]),
    ("sample_latent with one noise vector shared by the whole batch", "ex1_solution", [
        ("torch.randn((n_samples, *mu.shape)", "torch.randn((n_samples, 1, mu.shape[-1])")]),
    ("sample_latent drawing float32 noise whatever the dtype of mu", "ex1_solution", [
        ("generator=generator, dtype=mu.dtype,", "generator=generator,")]),
    # Exercise 2: the KL divergence to the prior
    ("KL without the factor 1/2", "ex2_solution", [
        ("return 0.5 * (torch.exp(log_var) + mu**2 - 1.0 - log_var)", "return torch.exp(log_var) + mu**2 - 1.0 - log_var")]),
    ("KL with the standard deviation in place of the variance", "ex2_solution", [
        ("torch.exp(log_var) + mu**2", "torch.exp(0.5 * log_var) + mu**2")]),
    ("KL without the -1", "ex2_solution", [("mu**2 - 1.0 - log_var", "mu**2 - log_var")]),
    ("KL with +log_var", "ex2_solution", [("mu**2 - 1.0 - log_var", "mu**2 - 1.0 + log_var")]),
    ("KL with mu instead of mu^2", "ex2_solution", [("torch.exp(log_var) + mu**2", "torch.exp(log_var) + mu")]),
    ("KL with the opposite sign (the ELBO's -KL)", "ex2_solution", [
        ("return 0.5 * (torch.exp(log_var)", "return -0.5 * (torch.exp(log_var)")]),
    ("KL in the other direction, KL(N(0, I) || q)", "ex2_solution", [
        ("return 0.5 * (torch.exp(log_var) + mu**2 - 1.0 - log_var)",
         "return 0.5 * ((1.0 + mu**2) * torch.exp(-log_var) - 1.0 + log_var)")]),
    ("KL averaged over the latent dimensions", "ex2_solution", [
        ("return kl_per_dimension(mu, log_var).sum(-1)", "return kl_per_dimension(mu, log_var).mean(-1)")]),
    ("KL summed over the batch too (a scalar)", "ex2_solution", [
        ("return kl_per_dimension(mu, log_var).sum(-1)", "return kl_per_dimension(mu, log_var).sum()")]),
    ("KL through torch.distributions (not allowed)", "ex2_solution", [
        ("return kl_per_dimension(mu, log_var).sum(-1)",
         "q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))\n"
         "    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))\n"
         "    return torch.distributions.kl_divergence(q, p).sum(-1)")]),
    # Exercise 3: the ELBO and the loss
    ("Bernoulli log-likelihood with probabilities instead of log-probabilities", "ex3_solution", [
        ("return (x * logits - nnf.softplus(logits)).sum(-1)",
         "p = torch.sigmoid(logits)\n    return (x * p + (1 - x) * (1 - p)).sum(-1)")]),
    ("Bernoulli log-likelihood as log(sigmoid) (infinite for large logits)", "ex3_solution", [
        ("return (x * logits - nnf.softplus(logits)).sum(-1)",
         "p = torch.sigmoid(logits)\n    return (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)")]),
    ("Bernoulli log-likelihood with softplus(-logits)", "ex3_solution", [
        ("x * logits - nnf.softplus(logits)", "x * logits - nnf.softplus(-logits)")]),
    ("Bernoulli log-likelihood averaged over the pixels", "ex3_solution", [
        ("return (x * logits - nnf.softplus(logits)).sum(-1)", "return (x * logits - nnf.softplus(logits)).mean(-1)")]),
    ("Bernoulli log-likelihood by binary_cross_entropy_with_logits with its default mean reduction", "ex3_solution", [
        ("return (x * logits - nnf.softplus(logits)).sum(-1)",
         "return -nnf.binary_cross_entropy_with_logits(logits, x.expand_as(logits))")]),
    ("ELBO adding the KL instead of subtracting it", "ex3_solution", [
        ("return reconstruction - gaussian_kl(mu, log_var)", "return reconstruction + gaussian_kl(mu, log_var)")]),
    ("ELBO summing the reconstruction term over the draws", "ex3_solution", [
        ("log_likelihood(x, decoder(z)).mean(0)", "log_likelihood(x, decoder(z)).sum(0)")]),
    ("ELBO decoding the mean instead of the draws", "ex3_solution", [
        ("log_likelihood(x, decoder(z)).mean(0)", "log_likelihood(x, decoder(mu))")]),
    ("ELBO with the KL averaged over the batch", "ex3_solution", [
        ("return reconstruction - gaussian_kl(mu, log_var)", "return reconstruction - gaussian_kl(mu, log_var).mean()")]),
    ("ELBO with the draws detached from the encoder", "ex3_solution", [
        ("z = reparameterize(mu, log_var, eps)", "z = reparameterize(mu, log_var, eps).detach()")]),
    ("loss summed over the batch instead of averaged", "ex3_solution", [
        ("return -elbo(x, encoder, decoder, eps, log_likelihood).mean()",
         "return -elbo(x, encoder, decoder, eps, log_likelihood).sum()")]),
    ("loss equal to the ELBO (maximising the negative bound)", "ex3_solution", [
        ("return -elbo(x, encoder, decoder, eps, log_likelihood).mean()",
         "return elbo(x, encoder, decoder, eps, log_likelihood).mean()")]),
    ("ELBO and loss ignoring the log_likelihood argument (always Bernoulli)", "ex3_solution", [
        ("return -elbo(x, encoder, decoder, eps, log_likelihood).mean()",
         "return -elbo(x, encoder, decoder, eps).mean()"),
        ("reconstruction = log_likelihood(x, decoder(z))", "reconstruction = bernoulli_log_likelihood(x, decoder(z))")]),
    # Exercise 4: the importance-weighted bound
    ("IWAE without the -log k", "ex4_solution", [
        ("return torch.logsumexp(log_w, dim=0) - math.log(k)", "return torch.logsumexp(log_w, dim=0)")]),
    ("IWAE as the mean of the log weights (the ELBO)", "ex4_solution", [
        ("return torch.logsumexp(log_w, dim=0) - math.log(k)", "return log_w.mean(0)")]),
    ("IWAE as the log of the mean weight in probability space (underflows)", "ex4_solution", [
        ("return torch.logsumexp(log_w, dim=0) - math.log(k)", "return torch.log(torch.exp(log_w).mean(0))")]),
    ("IWAE with the largest weight only (max instead of logsumexp)", "ex4_solution", [
        ("return torch.logsumexp(log_w, dim=0) - math.log(k)", "return log_w.max(0).values - math.log(k)")]),
    ("IWAE with logsumexp over the batch", "ex4_solution", [
        ("return torch.logsumexp(log_w, dim=0) - math.log(k)", "return torch.logsumexp(log_w, dim=-1) - math.log(k)")]),
    ("IWAE dividing by the batch size instead of k", "ex4_solution", [("k = log_joint.shape[0]", "k = log_joint.shape[-1]")]),
    ("IWAE log weights with +log q", "ex4_solution", [("log_w = log_joint - log_q", "log_w = log_joint + log_q")]),
    ("log_normal without log 2 pi", "ex4_solution", [("-0.5 * (LOG_2PI + log_var", "-0.5 * (log_var")]),
    ("log_normal dividing by the standard deviation instead of the variance", "ex4_solution", [
        ("(z - mu) ** 2 * torch.exp(-log_var)", "(z - mu) ** 2 * torch.exp(-0.5 * log_var)")]),
    ("log_normal with log sigma in place of log sigma^2", "ex4_solution", [
        ("-0.5 * (LOG_2PI + log_var +", "-0.5 * (LOG_2PI + 0.5 * log_var +")]),
    ("log_normal without the 1/2", "ex4_solution", [
        ("return -0.5 * (LOG_2PI + log_var", "return -(LOG_2PI + log_var")]),
    ("IWAE without the prior log p(z)", "ex4_solution", [
        ("log_joint = log_likelihood(x, decoder(z)) + log_normal(z, zeros, zeros)", "log_joint = log_likelihood(x, decoder(z))")]),
    ("IWAE with the encoder density for the prior", "ex4_solution", [
        ("log_normal(z, zeros, zeros)", "log_normal(z, mu, log_var)")]),
    ("IWAE evaluating q at its mean instead of at the draws", "ex4_solution", [
        ("log_q = log_normal(z, mu, log_var)", "log_q = log_normal(mu, mu, log_var).expand_as(log_joint)")]),
    # Exercise 5: training
    ("training with a learning rate of 0", "ex5_solution", [("lr=2e-3", "lr=0.0")]),
    ("training with a learning rate 100 times too small", "ex5_solution", [("lr=2e-3", "lr=2e-5")]),
    ("training for 2 epochs", "ex5_solution", [("for epoch in range(30):", "for epoch in range(2):")]),
    ("training on the wrong sign of the loss (minimising the ELBO)", "ex5_solution", [
        ("loss.backward()", "(-loss).backward()")]),
    ("training without optimizer.zero_grad() (gradients accumulate)", "ex5_solution", [
        ("optimizer.zero_grad()\n            loss.backward()", "loss.backward()")]),
    ("training without noise (eps = 0, a deterministic autoencoder)", "ex5_solution", [
        ("eps = torch.randn((1, x.shape[0], L), generator=g, dtype=x.dtype)", "eps = torch.zeros((1, x.shape[0], L), dtype=x.dtype)")]),
    ("decoder followed by a sigmoid (probabilities read as logits; no longer make_vae's decoder)", "ex5_solution", [
        ("encoder, decoder = make_vae(hidden=256, latent=L)",
         "encoder, decoder = make_vae(hidden=256, latent=L)\n    decoder = nn.Sequential(decoder, nn.Sigmoid())")]),
    ("training on the reconstruction term only (no KL)", "ex5_solution", [
        ("loss = vae_loss(x, encoder, decoder, eps)",
         "loss = -bernoulli_log_likelihood(x, decoder(reparameterize(*encoder(x), eps))).mean()")]),
]
