"""Chapter 6's recipes (gmlib.recipes), which the page and gmlib.bench.gan share: the toy protocol,
the objectives comparison, and the digits DCGAN presets with their quality measures."""
import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from gmlib import gan as G
from gmlib import recipes as R
from gmlib.data import digits, toy_2d, toy_2d_modes
from gmlib.metrics import class_histogram, digit_frechet, mmd2, mode_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

# a protocol small enough for tests: 4 mini-batches per epoch, 40 in all
TINY = dataclasses.replace(R.ToyProtocol(), n_train=512, batch_size=128, steps=40, hidden=(16, 16))
TINY_DIGITS = R.DigitsGANPreset(channels=4, epochs=1)


def _params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_the_gan_module_holds_the_model_family_only():
    """gmlib.gan never imports the recipes (which import it) and keeps none of their names."""
    tree = ast.parse(Path(G.__file__).read_text())
    imported = {(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.split(".")[-1] == "recipes"}, sorted(imported)
    assert not [name for name in R.__all__ if hasattr(G, name)]


# -- the toy protocol ----------------------------------------------------------------------


def test_default_protocol_has_settings_for_every_objective():
    protocol = R.ToyProtocol()
    assert set(protocol.settings) == set(G.OBJECTIVES)
    assert protocol.steps % protocol.steps_per_epoch == 0
    for objective in G.OBJECTIVES:
        cfg = protocol.config(objective)
        s = R.TOY_SETTINGS[objective]
        assert (cfg.objective, cfg.lr_d, cfg.lr_g, cfg.d_steps, tuple(cfg.betas)) == (objective, s.lr, s.lr, s.d_steps, s.betas)


@pytest.mark.parametrize(
    "change",
    [dict(n_train=500), dict(steps=45), dict(hidden=()), dict(hidden=(16, 0)), dict(latent_dim=0),
     dict(settings={"sigmoid": R.ObjectiveSettings(lr=1e-3)}), dict(settings={"hinge": 1e-3})],
)
def test_protocol_rejects_bad_settings(change):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **change)


def test_train_toy_gan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="objective"):
        R.train_toy_gan("sigmoid", protocol=TINY)
    with pytest.raises(ValueError, match="data"):
        R.train_toy_gan("hinge", data="two_moons", protocol=TINY)
    with pytest.raises(ValueError, match="snapshot"):
        R.train_toy_gan("hinge", protocol=TINY, snapshots=(6,))  # not a multiple of 4 mini-batches
    with pytest.raises(ValueError, match="snapshot"):
        R.train_toy_gan("hinge", protocol=TINY, snapshots=(44,))  # beyond the budget
    only_hinge = dataclasses.replace(TINY, settings={"hinge": R.ObjectiveSettings(lr=1e-3)})
    with pytest.raises(ValueError, match="no settings"):
        R.train_toy_gan("minimax", protocol=only_hinge)


def test_train_toy_gan_is_reproducible_under_a_seed():
    gan_a, hist_a, snaps_a = R.train_toy_gan("non_saturating", seed=3, protocol=TINY, snapshots=(0, 20, 40))
    gan_b, hist_b, snaps_b = R.train_toy_gan("non_saturating", seed=3, protocol=TINY, snapshots=(0, 20, 40))
    gan_c, _, _ = R.train_toy_gan("non_saturating", seed=4, protocol=TINY)
    assert torch.equal(_params(gan_a), _params(gan_b))
    assert hist_a.player_loss == hist_b.player_loss
    assert hist_a.epochs_run == TINY.steps // TINY.steps_per_epoch
    assert sorted(snaps_a) == [0, 20, 40]
    for step in snaps_a:
        assert torch.equal(snaps_a[step], snaps_b[step])
    assert not torch.equal(_params(gan_a), _params(gan_c))


def test_snapshots_follow_one_fixed_set_of_noise_vectors():
    gan, _, snaps = R.train_toy_gan("hinge", seed=1, protocol=TINY, snapshots=(0, 40), n_snapshot=50)
    z = gan.prior_sample(50, torch.Generator().manual_seed(1))  # the noise train_toy_gan fixed for seed 1
    with torch.no_grad():
        assert torch.allclose(snaps[40], gan.generate(z))
    assert snaps[0].shape == (50, 2) and not torch.allclose(snaps[0], snaps[40])  # training moved them


def test_a_trained_toy_gan_covers_more_modes_than_an_untrained_one():
    protocol = dataclasses.replace(R.ToyProtocol(), steps=300)
    untrained, _, _ = R.train_toy_gan("non_saturating", seed=0, protocol=dataclasses.replace(protocol, steps=10))
    trained, _, _ = R.train_toy_gan("non_saturating", seed=0, protocol=protocol)
    before, after = R.evaluate_toy_gan(untrained), R.evaluate_toy_gan(trained)
    assert before["modes_covered"] <= 1 and after["modes_covered"] >= 5
    assert after["high_quality"] > before["high_quality"]
    assert after["mmd2"] < before["mmd2"] / 2


