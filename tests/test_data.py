"""gmlib.data: the fixed digits split, toy densities, and the MNIST loader
(exercised on small IDX files written here, through a file:// mirror)."""
import gzip
import hashlib
import math
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gmlib import data


def test_digits_split_is_fixed_and_unshuffled():
    raw = load_digits()
    sizes = {}
    for split, (start, stop) in data.DIGITS_SPLITS.items():
        x, y = data.digits(split, "int", labels=True, dtype=torch.float64)
        sizes[split] = x.shape[0]
        np.testing.assert_array_equal(x.numpy(), raw.data[start:stop])
        np.testing.assert_array_equal(y.numpy(), raw.target[start:stop])
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    assert sum(sizes.values()) == len(raw.data) == 1797


def test_digits_views_agree():
    xi = data.digits("val", "int", dtype=torch.float64)
    xf = data.digits("val", "float", dtype=torch.float64)
    xb = data.digits("val", "binary", dtype=torch.float64)
    assert xi.min() == 0 and xi.max() == 16 and torch.equal(xi, xi.round())
    torch.testing.assert_close(xf * 16, xi)
    assert torch.equal(xb, (xi >= 8).double())
    assert set(xb.unique().tolist()) == {0.0, 1.0}


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.digits("validation")
    with pytest.raises(ValueError, match="view"):
        data.digits("train", "grey")
    with pytest.raises(ValueError, match="dtype"):
        data.digits("train", dtype=torch.int64)


@pytest.mark.parametrize("name", sorted(data.TOY_DENSITIES))
def test_toy_densities_are_seeded(name):
    a = data.toy_2d(name, 500, seed=3)
    b = data.toy_2d(name, 500, seed=3)
    c = data.toy_2d(name, 500, seed=4)
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()
    state = torch.get_rng_state()
    data.toy_2d(name, 10, seed=0)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG must be untouched"


def test_toy_densities_have_their_shape():
    x = data.toy_2d("eight_gaussians", 4000, seed=0, dtype=torch.float64)
    r = x.norm(dim=1)
    assert (r - 2).abs().mean() < 0.15  # points sit near the ring of radius 2
    angles = torch.remainder(torch.atan2(x[:, 1], x[:, 0]), 2 * math.pi)
    modes = torch.round(angles / (math.pi / 4)).remainder(8)
    counts = torch.bincount(modes.long(), minlength=8).double()
    assert (counts / 4000 - 1 / 8).abs().max() < 0.03  # eight equally weighted modes

    x = data.toy_2d("checkerboard", 4000, seed=0, dtype=torch.float64)
    cells = torch.floor(x[:, 0]) + torch.floor(x[:, 1])
    assert (torch.remainder(cells, 2) == 0).all()  # mass only on the dark squares
    assert x.min() >= -2 and x.max() <= 2

    x = data.toy_2d("rings", 4000, seed=0, dtype=torch.float64)
    r = x.norm(dim=1)
    nearest = torch.tensor([0.75, 1.5, 2.25, 3.0], dtype=torch.float64)
    assert (r.unsqueeze(1) - nearest).abs().min(1).values.max() < 0.35


@pytest.mark.parametrize("name", sorted(data.TOY_MODES))
def test_toy_mixtures_match_their_modes(name):
    """Samples of the Gaussian mixtures sit around the centers of toy_2d_modes: equal weights
    (chi-square test of the counts by nearest center, p > 0.001), per-mode means within 4 standard
    errors of the centers, and the per-coordinate spread equal to std within 5%."""
    from scipy.stats import chisquare

    centers, std = data.toy_2d_modes(name)
    n = 20000
    x = data.toy_2d(name, n, seed=3, dtype=torch.float64)
    k = torch.cdist(x, centers).argmin(1)
    counts = torch.bincount(k, minlength=len(centers))
    assert chisquare(counts.numpy()).pvalue > 1e-3
    for j in range(len(centers)):
        xs = x[k == j]
        assert ((xs.mean(0) - centers[j]).abs() < 4 * std / math.sqrt(len(xs))).all()
    residual = x - centers[k]
    assert abs(float(residual.std()) / std - 1) < 0.05
    # the helper hands out copies: editing them cannot corrupt the data set
    centers += 1
    assert torch.equal(data.toy_2d(name, 5, seed=0), data.toy_2d(name, 5, seed=0))
    assert not torch.equal(data.toy_2d_modes(name)[0], centers)


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="not a Gaussian mixture with known modes"):
        data.toy_2d_modes("rings")
    with pytest.raises(ValueError, match="unknown toy density"):
        data.toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="positive integer"):
        data.toy_2d("rings", 0)


