"""Benchmark: Gaussian-mixture EM on digits, gmlib against scikit-learn.

Run ``python -m gmlib.bench.latent``. It fits a K = 10 full-covariance mixture
to the digits training split (1000 x 64, float64) with both libraries, started
from the same parameters (gmlib's ``from_data`` with seed 0, handed to
scikit-learn as ``weights_init``/``means_init``/``precisions_init``), for the
same number of EM iterations, and prints:

- seconds per EM iteration of each (median over ``--repeats`` fits; a fit's
  time divided by its iterations, both fits include one final E-step);
- the final mean log-likelihoods of both, which must agree (the script exits
  with status 1 if they differ by more than 1e-6 relative);
- seconds per iteration of gmlib's missing-data EM, with 30% of the pixels
  removed at random (marginalised, Ghahramani & Jordan 1994), which
  scikit-learn does not offer.

The target (issue 3) is that gmlib is at least as fast as scikit-learn.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGMM  # imported before the thread limits are set

from ._common import add_device_arguments, print_header, run_on_device, sync
from ..data import digits
from ..mixture import GaussianMixture


def fit_gmlib(init: GaussianMixture, x, observed, n_iter: int, device) -> tuple[float, float, float]:
    """One timed fit: wall seconds and CPU seconds (all threads) per EM iteration, final mean log-likelihood."""
    model = GaussianMixture(init.weights, init.means, init.covariances).to(device)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    history = model.fit(x, observed, max_iter=n_iter, tol=-math.inf)
    sync(device)
    seconds, cpu = (time.perf_counter() - start) / n_iter, (time.process_time() - cpu) / n_iter
    assert len(history) == n_iter + 1
    return seconds, cpu, history[-1]


def fit_sklearn(init: GaussianMixture, x: np.ndarray, n_iter: int) -> tuple[float, float, float]:
    """The same for scikit-learn, from the same parameters, on the CPU."""
    sk = SkGMM(
        init.n_components, covariance_type="full", reg_covar=1e-6, tol=0.0, max_iter=n_iter,
        weights_init=init.weights.cpu().numpy(), means_init=init.means.cpu().numpy(),
        precisions_init=np.linalg.inv(init.covariances.cpu().numpy()),
    )
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x)
    seconds, cpu = (time.perf_counter() - start) / n_iter, (time.process_time() - cpu) / n_iter
    assert sk.n_iter_ == n_iter
    return seconds, cpu, float(sk.score(x))  # mean log-likelihood at the final parameters


def _medians(runs) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per measurement (median reported)")
    parser.add_argument("--iters", type=int, default=20, help="EM iterations per complete-data fit")
    parser.add_argument("--missing-iters", type=int, default=5, help="EM iterations per missing-data fit")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.iters < 1 or args.missing_iters < 1:
        parser.error("--repeats, --iters and --missing-iters must be positive")
    return run_on_device(args, _run)


def _run(args, device) -> int:
    x_cpu = digits("train", dtype=torch.float64)  # (1000, 64), pixels in [0, 1]
    x = x_cpu.to(device)
    init = GaussianMixture.from_data(x_cpu, 10, "full", seed=0)
    # warm-up (first-call allocations, lazy library loading)
    GaussianMixture(init.weights, init.means, init.covariances).to(device).fit(x, max_iter=2, tol=-math.inf)

    runs_gm, runs_sk = [], []
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits both alike
        runs_gm.append(fit_gmlib(init, x, None, args.iters, device))
        runs_sk.append(fit_sklearn(init, x_cpu.numpy(), args.iters))
    (t_gm, c_gm), ll_gm = _medians(runs_gm), runs_gm[-1][2]
    (t_sk, c_sk), ll_sk = _medians(runs_sk), runs_sk[-1][2]

    gen = torch.Generator().manual_seed(0)
    observed = torch.rand(x_cpu.shape, generator=gen, dtype=torch.float64) >= 0.3  # (1000, 64), 30% missing
    x_missing = torch.where(observed, x_cpu, torch.nan)
    init_missing = GaussianMixture.from_data(x_missing, 10, "full", seed=0, observed=observed)
    runs = [
        fit_gmlib(init_missing, x_missing.to(device), observed.to(device), args.missing_iters, device)
        for _ in range(args.repeats)
    ]
    (t_mis, c_mis), ll_mis = _medians(runs), runs[-1][2]

    agree = abs(ll_gm - ll_sk) <= 1e-6 * max(1.0, abs(ll_sk))
    print_header(
        "Gaussian-mixture EM on digits (train, 1000 x 64, float64, K = 10, full covariance)",
        device,
        [("note", "numpy's BLAS is limited to torch's thread count; scikit-learn runs on the CPU"),
         ("repeats", f"{args.repeats} (median)")],
    )
    print(f"{'':34s}{'s / iteration':>14s}{'CPU s / iter':>14s}{'final mean log-lik':>22s}")
    rows = [
        ("gmlib, complete data", t_gm, c_gm, ll_gm, args.iters),
        ("scikit-learn, complete data", t_sk, c_sk, ll_sk, args.iters),
        ("gmlib, 30% missing (marginalised)", t_mis, c_mis, ll_mis, args.missing_iters),
    ]
    for name, t, c, ll, n in rows:
        print(f"{name:34s}{t:14.4f}{c:14.4f}{ll:22.8f}   ({n} iterations)")
    print()
    print("s / iteration: wall-clock median; CPU s / iter: process CPU time (all threads), median")
    print(f"speed-up of gmlib over scikit-learn: {t_sk / t_gm:.2f}x wall-clock, {c_sk / c_gm:.2f}x CPU time  "
          f"({'at least as fast' if t_gm <= t_sk else 'SLOWER than scikit-learn'})")
    print(f"final log-likelihoods agree to 1e-6: {'yes' if agree else 'NO'} (difference {abs(ll_gm - ll_sk):.2e})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
