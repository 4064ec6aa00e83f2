"""gmlib.autoregressive: exact normalisation, the autoregressive property by autograd, sampling and
completion against exact enumeration, the KV cache against the full pass, the contract, input checks.

Tiny models in float64 (tolerances 1e-10 unless stated); goodness of fit by chi-square with fixed
seeds and threshold p > 1e-3.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

import gmlib.autoregressive as A
from gmlib.data import digits
from contracts import check_density_model

f64 = torch.float64
SCRAMBLED9 = [4, 0, 7, 2, 8, 5, 1, 6, 3]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_config() -> A.TransformerConfig:
    return A.TransformerConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32)


def build(name: str, side: int, levels: int = 2, *, scrambled: bool = False, seed: int = 0):
    """A small model of ``side * side`` pixels with random (PyTorch default) weights, float64.

    ``scrambled`` gives the models that take an ordering a non-raster one (D = 9 only)."""
    torch.manual_seed(seed)
    D = side * side
    order = SCRAMBLED9 if scrambled and D == 9 else None
    if name == "made":
        m = A.MADEModel(D, levels, (32, 32), order=order)
    elif name == "pixelcnn":
        m = A.PixelCNN(side, levels, channels=8, n_layers=2, first_kernel=5)
    elif name == "gated":
        m = A.GatedPixelCNN(side, levels, channels=8, n_layers=2, first_kernel=5)
    elif name == "transformer":
        m = A.CausalTransformer(D, levels, small_config(), order=order)
    elif name == "lstm":
        m = A.SequenceLSTM(D, levels, embed_dim=8, hidden=16, order=order)
    else:
        raise AssertionError(name)
    return m.to(f64)


MODELS = ["made", "pixelcnn", "gated", "transformer", "lstm"]


def all_inputs(D: int, levels: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(levels), repeat=D)), dtype=f64)  # (L^D, D)


# -- the density is a normalised distribution ------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("side,levels,scrambled", [(3, 2, True), (2, 3, False)])
def test_log_prob_sums_to_one_over_every_input(name, side, levels, scrambled):
    model = build(name, side, levels, scrambled=scrambled)
    xs = all_inputs(side * side, levels)  # 512 binary images of 3x3, or 81 ternary 2x2
    lp = model.log_prob(xs)
    assert lp.dtype == f64 and lp.shape == (len(xs),)
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-10
    # and the per-pixel conditionals it sums are not uniform (the weights are really random)
    assert lp.std() > 1e-3


def test_made_zero_init_is_uniform():
    model = A.MADEModel(5, 3, (8,), zero_init=True).to(f64)
    lp = model.log_prob(all_inputs(5, 3)[:7])
    torch.testing.assert_close(lp, torch.full((7,), -5 * math.log(3), dtype=f64))


# -- the autoregressive property, by autograd -------------------------------------------------


def input_gradients(model, x: torch.Tensor) -> torch.Tensor:
    """``G[d, j]`` = sum over the batch and the features of |d logits_d / d input features_j|, ``(D, D)``."""
    e = model._embed(model._check_x(x)).detach().requires_grad_(True)  # (B, D, C)
    logits = model._logits_from_embedding(e)  # (B, L, D)
    D = model.features
    G = torch.zeros(D, D, dtype=f64)
    for d in range(D):
        (g,) = torch.autograd.grad(logits[:, :, d].sum(), e, retain_graph=True)
        G[d] = g.abs().sum(dim=(0, 2))
    return G


def earlier(model) -> torch.Tensor:
    """``E[d, j]`` True when pixel ``j`` comes before pixel ``d`` in the model's ordering."""
    rank = model.rank
    return rank[None, :] < rank[:, None]


@pytest.mark.parametrize("name", ["made", "transformer", "lstm"])
def test_logits_depend_on_exactly_the_earlier_pixels(name):
    model = build(name, 3, 3, scrambled=True)
    assert model.order.tolist() == SCRAMBLED9
    x = torch.randint(0, 3, (16, 9), generator=gen(1)).to(f64)
    G = input_gradients(model, x)
    E = earlier(model)
    assert (G[~E] == 0).all(), "a logit depends on its own pixel or a later one"
    assert (G[E] > 0).all(), "a logit ignores an earlier pixel"


