"""Benchmark: Chapter 7's multi-scale flow on the 17-level digits, against published references and the target.

Run ``python -m gmlib.bench.flows [--preset quick|full|mnist] [--save] [--device cpu|cuda]``.

Trains :class:`gmlib.recipes.FlowDigitsRecipe` (a multi-scale flow of rational-quadratic spline
couplings with a variational dequantizer) on ``gmlib.data.digits("train", "int")`` through
:func:`gmlib.train.train`, with early stopping on the validation bound, and prints, on the
validation and test splits, in nats per image and bits per dimension, each *on the discrete
data* (a probability of the integer image, comparable with Chapters 4 to 6):

- the variational dequantization bound (ch07:dequantization-bound), averaged over
  ``--bound-samples`` draws of the noise per image: a lower bound on log P(x), so its negative
  is an upper bound on the negative log-likelihood;
- the uniform dequantization bound of the same density (the dequantizer replaced by uniform
  noise), which the variational one tightens;
- the importance-weighted estimate with ``--k`` draws (Burda et al. 2016), named as an estimate:
  below log P(x) in expectation, tending to it as k grows;

with the standard error over images, the training wall time and epochs, and the time to draw a
sample and to evaluate a log-likelihood, per image. The target (issue 19) is a test bound of at
most 85 nats per image, trained in at most 10 minutes on 2 CPU cores. The published course
reference (Tomczak 2022, measured on this split with its own notebooks) reaches 122.7 nats with
Real NVP as a continuous density (about 167 nats as a bound on the discrete data) and 143.4 nats
exactly with integer discrete flows. The script exits with status 1 when a target is missed.
``--save`` writes the weights and these figures to ``gmlib/weights/flow_digits.pt``, which
Chapter 7 loads. ``--preset full`` trains a wider flow for longer (CUDA when present);
``--preset mnist`` the same on MNIST (28 x 28, 256 levels; the files must be in
``gmlib.data.cache_dir()``, see :func:`gmlib.data.load_mnist`), whose targets are not checked.
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
import sys
import time

import torch

from ._common import (add_device_arguments, image_splits, mean_se, print_header, run_on_device, sync,
                      with_settings)
from ..data import random_shift
from ..flows import Flow, UniformDequantizer
from ..metrics import nats_to_bits_per_dim
from ..pretrained import save_flow_digits
from ..recipes import FLOW_PRESETS, FlowDigitsRecipe, flow_digits
from ..train import train

REFERENCE_REALNVP_CONTINUOUS, REFERENCE_REALNVP_DISCRETE, REFERENCE_IDF = 122.7, 167.0, 143.4
TARGET_NLL, TARGET_SECONDS = 85.0, 600.0


def load_data(recipe: FlowDigitsRecipe, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recipe's images: :func:`._common.image_splits` of its side and levels."""
    return image_splits(recipe.side, recipe.levels, device)


