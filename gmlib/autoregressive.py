r"""Chapter 8: autoregressive models of discrete data.

An autoregressive model writes the joint distribution of :math:`x = (x_1, \dots, x_D)` exactly, by the
chain rule of probability, in a chosen ordering :math:`o = (o_1, \dots, o_D)` (a permutation of the
pixels; raster order, row by row, unless stated):

.. math::  \log p(x) = \sum_{k=1}^{D} \log p\big(x_{o_k} \mid x_{o_1}, \dots, x_{o_{k-1}}\big).
           \tag{ch08:chain-rule}

Every conditional is a categorical distribution over the ``levels`` values :math:`0..L-1`, with logits
computed by one network from the earlier pixels only:

.. math::  p\big(x_{o_k} = l \mid x_{o_{<k}}\big) = \operatorname{softmax}\big(f_{o_k}(x_{o_{<k}})\big)_l .
           \tag{ch08:categorical}

The whole difficulty is to compute all :math:`D` logit vectors in **one** pass while each
:math:`f_{o_k}` sees only :math:`x_{o_{<k}}` (the *autoregressive property*); then the
log-likelihood is exact and costs one pass, and sampling costs :math:`D` sequential passes. The
models of this file differ only in how they enforce it:

- :class:`MADEModel` (Germain et al. 2015): an MLP whose weights are masked by degrees
  (:class:`gmlib.flows.MADE`), any ordering.
- :class:`PixelCNN` (van den Oord, Kalchbrenner & Kavukcuoglu 2016): convolutions whose kernels are
  masked (:class:`MaskedConv2d`) so that a pixel sees only the pixels above it and to its left,
  :eq:`ch08:masked-conv`. Stacking them leaves a *blind spot* (pixels above and to the right that
  no path reaches; a test shows it).
- :class:`GatedPixelCNN` (van den Oord et al. 2016, "Conditional image generation with PixelCNN
  decoders"): a vertical stack (the rows above) feeding a horizontal stack (the row so far), with
  gated activations :eq:`ch08:gated`; no blind spot.
- :class:`CausalTransformer` (Vaswani et al. 2017; decoder only, as in GPT): self-attention with a
  causal mask :eq:`ch08:attention`, and a key-value cache that makes each sampling step cost one
  position instead of the whole prefix.
- :class:`SequenceLSTM`: an LSTM over the pixels in the ordering, one pixel per step (the simplest
  recurrent model; *not* the Row LSTM or Diagonal BiLSTM of van den Oord, Kalchbrenner & Kavukcuoglu
  2016, which run over rows and diagonals of the image).

**Completion.** With the observed pixels :math:`x_{\mathcal O}` all *before* the hidden ones
:math:`x_{\mathcal H}` in the ordering (the top rows observed, in raster order),

.. math::  \log p(x_{\mathcal H} \mid x_{\mathcal O}) = \sum_{k:\, o_k \in \mathcal H}
           \log p\big(x_{o_k} \mid x_{o_{<k}}\big),       \tag{ch08:completion}

and sampling the hidden pixels in order from their conditionals draws exactly from
:math:`p(x_{\mathcal H}\mid x_{\mathcal O})`. For any other pattern (the bottom half observed, a hole
in the middle) the conditionals of a hidden pixel would need a sum over the later observed ones,
which these models cannot do in closed form: :meth:`AutoregressiveModel.complete` and
:meth:`AutoregressiveModel.conditional_log_prob` refuse such masks with ``ValueError`` instead of
returning something that only looks like a completion.

**Temperature.** ``sample(n, temperature=T)`` draws each pixel from
:math:`\operatorname{softmax}(f/T)`: the conditionals are sharpened one at a time, which is not
the same as sampling :math:`p(x)^{1/T}` normalised. ``T = 0`` takes the most probable value of
each conditional in turn (greedy decoding).

Conventions
-----------
- Data ``x``: ``(B, D)`` integers in ``0..levels-1``, as a floating tensor holding integers (what
  ``gmlib.data.digits(view="int")`` or ``view="binary"`` gives) or an integer tensor. Images are
  rows of ``side * side`` pixels in row-major order (``x.view(-1, side, side)``). Anything else
  (non-integers, values out of range, the wrong ``D``, NaN) raises ``ValueError``.
- ``log_prob(x) -> (B,)`` in nats, per example, never averaged; ``loss(x)`` is ``-log_prob(x).mean()``
  (for :func:`gmlib.train.train`); ``logits(x) -> (B, levels, D)``.
- ``sample(n)`` returns ``(n, D)`` in the model's floating dtype (like the digits); ``complete``
  returns ``(n_samples, B, D)`` in ``x``'s dtype. Sampling methods take an optional
  ``generator`` on the model's device; without one the global torch RNG is used.
- Tensors are made on the model's device (``x.new_*``, buffers), so a model moved with
  ``.to("cuda")`` runs there.

Equation labels (``ch08:...``) refer to Chapter 8 of the book.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as nnf

from ._checks import check_int
from .flows import MADE

__all__ = [
    "AutoregressiveModel", "MADEModel", "MaskedConv2d", "PixelCNN", "GatedPixelCNN",
    "TransformerConfig", "CausalTransformer", "SequenceLSTM", "RowLSTM", "OrderMixture", "ScanMixture", "SCANS",
    "scan_order",
]


def _check_order(order, features: int) -> list[int]:
    order = list(range(features)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(features)):
        raise ValueError(f"order must be a permutation of 0..{features - 1}, got {order!r}")
    return order


def _check_odd_kernel(k, name: str) -> int:
    check_int(k, name)
    if k % 2 == 0:
        raise ValueError(f"{name} must be odd, got {k}")
    return k


def _check_dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {p!r}")
    return float(p)


def _scaled(x: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """Pixel values :math:`0..L-1` as network inputs in :math:`[-1, 1]`: :math:`2x/(L-1) - 1`."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


