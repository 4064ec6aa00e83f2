"""Small trained models that the book ships, and the recipes that train them.

A chapter that needs a model trained for minutes loads it here in a second instead.
Every shipped file is written by a benchmark script, which trains the recipe from
scratch, prints its figures and (with ``--save``) overwrites the weights:

=====================  ============================  ==========================================
model                  file                          regenerate with
=====================  ============================  ==========================================
Chapter 5's VAE        ``weights/vae_digits.pt``      ``python -m gmlib.bench.vae --save``
=====================  ============================  ==========================================

The files hold a ``state_dict`` and the figures the script measured (``info``); they
are loaded with ``torch.load(..., weights_only=True)``, so a file can carry no code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .device import get_device
from .likelihoods import Categorical
from .nets import ConvDecoder, ConvEncoder
from .vae import VAE

__all__ = ["WEIGHTS_DIR", "VAEDigitsRecipe", "vae_digits", "load_vae_digits", "save_vae_digits"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


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


def save_vae_digits(model: VAE, recipe: VAEDigitsRecipe, info: dict, path: Path | None = None) -> Path:
    """Write ``model``'s weights, the recipe and ``info`` (plain numbers and strings)."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "vae_digits.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"recipe": asdict(recipe), "info": dict(info), "state_dict": state}, tmp)
    tmp.replace(path)  # never leaves a half-written file behind
    return path


def load_vae_digits(path: Path | str | None = None, device=None) -> tuple[VAE, dict]:
    """Chapter 5's trained VAE, in eval mode, and the figures measured when it was trained.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing.
    """
    path = Path(path) if path is not None else WEIGHTS_DIR / "vae_digits.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; train it with: python -m gmlib.bench.vae --save")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or carrying objects weights_only refuses
        raise ValueError(f"{path} cannot be read as weights ({type(err).__name__}); regenerate it with "
                         "python -m gmlib.bench.vae --save") from None
    try:
        recipe = VAEDigitsRecipe(**blob["recipe"])
        model = vae_digits(recipe)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} does not hold a VAEDigitsRecipe model ({err}); regenerate it with "
                         "python -m gmlib.bench.vae --save") from None
    info = dict(blob.get("info", {}), recipe=asdict(recipe))
    return model.to(get_device(device)).eval(), info