def test_heteroscedastic_1d_noise_follows_the_truth():
    x, y = data.heteroscedastic_1d(20000, seed=0, dtype=torch.float64)
    mean, std = data.heteroscedastic_1d_truth(x)
    z = (y - mean) / std
    assert abs(z.mean().item()) < 4 / math.sqrt(20000)
    assert z.var().item() == pytest.approx(1.0, abs=0.04)


# --- IDX and MNIST ---------------------------------------------------------------------


def write_idx(path, array: np.ndarray, gz=True):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_idx_roundtrip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte.gz", a)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a-idx3-ubyte.gz"), a)
    b = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "b-idx2", b, gz=False)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "b-idx2"), b)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "junk")
    a = np.zeros((4, 3), dtype=np.uint8)
    write_idx(tmp_path / "t", a, gz=False)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-2])
    with pytest.raises(ValueError, match="data bytes"):
        data.read_idx(tmp_path / "t")
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "missing.gz")


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A tiny MNIST on a file:// mirror, with the loader's checksums pointed at it."""
    rng = np.random.default_rng(1)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, size=(20,), dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, size=(6,), dtype=np.uint8),
    }
    hashes = {name: write_idx(mirror / name, a) for name, a in arrays.items()}
    source = data._Source(mirror=mirror.as_uri() + "/", files=hashes)
    monkeypatch.setitem(data.MNIST_SOURCES, "mnist", source)
    return arrays, tmp_path / "cache"


def test_load_mnist_downloads_verifies_and_caches(fake_mirror):
    arrays, root = fake_mirror
    x, y = data.load_mnist("train", root=root, labels=True)
    assert x.shape == (20, 784) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), arrays["train-images-idx3-ubyte.gz"].reshape(20, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), arrays["train-labels-idx1-ubyte.gz"])
    assert (root / "train-images-idx3-ubyte.gz").is_file()
    # the second call reads the cache: no mirror needed
    x2 = data.load_mnist("train", root=root, download=False)
    assert torch.equal(x, x2)
    assert data.load_mnist("test", root=root).shape == (6, 784)


def test_load_mnist_rejects_a_corrupted_cache(fake_mirror):
    _, root = fake_mirror
    data.load_mnist("test", root=root)
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        data.load_mnist("test", root=root)


def test_load_mnist_rejects_a_bad_download(fake_mirror, monkeypatch):
    _, root = fake_mirror
    src = data.MNIST_SOURCES["mnist"]
    wrong = dict(src.files, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setitem(data.MNIST_SOURCES, "mnist", data._Source(src.mirror, wrong))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load_mnist("test", root=root)
    assert not (root / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(root.glob("*.part")), "a failed download leaves no partial file"


def test_load_mnist_offline_error_is_clear(tmp_path):
    with pytest.raises(ConnectionError, match="offline"):
        data.load_mnist("test", root=tmp_path, mirror=(tmp_path / "nowhere").as_uri() + "/", timeout=2)
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.load_mnist("test", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(kind="kmnist")


def test_canonical_sources_are_complete():
    for kind, src in data.MNIST_SOURCES.items():
        assert len(src.files) == 4
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in src.files.values())


def _shifted_candidates(img):
    """The four one-pixel moves of an 8x8 image (zero fill), built with padding and slicing."""
    pad = torch.nn.functional.pad(img, (1, 1, 1, 1))  # (10, 10)
    return [pad[0:8, 1:9], pad[2:10, 1:9], pad[1:9, 0:8], pad[1:9, 2:10]]  # down, up, right, left


def test_random_shift_moves_each_image_by_one_pixel_or_not_at_all():
    from gmlib.data import random_shift

    x, y = data.digits("train", "int", labels=True)
    x, y = x[:200], y[:200]
    out, y_out = random_shift((x, y), torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(y_out, y)
    for a, b in zip(x.view(-1, 8, 8), out.view(-1, 8, 8)):
        assert any(torch.equal(b, c) for c in _shifted_candidates(a))
    same, _ = random_shift((x, y), torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(same, x)
    half, _ = random_shift((x, y), torch.Generator().manual_seed(1), p=0.5)
    moved = (half != x).any(1).float().mean().item()
    assert 0.35 < moved < 0.6  # about half (a few moves leave an image unchanged)
    with pytest.raises(ValueError, match="rows"):
        random_shift(x.view(-1, 8, 8))
