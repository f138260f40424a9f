"""Timing helpers and command line shared by the side-by-side benchmarks
(bench_gated.py, bench_multiscale.py and run.py).

Both libraries run in one process with the same thread count; the callables
being compared take turns (alternate) so that a busy machine slows all of them
alike, and every figure is a median over samples.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit(
        "the rnncore benchmarks compare against PyTorch, which is not installed.\n"
        "Install the CPU build first, e.g.  pip install torch==2.13.0"
    )

try:
    import rnncore as rc
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"cannot import rnncore ({exc}); build and install it with  pip install .")


# (T, B, I, H): T = time steps, B = batch, I = input size, H = hidden size.
# The defaults of bench_gated.py and bench_multiscale.py (run.py has its own grid).
DEFAULT_SIZES = [(100, 1, 32, 128), (100, 32, 128, 256)]
QUICK_SIZES = [(20, 1, 16, 32), (20, 8, 32, 64)]
MODES = ("inference", "train")


def parse_size(text: str) -> tuple[int, int, int, int]:
    """'T,B,I,H' (or TxBxIxH) -> a tuple of four positive ints."""
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be T,B,I,H (four positive ints), got {text!r}")
    return parts  # type: ignore[return-value]


def calibrate(fn, min_time: float, warmup_time: float) -> int:
    """Warm `fn` up, then choose how many calls make one sample last >= min_time."""
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < warmup_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    per_call = float(np.median(times[1:]))
    return max(1, math.ceil(min_time / max(per_call, 1e-9)))


def sample(fn, inner: int) -> float:
    """Mean seconds per call over `inner` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def set_threads(threads: int) -> None:
    """Give rnncore and torch the same thread count."""
    rc.set_num_threads(threads)
    torch.set_num_threads(threads)


def alternate(calls, repeats: int, min_time: float, warmup_time: float, setups=None) -> list:
    """Time each callable in `calls`, taking turns; return one array of ms per call.

    Each round runs every side once, and the starting side rotates from round
    to round so that no side always runs on a warmer cache (with two sides:
    a, b then b, a, ...). `setups`, if given, holds one callable (or None) per
    side, run untimed before that side's warm-up and before each of its
    samples (e.g. to set a thread count that differs between the sides).
    """
    setups = list(setups) if setups is not None else [None] * len(calls)
    if len(setups) != len(calls):
        raise ValueError("alternate: one setup (or None) per call")

    def prepare(i):
        if setups[i] is not None:
            setups[i]()

    inners = []
    for i, fn in enumerate(calls):
        prepare(i)
        inners.append(calibrate(fn, min_time, warmup_time))
    times = [[] for _ in calls]
    n = len(calls)
    for r in range(repeats):
        for k in range(n):
            i = (r + k) % n
            prepare(i)
            times[i].append(sample(calls[i], inners[i]))
    return [np.array(t) * 1e3 for t in times]


def spread(ms: np.ndarray) -> float:
    """Inter-quartile range relative to the median, in percent."""
    q1, q2, q3 = np.percentile(ms, [25, 50, 75])
    return 100.0 * (q3 - q1) / q2 if q2 > 0 else 0.0


def add_common_args(ap: argparse.ArgumentParser, cells, default_cells,
                    sizes_help: str = "problem sizes (default: 100,1,32,128 and 100,32,128,256)",
                    quick_help: str = "fewer repeats, shorter samples, smaller sizes") -> None:
    """The command line shared by the side-by-side benchmarks."""
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    ap.add_argument("--cells", nargs="+", choices=list(cells), default=list(default_cells))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--sizes", type=parse_size, nargs="+", metavar="T,B,I,H", help=sizes_help)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--repeats", type=int, help="samples per side (default 15, quick 5)")
    ap.add_argument("--min-time", type=float, help="seconds per sample (default 0.05, quick 0.01)")


def run_settings(ap: argparse.ArgumentParser, args, default_sizes=None, quick_sizes=None) -> tuple:
    """Check the shared flags; return (sizes, repeats, min_time, warmup_time)."""
    if any(n < 1 for n in args.threads):
        ap.error("--threads must be positive")
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be positive")
    if args.min_time is not None and args.min_time < 0:
        ap.error("--min-time must be >= 0")
    default_sizes = DEFAULT_SIZES if default_sizes is None else default_sizes
    quick_sizes = QUICK_SIZES if quick_sizes is None else quick_sizes
    sizes = args.sizes or (quick_sizes if args.quick else default_sizes)
    repeats = args.repeats or (5 if args.quick else 15)
    min_time = args.min_time if args.min_time is not None else (0.01 if args.quick else 0.05)
    warmup_time = 0.05 if args.quick else 0.3
    return sizes, repeats, min_time, warmup_time


def print_preamble(repeats: int, min_time: float) -> None:
    """Versions, machine and sampling, then a blank line."""
    print(f"rnncore {getattr(rc, '__version__', '?')}   torch {torch.__version__}   "
          f"numpy {np.__version__}   python {platform.python_version()}")
    print(f"{platform.machine()}, {os.cpu_count()} logical CPUs; "
          f"float32; {repeats} samples of >= {min_time * 1e3:.0f} ms per side; medians")
    print()
