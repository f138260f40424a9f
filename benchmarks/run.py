"""rnncore's performance, against PyTorch on the CPU: the one entry point.

    python benchmarks/run.py                         # everything, threads 1 and 2
    python benchmarks/run.py --quick                 # fewer repeats, first two sizes
    python benchmarks/run.py --threads 2 --cells lstm gru --modes train --json out.json
    python benchmarks/run.py --parts stream memory   # only some parts
    python benchmarks/run.py --no-ort                # without the onnxruntime side

rnncore and PyTorch run in one process with the same thread count
(rc.set_num_threads and torch.set_num_threads), the same weights (copied from
the rnncore layer), inputs and sizes; every side is warmed up, the sides take
turns round by round (the starting side rotates), and each figure is the
median of the samples (a sample = back-to-back calls lasting >= --min-time).

onnxruntime is an optional third side (ort), for inference of lstm, gru and
elman in the grid: `pip install ".[bench]"` installs onnx and onnxruntime.
Without them (or with --no-ort) that side and its checks are left out, with
one line saying so, and the rest runs as before.

Parts (--parts; all by default):

grid    cell x mode x size x threads.  Cells: lstm, gru, elman against
        torch.nn.LSTM / GRU / RNN(tanh); leaky (timescales 1..100), skip
        (delays 1, 4), clockwork (periods 1, 2, 4, 8) against what a torch user
        writes: a Python loop over time with the input projection hoisted
        (torch) and the same function under torch.jit.script (jit).  Modes:
        inference (forward, no tape / no_grad) and train (forward + BPTT down
        to dx and every parameter gradient).  For the loop cells rnncore's own
        Elman layer of the same size is timed in the same rounds (/elman).
        Inference rows of lstm, gru and elman also time onnxruntime (ort), in
        the same rounds: one ONNX LSTM / GRU / RNN node (opset 17, default
        domain) holding the rnncore layer's weights (gate blocks reordered to
        ONNX's i,o,f,c and z,r,h; B = [b_ih, b_hh]; GRU linear_before_reset=1
        for reset_after=True), on a session with intra_op_num_threads = the
        row's threads, inter_op_num_threads = 1, no spinning and all graph
        optimisations.  Its output is checked once per row against rnncore's
        (max abs difference <= 1e-4, or the run stops with an error).
        Sizes (T, B, I, H): 100,1,32,128  200,16,64,64  100,32,128,256
        50,64,512,512  25,16,1024,1024.
sgemm   the BLAS reference: C = A @ B.T, A (4096, 512), B (2048, 512) float32,
        through rnncore's own BLAS path (rnncore._core.gemm_f32: OpenBLAS split
        over rnncore's threads), median GFLOP/s per thread count; the grid's
        %sgemm column is relative to it.
stream  one LSTM step at a time (T=1, B=1, I=32, H=128) with the state carried:
        `y, st = layer(x_t, st)` against `y, st = lstm(x_t, st)` under
        torch.no_grad(); median us per step.
memory  peak extra memory of one training step at 100,32,128,256 LSTM, one fresh
        child process per library and thread count (_memprobe.py): warm-up at
        a tiny size (T=2, B=1) so that thread pools, BLAS buffers and torch's
        autograd engine exist; the kernel's peak-RSS mark is reset
        (/proc/self/clear_refs) and extra = peak RSS during one full-size
        forward + backward (outputs y and dx held) - RSS before.  That counts
        numpy arrays, the C++ tape and workspace, torch tensors and graph
        alike.  Gradient buffers exist before the step on both sides.  The
        children run with MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_ =
        128 KiB so that glibc maps large blocks on allocation and returns them
        on free (no reuse of pages freed earlier hides a step's memory).  For
        rnncore a second step under tracemalloc shows the numpy share (numpy
        reports its allocations to tracemalloc); the rest is C++ workspace.
        ru_maxrss is not the headline: it cannot be reset, and a child inherits
        its parent's peak at exec; it is the fallback without /proc.
load    a child process keeps one core busy (a tight Python loop) while
        rnncore with its default threads and rnncore pinned to 1 thread take
        turns, at 100,1,32,128 and 100,32,128,256 LSTM, inference and train;
        default/1thr should be <= 1.5.  torch with 2 threads vs 1 under the
        same load, in the same rounds, for comparison.  The child is killed at
        the end, on Ctrl-C and on errors (and exits by itself if orphaned).

FLOPs (matmul FLOPs only; the element-wise gate work is not counted).  With G
gates (LSTM 4, GRU 3, Elman / leaky / skip / clockwork 1) and R recurrent
matrices (skip: one per delay, 2; the others 1):

    inference  F = 2*T*B*I*G*H + 2*T*B*H*G*H*R        (input projection + recurrent)
    train      3*F                                     (forward, then per matmul dX and dW)

Clockwork is counted as the dense H x H product the torch loop computes
(nominal: rnncore may skip blocks and groups that do not update).
GFLOP/s = FLOPs / rnncore median time; %sgemm = that / sgemm GFLOP/s at the
same thread count.

Columns: rnncore ms, torch ms, jit ms (loop cells) and ort ms (onnxruntime;
'-' where it does not run) are medians per call; torch/rc, jit/rc and ort/rc
> 1 mean rnncore is faster; /elman is the loop cell's time over rnncore's
Elman at the same size, mode and threads; iqr% the largest inter-quartile
range / median over the sides (* above 10%: busy machine; ~ where some of
rnncore's team calls ran on one thread, the back-off after its threads
waited for a core: JSON solo_calls); y diff = max |y_rnncore - y_torch|
with the same weights (the JSON has ort_y_diff too).

The summary checks these targets and marks each PASS or MISS; a target's
figure is the worst over the modes and thread counts run, and for the loop
cells the faster torch side (eager or jit) is the reference:

    size               lstm  gru  elman  leaky/skip/clockwork (vs loop)
    100,1,32,128        3     5    4      10
    200,16,64,64        2     4    3      10
    100,32,128,256      1.3   1.5  1.5    3
    50,64,512,512       1.0   1.2  1.2    1.5   and LSTM >= 85% of sgemm
    25,16,1024,1024     1.0   1.2  1.2    1.5   and LSTM >= 85% of sgemm

    lstm and gru inference >= 1.0x onnxruntime (ort/rc) at every grid size run,
    when the ort side runs;
    loop cells' train step <= 1.3x rnncore's Elman train step (same size);
    2 threads >= 1.6x faster than 1 thread at the two largest sizes;
    streaming LSTM step <= 5 us; training peak memory <= torch's;
    under load: rnncore default threads / 1 thread <= 1.5.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import (MODES, add_common_args, alternate, parse_size, rc, run_settings,  # noqa: E402
                     set_threads, spread, torch)
import bench_gated  # noqa: E402
import bench_multiscale  # noqa: E402

SIZES = [(100, 1, 32, 128), (200, 16, 64, 64), (100, 32, 128, 256), (50, 64, 512, 512), (25, 16, 1024, 1024)]
QUICK_SIZES = SIZES[:2]
LARGE_SIZES = SIZES[-2:]
GATED = ("lstm", "gru")
LOOP_CELLS = ("leaky", "skip", "clockwork")
CELLS = ("lstm", "gru", "elman") + LOOP_CELLS
PARTS = ("sgemm", "grid", "stream", "memory", "load")
GATES = {"lstm": 4, "gru": 3, "elman": 1, "leaky": 1, "skip": 1, "clockwork": 1}
RECURRENT_MATS = {"skip": len(bench_multiscale.SKIP_DELAYS)}

GEMM_SHAPE = (4096, 2048, 512)  # C (M, N) = A (M, K) @ B (N, K).T
STREAM_SIZE = (32, 128)  # LSTM I, H
STREAM_SEQ = 1000  # distinct inputs cycled through by the streaming loop
MEMORY_SIZE = (100, 32, 128, 256)
LOAD_SIZES = [(100, 1, 32, 128), (100, 32, 128, 256)]

# Targets: median torch time / rnncore time, at least (loop cells: the faster torch side).
RATIO_TARGETS = {
    (100, 1, 32, 128): dict(lstm=3, gru=5, elman=4, loop=10),
    (200, 16, 64, 64): dict(lstm=2, gru=4, elman=3, loop=10),
    (100, 32, 128, 256): dict(lstm=1.3, gru=1.5, elman=1.5, loop=3),
    (50, 64, 512, 512): dict(lstm=1.0, gru=1.2, elman=1.2, loop=1.5),
    (25, 16, 1024, 1024): dict(lstm=1.0, gru=1.2, elman=1.2, loop=1.5),
}
SGEMM_PCT_TARGET = 85.0  # LSTM at LARGE_SIZES, % of the sgemm GFLOP/s
ELMAN_TARGET = 1.3  # loop-cell train step / rnncore Elman train step, at most
SCALING_TARGET = 1.6  # 1-thread time / 2-thread time at LARGE_SIZES, at least
STREAM_TARGET_US = 5.0
LOAD_TARGET = 1.5  # rnncore default threads / 1 thread under load, at most
ORT_TARGET = 1.0  # LSTM and GRU inference: onnxruntime time / rnncore time, at least

# The onnxruntime side: grid cell -> ONNX op (default domain), for inference rows only.
ORT_CELLS = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}
# LSTM, GRU and RNN mean the same since opset 14; a fixed version keeps the graph
# the same whatever onnx is installed, and every recent onnxruntime runs it.
ONNX_OPSET = 17
# The ONNX op's gate blocks as indices into rnncore's (PyTorch's) order:
# LSTM i,f,g,o -> ONNX i,o,f,c;  GRU r,z,n -> ONNX z,r,h.
ONNX_GATES = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}
ORT_ATOL = 1e-4  # max |y_ort - y_rnncore|, float32; the grid's cells (tanh) give outputs in [-1, 1]


def fmt_size(size) -> str:
    return ",".join(str(v) for v in size)


def flops(cell: str, mode: str, size) -> float:
    """Matmul FLOPs of one call (see the module docstring for the formula)."""
    T, B, I, H = size
    G, R = GATES[cell], RECURRENT_MATS.get(cell, 1)
    f = 2.0 * T * B * I * G * H + 2.0 * T * B * H * G * H * R
    return 3.0 * f if mode == "train" else f


def med(a) -> float:
    return float(np.median(a))


# --------------------------------------------------------------------------- machine


def cpu_info() -> dict:
    model, phys = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            pid = core = None
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and model is None:
                    model = val
                elif key == "physical id":
                    pid = val
                elif key == "core id":
                    core = val
                elif not key:
                    if core is not None:
                        phys.add((pid, core))
                    pid = core = None
            if core is not None:
                phys.add((pid, core))
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {"model": model or platform.processor() or platform.machine(),
            "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "physical_cores": len(phys) or None, "arch": platform.machine()}


def machine_info(args, ort=None) -> dict:
    try:
        rt = rc.runtime_info()
    except Exception as e:  # pragma: no cover - older builds
        rt = {"error": repr(e)}
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "cpu": cpu_info(), "os": platform.platform(), "load_average_at_start": load,
        "versions": {"rnncore": getattr(rc, "__version__", "?"), "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "onnx": ort[0].__version__ if ort else None,
                     "onnxruntime": ort[1].__version__ if ort else None},
        "rnncore_runtime": rt,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "settings": vars(args),
    }


def print_machine(info: dict, repeats: int, min_time: float) -> None:
    v, c = info["versions"], info["cpu"]
    ort_v = f"   onnxruntime {v['onnxruntime']} (onnx {v['onnx']})" if v.get("onnxruntime") else ""
    print(f"rnncore {v['rnncore']}   torch {v['torch']}{ort_v}   numpy {v['numpy']}   python {v['python']}")
    rt = info["rnncore_runtime"]
    print(f"{c['model']}; {c['logical_cpus']} logical CPUs ({c['usable_cpus']} usable, "
          f"{c['physical_cores']} cores); rnncore isa {rt.get('isa', '?')}, default threads "
          f"{rt.get('threads', '?')}")
    la = info["load_average_at_start"]
    print(f"{info['date']}   load average {' '.join(f'{x:.2f}' for x in la) if la else '?'}")
    print(f"float32; {repeats} samples of >= {min_time * 1e3:.0f} ms per side, sides alternating; medians")
    print(f"command: {info['command']}")
    print()


# --------------------------------------------------------------------------- sgemm


def bench_sgemm(threads_list, repeats, min_time, warmup_time, shape=GEMM_SHAPE) -> dict:
    """Median GFLOP/s of C = A @ B.T through rnncore's BLAS path, per thread count."""
    M, N, K = shape
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K), dtype=np.float32)
    B = rng.standard_normal((N, K), dtype=np.float32)
    C = np.empty((M, N), dtype=np.float32)
    gemm = getattr(rc._core, "gemm_f32", None)
    if gemm is None:
        print("sgemm: rnncore._core.gemm_f32 not found; %sgemm left empty\n")
        return {}
    fl = 2.0 * M * N * K
    out = {}
    print(f"sgemm  C = A @ B.T, A ({M}, {K}), B ({N}, {K}) float32 through rnncore._core.gemm_f32")
    for threads in threads_list:
        set_threads(threads)
        (ms,) = alternate([lambda t=threads: gemm(False, True, 1.0, A, B, 0.0, C, t)],
                          repeats, min_time, warmup_time)
        gf = fl / (med(ms) * 1e-3) / 1e9
        out[threads] = {"threads": threads, "shape": [M, N, K], "ms": med(ms), "gflops": gf,
                        "iqr_pct": spread(ms), "samples_ms": ms.tolist()}
        print(f"  {threads} thr  {med(ms):9.3f} ms  {gf:8.1f} GFLOP/s  iqr {spread(ms):.1f}%", flush=True)
    print()
    return out


