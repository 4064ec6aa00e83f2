"""Data sets for the book: digits, 2-D toy densities, and an MNIST loader.

**Digits** (the embedded default). scikit-learn's 8x8 handwritten digits
(1797 images, 64 pixels with integer intensities 0..16, from the UCI "Optical
Recognition of Handwritten Digits" data; Alpaydin and Kaynak 1998, UCI Machine
Learning Repository). gmlib keeps a copy of scikit-learn's file
(``gmlib/assets/digits.npz``), so the book never downloads anything and gmlib
does not need scikit-learn. One fixed split, no shuffling, used by every
chapter so that numbers are comparable across chapters:

===========  ==================  ======
split        rows                count
===========  ==================  ======
train        0 .. 999            1000
val          1000 .. 1349        350
test         1350 .. 1796        447
===========  ==================  ======

and three views of the same pixels: ``"int"`` (the integers 0..16, stored as
float so models can use them directly), ``"float"`` (divided by 16, in [0, 1])
and ``"binary"`` (1 where the intensity is at least 8, else 0).

**Toy densities**: seeded 2-D samplers (:func:`toy_2d`).

**MNIST / Fashion-MNIST** (:func:`load_mnist`): downloaded from the canonical
mirror, verified by SHA-256, cached under ``~/.cache/gmlib``. The book does not
need it; it is there for the ``full`` presets and for your own experiments.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int
from .device import get_device

__all__ = [
    "random_shift",
    "DIGITS_SPLITS",
    "DIGITS_SHAPE",
    "digits",
    "TOY_DENSITIES",
    "toy_2d",
    "TOY_MODES",
    "toy_2d_modes",
    "heteroscedastic_1d",
    "heteroscedastic_1d_truth",
    "read_idx",
    "load_mnist",
    "MNIST_SOURCES",
    "cache_dir",
]

# ----------------------------------------------------------------------------
# Digits
# ----------------------------------------------------------------------------

DIGITS_SHAPE = (8, 8)
#: row ranges of the fixed split (start inclusive, stop exclusive)
DIGITS_SPLITS = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
_DIGITS_VIEWS = ("int", "float", "binary")
_DIGITS_CACHE: dict[str, np.ndarray] = {}


#: the digits, as scikit-learn ships them (``sklearn.datasets.load_digits``: its
#: ``datasets/data/digits.csv.gz``), stored as uint8 arrays ``images`` (1797, 64) and ``labels`` (1797,):
#: 45 kB, loaded in a millisecond, where importing scikit-learn to read them takes a second or two.
#: ``tests/test_data.py`` checks that they equal scikit-learn's.
DIGITS_FILE = Path(__file__).with_name("assets") / "digits.npz"


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    if not _DIGITS_CACHE:
        try:
            with np.load(DIGITS_FILE) as stored:
                images, labels = stored["images"], stored["labels"]
        except (OSError, KeyError, ValueError) as err:
            raise RuntimeError(f"gmlib's copy of the digits ({DIGITS_FILE}) is missing or unreadable: {err}; "
                               "reinstall gmlib") from err
        _DIGITS_CACHE["x"] = images.astype(np.float64)  # (1797, 64), integers 0..16
        _DIGITS_CACHE["y"] = labels.astype(np.int64)  # (1797,)
    return _DIGITS_CACHE["x"], _DIGITS_CACHE["y"]


def digits(
    split: str = "train",
    view: str = "float",
    *,
    labels: bool = False,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """One split of the 8x8 digits as a tensor of shape ``(N, 64)``.

    Parameters
    ----------
    split: ``"train"`` (1000 images), ``"val"`` (350) or ``"test"`` (447).
    view: ``"int"`` (0..16), ``"float"`` (in [0, 1]) or ``"binary"`` (intensity >= 8).
    labels: also return the class labels, a ``(N,)`` int64 tensor.
    device: where to put the tensors (``None`` picks with :func:`gmlib.device.get_device`).
    dtype: floating dtype of the pixels.

    Returns ``x`` or ``(x, y)``. Reshape to images with ``x.view(-1, 8, 8)``.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}; choose one of {sorted(DIGITS_SPLITS)}")
    if view not in _DIGITS_VIEWS:
        raise ValueError(f"unknown digits view {view!r}; choose one of {list(_DIGITS_VIEWS)}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    x_all, y_all = _digits_arrays()
    start, stop = DIGITS_SPLITS[split]
    x = x_all[start:stop]
    if view == "float":
        x = x / 16.0
    elif view == "binary":
        x = (x >= 8).astype(np.float64)
    dev = get_device(device)
    xt = torch.as_tensor(x, dtype=dtype).to(dev)  # (N, 64)
    if labels:
        return xt, torch.as_tensor(y_all[start:stop]).to(dev)  # (N,)
    return xt


def random_shift(batch, generator: torch.Generator | None = None, *, p: float = 0.3, side: int = 8):
    """Data augmentation for :func:`gmlib.train.train` (its ``augment`` argument): each image of
    the first tensor of ``batch`` (rows of ``side * side`` pixels) is, with probability ``p``, moved by
    one pixel up, down, left or right (chosen uniformly), the uncovered row or column filled with 0
    (the background of the digits). Other tensors (labels) pass through. Returns a tuple.
    """
    batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
    x = batch[0]
    if x.dim() != 2 or x.shape[1] != side * side:
        raise ValueError(f"random_shift needs images as rows (B, {side * side}), got {tuple(x.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    B = x.shape[0]
    img = x.reshape(B, side, side)
    direction = torch.randint(0, 4, (B,), generator=generator).to(x.device)  # (B,)
    moved = (torch.rand(B, generator=generator) < p).to(x.device)  # (B,)
    out = img.clone()
    for d, (dim, step) in enumerate(((1, 1), (1, -1), (2, 1), (2, -1))):  # down, up, right, left
        sel = moved & (direction == d)
        if bool(sel.any()):
            r = torch.roll(img[sel], step, dims=dim)  # (b, side, side)
            edge = 0 if step == 1 else side - 1
            if dim == 1:
                r[:, edge, :] = 0
            else:
                r[:, :, edge] = 0
            out[sel] = r
    return (out.reshape(B, side * side), *batch[1:])


# ----------------------------------------------------------------------------
# 2-D toy densities
# ----------------------------------------------------------------------------


def _two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    n_upper = n // 2
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    is_upper = (torch.arange(n) < n_upper).unsqueeze(1)
    x = torch.where(is_upper, upper, lower)
    x = x + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 1.6


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    radii = torch.tensor([0.75, 1.5, 2.25, 3.0], dtype=torch.float64)
    # points per ring proportional to its circumference
    which = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=g)
    theta = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    r = radii[which] + 0.06 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def _eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.double() * (math.pi / 4)
    centers = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centers + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _grid_25(n: int, g: torch.Generator) -> torch.Tensor:
    centers, std = TOY_MODES["grid_25"]
    k = torch.randint(0, 25, (n,), generator=g)
    return centers[k] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    # a 4x4 board on [-2, 2]^2 with mass on the 8 squares where floor(x)+floor(y) is even
    x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    column = torch.floor(x)
    row_in_pair = torch.randint(0, 2, (n,), generator=g).double()  # which of the two allowed rows
    parity = torch.remainder(column, 2)
    y_row = 2 * row_in_pair - 2 + parity  # rows -2,0 when column even, -1,1 when odd
    y = y_row + torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([x, y], dim=1)


def _pinwheel(n: int, g: torch.Generator) -> torch.Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(0, arms, (n,), generator=g)
    feats = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [radial_std, tangential_std], dtype=torch.float64
    )
    feats[:, 0] += 1.0
    angle = arm.double() * (2 * math.pi / arms) + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    return 2.0 * (rot @ feats.unsqueeze(-1)).squeeze(-1)


