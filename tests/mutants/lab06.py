"""Plausible mistakes in Lab 6, each of which must lose points.

Each entry is ``(name, solution cell grade_id, [(text in the solution, replacement), ...])``.
``tests/test_grading.py`` applies the replacements to the solution cell, runs the
exercise's test cells in process, and fails if every test cell still passes.
"""

_EX1_REAL = "real_term = nnf.softplus(-real_logits).mean()"
_EX1_FAKE = "fake_term = nnf.softplus(fake_logits).mean()"
_EX2_MINIMAX = "return -nnf.softplus(fake_logits).mean()"
_EX2_NS = "return nnf.softplus(-fake_logits).mean()"
_EX3_MIX = "(weight * real + (1 - weight) * fake)"
_EX3_NORMS = "norms = grad.norm(dim=1)"
_EX3_RETURN = "return ((norms - 1.0) ** 2).mean()"
_EX4_D_STEP = """    fake = G(z_d).detach()  # (B, d)
    d_loss = discriminator_loss(D(x_real), D(fake))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
"""
_EX4_G_STEP = """    g_loss = non_saturating_generator_loss(D(G(z_g)))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
"""
_EX4_RETURN = "return d_loss.item(), g_loss.item()"
_EX5_G = "G = make_generator(latent_dim, (hidden, hidden))"

