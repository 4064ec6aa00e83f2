"""Recipes: how the book's trained models are made, in one place.

A *recipe* is the exact protocol that trains one of the book's models: the architecture,
the optimiser settings, the batch size, the number of epochs or mini-batches, the seeds.
A book page and its benchmark script (``python -m gmlib.bench.<name>``) both train through
the recipe, so the numbers printed on the page and the ones the benchmark reports (and the
README quotes) come from the same code; changing a recipe changes both.

Each recipe is a frozen ``@dataclass`` whose fields are commented, with a builder that
returns the untrained model it describes (weights seeded), and, where the book needs them,
the functions that train and evaluate it. The models themselves live in their family's
module (:mod:`gmlib.vae`, :mod:`gmlib.gan`), the networks in :mod:`gmlib.nets`, the one
training loop in :mod:`gmlib.train`, the data in :mod:`gmlib.data` and the measures in
:mod:`gmlib.metrics`; shipped weights are saved and loaded by :mod:`gmlib.pretrained`.

==========================================  =================================  ===================================
recipe                                      used by                            benchmark
==========================================  =================================  ===================================
:class:`VAEDigitsRecipe`                    Chapter 5 (its shipped weights)    ``python -m gmlib.bench.vae``
:class:`ToyProtocol`                        Chapter 6, objectives on 2-D data  ``python -m gmlib.bench.gan --toy``
:data:`PRESETS` (:class:`DigitsGANPreset`)  Chapter 6, the digits DCGAN        ``python -m gmlib.bench.gan``
:class:`FlowDigitsRecipe`                   Chapter 7 (its shipped weights)    ``python -m gmlib.bench.flows``
:class:`ARDigitsRecipe`                     Chapter 8 (its shipped weights)    ``python -m gmlib.bench.autoregressive``
==========================================  =================================  ===================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import autoregressive as ar
from ._checks import check_int
from .data import digits, toy_2d, toy_2d_modes
from .flows import (Compose, Flow, FlowConfig, Logit, Reshape, UniformDequantizer, VariationalDequantizer,
                    image_flow, vector_flow)
from .gan import GAN, OBJECTIVES, GANConfig, _check_objective
from .likelihoods import Categorical
from .metrics import class_histogram, digit_frechet, mmd2, mode_metrics
from .nets import ConvDecoder, ConvEncoder, DCDiscriminator, DCGenerator, mlp
from .train import train
from .vae import VAE

__all__ = [
    # Chapter 5: the VAE on the digits
    "VAEDigitsRecipe",
    "vae_digits",
    # Chapter 6: GANs on the 2-D mixtures
    "ObjectiveSettings",
    "TOY_SETTINGS",
    "TOY_DATA",
    "ToyProtocol",
    "train_toy_gan",
    "evaluate_toy_gan",
    "compare_objectives",
    "summarize_comparison",
    "comparison_table",
    # Chapter 6: the DCGAN on the digits
    "DigitsGANPreset",
    "PRESETS",
    "digits_gan",
    "train_digits_gan",
    "digits_gan_samples",
    "digits_gan_quality",
    # Chapter 7: the multi-scale flow on the digits
    "FlowDigitsRecipe",
    "FLOW_PRESETS",
    "flow_digits",
    # Chapter 8: autoregressive models of the digits
    "ARDigitsRecipe",
    "AR_PRESETS",
    "AR_BASELINES",
    "ALL_SCANS",
    "ar_digits",
]


# ======================================================================================
# Chapter 5: the convolutional VAE of the digits, whose weights the book ships
# (``python -m gmlib.bench.vae --save`` trains it and writes gmlib/weights/vae_digits.pt).
# ======================================================================================


@dataclass(frozen=True)
class VAEDigitsRecipe:
    """Chapter 5's main model: a convolutional VAE with a 17-way categorical decoder for
    the integer digits (``gmlib.data.digits(split, "int")``), trained by :func:`gmlib.train.train`.
    Chosen on the validation split (the search is summarised in Chapter 5)."""

    latent_dim: int = 16  # L
    channels: int = 32  # feature maps of every convolution
    hidden: int = 256  # units of the fully connected hidden layers
    dropout: float = 0.2  # after every hidden layer, encoder and decoder (off in eval mode)
    lr: float = 1e-3  # Adam
    batch_size: int = 64
    epochs: int = 400  # at most; early stopping ends training well before
    patience: int = 50  # epochs without a better validation negative ELBO before stopping
    seed: int = 0  # initial weights, batch order and the sampling inside the loss
    shift_p: float = 0.25  # probability that a training image is moved by one pixel (gmlib.data.random_shift); 0: off


def vae_digits(recipe: VAEDigitsRecipe = VAEDigitsRecipe()) -> VAE:
    """An untrained model of ``recipe`` (weights seeded with ``recipe.seed``)."""
    torch.manual_seed(recipe.seed)
    likelihood = Categorical(17)
    encoder = ConvEncoder(8, 2 * recipe.latent_dim, channels=recipe.channels, hidden=recipe.hidden,
                          dropout=recipe.dropout, in_scale=1 / 16)
    decoder = ConvDecoder(8, recipe.latent_dim, likelihood.param_size, channels=recipe.channels,
                          hidden=recipe.hidden, dropout=recipe.dropout)
    return VAE(encoder, decoder, likelihood, recipe.latent_dim, data_dim=64)


# ======================================================================================
# Chapter 6: GANs, the objectives compared on the 2-D mixtures and the DCGAN of the digits
# (``python -m gmlib.bench.gan``, with ``--toy`` for the comparison).
# ======================================================================================


@dataclass(frozen=True)
class ObjectiveSettings:
    """Optimizer settings of one objective in a :class:`ToyProtocol` (both players share them)."""

    lr: float  # Adam step size of the discriminator and of the generator
    betas: tuple = (0.5, 0.999)  # Adam's (beta1, beta2)
    d_steps: int = 1  # discriminator updates per generator update
    gp_weight: float = 10.0  # omega_GP, the gradient penalty's weight (wgan_gp only)


#: Per-objective settings of :class:`ToyProtocol`: for each objective, the setting with the lowest
#: mean MMD^2 (ch06:mmd2, :func:`evaluate_toy_gan`) after the protocol's 500 mini-batches on the
#: eight Gaussians, over seeds 10, 11 and 12, which the book's comparison (seeds 0, 1, 2) does not
#: use. Final grid: lr in {2e-3, 4e-3, 8e-3} with betas (0.5, 0.999) and one discriminator step
#: for the first four objectives; for wgan_gp, betas (0.5, 0.9), gp_weight 1 and lr in
#: {4e-3, 8e-3} x d_steps in {1, 2}. An earlier, wider search (600 mini-batches) ruled out
#: lr 1e-3 (the non-saturating and hinge losses collapsed onto one to three modes in some seeds)
#: and, for wgan_gp, gp_weight 10 (one or two modes for every lr from 1e-3 to 8e-3) and 0.1, and
#: 3 or 5 critic steps (both worse). Gulrajani et al. (2017) use lr 1e-4, 5 critic steps and
#: omega_GP = 10 (their lambda; 0.1 in their code for toy data) over 100k generator steps, far beyond this budget.
TOY_SETTINGS = {
    "minimax": ObjectiveSettings(lr=4e-3),
    "non_saturating": ObjectiveSettings(lr=4e-3),
    "least_squares": ObjectiveSettings(lr=2e-3),
    "hinge": ObjectiveSettings(lr=8e-3),
    "wgan_gp": ObjectiveSettings(lr=8e-3, betas=(0.5, 0.9), d_steps=1, gp_weight=1.0),
}

TOY_DATA = ("eight_gaussians", "grid_25")


@dataclass(frozen=True)
class ToyProtocol:
    """One architecture and one budget for every objective on the 2-D mixtures.

    The budget is counted in mini-batches, i.e. discriminator updates, which is what the
    compute costs; an objective with ``d_steps = 5`` makes a fifth as many generator updates.
    """

    n_train: int = 2560  # training points, drawn once from the toy density (data_seed)
    data_seed: int = 0  # seed of the training points (the same set for every run)
    latent_dim: int = 8  # dimension of the noise z ~ N(0, I)
    hidden: tuple = (64, 64)  # widths of the hidden ReLU layers of both MLPs
    batch_size: int = 256  # real points per mini-batch (and as many generated ones)
    steps: int = 500  # mini-batches in all; a multiple of n_train / batch_size
    settings: dict = field(default_factory=lambda: dict(TOY_SETTINGS))  # objective -> ObjectiveSettings
    device: str = "cpu"  # tiny networks train fastest on the CPU, and the numbers are the same everywhere

    def __post_init__(self):
        for name in ("n_train", "latent_dim", "batch_size", "steps"):
            check_int(getattr(self, name), name)
        if not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive integers, got {self.hidden!r}")
        if self.n_train % self.batch_size:
            raise ValueError(f"n_train ({self.n_train}) must be a multiple of batch_size ({self.batch_size})")
        if self.steps % self.steps_per_epoch:
            raise ValueError(f"steps ({self.steps}) must be a multiple of n_train / batch_size = {self.steps_per_epoch}")
        for objective, s in self.settings.items():
            _check_objective(objective)
            if not isinstance(s, ObjectiveSettings):
                raise ValueError(f"settings[{objective!r}] must be an ObjectiveSettings, got {type(s).__name__}")

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    def config(self, objective: str) -> GANConfig:
        """The :class:`GANConfig` of ``objective`` under this protocol."""
        _check_objective(objective)
        if objective not in self.settings:
            raise ValueError(f"this protocol has no settings for {objective!r}; it has {sorted(self.settings)}")
        s = self.settings[objective]
        return GANConfig(objective=objective, d_steps=s.d_steps, gp_weight=s.gp_weight,
                         lr_d=s.lr, lr_g=s.lr, betas=tuple(s.betas))


def _check_toy_data(data: str) -> None:
    if data not in TOY_DATA:
        raise ValueError(f"data must be one of {list(TOY_DATA)} (mixtures with known modes), got {data!r}")


def train_toy_gan(
    objective: str,
    *,
    data: str = "eight_gaussians",
    seed: int = 0,
    protocol: ToyProtocol | None = None,
    snapshots=(),
    n_snapshot: int = 1000,
    progress: bool = False,
):
    """Train a GAN with MLPs on a 2-D mixture under ``protocol`` (default :class:`ToyProtocol`).

    ``seed`` sets the initial weights, the batch order and the noise of training. ``snapshots``:
    mini-batch counts (0 for the untrained generator; others multiples of
    ``protocol.steps_per_epoch``, at most ``protocol.steps``) at which to keep ``n_snapshot``
    samples drawn from one fixed set of noise vectors, so that successive snapshots show
    the same ``z`` moving.

    Returns ``(gan, history, snaps)``: the trained :class:`GAN` (on the CPU), the
    :class:`gmlib.train.History` (``player_loss`` per epoch, ``seconds``), and a dict
    ``step -> samples (n_snapshot, 2)``.
    """
    protocol = ToyProtocol() if protocol is None else protocol
    _check_toy_data(data)
    cfg = protocol.config(objective)
    check_int(n_snapshot, "n_snapshot")
    spe = protocol.steps_per_epoch
    wanted = sorted({int(s) for s in snapshots})
    bad = [s for s in wanted if s < 0 or s > protocol.steps or s % spe]
    if bad:
        raise ValueError(f"snapshot steps must be 0 or multiples of {spe} up to {protocol.steps}, got {bad}")
    x = toy_2d(data, protocol.n_train, seed=protocol.data_seed)  # (n_train, 2) float32
    torch.manual_seed(seed)
    gan = GAN(mlp(protocol.latent_dim, list(protocol.hidden), 2), mlp(2, list(protocol.hidden), 1),
              protocol.latent_dim, cfg)
    z = gan.prior_sample(n_snapshot, torch.Generator().manual_seed(seed))  # (n_snapshot, latent_dim), fixed
    snaps = {}
    if 0 in wanted:
        snaps[0] = _generate_cpu(gan, z)

    def keep(epoch, model, history):
        step = (epoch + 1) * spe
        if step in wanted:
            snaps[step] = _generate_cpu(model, z)

    history = train(gan, x, epochs=protocol.steps // spe, batch_size=protocol.batch_size, patience=None,
                    seed=seed, device=protocol.device, progress=progress, desc=objective,
                    callback=keep if wanted else None)
    return gan.cpu(), history, snaps


@torch.no_grad()
def _generate_cpu(gan: GAN, z: torch.Tensor) -> torch.Tensor:
    device, _ = gan._device_dtype()
    return gan.generate(z.to(device)).cpu()


def evaluate_toy_gan(gan: GAN, data: str = "eight_gaussians", *, n: int = 2000, seed: int = 0) -> dict:
    """Sample quality of a toy GAN: ``n`` samples (noise seeded by ``seed``) against the true mixture.

    Returns ``modes_covered`` and ``n_modes`` (modes holding at least a tenth of their fair share
    of high-quality samples), ``high_quality`` (the share of samples within 3 standard
    deviations of their nearest mode), both from :func:`gmlib.metrics.mode_metrics`
    (ch06:modes), and ``mmd2``, :func:`gmlib.metrics.mmd2` (ch06:mmd2) between the samples and
    ``n`` fresh points of the density (seed ``10_000 + seed``, never the training set).
    """
    _check_toy_data(data)
    check_int(n, "n")
    samples = gan.sample(n, torch.Generator().manual_seed(seed)).cpu()  # (n, 2)
    centers, std = toy_2d_modes(data)
    m = mode_metrics(samples, centers, std)
    fresh = toy_2d(data, n, seed=10_000 + seed)
    return {"modes_covered": m["modes_covered"], "n_modes": m["n_modes"],
            "high_quality": m["high_quality"], "mmd2": mmd2(samples, fresh)}


def compare_objectives(
    objectives=OBJECTIVES,
    seeds=(0, 1, 2),
    data: str = "eight_gaussians",
    protocol: ToyProtocol | None = None,
    *,
    snapshots=(),
    progress: bool = False,
) -> list[dict]:
    """Train every objective with every seed under one protocol and evaluate each run.

    Returns one row per run: ``objective``, ``seed``, the keys of :func:`evaluate_toy_gan`
    (evaluated with noise seed ``seed``), ``seconds`` (training wall time) and ``snapshots``
    (the dict of :func:`train_toy_gan`; empty unless ``snapshots`` is given).
    """
    protocol = ToyProtocol() if protocol is None else protocol
    rows = []
    for objective in objectives:
        for seed in seeds:
            gan, history, snaps = train_toy_gan(objective, data=data, seed=seed, protocol=protocol,
                                                snapshots=snapshots, progress=progress)
            row = {"objective": objective, "seed": seed}
            row.update(evaluate_toy_gan(gan, data, seed=seed))
            row.update(seconds=history.seconds, snapshots=snaps)
            rows.append(row)
    return rows


def summarize_comparison(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each measure: ``objective -> {key: (mean, sd)}``
    for ``modes_covered``, ``high_quality``, ``mmd2`` and ``seconds`` (sd with divisor n - 1;
    0 for one seed), in the order the objectives first appear."""
    out = {}
    for objective in dict.fromkeys(r["objective"] for r in rows):
        sel = [r for r in rows if r["objective"] == objective]
        stats = {}
        for key in ("modes_covered", "high_quality", "mmd2", "seconds"):
            v = torch.tensor([float(r[key]) for r in sel], dtype=torch.float64)
            stats[key] = (float(v.mean()), float(v.std()) if len(v) > 1 else 0.0)
        stats["n_modes"] = sel[0]["n_modes"]
        stats["runs"] = len(sel)
        out[objective] = stats
    return out