def _ring_centers(k: int, radius: float) -> torch.Tensor:
    angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (k, 2)


#: the mixtures of isotropic Gaussians among the toy densities: name -> (centers (K, 2) float64, std).
#: The eight on a ring follow Metz et al. (2017), the grid of 25 Srivastava et al. (2017); both are
#: used to count the modes a GAN covers (:func:`gmlib.metrics.mode_metrics`).
TOY_MODES = {
    "eight_gaussians": (_ring_centers(8, 2.0), 0.1),
    "grid_25": (torch.cartesian_prod(*(torch.arange(-2.0, 2.5, 1.0, dtype=torch.float64),) * 2), 0.05),
}


def toy_2d_modes(name: str) -> tuple[torch.Tensor, float]:
    """The centers ``(K, 2)`` (float64) and common standard deviation of a toy Gaussian mixture
    (``"eight_gaussians"`` or ``"grid_25"``); its components have equal weights."""
    if name not in TOY_MODES:
        raise ValueError(f"{name!r} is not a Gaussian mixture with known modes; choose one of {sorted(TOY_MODES)}")
    centers, std = TOY_MODES[name]
    return centers.clone(), std


TOY_DENSITIES = {
    "two_moons": _two_moons,
    "grid_25": _grid_25,
    "rings": _rings,
    "eight_gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
}


