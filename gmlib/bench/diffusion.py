"""Benchmark: Chapter 9's diffusion and flow-matching models on the 17-level digits, against the targets.

Run ``python -m gmlib.bench.diffusion [--preset quick|full|mnist] [--save] [--device cpu|cuda]``.

Trains, through :func:`gmlib.train.train` and the recipes of :mod:`gmlib.recipes`, the chapter's main
model (:data:`gmlib.recipes.DIFFUSION_PRESETS`: a U-Net inside a Gaussian diffusion with Kingma et al.'s
log-linear schedule, on the simple loss), then (unless ``--no-companions``) the models the chapter sets
beside it (:data:`gmlib.recipes.DIFFUSION_COMPANIONS`): flow matching with the same network, and the
class-conditional diffusion model of the guidance section. For each it prints:

- the main model's variational bound on the negative log-probability of the discrete test and validation
  images (nats per image and bits per dimension), estimated with ``--t-samples`` uniformly drawn steps per
  image: the mean, its standard error over images, and the part of that error due to the drawn steps alone;
- the Fréchet distance (Chapter 6's digit-classifier features, ``--n-fd`` samples against the 447 test
  images; the real-data floor beside it) against the number of sampling steps, for ancestral (DDPM) and
  deterministic (DDIM) sampling, and for flow matching's Euler and Heun integrators, with the sampling time
  per image;
- flow matching's dequantised bound (the ODE's log-density with Hutchinson's estimator, one draw of the
  dequantisation noise);
- for scale, the Fréchet distance of Chapter 5's VAE (shipped weights) and of Chapter 6's DCGAN (the
  ``quick`` preset, seed 0, trained here in about 20 s);
- for the conditional model, classifier-free guidance: the Fréchet distance, the fraction of samples the
  digit classifier assigns to the requested class, against the guidance scale.

The targets (issue 21) are a test bound of at most 78 nats per image and a Fréchet distance of at most 1.5
times the floor (DDPM, 1000 samples, the best step count), for a main model trained in at most 600 s on
2 CPU cores (``--threads 2`` unless told otherwise); the script exits with status 1 when one is missed.
``--save`` writes every model's weights (half precision, the figures measured on the rounded weights) and
the figures to ``gmlib/weights/diffusion_digits.pt``, which Chapter 9 loads. ``--preset full`` trains a
wider network for longer (CUDA when present); ``--preset mnist`` the same on MNIST (the files must be in
``gmlib.data.cache_dir()``), without companions, whose targets are not checked.
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
import math
import sys
import time

import torch

from ._common import add_device_arguments, image_splits, mean_se, print_header, run_on_device, sync, with_settings
from ..data import digits, random_shift
from ..metrics import class_histogram, digit_classifier, digit_frechet, nats_to_bits_per_dim
from ..pretrained import half_precision_parameters, save_diffusion_digits
from ..recipes import DIFFUSION_COMPANIONS, DIFFUSION_PRESETS, DiffusionDigitsRecipe, diffusion_digits
from ..train import train

TARGET_NLL, TARGET_FD_RATIO, TARGET_SECONDS = 78.0, 1.5, 600.0
DDPM_STEPS = (10, 25, 50, 100, 250)
DDIM_STEPS = (10, 25, 50, 100, 250)
FM_STEPS = (5, 10, 25, 50)
GUIDANCE = (0.0, 1.0, 2.0, 4.0)


def fit(recipe: DiffusionDigitsRecipe, data, device, *, progress: bool, desc: str):
    """Train ``recipe``'s model; its weights rounded to half precision (what ``--save`` writes).
    Returns ``(model in eval mode, info)``."""
    x_train, x_val, _ = data[:3]
    labels = data[3] if recipe.n_classes is not None else None
    model = diffusion_digits(recipe)
    augment = partial(random_shift, p=recipe.shift_p, side=recipe.side) if recipe.shift_p > 0 else None
    train_data = (x_train, labels[0]) if labels is not None else x_train
    val_data = (x_val, labels[1]) if labels is not None else x_val
    sync(device)
    start = time.perf_counter()
    history = train(model, train_data, val_data, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                    patience=None, seed=recipe.seed, device=device, progress=progress, desc=desc, augment=augment,
                    lr_schedule=recipe.lr_schedule, ema=recipe.ema)
    sync(device)
    seconds = time.perf_counter() - start
    model.model.load_state_dict({k: (v.float() if v.dtype == torch.float16 else v)
                                 for k, v in half_precision_parameters(model.model).items()})
    model.eval()
    info = {"train_seconds": seconds, "epochs_run": history.epochs_run, "best_epoch": history.best_epoch,
            "train_loss": list(history.train_loss), "val_loss": list(history.val_loss),
            "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.model.parameters())}
    return model, info


@torch.no_grad()
def bound(model, x: torch.Tensor, t_samples: int, seed: int, batch: int = 256) -> dict:
    """The bound per image from ``t_samples`` one-step estimates each: mean and standard error over images,
    and the standard error of the mean due to the drawn steps alone (the within-image spread)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    draws = torch.stack([torch.cat([model.nll_bound(xb, t_samples=1, generator=g) for xb in x.split(batch)]).cpu()
                         for _ in range(t_samples)])  # (K, N)
    per_image = draws.mean(0)
    mean, se = mean_se(per_image)
    mc_se = math.sqrt(float(draws.var(0).mean()) / (t_samples * draws.shape[1]))
    return {"nll": mean, "nll_se": se, "nll_mc_se": mc_se, "t_samples": t_samples}


