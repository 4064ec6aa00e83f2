"""Small trained models that the book ships: where their weights lie, how they are saved and loaded.

A chapter that needs a model trained for minutes loads it here in a second instead.
Every shipped file is written by a benchmark script, which trains the model's recipe
(:mod:`gmlib.recipes`) from scratch, prints its figures and (with ``--save``) overwrites
the weights:

=====================  ============================  ==========================================
model                  file                          regenerate with
=====================  ============================  ==========================================
Chapter 5's VAE        ``weights/vae_digits.pt``      ``python -m gmlib.bench.vae --save``
Chapter 7's flow       ``weights/flow_digits.pt``     ``python -m gmlib.bench.flows --save``
Chapter 8's models     ``weights/ar_digits.pt``       ``python -m gmlib.bench.autoregressive --save``
Chapter 9's models     ``weights/diffusion_digits.pt`` ``python -m gmlib.bench.diffusion --save``
=====================  ============================  ==========================================

The files hold a ``state_dict`` and the figures the script measured (``info``); they
are loaded with ``torch.load(..., weights_only=True)``, so a file can carry no code.
Chapters 8 and 9's files hold several models, their floating weights in half precision (the
benchmark measures its figures on the rounded weights it saves).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .device import get_device
from .flows import Flow
from .recipes import (ARDigitsRecipe, DiffusionDigitsRecipe, FlowDigitsRecipe, VAEDigitsRecipe, ar_digits,
                      diffusion_digits, flow_digits, vae_digits)
from .vae import VAE

__all__ = ["WEIGHTS_DIR", "load_vae_digits", "save_vae_digits", "load_flow_digits", "save_flow_digits",
           "load_ar_digits", "save_ar_digits", "load_diffusion_digits", "save_diffusion_digits", "half_precision_state",
           "half_precision_parameters"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _save(model, recipe, info: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"recipe": asdict(recipe), "info": dict(info), "state_dict": state}, tmp)
    tmp.replace(path)  # never leaves a half-written file behind
    return path


def _read(path: Path, command: str) -> dict:
    """The saved dictionary at ``path`` (tensors on the CPU, no code); errors name ``command``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; train it with: {command}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or carrying objects weights_only refuses
        raise ValueError(f"{path} cannot be read as weights ({type(err).__name__}); regenerate it with "
                         f"{command}") from None


def _load(path: Path, recipe_class, build, command: str, device):
    """``(model in eval mode on device, info)`` from ``path``; errors name ``command``."""
    blob = _read(path, command)
    try:
        recipe = recipe_class(**blob["recipe"])
        model = build(recipe)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} does not hold a {recipe_class.__name__} model ({err}); regenerate it with "
                         f"{command}") from None
    info = dict(blob.get("info", {}), recipe=asdict(recipe))
    return model.to(get_device(device)).eval(), info


def save_vae_digits(model: VAE, recipe: VAEDigitsRecipe, info: dict, path: Path | None = None) -> Path:
    """Write ``model``'s weights, the recipe and ``info`` (plain numbers and strings)."""
    return _save(model, recipe, info, Path(path) if path is not None else WEIGHTS_DIR / "vae_digits.pt")


def load_vae_digits(path: Path | str | None = None, device=None) -> tuple[VAE, dict]:
    """Chapter 5's trained VAE, in eval mode, and the figures measured when it was trained.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing.
    """
    path = Path(path) if path is not None else WEIGHTS_DIR / "vae_digits.pt"
    return _load(path, VAEDigitsRecipe, vae_digits, "python -m gmlib.bench.vae --save", device)


def save_flow_digits(model: Flow, recipe: FlowDigitsRecipe, info: dict, path: Path | None = None) -> Path:
    """Write ``model``'s weights, the recipe and ``info`` (plain numbers and strings)."""
    return _save(model, recipe, info, Path(path) if path is not None else WEIGHTS_DIR / "flow_digits.pt")


def load_flow_digits(path: Path | str | None = None, device=None) -> tuple[Flow, dict]:
    """Chapter 7's trained flow, in eval mode, and the figures measured when it was trained.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing.
    """
    path = Path(path) if path is not None else WEIGHTS_DIR / "flow_digits.pt"
    return _load(path, FlowDigitsRecipe, flow_digits, "python -m gmlib.bench.flows --save", device)