def test_pixelcnn_is_autoregressive_but_has_a_blind_spot():
    torch.manual_seed(0)
    side = 5
    model = A.PixelCNN(side, 2, channels=8, n_layers=4, first_kernel=3).to(f64)
    x = torch.randint(0, 2, (16, side * side), generator=gen(2)).to(f64)
    G = input_gradients(model, x)
    E = earlier(model)
    assert (G[~E] == 0).all()
    # raster order: a masked 3x3 stack reaches, r rows up, columns up to j + r only
    idx = lambda i, j: i * side + j  # noqa: E731
    assert G[idx(2, 0), idx(1, 2)] == 0 and G[idx(4, 0), idx(1, 4)] == 0  # blind spot (earlier pixels unseen)
    assert G[idx(2, 0), idx(1, 1)] > 0 and G[idx(2, 0), idx(0, 2)] > 0
    # exactly the predicted receptive field: at this depth (5 layers on 5x5) an earlier pixel r rows up
    # and c columns right is seen iff it is in the same row (r = 0) or c <= r
    for d, j in itertools.product(range(side * side), repeat=2):
        if E[d, j]:
            (i1, j1), (i2, j2) = divmod(d, side), divmod(j, side)
            r, c = i1 - i2, j2 - j1
            assert bool(G[d, j] > 0) == (r == 0 or c <= r), ((i1, j1), (i2, j2))


def test_gated_pixelcnn_sees_every_earlier_pixel():
    torch.manual_seed(0)
    side = 5
    model = A.GatedPixelCNN(side, 2, channels=8, n_layers=4, first_kernel=5).to(f64)
    x = torch.randint(0, 2, (16, side * side), generator=gen(3)).to(f64)
    G = input_gradients(model, x)
    E = earlier(model)
    assert (G[~E] == 0).all(), "the gated PixelCNN sees its own pixel or a later one"
    assert (G[E] > 0).all(), "the gated PixelCNN has a blind spot"


def test_masked_conv_masks():
    a = A.MaskedConv2d(1, 1, 3, "A").mask
    b = A.MaskedConv2d(1, 1, 3, "B").mask
    torch.testing.assert_close(a, torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(b, torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]))


# -- sampling and completion match the exact distribution ------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_sample_frequencies_match_log_prob(name):
    model = build(name, 2, 2, seed=1)  # D = 4 binary: 16 cells
    xs = all_inputs(4, 2)
    p = model.log_prob(xs).exp()
    n = 20000
    s = model.sample(n, generator=gen(4))
    assert s.shape == (n, 4) and s.dtype == f64
    codes = (s.long() * torch.tensor([8, 4, 2, 1])).sum(1)
    counts = torch.bincount(codes, minlength=16).double()
    assert chisquare(counts.numpy(), (n * p).detach().numpy()).pvalue > 1e-3


def test_temperature_zero_is_greedy():
    model = build("transformer", 2, 3, seed=2)
    s = model.sample(3, temperature=0)
    assert (s == s[0]).all()
    x = s[:1].long()
    logits = model.logits(s[:1])  # the greedy path takes every conditional's argmax
    torch.testing.assert_close(logits.argmax(1), x)


@pytest.mark.parametrize("name", MODELS)
def test_complete_and_conditional_log_prob_are_exact(name):
    model = build(name, 3, 2, scrambled=True, seed=3)
    order = model.order.tolist()
    x = torch.randint(0, 2, (3, 9), generator=gen(5)).to(f64)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for b, k in enumerate((5, 3, 0)):  # rows observe the first 5, 3, 0 pixels of the ordering
        mask[b, order[:k]] = True
    out = model.complete(x, mask, n_samples=4, generator=gen(6))
    assert out.shape == (4, 3, 9) and out.dtype == x.dtype
    assert (out[:, mask] == x[mask]).all(), "complete changed an observed pixel"
    # log p(x_h | x_o) = log p(x) - log p(x_o), log p(x_o) by enumerating the hidden pixels
    cond = model.conditional_log_prob(x, mask)
    for b in range(3):
        hidden = (~mask[b]).nonzero().squeeze(1)
        fills = all_inputs(len(hidden), 2)
        xb = x[b].repeat(len(fills), 1)
        xb[:, hidden] = fills
        log_obs = torch.logsumexp(model.log_prob(xb), 0)
        want = model.log_prob(x[b:b + 1])[0] - log_obs
        assert abs(cond[b] - want) < 1e-10
    torch.testing.assert_close(model.conditional_log_prob(x, torch.zeros_like(mask)), model.log_prob(x))
    assert (model.conditional_log_prob(x, torch.ones_like(mask)) == 0).all()