# --------------------------------------------------------------------------- onnxruntime


def load_ort():
    """(onnx, onnxruntime, None) if both import, else (None, None, why not)."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        return None, None, str(e)
    return onnx, onnxruntime, None


def onnx_model(onnx, layer):
    """One ONNX LSTM, GRU or RNN node holding `layer`'s weights.

    Input X (T, B, I) float32, output Y (T, 1, B, H), zero initial state, as
    ``layer(x)``. Weights are copied: later changes to ``layer.params`` are not seen.
    """
    helper = onnx.helper
    if isinstance(layer, rc.LSTM):
        op, attrs = "LSTM", {}
        if layer.peephole:
            raise ValueError("onnx_model: LSTM(peephole=True) is not supported")
    elif isinstance(layer, rc.GRU):
        # reset_after=True (PyTorch's GRU) applies r after W_hn h + b_hn: linear_before_reset=1
        op, attrs = "GRU", {"linear_before_reset": int(layer.reset_after)}
    elif type(layer) is rc.RNN:
        op, attrs = "RNN", {"activations": [layer.nonlinearity.capitalize()]}
    else:
        raise TypeError(f"onnx_model: no ONNX op for {type(layer).__name__} (LSTM, GRU and RNN have one)")
    if layer.num_layers != 1 or layer.bidirectional or layer.batch_first:
        raise ValueError("onnx_model: one layer, one direction, time-major only")
    I, H, order = layer.input_size, layer.hidden_size, list(ONNX_GATES[op])
    G = len(order)

    def gates(name):  # (G*H, ...) in rnncore's gate order -> (1, G*H, ...) in ONNX's
        a = np.asarray(layer.params[name], dtype=np.float32)
        return a.reshape((G, H) + a.shape[1:])[order].reshape((1, G * H) + a.shape[1:])

    inits = [("W", gates("weight_ih_l0")), ("R", gates("weight_hh_l0"))]
    if layer.bias:  # B = [W_b, R_b], (1, 2*G*H)
        inits.append(("B", np.concatenate([gates("bias_ih_l0"), gates("bias_hh_l0")], axis=1)))
    node = helper.make_node(op, ["X"] + [name for name, _ in inits], ["Y"], hidden_size=H, **attrs)
    graph = helper.make_graph(
        [node], f"rnncore_{op.lower()}",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, ["T", 1, "B", H])],
        initializer=[onnx.numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in inits])
    opset = helper.make_opsetid("", ONNX_OPSET)
    model = helper.make_model(graph, opset_imports=[opset], producer_name="rnncore benchmarks",
                              ir_version=helper.find_min_ir_version_for([opset]))
    onnx.checker.check_model(model)
    return model


def ort_session(ort, model, threads: int):
    """An onnxruntime CPU session on `threads` threads that does not spin between calls."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_call(mods, layer, x, threads: int):
    """(call, gap): one onnxruntime inference of `layer` on x, and max |y_ort - y_rnncore|.

    Raises RuntimeError if the outputs differ by more than ORT_ATOL.
    """
    onnx, ort = mods
    sess = ort_session(ort, onnx_model(onnx, layer), threads)
    feed = {"X": np.ascontiguousarray(x, dtype=np.float32)}
    y_ort = sess.run(["Y"], feed)[0]
    y_rc = np.asarray(layer(x)[0])
    if y_ort.shape != (y_rc.shape[0], 1) + y_rc.shape[1:]:
        raise RuntimeError(f"onnxruntime's Y is {y_ort.shape}, expected {(y_rc.shape[0], 1) + y_rc.shape[1:]}")
    gap = float(np.max(np.abs(y_ort[:, 0] - y_rc)))
    if not gap <= ORT_ATOL:  # NaN fails too
        raise RuntimeError(f"onnxruntime and rnncore disagree for {type(layer).__name__}"
                           f"({layer.input_size}, {layer.hidden_size}) at x {x.shape}, threads={threads}: "
                           f"max |y_ort - y_rnncore| = {gap:.3g} > {ORT_ATOL:g}")
    return (lambda: sess.run(["Y"], feed)), gap