# -- the family's contract ---------------------------------------------------------------------


class AutoregressiveModel(nn.Module):
    r"""Base class: a categorical autoregressive model :eq:`ch08:chain-rule` of ``(B, D)`` integer data.

    A subclass sets ``features`` (:math:`D`), ``levels`` (:math:`L`) and the ordering in ``__init__``
    (through this class's ``__init__``) and implements two private methods, the seam the tests
    differentiate through:

    - ``_embed(x)``: long pixels ``(B, D)`` -> per-pixel input features ``(B, D, C)`` (pixel ``j``'s
      value only);
    - ``_logits_from_embedding(e)``: ``(B, D, C)`` -> logits ``(B, L, D)``, where the logits of pixel
      ``o_k`` depend only on the features of ``o_1..o_{k-1}``.

    Buffers: ``order`` ``(D,)`` (``order[k]`` is the ``k``-th pixel generated) and ``rank`` ``(D,)``
    (its inverse: ``rank[d]`` is pixel ``d``'s position in the ordering).
    """

    def __init__(self, features: int, levels: int, order: Sequence[int] | None = None):
        super().__init__()
        self.features = check_int(features, "features")
        self.levels = check_int(levels, "levels", minimum=2)
        order = _check_order(order, self.features)
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))  # (D,)
        self.register_buffer("rank", torch.argsort(self.order))  # (D,)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # follows .to(device, dtype)

    def extra_repr(self) -> str:
        return f"features={self.features}, levels={self.levels}"

    # -- checks ---------------------------------------------------------------------------

    def _check_x(self, x, name: str = "x") -> torch.Tensor:
        """``x`` as a long tensor ``(B, D)``, after checking it holds integers in ``0..levels-1``."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must hold integers in 0..{self.levels - 1} (a floating or integer tensor), "
                             f"got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.features or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape (B, D={self.features}) with B >= 1, got {tuple(x.shape)}")
        if x.is_floating_point():
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
            if bool((x != x.round()).any()):
                raise ValueError(f"{name} must hold integers in 0..{self.levels - 1}; it has non-integer values")
        if bool(((x < 0) | (x > self.levels - 1)).any()):
            raise ValueError(f"{name} must hold integers in 0..{self.levels - 1}; it has values out of range "
                             f"(min {x.min().item()}, max {x.max().item()})")
        return x.long()

    def _check_mask(self, mask, x: torch.Tensor) -> torch.Tensor:
        """``mask`` ``(B, D)`` bool, True = observed, whose observed pixels precede the hidden ones."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = observed), got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if mask.shape != x.shape:
            raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
        in_order = mask.to(self.order.device)[:, self.order]  # (B, D), True = observed, in generation order
        late = in_order[:, 1:] & ~in_order[:, :-1]  # an observed pixel right after a hidden one
        if bool(late.any()):
            b = int(late.any(1).nonzero()[0])
            raise ValueError(
                "complete and conditional_log_prob are exact only when every observed pixel comes before every "
                f"hidden one in the model's ordering (e.g. the top rows observed in raster order); in row {b} of "
                "mask an observed pixel comes after a hidden one, and p(x_hidden | x_observed) would need a sum "
                "over the hidden pixels that this model cannot do exactly")
        return mask.to(x.device)

    @staticmethod
    def _check_temperature(temperature) -> float:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature >= 0 \
                or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a non-negative finite number, got {temperature!r}")
        return float(temperature)

    # -- the network seam (subclasses) ----------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_from_embedding(self._embed(x))  # (B, L, D)

    # -- density --------------------------------------------------------------------------

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of every conditional :eq:`ch08:categorical`, ``(B, levels, D)``, in one pass."""
        return self._logits(self._check_x(x))

    def _pixel_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x_d \\mid x_{<d})` for every pixel, ``(B, D)``."""
        return nnf.log_softmax(self._logits(x), dim=1).gather(1, x.unsqueeze(1)).squeeze(1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log-likelihood :eq:`ch08:chain-rule` in nats, ``(B,)``."""
        return self._pixel_log_probs(self._check_x(x)).sum(1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``-log_prob(x).mean()``, the scalar :func:`gmlib.train.train` minimises."""
        return -self.log_prob(x).mean()

    def conditional_log_prob(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:eq:`ch08:completion`: :math:`\\log p(x_{\\mathcal H}\\mid x_{\\mathcal O})` in nats, ``(B,)``;
        ``mask`` ``(B, D)`` bool, True = observed, every observed pixel before every hidden one in the
        ordering (else ``ValueError``)."""
        x = self._check_x(x)
        mask = self._check_mask(mask, x)
        return (self._pixel_log_probs(x) * ~mask).sum(1)

    # -- sampling -------------------------------------------------------------------------

    @staticmethod
    def _draw(logits: torch.Tensor, generator, temperature: float) -> torch.Tensor:
        """One value per row from :math:`\\operatorname{softmax}(\\text{logits}/T)`, ``(B, L) -> (B,)``."""
        if temperature == 0:
            return logits.argmax(1)
        probs = torch.softmax(logits / temperature, dim=1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def _fill(self, x: torch.Tensor, hidden: torch.Tensor, generator, temperature: float) -> torch.Tensor:
        """Draw the ``hidden`` pixels of ``x`` (both ``(B, D)``) in the ordering, each from its conditional
        given everything before it: one full pass per position (models with a cache override this)."""
        x = x.clone()
        for k in range(self.features):
            d = int(self.order[k])
            if not bool(hidden[:, d].any()):
                continue
            new = self._draw(self._logits(x)[:, :, d], generator, temperature)  # (B,)
            x[:, d] = torch.where(hidden[:, d], new, x[:, d])
        return x

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``n`` samples ``(n, D)`` (model dtype), by :math:`D` sequential draws in the ordering."""
        check_int(n, "n")
        temperature = self._check_temperature(temperature)
        x = self._ref.new_zeros((n, self.features), dtype=torch.long)
        hidden = torch.ones_like(x, dtype=torch.bool)
        return self._fill(x, hidden, generator, temperature).to(self._ref.dtype)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, mask: torch.Tensor, *, n_samples: int = 1,
                 generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Exact samples of :math:`p(x_{\\mathcal H}\\mid x_{\\mathcal O})` :eq:`ch08:completion`,
        ``(n_samples, B, D)`` in ``x``'s dtype: observed pixels (``mask`` True) copied from ``x``,
        hidden ones drawn in order. ``mask`` must put every observed pixel before every hidden one
        in the ordering; other patterns raise ``ValueError`` (they would need a sum this model cannot do)."""
        xl = self._check_x(x)
        mask = self._check_mask(mask, xl)
        check_int(n_samples, "n_samples")
        temperature = self._check_temperature(temperature)
        B = xl.shape[0]
        xr = xl.repeat(n_samples, 1)  # (n_samples * B, D)
        hidden = (~mask).repeat(n_samples, 1)
        out = self._fill(xr, hidden, generator, temperature)
        return out.reshape(n_samples, B, self.features).to(x.dtype)


# -- MADE ----------------------------------------------------------------------------------------


class MADEModel(AutoregressiveModel):
    r"""A categorical MADE (Germain et al. 2015): a :class:`gmlib.flows.MADE` with ``levels`` outputs
    per pixel, whose masks make output :math:`o_k` depend on inputs :math:`o_{<k}` only.

    Input: each pixel scaled to :math:`[-1, 1]`. ``order`` is any permutation of ``0..D-1`` (raster
    by default); ``zero_init`` starts the output layer at zero (every conditional uniform).
    """

    def __init__(self, features: int, levels: int = 2, hidden: Sequence[int] = (256, 256), *,
                 order: Sequence[int] | None = None, zero_init: bool = False):
        super().__init__(features, levels, order)
        self.made = MADE(self.features, hidden, params_per_feature=self.levels, order=self.order.tolist(),
                         zero_init=zero_init)

    def _embed(self, x):
        return _scaled(x, self.levels, self._ref.dtype).unsqueeze(-1)  # (B, D, 1)

    def _logits_from_embedding(self, e):
        return self.made(e.squeeze(-1))  # (B, L, D)


# -- PixelCNN ------------------------------------------------------------------------------------


class MaskedConv2d(nn.Conv2d):
    r"""A square convolution (odd ``kernel_size``, "same" padding) whose kernel is masked so that the
    output at :math:`(i, j)` sees only input pixels before :math:`(i, j)` in raster order
    (van den Oord, Kalchbrenner & Kavukcuoglu 2016):

    .. math::  (W\odot M) * h, \qquad M_{uv} = [u < c] + [u = c][v < c] + [\text{type B}][u = c][v = c],
               \tag{ch08:masked-conv}

    with :math:`c` the kernel centre: type ``"A"`` excludes the centre (the first layer: a pixel
    must not see itself), type ``"B"`` includes it (later layers: the centre then carries only
    earlier pixels). The images here have one channel, so the masks among colour channels of the
    paper are not needed.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str, *, bias: bool = True):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        k = _check_odd_kernel(kernel_size, "kernel_size")
        super().__init__(in_channels, out_channels, k, padding=k // 2, bias=bias)
        c = k // 2
        mask = torch.zeros(k, k)
        mask[:c] = 1  # rows above the centre
        mask[c, :c] = 1  # left of the centre in its row
        if mask_type == "B":
            mask[c, c] = 1
        self.register_buffer("mask", mask)  # (k, k)
        self.mask_type = mask_type

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_type={self.mask_type!r}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nnf.conv2d(h, self.weight * self.mask, self.bias, padding=self.padding)


#: The eight raster scans of a square image (its dihedral group), by name: ``(transpose, flip_rows,
#: flip_cols)`` applied to the image, in that order, before a network that reads it in raster order.
SCANS = {
    "rows": (False, False, False),  # top row first, each row left to right (raster order)
    "rows-rtl": (False, False, True),  # top row first, each row right to left
    "rows-up": (False, True, False),  # bottom row first, left to right
    "rows-up-rtl": (False, True, True),  # bottom row first, right to left (the image turned 180 degrees)
    "cols": (True, False, False),  # left column first, each column top to bottom
    "cols-up": (True, False, True),  # left column first, bottom to top
    "cols-rtl": (True, True, False),  # right column first, top to bottom
    "cols-rtl-up": (True, True, True),  # right column first, bottom to top
}


def scan_order(side: int, scan: str = "rows") -> list[int]:
    """The ordering (pixel indices of a ``side x side`` image in row-major order, generated first to
    last) of the raster scan ``scan`` (a key of :data:`SCANS`)."""
    side = check_int(side, "side")
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {sorted(SCANS)}, got {scan!r}")
    transpose, flip_rows, flip_cols = SCANS[scan]
    idx = torch.arange(side * side).view(side, side)
    if transpose:
        idx = idx.t()
    if flip_rows:
        idx = idx.flip(0)
    if flip_cols:
        idx = idx.flip(1)
    return idx.reshape(-1).tolist()


class _ImageModel(AutoregressiveModel):
    """Models of ``side x side`` images that read them in a raster scan (``scan``, a key of
    :data:`SCANS`; ``"rows"``, raster order, by default): the image is turned or flipped so that the
    scan becomes raster order, the network (``_net``, raster order) runs on it, and the logits are put
    back in place. Pixels enter as one scaled channel."""

    def __init__(self, side: int, levels: int, scan: str = "rows"):
        side = check_int(side, "side")
        super().__init__(side * side, levels, scan_order(side, scan))
        self.side = side
        self.scan = scan

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", scan={self.scan!r}" if self.scan != "rows" else "")

    def _embed(self, x):
        return _scaled(x, self.levels, self._ref.dtype).unsqueeze(-1)  # (B, D, 1)

    def _logits_from_embedding(self, e):
        B, s, raster = e.shape[0], self.side, self.scan == "rows"
        e = e if raster else e[:, self.order]  # position k holds pixel order[k]: the scan in raster order
        img = e.transpose(1, 2).reshape(B, e.shape[2], s, s)  # (B, C, H, W)
        out = self._net(img).reshape(B, self.levels, self.features)  # (B, L, D)
        return out if raster else out[:, :, self.rank]  # (B, L, D), back in pixel order

    def _net(self, img: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _head(channels: int, levels: int) -> nn.Sequential:
    """ReLU, 1x1 conv, ReLU, 1x1 conv to ``levels`` logits per pixel."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, levels, 1))


class PixelCNN(_ImageModel):
    r"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016) on ``side x side`` images in raster order:
    a type-A ``first_kernel`` x ``first_kernel`` :class:`MaskedConv2d`, then ``n_layers`` residual
    layers :math:`h \leftarrow h + \mathrm{conv}^{B}_{3\times3}(\mathrm{ReLU}(h))`, then a 1x1 head to
    ``levels`` logits per pixel.

    The receptive field of pixel :math:`(i, j)` holds, ``r`` rows up, only the columns up to
    :math:`j + r` (each masked 3x3 layer reaches one column right only by going one row up): the
    pixels above and to the right beyond that diagonal are a *blind spot* that no depth removes.

    ``dropout`` drops channels of each residual branch in training; ``scan`` (a key of :data:`SCANS`)
    reads the image in another raster scan (the same network on the turned or flipped image).
    """

    def __init__(self, side: int, levels: int = 2, *, channels: int = 64, n_layers: int = 5, first_kernel: int = 7,
                 dropout: float = 0.0, scan: str = "rows"):
        super().__init__(side, levels, scan)
        check_int(channels, "channels")
        check_int(n_layers, "n_layers", minimum=0)
        self.input = MaskedConv2d(1, channels, _check_odd_kernel(first_kernel, "first_kernel"), "A")
        self.layers = nn.ModuleList(MaskedConv2d(channels, channels, 3, "B") for _ in range(n_layers))
        self.drop = nn.Dropout(_check_dropout(dropout))
        self.head = _head(channels, self.levels)

    def _net(self, img, shift=None):
        h = self.input(img)  # (B, C, H, W)
        if shift is not None:  # (B, C, 1, 1): a per-image vector (ScanMixture's scan), data-independent
            h = h + shift
        for conv in self.layers:
            h = h + self.drop(conv(nnf.relu(h)))
        return self.head(h)  # (B, L, H, W)


def _gate(a: torch.Tensor) -> torch.Tensor:
    """:math:`\\tanh(a_1)\\odot\\sigma(a_2)` of the two channel halves of ``a``."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class _GatedLayer(nn.Module):
    r"""One layer of the gated PixelCNN (van den Oord et al. 2016, Fig. 2), kernel size :math:`k`:

    - vertical stack: a :math:`(k/2+1)\times k` convolution whose output at row :math:`i` sees rows
      :math:`i-k/2..i` (all :math:`k` columns around :math:`j`);
    - that output shifted down one row (so it holds rows strictly above :math:`i` only) enters the
      horizontal stack through a 1x1 convolution;
    - horizontal stack: a :math:`1\times(k/2+1)` convolution over columns :math:`j-k/2..j` of the same
      row (:math:`1\times k/2` over :math:`j-k/2..j-1` in the first layer, which must not see the pixel
      itself), a gate, a 1x1 convolution and a residual connection (not in the first layer).
    """

    def __init__(self, in_channels: int, channels: int, k: int, first: bool, dropout: float = 0.0):
        super().__init__()
        self.first = first
        self.drop = nn.Dropout(dropout)
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (k // 2 + 1, k), padding=(k // 2, k // 2))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        width = k // 2 if first else k // 2 + 1
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, width), padding=(0, k // 2))
        self.h_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = v.shape[-2:]
        v_pre = self.vertical(v)[:, :, :H]  # (B, 2C, H, W), row i sees rows i-k/2..i
        v_down = nnf.pad(v_pre, (0, 0, 1, 0))[:, :, :H]  # row i holds row i-1's: rows above only
        h_pre = self.horizontal(h)[:, :, :, :W] + self.v_to_h(v_down)  # (B, 2C, H, W)
        h_new = self.drop(self.h_out(_gate(h_pre)))
        return _gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(_ImageModel):
    r"""The gated PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN
    decoders"), unconditional, on ``side x side`` images in raster order: ``n_layers`` gated layers
    (the first with kernel ``first_kernel``, the others 3), each

    .. math::  y = \tanh(W_f * h)\odot\sigma(W_g * h),          \tag{ch08:gated}

    on a vertical stack (rows above) and a horizontal stack (the row to the left) combined so that
    the receptive field of pixel :math:`(i, j)` grows to *every* earlier pixel (no blind spot, a
    test checks it); the horizontal stack's output goes through a 1x1 head to ``levels`` logits.
    ``dropout`` and ``scan`` as in :class:`PixelCNN` (dropout on each layer's horizontal output).
    """

    def __init__(self, side: int, levels: int = 2, *, channels: int = 64, n_layers: int = 5, first_kernel: int = 7,
                 dropout: float = 0.0, scan: str = "rows"):
        super().__init__(side, levels, scan)
        check_int(channels, "channels")
        check_int(n_layers, "n_layers")
        k0 = _check_odd_kernel(first_kernel, "first_kernel")
        p = _check_dropout(dropout)
        self.layers = nn.ModuleList(
            _GatedLayer(1 if i == 0 else channels, channels, k0 if i == 0 else 3, first=i == 0, dropout=p)
            for i in range(n_layers))
        self.head = _head(channels, self.levels)

    def _net(self, img, shift=None):
        v = h = img
        for i, layer in enumerate(self.layers):
            v, h = layer(v, h)  # (B, C, H, W) each
            if i == 0 and shift is not None:  # (B, C, 1, 1): a per-image vector (ScanMixture's scan)
                v, h = v + shift, h + shift
        return self.head(h)  # (B, L, H, W)


# -- sequence models: the Transformer and the LSTM -----------------------------------------------


class _SequenceModel(AutoregressiveModel):
    r"""Models that read the pixels as a sequence in the ordering, shifted by one: with 0-based
    :math:`t`, the input at position :math:`t` is a learned start vector (:math:`t = 0`) or the
    embedding of the value of pixel :math:`o_{t-1}`, and the output is the logits of pixel :math:`o_t`.
    Subclasses give ``_run(inputs (B, D, E)) -> (B, D, L)`` (all positions, causal) and
    ``_step(input (B, E), t, state) -> (logits (B, L), state)`` (one position; ``state`` is the
    cache, ``None`` at ``t = 0``).
    """

    def __init__(self, features: int, levels: int, order, embed_dim: int):
        super().__init__(features, levels, order)
        self.embedding = nn.Embedding(self.levels, embed_dim)  # pixel value -> vector
        self.start = nn.Parameter(0.02 * torch.randn(embed_dim))  # the input of position 0

    def _embed(self, x):
        return self.embedding(x)  # (B, D, E)

    def _inputs(self, e):
        """Per-pixel embeddings ``(B, D, E)`` -> the shifted inputs in the ordering ``(B, D, E)``."""
        seq = e[:, self.order]  # (B, D, E), position t holds pixel o_t
        start = self.start.expand(e.shape[0], 1, -1)
        return torch.cat([start, seq[:, :-1]], dim=1)

    def _logits_from_embedding(self, e):
        out = self._run(self._inputs(e))  # (B, D, L), position t = pixel o_t
        return out[:, self.rank].transpose(1, 2)  # (B, L, D), pixel order

    def _run(self, inputs):
        raise NotImplementedError

    def _step(self, inp, t: int, state):
        raise NotImplementedError

    def _run_cached(self, x, hidden, generator, temperature):
        """Step through the positions in the ordering with the cache, drawing the ``hidden`` pixels of
        ``x`` (both ``(B, D)``) as they come; returns the filled ``x`` and the logits ``(B, L, D)`` of
        every step (which then equal ``_logits`` of the filled ``x``)."""
        x = x.clone()
        inp, state, out = self.start.expand(x.shape[0], -1), None, []
        for t in range(self.features):
            d = int(self.order[t])
            logits, state = self._step(inp, t, state)  # (B, L): one position, the prefix is cached
            out.append(logits)
            if bool(hidden[:, d].any()):
                x[:, d] = torch.where(hidden[:, d], self._draw(logits, generator, temperature), x[:, d])
            inp = self.embedding(x[:, d])  # (B, E)
        return x, torch.stack(out, dim=2)[:, :, self.rank]  # (B, L, D) in pixel order

    def cached_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(B, levels, D)`` computed position by position with the cache (the code
        :meth:`sample` runs); equal to :meth:`logits` (a test)."""
        x = self._check_x(x)
        return self._run_cached(x, torch.zeros_like(x, dtype=torch.bool), None, 1.0)[1]

    def _fill(self, x, hidden, generator, temperature):
        return self._run_cached(x, hidden, generator, temperature)[0]


@dataclass
class TransformerConfig:
    """Settings of a :class:`CausalTransformer`."""

    d_model: int = 64  # width of the token vectors (embedding size)
    n_heads: int = 4  # attention heads per layer (d_model must be a multiple)
    n_layers: int = 2  # Transformer blocks
    d_ff: int = 256  # hidden width of each block's MLP
    dropout: float = 0.0  # dropout after attention and MLP (training mode only)


class _CausalSelfAttention(nn.Module):
    r"""Multi-head self-attention with a causal mask (Vaswani et al. 2017):

    .. math::  \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\Big(\frac{QK^\top}{\sqrt{d_k}} + M\Big)V,
               \qquad M_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t. \end{cases}
               \tag{ch08:attention}

    With a ``cache`` (a dict, empty at first) the keys and values of earlier positions are kept in
    it and the new queries (positions :math:`S-T..S-1` of :math:`S` so far) attend to all of them.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, d = h.shape
        nh = self.n_heads
        q, k, v = (t.reshape(B, T, nh, d // nh).transpose(1, 2) for t in self.qkv(h).split(d, dim=2))  # (B, nh, T, dk)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)  # (B, nh, S, dk)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // nh)  # (B, nh, T, S)
        allowed = torch.ones(T, S, dtype=torch.bool, device=h.device).tril(diagonal=S - T)  # key s <= query's position
        att = self.drop(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        return self.drop(self.proj(y))


class _Block(nn.Module):
    """A pre-norm Transformer block: :math:`h + \\mathrm{Attn}(\\mathrm{LN}(h))`, then
    :math:`h + \\mathrm{MLP}(\\mathrm{LN}(h))`."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = _CausalSelfAttention(c.d_model, c.n_heads, c.dropout)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model),
                                 nn.Dropout(c.dropout))

    def forward(self, h, cache=None):
        h = h + self.attn(self.ln1(h), cache)
        return h + self.mlp(self.ln2(h))


class CausalTransformer(_SequenceModel):
    r"""A small decoder-only Transformer (Vaswani et al. 2017) over the :math:`D` pixels in the ordering:
    the input at position :math:`t` is the start vector (:math:`t = 0`) or the embedding of the previous
    pixel's value, plus a learned position embedding; pre-norm blocks with causal self-attention
    :eq:`ch08:attention`; a final LayerNorm and a linear map to ``levels`` logits.

    Sampling keeps every layer's keys and values (a KV cache): step :math:`t` computes one position
    against the cached :math:`t` earlier ones, :math:`O(t)` instead of a full :math:`O(t^2)` pass.
    :meth:`cached_logits` runs the same steps on given data.
    """

    def __init__(self, features: int, levels: int = 2, config: TransformerConfig | None = None, *,
                 order: Sequence[int] | None = None):
        c = config or TransformerConfig()
        for name in ("d_model", "n_heads", "n_layers", "d_ff"):
            check_int(getattr(c, name), f"config.{name}")
        if c.d_model % c.n_heads:
            raise ValueError(f"config.d_model ({c.d_model}) must be a multiple of config.n_heads ({c.n_heads})")
        if not 0 <= c.dropout < 1:
            raise ValueError(f"config.dropout must be in [0, 1), got {c.dropout!r}")
        super().__init__(features, levels, order, c.d_model)
        self.config = c
        self.position = nn.Parameter(0.02 * torch.randn(self.features, c.d_model))  # (D, E)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, self.levels)

    def _run(self, inputs):
        h = inputs + self.position  # (B, D, E)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))  # (B, D, L)

    def _step(self, inp, t, cache):
        cache = [{} for _ in self.blocks] if cache is None else cache  # one {k, v} per layer
        h = (inp + self.position[t]).unsqueeze(1)  # (B, 1, E)
        for block, layer_cache in zip(self.blocks, cache):
            h = block(h, layer_cache)
        return self.head(self.ln_f(h))[:, 0], cache  # (B, L)


class SequenceLSTM(_SequenceModel):
    r"""An LSTM (Hochreiter & Schmidhuber 1997) over the pixels in the ordering, one pixel per step:
    the input at step :math:`t` is the start vector or the embedding of the previous pixel's value,
    the hidden state summarises :math:`x_{o_{<t}}`, a linear map gives the logits of :math:`x_{o_t}`.
    Its state :math:`(h, c)` is the cache for sampling. (A baseline for the chapter's comparison;
    the Row LSTM and Diagonal BiLSTM of PixelRNN run over image rows and diagonals instead.)
    """

    def __init__(self, features: int, levels: int = 2, *, embed_dim: int = 32, hidden: int = 128,
                 n_layers: int = 1, order: Sequence[int] | None = None):
        super().__init__(features, levels, order, check_int(embed_dim, "embed_dim"))
        self.lstm = nn.LSTM(embed_dim, check_int(hidden, "hidden"), check_int(n_layers, "n_layers"),
                            batch_first=True)
        self.head = nn.Linear(hidden, self.levels)

    def _run(self, inputs):
        return self.head(self.lstm(inputs)[0])  # (B, D, L)

    def _step(self, inp, t, state):
        out, state = self.lstm(inp.unsqueeze(1), state)  # out (B, 1, hidden)
        return self.head(out[:, 0]), state


# -- a recurrent image model: the Row LSTM -------------------------------------------------------


class RowLSTM(_ImageModel):
    r"""The Row LSTM of PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, section 3.1), small:
    a type-A ``first_kernel`` x ``first_kernel`` :class:`MaskedConv2d`, then ``n_layers`` LSTM layers
    that run down the image one row at a time. Row :math:`i` of a layer's state is computed from the
    row above by a 1-D convolution of width 3 (state to state) and from the layer's input on row
    :math:`i` by a masked 1-D convolution (input to state: columns :math:`j-1, j`, which carry only
    earlier pixels),

    .. math::  [o_i, f_i, \iota_i, g_i] = \sigma\big(K^{ss} * h_{i-1} + K^{is} * x_i\big),\quad
               c_i = f_i\odot c_{i-1} + \iota_i\odot g_i,\quad h_i = o_i\odot\tanh(c_i)
               \tag{ch08:row-lstm}

    (:math:`\sigma` is tanh for :math:`g`), with a residual connection around each layer and a 1x1
    head to ``levels`` logits. Each state row sees a triangle of the rows above that widens by one
    column each side per row, so, like the PixelCNN, it has a blind spot; all :math:`H` rows of a layer
    are computed in :math:`H` sequential steps, each a batch of whole rows.
    """

    def __init__(self, side: int, levels: int = 2, *, channels: int = 32, n_layers: int = 1, first_kernel: int = 7,
                 scan: str = "rows"):
        super().__init__(side, levels, scan)
        check_int(channels, "channels")
        check_int(n_layers, "n_layers")
        self.channels = channels
        self.input = MaskedConv2d(1, channels, _check_odd_kernel(first_kernel, "first_kernel"), "A")
        self.input_to_state = nn.ModuleList(nn.Conv2d(channels, 4 * channels, (1, 2)) for _ in range(n_layers))
        self.state_to_state = nn.ModuleList(nn.Conv1d(channels, 4 * channels, 3, padding=1) for _ in range(n_layers))
        self.head = _head(channels, self.levels)

    def _net(self, img):
        x = self.input(img)  # (B, C, H, W)
        B, C, H, W = x.shape
        for i_s, s_s in zip(self.input_to_state, self.state_to_state):
            gates_in = i_s(nnf.pad(x, (1, 0)))  # (B, 4C, H, W): column j from columns j-1, j
            h = c = x.new_zeros(B, C, W)
            rows = []
            for i in range(H):
                o, f, g_in, g = (gates_in[:, :, i] + s_s(h)).chunk(4, dim=1)  # (B, C, W) each
                c = torch.sigmoid(f) * c + torch.sigmoid(g_in) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                rows.append(h)
            x = x + torch.stack(rows, dim=2)  # (B, C, H, W)
        return self.head(x)  # (B, L, H, W)


# -- mixtures over orderings ---------------------------------------------------------------------


class OrderMixture(nn.Module):
    r"""An equal-weight mixture of autoregressive models, typically of one architecture in several
    orderings (an *order ensemble*, Germain et al. 2015; Uria et al. 2014):

    .. math::  p(x) = \frac1K \sum_{k=1}^K p_k(x), \qquad
               \log p(x) = \operatorname{logsumexp}_k \log p_k(x) - \log K,   \tag{ch08:order-mixture}

    still exact, never below :math:`\min_k \log p_k(x)`, and at most :math:`\log K` above
    :math:`\max_k \log p_k(x)`. Sampling picks a component uniformly, then samples it.

    Completion is exact when the observed pixels come before the hidden ones in *every* component's
    ordering: then :math:`p(x_{\mathcal H}\mid x_{\mathcal O}) = \sum_k w_k\, p_k(x_{\mathcal H}\mid x_{\mathcal O})`
    with :math:`w_k \propto p_k(x_{\mathcal O})`, and each :math:`p_k(x_{\mathcal O})` is the sum of the
    first conditionals. Otherwise ``ValueError`` (from the first component that cannot).

    The components are trained separately (each on its own loss) or together through :meth:`loss`.
    """

    def __init__(self, components: Sequence[AutoregressiveModel]):
        super().__init__()
        components = list(components)
        if not components or not all(isinstance(m, AutoregressiveModel) for m in components):
            raise ValueError("components must be a non-empty sequence of AutoregressiveModel")
        shapes = {(m.features, m.levels) for m in components}
        if len(shapes) != 1:
            raise ValueError(f"components must share features and levels, got {sorted(shapes)}")
        self.components = nn.ModuleList(components)
        self.features, self.levels = shapes.pop()

    def extra_repr(self) -> str:
        return f"features={self.features}, levels={self.levels}, components={len(self.components)}"

    def _logsumexp_mean(self, terms: list[torch.Tensor]) -> torch.Tensor:
        return torch.logsumexp(torch.stack(terms), 0) - math.log(len(terms))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:eq:`ch08:order-mixture` in nats, ``(B,)``."""
        return self._logsumexp_mean([m.log_prob(x) for m in self.components])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``-log_prob(x).mean()`` (joint training of the components)."""
        return -self.log_prob(x).mean()

    def _parts(self, x, mask):
        """Per component ``(log p_k(x_O), log p_k(x_H | x_O))``, each ``(K, B)``."""
        observed, hidden = [], []
        for m in self.components:
            xl = m._check_x(x)
            mk = m._check_mask(mask, xl)
            lp = m._pixel_log_probs(xl)  # (B, D)
            observed.append((lp * mk).sum(1))
            hidden.append((lp * ~mk).sum(1))
        return torch.stack(observed), torch.stack(hidden)

    def conditional_log_prob(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x_{\mathcal H}\mid x_{\mathcal O})` of the mixture in nats, ``(B,)``."""
        lo, lh = self._parts(x, mask)
        return torch.logsumexp(lo + lh, 0) - torch.logsumexp(lo, 0)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``n`` samples ``(n, D)``: each from a component drawn uniformly."""
        check_int(n, "n")
        ref = self.components[0]._ref
        pick = torch.randint(len(self.components), (n,), generator=generator, device=ref.device)
        out = ref.new_zeros((n, self.features))
        for k, m in enumerate(self.components):
            rows = (pick == k).nonzero().squeeze(1)
            if rows.numel():
                out[rows] = m.sample(rows.numel(), generator=generator, temperature=temperature).to(out.dtype)
        return out

    @torch.no_grad()
    def complete(self, x: torch.Tensor, mask: torch.Tensor, *, n_samples: int = 1,
                 generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Exact samples of :math:`p(x_{\\mathcal H}\\mid x_{\\mathcal O})`, ``(n_samples, B, D)`` in ``x``'s
        dtype: a component drawn from its posterior weight :math:`w_k`, then its completion."""
        lo, _ = self._parts(x, mask)  # (K, B)
        check_int(n_samples, "n_samples")
        B = x.shape[0]
        w = torch.softmax(lo, 0).t()  # (B, K)
        pick = torch.multinomial(w, n_samples, replacement=True, generator=generator).t()  # (n_samples, B)
        out = x.unsqueeze(0).repeat(n_samples, 1, 1)
        for k, m in enumerate(self.components):
            s_idx, b_idx = (pick == k).nonzero(as_tuple=True)
            if s_idx.numel():
                done = m.complete(x[b_idx], mask[b_idx], generator=generator, temperature=temperature)[0]
                out[s_idx, b_idx] = done.to(out.dtype)
        return out


class _ScanView(_ImageModel):
    """Scan ``index`` of a :class:`ScanMixture`: its shared network told which scan it reads."""

    def __init__(self, shared: "_SharedScanNet", index: int, scan: str):
        super().__init__(shared.net.side, shared.net.levels, scan)
        # not a submodule: the ScanMixture owns (and moves, saves) the one shared network
        object.__setattr__(self, "shared", shared)
        self.index = index

    def _net(self, img):
        return self.shared(img, torch.full((img.shape[0],), self.index, dtype=torch.long, device=img.device))


class _SharedScanNet(nn.Module):
    def __init__(self, net: _ImageModel, n_scans: int, channels: int):
        super().__init__()
        self.net = net  # a raster-order PixelCNN or GatedPixelCNN
        self.scan_vectors = nn.Parameter(torch.zeros(n_scans, channels, 1, 1))

    def forward(self, img: torch.Tensor, scan: torch.Tensor) -> torch.Tensor:
        return self.net._net(img, self.scan_vectors[scan])  # (B, L, H, W)


class ScanMixture(OrderMixture):
    r"""One PixelCNN network for several raster scans of the image, and the exact mixture
    :eq:`ch08:order-mixture` over them (order-agnostic training, Uria et al. 2014, with the
    dihedral scans of :data:`SCANS` as the orderings).

    The network (a :class:`GatedPixelCNN` or :class:`PixelCNN` in raster order, ``architecture``
    ``"gated"`` or ``"pixelcnn"``, with the keyword arguments ``kwargs``) reads the image turned
    or flipped so that scan :math:`k` becomes raster order, and is told :math:`k` by a learned
    vector added to its first layer's output. Scan :math:`k` is thus a model :math:`p_k` of its own
    (``components[k]``, sharing every weight), and

    .. math::  p(x) = \frac1K\sum_{k=1}^K p_k(x)

    is exact. :meth:`loss` in training mode is the order-agnostic objective: each image is scored
    in one scan drawn uniformly (torch's global generator), :math:`-\log p_k(x)`, whose expectation
    over :math:`k` bounds :math:`-\log p(x)` from above (Jensen); every image also teaches the
    network the stroke shapes of the other scans. In eval mode (validation, early stopping) :meth:`loss`
    scores image :math:`i` of the batch in scan :math:`i \bmod K`: the same objective without the draw,
    at the cost of one pass instead of the :math:`K` that :meth:`log_prob` takes.
    """

    def __init__(self, side: int, levels: int, scans: Sequence[str], *, architecture: str = "gated", **kwargs):
        scans = list(scans)
        if not scans or len(set(scans)) != len(scans):
            raise ValueError(f"scans must be distinct names from SCANS, got {scans!r}")
        for scan in scans:
            scan_order(1, scan)  # checks the name
        kinds = {"gated": GatedPixelCNN, "pixelcnn": PixelCNN}
        if architecture not in kinds:
            raise ValueError(f"architecture must be 'gated' or 'pixelcnn', got {architecture!r}")
        net = kinds[architecture](side, levels, **kwargs)
        shared = _SharedScanNet(net, len(scans), kwargs.get("channels", 64))
        super().__init__([_ScanView(shared, k, scan) for k, scan in enumerate(scans)])
        self.shared, self.scans, self.architecture = shared, scans, architecture
        self.register_buffer("orders", torch.stack([c.order for c in self.components]))  # (K, D)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scans={self.scans}, architecture={self.architecture!r}"

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The order-agnostic loss: each image scored in one scan (drawn in training, ``i mod K`` in eval)."""
        first = self.components[0]
        xl = first._check_x(x)
        B, side, K = xl.shape[0], first.side, len(self.scans)
        if self.training:
            k = torch.randint(K, (B,), device=self.orders.device)  # (B,)
        else:
            k = torch.arange(B, device=self.orders.device) % K
        turned = xl.gather(1, self.orders[k])  # (B, D): each image in its scan, as a raster image
        img = _scaled(turned, self.levels, first._ref.dtype).view(B, 1, side, side)
        logits = self.shared(img, k).reshape(B, self.levels, self.features)  # (B, L, D), scan positions
        return -nnf.log_softmax(logits, dim=1).gather(1, turned.unsqueeze(1)).squeeze(1).sum(1).mean()
