"""Figures used throughout the book: image grids, 2-D densities, training curves.

Each function draws on a Matplotlib ``Axes`` (a new figure when ``ax`` is
None) and returns it, so pages can compose panels freely.
"""
from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["book_figures", "image_grid", "density_2d", "samples_2d", "training_curves"]


def book_figures() -> None:
    """Figures drawn at twice their displayed resolution, sharp on a high-density screen and when
    enlarged (the book's pages call this in their first cell).

    In a Jupyter kernel with the inline backend, figures are sent as PNGs at 2x ("retina", with
    their display size in the output's metadata, which the book keeps); elsewhere (a script, the
    Agg backend of the tests) nothing changes.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with Jupyter
        return
    shell = get_ipython()
    if shell is None or "inline" not in plt.get_backend():
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def image_grid(
    images,
    *,
    shape: tuple[int, int] = (8, 8),
    nrow: int | None = None,
    ax=None,
    cmap: str = "gray_r",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    pad: int = 1,
    title: str | None = None,
):
    """Tile images ``(N, H*W)`` or ``(N, H, W)`` into one grid.

    ``nrow``: images per row (default about sqrt(N)). ``vmax`` defaults to the
    largest pixel value (1 for floats in [0, 1], 16 for integer digits).
    """
    x = _numpy(images)
    if x.ndim == 2:
        if x.shape[1] != shape[0] * shape[1]:
            raise ValueError(f"images of {x.shape[1]} pixels do not fit shape {shape}")
        x = x.reshape(-1, *shape)
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H*W) or (N, H, W) with N > 0, got {x.shape}")
    n, h, w = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol_rows = int(np.ceil(n / nrow))
    background = np.nan
    grid = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad), background)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = x[i]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.45 * nrow + 0.5, 10), min(0.45 * ncol_rows + 0.5, 10)))
    vmax = float(np.nanmax(x)) if vmax is None else vmax
    cm = plt.get_cmap(cmap).copy()
    cm.set_bad("#dddddd")
    ax.imshow(grid, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def density_2d(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    *,
    xlim: Sequence[float] = (-4, 4),
    ylim: Sequence[float] = (-4, 4),
    resolution: int = 200,
    ax=None,
    contours: int = 0,
    cmap: str = "viridis",
    title: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """Heat map of ``exp(log_prob)`` on a grid, optionally with contour lines.

    ``log_prob`` maps points ``(M, 2)`` to log densities ``(M,)``.
    """
    xs = torch.linspace(xlim[0], xlim[1], resolution, dtype=dtype)
    ys = torch.linspace(ylim[0], ylim[1], resolution, dtype=dtype)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(device)  # (R*R, 2)
    with torch.no_grad():
        lp = log_prob(pts)
    if not isinstance(lp, torch.Tensor) or lp.shape != (pts.shape[0],):
        raise ValueError("log_prob must map (M, 2) points to a (M,) tensor")
    dens = _numpy(lp).reshape(resolution, resolution)
    dens = np.exp(dens - np.nanmax(dens))
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(dens, origin="lower", extent=(*xlim, *ylim), cmap=cmap, aspect="auto")
    if contours:
        ax.contour(_numpy(gx), _numpy(gy), dens, levels=contours, colors="white", linewidths=0.6)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    return ax


def samples_2d(points, *, ax=None, s: float = 2.0, alpha: float = 0.4, title: str | None = None, **kwargs):
    """Scatter plot of 2-D samples ``(N, 2)``."""
    p = _numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {p.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=alpha, **kwargs)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def training_curves(history, *, ax=None, ylabel: str = "loss", title: str | None = None, logy: bool = False):
    """Training and validation loss per epoch from a :class:`gmlib.train.History`
    (or a dict with ``train_loss`` / ``val_loss``), marking the epoch kept."""
    h = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    epochs = np.arange(1, len(h["train_loss"]) + 1)
    ax.plot(epochs, h["train_loss"], label="train")
    if h.get("val_loss"):
        ax.plot(epochs[: len(h["val_loss"])], h["val_loss"], label="validation")
        best = h.get("best_epoch", -1)
        if best is not None and best >= 0:
            ax.axvline(best + 1, color="gray", ls=":", lw=1, label=f"kept (epoch {best + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return ax