# --------------------------------------------------------------------------- grid

GRID_HEADER = (f"{'cell':<9} {'mode':<9} {'T':>4} {'B':>4} {'I':>5} {'H':>5} {'thr':>3} "
               f"{'rnncore ms':>11} {'torch ms':>10} {'jit ms':>10} {'ort ms':>10} {'torch/rc':>8} {'jit/rc':>7} "
               f"{'ort/rc':>7} "
               f"{'GFLOP/s':>8} {'%sgemm':>7} {'/elman':>7} {'iqr%':>6} {'y diff':>8}")


def bench_row(cell, mode, size, threads, repeats, min_time, warmup_time, sgemm, ort=None) -> dict:
    """One grid row. ort: (onnx, onnxruntime) to add the onnxruntime side to the
    inference rows of ORT_CELLS, timed in the same rounds, or None."""
    ort_gap = []
    extra = None
    if ort is not None and mode == "inference" and cell in ORT_CELLS:
        def extra(layer, x):
            call, g = ort_call(ort, layer, x, threads)
            ort_gap.append(g)
            return [call]
    solo_taken = getattr(rc._core, "solo_calls_taken", lambda: 0)
    solo0 = solo_taken()
    if cell in GATED:
        rc_ms, t_ms, gap, *more = bench_gated.bench_one(cell, mode, size, threads, repeats, min_time,
                                                        warmup_time, extra)
        torch_ms, jit_ms, elman_ms = t_ms, None, None
    else:
        rc_ms, sides, elman_ms, gap, *more = bench_multiscale.bench_one(cell, mode, size, threads, repeats,
                                                                        min_time, warmup_time, extra)
        torch_ms = sides[0]
        jit_ms = sides[1] if len(sides) > 1 else None
        if cell == "elman":
            elman_ms = None
    ort_ms = more[0][0] if more else None
    solo = solo_taken() - solo0
    rc_med, t_med = med(rc_ms), med(torch_ms)
    j_med = med(jit_ms) if jit_ms is not None else None
    o_med = med(ort_ms) if ort_ms is not None else None
    fl = flops(cell, mode, size)
    gf = fl / (rc_med * 1e-3) / 1e9
    sg = sgemm.get(threads, {}).get("gflops")
    T, B, I, H = size
    row = {
        "cell": cell, "mode": mode, "T": T, "B": B, "I": I, "H": H, "threads": threads,
        "rnncore_ms": rc_med, "torch_ms": t_med, "jit_ms": j_med, "ort_ms": o_med,
        "torch_over_rnncore": t_med / rc_med,
        "jit_over_rnncore": j_med / rc_med if j_med is not None else None,
        "ort_over_rnncore": o_med / rc_med if o_med is not None else None,
        "flops": fl, "rnncore_gflops": gf, "torch_gflops": fl / (t_med * 1e-3) / 1e9,
        "pct_sgemm": 100.0 * gf / sg if sg else None,
        "elman_ms": med(elman_ms) if elman_ms is not None else None,
        "iqr_pct": max(spread(a) for a in [rc_ms, torch_ms] + [a for a in (jit_ms, ort_ms, elman_ms)
                                                                if a is not None]),
        "y_diff": gap, "ort_y_diff": ort_gap[0] if ort_gap else None,
        # rnncore team calls of this row run on one thread after contention (busy back-off)
        "solo_calls": solo,
        "samples_ms": {"rnncore": rc_ms.tolist(), "torch": torch_ms.tolist(),
                       "jit": None if jit_ms is None else jit_ms.tolist(),
                       "ort": None if ort_ms is None else ort_ms.tolist(),
                       "elman": None if elman_ms is None else elman_ms.tolist()},
    }
    row["over_elman"] = row["rnncore_ms"] / row["elman_ms"] if row["elman_ms"] else None
    return row


