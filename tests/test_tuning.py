"""Tuning from the machine: the cache sizes read at run time, the blocks
derived from them (and overridden by RNNCORE_L*_BYTES), and the backward's
choice between rnncore's own product tiles and BLAS (RNNCORE_GEMM), each path
against the numpy reference on every ISA."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core

from _helpers import isa, threads
from test_layers import _check, _run_both

KIB, MIB = 1 << 10, 1 << 20
L2_DERIVED = ("tape_ask_bytes", "proj_chunk_bytes", "proj_panel_bytes", "gemm_chunk_bytes",
              "fused_l2_bytes", "direct_keep_bytes")


def _tuning_in_subprocess(**env):
    code = "import json, rnncore; print(json.dumps(rnncore.tuning_info()))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def _sysfs_caches():
    """cpu0's data/unified cache sizes by level, read here independently of the C++."""
    sizes = {}
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        if kind == "Instruction" or level in sizes:
            continue
        mult = {"K": KIB, "M": MIB, "G": 1 << 30}.get(text[-1], 1)
        sizes[level] = int(text.rstrip("KMG")) * mult
    return sizes


@contextlib.contextmanager
def gemm_path(name):
    old = _core.gemm_path()
    _core.set_gemm_path(name)
    _core.clear_gemm_choices()
    try:
        yield
    finally:
        _core.set_gemm_path(old)
        _core.clear_gemm_choices()


@contextlib.contextmanager
def caches(l1d=0, l2=0, l3=0):
    _core.retune(l1d, l2, l3)
    try:
        yield
    finally:
        _core.retune(0, 0, 0)  # the detected sizes again


def test_detected_cache_sizes_are_plausible_and_match_sysfs():
    l1, l2, l3, f1, f2, f3 = _core.detected_caches()
    assert 4 * KIB <= l1 <= 4 * MIB and 64 * KIB <= l2 <= 64 * MIB and l3 >= 0
    assert {f1, f2, f3} <= {"sysfs", "cpuid", "sysconf", "default"}
    sysfs = _sysfs_caches()
    if f1 == "sysfs":
        assert l1 == sysfs[1]
    if f3 == "sysfs":
        assert l3 == sysfs[3]
    if f2 == "sysfs":  # one core's share: the whole, or a part when cores share it
        assert l2 <= sysfs[2] and sysfs[2] % l2 == 0


def test_show_runtime_prints_caches_blocks_and_gemm_choices(capsys):
    rc.show_runtime()
    out = capsys.readouterr().out
    for key in ("caches:", "blocks:", "teams:", "gemm:", "gemm_choices:"):
        assert key in out
    t = rc.tuning_info()
    assert f"L2 {t['l2_bytes'] >> 10} KiB" in out or f"L2 {t['l2_bytes'] >> 20} MiB" in out


