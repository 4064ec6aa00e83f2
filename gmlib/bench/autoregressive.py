"""Benchmark: Chapter 8's autoregressive models on the 17-level digits, against the published reference and the target.

Run ``python -m gmlib.bench.autoregressive [--preset quick|full|mnist] [--save] [--device cpu|cuda]``.

Trains, through :func:`gmlib.train.train` and the recipes of :mod:`gmlib.recipes`, the chapter's
main model (:data:`gmlib.recipes.AR_PRESETS`: one gated PixelCNN for the eight raster scans of the
image, :class:`gmlib.autoregressive.ScanMixture`, and the exact mixture over the scans), then one
model of each kind in raster order (:data:`gmlib.recipes.AR_BASELINES`: MADE, PixelCNN, gated
PixelCNN, Row LSTM, causal Transformer; ``--no-baselines`` skips them), each seeded, one run each.
For every model it prints the exact negative log-likelihood of the discrete images on the
validation and test splits (mean and standard error over images, nats per image and bits per
dimension), the training wall time and epochs, and the time to draw a sample (a batch of 64,
per image) and to evaluate a log-likelihood (a batch of 256, per image).

Every likelihood here is exact: no bound, no estimate. The target (issue 20) is a test NLL of at
most 77 nats per image for the main model, trained in at most 226 s on 2 CPU cores (the script
uses ``--threads 2`` unless told otherwise). The published course reference (Tomczak 2022's ARM, a
causal 1-D convolution with 0.95 M parameters, run on this split with its own notebook) reaches
86.41 +- 0.31 nats after 226 s of CPU training. The script exits with status 1 when a target is
missed. ``--save`` rounds every model's weights to half precision, measures the figures on the
rounded weights, and writes them and the figures to ``gmlib/weights/ar_digits.pt``, which Chapter 8
loads. ``--preset full`` trains a wider network for longer (CUDA when present); ``--preset mnist``
the same on MNIST (28 x 28, 256 levels; the files must be in ``gmlib.data.cache_dir()``, see
:func:`gmlib.data.load_mnist`), without the baselines and whose targets are not checked.
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
import math
import sys
import time

import torch

from ._common import (add_device_arguments, image_splits, mean_se, print_header, run_on_device, sync,
                      with_settings)
from ..autoregressive import OrderMixture, ScanMixture
from ..data import random_shift
from ..metrics import nats_to_bits_per_dim
from ..pretrained import _as_float32, half_precision_state, save_ar_digits
from ..recipes import AR_BASELINES, AR_PRESETS, ARDigitsRecipe, ar_digits
from ..train import train

REFERENCE_ARM, REFERENCE_ARM_SE, REFERENCE_SECONDS = 86.41, 0.31, 226.0
TARGET_NLL, TARGET_SECONDS = 77.0, 226.0


def model_name(recipe: ARDigitsRecipe) -> str:
    """How the tables name a recipe's model, e.g. ``gated PixelCNN, 8 scans``."""
    if recipe.kind == "scans":
        return f"gated PixelCNN, {len(recipe.scans)} scans"
    return {"made": "MADE", "pixelcnn": "PixelCNN", "gated": "gated PixelCNN", "rowlstm": "Row LSTM",
            "transformer": "Transformer"}.get(recipe.kind, recipe.kind)