def comparison_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`summarize_comparison`: mean ± sd over seeds per objective."""
    summary = summarize_comparison(rows)
    lines = ["| objective | modes covered | high-quality share | MMD² (×10⁻³) | training time (s) |",
             "|---|---|---|---|---|"]
    for objective, s in summary.items():
        (mc, mc_sd), (hq, hq_sd), (mm, mm_sd), (sec, sec_sd) = (s[k] for k in ("modes_covered", "high_quality", "mmd2", "seconds"))
        lines.append(f"| {objective.replace('_', ' ')} | {mc:.1f} ± {mc_sd:.1f} of {s['n_modes']} | {hq:.2f} ± {hq_sd:.2f} "
                     f"| {1e3 * mm:.0f} ± {1e3 * mm_sd:.0f} | {sec:.1f} ± {sec_sd:.1f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class DigitsGANPreset:
    """A DCGAN (Radford et al. 2016) on the 8x8 digits: ``gmlib.nets.DCGenerator`` /
    ``DCDiscriminator``, trained on the 1000 training images scaled to [-1, 1] (the generator
    ends in ``tanh``) with :func:`gmlib.train.train`."""

    latent_dim: int = 16  # dimension of z ~ N(0, I)
    channels: int = 32  # feature maps of the first convolution of D and the last of G (twice that in the middle)
    batchnorm: bool = True  # batch normalization in the generator (the discriminator has none)
    objective: str = "non_saturating"  # one of OBJECTIVES
    d_steps: int = 1  # discriminator updates per generator update
    gp_weight: float = 10.0  # omega_GP, the gradient penalty's weight (wgan_gp only)
    lr_d: float = 5e-4  # Adam step sizes; Radford et al. (2016) use 2e-4, which needs more epochs here
    lr_g: float = 5e-4
    betas: tuple = (0.5, 0.999)  # Adam's (beta1, beta2) (Radford et al. 2016)
    batch_size: int = 64  # 16 mini-batches per epoch (the last one of 40 images)
    epochs: int = 80  # passes over the 1000 training images
    device: str | None = "cpu"  # None: gmlib.device.get_device() (CUDA when present)

    def config(self) -> GANConfig:
        return GANConfig(objective=self.objective, d_steps=self.d_steps, gp_weight=self.gp_weight,
                         lr_d=self.lr_d, lr_g=self.lr_g, betas=tuple(self.betas))


#: ``quick``: what Chapter 6 trains (about 15 s on one CPU thread). ``full``: networks twice as
#: wide, the step size of Radford et al. (2016) and 400 epochs, on CUDA when present
#: (``python -m gmlib.bench.gan --preset full``).
PRESETS = {
    "quick": DigitsGANPreset(),
    "full": DigitsGANPreset(channels=64, lr_d=2e-4, lr_g=2e-4, epochs=400, device=None),
}


def _preset(preset) -> DigitsGANPreset:
    if isinstance(preset, DigitsGANPreset):
        return preset
    if isinstance(preset, str) and preset in PRESETS:
        return PRESETS[preset]
    raise ValueError(f"unknown digits GAN preset {preset!r}; choose one of {sorted(PRESETS)} or pass a DigitsGANPreset")


def digits_gan(preset="quick", *, seed: int = 0) -> GAN:
    """An untrained DCGAN of ``preset`` (a name in :data:`PRESETS` or a :class:`DigitsGANPreset`),
    its weights seeded with ``seed``."""
    p = _preset(preset)
    torch.manual_seed(seed)
    generator = DCGenerator(p.latent_dim, 8, channels=p.channels, batchnorm=p.batchnorm)
    discriminator = DCDiscriminator(8, channels=p.channels)
    return GAN(generator, discriminator, p.latent_dim, p.config())


def train_digits_gan(preset="quick", *, seed: int = 0, device=None, callback=None, progress: bool = True):
    """Train the DCGAN of ``preset`` on the training digits scaled to [-1, 1].

    ``device`` overrides the preset's; ``callback(epoch, gan, history)`` is passed to
    :func:`gmlib.train.train` (e.g. to keep samples over training). Returns ``(gan, history)``;
    ``history.seconds`` is the training wall time. On the CPU a run is reproducible under ``seed``.
    """
    p = _preset(preset)
    gan = digits_gan(p, seed=seed)
    x = digits("train", "float") * 2 - 1  # (1000, 64) in [-1, 1]
    history = train(gan, x, epochs=p.epochs, batch_size=p.batch_size, patience=None, seed=seed,
                    device=device if device is not None else p.device, progress=progress,
                    desc="DCGAN", callback=callback)
    return gan, history


def digits_gan_samples(gan: GAN, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` samples ``(n, 64)`` of a digits GAN as images in [0, 1] (on the CPU), drawn with
    :meth:`GAN.sample` (in eval mode: batch normalization uses its running statistics, so a
    sample does not depend on the others drawn with it)."""
    check_int(n, "n")
    x = gan.sample(n, torch.Generator().manual_seed(seed)).cpu()  # (n, 64) in (-1, 1)
    return ((x + 1) / 2).clamp(0, 1)


