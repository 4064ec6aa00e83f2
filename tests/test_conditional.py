"""gmlib.conditional: the heteroscedastic Gaussian p(y | x) of Chapter 1."""
import torch
import torch.distributions as D

from gmlib import data, nets, train
from gmlib.conditional import ConditionalGaussian

from contracts import check_density_model


def make_model(seed=0):
    torch.manual_seed(seed)
    return ConditionalGaussian(nets.mlp(1, [64, 64], 2, activation="tanh"), x_dim=1, y_dim=1, device="cpu")


def test_log_prob_is_the_gaussian_density_of_its_outputs():
    model = make_model()
    x, y = data.heteroscedastic_1d(50, seed=1)
    mean, log_var = model(x)
    want = D.Normal(mean, torch.exp(0.5 * log_var)).log_prob(y).sum(-1)
    torch.testing.assert_close(model.log_prob(y, x), want)
    assert (log_var >= model.min_log_var).all() and (log_var <= model.max_log_var).all()


def test_contract():
    model = make_model()
    x, y = data.heteroscedastic_1d(40, seed=2)
    check_density_model(model, y, context=x)


def test_maximum_likelihood_recovers_the_noise_level():
    xt, yt = data.heteroscedastic_1d(2000, seed=0)
    xv, yv = data.heteroscedastic_1d(500, seed=1)
    model = make_model()
    train(model, (xt, yt), (xv, yv), epochs=300, lr=3e-3, batch_size=256, patience=40, progress=False)
    grid = torch.linspace(-2.5, 2.5, 101).unsqueeze(1)
    with torch.no_grad():
        mean, log_var = model(grid)
    true_mean, true_std = data.heteroscedastic_1d_truth(grid)
    std = torch.exp(0.5 * log_var)
    # the fitted standard deviation tracks the true one (it ranges from 0.05 to 0.55)
    assert (std - true_std).abs().mean() < 0.05
    assert (mean - true_mean).abs().mean() < 0.08
    # and the held-out likelihood beats the best homoscedastic fit
    resid = yv - model(xv)[0].detach()
    homo = D.Normal(0.0, resid.std()).log_prob(resid).mean()
    assert model.log_prob(yv, xv).mean() > homo + 0.2


def test_sample_shape_and_moments():
    model = make_model()
    x = torch.zeros(3, 1)
    s = model.sample(x, 20000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (20000, 3, 1)
    mean, log_var = model(x)
    torch.testing.assert_close(s.mean(0), mean.detach(), atol=4 * torch.exp(0.5 * log_var).max().item() / 141, rtol=0)
