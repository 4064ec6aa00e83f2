"""Chapter 6: sample-quality metrics (gmlib.metrics).

The Fréchet distance is checked against SciPy's matrix square root, the closed forms for
diagonal covariances and for 1-D Gaussians (the 2-Wasserstein distance, itself checked by
integrating the quantile functions), and the metric axioms; the MMD estimator against a
brute-force double loop and, over many seeds, against the population MMD of two Gaussians
(0 when they are equal); the mode metrics against hand-built samples and the chi-square
probability of the true mixture. The digit classifier is trained once into a temporary
cache: its test accuracy, its disk round trip, the rebuild of a corrupt file (bitwise the
same weights) and the caller's RNG state are checked. Every draw is seeded; statistical
tests accept 4 standard errors.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from torch.nn import functional as nnf

from gmlib import data, metrics

f64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")  # small problems: see tests/conftest.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_spd(F, seed, *, rank=None):
    """A random symmetric positive (semi-)definite matrix (F, F) of the given rank."""
    g = gen(seed)
    A = torch.randn(F, rank or F, generator=g, dtype=f64)
    return A @ A.T / F + (1e-3 * torch.eye(F, dtype=f64) if rank is None else 0.0)


# ----------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("F, seed", [(1, 0), (3, 1), (10, 2), (64, 3)])
def test_gaussian_frechet_matches_scipy_sqrtm(F, seed):
    g = gen(100 + seed)
    mu1, mu2 = torch.randn(F, generator=g, dtype=f64), torch.randn(F, generator=g, dtype=f64)
    C1, C2 = random_spd(F, seed), random_spd(F, seed + 50)
    c1, c2 = C1.numpy(), C2.numpy()
    s1 = np.real(scipy.linalg.sqrtm(c1))
    inner = np.real(scipy.linalg.sqrtm(s1 @ c2 @ s1))
    expected = float(np.sum((mu1 - mu2).numpy() ** 2) + np.trace(c1 + c2 - 2 * inner))
    assert metrics.gaussian_frechet(mu1, C1, mu2, C2) == pytest.approx(expected, rel=1e-6)
    # the FID reference code's form tr sqrtm(C1 C2) (a non-symmetric square root) agrees too
    root = np.real(scipy.linalg.sqrtm(c1 @ c2))
    fid_form = float(np.sum((mu1 - mu2).numpy() ** 2) + np.trace(c1 + c2) - 2 * np.trace(root))
    assert metrics.gaussian_frechet(mu1, C1, mu2, C2) == pytest.approx(fid_form, rel=1e-6)


def test_gaussian_frechet_diagonal_closed_form():
    g = gen(7)
    F = 12
    a = torch.rand(F, generator=g, dtype=f64) * 3
    b = torch.rand(F, generator=g, dtype=f64) * 3
    a[0] = 0.0  # a singular covariance is allowed
    mu1, mu2 = torch.randn(F, generator=g, dtype=f64), torch.randn(F, generator=g, dtype=f64)
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
    got = metrics.gaussian_frechet(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("m1, s1, m2, s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.2, 2.0), (2.0, 1e-3, 2.5, 0.7)])
def test_gaussian_frechet_in_1d_is_the_w2_distance(m1, s1, m2, s2):
    closed = (m1 - m2) ** 2 + (s1 - s2) ** 2
    one = lambda v: torch.tensor([v], dtype=f64)  # noqa: E731
    got = metrics.gaussian_frechet(one(m1), one(s1**2).view(1, 1), one(m2), one(s2**2).view(1, 1))
    assert got == pytest.approx(closed, rel=1e-12, abs=1e-15)
    # W2^2 in 1-D is the integral over u of the squared difference of the quantile functions
    u = (np.arange(200_000) + 0.5) / 200_000
    w2 = np.mean((scipy.stats.norm.ppf(u, m1, s1) - scipy.stats.norm.ppf(u, m2, s2)) ** 2)
    assert got == pytest.approx(w2, rel=1e-3, abs=1e-6)


def test_gaussian_frechet_is_a_squared_metric():
    F = 6
    g = gen(11)
    mus = [torch.randn(F, generator=g, dtype=f64) for _ in range(3)]
    covs = [random_spd(F, 20 + k) for k in range(3)]
    d = lambda i, j: metrics.gaussian_frechet(mus[i], covs[i], mus[j], covs[j])  # noqa: E731
    assert d(0, 0) == pytest.approx(0.0, abs=1e-10)
    assert d(0, 1) == pytest.approx(d(1, 0), rel=1e-10)
    assert math.sqrt(d(0, 2)) <= math.sqrt(d(0, 1)) + math.sqrt(d(1, 2)) + 1e-12  # triangle inequality of W2
    # invariant under a common rotation and shift of both Gaussians
    Q, _ = torch.linalg.qr(torch.randn(F, F, generator=g, dtype=f64))
    t = torch.randn(F, generator=g, dtype=f64)
    moved = metrics.gaussian_frechet(Q @ mus[0] + t, Q @ covs[0] @ Q.T, Q @ mus[1] + t, Q @ covs[1] @ Q.T)
    assert moved == pytest.approx(d(0, 1), rel=1e-9)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_it_is_symmetric():
    g = gen(3)
    a = torch.randn(400, 16, generator=g, dtype=f64) @ torch.randn(16, 16, generator=g, dtype=f64)
    b = torch.randn(300, 16, generator=g, dtype=f64) * 1.3 + 0.2
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-10)
    # singular covariances: dead (constant) features, and fewer rows than features
    dead = torch.cat([a, torch.zeros(400, 5, dtype=f64), torch.full((400, 1), 0.7, dtype=f64)], dim=1)
    assert metrics.frechet_distance(dead, dead) == pytest.approx(0.0, abs=1e-8)
    few = torch.randn(10, 40, generator=g, dtype=f64)
    assert metrics.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-8)
    # the fit uses the sample mean and the unbiased covariance, as numpy.cov
    expected = metrics.gaussian_frechet(a.mean(0), torch.from_numpy(np.cov(a.numpy(), rowvar=False)),
                                        b.mean(0), torch.from_numpy(np.cov(b.numpy(), rowvar=False)))
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_grows_with_the_noise_that_corrupts_a_set():
    g = gen(5)
    a = torch.randn(500, 16, generator=g, dtype=f64) @ torch.randn(16, 16, generator=g, dtype=f64)
    eps = torch.randn(500, 16, generator=g, dtype=f64)  # the same noise at every scale
    values = [metrics.frechet_distance(a, a + s * eps) for s in (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-8)
    assert all(v0 < v1 for v0, v1 in zip(values, values[1:])), values


# ----------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------


def brute_mmd2(x, y, bandwidths):
    """(ch06:mmd2) term by term, in Python floats."""
    def k(a, b):
        d2 = sum((float(ai) - float(bi)) ** 2 for ai, bi in zip(a, b))
        return sum(math.exp(-d2 / (2 * s * s)) for s in bandwidths)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)


@pytest.mark.parametrize(
    "bandwidths",
    [None, (0.3,), (0.2, 0.2 * math.sqrt(3)), (0.5, 0.7, 1.9), (1.0, 1.0), (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)],
    ids=["default", "one", "ratio-3", "no-ladder", "repeated", "long-ladder"],
)
def test_mmd2_equals_the_double_loop(bandwidths):
    g = gen(1)
    x = torch.randn(7, 3, generator=g, dtype=f64) * 0.4
    y = torch.randn(5, 3, generator=g, dtype=f64) * 0.3 + 0.2
    bw = metrics.MMD_BANDWIDTHS if bandwidths is None else bandwidths
    assert metrics.mmd2(x, y, bandwidths=bandwidths) == pytest.approx(brute_mmd2(x, y, bw), rel=1e-11, abs=1e-14)


def test_mmd2_in_blocks_equals_dense_matrices():
    """Sizes beyond one block of the blocked computation, against full kernel matrices."""
    x = data.toy_2d("eight_gaussians", 450, seed=1, dtype=f64)
    y = data.toy_2d("eight_gaussians", 380, seed=2, dtype=f64) * 1.1

    def kernel(a, b):
        d2 = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        return sum(torch.exp(-d2 / (2 * s * s)) for s in metrics.MMD_BANDWIDTHS)

    n, m = len(x), len(y)
    kxx, kyy = kernel(x, x), kernel(y, y)
    dense = ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
             - 2 * kernel(x, y).mean())
    assert metrics.mmd2(x, y) == pytest.approx(float(dense), rel=1e-9)
    assert metrics.mmd2(x, y) == pytest.approx(metrics.mmd2(y, x), rel=1e-12)  # symmetric
    assert metrics.mmd2(x + 100.0, y + 100.0) == pytest.approx(metrics.mmd2(x, y), rel=1e-9)  # translation invariant
    assert metrics.mmd2(x.float(), y.float()) == pytest.approx(metrics.mmd2(x.float().double(), y.float().double()))


def population_mmd2(sigma, delta, d, bandwidths):
    r"""MMD^2 between N(0, sigma^2 I_d) and N(delta, sigma^2 I_d) for the kernel sum:
    E k(x, x') = c_s and E k(x, y) = c_s exp(-|delta|^2 / (2 (s^2 + 2 sigma^2))),
    with c_s = (s^2 / (s^2 + 2 sigma^2))^{d/2}."""
    total = 0.0
    for s in bandwidths:
        v = s * s + 2 * sigma * sigma
        c = (s * s / v) ** (d / 2)
        total += 2 * c * (1 - math.exp(-float(delta @ delta) / (2 * v)))
    return total


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_mmd2_is_unbiased(shift):
    """The mean over 300 seeds of mmd2 on 40 + 40 points is the population MMD^2 (4 standard errors):
    0 for one distribution, clearly positive for two."""
    sigma, n, R = 0.5, 40, 300
    delta = torch.tensor([shift, 0.0], dtype=f64)
    g = gen(2024)
    values = []
    for _ in range(R):
        x = sigma * torch.randn(n, 2, generator=g, dtype=f64)
        y = sigma * torch.randn(n, 2, generator=g, dtype=f64) + delta
        values.append(metrics.mmd2(x, y))
    values = torch.tensor(values, dtype=f64)
    mean, se = float(values.mean()), float(values.std() / math.sqrt(R))
    truth = population_mmd2(sigma, delta, 2, metrics.MMD_BANDWIDTHS)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)
    if shift:
        assert mean > 10 * se  # a shift of 0.8 standard deviations is plainly detected
    else:
        assert float((values < 0).double().mean()) > 0.25  # unbiased: often below 0 when P = Q


# ----------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------


def ring(K=8, radius=2.0):
    angle = torch.arange(K, dtype=f64) * (2 * math.pi / K)
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (K, 2)


def test_mode_metrics_on_hand_built_samples():
    centers, std = ring(), 0.1
    g = gen(0)

    def around(k, n_sd, count):
        theta = torch.rand(count, generator=g, dtype=f64) * 2 * math.pi
        return centers[k] + n_sd * std * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)

    samples = torch.cat([
        centers[0].expand(3, 2),  # 3 exactly on mode 0
        around(1, 2.9, 2),  # 2 within 3 sd of mode 1
        around(2, 3.1, 4),  # 4 just outside 3 sd of mode 2
        centers[3].expand(1, 2),  # 1 on mode 3
        torch.zeros(1, 2, dtype=f64),  # the centre of the ring, 20 sd from every mode
    ])
    out = metrics.mode_metrics(samples, centers, std)
    assert out["counts"].tolist() == [3, 2, 0, 1, 0, 0, 0, 0]
    assert out["counts"].dtype == torch.long
    assert out["high_quality"] == pytest.approx(6 / 11)
    assert out["n_modes"] == 8
    assert out["min_count"] == 1 and out["modes_covered"] == 3  # max(1, round(0.1 * 11 / 8)) = 1
    assert metrics.mode_metrics(samples, centers, std, min_count=2)["modes_covered"] == 2
    assert metrics.mode_metrics(samples, centers, std, min_count=4)["modes_covered"] == 0
    # a wider radius takes in the points at 3.1 sd
    assert metrics.mode_metrics(samples, centers, std, n_sd=3.2)["counts"].tolist() == [3, 2, 4, 1, 0, 0, 0, 0]


def test_a_collapsed_sampler_covers_one_mode():
    centers, std = ring(), 0.1
    g = gen(1)
    collapsed = centers[0] + std * torch.randn(1000, 2, generator=g, dtype=f64)
    strays = centers[5].expand(3, 2)  # a few points on another mode do not cover it
    out = metrics.mode_metrics(torch.cat([collapsed, strays]), centers, std)
    assert out["min_count"] == round(0.1 * 1003 / 8)
    assert out["modes_covered"] == 1
    assert out["counts"][5] == 3


@pytest.mark.parametrize("name", ["eight_gaussians", "grid"])
def test_the_true_mixture_covers_every_mode(name):
    """High-quality share = P(chi2_2 <= 9) = 1 - exp(-4.5) within 4 binomial standard errors;
    each mode's count within 4 binomial standard errors of n p / K."""
    n, std = 4000, 0.1
    if name == "eight_gaussians":
        centers = ring()
        samples = data.toy_2d("eight_gaussians", n, seed=3, dtype=f64)
    else:  # a 5 x 5 grid, spacing 2
        grid = torch.arange(-2, 3, dtype=f64) * 2
        centers = torch.cartesian_prod(grid, grid)  # (25, 2)
        g = gen(4)
        which = torch.randint(0, 25, (n,), generator=g)
        samples = centers[which] + std * torch.randn(n, 2, generator=g, dtype=f64)
    K = len(centers)
    out = metrics.mode_metrics(samples, centers, std)
    p = 1 - math.exp(-4.5)
    assert abs(out["high_quality"] - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert out["modes_covered"] == K
    assert int(out["counts"].sum()) == round(out["high_quality"] * n)
    q = p / K
    assert (out["counts"].double() - n * q).abs().max() < 4 * math.sqrt(n * q * (1 - q))


# ----------------------------------------------------------------------------
# The digit classifier (trained once into a temporary cache)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the classifier from scratch into an empty cache, recording the RNG around it."""
    cache = tmp_path_factory.mktemp("gmlib_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GMLIB_CACHE", str(cache))
        metrics.digit_classifier.cache_clear()
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        model = metrics.digit_classifier(device="cpu")
        after = torch.get_rng_state()
        x_test = data.digits("test")
        with torch.no_grad():
            logits = model(x_test)
        yield SimpleNamespace(model=model, cache=cache, rng_before=before, rng_after=after, logits=logits)
        metrics.digit_classifier.cache_clear()


def cache_file(cache):
    files = sorted(cache.glob("digit_classifier-*.pt"))
    assert len(files) == 1, files
    return files[0]


def test_classifier_is_accurate_cached_and_leaves_the_rng_alone(trained):
    model = trained.model
    assert model.info["source"] == "trained"
    assert torch.equal(trained.rng_before, trained.rng_after)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x, labels = data.digits("test", "float", labels=True)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == labels).double().mean())
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(model.info["test_accuracy"])
    assert metrics.digit_classifier() is metrics.digit_classifier(device="cpu")