def digits_gan_quality(gan: GAN, *, n: int = 1000, seed: int = 0) -> dict:
    """Sample quality of a digits GAN against the held-out test images (ch06:frechet).

    ``frechet``: :func:`gmlib.metrics.digit_frechet` of ``n`` samples (:func:`digits_gan_samples`)
    against the 447 test images; ``floor``: the same for the 1000 real training images, what a
    perfect sampler of the training distribution would score with ``n = 1000``;
    ``class_counts`` (``LongTensor (10,)``): :func:`gmlib.metrics.class_histogram` of the samples,
    and ``train_class_counts`` that of the training images, for comparison.
    """
    samples = digits_gan_samples(gan, n, seed=seed)
    x_train, x_test = digits("train", "float"), digits("test", "float")
    return {
        "frechet": digit_frechet(samples, x_test),
        "floor": digit_frechet(x_train, x_test),
        "class_counts": class_histogram(samples),
        "train_class_counts": class_histogram(x_train),
        "n": n,
    }


# ======================================================================================
# Chapter 7: the multi-scale flow of the digits, whose weights the book ships
# (``python -m gmlib.bench.flows --save`` trains it and writes gmlib/weights/flow_digits.pt).
# ======================================================================================


@dataclass(frozen=True)
class FlowDigitsRecipe:
    """Chapter 7's main model: a multi-scale flow (:func:`gmlib.flows.image_flow`: checkerboard
    couplings, a squeeze, channel couplings, half the channels factored out, the same again at
    the next scale) with rational-quadratic spline couplings (Durkan et al. 2019), behind a logit
    layer, and a variational dequantizer (Ho et al. 2019), trained on the integer digits
    (``gmlib.data.digits(split, "int")``, 17 levels) by :func:`gmlib.train.train`, which minimises
    minus the dequantization bound (ch07:dequantization-bound) and stops early on its validation
    value. Chosen on the validation split (the search is summarised in Chapter 7)."""

    side: int = 8  # images are side x side, one channel (rows of side * side pixels)
    levels: int = 17  # L, grey levels of the integer data
    coupling: str = "spline"  # "additive", "affine" or "spline" (FlowConfig.coupling)
    n_layers: int = 4  # couplings per half-scale (FlowConfig.n_layers)
    hidden: int = 64  # channels of each convolutional conditioner
    num_bins: int = 8  # K, spline bins
    n_scales: int = 2  # squeeze steps
    alpha: float = 0.05  # the logit layer's margin: z = logit(alpha + (1 - 2 alpha) y)
    dequantizer_layers: int = 4  # affine couplings of the variational dequantizer (0: uniform dequantization)
    dequantizer_hidden: int = 64  # width of their two-layer MLP conditioners (the context: the image)
    lr: float = 1e-3  # Adam
    batch_size: int = 64
    epochs: int = 110  # at most (early stopping ended the shipped run at 90, in 387 s on one thread)
    patience: int = 25  # epochs without a better validation bound before stopping
    seed: int = 0  # initial weights, batch order and the dequantization noise
    shift_p: float = 0.3  # probability that a training image is moved by one pixel (gmlib.data.random_shift)

    @property
    def pixels(self) -> int:
        return self.side * self.side


