"""Small network builders shared by the chapters.

Models take their networks as arguments (the maths lives in the model, the
architecture here), so a chapter can swap an MLP for a convolutional net
without touching the model class.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as nnf

__all__ = ["mlp", "ConcatContext", "vae_mlps", "ConvEncoder", "ConvDecoder", "DCGenerator", "DCDiscriminator",
           "time_features", "TimeMLP", "TimeUNet"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU, "gelu": nn.GELU}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, activation: str = "relu") -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden[0] -> ... -> out_dim``.

    Linear layers with ``activation`` between them and none after the last.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    sizes = [in_dim, *hidden, out_dim]
    if any((not isinstance(s, int)) or s <= 0 for s in sizes):
        raise ValueError(f"layer sizes must be positive integers, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class ConcatContext(nn.Module):
    """Wrap ``net`` so that it takes a context: ``forward(inputs, y) = net(cat[inputs, code(y)])``.

    ``code(y)`` is the one-hot vector of integer labels ``y`` ``(B,)`` when ``n_classes``
    is given, else ``y`` itself, a float tensor ``(B, C)``. This is how a conditional
    VAE (Sohn et al. 2015) feeds the class to its encoder and decoder
    (:class:`gmlib.vae.VAE` with ``conditional=True``); ``net`` must accept the
    widened input (``in_dim + n_classes`` or ``in_dim + C`` features).
    """

    def __init__(self, net: nn.Module, n_classes: int | None = None):
        super().__init__()
        if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2):
            raise ValueError(f"n_classes must be an integer >= 2 or None, got {n_classes!r}")
        self.net, self.n_classes = net, n_classes

    def code(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The context as features ``(B, C)`` in the dtype and device of ``like``."""
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"the context y must be a tensor, got {type(y).__name__}")
        if self.n_classes is not None:
            if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1:
                raise ValueError(f"y must be integer class labels of shape (B,), got {y.dtype} {tuple(y.shape)}")
            if bool(((y < 0) | (y >= self.n_classes)).any()):
                raise ValueError(f"class labels must lie in 0..{self.n_classes - 1}")
            return nn.functional.one_hot(y.to(like.device), self.n_classes).to(like.dtype)
        if not y.is_floating_point() or y.dim() != 2:
            raise ValueError(
                f"y must be float features of shape (B, C) (or give n_classes), got {y.dtype} {tuple(y.shape)}"
            )
        return y.to(device=like.device, dtype=like.dtype)

    def forward(self, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.code(y, inputs)
        if c.shape[0] != inputs.shape[0]:
            raise ValueError(f"inputs have {inputs.shape[0]} rows but y has {c.shape[0]}")
        return self.net(torch.cat([inputs, c], dim=-1))


def vae_mlps(
    data_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (256, 256),
    *,
    param_size: int = 1,
    n_classes: int | None = None,
    activation: str = "relu",
) -> tuple[nn.Module, nn.Module]:
    """An MLP encoder and decoder for :class:`gmlib.vae.VAE`.

    encoder: ``(B, data_dim) -> (B, 2 * latent_dim)`` (mean and log-variance);
    decoder: ``(N, latent_dim) -> (N, data_dim)`` when ``param_size == 1``, else
    ``(N, data_dim, param_size)`` (the likelihood's ``param_size``, e.g. 17 for
    ``Categorical(17)``). The decoder's hidden layers are ``hidden`` reversed. With
    ``n_classes`` both are wrapped in :class:`ConcatContext` and take ``(inputs, y)``.
    """
    for name, v in (("data_dim", data_dim), ("latent_dim", latent_dim), ("param_size", param_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    extra = 0 if n_classes is None else n_classes
    encoder: nn.Module = mlp(data_dim + extra, list(hidden), 2 * latent_dim, activation=activation)
    decoder: nn.Module = mlp(latent_dim + extra, list(hidden)[::-1], data_dim * param_size, activation=activation)
    if param_size > 1:
        decoder = nn.Sequential(decoder, nn.Unflatten(-1, (data_dim, param_size)))
    if n_classes is not None:
        encoder, decoder = ConcatContext(encoder, n_classes), ConcatContext(decoder, n_classes)
    return encoder, decoder


class ConvEncoder(nn.Module):
    """A small convolutional encoder for square images given as flat rows ``(B, side * side)``.

    ``x * in_scale`` (e.g. ``1 / 16`` for the 0..16 digits) goes through three 3x3
    convolutions (the last two with stride 2: 8x8 -> 4x4 -> 2x2 for the digits), a hidden
    layer of ``hidden`` units and a linear layer to ``(B, out_dim)`` (``2 * latent_dim``
    for a VAE's mean and log-variance), with ReLU and ``dropout`` after every hidden layer.
    """

    def __init__(self, side: int, out_dim: int, *, channels: int = 32, hidden: int = 256,
                 dropout: float = 0.0, in_scale: float = 1.0):
        super().__init__()
        if side % 4:
            raise ValueError(f"side must be a multiple of 4 (two stride-2 convolutions), got {side}")
        self.side, self.in_scale = side, float(in_scale)
        c, q = channels, side // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(), nn.Dropout(dropout),  # (B, c, side/2, side/2)
            nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(), nn.Dropout(dropout),  # (B, c, side/4, side/4)
            nn.Flatten(), nn.Linear(c * q * q, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * self.in_scale).reshape(-1, 1, self.side, self.side))  # (B, out_dim)


class ConvDecoder(nn.Module):
    """A small convolutional decoder ``(N, latent_dim) -> (N, side * side, param_size)``
    (or ``(N, side * side)`` when ``param_size == 1``).

    A hidden layer maps ``z`` to ``channels`` feature maps of size ``side / 2``; they are
    upsampled by 2 and go through two 3x3 convolutions and a 1x1 convolution to
    ``param_size`` maps, plus a learned per-pixel bias (the convolutions alone would treat
    every position alike). ReLU and ``dropout`` after the hidden layers.
    """

    def __init__(self, side: int, latent_dim: int, param_size: int = 1, *, channels: int = 32,
                 hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if side % 2:
            raise ValueError(f"side must be even, got {side}")
        self.side, self.channels, self.param_size = side, channels, param_size
        h = side // 2
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                nn.Linear(hidden, channels * h * h), nn.ReLU())
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, param_size, 1),
        )
        self.bias = nn.Parameter(torch.zeros(param_size, side, side))  # per-pixel bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.side // 2
        # channels last (NHWC in memory): the CPU convolutions run about twice as fast on it (0.051 -> 0.025 s
        # for 512 codes of the digits' decoder on one thread, 2026-12-07), and the output, already laid out
        # pixel by pixel, needs no copy to become (N, D, P). Same values up to float32 rounding.
        maps = self.fc(z).view(-1, self.channels, h, h).contiguous(memory_format=torch.channels_last)
        out = self.net(maps) + self.bias  # (N, P, side, side)
        out = out.permute(0, 2, 3, 1).reshape(z.shape[0], self.side * self.side, self.param_size)
        return out.squeeze(-1) if self.param_size == 1 else out  # (N, D, P) or (N, D)