def test_disk_cache_round_trip_gives_identical_logits(trained):
    path = cache_file(trained.cache)
    assert not list(trained.cache.glob("*.part"))  # the atomic write left no temporary file
    metrics.digit_classifier.cache_clear()
    state = torch.get_rng_state()
    loaded = metrics.digit_classifier()
    # loading builds the layers (which draws initial weights) and must still leave the caller's RNG alone,
    # or a training run that first measures its samples mid-way would depend on whether the cache existed
    assert torch.equal(state, torch.get_rng_state())
    assert loaded is not trained.model
    assert loaded.info["source"] == "disk cache"
    assert loaded.info["test_accuracy"] == trained.model.info["test_accuracy"]
    with torch.no_grad():
        assert torch.equal(loaded(data.digits("test")), trained.logits)
    assert cache_file(trained.cache) == path


def test_unusable_cache_files_are_refused(trained, tmp_path):
    recipe = metrics.DigitClassifierRecipe()
    good = cache_file(trained.cache)
    assert metrics._read_cache(good, recipe) is not None
    blob = torch.load(good, weights_only=True)
    state = blob["state_dict"]
    bad = tmp_path / "bad.pt"
    cases = {
        "truncated": lambda: bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        "not torch": lambda: bad.write_text("hello"),
        "other recipe": lambda: torch.save(dict(blob, key="0123456789abcdef"), bad),
        "wrong shapes": lambda: torch.save(dict(blob, state_dict={k: v[:1] for k, v in state.items()}), bad),
        "NaN weights": lambda: torch.save(dict(blob, state_dict={k: v * math.nan for k, v in state.items()}), bad),
        "code": lambda: torch.save({"key": blob["key"], "obj": SimpleNamespace(a=1)}, bad),
        "not a dict": lambda: torch.save([1, 2, 3], bad),
    }
    for name, write in cases.items():
        write()
        assert metrics._read_cache(bad, recipe) is None, name
    assert metrics._read_cache(tmp_path / "missing.pt", recipe) is None


