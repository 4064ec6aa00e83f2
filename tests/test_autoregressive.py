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

    ``scrambled`` gives the models that take an ordering a non-raster one (D = 9 only), and the image
    models a non-raster scan (right column first, bottom to top)."""
    torch.manual_seed(seed)
    D = side * side
    order = SCRAMBLED9 if scrambled and D == 9 else None
    scan = "cols-rtl-up" if scrambled else "rows"
    if name == "made":
        m = A.MADEModel(D, levels, (32, 32), order=order)
    elif name == "pixelcnn":
        m = A.PixelCNN(side, levels, channels=8, n_layers=2, first_kernel=5, scan=scan)
    elif name == "gated":
        m = A.GatedPixelCNN(side, levels, channels=8, n_layers=2, first_kernel=5, scan=scan)
    elif name == "rowlstm":
        m = A.RowLSTM(side, levels, channels=8, n_layers=2, first_kernel=3, scan=scan)
    elif name == "transformer":
        m = A.CausalTransformer(D, levels, small_config(), order=order)
    elif name == "lstm":
        m = A.SequenceLSTM(D, levels, embed_dim=8, hidden=16, order=order)
    else:
        raise AssertionError(name)
    return m.to(f64)


MODELS = ["made", "pixelcnn", "gated", "rowlstm", "transformer", "lstm"]


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


def test_row_lstm_is_autoregressive_with_a_triangular_field():
    torch.manual_seed(0)
    side = 5
    model = A.RowLSTM(side, 2, channels=8, n_layers=2, first_kernel=3).to(f64)
    x = torch.randint(0, 2, (16, side * side), generator=gen(12)).to(f64)
    G = input_gradients(model, x)
    E = earlier(model)
    assert (G[~E] == 0).all(), "the Row LSTM sees its own pixel or a later one"
    idx = lambda i, j: i * side + j  # noqa: E731
    # the state of row i reads the row above at columns j-1..j+1 (and the 3x3 mask-A input one column
    # further): pixel (2, 0) sees (1, 1) and, through the row above's state, (0, 2), but not (1, 2)
    assert G[idx(2, 0), idx(1, 1)] > 0 and G[idx(2, 0), idx(0, 2)] > 0 and G[idx(2, 0), idx(1, 0)] > 0
    assert G[idx(2, 0), idx(1, 2)] == 0 and G[idx(4, 0), idx(3, 3)] == 0
    # the same row is read by convolutions only (no recurrence along it): with a width-3 mask-A input
    # and two layers, pixel (3, 4) sees the three pixels to its left and not the fourth
    assert all(G[idx(3, 4), idx(3, j)] > 0 for j in (1, 2, 3)) and G[idx(3, 4), idx(3, 0)] == 0


@pytest.mark.parametrize("name", ["pixelcnn", "gated", "rowlstm"])
@pytest.mark.parametrize("scan", sorted(A.SCANS))
def test_every_scan_is_its_raster_model_on_the_turned_image(name, scan):
    """A scanned image model is the raster model (same weights) on the image turned or flipped so the
    scan becomes raster order: the same per-pixel log-probabilities, moved back to their pixels; its
    ordering is the scan's, and it depends on exactly the earlier pixels (autograd)."""
    side = 3
    raster = build(name, side, 3, seed=8)
    scanned = {"pixelcnn": A.PixelCNN, "gated": A.GatedPixelCNN, "rowlstm": A.RowLSTM}[name]
    kwargs = dict(channels=8, n_layers=2, first_kernel=3 if name == "rowlstm" else 5)
    model = scanned(side, 3, scan=scan, **kwargs).to(f64)
    weights = {k: v for k, v in raster.state_dict().items() if k not in ("order", "rank")}
    model.load_state_dict(weights, strict=False)  # the same weights, the scan's own ordering
    order = A.scan_order(side, scan)
    assert model.order.tolist() == order and sorted(order) == list(range(side * side))
    x = torch.randint(0, 3, (7, 9), generator=gen(13)).to(f64)
    turned = x[:, order]  # the image read in the scan, as a raster image
    want = raster._pixel_log_probs(turned.long())  # (B, D): position k is pixel order[k]
    got = model._pixel_log_probs(x.long())
    torch.testing.assert_close(got[:, order], want, rtol=0, atol=1e-12)
    if name != "rowlstm":  # (the Row LSTM's field has holes; its ordering is checked above)
        G = input_gradients(model, x)
        E = earlier(model)
        assert (G[~E] == 0).all() and (G[E] > 0).all() if name == "gated" else (G[~E] == 0).all()