class DCGenerator(nn.Module):
    """A DCGAN-style generator (Radford et al. 2016) for square images as flat rows.

    ``z`` ``(N, latent_dim)`` -> a linear layer to ``2 * channels`` maps of size ``side / 4``
    -> two stride-2 transposed 4x4 convolutions (``side/4 -> side/2 -> side``) -> ``tanh``:
    ``(N, side * side)`` in (-1, 1). Batch normalization and ReLU after the hidden layers
    (``batchnorm=False`` leaves the normalization out).
    """

    def __init__(self, latent_dim: int, side: int = 8, *, channels: int = 64, batchnorm: bool = True):
        super().__init__()
        if side % 4:
            raise ValueError(f"side must be a multiple of 4 (two stride-2 upsamplings), got {side}")
        self.side, self.channels, q = side, channels, side // 4
        norm1 = nn.BatchNorm1d(2 * channels * q * q) if batchnorm else nn.Identity()
        norm2 = nn.BatchNorm2d(channels) if batchnorm else nn.Identity()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * channels * q * q), norm1, nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), norm2, nn.ReLU(),  # (N, c, side/2, side/2)
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1), nn.Tanh(),  # (N, 1, side, side)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.side // 4
        return self.net(self.fc(z).view(-1, 2 * self.channels, q, q)).reshape(z.shape[0], -1)  # (N, side * side)