def print_row(r: dict) -> None:
    def opt(v, w, f):
        return f"{v:>{w}{f}}" if v is not None else f"{'-':>{w}}"
    flag = "*" if r["iqr_pct"] > 10.0 else " "
    if r.get("solo_calls"):
        flag += "~"
    print(f"{r['cell']:<9} {r['mode']:<9} {r['T']:>4} {r['B']:>4} {r['I']:>5} {r['H']:>5} {r['threads']:>3} "
          f"{r['rnncore_ms']:>11.3f} {r['torch_ms']:>10.3f} {opt(r['jit_ms'], 10, '.3f')} "
          f"{opt(r['ort_ms'], 10, '.3f')} {r['torch_over_rnncore']:>8.2f} {opt(r['jit_over_rnncore'], 7, '.2f')} "
          f"{opt(r['ort_over_rnncore'], 7, '.2f')} "
          f"{r['rnncore_gflops']:>8.2f} {opt(r['pct_sgemm'], 7, '.1f')} {opt(r['over_elman'], 7, '.2f')} "
          f"{r['iqr_pct']:>5.1f}{flag} {r['y_diff']:>8.1e}", flush=True)


# --------------------------------------------------------------------------- streaming


def bench_stream(threads_list, repeats, min_time, warmup_time) -> list:
    """One LSTM step per call with the state carried, rnncore vs torch, us per step."""
    I, H = STREAM_SIZE
    layer, module, _, _ = bench_gated.make_pair("lstm", (1, 1, I, H))
    rng = np.random.default_rng(2)
    xs = list(rng.standard_normal((STREAM_SEQ, 1, 1, I), dtype=np.float32))
    xs_t = [torch.from_numpy(a.copy()) for a in xs]
    module.eval()

    # Same computation? 10 steps from a zero state on both sides.
    with torch.no_grad():
        st, tst, gap = None, None, 0.0
        for k in range(10):
            y, st = layer(xs[k], st)
            yt, tst = module(xs_t[k], tst)
            gap = max(gap, float(np.max(np.abs(np.asarray(y) - yt.numpy()))))

    rows = []
    print(f"stream  LSTM one step (T=1, B=1, I={I}, H={H}), state carried; us per step")
    for threads in threads_list:
        set_threads(threads)
        s = {"i": 0, "st": layer(xs[0])[1]}
        ts = {"i": 0, "st": None}
        with torch.no_grad():
            ts["st"] = module(xs_t[0])[1]

            def rc_step():
                i = s["i"] = (s["i"] + 1) % STREAM_SEQ
                _, s["st"] = layer(xs[i], s["st"])

            def torch_step():
                i = ts["i"] = (ts["i"] + 1) % STREAM_SEQ
                _, ts["st"] = module(xs_t[i], ts["st"])

            rc_ms, t_ms = alternate([rc_step, torch_step], repeats, min_time, warmup_time)
        r = {"threads": threads, "rnncore_us": med(rc_ms) * 1e3, "torch_us": med(t_ms) * 1e3,
             "iqr_pct": max(spread(rc_ms), spread(t_ms)), "y_diff": gap,
             "samples_us": {"rnncore": (rc_ms * 1e3).tolist(), "torch": (t_ms * 1e3).tolist()}}
        r["torch_over_rnncore"] = r["torch_us"] / r["rnncore_us"]
        rows.append(r)
        flag = "*" if r["iqr_pct"] > 10.0 else " "
        print(f"  {threads} thr  rnncore {r['rnncore_us']:8.2f} us   torch {r['torch_us']:8.2f} us   "
              f"torch/rc {r['torch_over_rnncore']:6.2f}   iqr {r['iqr_pct']:.1f}%{flag}   "
              f"y diff {gap:.1e}", flush=True)
    print()
    return rows