def load_data(recipe: ARDigitsRecipe, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recipe's images: :func:`._common.image_splits` of its side and levels."""
    return image_splits(recipe.side, recipe.levels, device)


@torch.no_grad()
def nll(model, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The exact negative log-likelihood of each image, nats, ``(N,)`` (float64 on the CPU)."""
    return torch.cat([-model.log_prob(xb).double().cpu() for xb in x.split(batch)])


def mixture_nll(model: OrderMixture, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(the mixture's NLL (N,), each component's (K, N))``: one pass per component, the mixture by
    :eq:`ch08:order-mixture` from the components' (what ``model.log_prob`` computes)."""
    parts = torch.stack([nll(c, x) for c in model.components])  # (K, N)
    return -(torch.logsumexp(-parts, 0) - math.log(len(parts))), parts


@torch.no_grad()
def timings(model, x: torch.Tensor, device, *, n_sample: int = 64, n_score: int = 256) -> dict:
    """Seconds per image to draw ``n_sample`` samples at once, and to evaluate ``log_prob`` on ``n_score``
    images (the best of two runs each)."""
    gen = torch.Generator(device=device).manual_seed(0)
    best_sample = best_score = float("inf")
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        model.sample(n_sample, generator=gen)
        sync(device)
        t1 = time.perf_counter()
        model.log_prob(x[:n_score])
        sync(device)
        t2 = time.perf_counter()
        best_sample, best_score = min(best_sample, t1 - t0), min(best_score, t2 - t1)
    return {"sample_seconds_per_image": best_sample / n_sample,
            "log_prob_seconds_per_image": best_score / min(n_score, len(x))}


def fit(recipe: ARDigitsRecipe, data, device, *, progress: bool, desc: str):
    """Train ``recipe``'s model; its weights rounded to half precision (what ``--save`` writes) and
    evaluated. Returns ``(model, info)``."""
    x_train, x_val, x_test = data
    model = ar_digits(recipe)
    augment = partial(random_shift, p=recipe.shift_p, side=recipe.side) if recipe.shift_p > 0 else None
    sync(device)
    start = time.perf_counter()
    history = train(model, x_train, x_val, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                    patience=recipe.patience, seed=recipe.seed, device=device, progress=progress, desc=desc,
                    augment=augment, lr_schedule=recipe.lr_schedule, ema=recipe.ema)
    sync(device)
    seconds = time.perf_counter() - start
    model.load_state_dict(_as_float32(half_precision_state(model)))  # the weights that are saved
    model.eval()
    info = {"train_seconds": seconds, "epochs_run": history.epochs_run, "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early, "train_loss": list(history.train_loss),
            "val_loss": list(history.val_loss), "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}
    for split, x in (("val", x_val), ("test", x_test)):
        if isinstance(model, ScanMixture):
            values, parts = mixture_nll(model, x)
            info["scans"] = list(model.scans)
            info[f"scan_{split}_nll"] = parts.mean(1).tolist()
        else:
            values = nll(model, x)
        info[f"{split}_nll"], info[f"{split}_nll_se"] = mean_se(values)
    info.update(timings(model, x_test, device))
    return model, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.set_defaults(threads=2)  # the target is set on 2 CPU cores
    parser.add_argument("--preset", choices=sorted(AR_PRESETS), default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the main model's recipe, e.g. --set epochs=40 (repeatable; "
                             "scans=rows,cols for a tuple)")
    parser.add_argument("--no-baselines", action="store_true", help="train the main model only")
    parser.add_argument("--save", action="store_true", help="write gmlib/weights/ar_digits.pt")
    parser.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = parser.parse_args(argv)
    try:
        args.recipe = with_settings(AR_PRESETS[args.preset], args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.save and (args.recipe.side, args.recipe.levels) != (8, 17):
        parser.error("--save writes Chapter 8's digits models: use it with a digits preset")
    if args.save and args.no_baselines:
        parser.error("--save writes the main model and the baselines the chapter compares: drop --no-baselines")
    return run_on_device(args, _run)


def _run(args, device) -> int:
    recipe = args.recipe
    try:
        data = load_data(recipe, device)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    digits_run = (recipe.side, recipe.levels) == (8, 17)
    d = recipe.pixels
    main_name = model_name(recipe)
    runs = {main_name: recipe}
    if digits_run and not args.no_baselines:
        runs.update(AR_BASELINES)
    print_header(
        f"Chapter 8's autoregressive models, preset {args.preset}, on "
        f"{'the 17-level digits' if digits_run else 'MNIST'} (train {len(data[0])} / val {len(data[1])} / "
        f"test {len(data[2])}, {d} pixels)",
        device,
        [("main model", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())),
         ("compared", ", ".join(runs) if len(runs) > 1 else "(none: --no-baselines)")],
    )
    trained = {}
    for name, r in runs.items():
        try:
            model, info = fit(r, data, device, progress=args.progress, desc=name)
        except (ValueError, FloatingPointError) as err:
            print(f"error: {name} did not train: {err}", file=sys.stderr)
            return 2
        trained[name] = (model, r, info)
        print(f"trained {name}: {info['train_seconds']:.1f} s, {info['epochs_run']} epochs (best "
              f"{info['best_epoch'] + 1}), {info['parameters']:,} parameters, test NLL {info['test_nll']:.2f}",
              flush=True)
    print()
    print(f"{'model':<26}{'test NLL':>9}{'± se':>6}{'bits/dim':>9}{'val NLL':>9}{'train s':>9}{'epochs':>7}"
          f"{'ms/sample':>10}{'ms/log p':>9}")
    for name, (_, _, info) in trained.items():
        print(f"{name:<26}{info['test_nll']:>9.2f}{info['test_nll_se']:>6.2f}"
              f"{nats_to_bits_per_dim(info['test_nll'], d):>9.3f}{info['val_nll']:>9.2f}{info['train_seconds']:>9.1f}"
              f"{info['epochs_run']:>7}{1e3 * info['sample_seconds_per_image']:>10.2f}"
              f"{1e3 * info['log_prob_seconds_per_image']:>9.3f}")
    print("(exact negative log-likelihoods of the discrete images, nats per image; samples drawn 64 at a time, "
          "log-likelihoods 256 at a time)")
    main_info = trained[main_name][2]
    if "scan_test_nll" in main_info:
        per_scan = ", ".join(f"{s} {v:.2f}" for s, v in zip(main_info["scans"], main_info["scan_test_nll"]))
        print(f"{main_name}, each scan alone (test NLL): {per_scan}; the mixture: {main_info['test_nll']:.2f}")
    print()
    checks = []
    if digits_run:
        checks = [
            (f"main model's test NLL <= {TARGET_NLL:g} nats (reference ARM {REFERENCE_ARM:g} ± "
             f"{REFERENCE_ARM_SE:g} after {REFERENCE_SECONDS:g} s)", main_info["test_nll"] <= TARGET_NLL,
             f"{main_info['test_nll']:.2f} ± {main_info['test_nll_se']:.2f}"),
            (f"main model trained in <= {TARGET_SECONDS:g} s", main_info["train_seconds"] <= TARGET_SECONDS,
             f"{main_info['train_seconds']:.1f} s on {main_info['threads']} thread(s)"),
        ]
    for text, ok, value in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}: {value}")
    if args.save:
        stamp = {"preset": args.preset, "torch": str(torch.__version__), "device": str(device),
                 "date": time.strftime("%Y-%m-%d")}
        path = save_ar_digits({name: (model, r, {**info, **stamp}) for name, (model, r, info) in trained.items()})
        print(f"saved {path}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