#: ``quick``: the shipped model (about 7 minutes of training on one CPU thread). ``full``: conditioners twice
#: as wide, six couplings per half-scale and four times the epochs, for CUDA
#: (``python -m gmlib.bench.flows --preset full --device cuda``); ``mnist``: ``full`` on MNIST's
#: 28 x 28 images at 256 levels (``--preset mnist``; needs the MNIST files, see gmlib.data.load_mnist).
FLOW_PRESETS = {
    "quick": FlowDigitsRecipe(),
    "full": FlowDigitsRecipe(n_layers=6, hidden=128, dequantizer_hidden=128, epochs=440, patience=60),
    "mnist": FlowDigitsRecipe(side=28, levels=256, n_layers=6, hidden=128, dequantizer_hidden=256,
                              epochs=100, patience=10, batch_size=128, shift_p=0.0),
}


def flow_digits(recipe: FlowDigitsRecipe = FlowDigitsRecipe()) -> Flow:
    """An untrained model of ``recipe`` (weights seeded with ``recipe.seed``): a :class:`gmlib.flows.Flow`
    on rows of ``side * side`` integer pixels, ``event_shape (side * side,)``."""
    check_int(recipe.dequantizer_layers, "dequantizer_layers", minimum=0)
    torch.manual_seed(recipe.seed)
    d, shape = recipe.pixels, (1, recipe.side, recipe.side)
    config = FlowConfig(coupling=recipe.coupling, n_layers=recipe.n_layers, hidden=recipe.hidden,
                        num_bins=recipe.num_bins, n_scales=recipe.n_scales)
    bijection = Compose(Logit(recipe.alpha, (d,)), Reshape((d,), shape),
                        image_flow(shape, config), Reshape(shape, (d,)))
    if recipe.dequantizer_layers == 0:
        dequantizer = UniformDequantizer(recipe.levels)
    else:
        dq = FlowConfig(coupling="affine", n_layers=recipe.dequantizer_layers, hidden=recipe.dequantizer_hidden,
                        actnorm=False, mix=False)
        dequantizer = VariationalDequantizer(recipe.levels, vector_flow(d, dq, context_features=d))
    return Flow(bijection, (d,), dequantizer)