# --------------------------------------------------------------------------- memory


def child_env() -> dict:
    """The environment of a child process: rnncore importable as here, glibc fixed."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(rc.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    return env


def bench_memory(threads_list, size=MEMORY_SIZE, cell="lstm") -> list:
    """Peak extra memory of one training step, one fresh child per library and thread count."""
    env = child_env()
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    env["MALLOC_TRIM_THRESHOLD_"] = "131072"
    probe = os.path.join(HERE, "_memprobe.py")
    rows = []
    print(f"memory  peak extra RSS of one {cell.upper()} training step at {fmt_size(size)}, "
          f"fresh process per library; MB = 2^20 bytes")
    for threads in threads_list:
        res = {}
        for lib in ("rnncore", "torch"):
            cmd = [sys.executable, probe, lib, cell, *map(str, size), str(threads)]
            try:
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                lines = p.stdout.strip().splitlines()
                if p.returncode != 0 or not lines:
                    raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
                res[lib] = json.loads(lines[-1])
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                res[lib] = {"error": str(e)}
                print(f"  {threads} thr  {lib}: probe failed: {e}")
        r = {"threads": threads, "cell": cell, "size": list(size), "rnncore": res["rnncore"], "torch": res["torch"]}
        rm, tm = res["rnncore"].get("extra_mb"), res["torch"].get("extra_mb")
        r["ratio_rnncore_over_torch"] = rm / tm if rm is not None and tm else None
        rows.append(r)
        if rm is not None and tm is not None:
            npy = res["rnncore"].get("numpy_tracemalloc_mb")
            npy_s = f" (numpy {npy:.1f}, C++ ~{max(rm - npy, 0.0):.1f})" if npy is not None else ""
            ratio = f"{rm / tm:.2f}" if tm else "-"
            print(f"  {threads} thr  rnncore {rm:8.1f} MB{npy_s}   torch {tm:8.1f} MB   "
                  f"rnncore/torch {ratio}   [{res['rnncore'].get('method')}]", flush=True)
    print()
    return rows


# --------------------------------------------------------------------------- under load

# A tight Python loop on one core. It checks every ~2^20 iterations whether its
# parent is gone or its time is up, so it can never outlive the benchmark for long.
LOAD_CODE = """\
import os, sys, time
parent, end, n = os.getppid(), time.monotonic() + float(sys.argv[1]), 0
while True:
    n += 1
    if not n & 0xFFFFF and (os.getppid() != parent or time.monotonic() > end):
        break