def test_evaluate_toy_gan_equals_the_metrics_called_directly():
    gan, _, _ = R.train_toy_gan("least_squares", data="grid_25", seed=2, protocol=TINY)
    result = R.evaluate_toy_gan(gan, "grid_25", n=500, seed=7)
    samples = gan.sample(500, torch.Generator().manual_seed(7))
    centers, std = toy_2d_modes("grid_25")
    direct = mode_metrics(samples, centers, std)
    assert result["modes_covered"] == direct["modes_covered"] and result["n_modes"] == 25
    assert result["high_quality"] == pytest.approx(direct["high_quality"], abs=0)
    assert result["mmd2"] == pytest.approx(mmd2(samples, toy_2d("grid_25", 500, seed=10_007)), rel=1e-12)
    with pytest.raises(ValueError):
        R.evaluate_toy_gan(gan, "rings")


def test_compare_objectives_rows_summary_and_table():
    rows = R.compare_objectives(("minimax", "wgan_gp"), seeds=(0, 1), protocol=TINY, snapshots=(40,))
    assert [(r["objective"], r["seed"]) for r in rows] == [("minimax", 0), ("minimax", 1), ("wgan_gp", 0), ("wgan_gp", 1)]
    assert all(set(r["snapshots"]) == {40} and r["seconds"] > 0 for r in rows)
    again, _, _ = R.train_toy_gan("wgan_gp", seed=1, protocol=TINY)
    assert R.evaluate_toy_gan(again, seed=1)["mmd2"] == rows[3]["mmd2"]  # a row is that run, evaluated with its seed
    summary = R.summarize_comparison(rows)
    values = torch.tensor([rows[2]["mmd2"], rows[3]["mmd2"]], dtype=torch.float64)
    assert summary["wgan_gp"]["mmd2"][0] == pytest.approx(float(values.mean()))
    assert summary["wgan_gp"]["mmd2"][1] == pytest.approx(float(values.std()))
    assert summary["minimax"]["runs"] == 2 and summary["minimax"]["n_modes"] == 8
    table = R.comparison_table(rows)
    assert table.count("\n") == 3 and "| minimax |" in table and "| wgan gp |" in table
    one = R.summarize_comparison(rows[:1])
    assert one["minimax"]["high_quality"][1] == 0.0


# -- the digits DCGAN ------------------------------------------------------------------------


def test_presets_and_bad_preset_names():
    assert set(R.PRESETS) == {"quick", "full"}
    quick, full = R.PRESETS["quick"], R.PRESETS["full"]
    assert full.epochs > quick.epochs and full.channels > quick.channels
    assert quick.device == "cpu" and full.device is None  # full: CUDA when present
    for bad in ("fast", "", None, 3):
        with pytest.raises(ValueError, match="preset"):
            R.train_digits_gan(bad, progress=False)
        with pytest.raises(ValueError, match="preset"):
            R.digits_gan(bad)


def test_train_digits_gan_is_reproducible_and_calls_back():
    seen = []
    gan_a, hist_a = R.train_digits_gan(TINY_DIGITS, seed=5, progress=False,
                                       callback=lambda epoch, gan, history: seen.append((epoch, gan.training)))
    gan_b, _ = R.train_digits_gan(TINY_DIGITS, seed=5, progress=False)
    assert torch.equal(_params(gan_a), _params(gan_b))
    assert seen == [(0, True)] and hist_a.epochs_run == 1 and hist_a.seconds > 0
    assert gan_a.latent_dim == TINY_DIGITS.latent_dim and gan_a.config.objective == TINY_DIGITS.objective


def test_digits_gan_samples_are_images_and_leave_the_mode_alone():
    gan = R.digits_gan(TINY_DIGITS, seed=0)
    gan.train()
    x = R.digits_gan_samples(gan, 30, seed=1)
    assert x.shape == (30, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert gan.training  # restored
    assert torch.equal(x, R.digits_gan_samples(gan, 30, seed=1))
    gan.eval()
    with torch.no_grad():
        z = gan.prior_sample(30, torch.Generator().manual_seed(1))
        assert torch.allclose(x, ((gan.generate(z) + 1) / 2).clamp(0, 1))  # eval mode: running statistics
    with pytest.raises(ValueError):
        R.digits_gan_samples(gan, 0)


def test_digits_gan_quality_agrees_with_the_metrics():
    gan, _ = R.train_digits_gan(TINY_DIGITS, seed=0, progress=False)
    q = R.digits_gan_quality(gan, n=200, seed=3)
    samples = R.digits_gan_samples(gan, 200, seed=3)
    x_train, x_test = digits("train", "float"), digits("test", "float")
    assert q["frechet"] == pytest.approx(digit_frechet(samples, x_test), rel=1e-12)
    assert q["floor"] == pytest.approx(digit_frechet(x_train, x_test), rel=1e-12)
    assert torch.equal(q["class_counts"], class_histogram(samples)) and int(q["class_counts"].sum()) == 200
    assert torch.equal(q["train_class_counts"], class_histogram(x_train))
    assert q["n"] == 200
    assert q["frechet"] > 3 * q["floor"]  # one epoch of a tiny GAN is far from real images
