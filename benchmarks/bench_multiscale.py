"""Multi-time-scale cells, rnncore against PyTorch on the CPU, side by side in one process.

rnncore's RNN (tanh), LeakyRNN, SkipRNN and ClockworkRNN against what a PyTorch
user writes today:

* elman      torch.nn.RNN (tanh);
* leaky      (timescales (1, 100): one alpha per unit),
  skip       (delays (1, 4)),
  clockwork  (periods (1, 2, 4, 8)):
    torch    a plain Python loop over time with torch ops, the input projection
             hoisted into one matmul over all T*B rows before the loop;
    jit      the same function under torch.jit.script.

Every side gets the same weights (copied from the rnncore layer), inputs and
thread count; in training mode torch computes the same gradients as rnncore
(all parameters, alpha included, and dx). Runs take turns so that a busy
machine slows all sides alike. Each row also times rnncore's own Elman layer
of the same size and mode, in the same rounds, and reports cell/elman: the
target is that a leaky, skip or clockwork step costs at most 1.3x an Elman step.
Reports medians in ms and the ratios torch / rnncore (> 1: rnncore is faster).

    python benchmarks/bench_multiscale.py                       # full grid
    python benchmarks/bench_multiscale.py --threads 1 --cells leaky skip
    python benchmarks/bench_multiscale.py --quick --sizes 10,2,4,8
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (add_common_args, alternate, print_preamble, rc, run_settings,  # noqa: E402
                     set_threads, spread, torch)

# torch.jit.script still works in torch 2.x but warns that it is deprecated; it
# is what users of these loops reach for, so it is benchmarked, quietly.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)

LEAKY_TIMESCALES = (1.0, 100.0)
SKIP_DELAYS = (1, 4)
CLOCKWORK_PERIODS = (1, 2, 4, 8)
CELLS = {
    "elman": lambda I, H: rc.RNN(I, H, dtype=np.float32, seed=0, nonlinearity="tanh"),
    "leaky": lambda I, H: rc.LeakyRNN(I, H, dtype=np.float32, seed=0, timescales=LEAKY_TIMESCALES),
    "skip": lambda I, H: rc.SkipRNN(I, H, dtype=np.float32, seed=0, delays=SKIP_DELAYS),
    "clockwork": lambda I, H: rc.ClockworkRNN(I, H, dtype=np.float32, seed=0, periods=CLOCKWORK_PERIODS),
}
CELL_ORDER = ("elman", "leaky", "skip", "clockwork")
TARGET = 1.3  # a multi-time-scale step should cost at most this many Elman steps


# --- what a PyTorch user writes: hoisted input projection, Python loop over time ---
# Each function is used as is (eager) and under torch.jit.script (jit).

def leaky_seq(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
              b_hh: torch.Tensor, alpha: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = alpha*h_{t-1} + (1-alpha)*tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""
    T, B, I = x.size(0), x.size(1), x.size(2)
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, I), w_ih.t()).view(T, B, -1)
    w_hh_t = w_hh.t()
    beta = 1.0 - alpha
    h = h0
    ys: List[torch.Tensor] = []
    for t in range(T):
        h = alpha * h + beta * torch.tanh(torch.addmm(xp[t], h, w_hh_t))
        ys.append(h)
    return torch.stack(ys)


def skip_seq(x: torch.Tensor, w_ih: torch.Tensor, w_hhs: List[torch.Tensor], delays: List[int],
             b_ih: torch.Tensor, b_hh: torch.Tensor, hist0: torch.Tensor) -> torch.Tensor:
    """h_t = tanh(W_ih x_t + b_ih + sum_d W_hh^(d) h_{t-d} + b_hh); hist0 (max_d, B, H), newest last."""
    T, B, I = x.size(0), x.size(1), x.size(2)
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, I), w_ih.t()).view(T, B, -1)
    w_ts = [w.t() for w in w_hhs]
    hs: List[torch.Tensor] = [hist0[i] for i in range(hist0.size(0))]
    start = len(hs)
    for t in range(T):
        pre = xp[t]
        n = len(hs)
        for k in range(len(delays)):
            pre = torch.addmm(pre, hs[n - delays[k]], w_ts[k])
        hs.append(torch.tanh(pre))
    return torch.stack(hs[start:])


def clockwork_seq(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                  b_hh: torch.Tensor, active: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Groups active at step t (active[t], (1, H) bool) take tanh(W_ih x_t + b_ih + W_hh h + b_hh),
    the others keep their value; W_hh's disallowed blocks are zero."""
    T, B, I = x.size(0), x.size(1), x.size(2)
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, I), w_ih.t()).view(T, B, -1)
    w_hh_t = w_hh.t()
    h = h0
    ys: List[torch.Tensor] = []
    for t in range(T):
        h = torch.where(active[t], torch.tanh(torch.addmm(xp[t], h, w_hh_t)), h)
        ys.append(h)
    return torch.stack(ys)