"""


class BusyCore:
    """Context manager: a child process spinning on one core while inside."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", LOAD_CODE, str(self.max_seconds)],
                                     stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        time.sleep(0.3)  # let it start spinning
        if self.proc.poll() is not None:
            raise RuntimeError(f"the load process exited at once (code {self.proc.returncode})")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc):
        self.stop()
        atexit.unregister(self.stop)
        return False


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception so that cleanup runs
    raise SystemExit(128 + signum)


def bench_load(sizes, modes, repeats, min_time, warmup_time) -> list:
    """Under one busy core: rnncore default threads vs 1 thread, torch 2 vs 1."""
    rc.set_num_threads(None)
    default = rc.get_num_threads()
    print(f"load   one core kept busy by another process; rnncore default threads ({default}) vs 1, "
          f"torch 2 vs 1; LSTM")
    rows = []
    # generous upper bound on the child's life; it is killed as soon as we are done
    budget = 600.0 + 60.0 * len(sizes) * len(modes) * repeats * max(min_time, 0.01) * 4
    with BusyCore(budget):
        for size in sizes:
            layer, module, x, dy = bench_gated.make_pair("lstm", size)
            for mode in modes:
                rc_call, torch_call = bench_gated.make_calls(layer, module, x, dy, mode)

                # The thread counts are set before each sample (untimed), not per call.
                setups = [lambda: rc.set_num_threads(None), lambda: rc.set_num_threads(1),
                          lambda: torch.set_num_threads(2), lambda: torch.set_num_threads(1)]
                rd, r1, t2, t1 = alternate([rc_call, rc_call, torch_call, torch_call], repeats, min_time,
                                           warmup_time, setups)
                T, B, I, H = size
                r = {"cell": "lstm", "mode": mode, "T": T, "B": B, "I": I, "H": H,
                     "rnncore_default_threads": default,
                     "rnncore_default_ms": med(rd), "rnncore_1thr_ms": med(r1),
                     "torch_2thr_ms": med(t2), "torch_1thr_ms": med(t1),
                     "iqr_pct": max(spread(a) for a in (rd, r1, t2, t1)),
                     "samples_ms": {"rnncore_default": rd.tolist(), "rnncore_1thr": r1.tolist(),
                                    "torch_2thr": t2.tolist(), "torch_1thr": t1.tolist()}}
                r["rnncore_default_over_1thr"] = r["rnncore_default_ms"] / r["rnncore_1thr_ms"]
                r["torch_2thr_over_1thr"] = r["torch_2thr_ms"] / r["torch_1thr_ms"]
                rows.append(r)
                flag = "*" if r["iqr_pct"] > 10.0 else " "
                mark = "!" if r["rnncore_default_over_1thr"] > LOAD_TARGET else " "
                print(f"  {mode:<9} {fmt_size(size):>15}  rnncore {default}thr {r['rnncore_default_ms']:9.3f} ms"
                      f"  1thr {r['rnncore_1thr_ms']:9.3f} ms  ratio {r['rnncore_default_over_1thr']:5.2f}{mark}"
                      f"   torch 2thr {r['torch_2thr_ms']:9.3f} ms  1thr {r['torch_1thr_ms']:9.3f} ms"
                      f"  ratio {r['torch_2thr_over_1thr']:5.2f}   iqr {r['iqr_pct']:.1f}%{flag}", flush=True)
    rc.set_num_threads(None)
    print(f"  ratio = time with more threads / time with 1 thread (<= {LOAD_TARGET} wanted for rnncore; "
          f"! above it)")
    print()
    return rows


# --------------------------------------------------------------------------- summary


