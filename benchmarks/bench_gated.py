"""LSTM and GRU, rnncore against PyTorch on the CPU, side by side in one process.

Both libraries get the same weights, inputs and thread count; runs alternate
between them so that a busy machine slows both alike. Reports medians in ms
and the ratio torch / rnncore (> 1 means rnncore is faster).

    python benchmarks/bench_gated.py                       # full grid
    python benchmarks/bench_gated.py --threads 1 --cells lstm
    python benchmarks/bench_gated.py --quick --sizes 10,2,4,8
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
        "bench_gated.py compares against PyTorch, which is not installed.\n"
        "Install the CPU build first, e.g.  pip install torch==2.13.0"
    )

try:
    import rnncore as rc
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"cannot import rnncore ({exc}); build and install it with  pip install .")


# (T, B, I, H): T = time steps, B = batch, I = input size, H = hidden size.
DEFAULT_SIZES = [(100, 1, 32, 128), (100, 32, 128, 256)]
QUICK_SIZES = [(20, 1, 16, 32), (20, 8, 32, 64)]
CELLS = {"lstm": (rc.LSTM, torch.nn.LSTM), "gru": (rc.GRU, torch.nn.GRU)}
MODES = ("inference", "train")


def parse_size(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be T,B,I,H (four positive ints), got {text!r}")
    return parts  # type: ignore[return-value]


def make_pair(cell: str, size, seed: int = 0):
    """Build an rnncore layer and a torch module holding the same float32 weights."""
    T, B, I, H = size
    rc_cls, torch_cls = CELLS[cell]
    kwargs = {"reset_after": True} if cell == "gru" else {}
    layer = rc_cls(I, H, dtype=np.float32, seed=seed, **kwargs)
    module = torch_cls(I, H)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(layer.params[name], dtype=np.float32)))

    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    return layer, module, x, dy


def make_calls(layer, module, x, dy, mode: str):
    """Return (rnncore_call, torch_call), each running one step of `mode`."""
    x_t = torch.from_numpy(x.copy())
    dy_t = torch.from_numpy(dy.copy())
    module.train(mode == "train")  # dropout is 0, so this only picks torch's usual code path
    if mode == "inference":

        def rc_call():
            layer(x)

        def torch_call():
            with torch.no_grad():
                module(x_t)

    else:
        x_t.requires_grad_(True)

        def rc_call():
            _, _, tape = layer.forward(x)
            layer.backward(tape, dy)

        def torch_call():
            y, _ = module(x_t)
            y.backward(dy_t)

    return rc_call, torch_call


def output_gap(layer, module, x) -> float:
    """max |y_rnncore - y_torch|, to show that both sides compute the same thing."""
    y_rc, _ = layer(x)
    with torch.no_grad():
        y_t, _ = module(torch.from_numpy(x.copy()))
    return float(np.max(np.abs(np.asarray(y_rc) - y_t.numpy())))


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


def alternate(calls, repeats: int, min_time: float, warmup_time: float) -> list:
    """Time each callable in `calls`, taking turns; return one array of ms per call.

    Each round runs every side once, and the starting side rotates from round
    to round so that no side always runs on a warmer cache (with two sides:
    a, b then b, a, ...).
    """
    inners = [calibrate(fn, min_time, warmup_time) for fn in calls]
    times = [[] for _ in calls]
    n = len(calls)
    for r in range(repeats):
        for k in range(n):
            i = (r + k) % n
            times[i].append(sample(calls[i], inners[i]))
    return [np.array(t) * 1e3 for t in times]


def bench_one(cell, mode, size, threads, repeats, min_time, warmup_time):
    set_threads(threads)
    layer, module, x, dy = make_pair(cell, size)
    gap = output_gap(layer, module, x)
    rc_call, torch_call = make_calls(layer, module, x, dy, mode)
    rc_ms, torch_ms = alternate([rc_call, torch_call], repeats, min_time, warmup_time)
    return rc_ms, torch_ms, gap


def spread(ms: np.ndarray) -> float:
    """Inter-quartile range relative to the median, in percent."""
    q1, q2, q3 = np.percentile(ms, [25, 50, 75])
    return 100.0 * (q3 - q1) / q2 if q2 > 0 else 0.0


def add_common_args(ap: argparse.ArgumentParser, cells, default_cells) -> None:
    """The command line shared by the side-by-side benchmarks."""
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    ap.add_argument("--cells", nargs="+", choices=sorted(cells), default=list(default_cells))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--sizes", type=parse_size, nargs="+", metavar="T,B,I,H",
                    help="problem sizes (default: 100,1,32,128 and 100,32,128,256)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter samples, smaller sizes")
    ap.add_argument("--repeats", type=int, help="samples per side (default 15, quick 5)")
    ap.add_argument("--min-time", type=float, help="seconds per sample (default 0.05, quick 0.01)")


def run_settings(ap: argparse.ArgumentParser, args) -> tuple:
    """Check the shared flags; return (sizes, repeats, min_time, warmup_time)."""
    if any(n < 1 for n in args.threads):
        ap.error("--threads must be positive")
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, CELLS, ["lstm", "gru"])
    args = ap.parse_args(argv)
    sizes, repeats, min_time, warmup_time = run_settings(ap, args)

    print_preamble(repeats, min_time)
    header = (f"{'cell':<5} {'mode':<9} {'T':>4} {'B':>4} {'I':>4} {'H':>4} {'thr':>3} "
              f"{'rnncore ms':>11} {'torch ms':>10} {'torch/rc':>9} {'iqr% rc/torch':>14} {'y diff':>8}")
    print(header)
    print("-" * len(header))
    noisy = False
    for cell in args.cells:
        for mode in args.modes:
            for size in sizes:
                for threads in args.threads:
                    rc_ms, t_ms, gap = bench_one(cell, mode, size, threads, repeats, min_time, warmup_time)
                    rc_med, t_med = float(np.median(rc_ms)), float(np.median(t_ms))
                    s_rc, s_t = spread(rc_ms), spread(t_ms)
                    flag = "*" if max(s_rc, s_t) > 10.0 else " "
                    noisy |= flag == "*"
                    T, B, I, H = size
                    print(f"{cell:<5} {mode:<9} {T:>4} {B:>4} {I:>4} {H:>4} {threads:>3} "
                          f"{rc_med:>11.3f} {t_med:>10.3f} {t_med / rc_med:>9.2f} "
                          f"{s_rc:>6.1f}/{s_t:<6.1f}{flag} {gap:>8.1e}", flush=True)
    print()
    print("torch/rc > 1: rnncore is faster.  y diff: max |y_rnncore - y_torch| with the same weights.")
    if noisy:
        print("* spread above 10%: the machine was busy, treat that row with care.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