SEQ_FUNCS = {"leaky": leaky_seq, "skip": skip_seq, "clockwork": clockwork_seq}
_JIT_CACHE: dict = {}


def jit_func(cell: str):
    if cell not in _JIT_CACHE:
        _JIT_CACHE[cell] = torch.jit.script(SEQ_FUNCS[cell])
    return _JIT_CACHE[cell]


def make_data(size, seed: int = 0):
    T, B, I, H = size
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    return x, dy


def torch_param(layer, name: str, grad: bool) -> torch.Tensor:
    p = torch.from_numpy(np.array(layer.params[name], dtype=np.float32, copy=True))
    return p.requires_grad_(grad)


def torch_forward(cell: str, layer, size, grad: bool):
    """Return f(fn, x_t) -> y computing `cell` with `fn` (the eager or scripted loop)
    and the layer's weights; or, for elman, a torch.nn.RNN module's call."""
    T, B, I, H = size
    if cell == "elman":
        module = torch.nn.RNN(I, H, nonlinearity="tanh")
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(np.ascontiguousarray(layer.params[name], dtype=np.float32)))
        module.train(grad)
        module.requires_grad_(grad)
        return lambda fn, x_t: module(x_t)[0]

    P = lambda name: torch_param(layer, name, grad)  # noqa: E731
    w_ih, b_ih, b_hh = P("weight_ih_l0"), P("bias_ih_l0"), P("bias_hh_l0")
    if cell == "leaky":
        w_hh, alpha = P("weight_hh_l0"), P("alpha_l0")
        h0 = torch.zeros(B, H)
        return lambda fn, x_t: fn(x_t, w_ih, w_hh, b_ih, b_hh, alpha, h0)
    if cell == "skip":
        w_hhs = [P(f"weight_hh_d{d}_l0") for d in layer.delays]
        delays = list(layer.delays)
        hist0 = torch.zeros(layer.max_delay, B, H)
        return lambda fn, x_t: fn(x_t, w_ih, w_hhs, delays, b_ih, b_hh, hist0)
    if cell == "clockwork":
        w_hh = P("weight_hh_l0")
        periods = np.repeat(np.array(layer.periods), H // len(layer.periods))  # period of each unit
        active = torch.from_numpy((np.arange(T)[:, None] % periods[None, :]) == 0).view(T, 1, H)
        h0 = torch.zeros(B, H)  # state starts at step 0
        return lambda fn, x_t: fn(x_t, w_ih, w_hh, b_ih, b_hh, active, h0)
    raise ValueError(cell)


def torch_sides(cell: str):
    """Names and functions of the torch sides of `cell`: [(label, fn)]."""
    if cell == "elman":
        return [("torch", None)]
    return [("torch", SEQ_FUNCS[cell]), ("jit", jit_func(cell))]


def make_calls(cell: str, size, mode: str, layer=None, data=None):
    """Return (rnncore_call, [torch_calls], rnncore_elman_call, gap).

    `layer` and `data` ((x, dy)) default to a fresh CELLS[cell] layer and make_data(size).
    """
    T, B, I, H = size
    layer = CELLS[cell](I, H) if layer is None else layer
    x, dy = make_data(size) if data is None else data
    train = mode == "train"
    fwd = torch_forward(cell, layer, size, grad=train)
    sides = torch_sides(cell)

    # Same computation? Checked once, outside autograd, against every torch side.
    y_rc = np.asarray(layer(x)[0])
    gap = 0.0
    with torch.no_grad():
        for _, fn in sides:
            y_t = fwd(fn, torch.from_numpy(x.copy())).numpy()
            gap = max(gap, float(np.max(np.abs(y_rc - y_t))))

    elman = CELLS["elman"](I, H) if cell != "elman" else layer
    x_t = torch.from_numpy(x.copy())
    dy_t = torch.from_numpy(dy.copy())
    if not train:
        def rc_call(layer=layer):
            layer(x)

        def torch_call(fn):
            def call():
                with torch.no_grad():
                    fwd(fn, x_t)
            return call
    else:
        x_t.requires_grad_(True)

        def rc_call(layer=layer):
            _, _, tape = layer.forward(x)
            layer.backward(tape, dy)

        def torch_call(fn):
            def call():
                fwd(fn, x_t).backward(dy_t)
            return call

    torch_calls = [torch_call(fn) for _, fn in sides]
    elman_call = (lambda: rc_call(elman)) if cell != "elman" else None
    return rc_call, torch_calls, elman_call, gap


def bench_one(cell, mode, size, threads, repeats, min_time, warmup_time, extra=None):
    """Return (rc_ms, [torch_ms...], elman_ms or None, gap): arrays of samples in ms.

    extra(layer, x) -> [calls]: more sides on the same layer and input, timed in
    the same rounds; with it, the list of their sample arrays comes fifth.
    """
    set_threads(threads)
    T, B, I, H = size
    layer, data = CELLS[cell](I, H), make_data(size)
    rc_call, torch_calls, elman_call, gap = make_calls(cell, size, mode, layer, data)
    more = extra(layer, data[0]) if extra is not None else []
    calls = [rc_call] + torch_calls + more + ([elman_call] if elman_call else [])
    times = alternate(calls, repeats, min_time, warmup_time)
    n = len(torch_calls)
    rc_ms, torch_ms, more_ms = times[0], times[1:1 + n], times[1 + n:1 + n + len(more)]
    elman_ms = times[-1] if elman_call else rc_ms
    return (rc_ms, torch_ms, elman_ms, gap) + ((more_ms,) if extra is not None else ())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, CELLS, CELL_ORDER)
    args = ap.parse_args(argv)
    sizes, repeats, min_time, warmup_time = run_settings(ap, args)
    if "clockwork" in args.cells:
        bad = [s for s in sizes if s[3] % len(CLOCKWORK_PERIODS)]
        if bad:
            ap.error(f"clockwork needs H divisible by {len(CLOCKWORK_PERIODS)} "
                     f"(periods {CLOCKWORK_PERIODS}), got H = {', '.join(str(s[3]) for s in bad)}")
    cells = [c for c in CELL_ORDER if c in args.cells]

    print_preamble(repeats, min_time)
    print(f"leaky: timescales {LEAKY_TIMESCALES}; skip: delays {SKIP_DELAYS}; "
          f"clockwork: periods {CLOCKWORK_PERIODS}")
    print()
    header = (f"{'cell':<9} {'mode':<9} {'T':>4} {'B':>4} {'I':>4} {'H':>4} {'thr':>3} "
              f"{'rnncore ms':>11} {'torch ms':>10} {'jit ms':>10} {'torch/rc':>9} {'jit/rc':>7} "
              f"{'elman ms':>9} {'cell/elman':>11} {'iqr%':>6} {'y diff':>8}")
    print(header)
    print("-" * len(header))
    noisy = over = False
    for cell in cells:
        for mode in args.modes:
            for size in sizes:
                for threads in args.threads:
                    rc_ms, torch_ms, elman_ms, gap = bench_one(cell, mode, size, threads, repeats,
                                                               min_time, warmup_time)
                    rc_med = float(np.median(rc_ms))
                    meds = [float(np.median(t)) for t in torch_ms]
                    el_med = float(np.median(elman_ms))
                    iqr = max(spread(a) for a in [rc_ms, *torch_ms, elman_ms])
                    flag = "*" if iqr > 10.0 else " "
                    noisy |= flag == "*"
                    ratio = rc_med / el_med
                    mark = "!" if ratio > TARGET else " "
                    over |= mark == "!"
                    loop_ms, loop_r = f"{meds[0]:>10.3f}", f"{meds[0] / rc_med:>9.2f}"
                    if len(meds) > 1:
                        jit_ms, jit_r = f"{meds[1]:>10.3f}", f"{meds[1] / rc_med:>7.2f}"
                    else:
                        jit_ms, jit_r = f"{'-':>10}", f"{'-':>7}"
                    T, B, I, H = size
                    print(f"{cell:<9} {mode:<9} {T:>4} {B:>4} {I:>4} {H:>4} {threads:>3} "
                          f"{rc_med:>11.3f} {loop_ms} {jit_ms} {loop_r} {jit_r} "
                          f"{el_med:>9.3f} {ratio:>10.2f}{mark} {iqr:>5.1f}{flag} {gap:>8.1e}",
                          flush=True)
    print()
    print("torch: torch.nn.RNN for elman; for leaky/skip/clockwork a Python loop over time with the "
          "input projection hoisted.")
    print("jit: that loop under torch.jit.script.  torch/rc, jit/rc > 1: rnncore is faster.")
    print("elman ms: rnncore's RNN (tanh) at the same size and mode, timed in the same rounds; "
          f"cell/elman target <= {TARGET}.")
    print("y diff: max |y_rnncore - y_torch| over the torch sides, same weights.  iqr%: largest "
          "inter-quartile range / median over the sides.")
    if over:
        print(f"! cell/elman above the {TARGET} target.")
    if noisy:
        print("* spread above 10%: the machine was busy, treat that row with care.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