@torch.no_grad()
def evaluate(model: Flow, x: torch.Tensor, *, bound_samples: int, k: int, seed: int,
             batch: int = 512) -> dict:
    """Negative log-likelihood bounds and estimate per image on integer data ``x``: means and standard errors."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    uniform = Flow(model.bijection, model.event_shape, UniformDequantizer(model.dequantizer.levels))
    parts = {"nll": [], "uniform": [], "iw": []}
    for xb in x.split(batch):
        parts["nll"].append(-model.discrete_log_prob_bound(xb, n_samples=bound_samples, generator=gen))
        parts["uniform"].append(-uniform.discrete_log_prob_bound(xb, n_samples=bound_samples, generator=gen))
        parts["iw"].append(-model.discrete_log_prob_estimate(xb, k, generator=gen))
    out = {}
    for key, values in parts.items():
        out[key], out[f"{key}_se"] = mean_se(torch.cat(values))
    return out


@torch.no_grad()
def timings(model: Flow, x: torch.Tensor, device, *, n: int = 256, repeats: int = 3) -> dict:
    """Seconds per image to draw ``n`` samples at once and to evaluate ``log_prob`` on ``n`` images (best of ``repeats``)."""
    gen = torch.Generator(device=device).manual_seed(0)
    xs = x[:n]
    y, _ = model.dequantizer.dequantize(xs, gen)
    best_sample = best_density = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        model.sample(n, generator=gen)
        sync(device)
        t1 = time.perf_counter()
        model.log_prob(y)
        sync(device)
        t2 = time.perf_counter()
        best_sample, best_density = min(best_sample, t1 - t0), min(best_density, t2 - t1)
    return {"sample_seconds_per_image": best_sample / n, "log_prob_seconds_per_image": best_density / xs.shape[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.set_defaults(threads=1)  # small convolutions: one thread is fastest on 2 shared cores
    parser.add_argument("--preset", choices=sorted(FLOW_PRESETS), default="quick")
    parser.add_argument("--k", type=int, default=100, help="importance samples of the estimate")
    parser.add_argument("--bound-samples", type=int, default=16, help="noise draws per image for the bounds")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the recipe, e.g. --set hidden=96 (repeatable)")
    parser.add_argument("--save", action="store_true", help="write gmlib/weights/flow_digits.pt")
    parser.add_argument("--progress", action="store_true", help="show the training progress bar")
    args = parser.parse_args(argv)
    if args.k < 1 or args.bound_samples < 1:
        parser.error("--k and --bound-samples must be positive")
    try:
        args.recipe = with_settings(FLOW_PRESETS[args.preset], args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.save and (args.recipe.side, args.recipe.levels) != (8, 17):
        parser.error("--save writes Chapter 7's digits model: use it with a digits preset")
    return run_on_device(args, _run)


def _run(args, device) -> int:
    recipe = args.recipe
    try:
        x_train, x_val, x_test = load_data(recipe, device)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    digits_run = (recipe.side, recipe.levels) == (8, 17)
    d = recipe.pixels
    print_header(
        f"Chapter 7's flow, preset {args.preset}, on {'the 17-level digits' if digits_run else 'MNIST'} "
        f"(train {len(x_train)} / val {len(x_val)} / test {len(x_test)}, {d} pixels)",
        device,
        [("recipe", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())),
         ("evaluation", f"bounds averaged over {args.bound_samples} noise draws per image; "
                        f"importance-weighted estimate with k = {args.k}")],
    )
    model = flow_digits(recipe)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,} "
          f"(dequantizer {sum(p.numel() for p in model.dequantizer.parameters()):,})")
    augment = partial(random_shift, p=recipe.shift_p, side=recipe.side) if recipe.shift_p > 0 else None
    sync(device)
    start = time.perf_counter()
    history = train(model, x_train, x_val, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                    patience=recipe.patience, seed=recipe.seed, device=device, progress=args.progress,
                    desc="flow", augment=augment)
    sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    results = {split: evaluate(model, x, bound_samples=args.bound_samples, k=args.k, seed=1)
               for split, x in (("val", x_val), ("test", x_test))}
    speed = timings(model, x_test, device)

    print(f"training: {seconds:.1f} s wall, {history.epochs_run} epochs, best epoch {history.best_epoch + 1}, "
          f"{'stopped early' if history.stopped_early else 'ran every epoch'}")
    print(f"per image: a sample {1e3 * speed['sample_seconds_per_image']:.3f} ms, a log-likelihood "
          f"{1e3 * speed['log_prob_seconds_per_image']:.3f} ms (batches of 256)")
    print()
    heads = [("variational bound", "nll"), ("uniform bound", "uniform"), (f"IW estimate k={args.k}", "iw")]
    print(f"{'split':<6}" + "".join(f"{h:>20}{'± se':>7}{'bits/dim':>9}" for h, _ in heads))
    for split, r in results.items():
        print(f"{split:<6}" + "".join(f"{r[key]:>20.2f}{r[key + '_se']:>7.2f}{nats_to_bits_per_dim(r[key], d):>9.3f}"
                                      for _, key in heads))
    print("(negative log-likelihoods of the discrete images, nats per image; the bounds are upper bounds, "
          "the estimate is not)")
    print()
    test = results["test"]
    checks = [(f"training time <= {TARGET_SECONDS:g} s", seconds <= TARGET_SECONDS, f"{seconds:.1f} s")]
    if digits_run:
        checks.insert(0, (
            f"test variational bound <= {TARGET_NLL:g} nats (reference Real NVP about {REFERENCE_REALNVP_DISCRETE:g} "
            f"as a discrete bound, {REFERENCE_REALNVP_CONTINUOUS:g} as a continuous density; integer discrete flow "
            f"{REFERENCE_IDF:g})", test["nll"] <= TARGET_NLL, f"{test['nll']:.2f}"))
    else:
        checks = []  # MNIST: figures only
    for text, ok, value in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}: {value}")
    if args.save:
        info = {"train_seconds": seconds, "epochs_run": history.epochs_run, "best_epoch": history.best_epoch,
                "train_loss": list(history.train_loss), "val_loss": list(history.val_loss),
                "k": args.k, "bound_samples": args.bound_samples, "preset": args.preset,
                "torch": str(torch.__version__), "threads": torch.get_num_threads(), "device": str(device),
                "date": time.strftime("%Y-%m-%d"), **speed,
                **{f"{split}_{key}": value for split, r in results.items() for key, value in r.items()}}
        path = save_flow_digits(model, recipe, info)
        print(f"saved {path}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