@pytest.mark.parametrize("name", ["made", "pixelcnn", "transformer"])
def test_completion_frequencies_match_the_exact_conditional(name):
    model = build(name, 2, 2, seed=4)  # raster order; observe the top row, draw the bottom row
    x = torch.tensor([[1.0, 0, 0, 0]], dtype=f64)
    mask = torch.tensor([[True, True, False, False]])
    fills = all_inputs(2, 2)  # (4, 2)
    xs = x.repeat(4, 1)
    xs[:, 2:] = fills
    p = model.conditional_log_prob(xs, mask.repeat(4, 1)).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=f64))
    n = 8000
    out = model.complete(x, mask, n_samples=n, generator=gen(7))[:, 0]  # (n, 4)
    codes = (out[:, 2:].long() * torch.tensor([2, 1])).sum(1)
    counts = torch.bincount(codes, minlength=4).double()
    assert chisquare(counts.numpy(), (n * p).detach().numpy()).pvalue > 1e-3


def test_complete_refuses_a_mask_that_is_not_a_prefix_of_the_ordering():
    model = build("pixelcnn", 3, 2)
    x = torch.zeros(2, 9, dtype=f64)
    bottom = torch.zeros(2, 9, dtype=torch.bool)
    bottom[:, 6:] = True  # the bottom row observed: not before the hidden pixels in raster order
    for fn in (lambda: model.complete(x, bottom), lambda: model.conditional_log_prob(x, bottom)):
        with pytest.raises(ValueError, match="observed pixel comes before every hidden one|exact only"):
            fn()
    scrambled = build("made", 3, 2, scrambled=True)
    top = torch.zeros(2, 9, dtype=torch.bool)
    top[:, :3] = True  # a prefix of raster order but not of the scrambled one
    with pytest.raises(ValueError, match="exact only"):
        scrambled.complete(x, top)


