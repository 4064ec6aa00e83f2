"""Benchmark: a binary RBM on binarized digits, gmlib against scikit-learn's ``BernoulliRBM``.

Run ``python -m gmlib.bench.rbm [--hidden 100] [--epochs 50] [--device cpu|cuda]``.

Both libraries train an RBM with the same number of hidden units for the same
number of epochs on the binarized digits (``gmlib.data.digits("train",
"binary")``, 1000 x 64). Neither is tuned on the test split: each gets a small
grid of its own settings and keeps the one with the best *validation*
log-likelihood:

- gmlib: CD-1 through :func:`gmlib.train.train` (Adam), learning rates
  0.003, 0.01, 0.03, batch sizes 10 and 100, trained in float32;
- scikit-learn: its PCD-1 with plain SGD, ``learning_rate`` 0.01, 0.03, 0.1,
  ``batch_size`` 10 and 100 (its defaults, 0.1 and 10, are in the grid).

Log-likelihoods come from the same estimator for both: gmlib's AIS
(:meth:`gmlib.rbm.BernoulliRBM.ais_log_partition`, base-rate base model of the
training data, float64), :math:`\\log p(v) = -F(v) - \\widehat{\\log Z}`. The
selection uses one AIS run per setting (``--select-chains`` x
``--select-betas``); the two selected models are evaluated on the test split
with ``--ais-runs`` independent runs (``--ais-chains`` x ``--ais-betas``), and
the error bar is the standard deviation of the test log-likelihood over those
runs (the data term is exact; only log Z is estimated). AIS tends to
underestimate log Z, so both figures lean optimistic alike.

Printed: every grid setting with its seconds per epoch (wall clock, one timed
training after a warm-up, the libraries' settings interleaved so that load
changes hit both), validation log-likelihood and reconstruction error; then the
selected pair with test log-likelihoods (nats per image), error bars and the
time per epoch. The issue-4 target is that gmlib's test log-likelihood is
higher; the script exits with status 1 when it is not.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM  # imported before the thread limits are set

from ._common import add_device_arguments, print_header, run_on_device, sync
from ..data import digits
from ..rbm import BernoulliRBM
from ..train import train

GMLIB_GRID = [(lr, bs) for lr in (0.003, 0.01, 0.03) for bs in (10, 100)]  # (Adam lr, batch size)
SKLEARN_GRID = [(lr, bs) for lr in (0.01, 0.03, 0.1) for bs in (10, 100)]  # (SGD learning_rate, batch_size)


def train_gmlib(x: torch.Tensor, hidden: int, epochs: int, lr: float, batch_size: int, device, seed: int = 0):
    """CD-1 in float32 on ``device``; returns (model in float64 on the CPU, seconds per epoch)."""
    model = BernoulliRBM(x.shape[1], hidden, cd_k=1, generator=torch.Generator().manual_seed(seed))
    x = x.to(device=device, dtype=torch.float32)
    sync(device)
    start = time.perf_counter()
    train(model, x, epochs=epochs, batch_size=batch_size, lr=lr, patience=None, seed=seed,
          device=device, progress=False)
    sync(device)
    seconds = (time.perf_counter() - start) / epochs
    return model.to(device="cpu", dtype=torch.float64), seconds


def train_sklearn(x: torch.Tensor, hidden: int, epochs: int, lr: float, batch_size: int, seed: int = 0):
    """scikit-learn's PCD-1 (CPU, float64); returns (its parameters as a gmlib model, seconds per epoch)."""
    sk = SkBernoulliRBM(n_components=hidden, n_iter=epochs, learning_rate=lr, batch_size=batch_size,
                        random_state=seed)
    data = x.cpu().numpy().astype(np.float64)
    start = time.perf_counter()
    sk.fit(data)
    seconds = (time.perf_counter() - start) / epochs
    model = BernoulliRBM.from_parameters(
        torch.as_tensor(sk.components_.T.copy()),  # (D, H): scikit-learn stores W transposed
        torch.as_tensor(sk.intercept_visible_),
        torch.as_tensor(sk.intercept_hidden_),
    )
    return model, seconds


