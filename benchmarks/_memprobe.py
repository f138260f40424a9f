"""Peak extra memory of one training step (forward + BPTT) of one library, measured
in a fresh process so that the two libraries' figures are independent.
Run by run.py (one child per library and thread count); prints one JSON line.

    python benchmarks/_memprobe.py rnncore|torch lstm|gru T B I H THREADS

Method (see run.py's docstring and docs/benchmarks.md):

1. The process imports only numpy and the library measured, builds the layer
   (float32; gradient buffers allocated up front on both sides: rnncore's
   layer.grads exist from construction, torch's .grad are set to zeros), the
   input x (T, B, I) and the upstream gradient dy (T, B, H).
2. Warm-up at a tiny size (T=2, B=1, same layer): thread pools, BLAS buffers,
   torch's autograd engine and lazy imports start here, not in the measurement.
   The full-size step is *not* warmed up, so a workspace a library allocates on
   first use and keeps is counted.
3. The kernel's peak-RSS mark is reset (`5 > /proc/self/clear_refs`, Linux >= 4.0),
   the current RSS read, one full-size forward + backward run with its outputs
   (y, dx) held, and the peak (VmHWM) read: extra = VmHWM - RSS before.
   This counts everything resident: numpy arrays, the C++ tape and workspace,
   torch tensors and the autograd graph. The peak of ru_maxrss cannot be reset
   and a child started from a large parent inherits the parent's peak at exec,
   so ru_maxrss growth (also reported) is only the fallback where
   /proc/self/clear_refs is not available.
4. glibc keeps freed memory for reuse, which would let a step hide in pages
   freed earlier; the parent runs this probe with MALLOC_MMAP_THRESHOLD_ and
   MALLOC_TRIM_THRESHOLD_ fixed at 128 KiB, so large blocks are mapped on
   allocation and returned on free, the same for both libraries.
5. rnncore only: a second step under tracemalloc gives the part of the peak
   held in numpy arrays (numpy reports its allocations to tracemalloc; torch
   does not); the rest of the RSS figure is the C++ workspace and tape.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import tracemalloc

import numpy as np


def status_kb(field: str):
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, kB on Linux


def build(lib: str, cell: str, size, threads: int):
    """Return step(x, dy) -> outputs to hold, plus the full-size and tiny inputs."""
    T, B, I, H = size
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    x_small, dy_small = x[:2, :1].copy(), dy[:2, :1].copy()
    if lib == "rnncore":
        import rnncore as rc
        rc.set_num_threads(threads)
        layer = {"lstm": rc.LSTM, "gru": rc.GRU}[cell](I, H, dtype=np.float32, seed=0)

        def step(xx, dd):
            y, _, tape = layer.forward(xx)
            dx, _ = layer.backward(tape, dd)
            return y, dx

        return step, (x, dy), (x_small, dy_small)

    import torch
    torch.set_num_threads(threads)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    for p in module.parameters():
        p.grad = torch.zeros_like(p)

    def to_torch(a, b):
        return torch.from_numpy(a).requires_grad_(True), torch.from_numpy(b)

    def step(xx, dd):
        y, _ = module(xx)
        y.backward(dd)
        return y, xx.grad

    return step, to_torch(x, dy), to_torch(x_small, dy_small)


def main(argv) -> int:
    lib, cell = argv[0], argv[1]
    size = tuple(int(v) for v in argv[2:6])
    threads = int(argv[6])
    step, full, small = build(lib, cell, size, threads)
    out = step(*small)  # warm-up at a tiny size
    del out
    gc.collect()
    gc.disable()

    maxrss0 = maxrss_kb()
    can_reset = reset_peak()
    rss0 = status_kb("VmRSS")
    out = step(*full)
    hwm = status_kb("VmHWM")
    maxrss1 = maxrss_kb()
    del out
    gc.enable()
    gc.collect()

    if can_reset and hwm is not None and rss0 is not None:
        extra_kb, method = hwm - rss0, "VmHWM after reset - VmRSS before"
    else:
        extra_kb, method = maxrss1 - max(maxrss0, rss0 or 0), "ru_maxrss growth"

    numpy_mb = None
    if lib == "rnncore":
        tracemalloc.start()
        out = step(*full)
        _, peak = tracemalloc.get_traced_memory()
        del out
        tracemalloc.stop()
        numpy_mb = peak / 2**20

    print(json.dumps({
        "lib": lib, "cell": cell, "size": list(size), "threads": threads,
        "extra_mb": extra_kb / 1024, "method": method,
        "rss_before_mb": None if rss0 is None else rss0 / 1024,
        "ru_maxrss_growth_mb": (maxrss1 - maxrss0) / 1024,
        "numpy_tracemalloc_mb": numpy_mb,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