def toy_2d(
    name: str,
    n: int,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` from a named 2-D toy density, reproducible under ``seed``.

    Names: ``two_moons``, ``rings``, ``eight_gaussians`` (8 modes on a circle of
    radius 2, std 0.1), ``grid_25`` (a 5x5 grid of modes with spacing 1, std 0.05),
    ``checkerboard``, ``pinwheel``. Samples are drawn in float64 on the CPU with a private
    generator (the global RNG is untouched), then converted.
    """
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose one of {sorted(TOY_DENSITIES)}")
    check_int(n, "n")
    g = torch.Generator().manual_seed(int(seed))
    x = TOY_DENSITIES[name](n, g)  # (n, 2) float64
    return x.to(dtype=dtype, device=get_device(device))


def heteroscedastic_1d(
    n: int,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A 1-D regression problem whose noise level depends on the input.

    .. math::  x \sim \mathcal U(-3, 3), \qquad
               y \mid x \sim \mathcal N\big(\sin(1.5x) + 0.3x,\; \sigma(x)^2\big), \qquad
               \sigma(x) = 0.05 + 0.25\,(1 + \tanh x).

    Returns ``(x, y)``, each ``(n, 1)``. The true mean and standard deviation are
    :func:`heteroscedastic_1d_truth`.
    """
    check_int(n, "n")
    g = torch.Generator().manual_seed(int(seed))
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 6 - 3
    mean, std = heteroscedastic_1d_truth(x)
    y = mean + std * torch.randn(n, 1, generator=g, dtype=torch.float64)
    dev = get_device(device)
    return x.to(dtype=dtype, device=dev), y.to(dtype=dtype, device=dev)


def heteroscedastic_1d_truth(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """True conditional mean and standard deviation of :func:`heteroscedastic_1d`."""
    return torch.sin(1.5 * x) + 0.3 * x, 0.05 + 0.25 * (1 + torch.tanh(x))


# ----------------------------------------------------------------------------
# MNIST and Fashion-MNIST
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    mirror: str
    files: dict  # file name -> sha256


#: Canonical mirrors and SHA-256 of the four gzipped IDX files of each data set.
#: MNIST: LeCun, Cortes & Burges (1998), mirrored by Google's CVDF (the mirror
#: TensorFlow uses). Fashion-MNIST: Xiao, Rasul & Vollgraf (2017), Zalando's mirror.
MNIST_SOURCES = {
    "mnist": _Source(
        mirror="https://storage.googleapis.com/cvdf-datasets/mnist/",
        files={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion": _Source(
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files={
            "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        },
    ),
}

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def cache_dir() -> Path:
    """``$GMLIB_CACHE`` if set, else ``~/.cache/gmlib``."""
    return Path(os.environ.get("GMLIB_CACHE") or Path.home() / ".cache" / "gmlib")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's format; gzipped when the name ends in ``.gz``).

    Header: two zero bytes, a type code, the number of dimensions d, then d
    big-endian uint32 sizes, then the data in row-major order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: bad magic number")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, sha256: str, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out)
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(
                    f"could not download {url} ({err}). Are you offline? Download the file by other "
                    f"means and place it at {dest}, or pass mirror= a reachable mirror."
                ) from err
        got = _sha256(tmp)
        if got != sha256:
            raise ValueError(f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {got}; the file was discarded")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_mnist(
    split: str = "train",
    *,
    kind: str = "mnist",
    root: str | os.PathLike | None = None,
    download: bool = True,
    mirror: str | None = None,
    labels: bool = False,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    timeout: float = 60.0,
):
    """MNIST or Fashion-MNIST as a ``(N, 784)`` tensor of floats in [0, 1].

    Files are looked for in ``root`` (default ``cache_dir()/kind``); missing ones
    are downloaded from ``mirror`` (default: the canonical one in
    :data:`MNIST_SOURCES`) when ``download`` is true. Every file, cached or
    fresh, must match its SHA-256; a download that fails raises
    ``ConnectionError`` saying where to put the file by hand.

    ``split`` is ``"train"`` (60000) or ``"test"`` (10000).
    """
    if kind not in MNIST_SOURCES:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(MNIST_SOURCES)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; MNIST has 'train' and 'test'")
    source = MNIST_SOURCES[kind]
    root = Path(root) if root is not None else cache_dir() / kind
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    base = mirror if mirror is not None else source.mirror
    if not base.endswith("/"):
        base += "/"
    paths = []
    for name in names:
        path = root / name
        expected = source.files[name]
        if path.is_file():
            got = _sha256(path)
            if got != expected:
                raise ValueError(
                    f"cached file {path} has SHA-256 {got}, expected {expected}; delete it to download it again"
                )
        elif download:
            _fetch(base + name, path, expected, timeout)
        else:
            raise FileNotFoundError(f"{path} is missing and download=False")
        paths.append(path)
    images = read_idx(paths[0])  # (N, 28, 28) uint8
    targets = read_idx(paths[1])  # (N,) uint8
    if images.ndim != 3 or targets.ndim != 1 or images.shape[0] != targets.shape[0]:
        raise ValueError(f"unexpected IDX shapes {images.shape} and {targets.shape} in {root}")
    dev = get_device(device)
    x = torch.as_tensor(images.reshape(images.shape[0], -1), dtype=dtype).div_(255.0).to(dev)  # (N, 784)
    if labels:
        return x, torch.as_tensor(targets.astype(np.int64)).to(dev)
    return x
