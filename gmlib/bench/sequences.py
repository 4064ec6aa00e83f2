"""Benchmark: sequence models batched over sequences against a per-sequence loop.

Run ``python -m gmlib.bench.sequences [--device cpu|cuda] [--repeats N]``.

Two measurements, each in float64 and float32, in one run on one device:

1. the HMM forward recursion (:func:`gmlib.hmm.forward`) on a batch of
   ``--batch`` sequences of length ``--length`` (K = 5 states, 2-D diagonal
   Gaussian emissions), once on the whole batch and once in a Python loop that
   calls the same function on one sequence at a time;
2. the Kalman filter (:meth:`gmlib.lds.LDS.filter`, Z = 4, X = 2) the same two ways.

Each timing is the median of ``--repeats`` runs after a warm-up call. Both
ways must give the same log-likelihoods (checked, and the largest difference
printed). On a slow or shared machine ``--loop-sequences N`` times the loop
over the first N sequences only and scales its time to the batch (marked ``*``). Emission log-likelihoods are computed once, outside the timings, so
the HMM figure is the recursion alone.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from gmlib.bench._common import add_device_arguments, print_header, sync
from gmlib.device import get_device
from gmlib.hmm import GaussianHMM, forward
from gmlib.lds import LDS


def _median_seconds(fn, repeats: int, device: torch.device, warmup=None):
    (warmup or fn)()  # warm-up (allocator, kernels)
    sync(device)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _make_hmm(K: int, D: int, device, dtype) -> GaussianHMM:
    g = torch.Generator().manual_seed(0)
    initial = torch.softmax(torch.randn(K, generator=g, dtype=torch.float64), -1)
    transition = torch.softmax(2 * torch.randn(K, K, generator=g, dtype=torch.float64) + 3 * torch.eye(K, dtype=torch.float64), -1)
    means = 3 * torch.randn(K, D, generator=g, dtype=torch.float64)
    variances = 0.5 + torch.rand(K, D, generator=g, dtype=torch.float64)
    return GaussianHMM(initial, transition, means, variances).to(device=device, dtype=dtype)


def _make_lds(Z: int, X: int, device, dtype) -> LDS:
    g = torch.Generator().manual_seed(1)
    A = torch.randn(Z, Z, generator=g, dtype=torch.float64)
    A = 0.95 * A / torch.linalg.matrix_norm(A, ord=2)
    C = torch.randn(X, Z, generator=g, dtype=torch.float64)
    eye = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731
    return LDS(A, 0.1 * eye(Z), C, 0.5 * eye(X), torch.zeros(Z, dtype=torch.float64), eye(Z)).to(device=device, dtype=dtype)


def _row(name, dtype, t_batch, t_loop, diff, scaled=False):
    speedup = t_loop / t_batch
    print(f"{name:<16} {str(dtype).replace('torch.', ''):<8} {t_batch * 1e3:>11.2f} {t_loop * 1e3:>11.1f}{'*' if scaled else ' '}"
          f"{speedup:>9.1f}x {diff:>12.2e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is reported")
    parser.add_argument("--batch", type=int, default=1000, help="number of sequences B")
    parser.add_argument("--length", type=int, default=100, help="sequence length T")
    parser.add_argument("--loop-sequences", type=int, default=None,
                        help="run the per-sequence loop over only the first N sequences and scale its time to B "
                             "(default: all B; the scaled figure is marked *)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.length < 1:
        parser.error("--repeats, --batch and --length must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    B, T, K, D, Z, X = args.batch, args.length, 5, 2, 4, 2
    n_loop = B if args.loop_sequences is None else max(1, min(args.loop_sequences, B))
    scale = B / n_loop

    print_header(
        "gmlib sequence benchmark: batched over sequences vs a per-sequence Python loop",
        device,
        [("sizes", f"B={B} sequences x T={T} steps; HMM K={K}, D={D}; LDS Z={Z}, X={X}; median of {args.repeats}")]
        + ([("loop", f"* timed over the first {n_loop} sequences and scaled by {scale:g} to B={B}")] if n_loop < B else []),
    )
    print(f"{'model':<16} {'dtype':<8} {'batched ms':>11} {'loop ms':>11} {'speed-up':>10} {'max |diff|':>12}")

    for dtype in (torch.float64, torch.float32):
        tol = dict(rtol=1e-10, atol=1e-8) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-3)

        # --- HMM forward recursion ---
        hmm = _make_hmm(K, D, device, dtype)
        _, x = hmm.sample(B, T, generator=torch.Generator(device=device).manual_seed(0))
        log_init, log_trans = torch.log(hmm.initial), torch.log(hmm.transition)
        log_em = hmm.log_emission(x)  # (B, T, K), outside the timings

        def hmm_batched():
            return forward(log_init, log_trans, log_em)[1]

        def hmm_loop():
            return torch.cat([forward(log_init, log_trans, log_em[b : b + 1])[1] for b in range(n_loop)])

        with torch.no_grad():
            t_batch, ll_batch = _median_seconds(hmm_batched, args.repeats, device)
            t_loop, ll_loop = _median_seconds(hmm_loop, args.repeats, device, lambda: forward(log_init, log_trans, log_em[:1]))
        torch.testing.assert_close(ll_batch[:n_loop], ll_loop, **tol)
        _row("HMM forward", dtype, t_batch, t_loop * scale, float((ll_batch[:n_loop] - ll_loop).abs().max()), n_loop < B)

        # --- Kalman filter ---
        lds = _make_lds(Z, X, device, dtype)
        _, xs = lds.sample(B, T, generator=torch.Generator(device=device).manual_seed(0))

        def kf_batched():
            return lds.filter(xs).log_likelihood

        def kf_loop():
            return torch.cat([lds.filter(xs[b : b + 1]).log_likelihood for b in range(n_loop)])

        with torch.no_grad():
            t_batch, ll_batch = _median_seconds(kf_batched, args.repeats, device)
            t_loop, ll_loop = _median_seconds(kf_loop, args.repeats, device, lambda: lds.filter(xs[:1]))
        torch.testing.assert_close(ll_batch[:n_loop], ll_loop, **tol)
        _row("Kalman filter", dtype, t_batch, t_loop * scale, float((ll_batch[:n_loop] - ll_loop).abs().max()), n_loop < B)

    print()
    print("Both ways agree on every log-likelihood they both computed (checked with torch.testing.assert_close).")


if __name__ == "__main__":
    main()