# ======================================================================================
# Chapter 8: autoregressive models of the digits (``python -m gmlib.bench.autoregressive --save``
# trains the main model and the one-of-each comparison and writes gmlib/weights/ar_digits.pt).
# ======================================================================================

ALL_SCANS = ("rows", "rows-rtl", "rows-up", "rows-up-rtl", "cols", "cols-up", "cols-rtl", "cols-rtl-up")


@dataclass(frozen=True)
class ARDigitsRecipe:
    """One of Chapter 8's autoregressive models of the integer digits
    (``gmlib.data.digits(split, "int")``, 17 levels), trained by :func:`gmlib.train.train` on the exact
    negative log-likelihood (for ``kind="scans"``, the order-agnostic loss of
    :class:`gmlib.autoregressive.ScanMixture`), with one-pixel shifts and the best validation epoch kept.

    ``kind`` picks the model: ``"scans"`` (the main model: one gated PixelCNN for every scan in
    ``scans`` and the exact mixture over them), ``"made"``, ``"pixelcnn"``, ``"gated"``, ``"rowlstm"``
    or ``"transformer"`` (one model in the first scan of ``scans``). ``width`` is the channels of the
    convolutional models, the hidden units of MADE's two layers, the Transformer's ``d_model``.
    Chosen on the validation split (the search is summarised in Chapter 8)."""

    kind: str = "scans"
    side: int = 8  # images are side x side, one channel (rows of side * side pixels)
    levels: int = 17  # L, grey levels
    scans: tuple = ALL_SCANS  # orderings (gmlib.autoregressive.SCANS); single models use the first
    width: int = 64  # channels / hidden units / d_model
    n_layers: int = 5  # masked or gated layers, LSTM layers, Transformer blocks
    first_kernel: int = 7  # the first (mask-A) convolution of the convolutional models
    dropout: float = 0.1  # PixelCNNs (residual branches) and the Transformer
    lr: float = 2e-3  # Adam
    lr_schedule: str = "constant"  # gmlib.train.train's lr_schedule
    ema: float | None = 0.995  # gmlib.train.train's ema: decay of the average of the weights (None: off)
    batch_size: int = 64
    epochs: int = 100  # at most
    patience: int | None = None  # early stopping (None: every epoch, the best validation epoch kept)
    seed: int = 0  # initial weights, batch order, the scans drawn and the dropout
    shift_p: float = 0.5  # probability that a training image is moved by one pixel (gmlib.data.random_shift)

    @property
    def pixels(self) -> int:
        return self.side * self.side