def summarize(grid, stream, memory, load) -> list:
    """The target checks: [{check, where, target, value, at, ok, n, status}]."""
    checks = []

    def add(check, where, target, items, higher_is_better):
        """items: [(value, at)]; the worst value decides."""
        items = [(v, at) for v, at in items if v is not None]
        op = ">=" if higher_is_better else "<="
        if not items:
            checks.append({"check": check, "where": where, "target": f"{op} {target:g}",
                           "value": None, "at": "", "ok": 0, "n": 0, "status": "n/a"})
            return
        worst = min(items) if higher_is_better else max(items)
        ok = sum((v >= target) if higher_is_better else (v <= target) for v, _ in items)
        checks.append({"check": check, "where": where, "target": f"{op} {target:g}",
                       "value": worst[0], "at": worst[1], "ok": ok, "n": len(items),
                       "status": "PASS" if ok == len(items) else "MISS"})

    def rows_at(cell, size, mode=None):
        return [r for r in grid if r["cell"] == cell and (r["T"], r["B"], r["I"], r["H"]) == tuple(size)
                and (mode is None or r["mode"] == mode)]

    def at(r):
        return f"{r['mode'][:5]} {r['threads']}thr"

    grid_cells = []
    for r in grid:
        if r["cell"] not in grid_cells:
            grid_cells.append(r["cell"])
    grid_sizes = {(r["T"], r["B"], r["I"], r["H"]) for r in grid}

    def grid_order(s):
        return (SIZES.index(s) if s in SIZES else len(SIZES), s)

    for size, tg in RATIO_TARGETS.items():
        if size not in grid_sizes:
            continue
        for cell in grid_cells:
            rows = rows_at(cell, size)
            if cell in LOOP_CELLS:
                items = [(min(r["torch_ms"], r["jit_ms"] if r["jit_ms"] is not None else np.inf)
                          / r["rnncore_ms"], at(r)) for r in rows]
                add(f"{cell} vs loop (faster of eager/jit)", fmt_size(size), tg["loop"], items, True)
            else:
                items = [(r["torch_over_rnncore"], at(r)) for r in rows]
                add(f"{cell} vs torch.nn", fmt_size(size), tg[cell], items, True)
        if size in LARGE_SIZES and "lstm" in grid_cells:
            items = [(r["pct_sgemm"], at(r)) for r in rows_at("lstm", size)]
            add("lstm % of sgemm GFLOP/s", fmt_size(size), SGEMM_PCT_TARGET, items, True)

    for cell in GATED:  # only where the ort side ran
        for size in sorted(grid_sizes, key=grid_order):
            items = [(r["ort_over_rnncore"], f"{r['threads']}thr") for r in rows_at(cell, size, "inference")
                     if r["ort_ms"] is not None]
            if items:
                add(f"{cell} inference vs onnxruntime", fmt_size(size), ORT_TARGET, items, True)

    for cell in LOOP_CELLS:
        if cell not in grid_cells:
            continue
        for size in sorted(grid_sizes, key=grid_order):
            items = [(r["over_elman"], f"{r['threads']}thr") for r in rows_at(cell, size, "train")]
            if items:
                add(f"{cell} train / rnncore elman train", fmt_size(size), ELMAN_TARGET, items, False)

    for size in LARGE_SIZES:
        if size not in grid_sizes:
            continue
        for cell in grid_cells:
            items = []
            for mode in MODES:
                by_thr = {r["threads"]: r for r in rows_at(cell, size, mode)}
                if 1 in by_thr and 2 in by_thr:
                    items.append((by_thr[1]["rnncore_ms"] / by_thr[2]["rnncore_ms"], mode[:5]))
            if items:
                add(f"{cell} speed-up 1 -> 2 threads", fmt_size(size), SCALING_TARGET, items, True)

    for r in stream:
        add("streaming LSTM step, us", f"1,1,{STREAM_SIZE[0]},{STREAM_SIZE[1]}", STREAM_TARGET_US,
            [(r["rnncore_us"], f"{r['threads']}thr")], False)
    for r in memory:
        add("train peak memory rnncore / torch", fmt_size(r["size"]) + " lstm", 1.0,
            [(r["ratio_rnncore_over_torch"], f"{r['threads']}thr")], False)
    for size in dict.fromkeys((r["T"], r["B"], r["I"], r["H"]) for r in load):
        items = [(r["rnncore_default_over_1thr"], r["mode"][:5]) for r in load
                 if (r["T"], r["B"], r["I"], r["H"]) == size]
        add("under load: rnncore default / 1 thread", fmt_size(size) + " lstm", LOAD_TARGET, items, False)
    return checks