def test_a_corrupt_cache_file_is_rebuilt_with_the_same_weights(trained):
    path = cache_file(trained.cache)
    path.write_bytes(b"\x80\x02 not a torch file")
    metrics.digit_classifier.cache_clear()
    state = torch.get_rng_state()
    rebuilt = metrics.digit_classifier()  # no exception: trains again
    assert torch.equal(state, torch.get_rng_state())
    assert rebuilt.info["source"] == "trained"
    with torch.no_grad():
        assert torch.equal(rebuilt(data.digits("test")), trained.logits)  # bitwise reproducible training
    metrics.digit_classifier.cache_clear()
    assert metrics.digit_classifier().info["source"] == "disk cache"  # the file was rewritten


def test_features_and_class_histogram(trained):
    model = metrics.digit_classifier()
    x, labels = data.digits("test", "float", labels=True)
    feats = metrics.digit_features(x)
    assert feats.dtype == f64 and feats.shape == (len(x), model.n_features)
    with torch.no_grad():
        torch.testing.assert_close(feats, model.features(x).double())
    # Another batch size runs other float32 kernels (blocking, vector tails): the features agree at
    # float32 tolerance, not bitwise and not at the float64 tolerance their dtype would imply
    # (2.9e-6 apart on an AVX-512 CPU).
    torch.testing.assert_close(metrics.digit_features(x, batch_size=7), feats, rtol=1e-5, atol=1e-5)
    hist = metrics.class_histogram(x)
    truth = torch.bincount(labels, minlength=10)
    assert hist.dtype == torch.long and int(hist.sum()) == len(x)
    assert int(torch.minimum(hist, truth).sum()) >= 0.95 * len(x)  # histograms agree on >= 95% of the images
    with torch.no_grad():
        assert torch.equal(hist, torch.bincount(model(x).argmax(1), minlength=10))


