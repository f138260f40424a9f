"""Digests of every cell's outputs, states and gradients, to show that a
refactor changes no result: bit for bit, on every ISA, thread count and
backward product path of this machine.

    python tools/golden.py --write before.json   # before the change
    python tools/golden.py --check before.json   # after it: exits 1 on any difference

A digest is the SHA-256 of the bytes of y, the final state, inference's y
and state, dx, the initial state's gradient and every parameter gradient of
one case: a cell of tests/_helpers.py (so a new cell joins by itself), a
size that takes one of the driver's modes (batch 1 and direct steps, the
input projection in the steps, the projection pass, several unit blocks),
a layout (one layer; two bidirectional layers with lengths and a state;
batch-first with lengths), float32 and float64, one and two threads, and
RNNCORE_GEMM own and blas (auto would let a timing pick). A streamed call
(one step at a time, through the prepared path) is a case of its own.
Results differ between machines (OpenBLAS picks its kernels by CPU), so a
file is compared only on the machine that wrote it; --check reports cases
missing from either side but fails only on a differing one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import rnncore as rc  # noqa: E402
from rnncore import _core  # noqa: E402

from _helpers import (CELL_IDS, cast_state, fix_h, flat, isa, make_pair, random_lengths,  # noqa: E402
                      ref_state, threads)

SIZES = [(7, 1, 3, 5), (9, 3, 4, 17), (12, 9, 2, 20), (20, 24, 40, 36), (6, 40, 33, 70)]
LAYOUTS = {"L1": (1, False, False, False, False),
           "L2-bi-len-state": (2, True, True, True, False),
           "bf-len": (1, False, True, False, True)}


def _digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _case(cell_id, size, layout, dtype):
    T, B, I, H = size
    H = fix_h(cell_id, H)
    L, bidir, use_len, use_state, bf = LAYOUTS[layout]
    seed = 7 + 31 * SIZES.index(size)
    rng = np.random.default_rng(seed)
    layer, _ = make_pair(cell_id, I, H, num_layers=L, bidirectional=bidir, dtype=dtype, batch_first=bf,
                         seed=seed)
    x = rng.uniform(-1, 1, (B, T, I) if bf else (T, B, I)).astype(dtype)
    lengths = random_lengths(T, B, rng) if use_len else None
    state = cast_state(ref_state(cell_id, H, B, L, bidir, seed=seed + 1), dtype) if use_state else None
    y, st, tape = layer.forward(x, state, lengths)
    y_inf, st_inf = layer(x, state, lengths)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dst0 = layer.backward(tape, dy)
    grads = [layer.grads[k] for k in sorted(layer.grads)]
    return _digest([y, *flat(st), y_inf, *flat(st_inf), dx, *flat(dst0), *grads])


def _streamed(cell_id, dtype):
    T, B, I, H = 6, 2, 3, fix_h(cell_id, 11)
    layer, _ = make_pair(cell_id, I, H, dtype=dtype, seed=5)
    x = np.random.default_rng(5).uniform(-1, 1, (T, B, I)).astype(dtype)
    state, ys = None, []
    for t in range(T):
        y, state = layer(x[t:t + 1], state)
        ys.append(y)
    return _digest([*ys, *flat(state)])


def digests():
    out = {}
    for name in rc.available_isas():
        with isa(name):
            for path in ("own", "blas"):
                _core.set_gemm_path(path)
                for n in (1, 2):
                    with threads(n):
                        for dtype in (np.float32, np.float64):
                            dt = np.dtype(dtype).name
                            for cell_id in CELL_IDS:
                                for size in SIZES:
                                    for layout in LAYOUTS:
                                        key = f"{name}/{path}/t{n}/{cell_id}/{'x'.join(map(str, size))}/{layout}/{dt}"
                                        out[key] = _case(cell_id, size, layout, dtype)
                                out[f"{name}/{path}/t{n}/{cell_id}/streamed/{dt}"] = _streamed(cell_id, dtype)
    _core.set_gemm_path("auto")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    a = ap.parse_args()
    got = digests()
    if a.write:
        with open(a.write, "w") as f:
            json.dump(got, f, indent=0, sort_keys=True)
        print(f"{len(got)} digests written to {a.write}")
        return 0
    with open(a.check) as f:
        want = json.load(f)
    differ = sorted(k for k in got.keys() & want.keys() if got[k] != want[k])
    new, gone = sorted(got.keys() - want.keys()), sorted(want.keys() - got.keys())
    for k in differ:
        print("DIFFERS", k)
    print(f"{len(got.keys() & want.keys())} cases compared: {len(differ)} differ; "
          f"{len(new)} new (e.g. {new[:2]}), {len(gone)} missing (e.g. {gone[:2]})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