def ar_digits(recipe: ARDigitsRecipe = ARDigitsRecipe()):
    """An untrained model of ``recipe`` (weights seeded with ``recipe.seed``): a
    :class:`gmlib.autoregressive.ScanMixture` for ``kind="scans"``, else one
    :class:`gmlib.autoregressive.AutoregressiveModel` whose ordering is the first scan."""
    check_int(recipe.width, "width")
    if not recipe.scans:
        raise ValueError("scans must name at least one scan")
    torch.manual_seed(recipe.seed)
    side, levels, first = recipe.side, recipe.levels, recipe.scans[0]
    conv = dict(channels=recipe.width, n_layers=recipe.n_layers, first_kernel=recipe.first_kernel)
    if recipe.kind == "scans":
        return ar.ScanMixture(side, levels, recipe.scans, architecture="gated", dropout=recipe.dropout, **conv)
    if recipe.kind == "pixelcnn":
        return ar.PixelCNN(side, levels, dropout=recipe.dropout, scan=first, **conv)
    if recipe.kind == "gated":
        return ar.GatedPixelCNN(side, levels, dropout=recipe.dropout, scan=first, **conv)
    if recipe.kind == "rowlstm":
        return ar.RowLSTM(side, levels, scan=first, **conv)
    order = ar.scan_order(side, first)
    if recipe.kind == "made":
        return ar.MADEModel(recipe.pixels, levels, (recipe.width,) * recipe.n_layers, order=order)
    if recipe.kind == "transformer":
        config = ar.TransformerConfig(d_model=recipe.width, n_heads=4, n_layers=recipe.n_layers,
                                      d_ff=4 * recipe.width, dropout=recipe.dropout)
        return ar.CausalTransformer(recipe.pixels, levels, config, order=order)
    raise ValueError(f"kind must be one of 'scans', 'made', 'pixelcnn', 'gated', 'rowlstm', 'transformer', "
                     f"got {recipe.kind!r}")