class DCDiscriminator(nn.Module):
    """A DCGAN-style discriminator for square images as flat rows ``(B, side * side)`` -> ``(B, 1)``.

    Two stride-2 4x4 convolutions (``side -> side/2 -> side/4``) with leaky ReLU (slope 0.2)
    and a linear layer to one raw score. No batch normalization, so each example's score
    depends on that example alone (the gradient penalty of WGAN-GP needs this).
    """

    def __init__(self, side: int = 8, *, channels: int = 64):
        super().__init__()
        if side % 4:
            raise ValueError(f"side must be a multiple of 4 (two stride-2 convolutions), got {side}")
        self.side, q = side, side // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, c, side/2, side/2)
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, 2c, side/4, side/4)
            nn.Flatten(), nn.Linear(2 * channels * q * q, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, self.side, self.side))  # (B, 1)


# --------------------------------------------------------------------------------------
# Chapter 9: networks of (x, t) and an optional class y, for denoising diffusion and flow matching
# --------------------------------------------------------------------------------------


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features ``(B, dim)`` of times ``t`` ``(B,)`` in [0, 1] (the position encoding of
    Vaswani et al. 2017 applied to ``1000 t``, as Ho et al. 2020 embed their step index): half sines,
    half cosines, at frequencies spaced geometrically from 1 to 1/1000."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = 1000.0 * t.float().reshape(-1, 1) * freqs  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Conditioning(nn.Module):
    """The embedding of the time and, when ``n_classes`` is set, of a class label: ``(B, width)``.

    The class table has ``n_classes + 1`` rows, the last for "no label" (what ``y=None`` means, and
    what classifier-free guidance trains with when it drops a label)."""

    def __init__(self, width: int, time_dim: int, n_classes: int | None):
        super().__init__()
        if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2):
            raise ValueError(f"n_classes must be an integer >= 2 or None, got {n_classes!r}")
        self.time_dim, self.n_classes = time_dim, n_classes
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.label = nn.Embedding(n_classes + 1, width) if n_classes is not None else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) or be a scalar, got {tuple(t.shape)}")
        e = self.time(time_features(t, self.time_dim).to(self.time[0].weight.dtype))
        if self.label is None:
            if y is not None:
                raise ValueError("this network has no classes (n_classes=None) but was given labels y")
            return e
        if y is None:
            y = torch.full((batch,), self.n_classes, dtype=torch.long, device=t.device)
        if y.is_floating_point() or y.shape != (batch,):
            raise ValueError(f"y must be integer labels of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
        if bool(((y < 0) | (y > self.n_classes)).any()):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1} (or {self.n_classes} for 'no label')")
        return e + self.label(y.long())


