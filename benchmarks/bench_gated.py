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
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The shared helpers live in _common.py; they are re-exported here so that
# `from bench_gated import alternate, spread, ...` keeps working.
from _common import (DEFAULT_SIZES, MODES, QUICK_SIZES, add_common_args, alternate,  # noqa: E402,F401
                     calibrate, parse_size, print_preamble, rc, run_settings, sample,
                     set_threads, spread, torch)

# bench_gated.py's own grid: DEFAULT_SIZES, QUICK_SIZES (from _common).
CELLS = {"lstm": (rc.LSTM, torch.nn.LSTM), "gru": (rc.GRU, torch.nn.GRU)}


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


def bench_one(cell, mode, size, threads, repeats, min_time, warmup_time, extra=None):
    """Return (rc_ms, torch_ms, gap): arrays of samples in ms and max |y_rc - y_torch|.

    extra(layer, x) -> [calls]: more sides on the same layer and input, timed in
    the same rounds; with it, the list of their sample arrays comes fourth.
    """
    set_threads(threads)
    layer, module, x, dy = make_pair(cell, size)
    gap = output_gap(layer, module, x)
    rc_call, torch_call = make_calls(layer, module, x, dy, mode)
    more = extra(layer, x) if extra is not None else []
    rc_ms, torch_ms, *more_ms = alternate([rc_call, torch_call] + more, repeats, min_time, warmup_time)
    return (rc_ms, torch_ms, gap) + ((more_ms,) if extra is not None else ())


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
