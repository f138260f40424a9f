"""Runtime configuration: threads, ISA, BLAS, show_runtime, the demo."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core


def test_show_runtime_names_isa_threads_openmp_blas(capsys):
    rc.show_runtime()
    out = capsys.readouterr().out
    for key in ("isa", "threads", "openmp", "blas"):
        assert key in out
    info = rc.runtime_info()
    assert info["isa"] in rc.available_isas()
    assert info["threads"] == rc.get_num_threads() >= 1
    assert "OpenBLAS" in info["blas"]
    assert info["busy_backoff"].startswith("on, ") or info["busy_backoff"] == "off"


def test_set_num_threads_convention():
    try:
        rc.set_num_threads(1)
        assert rc.get_num_threads() == 1
        rc.set_num_threads(-1)
        assert rc.get_num_threads() == _core.max_threads()
        with pytest.raises(ValueError, match="got 0"):
            rc.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an int"):
            rc.set_num_threads(1.5)
    finally:
        rc.set_num_threads(None)


def test_max_isa_env_caps_the_kernels():
    code = "import rnncore; print(rnncore.get_isa())"
    env = dict(os.environ, RNNCORE_MAX_ISA="generic")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "generic"


def test_demo_trains_a_cell_on_the_adding_problem():
    from rnncore import GRU, _demo
    mse, secs, epochs = _demo.train_cell(lambda s: GRU(2, 16, seed=s), steps=10, hidden=16, n_train=2000,
                                         n_test=200, epochs=8, budget=60, progress=False)
    assert epochs >= 1 and secs > 0
    assert mse < 0.1  # well below the 0.167 of predicting the mean


def test_demo_command_line_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "rnncore", "demo", "--steps", "8", "--hidden", "12",
                          "--epochs", "1", "--train", "200", "--quiet", "--plot", ""],
                         capture_output=True, text=True, check=True, timeout=300)
    assert "test MSE" in out.stdout
    for name in ("Elman", "leaky", "skip", "clockwork", "IndRNN", "GRU", "LSTM"):
        assert name in out.stdout


_FAULTS = """
import resource, numpy as np, rnncore
def call():  # three buffers of a call, 24 MB written through, then freed
    a, b, c = np.ones(2 << 20, np.float32), np.ones(1 << 20, np.float32), np.ones(3 << 20, np.float32)
    del a, b, c
call()
call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, rnncore.runtime_info()["malloc"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or __import__("platform").libc_ver()[0] != "glibc",
                    reason="the allocator tuning is for glibc")
def test_freed_call_buffers_are_reused_without_page_faults():
    # The buffers of a call, freed and allocated again: glibc's adaptive rule
    # alone can return them to the system after each call, so that every call
    # faults its pages in afresh (about 1500 faults a call here); tuned, the
    # heap keeps them.
    def faults(**env):
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=dict(os.environ, **env),
                             capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
        return int(out[0]), out[1].strip()

    tuned, how = faults()
    assert how.startswith("glibc: heap below 32 MB")
    assert tuned < 200
    alone, how = faults(RNNCORE_MALLOC="system")
    assert how == "left alone (RNNCORE_MALLOC=system)"
    assert alone > 1000  # the control: without the tuning the pages fault again
    _, how = faults(MALLOC_TRIM_THRESHOLD_="1000000")
    assert how == "left as set (MALLOC_TRIM_THRESHOLD_)"