# -- caches: the step-by-step pass equals the full one ----------------------------------------


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_cached_logits_equal_the_full_pass(name):
    model = build(name, 3, 3, scrambled=True, seed=5)
    x = torch.randint(0, 3, (6, 9), generator=gen(8)).to(f64)
    torch.testing.assert_close(model.cached_logits(x), model.logits(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_cached_sampling_equals_uncached_sampling(name):
    model = build(name, 3, 3, seed=6)
    with torch.no_grad():
        x = torch.zeros(200, 9, dtype=torch.long)
        hidden = torch.ones(200, 9, dtype=torch.bool)
        uncached = A.AutoregressiveModel._fill(model, x, hidden, gen(9), 1.0)  # full pass per pixel
        cached, logits = model._run_cached(x, hidden, gen(9), 1.0)  # one position per pixel, prefix cached
        assert torch.equal(model._fill(x, hidden, gen(9), 1.0), cached)  # what sample() runs
    assert torch.equal(cached, uncached)
    # the conditionals sampling drew from are the full pass's at the sampled images
    torch.testing.assert_close(logits, model.logits(cached), rtol=0, atol=1e-12)


def test_transformer_float32_cache_at_float32_tolerance():
    torch.manual_seed(7)
    model = A.CausalTransformer(9, 3, small_config())
    x = torch.randint(0, 3, (6, 9), generator=gen(10)).float()
    torch.testing.assert_close(model.cached_logits(x), model.logits(x), rtol=1e-5, atol=1e-5)


# -- the contract and the input checks -------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_density_contract_on_digits(name):
    x = digits("train", view="int")[:8]  # (8, 64), 17 levels
    torch.manual_seed(0)
    model = {
        "made": lambda: A.MADEModel(64, 17, (64,)),
        "pixelcnn": lambda: A.PixelCNN(8, 17, channels=8, n_layers=1),
        "gated": lambda: A.GatedPixelCNN(8, 17, channels=8, n_layers=2),
        "transformer": lambda: A.CausalTransformer(64, 17, small_config()),
        "lstm": lambda: A.SequenceLSTM(64, 17, embed_dim=8, hidden=16),
    }[name]()
    check_density_model(model, x, sample_n=2)
    assert model.sample(2, generator=gen(0)).dtype == torch.float32
    loss = model.loss(x)
    loss.backward()  # trains with gmlib.train: the loss has gradients
    assert all(p.grad is not None for p in model.parameters())


def test_integer_tensors_are_accepted():
    model = build("made", 2, 3)
    x = torch.randint(0, 3, (4, 4), generator=gen(11))
    torch.testing.assert_close(model.log_prob(x), model.log_prob(x.double()))


@pytest.mark.parametrize("name", MODELS)
def test_bad_inputs_raise_value_error(name):
    model = build(name, 2, 3)
    ok = torch.zeros(2, 4, dtype=f64)
    mask = torch.ones(2, 4, dtype=torch.bool)
    cases = [
        (torch.full((2, 4), 0.5, dtype=f64), "non-integer"),
        (torch.full((2, 4), 3.0, dtype=f64), "out of range"),
        (torch.full((2, 4), -1.0, dtype=f64), "out of range"),
        (torch.zeros(2, 5, dtype=f64), r"shape \(B, D=4\)"),
        (torch.zeros(4, dtype=f64), r"shape \(B, D=4\)"),
        (torch.full((2, 4), math.nan, dtype=f64), "NaN"),
        (torch.zeros(2, 4, dtype=torch.bool), "dtype"),
        ([[0, 1, 2, 0]], "torch.Tensor"),
    ]
    for bad, message in cases:
        for fn in (model.log_prob, model.loss, model.logits, lambda v: model.complete(v, mask)):
            with pytest.raises(ValueError, match=message):
                fn(bad)
    with pytest.raises(ValueError, match="mask must have the shape"):
        model.complete(ok, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must have the shape"):
        model.conditional_log_prob(ok, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool"):
        model.complete(ok, torch.ones(2, 4))
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="n_samples must be"):
        model.complete(ok, mask, n_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)


def test_constructor_checks():
    with pytest.raises(ValueError, match="order must be a permutation"):
        A.MADEModel(4, order=[0, 1, 1, 2])
    with pytest.raises(ValueError, match="levels"):
        A.CausalTransformer(4, 1)
    with pytest.raises(ValueError, match="multiple"):
        A.CausalTransformer(4, 2, A.TransformerConfig(d_model=10, n_heads=4))
    with pytest.raises(ValueError, match="odd"):
        A.PixelCNN(4, first_kernel=4)
    with pytest.raises(ValueError, match="mask_type"):
        A.MaskedConv2d(1, 1, 3, "C")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", MODELS)
def test_models_run_on_cuda(name):
    model = build(name, 3, 3).to("cuda")
    x = torch.randint(0, 3, (5, 9), device="cuda").double()
    lp = model.log_prob(x)
    assert lp.device.type == "cuda" and lp.shape == (5,)
    cpu = build(name, 3, 3)
    torch.testing.assert_close(lp.cpu(), cpu.log_prob(x.cpu()), rtol=1e-9, atol=1e-9)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert model.sample(4, generator=g).device.type == "cuda"
    mask = torch.zeros(5, 9, dtype=torch.bool, device="cuda")
    mask[:, :3] = True
    out = model.complete(x, mask, n_samples=2, generator=g)
    assert out.device.type == "cuda" and (out[:, mask] == x[mask]).all()
    assert model.conditional_log_prob(x, mask).device.type == "cuda"
