"""Benchmark: Chapter 6's DCGAN on the digits, its Fréchet distance against the real-data floor, and training time.

Run ``python -m gmlib.bench.gan [--preset quick|full] [--seeds N] [--toy] [--device cpu|cuda]``.

For each seed, trains the DCGAN of ``gmlib.recipes.PRESETS[preset]`` (``quick``: what
Chapter 6 trains; ``full``: wider and four times longer, on CUDA when present) on the
1000 training digits through :func:`gmlib.train.train`, then prints:

- the Fréchet distance (squared, as FID reports it) between the features of the digit
  classifier of :mod:`gmlib.metrics` for ``--n`` samples and for the 447 held-out test
  images (:func:`gmlib.recipes.digits_gan_quality`);
- the floor: the same distance for the 1000 real training images, what a sampler of the
  training distribution would score; and, for scale, Chapter 5's VAE (shipped weights)
  sampled the same way;
- the classes of the samples (the classifier's predictions): how many classes get at
  least half their share, and the smallest share (mode coverage);
- the training wall time.

``--toy`` also runs the objective comparison of Chapter 6 on the 2-D mixtures
(:func:`gmlib.recipes.compare_objectives`: modes covered, high-quality share, MMD^2; mean ±
sd over ``--toy-seeds``). Nothing is judged against a target (the issue sets none): the
figures are printed for the README.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from ._common import add_device_arguments, print_header, run_on_device, sync
from ..data import digits
from ..metrics import class_histogram, digit_frechet
from ..recipes import PRESETS, compare_objectives, comparison_table, digits_gan_quality, train_digits_gan


def _mean_sd(values) -> str:
    v = torch.tensor(values, dtype=torch.float64)
    sd = float(v.std()) if len(v) > 1 else 0.0
    return f"{float(v.mean()):.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.set_defaults(threads=1)  # small convolutions: one thread is fastest on 2 shared cores
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="the DCGAN recipe (gmlib.recipes.PRESETS)")
    parser.add_argument("--seeds", type=int, default=3, help="training runs, seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (e.g. for a smoke test)")
    parser.add_argument("--n", type=int, default=1000, help="samples per model for the Fréchet distance")
    parser.add_argument("--toy", action="store_true", help="also compare the five objectives on the 2-D mixtures")
    parser.add_argument("--toy-seeds", type=int, default=3, help="seeds per objective for --toy")
    parser.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.n < 2 or args.toy_seeds < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--seeds, --toy-seeds and --epochs must be positive and --n at least 2")
    args.recipe = PRESETS[args.preset]
    if args.epochs is not None:
        args.recipe = dataclasses.replace(args.recipe, epochs=args.epochs)
    return run_on_device(args, _run)


def _vae_reference(n: int) -> float | None:
    """Fréchet distance of Chapter 5's VAE (shipped weights) samples to the test images, or None."""
    try:
        from ..pretrained import load_vae_digits

        model, _ = load_vae_digits(device="cpu")
    except Exception as err:  # the weights are optional here: say why and go on
        print(f"(Chapter 5's VAE not available: {err})")
        return None
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        x = model.sample(n).double() / 16.0  # (n, 64), levels 0..16 -> [0, 1]
    return digit_frechet(x, digits("test", "float"))


def _run(args, device) -> int:
    recipe = args.recipe
    print_header(
        f"Chapter 6's DCGAN on the digits, preset {args.preset!r} (train 1000 / test 447, 64 pixels)",
        device,
        [("recipe", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())),
         ("evaluation", f"Fréchet distance (squared) of digit-classifier features, {args.n} samples vs the test images")],
    )
    rows = []
    for seed in range(args.seeds):
        sync(device)
        start = time.perf_counter()
        gan, history = train_digits_gan(recipe, seed=seed, device=device, progress=args.progress)
        sync(device)
        seconds = time.perf_counter() - start
        q = digits_gan_quality(gan, n=args.n, seed=seed)
        share = q["class_counts"].double() / args.n  # (10,)
        rows.append({"seed": seed, "seconds": seconds, "frechet": q["frechet"], "floor": q["floor"],
                     "classes": int((share >= 0.05).sum()), "min_share": float(share.min()),
                     "d_loss": history.player_loss["discriminator"][-1],
                     "g_loss": history.player_loss["generator"][-1]})
        r = rows[-1]
        print(f"seed {seed}: Fréchet {r['frechet']:7.2f}   classes with >= 5% of samples {r['classes']:2d}/10 "
              f"(smallest share {r['min_share']:.3f})   final losses D {r['d_loss']:.3f} G {r['g_loss']:.3f}   "
              f"{seconds:6.1f} s ({history.epochs_run} epochs)", flush=True)

    floor = rows[0]["floor"]
    x_train = digits("train", "float")
    train_share = class_histogram(x_train).double() / x_train.shape[0]
    vae = _vae_reference(args.n)
    print()
    print(f"{'':<44}{'Fréchet distance':>18}")
    print(f"{'floor: real training images vs test':<44}{floor:>18.2f}")
    print(f"{'DCGAN samples vs test (mean ± sd over seeds)':<44}{_mean_sd([r['frechet'] for r in rows]):>18}")
    if vae is not None:
        print(f"{'Chapter 5 VAE samples vs test (shipped)':<44}{vae:>18.2f}")
    ratio = [r["frechet"] / floor for r in rows]
    print()
    print(f"DCGAN / floor: {_mean_sd(ratio)}; training time {_mean_sd([r['seconds'] for r in rows])} s per run "
          f"({recipe.epochs} epochs, {torch.get_num_threads()} thread(s), {device.type})")
    print(f"smallest class share of the training images: {float(train_share.min()):.3f} (every class holds about 10%)")

    if args.toy:
        print()
        print(f"Objectives on the ring of eight Gaussians (gmlib.recipes.ToyProtocol, seeds 0..{args.toy_seeds - 1}):")
        toy_rows = compare_objectives(seeds=tuple(range(args.toy_seeds)), data="eight_gaussians")
        print(comparison_table(toy_rows))
    return 0 if all(math.isfinite(r["frechet"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