def quality(samples: torch.Tensor, levels: int, x_test: torch.Tensor) -> float:
    return digit_frechet((samples / (levels - 1)).float().cpu(), (x_test / (levels - 1)).float().cpu())


def timed_samples(fn, device) -> tuple[torch.Tensor, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.set_defaults(threads=2)  # the targets are set on 2 CPU cores
    parser.add_argument("--preset", choices=sorted(DIFFUSION_PRESETS), default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the main model's recipe, e.g. --set epochs=40 (repeatable)")
    parser.add_argument("--no-companions", action="store_true", help="train the main model only")
    parser.add_argument("--t-samples", type=int, default=50, help="steps drawn per image for the bound (default 50)")
    parser.add_argument("--n-fd", type=int, default=1000, help="samples per Fréchet distance (default 1000)")
    parser.add_argument("--quick-check", action="store_true",
                        help="a smoke run: one epoch for the companions, few sampling step counts (for the tests)")
    parser.add_argument("--save", action="store_true", help="write gmlib/weights/diffusion_digits.pt")
    parser.add_argument("--output", default=None,
                        help="where --save writes (default gmlib/weights/diffusion_digits.pt)")
    parser.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = parser.parse_args(argv)
    try:
        args.recipe = with_settings(DIFFUSION_PRESETS[args.preset], args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.t_samples < 2 or args.n_fd < 2:
        parser.error("--t-samples and --n-fd must be at least 2")
    if args.save and (args.recipe.side, args.recipe.levels) != (8, 17):
        parser.error("--save writes Chapter 9's digits models: use it with a digits preset")
    if args.save and args.no_companions:
        parser.error("--save writes the main model and its companions: drop --no-companions")
    return run_on_device(args, _run)


def _run(args, device) -> int:
    recipe = args.recipe
    try:
        splits = image_splits(recipe.side, recipe.levels, device)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    digits_run = (recipe.side, recipe.levels) == (8, 17)
    labels = tuple(digits(s, "int", labels=True, device=device)[1] for s in ("train", "val", "test")) \
        if digits_run else None
    data = (*splits, labels)
    x_test = splits[2]
    runs = {"diffusion": recipe}
    if digits_run and not args.no_companions:
        runs.update({k: dataclasses.replace(v, epochs=1) if args.quick_check else v
                     for k, v in DIFFUSION_COMPANIONS.items()})
    ddpm_steps, ddim_steps, fm_steps = (DDPM_STEPS, DDIM_STEPS, FM_STEPS) if not args.quick_check else \
        ((5, 10), (5,), (5,))
    print_header(
        f"Chapter 9's diffusion models, preset {args.preset}, on "
        f"{'the 17-level digits' if digits_run else 'MNIST'} (train {len(splits[0])} / val {len(splits[1])} / "
        f"test {len(splits[2])}, {recipe.pixels} pixels)",
        device,
        [("main model", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items())),
         ("compared", ", ".join(runs))],
    )
    floor = quality(splits[0][: args.n_fd], recipe.levels, x_test) if digits_run else float("nan")
    trained = {}
    for name, r in runs.items():
        try:
            model, info = fit(r, data, device, progress=args.progress, desc=name)
        except (ValueError, FloatingPointError) as err:
            print(f"error: {name} did not train: {err}", file=sys.stderr)
            return 2
        trained[name] = (model, r, info)
        print(f"trained {name}: {info['train_seconds']:.1f} s, {info['epochs_run']} epochs (best "
              f"{info['best_epoch'] + 1}), {info['parameters']:,} parameters", flush=True)
    print()

    # ---- the main model: the bound, and quality against steps ----
    model, _, info = trained["diffusion"]
    for split, x in (("test", x_test), ("val", splits[1])):
        b = bound(model, x, args.t_samples, seed=1)
        info.update({f"{split}_{k}": v for k, v in b.items()})
    print(f"diffusion bound: test {info['test_nll']:.2f} ± {info['test_nll_se']:.2f} nats "
          f"(± {info['test_nll_mc_se']:.2f} from the {args.t_samples} drawn steps per image; "
          f"{nats_to_bits_per_dim(info['test_nll'], recipe.pixels):.3f} bits/dim), val {info['val_nll']:.2f} ± "
          f"{info['val_nll_se']:.2f}")
    n = args.n_fd if digits_run else 0
    curves = {"ddpm": {}, "ddim": {}}
    if digits_run:
        from .gan import _vae_reference
        from ..recipes import digits_gan_quality, train_digits_gan

        info["fd_vae"] = _vae_reference(n)
        from ..recipes import PRESETS as GAN_PRESETS

        gan_recipe = dataclasses.replace(GAN_PRESETS["quick"], epochs=1) if args.quick_check else "quick"
        gan, _ = train_digits_gan(gan_recipe, seed=0, device=device, progress=False)
        info["fd_dcgan"] = digits_gan_quality(gan, n=n, seed=0)["frechet"]
    vae_fd, gan_fd = info.get("fd_vae") or float("nan"), info.get("fd_dcgan", float("nan"))
    print(f"\nFréchet distance of {n} samples against the test images (real-data floor {floor:.2f}; "
          f"Chapter 5's VAE {vae_fd:.2f}, Chapter 6's DCGAN {gan_fd:.2f}):")
    print(f"{'sampler':<10}{'steps':>7}{'FD':>9}{'ms/image':>10}")
    if digits_run:
        for sampler, grid in (("ddpm", ddpm_steps), ("ddim", ddim_steps)):
            for steps in grid:
                s, sec = timed_samples(lambda: model.sample(n, steps=steps, sampler=sampler,
                                                            generator=torch.Generator(device=device).manual_seed(2)),
                                       device)
                curves[sampler][steps] = {"fd": quality(s, recipe.levels, x_test), "seconds_per_image": sec / n}
                print(f"{sampler:<10}{steps:>7}{curves[sampler][steps]['fd']:>9.2f}{1e3 * sec / n:>10.2f}", flush=True)
    info.update({"fd_floor": floor, "fd_ddpm": curves["ddpm"], "fd_ddim": curves["ddim"], "fd_samples": n})

    # ---- flow matching ----
    if "flow matching" in trained:
        fm, _, fm_info = trained["flow matching"]
        fm_curves = {"euler": {}, "heun": {}}
        for sampler in ("euler", "heun"):
            for steps in fm_steps:
                s, sec = timed_samples(lambda: fm.sample(n, steps=steps, sampler=sampler,
                                                         generator=torch.Generator(device=device).manual_seed(2)),
                                       device)
                fm_curves[sampler][steps] = {"fd": quality(s, recipe.levels, x_test), "seconds_per_image": sec / n}
                print(f"{'FM ' + sampler:<10}{steps:>7}{fm_curves[sampler][steps]['fd']:>9.2f}{1e3 * sec / n:>10.2f}",
                      flush=True)
        fm_info.update({"fd_euler": fm_curves["euler"], "fd_heun": fm_curves["heun"], "fd_floor": floor})
        g = torch.Generator(device=device).manual_seed(3)
        ode_steps = 2 if args.quick_check else 25
        deq = torch.cat([fm.dequantized_bound(xb, steps=ode_steps, generator=g).cpu() for xb in x_test.split(150)])
        fm_info["test_nll"], fm_info["test_nll_se"] = mean_se(deq)
        fm_info["ode_steps"] = ode_steps
        print(f"flow matching, dequantised bound by the ODE ({ode_steps} RK4 steps, Hutchinson): "
              f"{fm_info['test_nll']:.2f} ± {fm_info['test_nll_se']:.2f} nats")

    # ---- classifier-free guidance ----
    if "conditional" in trained:
        cond, _, c_info = trained["conditional"]
        classifier = digit_classifier(device=device)
        per_class = max(n // 10, 2)
        y = torch.arange(10, device=device).repeat_interleave(per_class)
        c_info["guidance"] = {}
        print(f"\nclassifier-free guidance ({10 * per_class} samples, DDIM 50 steps): scale, FD, class accuracy")
        for w in GUIDANCE:
            s = cond.sample(len(y), steps=50, sampler="ddim", y=y, guidance=w,
                            generator=torch.Generator(device=device).manual_seed(4))
            with torch.no_grad():
                acc = float((classifier((s / 16).float()).argmax(1) == y).float().mean())
            c_info["guidance"][w] = {"fd": quality(s, recipe.levels, x_test), "accuracy": acc,
                                     "counts": class_histogram((s / 16).float().cpu()).tolist()}
            print(f"  {w:>4g} {c_info['guidance'][w]['fd']:>8.2f} {acc:>7.3f}", flush=True)
    print()

    checks = []
    if digits_run:
        best_fd = min(v["fd"] for v in curves["ddpm"].values())
        checks = [
            (f"diffusion test bound <= {TARGET_NLL:g} nats", info["test_nll"] <= TARGET_NLL,
             f"{info['test_nll']:.2f} ± {info['test_nll_se']:.2f}"),
            (f"DDPM Fréchet distance <= {TARGET_FD_RATIO:g} x floor ({TARGET_FD_RATIO * floor:.2f})",
             best_fd <= TARGET_FD_RATIO * floor, f"{best_fd:.2f}"),
            (f"diffusion trained in <= {TARGET_SECONDS:g} s", info["train_seconds"] <= TARGET_SECONDS,
             f"{info['train_seconds']:.1f} s on {info['threads']} thread(s)"),
        ]
    for text, ok, value in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}: {value}")
    if args.save:
        stamp = {"preset": args.preset, "torch": str(torch.__version__), "device": str(device),
                 "date": time.strftime("%Y-%m-%d")}
        path = save_diffusion_digits({name: (m, r, {**i, **stamp}) for name, (m, r, i) in trained.items()},
                                     args.output)
        print(f"saved {path}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