MUTANTS = [
    # Exercise 1: the discriminator loss
    ("discriminator loss as log(sigmoid) (infinite for confident logits)", "ex1_solution", [
        (_EX1_REAL, "real_term = -torch.log(torch.sigmoid(real_logits)).mean()"),
        (_EX1_FAKE, "fake_term = -torch.log(1 - torch.sigmoid(fake_logits)).mean()")]),
    ("discriminator loss as log(1 + exp(.)) (overflows)", "ex1_solution", [
        (_EX1_REAL, "real_term = torch.log(1 + torch.exp(-real_logits)).mean()"),
        (_EX1_FAKE, "fake_term = torch.log(1 + torch.exp(fake_logits)).mean()")]),
    ("discriminator loss with the labels swapped (generated examples labelled real)", "ex1_solution", [
        (_EX1_REAL, "real_term = nnf.softplus(real_logits).mean()"),
        (_EX1_FAKE, "fake_term = nnf.softplus(-fake_logits).mean()")]),
    ("discriminator loss with the real label only (both terms softplus(-l))", "ex1_solution", [
        (_EX1_FAKE, "fake_term = nnf.softplus(-fake_logits).mean()")]),
    ("discriminator loss summed over the batches instead of averaged", "ex1_solution", [
        (_EX1_REAL, "real_term = nnf.softplus(-real_logits).sum()"),
        (_EX1_FAKE, "fake_term = nnf.softplus(fake_logits).sum()")]),
    ("discriminator loss averaged once over the concatenated batch", "ex1_solution", [
        ("return real_term + fake_term", "return torch.cat([nnf.softplus(-real_logits), nnf.softplus(fake_logits)]).mean()")]),
    ("discriminator loss dividing the generated term by the real batch size", "ex1_solution", [
        (_EX1_FAKE, "fake_term = nnf.softplus(fake_logits).sum() / real_logits.shape[0]")]),
    ("discriminator loss returning the value V (the sign of the game, maximised)", "ex1_solution", [
        ("return real_term + fake_term", "return -(real_term + fake_term)")]),
    ("discriminator loss on probabilities instead of log-probabilities", "ex1_solution", [
        (_EX1_REAL, "real_term = (1 - torch.sigmoid(real_logits)).mean()"),
        (_EX1_FAKE, "fake_term = torch.sigmoid(fake_logits).mean()")]),
    ("discriminator loss with relu in place of softplus (a hinge without margin)", "ex1_solution", [
        (_EX1_REAL, "real_term = nnf.relu(-real_logits).mean()"),
        (_EX1_FAKE, "fake_term = nnf.relu(fake_logits).mean()")]),
    ("discriminator loss by binary_cross_entropy_with_logits (not allowed)", "ex1_solution", [
        ("return real_term + fake_term",
         "return (nnf.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))\n"
         "            + nnf.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))")]),
    # Exercise 2: the generator losses
    ("minimax generator loss with the wrong sign (-log(1 - D))", "ex2_solution", [
        (_EX2_MINIMAX, "return nnf.softplus(fake_logits).mean()")]),
    ("minimax generator loss as log(1 - sigmoid) (infinite for confident logits)", "ex2_solution", [
        (_EX2_MINIMAX, "return torch.log(1 - torch.sigmoid(fake_logits)).mean()")]),
    ("non-saturating loss as -log(sigmoid) (infinite for rejected samples)", "ex2_solution", [
        (_EX2_NS, "return -torch.log(torch.sigmoid(fake_logits)).mean()")]),
    ("non-saturating and minimax losses swapped", "ex2_solution", [
        (_EX2_MINIMAX, "return nnf.softplus(-fake_logits).mean()  # swapped"),
        (_EX2_NS, "return -nnf.softplus(fake_logits).mean()")]),
    ("non-saturating loss as -log(1 - D) (the minimax loss with its sign flipped)", "ex2_solution", [
        (_EX2_NS, "return nnf.softplus(fake_logits).mean()")]),
    ("non-saturating loss with the wrong sign (log D, maximised by D = 0)", "ex2_solution", [
        (_EX2_NS, "return -nnf.softplus(-fake_logits).mean()")]),
    ("generator losses summed over the batch instead of averaged", "ex2_solution", [
        (_EX2_MINIMAX, "return -nnf.softplus(fake_logits).sum()"),
        (_EX2_NS, "return nnf.softplus(-fake_logits).sum()")]),
    ("non-saturating loss as log(1 + exp(-l)) (overflows)", "ex2_solution", [
        (_EX2_NS, "return torch.log(1 + torch.exp(-fake_logits)).mean()")]),
    # Exercise 3: the gradient penalty
    ("gradient penalty with the squared norm in place of the norm", "ex3_solution", [
        (_EX3_NORMS, "norms = (grad**2).sum(dim=1)")]),
    ("gradient penalty with one norm over the whole batch", "ex3_solution", [(_EX3_NORMS, "norms = grad.norm()")]),
    ("gradient penalty with norms over the batch dimension (dim=0)", "ex3_solution", [(_EX3_NORMS, "norms = grad.norm(dim=0)")]),
    ("gradient penalty without create_graph (not differentiable in the critic's parameters)", "ex3_solution", [
        (", create_graph=True)", ")")]),
    ("gradient penalty with the gradient detached", "ex3_solution", [(_EX3_NORMS, "norms = grad.detach().norm(dim=1)")]),
    ("gradient penalty with eps weighting the generated example", "ex3_solution", [
        (_EX3_MIX, "(weight * fake + (1 - weight) * real)")]),
    ("gradient penalty at the real points only", "ex3_solution", [(_EX3_MIX, "(real)")]),
    ("gradient penalty one-sided (only norms above 1)", "ex3_solution", [
        (_EX3_RETURN, "return (torch.relu(norms - 1.0) ** 2).mean()")]),
    ("gradient penalty as (mean norm - 1)^2", "ex3_solution", [(_EX3_RETURN, "return (norms.mean() - 1.0) ** 2")]),
    ("gradient penalty summed over the batch", "ex3_solution", [(_EX3_RETURN, "return ((norms - 1.0) ** 2).sum()")]),
    ("gradient penalty with |norm - 1| instead of its square", "ex3_solution", [(_EX3_RETURN, "return (norms - 1.0).abs().mean()")]),
    ("gradient penalty differentiating the mean of the critic's outputs (gradients divided by B)", "ex3_solution", [
        ("torch.autograd.grad(scores.sum(), x_hat", "torch.autograd.grad(scores.mean(), x_hat")]),
    # Exercise 4: one training step
    ("training step without detaching the generated batch in the discriminator step", "ex4_solution", [
        ("fake = G(z_d).detach()", "fake = G(z_d)")]),
    ("training step without zeroing D's gradients (the generator step's gradients leak into D's)", "ex4_solution", [
        ("    opt_d.zero_grad()\n", "")]),
    ("training step without zeroing G's gradients (they accumulate over steps)", "ex4_solution", [
        ("    opt_g.zero_grad()\n", "")]),
    ("training step zeroing G's gradients twice and D's never (copy-paste)", "ex4_solution", [
        ("opt_d.zero_grad()", "opt_g.zero_grad()")]),
    ("training step updating D during the generator step too", "ex4_solution", [
        ("    opt_g.step()\n", "    opt_g.step()\n    opt_d.step()\n")]),
    ("training step reusing z_d for the generator step", "ex4_solution", [("D(G(z_g))", "D(G(z_d))")]),
    ("training step with the minimax generator loss", "ex4_solution", [
        ("non_saturating_generator_loss(D(G(z_g)))", "minimax_generator_loss(D(G(z_g)))")]),
    ("training step with the real and generated batches swapped in the discriminator loss", "ex4_solution", [
        ("discriminator_loss(D(x_real), D(fake))", "discriminator_loss(D(fake), D(x_real))")]),
    ("training step updating the generator before the discriminator", "ex4_solution", [
        (_EX4_D_STEP + "    # the generator step, through the updated discriminator (its .grad is written but never applied)\n" + _EX4_G_STEP,
         _EX4_G_STEP + _EX4_D_STEP)]),
    ("training step returning tensors instead of floats", "ex4_solution", [(_EX4_RETURN, "return d_loss, g_loss")]),
    ("training step returning the losses after the updates", "ex4_solution", [
        (_EX4_RETURN, "return discriminator_loss(D(x_real), D(fake)).item(), non_saturating_generator_loss(D(G(z_g))).item()")]),
    # Exercise 5: training on the ring
    ("GAN trained with a learning rate of 0", "ex5_solution", [("lr=3e-3", "lr=0.0")]),
    ("GAN trained with a learning rate 100 times too small", "ex5_solution", [("lr=3e-3", "lr=3e-5")]),
    ("GAN trained for 20 steps", "ex5_solution", [("batch_size, n_steps = 2, 128, 128, 800", "batch_size, n_steps = 2, 128, 128, 20")]),
    ("generator ending in tanh (samples confined to [-1, 1]^2, the modes lie at radius 2; no longer make_generator's network)", "ex5_solution", [
        (_EX5_G, "G = nn.Sequential(make_generator(latent_dim, (hidden, hidden)), nn.Tanh())")]),
    ("linear generator (no hidden layer: a Gaussian cannot make eight modes)", "ex5_solution", [
        (_EX5_G, "G = make_generator(latent_dim, ())")]),
    ("generator's optimizer over the discriminator's parameters (copy-paste)", "ex5_solution", [
        ("opt_g = torch.optim.Adam(G.parameters()", "opt_g = torch.optim.Adam(D.parameters()")]),
    ("GAN trained on uniform noise z, graded with the normal noise of the task", "ex5_solution", [
        ("torch.randn(batch_size, latent_dim, generator=g)", "torch.rand(batch_size, latent_dim, generator=g)")]),
    ("discriminator ending in a sigmoid (probabilities read as logits)", "ex5_solution", [
        ("nn.Flatten(0))  # (B, 2)", "nn.Flatten(0), nn.Sigmoid())  # (B, 2)")]),
]
