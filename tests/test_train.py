"""gmlib.train: the generic loop finds maximum-likelihood estimates, stops early
restoring the best weights, and is bitwise reproducible on the CPU."""
import io
import math

import pytest
import torch
from torch import nn

from gmlib import nets, train
from gmlib.train import evaluate_loss


class GaussianMean(nn.Module):
    """x ~ N(mu, I): the maximum-likelihood mu is the sample mean."""

    def __init__(self, dim):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))

    def loss(self, x):
        return 0.5 * ((x - self.mu) ** 2).sum(-1).mean()


class NoisyRegression(nn.Module):
    """A network with a stochastic loss (dropout and sampled noise)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 64), nn.Dropout(0.2), nn.Tanh(), nn.Linear(64, 1))

    def loss(self, batch):
        x, y = batch
        jitter = 0.01 * torch.randn_like(y)
        return ((self.net(x) - y - jitter) ** 2).mean()


def regression_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    return x, torch.sin(2 * x) + 0.3 * torch.randn(n, 1, generator=g)


def test_finds_the_maximum_likelihood_estimate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) + torch.tensor([1.0, -2.0, 0.5])
    model = GaussianMean(3)
    hist = train(model, x, epochs=300, lr=0.05, batch_size=500, progress=False, patience=None)
    torch.testing.assert_close(model.mu.detach(), x.mean(0), atol=1e-3, rtol=0)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.epochs_run == 300 and not hist.stopped_early


def test_bitwise_reproducible_under_a_seed():
    xt, yt = regression_data(256, 0)
    xv, yv = regression_data(128, 1)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = NoisyRegression()
        hist = train(model, (xt, yt), (xv, yv), epochs=15, seed=7, progress=False)
        runs.append((model.state_dict(), hist))
    (s1, h1), (s2, h2) = runs
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    # a different seed gives a different run
    torch.manual_seed(123)
    model = NoisyRegression()
    h3 = train(model, (xt, yt), (xv, yv), epochs=15, seed=8, progress=False)
    assert h3.train_loss != h1.train_loss


def test_early_stopping_restores_the_best_weights():
    # a wide network on 30 noisy points overfits: validation loss turns up
    xt, yt = regression_data(30, 0)
    xv, yv = regression_data(200, 1)
    torch.manual_seed(0)
    model = nets.mlp(1, [256, 256], 1)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def loss(self, batch):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

    w = Wrapped()
    hist = train(w, (xt, yt), (xv, yv), epochs=2000, lr=3e-3, batch_size=30, patience=25, seed=0, progress=False)
    assert hist.stopped_early
    assert hist.epochs_run == hist.best_epoch + 1 + 25
    assert hist.best_val_loss == min(hist.val_loss)
    assert hist.val_loss[-1] > hist.best_val_loss
    # the model now holds the weights of the best epoch
    assert evaluate_loss(w, (xv, yv), seed=1) == pytest.approx(hist.best_val_loss, rel=1e-6)


def test_progress_bar_goes_to_stdout_not_stderr(capfd):
    x = torch.randn(64, 2)
    train(GaussianMean(2), x, epochs=3, progress=True)
    out, err = capfd.readouterr()
    assert "training" in out and "3/3" in out
    assert err == "", "nbgrader counts stderr output as a failed cell"


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="no loss"):
        train(nn.Linear(2, 2), x, progress=False)
    with pytest.raises(ValueError, match="same first"):
        train(GaussianMean(2), (x, torch.randn(9, 1)), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train(GaussianMean(2), torch.full((4, 2), float("nan")), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(GaussianMean(2), x, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(GaussianMean(2), torch.zeros(0, 2), progress=False)


def test_diverging_loss_is_reported():
    class Diverges(GaussianMean):
        def loss(self, x):
            return (self.mu.sum() * 0 + math.inf) * torch.ones(())

    with pytest.raises(FloatingPointError, match="epoch 0"):
        train(Diverges(2), torch.randn(8, 2), progress=False)


def test_augment_sees_every_training_batch_and_never_validation():
    """The augmented loop minimises the loss of the augmented data: training on x with an
    augment that adds 3 fits the mean of x + 3, while validation is computed on x untouched."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    seen = []

    def plus_three(batch, generator):
        assert isinstance(generator, torch.Generator)
        seen.append(batch[0].shape[0])
        return (batch[0] + 3.0,)

    model = GaussianMean(2)
    train(model, x, epochs=200, lr=0.05, batch_size=100, progress=False, patience=None, augment=plus_three)
    torch.testing.assert_close(model.mu.detach(), x.mean(0) + 3.0, atol=1e-2, rtol=0)
    assert sum(seen) == 200 * 400  # every training example of every epoch, and nothing else
    seen.clear()
    hist = train(GaussianMean(2), x, x, epochs=100, lr=0.05, batch_size=100, progress=False, patience=None,
                 augment=plus_three)
    assert sum(seen) == 100 * 400
    # at the end mu is near mean + 3: the loss on shifted data is about D / 2 = 1, on the unshifted
    # validation data about (D + D * 9) / 2 = 10
    assert hist.train_loss[-1] < 1.5 and hist.val_loss[-1] > 8
    with pytest.raises(ValueError, match="augment must be callable"):
        train(GaussianMean(2), x, epochs=1, progress=False, augment=3)


