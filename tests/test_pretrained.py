"""gmlib.pretrained, Chapter 5's, 7's and 8's recipes (gmlib.recipes.VAEDigitsRecipe,
FlowDigitsRecipe, ARDigitsRecipe) and the convolutional nets of gmlib.nets: shapes, saving and loading, and the
shipped weights against the figures recorded when they were trained."""
import math

import pytest
import torch

from gmlib.data import digits
from gmlib.nets import ConvDecoder, ConvEncoder
from gmlib.pretrained import WEIGHTS_DIR, load_flow_digits, load_vae_digits, save_flow_digits, save_vae_digits
from gmlib.recipes import FlowDigitsRecipe, VAEDigitsRecipe, flow_digits, vae_digits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_conv_nets_shapes_and_pixel_layout():
    enc = ConvEncoder(8, 10, channels=4, hidden=8)
    assert enc(torch.rand(3, 64)).shape == (3, 10)
    dec = ConvDecoder(8, 5, 17, channels=4, hidden=8)
    assert dec(torch.randn(3, 5)).shape == (3, 64, 17)
    assert ConvDecoder(8, 5, 1, channels=4, hidden=8)(torch.randn(3, 5)).shape == (3, 64)
    # the per-pixel bias of pixel (row r, column c) lands on flat position 8 r + c (row-major, like x.view(-1, 8, 8))
    with torch.no_grad():
        for p in dec.parameters():
            p.zero_()
        dec.bias[3, 2, 5] = 1.0  # parameter 3 of pixel (2, 5)
    out = dec(torch.randn(2, 5))  # (2, 64, 17)
    assert out[:, 8 * 2 + 5, 3].eq(1).all() and out.abs().sum() == 2
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvEncoder(6, 10)
    with pytest.raises(ValueError, match="even"):
        ConvDecoder(7, 5)


def test_encoder_scales_its_input():
    torch.manual_seed(0)
    enc = ConvEncoder(8, 6, channels=4, hidden=8, in_scale=1 / 16)
    x = torch.rand(4, 64)
    enc_unit = ConvEncoder(8, 6, channels=4, hidden=8)
    enc_unit.load_state_dict(enc.state_dict())
    torch.testing.assert_close(enc(16 * x), enc_unit(x))


def test_save_and_load_round_trip(tmp_path):
    recipe = VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8)
    model = vae_digits(recipe).eval()
    x = digits("val", "int")[:20]
    path = save_vae_digits(model, recipe, {"test_nelbo": 1.5}, tmp_path / "m.pt")
    loaded, info = load_vae_digits(path, device="cpu")
    assert not loaded.training and info["test_nelbo"] == 1.5 and info["recipe"]["latent_dim"] == 3
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(model.elbo(x, generator=g1), loaded.elbo(x, generator=g2))


