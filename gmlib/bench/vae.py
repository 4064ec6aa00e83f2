"""Benchmark: Chapter 5's VAE on the 17-level digits, against a published reference and the targets.

Run ``python -m gmlib.bench.vae [--save] [--device cpu|cuda]``.

Trains :class:`gmlib.recipes.VAEDigitsRecipe` (a convolutional VAE with a 17-way
categorical decoder) on ``gmlib.data.digits("train", "int")`` through
:func:`gmlib.train.train`, with early stopping on the validation negative ELBO, and
prints, on the validation and test splits, in nats per image and bits per dimension:

- the negative ELBO, averaged over ``--elbo-samples`` draws of z per image;
- the importance-weighted bound with ``--k`` samples (Burda et al. 2016), the usual
  estimate of the negative log-likelihood;

with the standard error over images, the training wall time and epochs. The targets
(issue 5) are a test negative ELBO of at most 92 and an IWAE (k = 1000) negative
log-likelihood of at most 87 nats per image, trained in at most 5 minutes on 2 CPU
cores; a published reference VAE with a categorical decoder reaches about 97 nats
(negative ELBO) on this split (Tomczak 2022). The script exits with status 1 when a
target is missed. ``--save`` writes the weights and these figures to
``gmlib/weights/vae_digits.pt``, which Chapter 5 loads.
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
import math
import sys
import time

import torch

from ._common import add_device_arguments, print_header, run_on_device, sync, with_settings
from ..data import digits, random_shift
from ..metrics import nats_to_bits_per_dim
from ..pretrained import save_vae_digits
from ..recipes import VAEDigitsRecipe, vae_digits
from ..train import train

REFERENCE_NELBO = 97.0  # Tomczak (2022), VAE with a categorical decoder, this split
TARGET_NELBO, TARGET_NLL, TARGET_SECONDS = 92.0, 87.0, 300.0


@torch.no_grad()
def evaluate(model, x: torch.Tensor, *, elbo_samples: int, k: int, seed: int) -> dict:
    """Negative ELBO and IWAE-k negative log-likelihood per image: means and standard errors."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    nelbo = -model.elbo(x, n_samples=elbo_samples, generator=gen).double()  # (B,)
    nll = -model.iwae_bound(x, k, generator=gen).double()  # (B,)
    n = x.shape[0]
    return {"nelbo": float(nelbo.mean()), "nelbo_se": float(nelbo.std() / math.sqrt(n)),
            "nll": float(nll.mean()), "nll_se": float(nll.std() / math.sqrt(n))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.set_defaults(threads=1)  # small convolutions: one thread is fastest on 2 shared cores
    parser.add_argument("--k", type=int, default=1000, help="importance samples of the IWAE bound")
    parser.add_argument("--elbo-samples", type=int, default=100, help="draws of z per image for the ELBO")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the recipe, e.g. --set latent_dim=32 (repeatable)")
    parser.add_argument("--save", action="store_true", help="write gmlib/weights/vae_digits.pt")
    parser.add_argument("--progress", action="store_true", help="show the training progress bar")
    args = parser.parse_args(argv)
    if args.k < 1 or args.elbo_samples < 1:
        parser.error("--k and --elbo-samples must be positive")
    try:
        args.recipe = with_settings(VAEDigitsRecipe(), args.set)
    except ValueError as err:
        parser.error(str(err))
    return run_on_device(args, _run)


def _run(args, device) -> int:
    recipe = args.recipe
    x_train, x_val, x_test = (digits(s, "int", device=device) for s in ("train", "val", "test"))  # (N, 64)
    print_header(
        "Chapter 5's VAE on the 17-level digits (train 1000 / val 350 / test 447, 64 pixels)",
        device,
        [("recipe", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())),
         ("evaluation", f"negative ELBO with {args.elbo_samples} draws per image; IWAE with k = {args.k}")],
    )
    model = vae_digits(recipe)
    sync(device)
    start = time.perf_counter()
    history = train(model, x_train, x_val, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                    patience=recipe.patience, seed=recipe.seed, device=device, progress=args.progress,
                    desc="VAE", augment=partial(random_shift, p=recipe.shift_p) if recipe.shift_p > 0 else None)
    sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    results = {split: evaluate(model, x, elbo_samples=args.elbo_samples, k=args.k, seed=1)
               for split, x in (("val", x_val), ("test", x_test))}

    print(f"training: {seconds:.1f} s wall, {history.epochs_run} epochs, best epoch {history.best_epoch + 1}, "
          f"{'stopped early' if history.stopped_early else 'ran every epoch'}")
    print()
    print(f"{'split':<7}{'-ELBO':>9}{'± se':>7}{'bits/dim':>10}{f'IWAE-{args.k} NLL':>17}{'± se':>7}{'bits/dim':>10}")
    for split, r in results.items():
        print(f"{split:<7}{r['nelbo']:>9.2f}{r['nelbo_se']:>7.2f}{nats_to_bits_per_dim(r['nelbo'], 64):>10.3f}"
              f"{r['nll']:>17.2f}{r['nll_se']:>7.2f}{nats_to_bits_per_dim(r['nll'], 64):>10.3f}")
    print()
    test = results["test"]
    checks = [
        (f"test negative ELBO <= {TARGET_NELBO:g} (reference VAE: about {REFERENCE_NELBO:g})",
         test["nelbo"] <= TARGET_NELBO, f"{test['nelbo']:.2f}"),
        (f"test IWAE-{args.k} negative log-likelihood <= {TARGET_NLL:g}", test["nll"] <= TARGET_NLL,
         f"{test['nll']:.2f}"),
        (f"training time <= {TARGET_SECONDS:g} s", seconds <= TARGET_SECONDS, f"{seconds:.1f} s"),
    ]
    for text, ok, value in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}: {value}")
    if args.save:
        info = {"train_seconds": seconds, "epochs_run": history.epochs_run, "best_epoch": history.best_epoch,
                "train_loss": list(history.train_loss), "val_loss": list(history.val_loss),
                "k": args.k, "elbo_samples": args.elbo_samples, "torch": str(torch.__version__),
                "threads": torch.get_num_threads(), "device": str(device),
                "date": time.strftime("%Y-%m-%d"),
                **{f"{split}_{key}": value for split, r in results.items() for key, value in r.items()}}
        path = save_vae_digits(model, recipe, info)
        print(f"saved {path}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