def test_digit_frechet_floor_is_small_against_corrupted_images(trained):
    train_x, test_x = data.digits("train"), data.digits("test")
    g = gen(0)
    eps = torch.randn(test_x.shape, generator=g)
    floor = metrics.digit_frechet(test_x, train_x)
    assert metrics.digit_frechet(test_x, test_x) == pytest.approx(0.0, abs=1e-6)
    noisy = metrics.digit_frechet((test_x + 0.3 * eps).clamp(0, 1), train_x)
    blurred = nnf.avg_pool2d(test_x.view(-1, 1, 8, 8), 3, stride=1, padding=1, count_include_pad=False).view(-1, 64)
    blurry = metrics.digit_frechet(blurred, train_x)
    uniform = metrics.digit_frechet(torch.rand(test_x.shape, generator=g), train_x)
    assert 0 < floor < 0.5 * noisy and floor < 0.1 * blurry and floor < 0.1 * uniform, (floor, noisy, blurry, uniform)
    # the distance to the clean set grows with the noise
    values = [metrics.digit_frechet(test_x, (test_x + s * eps).clamp(0, 1)) for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(v0 < v1 for v0, v1 in zip(values, values[1:])), values


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------

_x = torch.zeros(5, 2)
_img = torch.full((4, 64), 0.5)
_nan = torch.tensor([[0.0, math.nan], [1.0, 2.0]])
_mu = torch.zeros(2, dtype=f64)
_eye = torch.eye(2, dtype=f64)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.mmd2(torch.zeros(5), _x), r"shape \(N, D\)"),
        (lambda: metrics.mmd2(_x, torch.zeros(5, 3)), "same number of columns"),
        (lambda: metrics.mmd2(_x[:1], _x), "at least 2 rows"),
        (lambda: metrics.mmd2(_nan, _x), "NaN"),
        (lambda: metrics.mmd2(_x, torch.zeros(5, 2, dtype=torch.long)), "floating-point"),
        (lambda: metrics.mmd2(_x, _x, bandwidths=()), "at least one bandwidth"),
        (lambda: metrics.mmd2(_x, _x, bandwidths=(1.0, 0.0)), "positive"),
        (lambda: metrics.mmd2(_x, _x, bandwidths=(1.0, math.inf)), "positive finite"),
        (lambda: metrics.mmd2(_x, _x, bandwidths=1.0), "sequence"),
        (lambda: metrics.mode_metrics(torch.zeros(0, 2), _x, 0.1), "at least 1 row"),
        (lambda: metrics.mode_metrics(_x, torch.zeros(3, 3), 0.1), "same number of columns"),
        (lambda: metrics.mode_metrics(_x, _x, 0.0), "std"),
        (lambda: metrics.mode_metrics(_x, _x, 0.1, n_sd=-1.0), "n_sd"),
        (lambda: metrics.mode_metrics(_x, _x, 0.1, min_count=0), "min_count"),
        (lambda: metrics.mode_metrics(_nan, _x, 0.1), "NaN"),
        (lambda: metrics.gaussian_frechet(_mu, _eye, torch.zeros(3, dtype=f64), _eye), "must match"),
        (lambda: metrics.gaussian_frechet(_mu, torch.eye(3, dtype=f64), _mu, _eye), r"shape \(F, F\)"),
        (lambda: metrics.gaussian_frechet(_mu, _eye + torch.triu(_eye.flip(0)), _mu, _eye), "symmetric"),
        (lambda: metrics.gaussian_frechet(_mu, torch.diag(torch.tensor([1.0, -1.0], dtype=f64)), _mu, _eye),
         "positive semi-definite"),
        (lambda: metrics.gaussian_frechet(_mu * math.nan, _eye, _mu, _eye), "NaN"),
        (lambda: metrics.gaussian_frechet(_mu[:0], _eye[:0, :0], _mu[:0], _eye[:0, :0]), "F >= 1"),
        (lambda: metrics.frechet_distance(_x, torch.zeros(5, 3)), "same number of features"),
        (lambda: metrics.frechet_distance(_x[:1], _x), "at least 2 rows"),
        (lambda: metrics.frechet_distance(_x, _nan), "NaN"),
        (lambda: metrics.digit_frechet(torch.zeros(4, 63), _img), "64"),
        (lambda: metrics.digit_frechet(_img, _img * 16), r"\[0, 1\]"),
        (lambda: metrics.digit_frechet(_img, _img - 0.6), r"\[0, 1\]"),
        (lambda: metrics.digit_frechet(_img[:1], _img), "at least 2 rows"),
        (lambda: metrics.digit_frechet(_img * math.nan, _img), "NaN"),
        (lambda: metrics.digit_features(torch.zeros(4, 8, 8)), r"shape \(N, 64\)"),
        (lambda: metrics.digit_features(_img, batch_size=0), "batch_size"),
        (lambda: metrics.class_histogram(torch.zeros(0, 64)), "at least 1 row"),
        (lambda: metrics.class_histogram(_img.long()), "floating-point"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