def half_precision_state(model: torch.nn.Module) -> dict:
    """``model``'s ``state_dict`` on the CPU with floating tensors in float16 (integers kept)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def _as_float32(state: dict) -> dict:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


AR_COMMAND = "python -m gmlib.bench.autoregressive --save"


def save_ar_digits(entries: dict, path: Path | None = None) -> Path:
    """Write Chapter 8's models: ``entries`` maps a name to ``(model, ARDigitsRecipe, info)``; the weights
    are stored in half precision (:func:`half_precision_state`)."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "ar_digits.pt"
    return _save_models(entries, path, half_precision_state)


def _save_models(entries: dict, path: Path, state_of) -> Path:
    """Write several models to ``path``: ``entries`` maps a name to ``(model, recipe, info)``, each stored as
    its recipe, its info and ``state_of(model)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {name: {"recipe": asdict(recipe), "info": dict(info), "state_dict": state_of(model)}
            for name, (model, recipe, info) in entries.items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"models": blob}, tmp)
    tmp.replace(path)  # never leaves a half-written file behind
    return path


def load_ar_digits(path: Path | str | None = None, device=None) -> dict:
    """Chapter 8's trained models: ``{name: (model in eval mode, info)}``, in the order they were saved
    (the main model first), float32 on ``device``; ``info`` holds the figures measured when it was
    trained and its recipe.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing, and
    ``ValueError`` when the file cannot be read or holds something else.
    """
    path = Path(path) if path is not None else WEIGHTS_DIR / "ar_digits.pt"

    def build(entry):
        recipe = ARDigitsRecipe(**{**entry["recipe"], "scans": tuple(entry["recipe"]["scans"])})
        model = ar_digits(recipe)
        model.load_state_dict(_as_float32(entry["state_dict"]))
        return model, recipe

    return _load_models(path, AR_COMMAND, "Chapter 8's models", build, device)


def _load_models(path: Path, command: str, what: str, build, device) -> dict:
    """``{name: (model in eval mode on device, info with its recipe)}`` from a file of several models;
    ``build(entry) -> (model with its weights, recipe)``. Errors name ``what`` and ``command``."""
    blob = _read(path, command)
    out = {}
    try:
        for name, entry in blob["models"].items():
            model, recipe = build(entry)
            out[name] = (model.to(get_device(device)).eval(), dict(entry.get("info", {}), recipe=asdict(recipe)))
    except (KeyError, TypeError, RuntimeError, AttributeError) as err:
        raise ValueError(f"{path} does not hold {what} ({type(err).__name__}: {err}); regenerate it "
                         f"with {command}") from None
    if not out:
        raise ValueError(f"{path} holds no model; regenerate it with {command}")
    return out


DIFFUSION_COMMAND = "python -m gmlib.bench.diffusion --save"


def save_diffusion_digits(entries: dict, path: Path | None = None) -> Path:
    """Write Chapter 9's models: ``entries`` maps a name to ``(model, DiffusionDigitsRecipe, info)``; the
    network's parameters are stored in half precision, its buffers as they are (:func:`half_precision_parameters`;
    the schedule is rebuilt from the recipe)."""
    path = Path(path) if path is not None else WEIGHTS_DIR / "diffusion_digits.pt"
    return _save_models(entries, path, lambda model: half_precision_parameters(model.model))


def half_precision_parameters(module: torch.nn.Module) -> dict:
    """``module``'s ``state_dict`` on the CPU with its *parameters* in float16 and its buffers as they are
    (a diffusion's float64 schedule, a network's Fourier frequencies: rounding them changes the model)."""
    params = {name for name, _ in module.named_parameters()}
    return {k: (v.detach().cpu().half() if k in params and v.is_floating_point() else v.detach().cpu())
            for k, v in module.state_dict().items()}


def load_diffusion_digits(path: Path | str | None = None, device=None) -> dict:
    """Chapter 9's trained models: ``{name: (model in eval mode, info)}`` (``"diffusion"``, the main model,
    first; ``"flow matching"`` and ``"conditional"`` after it), float32 on ``device``; ``info`` holds the
    figures measured when it was trained and its recipe.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing, and
    ``ValueError`` when the file cannot be read or holds something else.
    """
    path = Path(path) if path is not None else WEIGHTS_DIR / "diffusion_digits.pt"

    def build(entry):
        recipe = DiffusionDigitsRecipe(**{**entry["recipe"], "fourier": tuple(entry["recipe"]["fourier"])})
        model = diffusion_digits(recipe)
        model.model.load_state_dict({k: (v.float() if v.dtype == torch.float16 else v)
                                     for k, v in entry["state_dict"].items()})
        return model, recipe

    return _load_models(path, DIFFUSION_COMMAND, "Chapter 9's models", build, device)