#: ``quick``: the shipped main model (one gated PixelCNN for the eight scans, weights averaged; about
#: 3.5 minutes on 2 CPU threads). ``full``: wider and longer, for CUDA (``python -m gmlib.bench.autoregressive --preset
#: full --device cuda``); ``mnist``: the same on MNIST's 28 x 28 images at 256 levels (needs the files).
AR_PRESETS = {
    "quick": ARDigitsRecipe(),
    "full": ARDigitsRecipe(width=128, n_layers=8, epochs=300, dropout=0.2),
    "mnist": ARDigitsRecipe(side=28, levels=256, width=128, n_layers=8, epochs=30, batch_size=128, shift_p=0.0,
                            lr=1e-3, dropout=0.0, ema=0.999),
}

#: One model of each kind, in raster order, for the chapter's comparison (trained once each by the
#: benchmark, one CPU thread each).
AR_BASELINES = {
    "MADE": ARDigitsRecipe(kind="made", scans=("rows",), width=256, n_layers=2, lr=1e-3, lr_schedule="cosine",
                           ema=None, epochs=60, dropout=0.0),
    "PixelCNN": ARDigitsRecipe(kind="pixelcnn", scans=("rows",), lr=3e-3, lr_schedule="cosine", ema=None, epochs=40,
                               dropout=0.2),
    "gated PixelCNN": ARDigitsRecipe(kind="gated", scans=("rows",), lr=3e-3, lr_schedule="cosine", ema=None,
                                     epochs=30, dropout=0.2),
    "Row LSTM": ARDigitsRecipe(kind="rowlstm", scans=("rows",), n_layers=2, lr=3e-3, lr_schedule="cosine", ema=None,
                               epochs=40, dropout=0.0),
    "Transformer": ARDigitsRecipe(kind="transformer", scans=("rows",), width=64, n_layers=2, epochs=60,
                                  lr=1e-3, lr_schedule="cosine", ema=None, dropout=0.1),
}