class Slope(torch.nn.Module):
    """loss = w: a constant gradient of 1, so each Adam step moves w by the learning rate (to 1e-8)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def loss(self, batch):
        return self.w + 0 * batch[0].sum()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_schedule_sets_each_epochs_step(schedule):
    x = torch.zeros(40, 1, dtype=torch.float64)  # 4 batches of 10: 4 steps per epoch
    w_after = []
    model = Slope()
    train(model, x, epochs=6, lr=0.1, batch_size=10, progress=False, patience=None, lr_schedule=schedule,
          callback=lambda epoch, m, h: w_after.append(m.w.item()))
    moves = -torch.diff(torch.tensor([0.0] + w_after, dtype=torch.float64))  # (6,) per epoch
    factors = [1.0] * 6 if schedule == "constant" else [0.5 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]
    torch.testing.assert_close(moves, 4 * 0.1 * torch.tensor(factors, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(Slope(), x, epochs=1, progress=False, lr_schedule="step")


def test_ema_keeps_the_average_of_the_weights_and_validates_it():
    """With a constant gradient each Adam step moves w by -lr (to 1e-8), so the weights and their
    exponential moving average are known in closed form; the callback sees the live weights, the model
    ends with the averaged ones (the last without validation data, the best-validated with it)."""
    x = torch.zeros(40, 1, dtype=torch.float64)  # 4 steps per epoch
    live = []
    model = Slope()
    train(model, x, epochs=5, lr=0.1, batch_size=10, progress=False, patience=None, ema=0.9,
          callback=lambda epoch, m, h: live.append(m.w.item()))
    torch.testing.assert_close(torch.tensor(live, dtype=torch.float64), -0.4 * torch.arange(1, 6, dtype=torch.float64),
                               rtol=1e-6, atol=1e-8)
    avg, w = 0.0, 0.0
    for _ in range(20):
        w -= 0.1
        avg = 0.9 * avg + 0.1 * w
    assert model.w.item() == pytest.approx(avg, rel=1e-6)
    # with validation data: the loss w is smallest at the last epoch, so the last average is the best
    model = Slope()
    hist = train(model, x, x, epochs=5, lr=0.1, batch_size=10, progress=False, patience=None, ema=0.9)
    assert hist.best_epoch == 4 and hist.val_loss[-1] == pytest.approx(avg, rel=1e-6)
    assert model.w.item() == pytest.approx(avg, rel=1e-6)
    for bad in (0.0, 1.0, 1, True, "0.9"):
        with pytest.raises(ValueError, match="ema"):
            train(Slope(), x, epochs=1, progress=False, ema=bad)


def test_progress_bar_counts_draws_on_stdout_and_ends_its_line(capsys):
    from gmlib._progress import ProgressBar, progress_bar

    bar = progress_bar(10, "EM", True)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix({"loglik": f"{-1.5 * i:.2f}"}, refresh=False)
        if i == 6:  # a loop that stops early (converged): the bar says how far it went
            break
    bar.close()
    bar.close()  # idempotent, as the loops call it after a break and the generator's end calls it again
    out = capsys.readouterr().out
    assert seen == list(range(7))
    last = out.split("\r")[-1]
    assert last.endswith("\n") and out.count("\n") == 1
    assert last.startswith("EM:  60%|") and "| 6/10 [" in last and "loglik=-9.00" in last
    assert len(last.rstrip("\n")) <= 88
    # a finished loop shows 100%; a disabled bar writes nothing
    assert list(ProgressBar(3, "x", True)) == [0, 1, 2]
    assert " 3/3 " in capsys.readouterr().out.split("\r")[-1].replace("|", " ")
    assert list(progress_bar(4, "quiet", False)) == [0, 1, 2, 3]
    assert capsys.readouterr().out == ""