class TimeMLP(nn.Module):
    """``f(x, t, y) -> (B, out_dim)``: an MLP on ``x`` ``(B, in_dim)`` whose hidden layers each add an
    embedding of the time ``t`` ``(B,)`` (and of the label ``y``, when ``n_classes`` is set).

    The denoiser of Chapter 9's 2-D densities (``out_dim = in_dim``) and its noise-aware classifier
    (``out_dim = 10`` logits). SiLU activations; the last layer starts at zero when ``zero_out``, so an
    untrained denoiser predicts no noise.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (128, 128, 128), *,
                 time_dim: int = 32, n_classes: int | None = None, zero_out: bool = True):
        super().__init__()
        hidden = list(hidden)
        if not hidden or any((not isinstance(h, int)) or h <= 0 for h in [in_dim, out_dim, *hidden]):
            raise ValueError(f"sizes must be positive integers, got in_dim={in_dim}, hidden={hidden}, "
                             f"out_dim={out_dim}")
        self.in_dim = in_dim
        self.cond = nn.ModuleList([_Conditioning(h, time_dim, n_classes) for h in hidden])
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip([in_dim, *hidden[:-1]], hidden)])
        self.out = nn.Linear(hidden[-1], out_dim)
        if zero_out:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        h = x
        for layer, cond in zip(self.layers, self.cond):
            h = nnf.silu(layer(h) + cond(t, y, x.shape[0]))
        return self.out(h)


class _ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; the conditioning added as a per-channel shift; again with dropout; a
    skip connection (a 1x1 conv when the widths differ)."""

    def __init__(self, c_in: int, c_out: int, width: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(width, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        a = self.conv1(nnf.silu(self.norm1(h))) + self.emb(nnf.silu(e))[:, :, None, None]
        a = self.conv2(self.drop(nnf.silu(self.norm2(a))))
        return self.skip(h) + a


class TimeUNet(nn.Module):
    r"""``f(x, t, y) -> (B, side * side)``: a small U-Net (Ronneberger et al. 2015, as Ho et al. 2020 use
    it) on square images given as flat rows, conditioned on the time ``t`` ``(B,)`` and, when
    ``n_classes`` is set, on a label ``y`` (``None``: no label).

    Two residual blocks at full resolution (``channels`` maps), average pooling to half, two blocks at
    ``2 * channels``, then back up: nearest upsampling, the full-resolution features concatenated, two
    blocks. The output convolution starts at zero. For the 8x8 digits with ``channels = 64``: about
    1.1 M parameters.

    ``fourier``: exponents :math:`k` of extra input channels :math:`\sin(2^k\pi x)`, :math:`\cos(2^k\pi x)`
    (Kingma et al. 2021's Fourier features): with :math:`2^k` near the number of grey levels they let the
    network see where a nearly clean pixel sits inside its level's bin, which a likelihood needs.

    ``symmetries``: the network also takes ``aug`` ``(B,)``, which of the eight symmetries of the square
    (:func:`gmlib.diffusion.square_symmetry`) was applied to the training image (0: none, what ``aug=None``
    means), through a learned embedding added to the time's: a model trained on turned and flipped images
    that knows which it was shown (the non-leaking augmentation of Karras et al. 2022).
    """

    def __init__(self, side: int = 8, *, channels: int = 64, time_dim: int = 64, n_classes: int | None = None,
                 dropout: float = 0.1, fourier: Sequence[int] = (), symmetries: bool = False):
        super().__init__()
        if side % 2:
            raise ValueError(f"side must be even (one halving), got {side}")
        c, width = channels, 4 * channels
        self.side = side
        self.cond = _Conditioning(width, time_dim, n_classes)
        self.symmetry = nn.Embedding(8, width) if symmetries else None
        if self.symmetry is not None:
            nn.init.zeros_(self.symmetry.weight)
        self.register_buffer("freqs", torch.tensor([math.pi * 2.0**k for k in fourier], dtype=torch.float32))
        self.inp = nn.Conv2d(1 + 2 * len(self.freqs), c, 3, padding=1)
        self.down = nn.ModuleList([_ResBlock(c, c, width, dropout), _ResBlock(c, c, width, dropout)])
        self.mid = nn.ModuleList([_ResBlock(c, 2 * c, width, dropout), _ResBlock(2 * c, 2 * c, width, dropout)])
        self.up = nn.ModuleList([_ResBlock(3 * c, c, width, dropout), _ResBlock(c, c, width, dropout)])
        self.out_norm, self.out = nn.GroupNorm(8, c), nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                aug: torch.Tensor | None = None) -> torch.Tensor:
        d = self.side * self.side
        if x.dim() != 2 or x.shape[1] != d:
            raise ValueError(f"x must have shape (B, {d}), got {tuple(x.shape)}")
        e = self.cond(t, y, x.shape[0])
        if aug is not None:
            if self.symmetry is None:
                raise ValueError("this network was built without symmetries=True; it takes no aug")
            e = e + self.symmetry(aug.long())
        h = x.reshape(-1, 1, self.side, self.side)
        if len(self.freqs):
            angles = h * self.freqs.to(h.dtype).reshape(1, -1, 1, 1)  # (B, F, side, side)
            h = torch.cat([h, angles.sin(), angles.cos()], dim=1)
        h = self.inp(h)
        for block in self.down:
            h = block(h, e)
        skip = h
        h = nnf.avg_pool2d(h, 2)
        for block in self.mid:
            h = block(h, e)
        h = torch.cat([nnf.interpolate(h, scale_factor=2.0, mode="nearest"), skip], dim=1)
        for block in self.up:
            h = block(h, e)
        return self.out(nnf.silu(self.out_norm(h))).reshape(x.shape[0], d)