# ======================================================================================
# Chapter 9: the diffusion and flow-matching models of the digits, whose weights the book ships
# (``python -m gmlib.bench.diffusion --save`` trains them and writes gmlib/weights/diffusion_digits.pt).
# ======================================================================================


@dataclass(frozen=True)
class DiffusionDigitsRecipe:
    """One of Chapter 9's models of the integer digits (``gmlib.data.digits(split, "int")``, 17 levels):
    a :class:`gmlib.nets.TimeUNet` inside a :class:`gmlib.diffusion.GaussianDiffusion` (``kind="ddpm"``,
    trained on the simple loss, which for the log-linear schedule is the bound up to a constant factor) or
    a :class:`gmlib.diffusion.FlowMatching` (``kind="flow_matching"``), trained by :func:`gmlib.train.train`
    with one-pixel shifts, an average of the weights, and the best validation epoch kept. With
    ``n_classes = 10`` the network also sees the label, dropped for a fraction ``p_uncond`` of the training
    images (classifier-free guidance)."""

    kind: str = "ddpm"  # "ddpm" or "flow_matching"
    side: int = 8
    levels: int = 17
    channels: int = 64  # TimeUNet's width
    fourier: tuple = (3, 4)  # TimeUNet's Fourier features: sin and cos of 2^k pi x, period 2 and 1 bins of 17 levels
    dropout: float = 0.0
    schedule: str = "loglinear"  # gmlib.diffusion.SCHEDULES (ddpm only)
    timesteps: int = 1000
    weighting: str = "simple"
    importance_bins: int | None = 50  # GaussianDiffusion's importance sampling of the training steps
    symmetry_p: float = 0.0  # training images turned or flipped, the network told which (TimeUNet symmetries)
    n_classes: int | None = None
    p_uncond: float = 0.2
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    ema: float | None = 0.995
    batch_size: int = 128
    epochs: int = 300
    seed: int = 0
    shift_p: float = 0.25

    @property
    def pixels(self) -> int:
        return self.side * self.side


def diffusion_digits(recipe: DiffusionDigitsRecipe = DiffusionDigitsRecipe()):
    """An untrained model of ``recipe``, its weights seeded with ``recipe.seed``."""
    from .diffusion import FlowMatching, GaussianDiffusion
    from .nets import TimeUNet

    torch.manual_seed(recipe.seed)
    net = TimeUNet(recipe.side, channels=recipe.channels, n_classes=recipe.n_classes, dropout=recipe.dropout,
                   fourier=tuple(recipe.fourier), symmetries=recipe.symmetry_p > 0)
    common = dict(levels=recipe.levels, n_classes=recipe.n_classes, symmetry_p=recipe.symmetry_p,
                  p_uncond=recipe.p_uncond if recipe.n_classes is not None else 0.0)
    if recipe.kind == "ddpm":
        return GaussianDiffusion(net, recipe.pixels, timesteps=recipe.timesteps, schedule=recipe.schedule,
                                 weighting=recipe.weighting, importance_bins=recipe.importance_bins, **common)
    if recipe.kind == "flow_matching":
        return FlowMatching(net, recipe.pixels, **common)
    raise ValueError(f"kind must be 'ddpm' or 'flow_matching', got {recipe.kind!r}")


#: ``quick``: the shipped unconditional diffusion model (about 10 minutes on 2 CPU threads); ``full``:
#: wider and longer, for CUDA; ``mnist``: MNIST's 28 x 28 images at 256 levels (needs the files).
DIFFUSION_PRESETS = {
    "quick": DiffusionDigitsRecipe(),
    "full": DiffusionDigitsRecipe(channels=128, epochs=1500),
    "mnist": DiffusionDigitsRecipe(side=28, levels=256, channels=64, epochs=40, shift_p=0.0, dropout=0.0,
                                   lr=1e-3),
}

#: The models the chapter sets beside the main one: flow matching on the same network and budget, and the
#: class-conditional diffusion model of the guidance section (a shorter run).
DIFFUSION_COMPANIONS = {
    "flow matching": DiffusionDigitsRecipe(kind="flow_matching"),
    "conditional": DiffusionDigitsRecipe(n_classes=10, epochs=100),
}