def print_summary(checks) -> None:
    print("Summary: targets (ratios are median torch time / rnncore time, or onnxruntime's where stated; "
          "the worst over modes and threads decides)")
    if not checks:
        print("  no targets apply to what was run (the ratio targets are defined for the default sizes)")
        print()
        return
    w = max(len(c["check"]) for c in checks)
    header = f"{'check':<{w}}  {'where':<20} {'target':>8} {'worst':>9} {'at':<11} {'ok':>5}  result"
    print(header)
    print("-" * len(header))
    for c in checks:
        val = f"{c['value']:.2f}" if c["value"] is not None else "-"
        print(f"{c['check']:<{w}}  {c['where']:<20} {c['target']:>8} {val:>9} {c['at']:<11} "
              f"{c['ok']:>2}/{c['n']:<2}  {c['status']}")
    n_pass = sum(c["status"] == "PASS" for c in checks)
    n_miss = sum(c["status"] == "MISS" for c in checks)
    print(f"\n{n_pass} PASS, {n_miss} MISS" + (f", {len(checks) - n_pass - n_miss} n/a" if
                                               len(checks) > n_pass + n_miss else ""))
    print()


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, CELLS, CELLS, sizes_help="problem sizes of the grid (default: the five above; "
                                                 "--quick: the first two)",
                    quick_help="fewer repeats (5), shorter samples (10 ms), only the first two sizes")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="what to run (default: all)")
    ap.add_argument("--json", metavar="OUT.json", help="write every row, the summary and the machine to a file")
    ap.add_argument("--no-ort", action="store_true",
                    help="leave out the onnxruntime side of the grid (default: on when onnx and "
                         "onnxruntime are installed)")
    # For testing the script on a busy machine with tiny problems; not part of the interface.
    ap.add_argument("--gemm-shape", type=lambda s: tuple(int(v) for v in s.split(",")), default=GEMM_SHAPE,
                    help=argparse.SUPPRESS)
    ap.add_argument("--memory-size", type=parse_size, default=MEMORY_SIZE, help=argparse.SUPPRESS)
    ap.add_argument("--load-sizes", type=parse_size, nargs="+", default=LOAD_SIZES, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    sizes, repeats, min_time, warmup_time = run_settings(ap, args, SIZES, QUICK_SIZES)
    if len(args.gemm_shape) != 3 or min(args.gemm_shape) < 1:
        ap.error("--gemm-shape must be M,N,K")
    cells = [c for c in CELLS if c in args.cells]
    if "grid" in args.parts and "clockwork" in cells:
        bad = [s for s in sizes if s[3] % len(bench_multiscale.CLOCKWORK_PERIODS)]
        if bad:
            ap.error(f"clockwork needs H divisible by {len(bench_multiscale.CLOCKWORK_PERIODS)}, "
                     f"got H = {', '.join(str(s[3]) for s in bad)}")
    signal.signal(signal.SIGTERM, _on_sigterm)

    ort, ort_skip = None, None
    if "grid" in args.parts and "inference" in args.modes and any(c in ORT_CELLS for c in cells):
        if args.no_ort:
            ort_skip = "off (--no-ort)"
        else:
            onnx_mod, ort_mod, why = load_ort()
            if why is None:
                ort = (onnx_mod, ort_mod)
            else:
                ort_skip = f"skipped: {why} (pip install \".[bench]\" adds onnx and onnxruntime)"

    info = machine_info(args, ort)
    results = {"machine": info, "sgemm": [], "grid": [], "stream": [], "memory": [], "load": [],
               "summary": [], "complete": False}
    print_machine(info, repeats, min_time)
    torch_threads0 = torch.get_num_threads()
    status = 0
    try:
        sgemm = {}
        if "sgemm" in args.parts:
            sgemm = bench_sgemm(args.threads, repeats, min_time, warmup_time, args.gemm_shape)
            results["sgemm"] = list(sgemm.values())

        if "grid" in args.parts:
            print(f"grid   leaky: timescales {bench_multiscale.LEAKY_TIMESCALES}; skip: delays "
                  f"{bench_multiscale.SKIP_DELAYS}; clockwork: periods {bench_multiscale.CLOCKWORK_PERIODS}")
            if ort_skip:
                print(f"ort    the onnxruntime side is {ort_skip}")
            print(GRID_HEADER)
            print("-" * len(GRID_HEADER))
            for cell in cells:
                for mode in args.modes:
                    for size in sizes:
                        for threads in args.threads:
                            row = bench_row(cell, mode, size, threads, repeats, min_time, warmup_time, sgemm,
                                            ort)
                            results["grid"].append(row)
                            print_row(row)
            print()
            print("torch: torch.nn.LSTM/GRU/RNN, or for leaky/skip/clockwork the Python loop with the input "
                  "projection hoisted; jit: that loop under torch.jit.script.")
            print("torch/rc, jit/rc > 1: rnncore is faster.  GFLOP/s: rnncore, matmul FLOPs only "
                  "(train = 3x inference).  %sgemm: of the sgemm GFLOP/s above, same threads.")
            print("/elman: time / rnncore's Elman time, same size, mode, threads.  iqr%: largest spread "
                  "(* > 10%: busy machine; ~: some of rnncore's team calls ran on one thread, its back-off "
                  "after threads waited for a core).  y diff: max |y_rnncore - y_torch|.")
            if ort is not None:
                print(f"ort: the ONNX LSTM/GRU/RNN op in onnxruntime (inference rows of lstm, gru, elman), same "
                      f"weights; ort/rc > 1: rnncore is faster; y_ort checked against y_rnncore (<= {ORT_ATOL:g}).")
            print()

        if "stream" in args.parts:
            results["stream"] = bench_stream(args.threads, repeats, min_time, warmup_time)
        if "memory" in args.parts:
            results["memory"] = bench_memory(args.threads, args.memory_size)
        if "load" in args.parts:
            results["load"] = bench_load(args.load_sizes, args.modes, repeats, min_time, warmup_time)

        results["summary"] = summarize(results["grid"], results["stream"], results["memory"], results["load"])
        print_summary(results["summary"])
        results["complete"] = True
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    finally:
        torch.set_num_threads(torch_threads0)
        rc.set_num_threads(None)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
            print(f"wrote {args.json}" + ("" if results["complete"] else " (incomplete run)"))
    return status


if __name__ == "__main__":
    sys.exit(main())