@pytest.mark.parametrize("l2", [256 * KIB, 4 * MIB])
def test_every_block_follows_an_overridden_l2(l2):
    t = _tuning_in_subprocess(RNNCORE_L2_BYTES=str(l2))
    assert t["l2_bytes"] == l2 and t["l2_from"] == "override"
    assert t["tape_ask_bytes"] == t["fused_l2_bytes"] == t["direct_keep_bytes"] == l2
    assert t["proj_chunk_bytes"] == l2 // 4
    assert t["proj_panel_bytes"] == l2 * 3 // 8
    assert t["gemm_chunk_bytes"] == l2 // 16
    assert t["fused_l3_bytes"] == max(t["l3_bytes"] // 2, l2)


def test_choices_change_when_the_sizes_do():
    small = _tuning_in_subprocess(RNNCORE_L2_BYTES="256K", RNNCORE_L3_BYTES="4M", RNNCORE_L1_BYTES="48K")
    large = _tuning_in_subprocess(RNNCORE_L2_BYTES="2M", RNNCORE_L3_BYTES="64M", RNNCORE_L1_BYTES="48K")
    for key in L2_DERIVED + ("fused_l3_bytes",):
        assert small[key] < large[key], key
    assert (small["l1d_bytes"], small["l3_bytes"]) == (48 * KIB, 4 * MIB)
    # and the suffixes mean what they say
    assert _tuning_in_subprocess(RNNCORE_L2_BYTES="1048576")["l2_bytes"] == MIB


@pytest.mark.parametrize("var,value", [("RNNCORE_L2_BYTES", "lots"), ("RNNCORE_L2_BYTES", "0"),
                                       ("RNNCORE_L3_BYTES", "-4M"), ("RNNCORE_GEMM", "fastest")])
def test_bad_tuning_environment_is_a_clear_error(var, value):
    out = subprocess.run([sys.executable, "-c", "import rnncore"], env=dict(os.environ, **{var: value}),
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "ValueError" in out.stderr and var in out.stderr and repr(value) in out.stderr


def test_gemm_environment_forces_a_path():
    for name in ("own", "blas", "auto"):
        code = "import rnncore; from rnncore import _core; print(_core.gemm_path())"
        out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RNNCORE_GEMM=name),
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == name
    with pytest.raises(ValueError, match="got 'fast'"):
        _core.set_gemm_path("fast")
    with pytest.raises(ValueError, match="retune"):
        _core.retune(-1, 0, 0)


# Big enough that the weight-gradient and dx products take the path chosen
# (rows of C >= 32) over several K chunks and, in auto, split between the two.
PRODUCT_CELLS = ["lstm", "gru", "gru_v1", "skip_1_3", "clockwork", "rnn_tanh"]


@pytest.mark.parametrize("path", ["own", "blas", "auto"])
@pytest.mark.parametrize("name", rc.available_isas())
def test_each_gemm_path_matches_reference_on_every_isa(path, name):
    with isa(name), gemm_path(path):
        for n_threads in (1, 2):
            with threads(n_threads):
                for cell_id in PRODUCT_CELLS:
                    _check(_run_both(cell_id, 20, 24, 40, 36, 1, False, True, True, np.float32, seed=11,
                                     weight_scale=0.3), np.float32)
                    _check(_run_both(cell_id, 9, 8, 21, 34, 2, True, True, False, np.float64, seed=12),
                           np.float64)
        choices = _core.gemm_choices()
        if path == "auto" and name != "generic":  # shape classes were put on trial, by name
            assert choices and all(name in c for c in choices)
        if path != "auto":
            assert choices == []


def test_auto_tries_each_shape_class_once_and_keeps_the_choice():
    with gemm_path("auto"), threads(1):
        first = _run_both("lstm", 20, 24, 40, 36, 1, False, False, False, np.float32, seed=13)
        choices = _core.gemm_choices()
        again = _run_both("lstm", 20, 24, 40, 36, 1, False, False, False, np.float32, seed=13)
        assert _core.gemm_choices() == choices  # no second trial
        if rc.get_isa() == "generic":
            assert choices == []  # BLAS throughout, nothing to try
        else:
            assert choices and all(("own (" in c or "blas (" in c) and "trial" in c for c in choices)
    # the trial changes no result: the first call's products took the chosen path too
    np.testing.assert_array_equal(first["dx"][0], again["dx"][0])
    for k, g in first["grads"][0].items():
        np.testing.assert_array_equal(g, again["grads"][0][k])


@pytest.mark.parametrize("cell_id", ["lstm", "gru", "skip_1_3", "clockwork", "rnn_relu"])
def test_tiny_caches_still_match_reference(cell_id):
    """With a 32 KB L2 every block is at its smallest: the projections' K
    chunks and row panels, tapes prefetched, no fused projection."""
    with caches(l1d=16 * KIB, l2=32 * KIB, l3=64 * KIB), gemm_path("own"):
        t = rc.tuning_info()
        assert t["l2_bytes"] == 32 * KIB and t["proj_chunk_bytes"] == 16 * KIB
        for n_threads in (1, 2):
            with threads(n_threads):
                _check(_run_both(cell_id, 12, 40, 300, 40, 1, True, True, True, np.float32, seed=14,
                                 weight_scale=0.2), np.float32)
                _check(_run_both(cell_id, 6, 9, 130, 21, 2, False, True, False, np.float64, seed=15),
                       np.float64)
    assert rc.tuning_info()["l2_from"] != "override"


# dW_ih of a layer with 1 to 4 input features, and the bias gradients, take
# one pass over dg (NarrowGemmT) unless RNNCORE_GEMM=blas; 5 features take
# the general products. Gates per layer 4H = 28 (LSTM, H=7) or 3H = 21 (GRU):
# not whole vectors, so the last vector of columns is partial.
@pytest.mark.parametrize("n_in", [1, 2, 4, 5])
@pytest.mark.parametrize("name", rc.available_isas())
def test_few_input_features_match_reference_on_every_path(n_in, name):
    with isa(name):
        for path in ("own", "blas", "auto"):
            with gemm_path(path):
                for n_threads in (1, 2):
                    with threads(n_threads):
                        for cell_id in ("lstm", "gru", "gru_v1", "leaky"):
                            _check(_run_both(cell_id, 30, 17, n_in, 7, 1, False, True, True, np.float64,
                                             seed=16), np.float64)
                        _check(_run_both("lstm", 40, 60, n_in, 40, 1, True, True, False, np.float32,
                                         seed=17, weight_scale=0.3), np.float32)


@pytest.mark.parametrize("n_in", [1, 3])
def test_few_input_features_grads_do_not_depend_on_team_or_chunk(n_in):
    """Every column of dW_ih and the biases is summed by one thread in one
    order of rows, so one thread and two give the same bits; an L2 of 32 KB
    cuts the pass into many chunks of rows, against the reference."""
    def grads():
        return _run_both("lstm", 200, 64, n_in, 64, 1, False, True, False, np.float32, seed=18,
                         weight_scale=0.3)
    with gemm_path("own"):
        with threads(1):
            one = grads()
        with threads(2):
            two = grads()
        for k in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            np.testing.assert_array_equal(one["grads"][0][k], two["grads"][0][k])
        with caches(l1d=16 * KIB, l2=32 * KIB, l3=64 * KIB), threads(2):
            _check(grads(), np.float32)