def test_scans_are_the_eight_symmetries_of_the_square():
    orders = {scan: tuple(A.scan_order(4, scan)) for scan in A.SCANS}
    assert len(set(orders.values())) == 8
    assert orders["rows"] == tuple(range(16)) and orders["cols"][:4] == (0, 4, 8, 12)
    assert orders["rows-up-rtl"] == tuple(reversed(range(16)))
    assert orders["cols-rtl-up"][0] == 15 and orders["cols-rtl-up"][1] == 11
    with pytest.raises(ValueError, match="scan must be one of"):
        A.scan_order(4, "diagonal")
    with pytest.raises(ValueError, match="scan must be one of"):
        A.PixelCNN(4, scan="diagonal")


def mixture(seed: int = 0, scans=("rows", "cols-rtl-up"), side: int = 3, levels: int = 2):
    torch.manual_seed(seed)
    return A.OrderMixture([A.PixelCNN(side, levels, channels=8, n_layers=2, first_kernel=3, scan=scans[0]),
                           A.GatedPixelCNN(side, levels, channels=8, n_layers=2, first_kernel=3, scan=scans[1]),
                           A.MADEModel(side * side, levels, (16,), order=SCRAMBLED9 if side == 3 else None)]).to(f64)


def test_order_mixture_is_normalised_and_between_its_components():
    model = mixture()
    xs = all_inputs(9, 2)
    lp = model.log_prob(xs)
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-10
    parts = torch.stack([m.log_prob(xs) for m in model.components])  # (K, N)
    assert (lp >= parts.min(0).values - 1e-12).all() and (lp <= parts.max(0).values + 1e-12).all()
    torch.testing.assert_close(lp, torch.log(parts.exp().mean(0)))
    torch.testing.assert_close(model.loss(xs), -lp.mean())


def test_order_mixture_samples_match_log_prob():
    model = mixture(1, side=2)
    p = model.log_prob(all_inputs(4, 2)).exp()
    n = 20000
    s = model.sample(n, generator=gen(14))
    assert s.shape == (n, 4)
    codes = (s.long() * torch.tensor([8, 4, 2, 1])).sum(1)
    counts = torch.bincount(codes, minlength=16).double()
    assert chisquare(counts.numpy(), (n * p).detach().numpy()).pvalue > 1e-3


def test_order_mixture_completes_exactly_when_every_ordering_allows_it():
    # the top row first in both scans (and in the raster MADE): its completion is exact
    model = mixture(2, scans=("rows", "rows-rtl"), side=2)
    x = torch.tensor([[1.0, 0, 0, 0]], dtype=f64)
    mask = torch.tensor([[True, True, False, False]])
    xs = x.repeat(4, 1)
    xs[:, 2:] = all_inputs(2, 2)
    cond = model.conditional_log_prob(xs, mask.repeat(4, 1))
    joint = model.log_prob(xs)
    torch.testing.assert_close(cond, joint - torch.logsumexp(joint, 0))  # log p(x) - log p(x_O), enumerated
    n = 8000
    out = model.complete(x, mask, n_samples=n, generator=gen(15))[:, 0]  # (n, 4)
    assert (out[:, :2] == x[0, :2]).all()
    codes = (out[:, 2:].long() * torch.tensor([2, 1])).sum(1)
    counts = torch.bincount(codes, minlength=4).double()
    assert chisquare(counts.numpy(), (n * cond.exp()).detach().numpy()).pvalue > 1e-3
    # the left column observed: a prefix of neither raster scan
    left = torch.tensor([[True, False, True, False]])
    for fn in (lambda: model.complete(x, left), lambda: model.conditional_log_prob(x, left)):
        with pytest.raises(ValueError, match="exact only"):
            fn()
    with pytest.raises(ValueError, match="non-empty sequence"):
        A.OrderMixture([])
    with pytest.raises(ValueError, match="share features and levels"):
        A.OrderMixture([A.MADEModel(4, 2, (8,)), A.MADEModel(4, 3, (8,))])