def test_missing_and_foreign_files_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m gmlib.bench.vae --save"):
        load_vae_digits(tmp_path / "none.pt")
    torch.save({"recipe": {"latent_dim": 3}, "state_dict": {"w": torch.zeros(2)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="regenerate"):
        load_vae_digits(tmp_path / "bad.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_vae_digits(tmp_path / "truncated.pt")


@pytest.mark.skipif(not (WEIGHTS_DIR / "vae_digits.pt").is_file(), reason="no shipped weights")
def test_shipped_weights_reproduce_their_recorded_test_elbo():
    model, info = load_vae_digits(device="cpu")
    x = digits("test", "int")  # (447, 64)
    with torch.no_grad():
        nelbo = -model.elbo(x, n_samples=20, generator=torch.Generator().manual_seed(0)).double()  # (447,)
    se = float(nelbo.std() / math.sqrt(x.shape[0]))
    # the recorded figure averages 100 draws per image with another seed; the Monte Carlo noise of a mean
    # over 447 x 20 draws is a few hundredths of a nat, so 0.5 nats only fails for other weights or another model
    assert abs(float(nelbo.mean()) - info["test_nelbo"]) < 0.5, (float(nelbo.mean()), info["test_nelbo"], se)
    assert info["test_nll"] <= info["test_nelbo"]  # IWAE-k is a tighter bound than the ELBO


# -- Chapter 7's flow ------------------------------------------------------------------------


def test_flow_save_and_load_round_trip(tmp_path):
    recipe = FlowDigitsRecipe(n_layers=1, hidden=4, dequantizer_layers=1, dequantizer_hidden=4)
    model = flow_digits(recipe)
    x = digits("val", "int")[:20]
    model.loss(x)  # the ActNorm layers initialise on a first batch
    model.eval()
    path = save_flow_digits(model, recipe, {"test_nll": 2.5}, tmp_path / "f.pt")
    loaded, info = load_flow_digits(path, device="cpu")
    assert not loaded.training and info["test_nll"] == 2.5 and info["recipe"]["hidden"] == 4
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(model.discrete_log_prob_bound(x, generator=g1),
                                   loaded.discrete_log_prob_bound(x, generator=g2))
    with pytest.raises(FileNotFoundError, match="python -m gmlib.bench.flows --save"):
        load_flow_digits(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="does not hold a FlowDigitsRecipe"):
        load_flow_digits(save_vae_digits(vae_digits(VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8)),
                                         VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8), {}, tmp_path / "v.pt"))


def test_flow_recipe_is_a_flow_on_rows_of_integer_pixels():
    model = flow_digits(FlowDigitsRecipe(n_layers=1, hidden=4, dequantizer_layers=0))
    assert model.event_shape == (64,) and type(model.dequantizer).__name__ == "UniformDequantizer"
    x = digits("train", "int")[:5]
    with torch.no_grad():
        assert model.sample(3).shape == (3, 64) and model.discrete_log_prob_bound(x).shape == (5,)
        y = (x + 0.5) / 17
        torch.testing.assert_close(model.decode(model.encode(y)), y, atol=1e-4, rtol=1e-4)


def test_shipped_flow_reproduces_its_recorded_test_bound():
    assert (WEIGHTS_DIR / "flow_digits.pt").is_file(), "gmlib/weights/flow_digits.pt is missing: python -m gmlib.bench.flows --save"
    model, info = load_flow_digits(device="cpu")
    x = digits("test", "int")  # (447, 64)
    with torch.no_grad():
        nll = -model.discrete_log_prob_bound(x, n_samples=2, generator=torch.Generator().manual_seed(0)).double()
    se = float(nll.std() / math.sqrt(x.shape[0]))
    # the recorded figure averages 16 draws per image with another seed; the noise of a mean over
    # 447 x 2 draws is well under 0.3 nats, so 0.5 nats only fails for other weights or another model
    assert abs(float(nll.mean()) - info["test_nll"]) < 0.5, (float(nll.mean()), info["test_nll"], se)
    assert info["test_iw"] <= info["test_nll"] <= info["test_uniform"]  # the estimate and the two bounds in order


def test_flow_presets_build_and_the_mnist_one_fits_28x28_images_at_256_levels():
    from dataclasses import replace

    from gmlib.recipes import FLOW_PRESETS

    assert set(FLOW_PRESETS) == {"quick", "full", "mnist"} and FLOW_PRESETS["quick"] == FlowDigitsRecipe()
    small = replace(FLOW_PRESETS["mnist"], n_layers=1, hidden=4, dequantizer_hidden=4)
    model = flow_digits(small)
    x = torch.randint(0, 256, (2, 784), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        bound = model.discrete_log_prob_bound(x)  # (2,)
        assert bound.shape == (2,) and bool(torch.isfinite(bound).all())
        assert model.sample(2).shape == (2, 784) and float(model.sample(2).max()) <= 255
    with pytest.raises(ValueError, match="integers in 0..255"):
        model.discrete_log_prob_bound(x + 0.5)


# -- Chapter 8: several autoregressive models in one file, in half precision ---------------------


def _small_ar(kind, **kw):
    from gmlib.recipes import ARDigitsRecipe

    return ARDigitsRecipe(kind=kind, width=8, n_layers=1, **kw)


def test_ar_save_and_load_round_trip_in_half_precision(tmp_path):
    from gmlib.pretrained import half_precision_state, load_ar_digits, save_ar_digits
    from gmlib.recipes import ar_digits

    recipes = {"main": _small_ar("scans", scans=("rows", "cols-up")), "made": _small_ar("made", scans=("cols",))}
    models = {name: ar_digits(r) for name, r in recipes.items()}
    for m in models.values():  # weights that half precision rounds
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) / 3)
    path = save_ar_digits({name: (models[name], r, {"test_nll": 1.5}) for name, r in recipes.items()},
                          tmp_path / "ar.pt")
    loaded = load_ar_digits(path, device="cpu")
    assert list(loaded) == ["main", "made"]  # the order they were saved in
    x = digits("val", "int")[:30]
    for name, (model, info) in loaded.items():
        assert not model.training and info["test_nll"] == 1.5 and info["recipe"]["width"] == 8
        assert all(p.dtype == torch.float32 for p in model.parameters())
        rounded = models[name]
        rounded.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in half_precision_state(rounded).items()})
        rounded.eval()
        with torch.no_grad():  # the loaded model is the saved one, rounded to float16: equal, bit for bit
            assert torch.equal(model.log_prob(x), rounded.log_prob(x))
    assert loaded["made"][0].order.tolist() == [i % 8 * 8 + i // 8 for i in range(64)]  # the "cols" scan
    blob = torch.load(path, weights_only=True)
    stored = [v for entry in blob["models"].values() for v in entry["state_dict"].values()]
    assert all(v.dtype in (torch.float16, torch.long) for v in stored)  # floats in half precision
    with pytest.raises(FileNotFoundError, match="python -m gmlib.bench.autoregressive --save"):
        load_ar_digits(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read as weights"):
        load_ar_digits(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not hold Chapter 8's models"):
        load_ar_digits(save_vae_digits(vae_digits(VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8)),
                                       VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8), {}, tmp_path / "v.pt"))


def test_ar_recipes_build_every_kind_and_the_presets():
    from dataclasses import replace

    from gmlib import autoregressive as ar
    from gmlib.recipes import AR_BASELINES, AR_PRESETS, ARDigitsRecipe, ar_digits

    kinds = {"scans": ar.ScanMixture, "made": ar.MADEModel, "pixelcnn": ar.PixelCNN, "gated": ar.GatedPixelCNN,
             "rowlstm": ar.RowLSTM, "transformer": ar.CausalTransformer}
    x = digits("train", "int")[:4]
    for kind, cls in kinds.items():
        model = ar_digits(_small_ar(kind, scans=("rows-up", "cols")))
        assert type(model) is cls
        if kind != "scans":
            assert model.order.tolist() == ar.scan_order(8, "rows-up")
        with torch.no_grad():
            assert model.log_prob(x).shape == (4,)
    assert AR_PRESETS["quick"] == ARDigitsRecipe() and set(AR_PRESETS) == {"quick", "full", "mnist"}
    assert sorted(AR_PRESETS["quick"].scans) == sorted(ar.SCANS)
    assert {r.kind for r in AR_BASELINES.values()} == {"made", "pixelcnn", "gated", "rowlstm", "transformer"}
    small = replace(AR_PRESETS["mnist"], width=4, n_layers=1)
    model = ar_digits(small)
    xm = torch.randint(0, 256, (2, 784), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        assert model.log_prob(xm).shape == (2,)
    with pytest.raises(ValueError, match="kind must be one of"):
        ar_digits(_small_ar("wavenet"))


def test_shipped_autoregressive_models_reproduce_their_recorded_test_nll():
    from gmlib.pretrained import load_ar_digits

    assert (WEIGHTS_DIR / "ar_digits.pt").is_file(), \
        "gmlib/weights/ar_digits.pt is missing: python -m gmlib.bench.autoregressive --save"
    models = load_ar_digits(device="cpu")
    x = digits("test", "int")
    for name, (model, info) in models.items():
        with torch.no_grad():
            nll = -model.log_prob(x).double().mean().item()
        # exact likelihoods of the saved (half-precision) weights: only float32 rounding differs between
        # CPUs, far below 0.01 nats per image
        assert abs(nll - info["test_nll"]) < 0.01, (name, nll, info["test_nll"])


# -- Chapter 9: diffusion models, half-precision weights, full-precision schedules -----------------


def test_diffusion_save_and_load_keep_the_schedule_and_round_only_the_weights(tmp_path):
    from gmlib.pretrained import half_precision_parameters, load_diffusion_digits, save_diffusion_digits
    from gmlib.recipes import DiffusionDigitsRecipe, diffusion_digits

    recipes = {"diffusion": DiffusionDigitsRecipe(channels=8, timesteps=50),
               "flow matching": DiffusionDigitsRecipe(kind="flow_matching", channels=8),
               "conditional": DiffusionDigitsRecipe(channels=8, timesteps=50, n_classes=10)}
    models = {name: diffusion_digits(r) for name, r in recipes.items()}
    for m in models.values():
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) / 3)
    path = save_diffusion_digits({n: (models[n], r, {"test_nll": 2.5}) for n, r in recipes.items()},
                                 tmp_path / "d.pt")
    loaded = load_diffusion_digits(path, device="cpu")
    assert list(loaded) == list(recipes)
    x = digits("val", "int")[:20]
    for name, (model, info) in loaded.items():
        assert not model.training and info["test_nll"] == 2.5 and info["recipe"]["channels"] == 8
        rounded = models[name]
        rounded.model.load_state_dict({k: v.float() if v.dtype == torch.float16 else v
                                       for k, v in half_precision_parameters(rounded.model).items()})
        rounded.eval()
        torch.manual_seed(0)
        a = model.loss(x) if name != "conditional" else model.loss(x, torch.arange(20) % 10)
        torch.manual_seed(0)
        b = rounded.loss(x) if name != "conditional" else rounded.loss(x, torch.arange(20) % 10)
        assert torch.equal(a, b)
    d = loaded["diffusion"][0]
    assert d.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(d.alphas_cumprod, models["diffusion"].alphas_cumprod, rtol=0, atol=0)
    assert torch.equal(d.model.freqs, models["diffusion"].model.freqs)  # Fourier features not rounded
    blob = torch.load(path, weights_only=True)
    params = {k for k, _ in models["diffusion"].model.named_parameters()}
    stored = blob["models"]["diffusion"]["state_dict"]
    assert all(stored[k].dtype == torch.float16 for k in params) and stored["freqs"].dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="python -m gmlib.bench.diffusion --save"):
        load_diffusion_digits(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="does not hold Chapter 9's models"):
        load_diffusion_digits(save_vae_digits(vae_digits(VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8)),
                                              VAEDigitsRecipe(latent_dim=3, channels=4, hidden=8), {},
                                              tmp_path / "v.pt"))


def test_shipped_diffusion_models_reproduce_their_recorded_figures():
    from gmlib.pretrained import load_diffusion_digits

    assert (WEIGHTS_DIR / "diffusion_digits.pt").is_file(), \
        "gmlib/weights/diffusion_digits.pt is missing: python -m gmlib.bench.diffusion --save"
    models = load_diffusion_digits(device="cpu")
    model, info = models["diffusion"]
    x = digits("test", "int")
    with torch.no_grad():
        draws = torch.stack([model.nll_bound(x, t_samples=1, generator=torch.Generator().manual_seed(100 + i))
                             for i in range(3)]).mean(0)
    se = float(draws.std() / math.sqrt(len(draws)))
    # both figures are unbiased estimates of one mean over the same images; their difference is noise
    # from the drawn steps alone (the images are shared): 5 times the larger standard error is generous
    assert abs(float(draws.mean()) - info["test_nll"]) < 5 * max(se, info["test_nll_se"]), \
        (float(draws.mean()), info["test_nll"])
    assert set(models) == {"diffusion", "flow matching", "conditional"}