@torch.no_grad()
def ais_mean_log_prob(model: BernoulliRBM, x: torch.Tensor, base_bias: torch.Tensor, *, runs: int,
                      chains: int, betas: int, seed: int) -> list[float]:
    """Mean log p(x) in nats per image for each of ``runs`` independent AIS estimates of log Z."""
    out = []
    for r in range(runs):
        gen = torch.Generator().manual_seed(seed + r)
        log_z, _ = model.ais_log_partition(n_chains=chains, n_betas=betas, generator=gen,
                                           base_visible_bias=base_bias)
        out.append(float(model.log_prob(x, log_z=log_z).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--hidden", type=int, default=100, help="hidden units of both RBMs")
    parser.add_argument("--epochs", type=int, default=50, help="training epochs of both RBMs")
    parser.add_argument("--select-chains", type=int, default=100, help="AIS chains per validation estimate")
    parser.add_argument("--select-betas", type=int, default=2000, help="AIS temperatures per validation estimate")
    parser.add_argument("--ais-runs", type=int, default=5, help="independent AIS runs per test estimate")
    parser.add_argument("--ais-chains", type=int, default=200, help="AIS chains per test estimate")
    parser.add_argument("--ais-betas", type=int, default=5000, help="AIS temperatures per test estimate")
    args = parser.parse_args(argv)
    if args.hidden < 1 or args.epochs < 1:
        parser.error("--hidden and --epochs must be positive")
    if min(args.select_chains, args.select_betas, args.ais_runs, args.ais_chains, args.ais_betas) < 2:
        parser.error("--select-chains, --select-betas, --ais-runs, --ais-chains and --ais-betas must be at least 2")
    return run_on_device(args, _run)


def _run(args, device) -> int:
    x_train = digits("train", "binary", dtype=torch.float64)  # (1000, 64)
    x_val = digits("val", "binary", dtype=torch.float64)  # (350, 64)
    x_test = digits("test", "binary", dtype=torch.float64)  # (447, 64)
    base_bias = BernoulliRBM.base_rate_visible_bias(x_train)  # (64,)
    H, E = args.hidden, args.epochs

    print_header(
        "Binary RBM on binarized digits: gmlib (CD-1, Adam) against scikit-learn's BernoulliRBM (PCD-1, SGD)",
        device,
        [("model", f"64 visible, {H} hidden units, {E} epochs, train 1000 / val 350 / test 447 images"),
         ("selection", f"best validation log-lik over each library's grid (AIS {args.select_chains} chains x "
                       f"{args.select_betas} betas)"),
         ("test", f"AIS {args.ais_runs} runs x {args.ais_chains} chains x {args.ais_betas} betas, "
                  "base-rate base model; error = sd over runs"),
         ("note", "scikit-learn runs on the CPU; numpy's BLAS is limited to torch's thread count")],
    )

    with warnings.catch_warnings():  # warm-up: one-off imports of the optimizer and allocations
        warnings.simplefilter("ignore")
        train_gmlib(x_train, H, 1, 0.01, 100, device)
        train_sklearn(x_train, H, 1, 0.1, 10)

    print(f"{'library':<14}{'lr':>7}{'batch':>7}{'s / epoch':>11}{'val log-lik':>13}{'recon err':>11}")
    results = {"gmlib": [], "scikit-learn": []}
    settings = [("gmlib", *g) for g in GMLIB_GRID], [("scikit-learn", *s) for s in SKLEARN_GRID]
    for pair in itertools.zip_longest(*settings):  # interleaved, so load changes hit both libraries
        for lib, lr, bs in filter(None, pair):
            if lib == "gmlib":
                model, sec = train_gmlib(x_train, H, E, lr, bs, device)
            else:
                model, sec = train_sklearn(x_train, H, E, lr, bs)
            val = ais_mean_log_prob(model, x_val, base_bias, runs=1, chains=args.select_chains,
                                    betas=args.select_betas, seed=0)[0]
            recon = float(model.reconstruction_error(x_val).mean())
            results[lib].append((val, lr, bs, sec, model))
            print(f"{lib:<14}{lr:>7g}{bs:>7d}{sec:>11.4f}{val:>13.2f}{recon:>11.2f}")
    print()

    print("selected (best validation log-lik), evaluated on the test split, nats per image:")
    print(f"{'library':<14}{'lr':>7}{'batch':>7}{'s / epoch':>11}{'test log-lik':>14}{'± sd':>7}{'train log-lik':>15}")
    chosen = {}
    for lib, rows in results.items():
        val, lr, bs, sec, model = max(rows, key=lambda r: r[0])
        test = ais_mean_log_prob(model, x_test, base_bias, runs=args.ais_runs, chains=args.ais_chains,
                                 betas=args.ais_betas, seed=1000)
        train_ll = ais_mean_log_prob(model, x_train, base_bias, runs=1, chains=args.ais_chains,
                                     betas=args.ais_betas, seed=1000)[0]
        chosen[lib] = (statistics.mean(test), statistics.stdev(test), sec)
        print(f"{lib:<14}{lr:>7g}{bs:>7d}{sec:>11.4f}{statistics.mean(test):>14.2f}{statistics.stdev(test):>7.2f}"
              f"{train_ll:>15.2f}")
    default = [r for r in results["scikit-learn"] if (r[1], r[2]) == (0.1, 10)]
    if default:
        print(f"(scikit-learn at its defaults, learning_rate 0.1, batch_size 10: validation log-lik {default[0][0]:.2f})")
    print()

    (ll_g, sd_g, t_g), (ll_s, sd_s, t_s) = chosen["gmlib"], chosen["scikit-learn"]
    better = ll_g > ll_s
    print(f"test log-likelihood, gmlib minus scikit-learn: {ll_g - ll_s:+.2f} nats per image "
          f"({'gmlib better' if better else 'gmlib NOT better'}; error bars {sd_g:.2f} and {sd_s:.2f})")
    print(f"time per epoch of the selected settings: gmlib {t_g * 1e3:.1f} ms, scikit-learn {t_s * 1e3:.1f} ms "
          f"(gmlib {max(t_s / t_g, t_g / t_s):.2f}x {'faster' if t_g <= t_s else 'slower'})")
    return 0 if better else 1


if __name__ == "__main__":
    sys.exit(main())