@pytest.mark.parametrize("architecture", ["gated", "pixelcnn"])
def test_scan_mixture_is_exact_and_its_training_loss_scores_one_scan_per_image(architecture):
    torch.manual_seed(9)
    model = A.ScanMixture(3, 2, ["rows", "cols-rtl-up", "rows-up"], architecture=architecture, channels=8,
                          n_layers=2, first_kernel=3).to(f64)
    with torch.no_grad():  # the scan vectors start at zero: make them (and the rest) random
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(16), dtype=f64))
    model.eval()
    xs = all_inputs(9, 2)
    lp = model.log_prob(xs)
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-10
    parts = torch.stack([c.log_prob(xs) for c in model.components])  # (K, N), one model per scan
    assert [c.order.tolist() for c in model.components] == [A.scan_order(3, s) for s in model.scans]
    for c in model.components:  # each scan is normalised and autoregressive in its own ordering
        assert abs(torch.logsumexp(c.log_prob(xs), 0).item()) < 1e-10
        G = input_gradients(c, xs[:32])
        assert (G[~earlier(c)] == 0).all()
    assert (parts[0] - parts[1]).abs().max() > 1e-3  # the scans are different models
    # eval mode: image i in scan i mod K, deterministic
    torch.testing.assert_close(model.loss(xs), -parts[torch.arange(len(xs)) % 3, torch.arange(len(xs))].mean())
    # training mode: each image in one scan drawn from the global generator
    model.train()
    for p in model.modules():
        if isinstance(p, torch.nn.Dropout):
            p.p = 0.0
    torch.manual_seed(17)
    got = model.loss(xs[:40])
    torch.manual_seed(17)
    k = torch.randint(3, (40,))
    want = -parts[k, torch.arange(40)].mean()
    torch.testing.assert_close(got, want)
    # the parameters are shared, once: every scan's gradient reaches the same tensors
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.shared.parameters())
    with pytest.raises(ValueError, match="distinct names"):
        A.ScanMixture(3, 2, ["rows", "rows"])
    with pytest.raises(ValueError, match="scan must be one of"):
        A.ScanMixture(3, 2, ["rows", "zigzag"])
    with pytest.raises(ValueError, match="architecture"):
        A.ScanMixture(3, 2, ["rows"], architecture="mlp")


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
        "gated": lambda: A.GatedPixelCNN(8, 17, channels=8, n_layers=2, dropout=0.1),
        "rowlstm": lambda: A.RowLSTM(8, 17, channels=8),
        "transformer": lambda: A.CausalTransformer(64, 17, small_config()),
        "lstm": lambda: A.SequenceLSTM(64, 17, embed_dim=8, hidden=16),
    }[name]()
    model.eval()  # (the gated model has dropout, active in training mode only)
    check_density_model(model, x, sample_n=2)
    assert model.sample(2, generator=gen(0)).dtype == torch.float32
    model.train()
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
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(ValueError, match="dropout"):
            A.PixelCNN(4, dropout=bad)
        with pytest.raises(ValueError, match="dropout"):
            A.GatedPixelCNN(4, dropout=bad)


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
